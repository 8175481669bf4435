//! `/metrics` in the Prometheus text format (written by hand: a handful of
//! counters need no library). Counters live in [`Metrics`], shared with the
//! service's own sync loop (`Metrics::record_sync`); gauges are read from the
//! store at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::App;

#[derive(Default)]
struct Counters {
    /// (mode, "ok"|"error") -> runs
    runs: BTreeMap<(String, String), u64>,
    /// mode -> (sum of seconds, count)
    durations: BTreeMap<String, (f64, u64)>,
    /// action -> users
    changes: BTreeMap<String, u64>,
    /// Cycles whose directory read was cut short (no departures computed).
    incomplete_reads: u64,
    /// "ok" or an auth reason -> checks
    auth: BTreeMap<String, u64>,
    /// (RADIUS client, outcome: accept, challenge, reject:<reason>, drop:<reason>) -> requests
    radius: BTreeMap<(String, String), u64>,
}

/// Process-wide counters since the service started.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Counters>,
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Count one finished sync cycle. `result` is the `sync --json` document
    /// (its `mode` and counts are used); `None` for a failed cycle.
    pub fn record_sync(
        &self,
        requested_mode: &str,
        seconds: f64,
        result: Option<&mfasync_core::report::SyncReport>,
    ) {
        let mode = result
            .map(|r| r.mode.as_str())
            .unwrap_or(requested_mode)
            .to_string();
        let Ok(mut c) = self.inner.lock() else {
            return;
        };
        let outcome = if result.is_some() { "ok" } else { "error" };
        *c.runs.entry((mode.clone(), outcome.into())).or_default() += 1;
        let d = c.durations.entry(mode).or_default();
        d.0 += seconds;
        d.1 += 1;
        if let Some(r) = result {
            if r.read_incomplete.is_some() {
                c.incomplete_reads += 1;
            }
            for (action, n) in [
                ("created", r.created),
                ("updated", r.updated),
                ("enabled", r.enabled),
                ("disabled", r.disabled),
                ("removed", r.removed),
                ("unchanged", r.unchanged),
            ] {
                *c.changes.entry(action.into()).or_default() += n as u64;
            }
        }
    }

    /// Count one password check: `None` accepted, else the refusal reason.
    pub fn record_auth(&self, reason: Option<&str>) {
        if let Ok(mut c) = self.inner.lock() {
            *c.auth
                .entry(reason.unwrap_or("ok").to_string())
                .or_default() += 1;
        }
    }

    /// Count one RADIUS request from `client` (the unknown ones as "unknown"):
    /// `outcome` is accept, challenge, reject or drop, `reason` why (or "").
    pub fn record_radius(&self, client: &str, outcome: &str, reason: &str) {
        let outcome = if reason.is_empty() {
            outcome.to_string()
        } else {
            format!("{outcome}:{reason}")
        };
        if let Ok(mut c) = self.inner.lock() {
            *c.radius.entry((client.to_string(), outcome)).or_default() += 1;
        }
    }

    /// The counters in the Prometheus text format.
    pub fn render_counters(&self) -> String {
        let mut out = String::new();
        let Ok(c) = self.inner.lock() else {
            return out;
        };
        out.push_str(
            "# HELP mfasync_sync_runs_total Synchronization cycles run, by mode and outcome.\n",
        );
        out.push_str("# TYPE mfasync_sync_runs_total counter\n");
        for ((mode, outcome), n) in &c.runs {
            let _ = writeln!(
                out,
                "mfasync_sync_runs_total{{mode=\"{}\",outcome=\"{}\"}} {n}",
                label(mode),
                label(outcome)
            );
        }
        out.push_str(
            "# HELP mfasync_sync_duration_seconds Time spent in synchronization cycles.\n",
        );
        out.push_str("# TYPE mfasync_sync_duration_seconds summary\n");
        for (mode, (sum, count)) in &c.durations {
            let _ = writeln!(
                out,
                "mfasync_sync_duration_seconds_sum{{mode=\"{}\"}} {sum}",
                label(mode)
            );
            let _ = writeln!(
                out,
                "mfasync_sync_duration_seconds_count{{mode=\"{}\"}} {count}",
                label(mode)
            );
        }
        out.push_str(
            "# HELP mfasync_sync_changes_total Users changed by synchronization, by action.\n",
        );
        out.push_str("# TYPE mfasync_sync_changes_total counter\n");
        for (action, n) in &c.changes {
            let _ = writeln!(
                out,
                "mfasync_sync_changes_total{{action=\"{}\"}} {n}",
                label(action)
            );
        }
        out.push_str("# HELP mfasync_sync_incomplete_reads_total Synchronization cycles whose directory read was cut short: nobody was disabled or removed by them.\n");
        out.push_str("# TYPE mfasync_sync_incomplete_reads_total counter\n");
        let _ = writeln!(
            out,
            "mfasync_sync_incomplete_reads_total {}",
            c.incomplete_reads
        );
        out.push_str(
            "# HELP mfasync_auth_total Password checks, by outcome (ok or the refusal reason).\n",
        );
        out.push_str("# TYPE mfasync_auth_total counter\n");
        for (outcome, n) in &c.auth {
            let _ = writeln!(
                out,
                "mfasync_auth_total{{outcome=\"{}\"}} {n}",
                label(outcome)
            );
        }
        if !c.radius.is_empty() {
            out.push_str("# HELP mfasync_radius_requests_total RADIUS requests, by client and outcome (accept, challenge, reject:<reason>, drop:<reason>).\n");
            out.push_str("# TYPE mfasync_radius_requests_total counter\n");
            for ((client, outcome), n) in &c.radius {
                let _ = writeln!(
                    out,
                    "mfasync_radius_requests_total{{client=\"{}\",outcome=\"{}\"}} {n}",
                    label(client),
                    label(outcome)
                );
            }
        }
        out
    }
}

/// Escape a label value (backslash, quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    summary = "Prometheus metrics",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")),
)]
pub(crate) async fn render(State(app): State<App>) -> impl IntoResponse {
    let mut out = app.metrics.render_counters();
    match app
        .store
        .approvals(Some(mfasync_store::ApprovalStatus::Pending))
        .await
    {
        Ok(p) => {
            out.push_str(
                "# HELP mfasync_pending_approvals Approvals waiting for an administrator.\n",
            );
            out.push_str("# TYPE mfasync_pending_approvals gauge\n");
            let _ = writeln!(out, "mfasync_pending_approvals {}", p.len());
        }
        Err(e) => tracing::warn!("metrics: cannot read approvals: {e}"),
    }
    if let Some(state) = crate::syncstate::current(app.store.as_ref()).await {
        out.push_str("# HELP mfasync_sync_configured Whether the active configuration has a sync item (0: nothing to synchronize, not a failure).\n");
        out.push_str("# TYPE mfasync_sync_configured gauge\n");
        let _ = writeln!(
            out,
            "mfasync_sync_configured {}",
            u8::from(state.configured())
        );
        out.push_str("# HELP mfasync_sync_state The service's synchronization state: not-configured, disabled or active.\n");
        out.push_str("# TYPE mfasync_sync_state gauge\n");
        let _ = writeln!(out, "mfasync_sync_state{{state=\"{}\"}} 1", state.label());
    }
    match app.store.runs(1).await {
        Ok(runs) => {
            if let Some(last) = runs.first() {
                let ts = time::OffsetDateTime::parse(
                    &last.started_at,
                    &time::format_description::well_known::Rfc3339,
                )
                .map(|t| t.unix_timestamp())
                .unwrap_or(0);
                out.push_str("# HELP mfasync_last_sync_start_timestamp_seconds When the newest sync cycle started.\n");
                out.push_str("# TYPE mfasync_last_sync_start_timestamp_seconds gauge\n");
                let _ = writeln!(out, "mfasync_last_sync_start_timestamp_seconds {ts}");
                out.push_str(
                    "# HELP mfasync_last_sync_failed Whether the newest sync cycle failed.\n",
                );
                out.push_str("# TYPE mfasync_last_sync_failed gauge\n");
                let _ = writeln!(
                    out,
                    "mfasync_last_sync_failed {}",
                    u8::from(last.error.is_some())
                );
            }
        }
        Err(e) => tracing::warn!("metrics: cannot read sync history: {e}"),
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}

//! Synchronize Now with live progress. The portal's Synchronize Now starts
//! the cycle in the background and answers at once with a progress page
//! (`/sync/progress/{job}`); a small script served from
//! `/static/progress.js` (no inline script: the CSP is `default-src 'self'`)
//! polls `/sync/status/{job}` every second and shows how long the cycle has
//! run and what the store's sync history says it is doing, then reloads the
//! page to show the result. Without script the page offers a reload link.
//! One portal synchronization at a time: pressing Synchronize Now while one
//! runs shows the running one.

use std::collections::VecDeque;
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Json};
use mfasync_core::report::{SyncNow, SyncProgress};
use serde_json::json;

use crate::auth::Admin;
use crate::html::{esc, notice, page};
use crate::App;

/// Jobs kept for their progress pages.
const KEPT: usize = 20;

#[derive(Clone)]
pub(crate) enum JobState {
    Running,
    Done(SyncNow),
    Failed(String),
}

pub(crate) struct Job {
    id: u64,
    full: bool,
    by: String,
    started_at: String,
    started: Instant,
    /// Answer on the Synchronization page rather than the history.
    from_sync: bool,
    state: JobState,
    /// `Backend::sync_progress` read right after the cycle ended.
    last_progress: SyncProgress,
}

#[derive(Default)]
pub(crate) struct Jobs {
    next: u64,
    list: VecDeque<Job>,
}

impl Jobs {
    fn running(&self) -> Option<u64> {
        self.list
            .iter()
            .find(|j| matches!(j.state, JobState::Running))
            .map(|j| j.id)
    }
}

/// Start a synchronization in the background (or find the running one);
/// the job's id.
pub(crate) fn start(app: &App, admin: &Admin, full: bool, from_sync: bool) -> u64 {
    let id = {
        let Ok(mut jobs) = app.jobs.lock() else {
            return 0;
        };
        if let Some(id) = jobs.running() {
            return id;
        }
        jobs.next += 1;
        let id = jobs.next;
        jobs.list.push_back(Job {
            id,
            full,
            by: admin.username.clone(),
            started_at: crate::auth::now_text(),
            started: Instant::now(),
            from_sync,
            state: JobState::Running,
            last_progress: SyncProgress::default(),
        });
        while jobs.list.len() > KEPT {
            jobs.list.pop_front();
        }
        id
    };
    let app2 = app.clone();
    tokio::spawn(async move {
        let result = crate::api::run_sync(&app2, full).await;
        let last_progress = app2.backend.sync_progress();
        if let Err(e) = &result {
            tracing::error!("synchronization {id} failed: {e}");
        }
        if let Ok(mut jobs) = app2.jobs.lock() {
            if let Some(j) = jobs.list.iter_mut().find(|j| j.id == id) {
                j.state = match result {
                    Ok(v) => JobState::Done(v),
                    Err(e) => JobState::Failed(e),
                };
                j.last_progress = last_progress;
            }
        }
    });
    id
}

/// A snapshot of one job.
struct Snapshot {
    full: bool,
    by: String,
    started_at: String,
    seconds: u64,
    from_sync: bool,
    state: JobState,
    /// Directory entries read by a finished cycle.
    entries_read: u64,
}

fn snapshot(app: &App, id: u64) -> Option<Snapshot> {
    let jobs = app.jobs.lock().ok()?;
    let j = jobs.list.iter().find(|j| j.id == id)?;
    Some(Snapshot {
        full: j.full,
        by: j.by.clone(),
        started_at: j.started_at.clone(),
        seconds: j.started.elapsed().as_secs(),
        from_sync: j.from_sync,
        state: j.state.clone(),
        entries_read: j.last_progress.entries_read,
    })
}

/// " (N directory entries read, phase)" for a running job.
fn live_text(progress: &SyncProgress) -> String {
    let n = progress.entries_read;
    match &progress.phase {
        Some(p) => format!("{n} directory entries read; {p}"),
        None => format!("{n} directory entries read"),
    }
}

/// What the store's history says the running cycle is (the newest run
/// without an end).
async fn running_run(app: &App) -> Option<String> {
    let runs = app.store.runs(1).await.ok()?;
    let r = runs.into_iter().next()?;
    if r.finished_at.is_some() {
        return None;
    }
    Some(format!(
        "{} cycle #{} started {}",
        r.mode, r.id, r.started_at
    ))
}

/// `GET /api/v1/sync/jobs/{id}`: the same document as `/sync/status/{id}`.
#[utoipa::path(
    get,
    path = "/sync/jobs/{id}",
    operation_id = "sync_job",
    summary = "A synchronization started with wait=false (or from the portal): running, done or failed",
    params(("id" = u64, Path)),
    responses(
        (status = 200, description = "The job", body = crate::apidoc::schemas::SyncJob),
        (status = 404, description = "No such job (jobs are kept in memory, the last 20)", body = crate::apidoc::schemas::Error),
        (status = 401, description = "Not signed in: no or unknown bearer token", body = crate::apidoc::schemas::Error),
    ),
)]
pub(crate) async fn api_job(state: State<App>, id: Path<u64>) -> Response {
    status(state, id).await
}

pub(crate) async fn status(State(app): State<App>, Path(id): Path<u64>) -> Response {
    let Some(job) = snapshot(&app, id) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no such synchronization"})),
        )
            .into_response();
    };
    let secs = job.seconds;
    let state = match job.state {
        JobState::Running => {
            let p = app.backend.sync_progress();
            let mut v = json!({
                "state": "running",
                "elapsed_seconds": secs,
                "cycle": running_run(&app).await,
                "entries_read": p.entries_read,
            });
            if let Some(phase) = p.phase {
                v["phase"] = phase.into();
            }
            v
        }
        JobState::Done(result) => json!({
            "state": "done", "result": result,
            "elapsed_seconds": secs, "entries_read": job.entries_read,
        }),
        JobState::Failed(error) => json!({
            "state": "failed", "error": error,
            "elapsed_seconds": secs, "entries_read": job.entries_read,
        }),
    };
    Json(state).into_response()
}

pub(crate) async fn progress_page(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Path(id): Path<u64>,
) -> Response {
    let Some(job) = snapshot(&app, id) else {
        let body = notice(
            "error",
            "No such synchronization (the service may have restarted); see the sync history.",
        );
        return (
            StatusCode::NOT_FOUND,
            page("Synchronize Now", Some(&admin), "/history", &body),
        )
            .into_response();
    };
    let Snapshot {
        full,
        by,
        started_at,
        seconds: secs,
        from_sync,
        state,
        entries_read,
    } = job;
    let active = if from_sync { "/sync" } else { "/history" };
    let head = format!(
        "<p>{} synchronization requested by {} at {}.</p>",
        if full { "Full" } else { "A" },
        esc(&by),
        esc(&started_at)
    );
    let links = r#"<p><a href="/sync">Synchronization</a> · <a href="/history">Sync history</a> · <a href="/users">Users</a></p>"#;
    let body = match state {
        JobState::Running => {
            let cycle = running_run(&app).await.unwrap_or_default();
            let live = live_text(&app.backend.sync_progress());
            format!(
                r#"{head}<p class="notice ok" id="progress" data-job="{id}">Synchronization running: {secs} s{cycle}; {live}</p>
<noscript><p><a href="/sync/progress/{id}">Reload</a> to see whether it has finished.</p></noscript>
<script src="/static/progress.js"></script>{links}"#,
                cycle = if cycle.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", esc(&cycle))
                },
                live = esc(&live),
            )
        }
        JobState::Done(result) => format!(
            r#"{head}<div id="sync-result">{}</div><p id="entries-read">{entries_read} directory entries read.</p>{links}"#,
            notice("ok", &crate::portal::sync_summary(&result)),
        ),
        JobState::Failed(error) => format!(
            r#"{head}<div id="sync-result">{}</div>{links}"#,
            notice("error", &format!("Synchronization failed: {error}"))
        ),
    };
    page("Synchronize Now", Some(&admin), active, &body).into_response()
}

/// After a Synchronize Now post: to the job's progress page.
pub(crate) fn redirect(id: u64) -> Response {
    Redirect::to(&format!("/sync/progress/{id}")).into_response()
}

const SCRIPT: &str = r#"// Live progress of Synchronize Now: poll the job's status, reload when done.
(function () {
  var el = document.getElementById('progress');
  if (!el) { return; }
  var job = el.getAttribute('data-job');
  function poll() {
    fetch('/sync/status/' + job, { credentials: 'same-origin', cache: 'no-store' })
      .then(function (r) { return r.json(); })
      .then(function (s) {
        if (s.state === 'running') {
          el.textContent = 'Synchronization running: ' + s.elapsed_seconds + ' s' +
            (s.cycle ? ' (' + s.cycle + ')' : '') + '; ' + (s.entries_read || 0) +
            ' directory entries read' + (s.phase ? '; ' + s.phase : '');
          setTimeout(poll, 1000);
        } else {
          location.reload();
        }
      })
      .catch(function () { setTimeout(poll, 2000); });
  }
  setTimeout(poll, 300);
})();
"#;

pub(crate) async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        SCRIPT,
    )
        .into_response()
}

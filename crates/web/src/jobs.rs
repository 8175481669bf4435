//! Synchronize Now as background jobs, shared by the progress page, the
//! Synchronization and history pages and the API (`/api/v1/sync?wait=false`,
//! `/api/v1/sync/jobs/{id}`): start a cycle (or find the running one), what
//! each job came to, and a cycle run through the backend counted in the
//! metrics. One portal synchronization at a time.

use std::collections::VecDeque;
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use mfasync_core::report::{SyncNow, SyncProgress};
use serde_json::json;

use crate::auth::Admin;
use crate::App;

/// Run a cycle through the backend, counted in the metrics.
pub(crate) async fn run_sync(app: &App, full: bool) -> Result<SyncNow, String> {
    let started = Instant::now();
    let result = app.backend.sync_now(full).await;
    let report = match &result {
        Ok(SyncNow::HandedOver(_)) => return result, // no cycle here (docs/cluster.md)
        Ok(SyncNow::Ran(r)) => Some(r),
        Err(_) => None,
    };
    let mode = if full { "full" } else { "auto" };
    app.metrics
        .record_sync(mode, started.elapsed().as_secs_f64(), report);
    result
}

/// Jobs kept for their progress pages.
const KEPT: usize = 20;

#[derive(Clone)]
pub(crate) enum JobState {
    Running,
    Done(Box<SyncNow>),
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
        let result = run_sync(&app2, full).await;
        let last_progress = app2.backend.sync_progress();
        if let Err(e) = &result {
            tracing::error!("synchronization {id} failed: {e}");
        }
        if let Ok(mut jobs) = app2.jobs.lock() {
            if let Some(j) = jobs.list.iter_mut().find(|j| j.id == id) {
                j.state = match result {
                    Ok(v) => JobState::Done(Box::new(v)),
                    Err(e) => JobState::Failed(e),
                };
                j.last_progress = last_progress;
            }
        }
    });
    id
}

/// A snapshot of one job.
pub(crate) struct Snapshot {
    pub(crate) full: bool,
    pub(crate) by: String,
    pub(crate) started_at: String,
    pub(crate) seconds: u64,
    pub(crate) from_sync: bool,
    pub(crate) state: JobState,
    /// Directory entries read by a finished cycle.
    pub(crate) entries_read: u64,
}

pub(crate) fn snapshot(app: &App, id: u64) -> Option<Snapshot> {
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
pub(crate) fn live_text(progress: &SyncProgress) -> String {
    let n = progress.entries_read;
    match &progress.phase {
        Some(p) => format!("{n} directory entries read; {p}"),
        None => format!("{n} directory entries read"),
    }
}

/// What the store's history says the running cycle is (the newest run
/// without an end).
pub(crate) async fn running_run(app: &App) -> Option<String> {
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
        (status = 200, description = "The job", body = crate::schemas::SyncJob),
        (status = 404, description = "No such job (jobs are kept in memory, the last 20)", body = crate::schemas::Error),
        (status = 401, description = "Not signed in: no or unknown bearer token", body = crate::schemas::Error),
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

/// What a finished synchronization did, in a sentence.
pub(crate) fn sync_summary(v: &SyncNow) -> String {
    let r = match v {
        SyncNow::Ran(r) => r,
        SyncNow::HandedOver(h) => {
            let on = &h.requested_on;
            return match &h.handed_to {
                Some(to) => format!(
                    "This server ({on}) does not run synchronization: the request was handed to server {to}, which starts it at its next heartbeat (see the history)."
                ),
                None => format!(
                    "This server ({on}) does not run synchronization and no server does right now: the request waits for the next server to run synchronization."
                ),
            };
        }
    };
    let mut s = match &r.note {
        Some(note) => format!("{}. ", note.trim_end_matches('.')),
        None => String::new(),
    };
    s += &format!(
        "{} synchronization done: {} created, {} updated, {} enabled, {} disabled, {} removed, {} unchanged.",
        r.mode, r.created, r.updated, r.enabled, r.disabled, r.removed, r.unchanged,
    );
    if let Some(p) = &r.pending_approval {
        s.push_str(&format!(
            " Held for approval: {} ({} disable, {} remove).",
            p.id, p.disable, p.remove,
        ));
    }
    s
}

/// After a Synchronize Now post: to the job's progress page.
pub(crate) fn redirect(id: u64) -> Response {
    Redirect::to(&format!("/sync/progress/{id}")).into_response()
}

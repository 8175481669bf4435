//! Synchronize Now with live progress. The portal's Synchronize Now starts
//! the cycle in the background (`jobs::start`) and answers at once with a
//! progress page (`/sync/progress/{job}`); a small script served from
//! `/static/progress.js` (no inline script: the CSP is `default-src 'self'`)
//! polls `/sync/status/{job}` every second and shows how long the cycle has
//! run and what the store's sync history says it is doing, then reloads the
//! page to show the result. Without script the page offers a reload link.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};

use crate::auth::Admin;
use crate::jobs::{live_text, running_run, snapshot, sync_summary, JobState, Snapshot};
use crate::kit::{message, render, Chrome, Flash, When};
use crate::App;

// The API's job routes use these until api.rs imports them from `jobs`.

pub(crate) fn routes() -> Router<App> {
    Router::new()
        .route("/sync/progress/{id}", get(progress_page))
        .route("/sync/status/{id}", get(crate::jobs::status))
}

#[derive(Template)]
#[template(path = "progress.html")]
struct ProgressPage {
    chrome: Chrome,
    id: u64,
    full: bool,
    by: String,
    started_at: When,
    /// Running: seconds so far, the history's cycle, what is read so far.
    running: Option<Running>,
    /// Finished: what it came to (an ok or error notice).
    result: Option<Flash>,
    entries_read: Option<u64>,
}

struct Running {
    seconds: u64,
    cycle: String,
    live: String,
}

pub(crate) async fn progress_page(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Path(id): Path<u64>,
) -> Response {
    let Some(job) = snapshot(&app, id) else {
        return message(
            StatusCode::NOT_FOUND,
            "Synchronize Now",
            Some(&admin),
            "/history",
            vec![Flash::error(
                "No such synchronization (the service may have restarted); see the sync history.",
            )],
        );
    };
    let Snapshot {
        full,
        by,
        started_at,
        seconds,
        from_sync,
        state,
        entries_read,
    } = job;
    let active = if from_sync { "/sync" } else { "/history" };
    let (running, result, entries_read) = match state {
        JobState::Running => (
            Some(Running {
                seconds,
                cycle: running_run(&app).await.unwrap_or_default(),
                live: live_text(&app.backend.sync_progress()),
            }),
            None,
            None,
        ),
        JobState::Done(result) => (
            None,
            Some(Flash::ok(sync_summary(&result))),
            Some(entries_read),
        ),
        JobState::Failed(error) => (
            None,
            Some(Flash::error(format!("Synchronization failed: {error}"))),
            None,
        ),
    };
    render(&ProgressPage {
        chrome: Chrome::new("Synchronize Now", Some(&admin), active),
        id,
        full,
        by,
        started_at: When::of(&started_at),
        running,
        result,
        entries_read,
    })
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

//! The Sync history page (`/history`): Synchronize Now, the chart of changes
//! over time, and the newest runs.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use mfasync_store::SyncRun;

use crate::auth::Admin;
use crate::charts::Chart;
use crate::kit::{db_error, render_with, Chrome, When};
use crate::App;

/// Runs listed (and drawn) at most.
const RUNS_SHOWN: i64 = 100;

pub(crate) fn routes() -> Router<App> {
    Router::new().route("/history", get(history))
}

/// One run as listed.
struct RunRow {
    id: i64,
    started: When,
    finished: Option<When>,
    mode: String,
    counts: [i64; 5],
    error: String,
    note: String,
}

impl RunRow {
    fn of(r: &SyncRun) -> RunRow {
        RunRow {
            id: r.id,
            started: When::of(&r.started_at),
            finished: r.finished_at.as_deref().map(When::of),
            mode: r.mode.clone(),
            counts: [r.created, r.updated, r.enabled, r.disabled, r.removed],
            error: r.error.clone().unwrap_or_default(),
            note: r.note.clone().unwrap_or_default(),
        }
    }
}

#[derive(Template)]
#[template(path = "history.html")]
struct HistoryPage {
    chrome: Chrome,
    chart: Chart,
    runs: Vec<RunRow>,
}

async fn history(State(app): State<App>, Extension(admin): Extension<Admin>) -> Response {
    let runs = match app.store.runs(RUNS_SHOWN).await {
        Ok(r) => r,
        Err(e) => return db_error(Some(&admin), e),
    };
    render_with(
        StatusCode::OK,
        &HistoryPage {
            chrome: Chrome::new("Sync history", Some(&admin), "/history"),
            chart: crate::charts::changes(&runs),
            runs: runs.iter().map(RunRow::of).collect(),
        },
    )
}

//! The outbox of welcome and update emails (issue 19): the portal's Outbox
//! page and `GET /api/v1/outbox`, newest first, filtered by status.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Deserialize;

use askama::Template;

use crate::auth::Admin;
use crate::kit::{db_error, render_with, Chrome, Flash, When};
use crate::App;
use mfasync_store::{OutboxEmail, OutboxStatus};

/// Rows shown on the page at most.
const SHOWN: i64 = 500;

pub(crate) fn api_routes() -> utoipa_axum::router::OpenApiRouter<App> {
    utoipa_axum::router::OpenApiRouter::new().routes(utoipa_axum::routes!(api_outbox))
}

pub(crate) fn portal_routes() -> Router<App> {
    Router::new().route("/outbox", get(outbox_page))
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(default)]
struct OutboxQuery {
    /// pending | sent | failed; empty or absent: all
    #[param(value_type = Option<crate::schemas::EmailStatus>)]
    status: String,
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<i64>,
}

/// The status asked for: Ok(None) for all, Err for a word that is not one.
fn status_of(q: &OutboxQuery) -> Result<Option<OutboxStatus>, String> {
    match q.status.as_str() {
        "" | "all" => Ok(None),
        s => OutboxStatus::parse(s)
            .map(Some)
            .ok_or_else(|| format!("status {s:?}: use pending, sent or failed")),
    }
}

#[utoipa::path(
    get,
    path = "/outbox",
    operation_id = "outbox",
    summary = "Welcome and update emails to users (the outbox), newest first",
    params(OutboxQuery),
    responses(
        (status = 200, description = "Emails", body = Vec<crate::schemas::OutboxEmail>),
        (status = 400, description = "Unknown status", body = crate::schemas::Error),
        (status = 401, description = "Not signed in: no or unknown bearer token", body = crate::schemas::Error),
    ),
)]
async fn api_outbox(State(app): State<App>, Query(q): Query<OutboxQuery>) -> Response {
    let status = match status_of(&q) {
        Ok(s) => s,
        Err(m) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({ "error": m })),
            )
                .into_response()
        }
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    match app.store.outbox(status, limit).await {
        Ok(rows) => Json(
            rows.iter()
                .map(OutboxEmail::listing_json)
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => {
            tracing::error!("store: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(serde_json::json!({ "error": "database error" })),
            )
                .into_response()
        }
    }
}

/// One email as listed.
struct EmailRow {
    id: i64,
    queued: When,
    kind: &'static str,
    username: String,
    recipient: String,
    subject: String,
    status: &'static str,
    failed: bool,
    attempts: i64,
    /// "sent", "next attempt" or "given up", and when.
    when: &'static str,
    at: Option<When>,
    last_error: String,
}

impl EmailRow {
    fn of(e: &OutboxEmail) -> EmailRow {
        let (when, at) = match e.status {
            OutboxStatus::Sent => ("sent", e.sent_ms.map(When::of_ms)),
            OutboxStatus::Pending => ("next attempt", Some(When::of_ms(e.due_ms))),
            OutboxStatus::Failed => ("given up", None),
        };
        EmailRow {
            id: e.id,
            queued: When::of_ms(e.created_ms),
            kind: e.kind.as_str(),
            username: e.username.clone(),
            recipient: e.recipient.clone(),
            subject: e.subject.clone(),
            status: e.status.as_str(),
            failed: e.status == OutboxStatus::Failed,
            attempts: e.attempts,
            when,
            at,
            last_error: e.last_error.clone().unwrap_or_default(),
        }
    }
}

#[derive(Template)]
#[template(path = "outbox.html")]
struct OutboxPage {
    chrome: Chrome,
    flash: Vec<Flash>,
    /// (href, label, chosen)
    filters: Vec<(&'static str, &'static str, bool)>,
    emails: Vec<EmailRow>,
}

async fn outbox_page(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Query(q): Query<OutboxQuery>,
) -> Response {
    let (status, code, flash) = match status_of(&q) {
        Ok(s) => (s, StatusCode::OK, Vec::new()),
        Err(m) => (None, StatusCode::BAD_REQUEST, vec![Flash::error(m)]),
    };
    let rows = match app.store.outbox(status, SHOWN).await {
        Ok(r) => r,
        Err(e) => return db_error(Some(&admin), e),
    };
    let chosen = status.map(OutboxStatus::as_str).unwrap_or("");
    let filters = [
        ("/outbox", "", "All"),
        ("/outbox?status=pending", "pending", "Pending"),
        ("/outbox?status=sent", "sent", "Sent"),
        ("/outbox?status=failed", "failed", "Failed"),
    ]
    .into_iter()
    .map(|(href, value, label)| (href, label, value == chosen))
    .collect();
    render_with(
        code,
        &OutboxPage {
            chrome: Chrome::new("Outbox", Some(&admin), "/outbox"),
            flash,
            filters,
            emails: rows.iter().map(EmailRow::of).collect(),
        },
    )
}

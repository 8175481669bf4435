//! The outbox of welcome and update emails (issue 19): the portal's Outbox
//! page and `GET /api/v1/outbox`, newest first, filtered by status.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Deserialize;

use crate::auth::Admin;
use crate::html::{esc, page};
use crate::App;
use mfasync_store::{time_text, OutboxEmail, OutboxStatus};

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
    #[param(value_type = Option<crate::apidoc::schemas::EmailStatus>)]
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
        (status = 200, description = "Emails", body = Vec<crate::apidoc::schemas::OutboxEmail>),
        (status = 400, description = "Unknown status", body = crate::apidoc::schemas::Error),
        (status = 401, description = "Not signed in: no or unknown bearer token", body = crate::apidoc::schemas::Error),
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

fn row_html(e: &OutboxEmail) -> String {
    let when = match e.status {
        OutboxStatus::Sent => format!("sent {}", e.sent_ms.map(time_text).unwrap_or_default()),
        OutboxStatus::Pending => format!("next attempt {}", time_text(e.due_ms)),
        OutboxStatus::Failed => "given up".to_string(),
    };
    let status = match e.status {
        OutboxStatus::Failed => format!(r#"<span class="bad">{}</span>"#, e.status.as_str()),
        s => s.as_str().to_string(),
    };
    format!(
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        e.id,
        esc(&time_text(e.created_ms)),
        e.kind.as_str(),
        esc(&e.username),
        esc(&e.recipient),
        esc(&e.subject),
        status,
        e.attempts,
        esc(&when),
        esc(e.last_error.as_deref().unwrap_or("")),
    )
}

async fn outbox_page(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Query(q): Query<OutboxQuery>,
) -> Response {
    let (status, code, problem) = match status_of(&q) {
        Ok(s) => (s, StatusCode::OK, String::new()),
        Err(m) => (
            None,
            StatusCode::BAD_REQUEST,
            crate::html::notice("bad", &m),
        ),
    };
    let rows = match app.store.outbox(status, SHOWN).await {
        Ok(r) => r,
        Err(e) => return crate::portal::db_error(Some(&admin), e),
    };
    let mut filters = String::new();
    for (value, label) in [
        ("", "All"),
        ("pending", "Pending"),
        ("sent", "Sent"),
        ("failed", "Failed"),
    ] {
        let chosen = status.map(OutboxStatus::as_str).unwrap_or("") == value;
        let href = match value {
            "" => "/outbox".to_string(),
            v => format!("/outbox?status={v}"),
        };
        filters.push_str(&match chosen {
            true => format!(" <strong>{label}</strong>"),
            false => format!(r#" <a href="{href}">{label}</a>"#),
        });
    }
    let table: String = rows.iter().map(row_html).collect();
    let empty = match rows.is_empty() {
        true => "<p>No emails.</p>",
        false => "",
    };
    let body = format!(
        r#"{problem}<p>Welcome and update emails to users, queued with the sync change that calls for them and delivered by the server that runs synchronization (or by each one-shot <code>mfasync sync</code>). Re-queue with <code>mfasync outbox retry</code>.</p>
<p>Show:{filters}</p>
{empty}<table id="outbox"><tr><th>#</th><th>Queued</th><th>Kind</th><th>User</th><th>Recipient</th><th>Subject</th><th>Status</th><th>Attempts</th><th>When</th><th>Last error</th></tr>
{table}</table>"#
    );
    (code, page("Outbox", Some(&admin), "/outbox", &body)).into_response()
}

//! The REST API under `/api/v1` (documented by `openapi.json`, served at
//! `/api/v1/openapi.json`). JSON shapes are those of PRODUCT.md section 1.

use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use mfasync_core::auth::Reason;
use mfasync_core::lockout::{Account, Refusal};
use mfasync_core::report::SyncNow;
use mfasync_store::Approval;

use crate::auth::Admin;
use crate::limits::{client_key, RequestGate};
use crate::App;

pub(crate) const OPENAPI: &str = include_str!("openapi.json");

pub(crate) fn routes() -> Router<App> {
    Router::new()
        .route("/config", get(config_get).put(config_put))
        .route("/directory/test", post(directory_test))
        .route("/sync", post(sync_now))
        .route("/sync/jobs/{id}", get(crate::progress::api_job))
        .route("/users/{username}/history", get(user_history))
        .route("/plan", get(plan))
        .route("/users", get(users))
        .route("/approvals", get(approvals))
        .route("/approvals/{id}/approve", post(approve))
        .route("/approvals/{id}/reject", post(reject))
        .route("/history", get(history))
        .route("/auth", post(auth))
}

pub(crate) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn store_error(e: mfasync_store::StoreError) -> Response {
    tracing::error!("store: {e}");
    error(StatusCode::INTERNAL_SERVER_ERROR, "database error")
}

async fn config_get(State(app): State<App>) -> Response {
    match app.store.active_config().await {
        Ok(Some(v)) => {
            let view = crate::ConfigView::from_stored(&v);
            (
                [
                    (
                        header::CONTENT_TYPE,
                        "application/toml; charset=utf-8".to_string(),
                    ),
                    (header::ETAG, format!("\"{}\"", view.version)),
                ],
                view.toml,
            )
                .into_response()
        }
        Ok(None) => error(StatusCode::NOT_FOUND, "no configuration applied yet"),
        Err(e) => store_error(e),
    }
}

async fn config_put(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    body: String,
) -> Response {
    match app.backend.config_put(&body, &admin.username).await {
        Ok(version) => {
            tracing::info!(
                "configuration version {version} applied by {}",
                admin.username
            );
            Json(json!({ "version": version })).into_response()
        }
        Err(errors) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "errors": errors })),
        )
            .into_response(),
    }
}

async fn directory_test(State(app): State<App>) -> Response {
    let report = app.backend.directory_test().await;
    // the API has always answered with sorted keys (the CLI prints the
    // report in its fields' order): kept, as clients may compare the text
    match serde_json::to_value(&report) {
        Ok(sorted) => Json(sorted).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Deserialize)]
struct SyncQuery {
    #[serde(default)]
    full: bool,
    /// false: start the cycle and answer 202 with the job to poll.
    #[serde(default = "yes")]
    wait: bool,
}

fn yes() -> bool {
    true
}

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

async fn sync_now(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    query: Query<SyncQuery>,
) -> Response {
    if !query.wait {
        let id = crate::progress::start(&app, &admin, query.full, false);
        return (
            StatusCode::ACCEPTED,
            Json(json!({ "job": id, "status": format!("/api/v1/sync/jobs/{id}") })),
        )
            .into_response();
    }
    match run_sync(&app, query.full).await {
        Ok(v @ SyncNow::HandedOver(_)) => (StatusCode::ACCEPTED, Json(v)).into_response(),
        Ok(v @ SyncNow::Ran(_)) => Json(v).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn plan(State(app): State<App>) -> Response {
    match app.backend.plan().await {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

#[derive(Deserialize)]
pub(crate) struct UserQuery {
    #[serde(default)]
    pub q: String,
    /// Only users whose user group (`[attributes] user_group`) is this,
    /// compared case-insensitively; empty or absent: every user.
    #[serde(default)]
    pub user_group: String,
}

impl UserQuery {
    /// Whether a user matches both the search words and the user group.
    pub(crate) fn matches(&self, u: &mfasync_core::MfaUser) -> bool {
        user_matches(u, &self.q) && in_user_group(u, &self.user_group)
    }
}

/// Whether a user matches a search: every word of `q` appears
/// (case-insensitively) in the username, a name, the email, the
/// description or the DN.
pub(crate) fn user_matches(u: &mfasync_core::MfaUser, q: &str) -> bool {
    let hay = [
        Some(u.username.as_str()),
        u.first_name.as_deref(),
        u.last_name.as_deref(),
        u.email.as_deref(),
        u.description.as_deref(),
        u.dn.as_deref(),
    ]
    .iter()
    .flatten()
    .map(|s| s.to_lowercase())
    .collect::<Vec<_>>()
    .join("\n");
    q.split_whitespace()
        .all(|w| hay.contains(&w.to_lowercase()))
}

/// Whether a user is in `group` (the whole value, case-insensitively); an
/// empty `group` takes everyone.
pub(crate) fn in_user_group(u: &mfasync_core::MfaUser, group: &str) -> bool {
    let group = group.trim();
    group.is_empty()
        || u.user_group
            .as_deref()
            .is_some_and(|g| g.trim().to_lowercase() == group.to_lowercase())
}

async fn users(State(app): State<App>, query: Query<UserQuery>) -> Response {
    match app.store.users().await {
        Ok(mut users) => {
            users.retain(|u| query.matches(u));
            Json(users).into_response()
        }
        Err(e) => store_error(e),
    }
}

async fn approvals(State(app): State<App>) -> Response {
    match app
        .store
        .approvals(Some(mfasync_store::ApprovalStatus::Pending))
        .await
    {
        Ok(list) => Json(list.iter().map(Approval::listed).collect::<Vec<_>>()).into_response(),
        Err(e) => store_error(e),
    }
}

async fn approve(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Path(id): Path<String>,
) -> Response {
    match app.backend.approve(&id, &admin.username).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(StatusCode::CONFLICT, e),
    }
}

async fn reject(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Path(id): Path<String>,
) -> Response {
    match app.backend.reject(&id, &admin.username).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(StatusCode::CONFLICT, e),
    }
}

/// One user's sync history: its audit rows, newest first.
async fn user_history(State(app): State<App>, Path(username): Path<String>) -> Response {
    let found = match app
        .store
        .users_by(
            mfasync_store::UserKey::UsernameLower,
            &[username.to_lowercase()],
        )
        .await
    {
        Ok(f) => f,
        Err(e) => return store_error(e),
    };
    let Some(u) = found.into_iter().next() else {
        return error(StatusCode::NOT_FOUND, "no such MFA user");
    };
    match app
        .store
        .user_audit(
            &u.username,
            u.directory_id.as_deref(),
            crate::charts::USER_HISTORY_ROWS,
        )
        .await
    {
        Ok(audit) => Json(
            audit
                .iter()
                .map(crate::charts::history_json)
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize)]
struct HistoryQuery {
    limit: Option<i64>,
}

pub(crate) fn run_json(r: &mfasync_store::SyncRun) -> Value {
    json!({
        "id": r.id,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "mode": r.mode,
        "created": r.created,
        "updated": r.updated,
        "enabled": r.enabled,
        "disabled": r.disabled,
        "removed": r.removed,
        "unchanged": r.unchanged,
        "entries_read": r.entries_read,
        "error": r.error,
        "note": r.note,
        // (in the service an unfinished run is its own or is marked
        // interrupted when a server takes the sync lease over)
        "status": r.status(true),
    })
}

async fn history(State(app): State<App>, query: Query<HistoryQuery>) -> Response {
    let limit = query.limit.unwrap_or(50).clamp(1, 1000);
    match app.store.runs(limit).await {
        Ok(runs) => Json(runs.iter().map(run_json).collect::<Vec<_>>()).into_response(),
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize)]
struct AuthBody {
    username: String,
    password: String,
}

/// 429 with Retry-After and the PRODUCT.md body: `account-locked` for an
/// account over its limit, `rate-limited` for the client address's limits.
fn refused(app: &App, refusal: Refusal, client: Option<&str>) -> Response {
    let reason = refusal.reason().as_str();
    if refusal.reason() == Reason::RateLimited {
        tracing::warn!(
            client = client.unwrap_or("-"),
            "password check refused for {}s: too many failures from this address",
            refusal.wait().as_secs()
        );
    }
    app.metrics.record_auth(Some(reason));
    let mut r = (
        StatusCode::TOO_MANY_REQUESTS,
        Json(json!({ "ok": false, "reason": reason })),
    )
        .into_response();
    let secs = crate::limits::retry_after_secs(refusal.wait());
    if let Ok(v) = axum::http::HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
    }
    r
}

async fn auth(
    State(app): State<App>,
    peer: Option<Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: axum::http::HeaderMap,
    body: Result<Json<AuthBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(body)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected a JSON body {\"username\": \"...\", \"password\": \"...\"}",
        );
    };
    let client = client_key(
        peer.map(|Extension(c)| c.0),
        &headers,
        &app.opts.trusted_proxies,
    );
    let client = client.as_deref();
    // The typed name first (names the directory does not know), then, through
    // the gate, the account it names: refused without asking the directory.
    let typed = Account::typed(&body.username);
    if let Err(refusal) = app.auth_limits.check(client, &typed) {
        return refused(&app, refusal, client);
    }
    let gate = RequestGate::new(&app.auth_limits, client);
    let result = app
        .backend
        .auth_limited(&body.username, &body.password, &gate)
        .await;
    if let Some(refusal) = gate.refusal() {
        return refused(&app, refusal, client);
    }
    let account = gate.account().unwrap_or_else(|| typed.clone());
    match result {
        Ok(()) => {
            app.auth_limits.succeeded(client, &[&account, &typed]);
            app.metrics.record_auth(None);
            Json(json!({ "ok": true })).into_response()
        }
        Err(reason) => {
            if reason == Reason::InvalidCredentials {
                app.auth_limits.failed(client, &[&account]);
            }
            app.metrics.record_auth(Some(reason.as_str()));
            Json(json!({ "ok": false, "reason": reason.as_str() })).into_response()
        }
    }
}

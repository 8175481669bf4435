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

use crate::auth::Admin;
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
    Json(app.backend.directory_test().await).into_response()
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

/// A Synchronize Now queued for the server that runs synchronization
/// (`{"status": "queued", "handed_to": …}`) rather than run here.
pub(crate) fn handed_over(v: &Value) -> bool {
    v.get("status").and_then(Value::as_str) == Some("queued")
}

/// Run a cycle through the backend, counted in the metrics.
pub(crate) async fn run_sync(app: &App, full: bool) -> Result<Value, String> {
    let started = Instant::now();
    let result = app.backend.sync_now(full).await;
    if result.as_ref().is_ok_and(handed_over) {
        return result; // no cycle here (docs/cluster.md)
    }
    let mode = if full { "full" } else { "auto" };
    app.metrics
        .record_sync(mode, started.elapsed().as_secs_f64(), result.as_ref().ok());
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
        Ok(v) if handed_over(&v) => (StatusCode::ACCEPTED, Json(v)).into_response(),
        Ok(v) => Json(v).into_response(),
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
}

/// Whether a user matches a search: every word of `q` appears
/// (case-insensitively) in the username, a name, the email or the DN.
pub(crate) fn user_matches(u: &mfasync_core::MfaUser, q: &str) -> bool {
    let hay = [
        Some(u.username.as_str()),
        u.first_name.as_deref(),
        u.last_name.as_deref(),
        u.email.as_deref(),
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

async fn users(State(app): State<App>, query: Query<UserQuery>) -> Response {
    match app.store.users().await {
        Ok(mut users) => {
            users.retain(|u| user_matches(u, &query.q));
            Json(users).into_response()
        }
        Err(e) => store_error(e),
    }
}

/// A pending approval as `approvals list --json` shows it.
pub(crate) fn approval_json(a: &mfasync_store::Approval) -> Value {
    let names = |action: &str| {
        a.changes
            .iter()
            .filter(|c| c.action == action)
            .map(|c| c.username.clone())
            .collect::<Vec<_>>()
    };
    json!({
        "id": a.id,
        "created_at": a.created_at,
        "disable": names("disable"),
        "remove": names("remove"),
    })
}

async fn approvals(State(app): State<App>) -> Response {
    match app
        .store
        .approvals(Some(mfasync_store::ApprovalStatus::Pending))
        .await
    {
        Ok(list) => Json(list.iter().map(approval_json).collect::<Vec<_>>()).into_response(),
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

/// The client of a request: the socket peer, or, when the peer is a trusted
/// proxy, the right-most `X-Forwarded-For` address that is not itself a
/// trusted proxy. None without a socket address (not served over TCP).
pub(crate) fn client_address(
    peer: Option<std::net::SocketAddr>,
    headers: &axum::http::HeaderMap,
    trusted: &[std::net::IpAddr],
) -> Option<std::net::IpAddr> {
    let peer = peer?.ip();
    if !trusted.contains(&peer) {
        return Some(peer);
    }
    let forwarded: Vec<std::net::IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|a| a.trim().parse::<std::net::IpAddr>())
        .collect::<Result<_, _>>()
        // a malformed header from a trusted proxy: count the proxy itself
        .unwrap_or_default();
    Some(
        forwarded
            .iter()
            .rev()
            .find(|a| !trusted.contains(a))
            .copied()
            .unwrap_or(peer),
    )
}

/// 429 with Retry-After (whole seconds, at least 1) and the PRODUCT.md body.
fn too_many(app: &App, wait: std::time::Duration) -> Response {
    app.metrics.record_auth(Some("account-locked"));
    let mut r = (
        StatusCode::TOO_MANY_REQUESTS,
        Json(json!({ "ok": false, "reason": "account-locked" })),
    )
        .into_response();
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    if let Ok(v) = axum::http::HeaderValue::from_str(&secs.max(1).to_string()) {
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
    let key = body.username.to_lowercase();
    let client = client_address(
        peer.map(|Extension(c)| c.0),
        &headers,
        &app.opts.trusted_proxies,
    )
    .map(|a| a.to_string());
    let now = std::time::Instant::now();
    // Too many wrong passwords from this address, or for this username,
    // lately: refused without asking the directory (password guessing).
    if let Some(c) = &client {
        let wait = app
            .auth_client_limiter
            .lock()
            .ok()
            .and_then(|mut l| l.retry_after(c, now));
        if let Some(wait) = wait {
            tracing::warn!(client = %c, "password checks from this address refused for {}s (too many failures)", wait.as_secs());
            return too_many(&app, wait);
        }
    }
    let wait = app
        .auth_limiter
        .lock()
        .ok()
        .and_then(|mut l| l.retry_after(&key, now));
    if let Some(wait) = wait {
        return too_many(&app, wait);
    }
    match app.backend.auth(&body.username, &body.password).await {
        Ok(()) => {
            if let Ok(mut l) = app.auth_limiter.lock() {
                l.succeeded(&key);
            }
            app.metrics.record_auth(None);
            Json(json!({ "ok": true })).into_response()
        }
        Err(reason) => {
            if reason == mfasync_core::auth::Reason::InvalidCredentials {
                if let Ok(mut l) = app.auth_limiter.lock() {
                    l.failed(&key, now);
                }
                if let (Some(c), Ok(mut l)) = (&client, app.auth_client_limiter.lock()) {
                    l.failed(c, now);
                }
            }
            app.metrics.record_auth(Some(reason.as_str()));
            Json(json!({ "ok": false, "reason": reason.as_str() })).into_response()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::client_address;
    use axum::http::{HeaderMap, HeaderValue};
    use std::net::{IpAddr, SocketAddr};

    #[test]
    fn client_address_trusts_forwarded_for_only_from_trusted_proxies() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let peer = |s: &str| Some(SocketAddr::new(ip(s), 4000));
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 198.51.100.7, 10.0.0.2"),
        );
        // not a trusted proxy: the header is ignored
        assert_eq!(
            client_address(peer("192.0.2.1"), &h, &[]),
            Some(ip("192.0.2.1"))
        );
        // trusted proxy: right-most address that is not a trusted proxy
        let trusted = [ip("10.0.0.1"), ip("10.0.0.2")];
        assert_eq!(
            client_address(peer("10.0.0.1"), &h, &trusted),
            Some(ip("198.51.100.7"))
        );
        // trusted proxy without a header, or with garbage: the proxy itself
        assert_eq!(
            client_address(peer("10.0.0.1"), &HeaderMap::new(), &trusted),
            Some(ip("10.0.0.1"))
        );
        let mut bad = HeaderMap::new();
        bad.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.2.3.4, nonsense"),
        );
        assert_eq!(
            client_address(peer("10.0.0.1"), &bad, &trusted),
            Some(ip("10.0.0.1"))
        );
        assert_eq!(client_address(None, &h, &trusted), None);
    }
}

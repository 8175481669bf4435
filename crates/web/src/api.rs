//! The REST API under `/api/v1`, documented by each handler's
//! `#[utoipa::path]` (the document, served at `/api/v1/openapi.json`, is
//! built in `apidoc.rs`). JSON shapes are those of PRODUCT.md section 1.

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use mfasync_core::auth::Reason;
use mfasync_core::lockout::{Account, Refusal};
use mfasync_core::report::directory::TestReport;
use mfasync_core::report::explain::{Explanation, UserSynced};
use mfasync_core::report::{ApprovalListed, Approved, BinEntry, Rejected, SyncNow, SyncReport};
use mfasync_core::MfaUser;
use mfasync_store::Approval;

use crate::auth::Admin;
use crate::jobs::run_sync;
use crate::limits::{client_key, RequestGate};
use crate::schemas::{
    AuthRequest, AuthResult, ConfigApplied, ConfigErrors, Error, SyncAccepted, SyncRun,
    UserHistoryEntry,
};
use crate::App;

/// The API's routes under `/api/v1`, each registered with its documentation.
pub(crate) fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(config_get, config_put))
        .routes(routes!(directory_test))
        .routes(routes!(sync_now))
        .routes(routes!(crate::jobs::api_job))
        .routes(routes!(user_history))
        .routes(routes!(explain_user))
        .routes(routes!(sync_user))
        .routes(routes!(plan))
        .routes(routes!(users))
        .routes(routes!(approvals))
        .routes(routes!(approve))
        .routes(routes!(reject))
        .routes(routes!(history))
        .routes(routes!(recycle_bin))
        .routes(routes!(bin_restore))
        .routes(routes!(bin_purge))
        .routes(routes!(auth))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn store_error(e: mfasync_store::StoreError) -> Response {
    tracing::error!("store: {e}");
    error(StatusCode::INTERNAL_SERVER_ERROR, "database error")
}

#[utoipa::path(
    get,
    path = "/config",
    summary = "The active configuration as TOML, secrets left out",
    responses(
        (status = 200, description = "TOML", body = String, content_type = "application/toml"),
        (status = 404, description = "No configuration applied yet", body = Error),
        (status = 401, description = "Not signed in: no or unknown bearer token", body = Error),
    ),
)]
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

#[utoipa::path(
    put,
    path = "/config",
    summary = "Validate and apply a configuration (TOML body); a new version",
    request_body(content((String = "application/toml"), (String = "text/plain"))),
    responses(
        (status = 200, description = "Applied", body = ConfigApplied),
        (status = 422, description = "Invalid: every problem with its key path", body = ConfigErrors),
        (status = 401, description = "Not signed in: no or unknown bearer token", body = Error),
    ),
)]
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

#[utoipa::path(
    post,
    path = "/directory/test",
    summary = "Test the directory connection step by step (the seed's Test button)",
    responses(
        (status = 200, description = "Diagnostic steps", body = TestReport),
        (status = 401, description = "Not signed in: no or unknown bearer token", body = Error),
    ),
)]
async fn directory_test(State(app): State<App>) -> Response {
    let report = app.backend.directory_test().await;
    // the API has always answered with sorted keys (the CLI prints the
    // report in its fields' order): kept, as clients may compare the text
    match serde_json::to_value(&report) {
        Ok(sorted) => Json(sorted).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SyncQuery {
    /// A full synchronization (Synchronize Now).
    #[serde(default)]
    #[param(default = false)]
    full: bool,
    /// false: answer 202 at once with a job to poll at /api/v1/sync/jobs/{id}.
    #[serde(default = "yes")]
    #[param(default = true)]
    wait: bool,
}

fn yes() -> bool {
    true
}

#[utoipa::path(
    post,
    path = "/sync",
    summary = "Run one synchronization cycle now",
    params(SyncQuery),
    responses(
        (status = 200, description = "Counts", body = SyncReport),
        (status = 202, description = "wait=false: the cycle started (or the one running); poll the job. Or, on a server that does not run synchronization (several servers on one database): the request was queued for the server that does, which starts it at its next heartbeat", body = SyncAccepted),
        (status = 500, description = "The cycle failed", body = Error),
        (status = 401, description = "Not signed in: no or unknown bearer token", body = Error),
    ),
)]
async fn sync_now(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    query: Query<SyncQuery>,
) -> Response {
    if !query.wait {
        let id = crate::jobs::start(&app, &admin, query.full, false);
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

#[utoipa::path(
    get,
    path = "/plan",
    summary = "What a sync would change; changes nothing",
    responses(
        (status = 200, description = "Plan", body = SyncReport),
        (status = 500, description = "The plan could not be computed", body = Error),
        (status = 401, description = "Not signed in: no or unknown bearer token", body = Error),
    ),
)]
async fn plan(State(app): State<App>) -> Response {
    match app.backend.plan().await {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct UserQuery {
    /// Words that must all appear (case-insensitively) in the username,
    /// names, email, description or DN.
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

#[utoipa::path(
    get,
    path = "/users",
    summary = "MFA users (the fields of `mfasync users export`)",
    params(UserQuery),
    responses(
        (status = 200, description = "Users", body = Vec<MfaUser>),
        (status = 401, description = "Not signed in: no or unknown bearer token", body = Error),
    ),
)]
async fn users(State(app): State<App>, query: Query<UserQuery>) -> Response {
    match app.store.users().await {
        Ok(mut users) => {
            users.retain(|u| query.matches(u));
            Json(users).into_response()
        }
        Err(e) => store_error(e),
    }
}

#[utoipa::path(
    get,
    path = "/approvals",
    summary = "Pending approvals",
    responses(
        (status = 200, description = "Pending approvals", body = Vec<ApprovalListed>),
        (status = 401, description = "Not signed in: no or unknown bearer token", body = Error),
    ),
)]
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

/// The optional body of an approve or reject: the held users to decide
/// alone (absent or empty: the whole approval).
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub(crate) struct Decision {
    /// Usernames held by the approval.
    users: Vec<String>,
}

/// The users a decision's body names: none for an empty body or one without
/// `users` (as before the field existed); 400 for a body that is not JSON of
/// that shape, so a mistyped list never decides the whole approval.
fn decision_users(body: &[u8]) -> Result<Vec<String>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    serde_json::from_slice::<Decision>(body)
        .map(|d| d.users)
        .map_err(|e| format!("the body is not {{\"users\": [usernames]}}: {e}"))
}

#[utoipa::path(
    post,
    path = "/approvals/{id}/approve",
    summary = "Approve a pending approval (runs a full cycle with it in force)",
    params(("id" = String, Path)),
    request_body(content = Option<Decision>, description = "Optional: only these held users (the others stay pending)"),
    responses(
        (status = 200, description = "Result", body = Approved),
        (status = 400, description = "A body that is not {\"users\": [...]}", body = Error),
        (status = 409, description = "Unknown or not pending, or a user it does not hold pending", body = Error),
        (status = 401, description = "Not signed in: no or unknown bearer token", body = Error),
    ),
)]
async fn approve(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let users = match decision_users(&body) {
        Ok(users) => users,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    match app.backend.approve(&id, &users, &admin.username).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(StatusCode::CONFLICT, e),
    }
}

#[utoipa::path(
    post,
    path = "/approvals/{id}/reject",
    summary = "Reject a pending approval",
    params(("id" = String, Path)),
    request_body(content = Option<Decision>, description = "Optional: only these held users (the others stay pending)"),
    responses(
        (status = 200, description = "Result", body = Rejected),
        (status = 400, description = "A body that is not {\"users\": [...]}", body = Error),
        (status = 409, description = "Unknown or not pending, or a user it does not hold pending", body = Error),
        (status = 401, description = "Not signed in: no or unknown bearer token", body = Error),
    ),
)]
async fn reject(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let users = match decision_users(&body) {
        Ok(users) => users,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    match app.backend.reject(&id, &users, &admin.username).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(StatusCode::CONFLICT, e),
    }
}

/// One user's sync history: its audit rows, newest first.
#[utoipa::path(
    get,
    path = "/users/{username}/history",
    summary = "One user's sync history: its audit rows, newest first",
    params(("username" = String, Path)),
    responses(
        (status = 200, description = "Audit rows", body = Vec<UserHistoryEntry>),
        (status = 404, description = "No such MFA user", body = Error),
        (status = 401, description = "Not signed in: no or unknown bearer token", body = Error),
    ),
)]
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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct HistoryQuery {
    #[param(minimum = 1, maximum = 1000, default = 50)]
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

#[utoipa::path(
    get,
    path = "/history",
    summary = "Sync history, newest first",
    params(HistoryQuery),
    responses(
        (status = 200, description = "Runs", body = Vec<SyncRun>),
        (status = 401, description = "Not signed in: no or unknown bearer token", body = Error),
    ),
)]
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

#[utoipa::path(
    post,
    path = "/auth",
    summary = "Verify a password by LDAP bind",
    request_body = AuthRequest,
    responses(
        (status = 200, description = "Outcome", body = AuthResult),
        (status = 400, description = "Malformed body", body = Error),
        (status = 401, description = "Not signed in: no or unknown bearer token", body = Error),
        (status = 429, description = "Refused without asking the directory: reason account-locked (too many wrong passwords for the account) or rate-limited (too many from the client address for this account); Retry-After says when to try again", body = AuthResult, headers(("Retry-After" = u64))),
    ),
)]
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

#[utoipa::path(
    get,
    path = "/users/{username}/explain",
    summary = "Why a user is (or is not) an MFA user: its entry read now and decided step by step",
    params(("username" = String, Path, description = "A username or a DN")),
    responses(
        (status = 200, description = "The explanation", body = Explanation),
        (status = 500, description = "The directory or the database failed", body = Error),
        (status = 401, description = "Not signed in: no or unknown bearer token", body = Error),
    ),
)]
async fn explain_user(State(app): State<App>, Path(name): Path<String>) -> Response {
    match app.backend.explain_user(&name).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

#[utoipa::path(
    post,
    path = "/users/{username}/sync",
    summary = "Synchronize one user now: its entry read and applied alone (nobody else departs)",
    params(("username" = String, Path, description = "A username or a DN")),
    responses(
        (status = 200, description = "What was done", body = UserSynced),
        (status = 500, description = "Nothing changed: the directory or the database failed, or this server does not run synchronization", body = Error),
        (status = 401, description = "Not signed in: no or unknown bearer token", body = Error),
    ),
)]
async fn sync_user(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Path(name): Path<String>,
) -> Response {
    match app.backend.sync_user(&name, &admin.username).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

#[utoipa::path(
    get,
    path = "/recycle-bin",
    summary = "The recycle bin: users a sync removed, most recently removed first (`users deleted`)",
    responses(
        (status = 200, description = "Binned users", body = Vec<BinEntry>),
        (status = 401, description = "Not signed in: no or unknown bearer token", body = Error),
    ),
)]
async fn recycle_bin(State(app): State<App>) -> Response {
    match app.store.binned().await {
        Ok(bin) => Json(bin.iter().map(|b| b.entry()).collect::<Vec<_>>()).into_response(),
        Err(e) => store_error(e),
    }
}

/// A restore or purge's answer: the entry, 404 when none, 409 on a conflict.
fn bin_outcome(
    done: Result<Option<mfasync_store::BinnedUser>, mfasync_store::StoreError>,
) -> Response {
    match done {
        Ok(Some(b)) => Json(b.entry()).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "no such user in the recycle bin"),
        Err(mfasync_store::StoreError::Conflict(why)) => error(StatusCode::CONFLICT, why),
        Err(e) => store_error(e),
    }
}

#[utoipa::path(
    post,
    path = "/recycle-bin/{name}/restore",
    summary = "Put a binned user back among the MFA users with its MFA data (`users restore`)",
    params(("name" = String, Path, description = "Its username, or its directory id when several binned users share the username")),
    responses(
        (status = 200, description = "The entry restored", body = BinEntry),
        (status = 404, description = "No such user in the recycle bin", body = Error),
        (status = 409, description = "A live user has its username or directory id", body = Error),
        (status = 401, description = "Not signed in: no or unknown bearer token", body = Error),
    ),
)]
async fn bin_restore(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Path(name): Path<String>,
) -> Response {
    bin_outcome(app.store.bin_restore(&name, &admin.username).await)
}

#[utoipa::path(
    post,
    path = "/recycle-bin/{name}/purge",
    summary = "Delete a binned user for good (`users purge`)",
    params(("name" = String, Path, description = "Its username, or its directory id when several binned users share the username")),
    responses(
        (status = 200, description = "The entry purged", body = BinEntry),
        (status = 404, description = "No such user in the recycle bin", body = Error),
        (status = 401, description = "Not signed in: no or unknown bearer token", body = Error),
    ),
)]
async fn bin_purge(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Path(name): Path<String>,
) -> Response {
    bin_outcome(app.store.bin_purge(&name, &admin.username).await)
}

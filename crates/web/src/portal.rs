//! The management portal: server-rendered pages and plain form posts (no
//! script). Every POST carries the session's CSRF token in a hidden field.

use std::convert::Infallible;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use serde::Deserialize;

use crate::api::UserQuery;
use crate::auth::{self, csrf_refusal, Admin};
use crate::html::{csrf_field, esc, notice, page, url_component};
use crate::limits::{client_key, retry_after_secs, RequestGate};
use crate::App;
use mfasync_core::lockout::{Account, Refusal};
use mfasync_core::report::directory::TestReport;
use mfasync_core::report::SyncNow;

/// Users shown on one Users page at most.
const USERS_SHOWN: usize = 500;

pub(crate) fn routes() -> Router<App> {
    Router::new()
        .route("/", get(overview))
        .route("/settings", get(settings).post(settings_apply))
        .route("/settings/test", post(settings_test))
        .route("/settings/directory", post(crate::tabs::directory_save))
        .route(
            "/settings/smtp",
            get(crate::smtp::smtp_get).post(crate::smtp::smtp_save),
        )
        .route(
            "/settings/directory/test",
            post(crate::tabs::directory_test_unsaved),
        )
        .route(
            "/filters",
            get(crate::tabs::filters_get).post(crate::tabs::filters_save),
        )
        .route("/filters/defaults", post(crate::tabs::filters_defaults))
        .route(
            "/attributes",
            get(crate::tabs::attributes_get).post(crate::tabs::attributes_save),
        )
        .route(
            "/attributes/defaults",
            post(crate::tabs::attributes_defaults),
        )
        .route("/settings/versions", get(versions))
        .route("/settings/versions/{version}", get(version_diff))
        .route("/users", get(users))
        .route("/users/{username}", get(user_detail))
        .route("/approvals", get(approvals))
        .route("/approvals/{id}/{decision}", post(decide))
        .route("/history", get(history))
        .route("/sync", get(crate::syncpage::sync_get).post(sync_now))
        .route("/sync/progress/{id}", get(crate::progress::progress_page))
        .route("/sync/status/{id}", get(crate::progress::status))
        .route("/sync/settings", post(crate::syncpage::settings_save))
        .route("/sync/browse", get(crate::syncpage::browse))
        .route("/sync/items", post(crate::syncpage::item_add))
        .route("/sync/items/{index}/edit", get(crate::syncpage::item_edit))
        .route("/sync/items/{index}/save", post(crate::syncpage::item_save))
        .route(
            "/sync/items/{index}/{action}",
            post(crate::syncpage::item_action),
        )
        .route("/tokens", get(tokens).post(token_create))
        .route("/tokens/revoke", post(token_revoke))
        .route("/logout", post(logout))
}

/// The signed-in administrator, if any (login page).
pub(crate) struct MaybeAdmin(Option<Admin>);

impl<S: Send + Sync> FromRequestParts<S> for MaybeAdmin {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(MaybeAdmin(parts.extensions.get::<Admin>().cloned()))
    }
}

pub(crate) fn db_error(admin: Option<&Admin>, e: impl std::fmt::Display) -> Response {
    tracing::error!("store: {e}");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        page(
            "Error",
            admin,
            "",
            &notice(
                "error",
                "The database could not be read; see the service log.",
            ),
        ),
    )
        .into_response()
}

// ------------------------------------------------------------------ sign-in

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct LoginForm {
    username: String,
    password: String,
    login_csrf: String,
}

fn login_form(app: &App, status: StatusCode, message: Option<&str>) -> Response {
    let token = auth::random_token();
    let body = format!(
        r#"{msg}<form method="post" action="/login" class="login">
<input type="hidden" name="login_csrf" value="{token}">
<label>Username <input name="username" autocomplete="username" required autofocus></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<button type="submit">Sign in</button>
</form>"#,
        msg = message.map(|m| notice("error", m)).unwrap_or_default(),
    );
    (
        status,
        [(
            header::SET_COOKIE,
            auth::set_cookie(app, auth::LOGIN_COOKIE, &token, Some(600)),
        )],
        page("Sign in", None, "", &body),
    )
        .into_response()
}

pub(crate) async fn login_page(State(app): State<App>, admin: MaybeAdmin) -> Response {
    match admin.0 {
        Some(a) if !a.bearer => Redirect::to("/").into_response(),
        _ => login_form(&app, StatusCode::OK, None),
    }
}

/// 429: the sign-in form, told when to try again.
fn too_many_sign_ins(app: &App, refusal: Refusal) -> Response {
    let secs = retry_after_secs(refusal.wait());
    let when = if secs < 120 {
        format!("{secs} seconds")
    } else {
        format!("{} minutes", secs.div_ceil(60))
    };
    let mut resp = login_form(
        app,
        StatusCode::TOO_MANY_REQUESTS,
        Some(&format!(
            "Too many failed sign-ins for this username from this address; try again in {when}."
        )),
    );
    if let Ok(v) = header::HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

pub(crate) async fn login(
    State(app): State<App>,
    peer: Option<Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return login_form(
            &app,
            StatusCode::BAD_REQUEST,
            Some("Malformed sign-in form."),
        );
    };
    let cookie = auth::cookie(&headers, auth::LOGIN_COOKIE).unwrap_or("");
    if !auth::same_secret(cookie, &form.login_csrf) {
        return (
            StatusCode::FORBIDDEN,
            "forbidden: sign-in form expired or posted from elsewhere; reload /login\n",
        )
            .into_response();
    }
    let client = client_key(
        peer.map(|Extension(c)| c.0),
        &headers,
        &app.opts.trusted_proxies,
    );
    let client = client.as_deref();
    let name = form.username.chars().take(64).collect::<String>();
    // The typed name (a local administrator's key) first; a directory
    // account is then checked under the entry it names, through the gate.
    let typed = Account::typed(&form.username);
    if let Err(refusal) = app.login_limits.check(client, &typed) {
        tracing::warn!(
            client = client.unwrap_or("-"),
            "portal sign-in for {name:?} refused: too many failures"
        );
        return too_many_sign_ins(&app, refusal);
    }
    let gate = RequestGate::new(&app.login_limits, client);
    let way = if form.username.is_empty() {
        None
    } else {
        auth::check_sign_in(&app, &form.username, &form.password, &gate).await
    };
    if let (None, Some(refusal)) = (way, gate.refusal()) {
        tracing::warn!(
            client = client.unwrap_or("-"),
            "portal sign-in for {name:?} refused: too many failures for its directory account"
        );
        return too_many_sign_ins(&app, refusal);
    }
    let resolved = gate.account();
    let accounts: Vec<&Account> = std::iter::once(&typed).chain(resolved.as_ref()).collect();
    let Some(way) = way else {
        app.login_limits.failed(client, &accounts);
        tracing::warn!(
            client = client.unwrap_or("-"),
            "portal sign-in refused for {name:?}"
        );
        return login_form(
            &app,
            StatusCode::UNAUTHORIZED,
            Some("Wrong username or password."),
        );
    };
    app.login_limits.succeeded(client, &accounts);
    match auth::start_session(&app, &form.username).await {
        Ok((token, _csrf)) => {
            tracing::info!(
                "administrator {} signed in to the portal ({way} account)",
                form.username
            );
            let max_age = app.opts.session_ttl.as_secs();
            let mut resp = Redirect::to("/").into_response();
            let h = resp.headers_mut();
            for c in [
                auth::set_cookie(&app, auth::SESSION_COOKIE, &token, Some(max_age)),
                auth::set_cookie(&app, auth::LOGIN_COOKIE, "", Some(0)),
            ] {
                if let Ok(v) = header::HeaderValue::from_str(&c) {
                    h.append(header::SET_COOKIE, v);
                }
            }
            resp
        }
        Err(e) => db_error(None, e),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(r) = csrf_refusal(&admin, &form.csrf) {
        return r;
    }
    if let Err(e) = app.store.token_delete(&admin.token_hash).await {
        return db_error(Some(&admin), e);
    }
    tracing::info!("administrator {} signed out", admin.username);
    (
        [(
            header::SET_COOKIE,
            auth::set_cookie(&app, auth::SESSION_COOKIE, "", Some(0)),
        )],
        Redirect::to("/login"),
    )
        .into_response()
}

// ------------------------------------------------------------------ overview

async fn overview(State(app): State<App>, Extension(admin): Extension<Admin>) -> Response {
    let config = match app.store.active_config().await {
        Ok(c) => c,
        Err(e) => return db_error(Some(&admin), e),
    };
    let pending = match app
        .store
        .approvals(Some(mfasync_store::ApprovalStatus::Pending))
        .await
    {
        Ok(p) => p.len(),
        Err(e) => return db_error(Some(&admin), e),
    };
    let last = match app.store.runs(1).await {
        Ok(r) => r.into_iter().next(),
        Err(e) => return db_error(Some(&admin), e),
    };
    let state = match &config {
        None => crate::SyncState::NoConfiguration.describe(),
        Some(c) => mfasync_core::config::parse(&c.toml)
            .map(|cfg| crate::SyncState::of(Some(&cfg)).describe())
            .unwrap_or("the stored configuration no longer validates"),
    };
    let config = match config {
        Some(c) => format!("version {} (applied {})", c.version, esc(&c.created_at)),
        None => "none applied yet".to_string(),
    };
    let last = match last {
        Some(r) => format!(
            "{} cycle started {}{}",
            esc(&r.mode),
            esc(&r.started_at),
            match &r.error {
                Some(e) => format!(r#": <span class="bad">failed: {}</span>"#, esc(e)),
                None => String::new(),
            }
        ),
        None => "no cycle has run yet".to_string(),
    };
    let body = format!(
        r#"<table>
<tr><th>Configuration</th><td><a href="/settings">{config}</a></td></tr>
<tr><th>Synchronization</th><td><a href="/sync" id="sync-state">{state}</a></td></tr>
<tr><th>Last synchronization</th><td><a href="/history">{last}</a></td></tr>
<tr><th>Pending approvals</th><td><a href="/approvals">{pending}</a></td></tr>
</table>"#
    );
    page("Overview", Some(&admin), "/", &body).into_response()
}

// ------------------------------------------------------------------ settings

/// The Settings page. `typed`: the directory form as posted (after a refused save).
pub(crate) async fn settings_page(
    app: &App,
    admin: &Admin,
    status: StatusCode,
    extra: &str,
    typed: Option<&crate::tabs::DirectoryForm>,
) -> Response {
    let stored = match app.store.active_config().await {
        Ok(c) => c,
        Err(e) => return db_error(Some(admin), e),
    };
    let csrf = csrf_field(admin);
    let parsed = stored
        .as_ref()
        .map(|v| (v.version, mfasync_core::config::parse(&v.toml)));
    // what `config apply` warns about, for the active configuration
    let config_warnings: String = match &parsed {
        Some((_, Ok(cfg))) => mfasync_core::config::warnings(cfg)
            .iter()
            .map(|w| notice("warning", &format!("Warning: {w}")))
            .collect(),
        _ => String::new(),
    };
    let directory = match parsed {
        None => {
            let cfg = mfasync_core::Config::default();
            match typed {
                Some(f) => crate::tabs::directory_form_html(admin, 0, f, false),
                None => crate::tabs::directory_form_current(admin, 0, &cfg),
            }
        }
        Some((version, Ok(cfg))) => match typed {
            Some(f) => crate::tabs::directory_form_html(
                admin,
                version,
                f,
                cfg.directory.query_bind.has_password(),
            ),
            None => crate::tabs::directory_form_current(admin, version, &cfg),
        },
        Some((_, Err(_))) => notice(
            "error",
            "The stored configuration no longer validates: fix it with the text below.",
        ),
    };
    let (summary, text, warning) = match &stored {
        Some(v) => {
            let view = crate::ConfigView::from_stored(v);
            let mut rows = format!(
                "<tr><th>Version</th><td>{}</td></tr><tr><th>Applied</th><td>{}</td></tr>",
                view.version,
                esc(&view.created_at)
            );
            for (key, set) in &view.secrets {
                rows.push_str(&format!(
                    "<tr><th>{}</th><td>{}</td></tr>",
                    esc(key),
                    if *set { "set" } else { "not set" }
                ));
            }
            let warning = if crate::ConfigView::has_inline_password(v) {
                notice(
                    "error",
                    "This configuration has passwords stored in it (inline or sealed), which are \
                     never shown. Saving the text below as it is removes them: type them again in \
                     the directory form above, or use password_file / password_env.",
                )
            } else {
                String::new()
            };
            (format!("<table>{rows}</table>"), view.toml, warning)
        }
        None => (
            notice("error", "No configuration has been applied yet."),
            String::new(),
            String::new(),
        ),
    };
    let body = format!(
        r#"{extra}{summary}{config_warnings}
<p><a href="/settings/versions">All configuration versions</a></p>
<h2>Directory connection</h2>
{directory}
<p>Test connects, starts TLS, binds and reads the RootDSE with the saved settings, showing each step.</p>
<form method="post" action="/settings/test">{csrf}<button type="submit" id="test">Test</button></form>
<h2>Email (SMTP)</h2>
<p><a href="/settings/smtp" id="smtp-link">SMTP settings</a>: the mail server for approval notifications (<code>[smtp]</code>).</p>
<h2>Active configuration</h2>
<pre id="active-config">{active}</pre>
<h2>Apply a whole configuration (TOML)</h2>
{warning}<form method="post" action="/settings">{csrf}
<textarea name="toml" rows="24" spellcheck="false">{active}</textarea>
<p><button type="submit">Validate and apply</button></p></form>"#,
        active = esc(&text),
    );
    (status, page("Settings", Some(admin), "/settings", &body)).into_response()
}

async fn settings(State(app): State<App>, Extension(admin): Extension<Admin>) -> Response {
    settings_page(&app, &admin, StatusCode::OK, "", None).await
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ConfigForm {
    csrf: String,
    toml: String,
}

async fn settings_apply(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Form(form): Form<ConfigForm>,
) -> Response {
    if let Some(r) = csrf_refusal(&admin, &form.csrf) {
        return r;
    }
    // Browsers post textareas with CRLF line ends.
    let text = form.toml.replace("\r\n", "\n");
    // Passwords typed here are stored only sealed.
    let sealed = crate::secret::seal_typed_config(&text, app.opts.secret_key.as_ref());
    let result = match sealed {
        Ok(text) => app.backend.config_put(&text, &admin.username).await,
        Err(errors) => Err(errors),
    };
    match result {
        Ok(version) => {
            tracing::info!(
                "configuration version {version} applied by {}",
                admin.username
            );
            let msg = notice("ok", &format!("Configuration version {version} applied."));
            settings_page(&app, &admin, StatusCode::OK, &msg, None).await
        }
        Err(errors) => {
            let items: String = errors
                .iter()
                .map(|e| format!("<li>{}</li>", esc(e)))
                .collect();
            let msg = format!(
                r#"<div class="notice error">Not applied: the configuration has {} problem(s):<ul id="config-errors">{items}</ul></div>"#,
                errors.len()
            );
            settings_page(&app, &admin, StatusCode::UNPROCESSABLE_ENTITY, &msg, None).await
        }
    }
}

fn yes_no(v: bool) -> &'static str {
    if v {
        r#"<span class="good">yes</span>"#
    } else {
        r#"<span class="bad">no</span>"#
    }
}

/// The `directory test` report as HTML: each step, then what is supported.
pub(crate) fn test_html(r: &TestReport) -> String {
    let warnings: String = r
        .warnings
        .iter()
        .map(|w| notice("warning", &format!("Warning: {w}")))
        .collect();
    let (class, verdict) = if r.ok {
        ("ok", "passed")
    } else {
        ("error", "failed")
    };
    let mut out = format!(
        r#"<div class="notice {class}" id="test-result">Test {verdict}: server {} ({})</div>{warnings}<table><tr><th>Step</th><th>OK</th><th>Detail</th></tr>"#,
        esc(&r.server),
        esc(r.vendor.as_str()),
    );
    for step in &r.steps {
        out.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&step.step),
            yes_no(step.ok),
            esc(&step.detail)
        ));
    }
    out.push_str("</table>");
    out.push_str("<table><tr><th>Supports</th><th></th></tr>");
    for (name, supported) in r.supports.named() {
        out.push_str(&format!(
            "<tr><td>{}</td><td>{}</td></tr>",
            esc(name),
            yes_no(supported)
        ));
    }
    out.push_str("</table>");
    out
}

async fn settings_test(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(r) = csrf_refusal(&admin, &form.csrf) {
        return r;
    }
    let result = app.backend.directory_test().await;
    settings_page(&app, &admin, StatusCode::OK, &test_html(&result), None).await
}

// ------------------------------------------------------------------ users

async fn users(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    query: Query<UserQuery>,
) -> Response {
    let all = match app.store.users().await {
        Ok(u) => u,
        Err(e) => return db_error(Some(&admin), e),
    };
    let total = all.len();
    let found: Vec<_> = all.iter().filter(|u| query.matches(u)).collect();
    let groups = user_group_options(&all, &query.user_group);
    let mut rows = String::new();
    for u in found.iter().take(USERS_SHOWN) {
        let name = [u.first_name.as_deref(), u.last_name.as_deref()]
            .iter()
            .flatten()
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        rows.push_str(&format!(
            r#"<tr><td><a href="/users/{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            url_component(&u.username),
            esc(&u.username),
            esc(&name),
            esc(u.email.as_deref().unwrap_or("")),
            esc(u.primary_phone.as_deref().unwrap_or("")),
            esc(u.method.as_deref().unwrap_or("")),
            esc(u.user_group.as_deref().unwrap_or("")),
            esc(u.description.as_deref().unwrap_or("")),
            if u.enabled { "enabled" } else { r#"<span class="bad">disabled</span>"# },
            esc(u.source.as_str()),
            esc(u.sync_item.as_deref().unwrap_or("")),
        ));
    }
    let shown = if found.len() > USERS_SHOWN {
        format!(
            "{} of {total} users match; the first {USERS_SHOWN} are shown.",
            found.len()
        )
    } else {
        format!("{} of {total} users match.", found.len())
    };
    let body = format!(
        r#"<form method="get" action="/users"><input name="q" value="{q}" placeholder="name, email, description, DN" aria-label="Search"> <label>User group <select name="user_group" id="user-group">{groups}</select></label> <button type="submit">Search</button></form>
<p id="user-count">{shown}</p>
<table id="users"><tr><th>Username</th><th>Name</th><th>Email</th><th>Primary phone</th><th>Method</th><th>User group</th><th>Description</th><th>State</th><th>Source</th><th>Sync item</th></tr>
{rows}</table>"#,
        q = esc(&query.q),
    );
    page("Users", Some(&admin), "/users", &body).into_response()
}

/// The user-group filter's options: "All" and every user group the stored
/// users have (sorted, once each regardless of case), `chosen` selected.
fn user_group_options(users: &[mfasync_core::MfaUser], chosen: &str) -> String {
    let mut groups: Vec<&str> = users
        .iter()
        .filter_map(|u| u.user_group.as_deref().map(str::trim))
        .filter(|g| !g.is_empty())
        .collect();
    groups.sort_by_key(|g| g.to_lowercase());
    groups.dedup_by(|a, b| a.to_lowercase() == b.to_lowercase());
    let chosen = chosen.trim();
    let mut out = format!(
        r#"<option value=""{}>All</option>"#,
        if chosen.is_empty() { " selected" } else { "" }
    );
    let mut seen = chosen.is_empty();
    for g in groups {
        let selected = g.to_lowercase() == chosen.to_lowercase();
        seen |= selected;
        out.push_str(&format!(
            r#"<option value="{v}"{s}>{v}</option>"#,
            v = esc(g),
            s = if selected { " selected" } else { "" }
        ));
    }
    if !seen {
        // A group no stored user has (a bookmarked link): kept, matches nobody.
        out.push_str(&format!(
            r#"<option value="{v}" selected>{v}</option>"#,
            v = esc(chosen)
        ));
    }
    out
}

async fn user_detail(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Path(username): Path<String>,
) -> Response {
    let found = match app
        .store
        .users_by(
            mfasync_store::UserKey::UsernameLower,
            &[username.to_lowercase()],
        )
        .await
    {
        Ok(f) => f,
        Err(e) => return db_error(Some(&admin), e),
    };
    let Some(u) = found.into_iter().next() else {
        let body = notice("error", "No such MFA user.");
        return (
            StatusCode::NOT_FOUND,
            page("User", Some(&admin), "/users", &body),
        )
            .into_response();
    };
    let mut rows = format!(
        "<tr><th>username</th><td>{}</td></tr><tr><th>enabled</th><td>{}</td></tr><tr><th>source</th><td>{}</td></tr>",
        esc(&u.username),
        u.enabled,
        esc(u.source.as_str())
    );
    for (name, value) in u.text_fields() {
        rows.push_str(&format!(
            "<tr><th>{name}</th><td>{}</td></tr>",
            value.as_deref().map(esc).unwrap_or_default()
        ));
    }
    // The user's audit rows (sync changes, manual inserts), newest first, by
    // username or directory id (indexed: the whole trail is searched).
    let audit = match app
        .store
        .user_audit(
            &u.username,
            u.directory_id.as_deref(),
            crate::charts::USER_HISTORY_ROWS,
        )
        .await
    {
        Ok(a) => a,
        Err(e) => return db_error(Some(&admin), e),
    };
    let mine: Vec<_> = audit.iter().collect();
    let body = format!(
        r#"<p><a href="/users">All users</a></p><table id="user">{rows}</table>
<h2>Sync history</h2>{}"#,
        crate::charts::user_history_html(&mine)
    );
    page(
        &format!("User {}", u.username),
        Some(&admin),
        "/users",
        &body,
    )
    .into_response()
}

// ------------------------------------------------------------------ approvals

async fn approvals_page(app: &App, admin: &Admin, status: StatusCode, extra: &str) -> Response {
    let pending = match app
        .store
        .approvals(Some(mfasync_store::ApprovalStatus::Pending))
        .await
    {
        Ok(p) => p,
        Err(e) => return db_error(Some(admin), e),
    };
    let csrf = csrf_field(admin);
    let mut body = String::from(extra);
    if pending.is_empty() {
        body.push_str(r#"<p id="no-approvals">No approvals are pending.</p>"#);
    }
    for a in &pending {
        let mut rows = String::new();
        for c in &a.changes {
            rows.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&c.action),
                esc(&c.username),
                esc(c.reason.as_deref().unwrap_or(""))
            ));
        }
        let id = url_component(&a.id);
        body.push_str(&format!(
            r#"<section class="approval"><h2>Approval {}</h2><p>Requested {}: {} change(s) held.</p>
<table><tr><th>Action</th><th>User</th><th>Why</th></tr>{rows}</table>
<form method="post" action="/approvals/{id}/approve" class="inline">{csrf}<button type="submit">Approve</button></form>
<form method="post" action="/approvals/{id}/reject" class="inline">{csrf}<button type="submit">Reject</button></form>
</section>"#,
            esc(&a.id),
            esc(&a.created_at),
            a.changes.len(),
        ));
    }
    (status, page("Approvals", Some(admin), "/approvals", &body)).into_response()
}

async fn approvals(State(app): State<App>, Extension(admin): Extension<Admin>) -> Response {
    approvals_page(&app, &admin, StatusCode::OK, "").await
}

async fn decide(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Path((id, decision)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(r) = csrf_refusal(&admin, &form.csrf) {
        return r;
    }
    let result = match decision.as_str() {
        "approve" => app.backend.approve(&id, &admin.username).await.map(drop),
        "reject" => app.backend.reject(&id, &admin.username).await.map(drop),
        _ => return (StatusCode::NOT_FOUND, "no such decision\n").into_response(),
    };
    match result {
        Ok(_) => {
            tracing::info!("approval {id}: {decision} by {}", admin.username);
            let verb = if decision == "approve" {
                "approved"
            } else {
                "rejected"
            };
            let msg = notice("ok", &format!("Approval {id} {verb}."));
            approvals_page(&app, &admin, StatusCode::OK, &msg).await
        }
        Err(e) => {
            let msg = notice("error", &format!("Approval {id} not decided: {e}"));
            approvals_page(&app, &admin, StatusCode::CONFLICT, &msg).await
        }
    }
}

// ------------------------------------------------------------------ history

async fn history_page(app: &App, admin: &Admin, status: StatusCode, extra: &str) -> Response {
    let runs = match app.store.runs(100).await {
        Ok(r) => r,
        Err(e) => return db_error(Some(admin), e),
    };
    let mut rows = String::new();
    for r in &runs {
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"note\">{}</td></tr>",
            r.id,
            esc(&r.started_at),
            esc(r.finished_at.as_deref().unwrap_or("running")),
            esc(&r.mode),
            r.created,
            r.updated,
            r.enabled,
            r.disabled,
            r.removed,
            match &r.error {
                Some(e) => format!(r#"<span class="bad">{}</span>"#, esc(e)),
                None => String::new(),
            },
            esc(r.note.as_deref().unwrap_or("")),
        ));
    }
    let chart = crate::charts::changes_svg(&runs);
    let body = format!(
        r#"{extra}<form method="post" action="/sync">{csrf}<label><input type="checkbox" name="full" value="true" checked> full</label> <button type="submit" id="sync-now">Synchronize Now</button></form>
<h2>Changes over time</h2>
{chart}
<h2>Runs</h2>
<table id="runs"><tr><th>#</th><th>Started</th><th>Finished</th><th>Mode</th><th>Created</th><th>Updated</th><th>Enabled</th><th>Disabled</th><th>Removed</th><th>Error</th><th>Note</th></tr>
{rows}</table>"#,
        csrf = csrf_field(admin),
    );
    (status, page("Sync history", Some(admin), "/history", &body)).into_response()
}

async fn history(State(app): State<App>, Extension(admin): Extension<Admin>) -> Response {
    history_page(&app, &admin, StatusCode::OK, "").await
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SyncForm {
    csrf: String,
    full: Option<String>,
    /// "sync": answer with the Synchronization page instead of the history.
    from: String,
}

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

async fn sync_now(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Form(form): Form<SyncForm>,
) -> Response {
    if let Some(r) = csrf_refusal(&admin, &form.csrf) {
        return r;
    }
    let full = form.full.as_deref() == Some("true");
    tracing::info!(
        "synchronization requested by {} (full: {full})",
        admin.username
    );
    let id = crate::progress::start(&app, &admin, full, form.from == "sync");
    crate::progress::redirect(id)
}

// ------------------------------------------------------------------ API tokens

async fn tokens_page(app: &App, admin: &Admin, status: StatusCode, extra: &str) -> Response {
    let list = match app.store.tokens("api").await {
        Ok(l) => l,
        Err(e) => return db_error(Some(admin), e),
    };
    let csrf = csrf_field(admin);
    let mut rows = String::new();
    for t in &list {
        rows.push_str(&format!(
            r#"<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td><form method="post" action="/tokens/revoke" class="inline">{csrf}<input type="hidden" name="hash" value="{}"><button type="submit">Revoke</button></form></td></tr>"#,
            esc(t.label.as_deref().unwrap_or("")),
            esc(&t.username),
            esc(&t.created_at),
            esc(t.expires_at.as_deref().unwrap_or("never")),
            esc(t.token_hash.get(..12).unwrap_or("")),
            esc(&t.token_hash),
        ));
    }
    let body = format!(
        r#"{extra}<p>API tokens authenticate REST calls: <code>Authorization: Bearer TOKEN</code>. A token is shown once, when it is created; only its hash is stored. An expired token is refused (401).</p>
<form method="post" action="/tokens">{csrf}<input name="label" placeholder="what it is for" required> <input name="expires" placeholder="expires: 90d, 2026-12-31 (blank: never)"> <button type="submit">Create token</button></form>
<table id="tokens"><tr><th>Label</th><th>Created by</th><th>Created</th><th>Expires</th><th>Id</th><th></th></tr>{rows}</table>"#
    );
    (status, page("API tokens", Some(admin), "/tokens", &body)).into_response()
}

async fn tokens(State(app): State<App>, Extension(admin): Extension<Admin>) -> Response {
    tokens_page(&app, &admin, StatusCode::OK, "").await
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TokenForm {
    csrf: String,
    label: String,
    hash: String,
    /// Blank, a duration, a date or a time (`expiry::parse`).
    expires: String,
}

async fn token_create(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Form(form): Form<TokenForm>,
) -> Response {
    if let Some(r) = csrf_refusal(&admin, &form.csrf) {
        return r;
    }
    let now = time::OffsetDateTime::now_utc();
    let expires_at = match crate::expiry::parse(&form.expires, now) {
        Ok(at) => at.map(auth::rfc3339),
        Err(why) => {
            let msg = notice("error", &format!("Token not created: {why}."));
            return tokens_page(&app, &admin, StatusCode::BAD_REQUEST, &msg).await;
        }
    };
    let token = auth::random_token();
    let row = mfasync_store::AuthToken {
        token_hash: auth::token_hash(&token),
        kind: "api".into(),
        username: admin.username.clone(),
        label: Some(form.label.trim().chars().take(200).collect()),
        csrf: None,
        created_at: auth::rfc3339(now),
        expires_at,
    };
    if let Err(e) = app.store.token_create(&row).await {
        return db_error(Some(&admin), e);
    }
    tracing::info!("API token created by {}", admin.username);
    let msg = format!(
        r#"<div class="notice ok">New API token (copy it now, it is not shown again): <code id="new-token">{}</code></div>"#,
        esc(&token)
    );
    tokens_page(&app, &admin, StatusCode::OK, &msg).await
}

async fn token_revoke(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Form(form): Form<TokenForm>,
) -> Response {
    if let Some(r) = csrf_refusal(&admin, &form.csrf) {
        return r;
    }
    // Only API tokens are revoked here, never somebody's session.
    match app.store.token_get(&form.hash).await {
        Ok(Some(t)) if t.kind == "api" => {}
        Ok(_) => {
            let msg = notice("error", "No such API token.");
            return tokens_page(&app, &admin, StatusCode::NOT_FOUND, &msg).await;
        }
        Err(e) => return db_error(Some(&admin), e),
    }
    let deleted = app.store.token_delete(&form.hash).await;
    // after the delete: a request in between cannot put it back
    app.tokens.forget(&form.hash);
    match deleted {
        Ok(_) => {
            tracing::info!("API token revoked by {}", admin.username);
            tokens_page(
                &app,
                &admin,
                StatusCode::OK,
                &notice("ok", "Token revoked."),
            )
            .await
        }
        Err(e) => db_error(Some(&admin), e),
    }
}

// ------------------------------------------------------------------ config versions

async fn versions(State(app): State<App>, Extension(admin): Extension<Admin>) -> Response {
    let list = match app.store.config_versions().await {
        Ok(l) => l,
        Err(e) => return db_error(Some(&admin), e),
    };
    let mut rows = String::new();
    for v in &list {
        rows.push_str(&format!(
            r#"<tr><td><a href="/settings/versions/{n}">{n}</a></td><td>{}</td></tr>"#,
            esc(&v.created_at),
            n = v.version,
        ));
    }
    let body = format!(
        r#"<p>Every applied configuration is kept; each version shows what changed from the one before (secrets left out).</p>
<table id="versions"><tr><th>Version</th><th>Applied</th></tr>{rows}</table>"#
    );
    page("Configuration versions", Some(&admin), "/settings", &body).into_response()
}

async fn version_diff(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Path(version): Path<String>,
) -> Response {
    let list = match app.store.config_versions().await {
        Ok(l) => l,
        Err(e) => return db_error(Some(&admin), e),
    };
    let Some(idx) = version
        .parse::<i64>()
        .ok()
        .and_then(|n| list.iter().position(|v| v.version == n))
    else {
        let body = notice("error", "No such configuration version.");
        return (
            StatusCode::NOT_FOUND,
            page("Configuration version", Some(&admin), "/settings", &body),
        )
            .into_response();
    };
    let this = crate::ConfigView::from_stored(&list[idx]);
    // Newest first: the one before is the next in the list.
    let before = list.get(idx + 1).map(crate::ConfigView::from_stored);
    let (title, old) = match &before {
        Some(b) => (
            format!("Changes from version {}", b.version),
            b.toml.as_str(),
        ),
        None => ("The first version".to_string(), ""),
    };
    let mut lines = String::new();
    for (mark, line) in line_diff(old, &this.toml) {
        let class = match mark {
            '+' => "add",
            '-' => "del",
            _ => "same",
        };
        lines.push_str(&format!(
            r#"<span class="{class}">{mark} {}</span>
"#,
            esc(line)
        ));
    }
    let body = format!(
        r#"<p>Applied {}. <a href="/settings/versions">All versions</a></p><h2>{}</h2><pre class="diff" id="diff">{lines}</pre>"#,
        esc(&this.created_at),
        esc(&title)
    );
    page(
        &format!("Configuration version {}", this.version),
        Some(&admin),
        "/settings",
        &body,
    )
    .into_response()
}

/// A line diff (longest common subsequence): (' ' | '-' | '+', line).
pub(crate) fn line_diff<'a>(old: &'a str, new: &'a str) -> Vec<(char, &'a str)> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // lcs[i][j]: common lines of a[i..] and b[j..]
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() && j < b.len() {
        if a[i] == b[j] {
            out.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if lcs[i + 1][j] >= lcs[i][j + 1] {
            out.push(('-', a[i]));
            i += 1;
        } else {
            out.push(('+', b[j]));
            j += 1;
        }
    }
    out.extend(a[i..].iter().map(|l| ('-', *l)));
    out.extend(b[j..].iter().map(|l| ('+', *l)));
    out
}

#[cfg(test)]
mod tests {
    use super::line_diff;

    #[test]
    fn diff_lines() {
        let d = line_diff("a\nb\nc\n", "a\nc\nd\n");
        assert_eq!(d, vec![(' ', "a"), ('-', "b"), (' ', "c"), ('+', "d")]);
        assert_eq!(line_diff("", "x"), vec![('+', "x")]);
        assert_eq!(line_diff("x", ""), vec![('-', "x")]);
    }

    #[test]
    fn test_results_show_their_warnings_escaped() {
        let v: super::TestReport = serde_json::from_value(serde_json::json!({"ok": true,
            "server": "ldaps://10.0.0.5", "vendor": "active-directory", "steps": [], "tried": [],
            "supports": {}, "warnings": ["directory.servers[0]: <b>names</b> an IP"]}))
        .unwrap();
        let html = super::test_html(&v);
        assert!(
            html.contains(r#"</div><p class="notice warning">Warning: directory.servers[0]: &lt;b&gt;names&lt;/b&gt; an IP</p><table>"#),
            "{html}"
        );
        let mut none = v.clone();
        none.warnings.clear();
        assert!(!super::test_html(&none).contains("warning"));
    }
}

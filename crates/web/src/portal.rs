//! The management portal: server-rendered pages and plain form posts (no
//! script). Every POST carries the session's CSRF token in a hidden field.

use std::convert::Infallible;

use askama::Template;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use serde::Deserialize;

use crate::auth::{self, csrf_refusal, Admin};
use crate::kit::{db_error, render, render_with, Chrome, Flash, When};
use crate::limits::{client_key, retry_after_secs, RequestGate};
use crate::App;
use mfasync_core::lockout::{Account, Refusal};

pub(crate) fn routes() -> Router<App> {
    Router::new()
        .route("/", get(overview))
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

// ------------------------------------------------------------------ sign-in

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct LoginForm {
    username: String,
    password: String,
    login_csrf: String,
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    chrome: Chrome,
    flash: Vec<Flash>,
    token: String,
}

fn login_form(app: &App, status: StatusCode, message: Option<&str>) -> Response {
    let token = auth::random_token();
    let mut resp = render_with(
        status,
        &LoginPage {
            chrome: Chrome::new("Sign in", None, ""),
            flash: message.map(Flash::error).into_iter().collect(),
            token: token.clone(),
        },
    );
    if let Ok(v) = header::HeaderValue::from_str(&auth::set_cookie(
        app,
        auth::LOGIN_COOKIE,
        &token,
        Some(600),
    )) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
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

/// The last synchronization as the overview shows it.
struct LastRun {
    mode: String,
    started: When,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    chrome: Chrome,
    config: Option<(i64, When)>,
    state: &'static str,
    last: Option<LastRun>,
    pending: usize,
}

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
    render(&OverviewPage {
        chrome: Chrome::new("Overview", Some(&admin), "/"),
        config: config.map(|c| (c.version, When::of(&c.created_at))),
        state,
        last: last.map(|r| LastRun {
            mode: r.mode,
            started: When::of(&r.started_at),
            error: r.error,
        }),
        pending,
    })
}

//! The API tokens page (`/tokens`): create a token (shown once; only its
//! hash is stored), with an optional expiry, and revoke one.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use serde::Deserialize;

use crate::auth::{self, csrf_refusal, Admin};
use crate::kit::{db_error, render_with, Chrome, Flash, When};
use crate::App;

pub(crate) fn routes() -> Router<App> {
    Router::new()
        .route("/tokens", get(tokens).post(token_create))
        .route("/tokens/revoke", post(token_revoke))
}

/// One token as listed.
struct TokenRow {
    label: String,
    by: String,
    created: When,
    expires: Option<When>,
    hash: String,
}

impl TokenRow {
    /// The start of the hash: enough to tell tokens apart.
    fn short_id(&self) -> &str {
        self.hash.get(..12).unwrap_or("")
    }
}

#[derive(Template)]
#[template(path = "tokens.html")]
struct TokensPage {
    chrome: Chrome,
    flash: Vec<Flash>,
    tokens: Vec<TokenRow>,
}

async fn tokens_page(app: &App, admin: &Admin, status: StatusCode, flash: Vec<Flash>) -> Response {
    let list = match app.store.tokens(mfasync_store::TokenKind::Api).await {
        Ok(l) => l,
        Err(e) => return db_error(Some(admin), e),
    };
    let tokens = list
        .iter()
        .map(|t| TokenRow {
            label: t.label.clone().unwrap_or_default(),
            by: t.username.clone(),
            created: When::of(&t.created_at),
            expires: t.expires_at.as_deref().map(When::of),
            hash: t.token_hash.clone(),
        })
        .collect();
    render_with(
        status,
        &TokensPage {
            chrome: Chrome::new("API tokens", Some(admin), "/tokens"),
            flash,
            tokens,
        },
    )
}

async fn tokens(State(app): State<App>, Extension(admin): Extension<Admin>) -> Response {
    tokens_page(&app, &admin, StatusCode::OK, Vec::new()).await
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
            let msg = Flash::error(format!("Token not created: {why}."));
            return tokens_page(&app, &admin, StatusCode::BAD_REQUEST, vec![msg]).await;
        }
    };
    let token = auth::random_token();
    let row = mfasync_store::AuthToken {
        token_hash: auth::token_hash(&token),
        kind: mfasync_store::TokenKind::Api,
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
    let msg = Flash {
        code: Some(token),
        ..Flash::ok("New API token (copy it now, it is not shown again):")
    };
    tokens_page(&app, &admin, StatusCode::OK, vec![msg]).await
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
        Ok(Some(t)) if t.kind == mfasync_store::TokenKind::Api => {}
        Ok(_) => {
            let msg = Flash::error("No such API token.");
            return tokens_page(&app, &admin, StatusCode::NOT_FOUND, vec![msg]).await;
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
                vec![Flash::ok("Token revoked.")],
            )
            .await
        }
        Err(e) => db_error(Some(&admin), e),
    }
}

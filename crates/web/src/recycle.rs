//! The Recycle bin page (`/recycle-bin`): the users a sync removed, kept for
//! `sync.retention`, each with Restore and Purge buttons (CSRF-checked
//! forms; the store audits both with the administrator as actor).

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use mfasync_store::{BinnedUser, StoreError};
use serde::Deserialize;

use crate::auth::{csrf_refusal, Admin};
use crate::kit::{db_error, render_with, Chrome, Flash, When};
use crate::App;

pub(crate) fn routes() -> Router<App> {
    Router::new()
        .route("/recycle-bin", get(page))
        .route("/recycle-bin/restore", post(restore))
        .route("/recycle-bin/purge", post(purge))
}

/// One binned user of the list.
struct BinRow {
    username: String,
    directory_id: String,
    /// What the forms name it by: the directory id, or the username when it has none.
    key: String,
    deleted: When,
    reason: String,
    sync_item: String,
    otp: bool,
}

#[derive(Template)]
#[template(path = "recycle.html")]
struct BinPage {
    chrome: Chrome,
    flash: Vec<Flash>,
    rows: Vec<BinRow>,
}

fn row(b: &BinnedUser) -> BinRow {
    let directory_id = b.user.directory_id.clone().unwrap_or_default();
    BinRow {
        key: if directory_id.is_empty() {
            b.user.username.clone()
        } else {
            directory_id.clone()
        },
        username: b.user.username.clone(),
        directory_id,
        deleted: When::of(&b.deleted_at),
        reason: b.reason.clone(),
        sync_item: b.user.sync_item.clone().unwrap_or_default(),
        otp: b.otp,
    }
}

/// The list with `flash` on top, answered with `status`.
async fn list(app: &App, admin: &Admin, status: StatusCode, flash: Vec<Flash>) -> Response {
    match app.store.binned().await {
        Ok(bin) => render_with(
            status,
            &BinPage {
                chrome: Chrome::new("Recycle bin", Some(admin), "/recycle-bin"),
                flash,
                rows: bin.iter().map(row).collect(),
            },
        ),
        Err(e) => db_error(Some(admin), e),
    }
}

async fn page(State(app): State<App>, Extension(admin): Extension<Admin>) -> Response {
    list(&app, &admin, StatusCode::OK, Vec::new()).await
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct EntryForm {
    csrf: String,
    /// The entry's directory id (or username).
    name: String,
}

/// What a restore or purge came to, as the list's notice.
fn outcome(
    done: Result<Option<BinnedUser>, StoreError>,
    what: &str,
) -> Result<(StatusCode, Flash), StoreError> {
    Ok(match done {
        Ok(Some(b)) => (
            StatusCode::OK,
            Flash::ok(format!("{} {what}.", b.user.username)),
        ),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            Flash::error("No such user in the recycle bin."),
        ),
        Err(StoreError::Conflict(why)) => (StatusCode::CONFLICT, Flash::error(why)),
        Err(e) => return Err(e),
    })
}

/// `POST /recycle-bin/restore`: the user back among the MFA users.
async fn restore(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Form(form): Form<EntryForm>,
) -> Response {
    decide(&app, &admin, &form, BinOp::Restore).await
}

/// `POST /recycle-bin/purge`: the user deleted for good.
async fn purge(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Form(form): Form<EntryForm>,
) -> Response {
    decide(&app, &admin, &form, BinOp::Purge).await
}

/// What a button of the page does to a binned user.
enum BinOp {
    Restore,
    Purge,
}

/// Restore or purge the entry `form` names, then the list again.
async fn decide(app: &App, admin: &Admin, form: &EntryForm, op: BinOp) -> Response {
    if let Some(r) = csrf_refusal(admin, &form.csrf) {
        return r;
    }
    let (done, what) = match op {
        BinOp::Restore => (
            app.store.bin_restore(&form.name, &admin.username).await,
            "restored",
        ),
        BinOp::Purge => (
            app.store.bin_purge(&form.name, &admin.username).await,
            "purged",
        ),
    };
    match outcome(done, what) {
        Ok((status, flash)) => list(app, admin, status, vec![flash]).await,
        Err(e) => db_error(Some(admin), e),
    }
}

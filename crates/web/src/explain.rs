//! A user's directory decision on the portal: the Explain page
//! (`/users/{username}/explain`, `users explain`) and Synchronize this user
//! now (`POST /users/{username}/sync`, `sync --user`), both through the
//! `Backend`.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use mfasync_core::report::explain::Explanation;
use serde::Deserialize;

use crate::auth::{csrf_refusal, Admin};
use crate::kit::{message, render, Chrome, Flash};
use crate::App;

pub(crate) fn routes() -> Router<App> {
    Router::new()
        .route("/users/{username}/explain", get(explain))
        .route("/users/{username}/sync", post(sync_user))
}

#[derive(Template)]
#[template(path = "explain.html")]
struct ExplainPage {
    chrome: Chrome,
    ex: Explanation,
    /// The deciding step in words.
    step: String,
    /// The username as a URL path segment.
    path: String,
}

async fn explain(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Path(username): Path<String>,
) -> Response {
    match app.backend.explain_user(&username).await {
        Ok(ex) => render(&ExplainPage {
            chrome: Chrome::new(format!("Explain {username}"), Some(&admin), "/users"),
            step: ex.decision.decided_by(),
            path: crate::kit::url_component(&username),
            ex,
        }),
        Err(why) => message(
            StatusCode::BAD_GATEWAY,
            "Explain",
            Some(&admin),
            "/users",
            vec![Flash::error(why)],
        ),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SyncForm {
    csrf: String,
}

/// `POST /users/{username}/sync`: that one user now.
async fn sync_user(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Path(username): Path<String>,
    Form(form): Form<SyncForm>,
) -> Response {
    if let Some(r) = csrf_refusal(&admin, &form.csrf) {
        return r;
    }
    let (status, flash) = match app.backend.sync_user(&username, &admin.username).await {
        Ok(s) => {
            let fields = match s.fields.is_empty() {
                true => String::new(),
                false => format!(" ({})", s.fields.join(", ")),
            };
            let done = if s.applied { "" } else { ", nothing written" };
            (
                StatusCode::OK,
                Flash::ok(format!("{}{fields}{done}: {}", s.action, s.reason)),
            )
        }
        Err(why) => (StatusCode::BAD_GATEWAY, Flash::error(why)),
    };
    message(
        status,
        "Synchronize one user",
        Some(&admin),
        "/users",
        vec![flash],
    )
}

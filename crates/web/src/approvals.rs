//! The Approvals page (`/approvals`): the changes a synchronization held
//! because more users than the threshold would be disabled or removed, each
//! approval with Approve and Reject (through the backend, as
//! `approvals approve|reject ID`).

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use serde::Deserialize;

use crate::auth::{csrf_refusal, Admin};
use crate::kit::{db_error, render_with, Chrome, Flash, When};
use crate::App;

pub(crate) fn routes() -> Router<App> {
    Router::new()
        .route("/approvals", get(approvals))
        .route("/approvals/{id}/{decision}", post(decide))
}

/// One pending approval as shown.
struct Pending {
    id: String,
    requested: When,
    /// (action, user, why)
    changes: Vec<(String, String, String)>,
}

#[derive(Template)]
#[template(path = "approvals.html")]
struct ApprovalsPage {
    chrome: Chrome,
    flash: Vec<Flash>,
    pending: Vec<Pending>,
}

async fn approvals_page(
    app: &App,
    admin: &Admin,
    status: StatusCode,
    flash: Vec<Flash>,
) -> Response {
    let pending = match app
        .store
        .approvals(Some(mfasync_store::ApprovalStatus::Pending))
        .await
    {
        Ok(p) => p,
        Err(e) => return db_error(Some(admin), e),
    };
    let pending = pending
        .iter()
        .map(|a| Pending {
            id: a.id.clone(),
            requested: When::of(&a.created_at),
            changes: a
                .changes
                .iter()
                .map(|c| {
                    (
                        c.action.clone(),
                        c.username.clone(),
                        match &c.limit {
                            // which limit held it, after why the user would go
                            Some(limit) => format!(
                                "{} (held by {limit})",
                                c.reason.as_deref().unwrap_or_default()
                            ),
                            None => c.reason.clone().unwrap_or_default(),
                        },
                    )
                })
                .collect(),
        })
        .collect();
    render_with(
        status,
        &ApprovalsPage {
            chrome: Chrome::new("Approvals", Some(admin), "/approvals"),
            flash,
            pending,
        },
    )
}

async fn approvals(State(app): State<App>, Extension(admin): Extension<Admin>) -> Response {
    approvals_page(&app, &admin, StatusCode::OK, Vec::new()).await
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CsrfForm {
    csrf: String,
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
            let msg = Flash::ok(format!("Approval {id} {verb}."));
            approvals_page(&app, &admin, StatusCode::OK, vec![msg]).await
        }
        Err(e) => {
            let msg = Flash::error(format!("Approval {id} not decided: {e}"));
            approvals_page(&app, &admin, StatusCode::CONFLICT, vec![msg]).await
        }
    }
}

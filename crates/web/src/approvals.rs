//! The Approvals page (`/approvals`): the changes a synchronization held
//! because more users than the threshold would be disabled or removed, each
//! approval with Approve and Reject (through the backend, as
//! `approvals approve|reject ID`), and a checkbox per held user for
//! "Approve selected" / "Reject selected" (`--user`).

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use std::collections::HashMap;

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
                .undecided()
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

/// Prefix of a held user's checkbox name (`user:NAME`).
const USER_FIELD: &str = "user:";

/// A decision form: its CSRF token, whether it is the per-user form
/// (`selected`), and the users ticked there.
struct DecisionForm {
    csrf: String,
    selected: bool,
    users: Vec<String>,
}

impl DecisionForm {
    /// From the posted fields (checkbox names vary, hence a map).
    fn of(fields: HashMap<String, String>) -> DecisionForm {
        let mut users: Vec<String> = fields
            .keys()
            .filter_map(|k| k.strip_prefix(USER_FIELD))
            .map(str::to_string)
            .collect();
        users.sort();
        DecisionForm {
            csrf: fields.get("csrf").cloned().unwrap_or_default(),
            selected: fields.contains_key("selected"),
            users,
        }
    }
}

async fn decide(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Path((id, decision)): Path<(String, String)>,
    Form(fields): Form<HashMap<String, String>>,
) -> Response {
    let form = DecisionForm::of(fields);
    if let Some(r) = csrf_refusal(&admin, &form.csrf) {
        return r;
    }
    if form.selected && form.users.is_empty() {
        let msg = Flash::error("Select at least one user to decide on.".to_string());
        return approvals_page(&app, &admin, StatusCode::BAD_REQUEST, vec![msg]).await;
    }
    let users = &form.users;
    let result = match decision.as_str() {
        "approve" => app
            .backend
            .approve(&id, users, &admin.username)
            .await
            .map(drop),
        "reject" => app
            .backend
            .reject(&id, users, &admin.username)
            .await
            .map(drop),
        _ => return (StatusCode::NOT_FOUND, "no such decision\n").into_response(),
    };
    match result {
        Ok(_) => {
            tracing::info!(
                "approval {id}: {decision} by {} for {users:?}",
                admin.username
            );
            let verb = if decision == "approve" {
                "approved"
            } else {
                "rejected"
            };
            let whom = match users.is_empty() {
                true => String::new(),
                false => format!(" for {}", users.join(", ")),
            };
            let msg = Flash::ok(format!("Approval {id} {verb}{whom}."));
            approvals_page(&app, &admin, StatusCode::OK, vec![msg]).await
        }
        Err(e) => {
            let msg = Flash::error(format!("Approval {id} not decided: {e}"));
            approvals_page(&app, &admin, StatusCode::CONFLICT, vec![msg]).await
        }
    }
}

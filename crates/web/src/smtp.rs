//! The `[smtp]` section as a form (`/settings/smtp`): the mail server that
//! `sync.notify` recipients are emailed through when removals are held for
//! approval. Saved like every settings form (`confedit::save_edit`): the stored
//! table is edited, validated with `config::parse` exactly as `config apply`
//! does, and stored as a new, audited version; nothing is stored on any
//! problem. A password typed here is stored only sealed
//! (`smtp.password_encrypted`, for the setting `smtp`, with the service's
//! secret key) and shown only as "set" / "not set".

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Form, Router};
use serde::Deserialize;
use toml::Value;

use crate::auth::{csrf_refusal, Admin};
use crate::confedit::{load_for_page, save_edit, set_opt, set_str, table_mut, Saved};
use crate::kit::{render_with, Chrome, Flash};
use crate::App;

pub(crate) fn routes() -> Router<App> {
    Router::new().route("/settings/smtp", get(smtp_get).post(smtp_save))
}

#[derive(Template)]
#[template(path = "smtp.html")]
struct SmtpPage<'a> {
    chrome: Chrome,
    flash: Vec<Flash>,
    version: i64,
    configured: bool,
    f: &'a SmtpForm,
    password_set: bool,
}

const PASSWORD_KEYS: &[&str] = &[
    "password",
    "password_file",
    "password_env",
    "password_encrypted",
];

#[derive(Deserialize, Default, Clone)]
#[serde(default)]
pub(crate) struct SmtpForm {
    csrf: String,
    version: String,
    server: String,
    from: String,
    username: String,
    /// Typed password; blank keeps the stored one.
    password: String,
    password_clear: Option<String>,
    /// Remove the whole `[smtp]` section.
    remove: Option<String>,
}

impl SmtpForm {
    fn apply(
        &self,
        root: &mut toml::Table,
        key: Option<&crate::secret::SecretKey>,
    ) -> Result<(), Vec<String>> {
        if self.remove.is_some() {
            root.remove("smtp");
            return Ok(());
        }
        let sealed = if self.password.is_empty() || self.password_clear.is_some() {
            None
        } else {
            match key {
                Some(k) => Some(
                    k.seal("smtp", &self.password)
                        .map_err(|e| vec![format!("smtp.password: {e}")])?,
                ),
                None => {
                    return Err(vec![format!(
                        "smtp.password: not stored: passwords typed here are stored encrypted, and the service has no secret key (set {} or {}; see docs/web.md), or use password_file / password_env in the configuration",
                        crate::secret::KEY_FILE_ENV,
                        crate::secret::KEY_ENV
                    )])
                }
            }
        };
        let t = table_mut(root, "smtp", "smtp")?;
        set_str(t, "server", &self.server);
        set_str(t, "from", &self.from);
        set_opt(t, "username", &self.username);
        if self.password_clear.is_some() {
            t.remove("password");
            t.remove("password_encrypted");
        } else if let Some(s) = sealed {
            // A typed password replaces every other source of it.
            for k in PASSWORD_KEYS {
                t.remove(*k);
            }
            t.insert("password_encrypted".into(), Value::String(s));
        }
        Ok(())
    }
}

async fn smtp_page(
    app: &App,
    admin: &Admin,
    status: StatusCode,
    flash: Vec<Flash>,
    typed: Option<&SmtpForm>,
) -> Response {
    let active = match load_for_page(app, admin, "SMTP", "/settings", &flash).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let smtp = active.config.smtp.clone();
    let current = SmtpForm {
        server: smtp.as_ref().map(|s| s.server.clone()).unwrap_or_default(),
        from: smtp.as_ref().map(|s| s.from.clone()).unwrap_or_default(),
        username: smtp
            .as_ref()
            .and_then(|s| s.username.clone())
            .unwrap_or_default(),
        ..SmtpForm::default()
    };
    let f = typed.unwrap_or(&current);
    render_with(
        status,
        &SmtpPage {
            chrome: Chrome::new("SMTP", Some(admin), "/settings"),
            flash,
            version: active.version,
            configured: smtp.is_some(),
            f,
            password_set: smtp.as_ref().is_some_and(|s| s.has_password()),
        },
    )
}

pub(crate) async fn smtp_get(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
) -> Response {
    smtp_page(&app, &admin, StatusCode::OK, Vec::new(), None).await
}

pub(crate) async fn smtp_save(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Form(form): Form<SmtpForm>,
) -> Response {
    if let Some(r) = csrf_refusal(&admin, &form.csrf) {
        return r;
    }
    let saved = save_edit(&app, &admin, &form.version, "SMTP settings", |t| {
        form.apply(t, app.opts.secret_key.as_ref())
    })
    .await;
    match saved {
        Err(r) => r,
        Ok(Saved::Stored(msg)) => smtp_page(&app, &admin, StatusCode::OK, vec![msg], None).await,
        Ok(Saved::Refused(status, msg)) => {
            // Never echo a typed password.
            let kept = SmtpForm {
                password: String::new(),
                ..form.clone()
            };
            smtp_page(&app, &admin, status, vec![msg], Some(&kept)).await
        }
    }
}

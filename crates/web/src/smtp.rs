//! The `[smtp]` section as a form (`/settings/smtp`): the mail server that
//! `sync.notify` recipients are emailed through when removals are held for
//! approval. Saved like every settings form (`tabs::save_edit`): the stored
//! table is edited, validated with `config::parse` exactly as `config apply`
//! does, and stored as a new, audited version; nothing is stored on any
//! problem. A password typed here is stored only sealed
//! (`smtp.password_encrypted`, for the setting `smtp`, with the service's
//! secret key) and shown only as "set" / "not set".

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use serde::Deserialize;
use toml::Value;

use crate::auth::{csrf_refusal, Admin};
use crate::html::{csrf_field, esc, page};
use crate::syncpage::{checked, load_for_page};
use crate::tabs::{save_edit, set_opt, set_str, table_mut, Saved};
use crate::App;

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
    extra: &str,
    typed: Option<&SmtpForm>,
) -> Response {
    let active = match load_for_page(app, admin, "SMTP", "/settings", extra).await {
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
    let password_set = smtp.as_ref().is_some_and(|s| s.has_password());
    let state = match &smtp {
        None => "No <code>[smtp]</code> section is configured: no email is sent.",
        Some(_) => "",
    };
    let body = format!(
        r#"{extra}<p>The mail server through which <code>sync.notify</code> recipients are emailed when removals are held for approval (Synchronization page). {state}</p>
<form method="post" action="/settings/smtp" id="smtp-form">{csrf}<input type="hidden" name="version" value="{version}">
<table>
<tr><th>Server</th><td><input name="server" size="50" value="{server}" placeholder="smtp://mail.example.com:25?tls=required"> smtp:// (add <code>?tls=required</code> for STARTTLS) or smtps://</td></tr>
<tr><th>From</th><td><input name="from" size="40" value="{from}" placeholder="mfasync@example.com"></td></tr>
<tr><th>Username</th><td><input name="username" size="40" value="{username}"> (blank: no authentication)</td></tr>
<tr><th>Password</th><td><input type="password" name="password" autocomplete="new-password" placeholder="{pw_hint}"> <span id="smtp-password-state">{pw_state}</span> <label><input type="checkbox" name="password_clear" value="true"> remove the stored password</label><br>stored encrypted with the service's secret key; never shown</td></tr>
<tr><th>Remove</th><td><label><input type="checkbox" name="remove" value="true"{remove}> remove the whole [smtp] section</label></td></tr>
</table>
<p><button type="submit" id="save-smtp">Save</button></p></form>"#,
        csrf = csrf_field(admin),
        version = active.version,
        server = esc(&f.server),
        from = esc(&f.from),
        username = esc(&f.username),
        pw_hint = if password_set {
            "leave blank to keep"
        } else {
            "not set"
        },
        pw_state = if password_set { "set" } else { "not set" },
        remove = checked(f.remove.is_some()),
    );
    (status, page("SMTP", Some(admin), "/settings", &body)).into_response()
}

pub(crate) async fn smtp_get(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
) -> Response {
    smtp_page(&app, &admin, StatusCode::OK, "", None).await
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
        Ok(Saved::Stored(msg)) => smtp_page(&app, &admin, StatusCode::OK, &msg, None).await,
        Ok(Saved::Refused(status, msg)) => {
            // Never echo a typed password.
            let kept = SmtpForm {
                password: String::new(),
                ..form.clone()
            };
            smtp_page(&app, &admin, status, &msg, Some(&kept)).await
        }
    }
}

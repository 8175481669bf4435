//! The Settings page (`/settings`, the seed's Settings tab): the directory
//! connection as a form (saved, or tested without saving), the `directory
//! test` of the saved settings, the active configuration as TOML (applied
//! whole after validation), and every configuration version with what it
//! changed. Saves go through `confedit`: the stored table is edited,
//! validated and stored as a new version; nothing is stored on any problem.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use mfasync_core::config::Config;
use mfasync_core::report::directory::TestReport;
use serde::Deserialize;
use toml::{Table, Value};

use crate::auth::{csrf_refusal, Admin};
use crate::confedit::{load, not_saved, save_edit, set_opt, set_str, table_mut, LoadError, Saved};
use crate::kit::{
    choices, db_error, enum_str, message, render, render_with, Choice, Chrome, Flash, When,
};
use crate::App;

pub(crate) fn routes() -> Router<App> {
    Router::new()
        .route("/settings", get(settings).post(settings_apply))
        .route("/settings/test", post(settings_test))
        .route("/settings/directory", post(directory_save))
        .route("/settings/directory/test", post(directory_test_unsaved))
        .route("/settings/versions", get(versions))
        .route("/settings/versions/{version}", get(version_diff))
}

/// What a Settings page shows above its content: notices, and a test's report.
#[derive(Default)]
pub(crate) struct Extra {
    flash: Vec<Flash>,
    test: Option<TestView>,
}

impl Extra {
    fn flash(f: Flash) -> Extra {
        Extra {
            flash: vec![f],
            test: None,
        }
    }
}

/// A `directory test` report as the page shows it.
pub(crate) struct TestView {
    ok: bool,
    server: String,
    vendor: String,
    warnings: Vec<String>,
    /// (step, ok, detail)
    steps: Vec<(String, bool, String)>,
    supports: Vec<(String, bool)>,
}

impl TestView {
    fn of(r: &TestReport) -> TestView {
        TestView {
            ok: r.ok,
            server: r.server.clone(),
            vendor: r.vendor.as_str().to_string(),
            warnings: r.warnings.iter().map(|w| format!("Warning: {w}")).collect(),
            steps: r
                .steps
                .iter()
                .map(|s| (s.step.clone(), s.ok, s.detail.clone()))
                .collect(),
            supports: r
                .supports
                .named()
                .into_iter()
                .map(|(n, s)| (n.to_string(), s))
                .collect(),
        }
    }
}

/// The test report alone (`templates/test_report.html`).
#[derive(Template)]
#[template(path = "test_report.html")]
struct TestBlock<'a> {
    test: &'a TestView,
}

/// A secret of the active configuration: its label, key path, and whether set.
struct Secret {
    label: &'static str,
    key: String,
    set: bool,
}

fn secret_label(key: &str) -> &'static str {
    match key {
        "directory.query_bind.password" => "Query bind password",
        "directory.auth_bind.password" => "Authentication bind password",
        "smtp.password" => "SMTP password",
        _ => "Password",
    }
}

/// The directory form as shown: the values, the version it edits, and
/// whether the query bind has a password now (shown only as "set").
struct DirectoryView {
    version: i64,
    f: DirectoryForm,
    password_set: bool,
    sources: Vec<Choice>,
    query_types: Vec<Choice>,
    auth_types: Vec<Choice>,
}

impl DirectoryView {
    fn new(version: i64, f: DirectoryForm, password_set: bool) -> DirectoryView {
        DirectoryView {
            sources: choices(SOURCES, &f.source, None),
            query_types: choices(BIND_TYPES, &f.query_type, None),
            auth_types: choices(BIND_TYPES, &f.auth_type, None),
            version,
            f,
            password_set,
        }
    }
}

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    chrome: Chrome,
    flash: Vec<Flash>,
    test: Option<TestView>,
    /// The active version and when it was applied, with its secrets.
    applied: Option<(i64, When)>,
    secrets: Vec<Secret>,
    config_warnings: Vec<String>,
    /// None: the stored configuration no longer validates.
    directory: Option<DirectoryView>,
    active_toml: String,
    inline_passwords: bool,
}

/// The Settings page. `typed`: the directory form as posted (after a refused save).
async fn settings_page(
    app: &App,
    admin: &Admin,
    status: StatusCode,
    extra: Extra,
    typed: Option<&DirectoryForm>,
) -> Response {
    let stored = match app.store.active_config().await {
        Ok(c) => c,
        Err(e) => return db_error(Some(admin), e),
    };
    let parsed = stored
        .as_ref()
        .map(|v| (v.version, mfasync_core::config::parse(&v.toml)));
    // what `config apply` warns about, for the active configuration
    let config_warnings = match &parsed {
        Some((_, Ok(cfg))) => mfasync_core::config::warnings(cfg)
            .iter()
            .map(|w| format!("Warning: {w}"))
            .collect(),
        _ => Vec::new(),
    };
    let directory = match parsed {
        None => {
            let cfg = Config::default();
            Some(match typed {
                Some(f) => DirectoryView::new(0, f.clone(), false),
                None => directory_current(0, &cfg),
            })
        }
        Some((version, Ok(cfg))) => Some(match typed {
            Some(f) => {
                DirectoryView::new(version, f.clone(), cfg.directory.query_bind.has_password())
            }
            None => directory_current(version, &cfg),
        }),
        Some((_, Err(_))) => None,
    };
    let (applied, secrets, active_toml, inline_passwords) = match &stored {
        Some(v) => {
            let view = crate::ConfigView::from_stored(v);
            let secrets = view
                .secrets
                .iter()
                .map(|(key, set)| Secret {
                    label: secret_label(key),
                    key: key.clone(),
                    set: *set,
                })
                .collect();
            (
                Some((view.version, When::of(&view.created_at))),
                secrets,
                view.toml,
                crate::ConfigView::has_inline_password(v),
            )
        }
        None => (None, Vec::new(), String::new(), false),
    };
    render_with(
        status,
        &SettingsPage {
            chrome: Chrome::new("Settings", Some(admin), "/settings"),
            flash: extra.flash,
            test: extra.test,
            applied,
            secrets,
            config_warnings,
            directory,
            active_toml,
            inline_passwords,
        },
    )
}

async fn settings(State(app): State<App>, Extension(admin): Extension<Admin>) -> Response {
    settings_page(&app, &admin, StatusCode::OK, Extra::default(), None).await
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
            let msg = Flash::ok(format!("Configuration version {version} applied."));
            settings_page(&app, &admin, StatusCode::OK, Extra::flash(msg), None).await
        }
        Err(errors) => {
            let msg = Flash::problems("Not applied: the configuration has", errors);
            settings_page(
                &app,
                &admin,
                StatusCode::UNPROCESSABLE_ENTITY,
                Extra::flash(msg),
                None,
            )
            .await
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CsrfForm {
    csrf: String,
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
    let extra = Extra {
        flash: Vec::new(),
        test: Some(TestView::of(&result)),
    };
    settings_page(&app, &admin, StatusCode::OK, extra, None).await
}

// ------------------------------------------------------------------ directory form

/// A whole number typed in a form, or the problem named by its key path.
fn whole(v: &str, key: &str, errors: &mut Vec<String>) -> Option<i64> {
    match v.trim().parse::<i64>() {
        Ok(n) => Some(n),
        Err(_) => {
            errors.push(format!("{key}: must be a whole number, not {:?}", v.trim()));
            None
        }
    }
}

// ------------------------------------------------------------------ Settings: directory

const SOURCES: &[&str] = &["active-directory", "ldap"];
const BIND_TYPES: &[&str] = &["anonymous", "simple", "ssl", "windows"];

/// The directory connection as the Settings form posts it.
#[derive(Deserialize, Default, Clone)]
#[serde(default)]
pub(crate) struct DirectoryForm {
    csrf: String,
    version: String,
    source: String,
    domain: String,
    include_trusted_domains: Option<String>,
    use_attribute_scope_queries: Option<String>,
    /// One per line (or separated by `;` as in the seed).
    servers: String,
    base_dn: String,
    query_size_limit: String,
    timeout_seconds: String,
    starttls: Option<String>,
    tls_verify: Option<String>,
    tls_ca_file: String,
    query_type: String,
    query_dn: String,
    /// Typed password; blank keeps the stored one.
    query_password: String,
    query_password_clear: Option<String>,
    auth_type: String,
}

fn on(b: bool) -> Option<String> {
    b.then(|| "true".to_string())
}

impl DirectoryForm {
    fn from_config(c: &Config) -> DirectoryForm {
        let d = &c.directory;
        DirectoryForm {
            source: enum_str(&d.source),
            domain: d.domain.clone(),
            include_trusted_domains: on(d.include_trusted_domains),
            use_attribute_scope_queries: on(d.use_attribute_scope_queries),
            servers: d.servers.join("\n"),
            base_dn: d.base_dn.clone(),
            query_size_limit: d.query_size_limit.to_string(),
            timeout_seconds: d.timeout_seconds.to_string(),
            starttls: on(d.starttls),
            tls_verify: on(d.tls_verify),
            tls_ca_file: d.tls_ca_file.clone().unwrap_or_default(),
            query_type: d.query_bind.kind.as_str().to_string(),
            query_dn: d.query_bind.dn.clone(),
            auth_type: d.auth_bind.kind.as_str().to_string(),
            ..DirectoryForm::default()
        }
    }

    /// Write the form into the stored table; a typed password is sealed
    /// with the key (to be stored), or written inline (a Test of settings
    /// that are not stored).
    fn apply(&self, root: &mut Table, typed: TypedPassword<'_>) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        let sealed = if self.query_password.is_empty() || self.query_password_clear.is_some() {
            None
        } else {
            match typed {
                TypedPassword::Inline => Some(("password", self.query_password.clone())),
                TypedPassword::Seal(Some(k)) => {
                    match k.seal("directory.query_bind", &self.query_password) {
                        Ok(s) => Some(("password_encrypted", s)),
                        Err(e) => {
                            errors.push(format!("directory.query_bind.password: {e}"));
                            None
                        }
                    }
                }
                TypedPassword::Seal(None) => {
                    errors.push(format!(
                        "directory.query_bind.password: not stored: passwords typed here are stored encrypted, and the service has no secret key (set {} or {}; see docs/web.md), or use password_file / password_env in the configuration",
                        crate::secret::KEY_FILE_ENV,
                        crate::secret::KEY_ENV
                    ));
                    None
                }
            }
        };
        let size = whole(
            &self.query_size_limit,
            "directory.query_size_limit",
            &mut errors,
        );
        let timeout = whole(
            &self.timeout_seconds,
            "directory.timeout_seconds",
            &mut errors,
        );
        if !errors.is_empty() {
            return Err(errors);
        }
        let d = table_mut(root, "directory", "directory")?;
        set_str(d, "source", &self.source);
        set_opt(d, "domain", &self.domain);
        d.insert(
            "include_trusted_domains".into(),
            Value::Boolean(self.include_trusted_domains.is_some()),
        );
        d.insert(
            "use_attribute_scope_queries".into(),
            Value::Boolean(self.use_attribute_scope_queries.is_some()),
        );
        let servers: Vec<Value> = self
            .servers
            .split(['\n', ';', ','])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| Value::String(s.to_string()))
            .collect();
        d.insert("servers".into(), Value::Array(servers));
        set_opt(d, "base_dn", &self.base_dn);
        if let Some(n) = size {
            d.insert("query_size_limit".into(), Value::Integer(n));
        }
        if let Some(n) = timeout {
            d.insert("timeout_seconds".into(), Value::Integer(n));
        }
        d.insert("starttls".into(), Value::Boolean(self.starttls.is_some()));
        d.insert(
            "tls_verify".into(),
            Value::Boolean(self.tls_verify.is_some()),
        );
        set_opt(d, "tls_ca_file", &self.tls_ca_file);
        {
            let q = table_mut(d, "query_bind", "directory.query_bind")?;
            set_str(q, "type", &self.query_type);
            set_opt(q, "dn", &self.query_dn);
            if self.query_password_clear.is_some() {
                q.remove("password");
                q.remove("password_encrypted");
            } else if let Some((as_key, value)) = sealed {
                // A typed password replaces every other source of it.
                for k in [
                    "password",
                    "password_file",
                    "password_env",
                    "password_encrypted",
                ] {
                    q.remove(k);
                }
                q.insert(as_key.into(), Value::String(value));
            }
        }
        let a = table_mut(d, "auth_bind", "directory.auth_bind")?;
        set_str(a, "type", &self.auth_type);
        // the auth bind binds as the user checked: an account there is refused
        a.remove("dn");
        Ok(())
    }
}

/// What becomes of a password typed in the directory form.
enum TypedPassword<'a> {
    /// Stored: sealed with the service's key (refused without one).
    Seal(Option<&'a crate::secret::SecretKey>),
    /// Only tested, never stored: inline in the candidate text.
    Inline,
}

/// The seed's Test before the settings are used: the form's values (with the
/// stored configuration's other keys) are validated like a save, then tested
/// by `Backend::directory_test_candidate`; nothing is stored.
pub(crate) async fn directory_test_unsaved(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Form(form): Form<DirectoryForm>,
) -> Response {
    if let Some(r) = csrf_refusal(&admin, &form.csrf) {
        return r;
    }
    let mut table = match load(&app).await {
        Ok(a) => a.table,
        Err(LoadError::Db(e)) => return db_error(Some(&admin), e),
        Err(LoadError::Invalid(m)) => {
            let msg = Extra::flash(Flash::error(m));
            return settings_page(&app, &admin, StatusCode::CONFLICT, msg, Some(&form)).await;
        }
    };
    let refused = not_saved;
    let msg = match form.apply(&mut table, TypedPassword::Inline) {
        Err(errors) => Err(refused(errors)),
        Ok(()) => match toml::to_string(&table) {
            Err(e) => Err(refused(vec![format!(
                "(file): cannot write the configuration: {e}"
            )])),
            Ok(text) => match mfasync_core::config::parse(&text) {
                Err(errors) => Err(refused(errors.iter().map(ToString::to_string).collect())),
                Ok(_) => Ok(app.backend.directory_test_candidate(&text).await),
            },
        },
    };
    match msg {
        Ok(result) => {
            let extra = Extra {
                flash: vec![Flash::ok(
                    "Tested the settings in the form below; they are not saved (press Save to use them).",
                )],
                test: Some(TestView::of(&result)),
            };
            settings_page(&app, &admin, StatusCode::OK, extra, Some(&form)).await
        }
        Err(errors) => {
            settings_page(
                &app,
                &admin,
                StatusCode::UNPROCESSABLE_ENTITY,
                Extra::flash(errors),
                Some(&form),
            )
            .await
        }
    }
}

/// The directory form drawn from the active configuration (the seed's
/// defaults when none is applied yet).
fn directory_current(version: i64, cfg: &Config) -> DirectoryView {
    DirectoryView::new(
        version,
        DirectoryForm::from_config(cfg),
        cfg.directory.query_bind.has_password(),
    )
}

pub(crate) async fn directory_save(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Form(form): Form<DirectoryForm>,
) -> Response {
    if let Some(r) = csrf_refusal(&admin, &form.csrf) {
        return r;
    }
    let saved = save_edit(&app, &admin, &form.version, "Directory settings", |t| {
        form.apply(t, TypedPassword::Seal(app.opts.secret_key.as_ref()))
    })
    .await;
    match saved {
        Err(r) => r,
        Ok(Saved::Stored(msg)) => {
            settings_page(&app, &admin, StatusCode::OK, Extra::flash(msg), None).await
        }
        Ok(Saved::Refused(status, msg)) => {
            settings_page(&app, &admin, status, Extra::flash(msg), Some(&form)).await
        }
    }
}

// ------------------------------------------------------------------ config versions

#[derive(Template)]
#[template(path = "versions.html")]
struct VersionsPage {
    chrome: Chrome,
    /// (version, applied)
    versions: Vec<(i64, When)>,
}

async fn versions(State(app): State<App>, Extension(admin): Extension<Admin>) -> Response {
    let list = match app.store.config_versions().await {
        Ok(l) => l,
        Err(e) => return db_error(Some(&admin), e),
    };
    render(&VersionsPage {
        chrome: Chrome::new("Configuration versions", Some(&admin), "/settings"),
        versions: list
            .iter()
            .map(|v| (v.version, When::of(&v.created_at)))
            .collect(),
    })
}

#[derive(Template)]
#[template(path = "version_diff.html")]
struct DiffPage<'a> {
    chrome: Chrome,
    applied: When,
    heading: String,
    /// (class, mark, line)
    lines: Vec<(&'static str, char, &'a str)>,
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
        return message(
            StatusCode::NOT_FOUND,
            "Configuration version",
            Some(&admin),
            "/settings",
            vec![Flash::error("No such configuration version.")],
        );
    };
    let this = crate::ConfigView::from_stored(&list[idx]);
    // Newest first: the one before is the next in the list.
    let before = list.get(idx + 1).map(crate::ConfigView::from_stored);
    let (heading, old) = match &before {
        Some(b) => (
            format!("Changes from version {}", b.version),
            b.toml.as_str(),
        ),
        None => ("The first version".to_string(), ""),
    };
    let lines = line_diff(old, &this.toml)
        .into_iter()
        .map(|(mark, line)| {
            let class = match mark {
                '+' => "add",
                '-' => "del",
                _ => "same",
            };
            (class, mark, line)
        })
        .collect();
    render(&DiffPage {
        chrome: Chrome::new(
            format!("Configuration version {}", this.version),
            Some(&admin),
            "/settings",
        ),
        applied: When::of(&this.created_at),
        heading,
        lines,
    })
}

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
    use askama::Template;

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
        let view = super::TestView::of(&v);
        assert_eq!(
            view.warnings,
            vec!["Warning: directory.servers[0]: <b>names</b> an IP".to_string()]
        );
        let html = super::TestBlock { test: &view }.render().unwrap();
        assert!(
            html.contains(r#"<p class="notice warning">Warning: directory.servers[0]: &#60;b&#62;names&#60;/b&#62; an IP</p>"#),
            "{html}"
        );
    }
}

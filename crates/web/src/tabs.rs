//! The seed's Settings (directory connection), Filters and Attributes tabs as
//! forms. Like the Synchronization page, each save edits the STORED text of
//! the active configuration as a `toml::Table` (other keys and secrets are
//! kept), validates the result with `mfasync_core::config::parse` exactly as
//! `config apply` does, and stores it through `Backend::config_put` as a new,
//! audited version; on any problem nothing is stored and the problems are
//! listed by key path. A form posted against an older version is refused.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use mfasync_core::config::{AttrList, Attributes, Config, Filters, Schema, UniqueIdType};
use serde::Deserialize;
use toml::{Table, Value};

use crate::auth::{csrf_refusal, Admin};
use crate::html::{csrf_field, esc, notice, page};
use crate::portal::db_error;
use crate::syncpage::{checked, enum_str, errors_html, load, load_for_page, options, LoadError};
use crate::App;

/// What a save came to.
pub(crate) enum Saved {
    /// Stored: the notice to show.
    Stored(String),
    /// Not stored: the status and the problems (HTML).
    Refused(StatusCode, String),
}

/// Load the stored table, check the form's version, edit, validate, store.
pub(crate) async fn save_edit(
    app: &App,
    admin: &Admin,
    form_version: &str,
    what: &str,
    edit: impl FnOnce(&mut Table) -> Result<(), Vec<String>>,
) -> Result<Saved, Response> {
    let active = match load(app).await {
        Ok(a) => a,
        Err(LoadError::Db(e)) => return Err(db_error(Some(admin), e)),
        Err(LoadError::Invalid(m)) => {
            return Ok(Saved::Refused(StatusCode::CONFLICT, notice("error", &m)))
        }
    };
    if form_version.trim() != active.version.to_string() {
        return Ok(Saved::Refused(
            StatusCode::CONFLICT,
            notice(
                "error",
                &format!(
                    "The configuration changed since this page was loaded (now version {}); nothing was saved. Check the page and try again.",
                    active.version
                ),
            ),
        ));
    }
    let mut table = active.table;
    if let Err(errors) = edit(&mut table) {
        return Ok(Saved::Refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            errors_html(&errors),
        ));
    }
    let text = match toml::to_string(&table) {
        Ok(t) => t,
        Err(e) => {
            return Ok(Saved::Refused(
                StatusCode::UNPROCESSABLE_ENTITY,
                errors_html(&[format!("(file): cannot write the configuration: {e}")]),
            ))
        }
    };
    if let Err(errors) = mfasync_core::config::parse(&text) {
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        return Ok(Saved::Refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            errors_html(&errors),
        ));
    }
    match app.backend.config_put(&text, &admin.username).await {
        Ok(version) => {
            tracing::info!(
                "{what} saved: configuration version {version} applied by {}",
                admin.username
            );
            Ok(Saved::Stored(notice(
                "ok",
                &format!("{what} saved as configuration version {version}."),
            )))
        }
        Err(errors) => Ok(Saved::Refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            errors_html(&errors),
        )),
    }
}

/// The sub-table `key` of `t`, created when missing.
pub(crate) fn table_mut<'a>(
    t: &'a mut Table,
    key: &str,
    path: &str,
) -> Result<&'a mut Table, Vec<String>> {
    t.entry(key)
        .or_insert_with(|| Value::Table(Table::new()))
        .as_table_mut()
        .ok_or_else(|| vec![format!("{path}: must be a table")])
}

/// Set a string key, or remove it when blank.
pub(crate) fn set_opt(t: &mut Table, key: &str, v: &str) {
    let v = v.trim();
    if v.is_empty() {
        t.remove(key);
    } else {
        t.insert(key.into(), Value::String(v.to_string()));
    }
}

pub(crate) fn set_str(t: &mut Table, key: &str, v: &str) {
    t.insert(key.into(), Value::String(v.trim().to_string()));
}

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
            let msg = notice("error", &m);
            return crate::portal::settings_page(
                &app,
                &admin,
                StatusCode::CONFLICT,
                &msg,
                Some(&form),
            )
            .await;
        }
    };
    let refused = |errors: Vec<String>| errors_html(&errors);
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
            let extra = format!(
                "{}{}",
                notice(
                    "ok",
                    "Tested the settings in the form below; they are not saved (press Save to use them)."
                ),
                crate::portal::test_html(&result)
            );
            crate::portal::settings_page(&app, &admin, StatusCode::OK, &extra, Some(&form)).await
        }
        Err(errors) => {
            crate::portal::settings_page(
                &app,
                &admin,
                StatusCode::UNPROCESSABLE_ENTITY,
                &errors,
                Some(&form),
            )
            .await
        }
    }
}

/// The directory form of the Settings page. `password_set`: whether the
/// query bind has a password now (shown only as "set").
pub(crate) fn directory_form_html(
    admin: &Admin,
    version: i64,
    f: &DirectoryForm,
    password_set: bool,
) -> String {
    format!(
        r#"<form method="post" action="/settings/directory" id="directory-form">{csrf}<input type="hidden" name="version" value="{version}">
<table>
<tr><th>Source</th><td><select name="source">{sources}</select> active-directory: the domain's DCs by DNS, Kerberos binds; ldap: the servers below</td></tr>
<tr><th>Domain</th><td><input name="domain" size="40" value="{domain}"> (for active-directory)</td></tr>
<tr><th>Include trusted domains</th><td><input type="checkbox" name="include_trusted_domains" value="true"{trusted}></td></tr>
<tr><th>Use attribute scope queries</th><td><input type="checkbox" name="use_attribute_scope_queries" value="true"{asq}></td></tr>
<tr><th>Servers</th><td><textarea name="servers" rows="3" cols="50" spellcheck="false">{servers}</textarea><br>ldap:// or ldaps:// URLs, one per line, in order; later ones are backups</td></tr>
<tr><th>Base DN</th><td><input name="base_dn" size="50" value="{base_dn}"></td></tr>
<tr><th>Query size limit</th><td><input name="query_size_limit" size="6" value="{size}"></td></tr>
<tr><th>Timeout (seconds)</th><td><input name="timeout_seconds" size="6" value="{timeout}"></td></tr>
<tr><th>StartTLS</th><td><input type="checkbox" name="starttls" value="true"{starttls}></td></tr>
<tr><th>Verify TLS certificates</th><td><input type="checkbox" name="tls_verify" value="true"{verify}></td></tr>
<tr><th>CA file</th><td><input name="tls_ca_file" size="50" value="{ca}"></td></tr>
<tr><th>Bind type - Queries</th><td><select name="query_type">{qtypes}</select></td></tr>
<tr><th>Bind DN or username</th><td><input name="query_dn" size="50" value="{qdn}"></td></tr>
<tr><th>Bind password</th><td><input type="password" name="query_password" autocomplete="new-password" placeholder="{pw_hint}"> <span id="query-password-state">{pw_state}</span> <label><input type="checkbox" name="query_password_clear" value="true"> remove the stored password</label><br>stored encrypted with the service's secret key; never shown</td></tr>
<tr><th>Bind type - Authentications</th><td><select name="auth_type">{atypes}</select> (password checks bind as the user being checked, with the DN the query bind finds)</td></tr>
</table>
<p><button type="submit" id="save-directory">Save</button> <button type="submit" formaction="/settings/directory/test" id="test-unsaved">Test these settings</button> (without saving them)</p></form>"#,
        csrf = csrf_field(admin),
        sources = options(SOURCES, &f.source, None),
        domain = esc(&f.domain),
        trusted = checked(f.include_trusted_domains.is_some()),
        asq = checked(f.use_attribute_scope_queries.is_some()),
        servers = esc(&f.servers),
        base_dn = esc(&f.base_dn),
        size = esc(&f.query_size_limit),
        timeout = esc(&f.timeout_seconds),
        starttls = checked(f.starttls.is_some()),
        verify = checked(f.tls_verify.is_some()),
        ca = esc(&f.tls_ca_file),
        qtypes = options(BIND_TYPES, &f.query_type, None),
        qdn = esc(&f.query_dn),
        pw_hint = if password_set {
            "leave blank to keep"
        } else {
            "not set"
        },
        pw_state = if password_set { "set" } else { "not set" },
        atypes = options(BIND_TYPES, &f.auth_type, None),
    )
}

/// The directory form drawn from the active configuration (the seed's
/// defaults when none is applied yet).
pub(crate) fn directory_form_current(admin: &Admin, version: i64, cfg: &Config) -> String {
    directory_form_html(
        admin,
        version,
        &DirectoryForm::from_config(cfg),
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
            crate::portal::settings_page(&app, &admin, StatusCode::OK, &msg, None).await
        }
        Ok(Saved::Refused(status, msg)) => {
            crate::portal::settings_page(&app, &admin, status, &msg, Some(&form)).await
        }
    }
}

// ------------------------------------------------------------------ Filters

#[derive(Deserialize, Default, Clone)]
#[serde(default)]
pub(crate) struct FiltersForm {
    csrf: String,
    version: String,
    container: String,
    security_group: String,
    user: String,
}

impl FiltersForm {
    /// The filters as written: one that was blank (its schema's default) stays blank.
    fn from_filters(f: &Filters) -> FiltersForm {
        let written = |blank: bool, v: &str| if blank { String::new() } else { v.to_string() };
        FiltersForm {
            container: written(f.blank.container, &f.container),
            security_group: written(f.blank.security_group, &f.security_group),
            user: written(f.blank.user, &f.user),
            ..FiltersForm::default()
        }
    }
}

fn filters_values(f: &Filters) -> Result<Value, Vec<String>> {
    Value::try_from(f).map_err(|e| vec![format!("filters: {e}")])
}

/// The schema whose defaults a Restore Defaults form preselects.
fn schema_of(cfg: &Config) -> &'static str {
    match cfg.directory.source {
        mfasync_core::config::DirectorySource::ActiveDirectory => "active-directory",
        mfasync_core::config::DirectorySource::Ldap => "openldap",
    }
}

const SCHEMAS: &[&str] = &["active-directory", "openldap"];

async fn filters_page(
    app: &App,
    admin: &Admin,
    status: StatusCode,
    extra: &str,
    typed: Option<&FiltersForm>,
) -> Response {
    let active = match load_for_page(app, admin, "Filters", "/filters", extra).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let current = FiltersForm::from_filters(&active.config.filters);
    let f = typed.unwrap_or(&current);
    let csrf = csrf_field(admin);
    let version = active.version;
    let schema = Schema::of(&active.config);
    let defaults = schema.filters();
    let body = format!(
        r#"{extra}<p>Filters qualify directory records in every search (LDAP filter syntax, RFC 4515). For directories other than Active Directory, use the object classes of their schema, such as <code>(objectClass=inetOrgPerson)</code> for users.</p>
<p id="filters-blank">A blank filter is the default of the {schema_name} schema (shown greyed in the field); the schema is Active Directory when the source is active-directory or the unique identifier is objectGUID.</p>
<form method="post" action="/filters" id="filters-form">{csrf}<input type="hidden" name="version" value="{version}">
<table>
<tr><th>Container filter</th><td><input name="container" size="80" value="{container}" placeholder="{container_default}"></td></tr>
<tr><th>Security group filter</th><td><input name="security_group" size="80" value="{group}" placeholder="{group_default}"></td></tr>
<tr><th>User filter</th><td><input name="user" size="80" value="{user}" placeholder="{user_default}"></td></tr>
</table>
<p><button type="submit" id="save-filters">Save</button></p></form>
<h2>Restore Defaults</h2>
<form method="post" action="/filters/defaults">{csrf}<input type="hidden" name="version" value="{version}"><select name="schema">{schemas}</select> <button type="submit" id="filters-defaults">Restore Defaults</button></form>
<p>active-directory: the seed's defaults (Active Directory or ADAM schema); openldap: organizationalUnit, groupOfNames and inetOrgPerson.</p>"#,
        schemas = options(SCHEMAS, schema_of(&active.config), None),
        schema_name = schema.as_str(),
        container = esc(&f.container),
        group = esc(&f.security_group),
        user = esc(&f.user),
        container_default = esc(&defaults.container),
        group_default = esc(&defaults.security_group),
        user_default = esc(&defaults.user),
    );
    (status, page("Filters", Some(admin), "/filters", &body)).into_response()
}

pub(crate) async fn filters_get(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
) -> Response {
    filters_page(&app, &admin, StatusCode::OK, "", None).await
}

pub(crate) async fn filters_save(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Form(form): Form<FiltersForm>,
) -> Response {
    if let Some(r) = csrf_refusal(&admin, &form.csrf) {
        return r;
    }
    let saved = save_edit(&app, &admin, &form.version, "Filters", |t| {
        let f = table_mut(t, "filters", "filters")?;
        set_str(f, "container", &form.container);
        set_str(f, "security_group", &form.security_group);
        set_str(f, "user", &form.user);
        Ok(())
    })
    .await;
    match saved {
        Err(r) => r,
        Ok(Saved::Stored(msg)) => filters_page(&app, &admin, StatusCode::OK, &msg, None).await,
        Ok(Saved::Refused(status, msg)) => {
            filters_page(&app, &admin, status, &msg, Some(&form)).await
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct DefaultsForm {
    csrf: String,
    version: String,
    /// "active-directory" (the seed's defaults) or "openldap".
    schema: String,
}

pub(crate) async fn filters_defaults(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Form(form): Form<DefaultsForm>,
) -> Response {
    if let Some(r) = csrf_refusal(&admin, &form.csrf) {
        return r;
    }
    let Some(schema) = Schema::named(&form.schema) else {
        let msg = errors_html(&[format!(
            "schema: {:?} is not active-directory or openldap",
            form.schema
        )]);
        return filters_page(&app, &admin, StatusCode::UNPROCESSABLE_ENTITY, &msg, None).await;
    };
    let what = format!("Default filters ({})", form.schema);
    let saved = save_edit(&app, &admin, &form.version, &what, |t| {
        t.insert("filters".into(), filters_values(&schema.filters())?);
        Ok(())
    })
    .await;
    match saved {
        Err(r) => r,
        Ok(Saved::Stored(msg)) => filters_page(&app, &admin, StatusCode::OK, &msg, None).await,
        Ok(Saved::Refused(status, msg)) => filters_page(&app, &admin, status, &msg, None).await,
    }
}

// ------------------------------------------------------------------ Attributes

/// How an attribute field is typed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// One attribute name (blank: not mapped).
    One,
    /// Names separated by `;` (as in the seed).
    List,
    /// The unique identifier type.
    IdType,
}

/// Every attribute of `[attributes]`: key, label, kind.
const ATTRIBUTES: &[(&str, &str, Kind)] = &[
    ("unique_id", "Unique identifier", Kind::One),
    ("unique_id_type", "Unique identifier type", Kind::IdType),
    ("distinguished_name", "Distinguished name", Kind::One),
    ("container_name", "Container name", Kind::List),
    ("security_group_name", "Security group name", Kind::One),
    ("username", "Username (then its backup)", Kind::List),
    ("first_name", "First name", Kind::One),
    ("last_name", "Last name", Kind::One),
    ("email", "Email address", Kind::One),
    ("user_group", "User group", Kind::One),
    ("description", "Description", Kind::One),
    ("phone_call_language", "Phone call language", Kind::One),
    ("text_message_language", "Text message language", Kind::One),
    ("mobile_app_language", "Mobile app language", Kind::One),
    ("oath_token_language", "OATH token language", Kind::One),
    ("business_phone", "Business phone", Kind::One),
    ("home_phone", "Home phone", Kind::One),
    ("pager", "Pager", Kind::One),
    ("mobile_phone", "Mobile phone", Kind::One),
    ("fax", "Fax", Kind::One),
    ("ip_phone", "IP phone", Kind::One),
    ("custom_phone", "Custom", Kind::One),
    ("extension", "Extension", Kind::One),
];

const ID_TYPES: &[&str] = &["guid", "byte-array", "string"];

/// The attribute defaults of a schema: the seed's (Active Directory / ADAM),
/// or the usual OpenLDAP `inetOrgPerson` ones.
pub(crate) fn attribute_defaults(schema: &str) -> Attributes {
    match schema {
        "openldap" => Attributes {
            unique_id: "entryUUID".into(),
            unique_id_type: UniqueIdType::String,
            distinguished_name: "entryDN".into(),
            container_name: AttrList(vec!["ou".into(), "cn".into()]),
            security_group_name: "cn".into(),
            username: AttrList(vec!["uid".into()]),
            ip_phone: String::new(),
            ..Attributes::default()
        },
        _ => Attributes::default(),
    }
}

/// The attributes as text by key (lists joined by `;`).
fn attribute_texts(a: &Attributes) -> Vec<(String, String)> {
    let Ok(Value::Table(t)) = Value::try_from(a) else {
        return Vec::new();
    };
    ATTRIBUTES
        .iter()
        .map(|(key, _, _)| {
            let text = match t.get(*key) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(v)) => v
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(";"),
                _ => String::new(),
            };
            (key.to_string(), text)
        })
        .collect()
}

fn attribute_value<'a>(values: &'a [(String, String)], key: &str) -> &'a str {
    values
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

async fn attributes_page(
    app: &App,
    admin: &Admin,
    status: StatusCode,
    extra: &str,
    typed: Option<&[(String, String)]>,
) -> Response {
    let active = match load_for_page(app, admin, "Attributes", "/attributes", extra).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let current = attribute_texts(&active.config.attributes);
    let values = typed.unwrap_or(&current);
    let csrf = csrf_field(admin);
    let version = active.version;
    let mut rows = String::new();
    for (key, label, kind) in ATTRIBUTES {
        let v = attribute_value(values, key);
        let input = match kind {
            Kind::IdType => format!(
                r#"<select name="{key}">{}</select>"#,
                options(ID_TYPES, v, None)
            ),
            _ => format!(r#"<input name="{key}" size="40" value="{}">"#, esc(v)),
        };
        let hint = match kind {
            Kind::List => " names separated by ;",
            _ => "",
        };
        rows.push_str(&format!(
            "<tr><th>{label}</th><td>{input}{hint}</td><td><code>attributes.{key}</code></td></tr>"
        ));
    }
    let schema = schema_of(&active.config);
    let body = format!(
        r#"{extra}<p>The directory attribute each MFA user field is read from (names as in the directory schema; blank: not mapped).</p>
<form method="post" action="/attributes" id="attributes-form">{csrf}<input type="hidden" name="version" value="{version}">
<table>{rows}</table>
<p><button type="submit" id="save-attributes">Save</button></p></form>
<h2>Restore Defaults</h2>
<form method="post" action="/attributes/defaults">{csrf}<input type="hidden" name="version" value="{version}">
<select name="schema">{schemas}</select> <button type="submit" id="attributes-defaults">Restore Defaults</button></form>
<p>active-directory: the seed's defaults (Active Directory or ADAM schema); openldap: entryUUID (string), entryDN, uid and the inetOrgPerson attributes.</p>"#,
        schemas = options(SCHEMAS, schema, None),
    );
    (
        status,
        page("Attributes", Some(admin), "/attributes", &body),
    )
        .into_response()
}

pub(crate) async fn attributes_get(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
) -> Response {
    attributes_page(&app, &admin, StatusCode::OK, "", None).await
}

pub(crate) async fn attributes_save(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let field = |k: &str| {
        form.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    if let Some(r) = csrf_refusal(&admin, &field("csrf")) {
        return r;
    }
    let typed: Vec<(String, String)> = ATTRIBUTES
        .iter()
        .map(|(k, _, _)| (k.to_string(), field(k)))
        .collect();
    let saved = save_edit(&app, &admin, &field("version"), "Attributes", |t| {
        let a = table_mut(t, "attributes", "attributes")?;
        for (key, _, kind) in ATTRIBUTES {
            let v = attribute_value(&typed, key).trim().to_string();
            let value = match kind {
                Kind::List => Value::Array(
                    v.split(';')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| Value::String(s.to_string()))
                        .collect(),
                ),
                _ => Value::String(v),
            };
            a.insert(key.to_string(), value);
        }
        Ok(())
    })
    .await;
    match saved {
        Err(r) => r,
        Ok(Saved::Stored(msg)) => attributes_page(&app, &admin, StatusCode::OK, &msg, None).await,
        Ok(Saved::Refused(status, msg)) => {
            attributes_page(&app, &admin, status, &msg, Some(&typed)).await
        }
    }
}

pub(crate) async fn attributes_defaults(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Form(form): Form<DefaultsForm>,
) -> Response {
    if let Some(r) = csrf_refusal(&admin, &form.csrf) {
        return r;
    }
    if !SCHEMAS.contains(&form.schema.as_str()) {
        let msg = errors_html(&[format!(
            "schema: {:?} is not active-directory or openldap",
            form.schema
        )]);
        return attributes_page(&app, &admin, StatusCode::UNPROCESSABLE_ENTITY, &msg, None).await;
    }
    let defaults = attribute_defaults(&form.schema);
    let what = format!("Default attributes ({})", form.schema);
    let saved = save_edit(&app, &admin, &form.version, &what, |t| {
        let v = Value::try_from(&defaults).map_err(|e| vec![format!("attributes: {e}")])?;
        t.insert("attributes".into(), v);
        Ok(())
    })
    .await;
    match saved {
        Err(r) => r,
        Ok(Saved::Stored(msg)) => attributes_page(&app, &admin, StatusCode::OK, &msg, None).await,
        Ok(Saved::Refused(status, msg)) => attributes_page(&app, &admin, status, &msg, None).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_attribute_key_is_on_the_form() {
        let Ok(Value::Table(t)) = Value::try_from(Attributes::default()) else {
            panic!("attributes do not serialize to a table");
        };
        let mut keys: Vec<&str> = t.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut form: Vec<&str> = ATTRIBUTES.iter().map(|(k, _, _)| *k).collect();
        form.sort_unstable();
        assert_eq!(keys, form);
    }

    #[test]
    fn defaults_by_schema() {
        assert_eq!(
            attribute_defaults("active-directory"),
            Attributes::default()
        );
        let o = attribute_defaults("openldap");
        assert_eq!(o.unique_id, "entryUUID");
        assert_eq!(o.unique_id_type, UniqueIdType::String);
        assert_eq!(o.username.0, vec!["uid".to_string()]);
        let texts = attribute_texts(&Attributes::default());
        assert_eq!(
            attribute_value(&texts, "username"),
            "userPrincipalName;sAMAccountName"
        );
        assert_eq!(attribute_value(&texts, "unique_id_type"), "guid");
    }
}

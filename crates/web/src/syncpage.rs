//! The Synchronization page (`/sync`, the seed's Synchronization tab): the
//! `[sync]` settings and the ordered list of synchronization items with Add,
//! Edit, Remove, Move Up and Move Down.
//!
//! Every change edits the STORED text of the active configuration as a
//! `toml::Table` (so inline passwords and every other key survive; comments
//! and key order do not), validates the result with
//! `mfasync_core::config::parse` exactly as `config apply` does, and stores it
//! through `Backend::config_put` as a new version. On any problem nothing is
//! stored and the problems are listed by key path. Each form carries the
//! version it was rendered from: a change against an older version is refused
//! (409) so that an index never points at the wrong item.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use mfasync_core::config::{Config, SyncItem};
use serde::Deserialize;
use toml::{Table, Value};

use crate::auth::{csrf_refusal, Admin};
use crate::html::{csrf_field, esc, notice, page};
use crate::portal::db_error;
use crate::App;

const KINDS: &[&str] = &["container", "security-group"];
const WHEN_REMOVED: &[&str] = &["disable", "remove", "keep"];
const METHODS: &[&str] = &["phone-call", "text-message", "mobile-app", "oath-token"];
const PHONES: &[&str] = &["business", "home", "pager", "mobile", "fax", "ip", "custom"];

/// The active configuration: its version (0 when none), stored text as a
/// table, and the validated value.
pub(crate) struct Active {
    pub(crate) version: i64,
    pub(crate) table: Table,
    pub(crate) config: Config,
}

pub(crate) enum LoadError {
    Db(String),
    Invalid(String),
}

pub(crate) async fn load(app: &App) -> Result<Active, LoadError> {
    let stored = app
        .store
        .active_config()
        .await
        .map_err(|e| LoadError::Db(e.to_string()))?;
    let (version, text) = match &stored {
        Some(v) => (v.version, v.toml.as_str()),
        None => (0, ""),
    };
    let table: Table = text.parse().map_err(|_| {
        LoadError::Invalid(format!(
            "The stored configuration version {version} is not valid TOML; fix it on the Settings page."
        ))
    })?;
    let config = mfasync_core::config::parse(text).map_err(|errors| {
        LoadError::Invalid(format!(
            "The stored configuration version {version} no longer validates ({} problem(s)); fix it on the Settings page.",
            errors.len()
        ))
    })?;
    Ok(Active {
        version,
        table,
        config,
    })
}

/// `load` for a page that shows the active configuration: on a database
/// error the error page, when the stored text no longer loads the page
/// `title` (nav `nav`) with `extra` and the problem, as 409.
pub(crate) async fn load_for_page(
    app: &App,
    admin: &Admin,
    title: &str,
    nav: &str,
    extra: &str,
) -> Result<Active, Response> {
    match load(app).await {
        Ok(a) => Ok(a),
        Err(LoadError::Db(e)) => Err(db_error(Some(admin), e)),
        Err(LoadError::Invalid(m)) => {
            let body = format!("{extra}{}", notice("error", &m));
            Err((StatusCode::CONFLICT, page(title, Some(admin), nav, &body)).into_response())
        }
    }
}

/// Serialized enum value ("security-group").
pub(crate) fn enum_str<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// An item's fields as the Add / Edit forms post them.
#[derive(Deserialize, Default, Clone)]
#[serde(default)]
pub(crate) struct ItemForm {
    csrf: String,
    version: String,
    kind: String,
    dn: String,
    include_nested: Option<String>,
    when_removed: String,
    user_enabled: Option<String>,
    method: String,
    phone: String,
    backup_phone: String,
    country_code: String,
    language: String,
    welcome_email: Option<String>,
}

impl ItemForm {
    fn from_item(it: &SyncItem) -> ItemForm {
        ItemForm {
            kind: enum_str(&it.kind),
            dn: it.dn.clone(),
            include_nested: it.include_nested.then(|| "true".into()),
            when_removed: enum_str(&it.when_removed),
            user_enabled: it.user.enabled.then(|| "true".into()),
            method: enum_str(&it.user.method),
            phone: enum_str(&it.user.phone),
            backup_phone: it
                .user
                .backup_phone
                .as_ref()
                .map(enum_str)
                .unwrap_or_default(),
            country_code: it.user.country_code.clone(),
            language: it.user.language.clone(),
            welcome_email: it.user.welcome_email.then(|| "true".into()),
            ..ItemForm::default()
        }
    }

    fn new_item() -> ItemForm {
        let mut f = ItemForm::from_item(&SyncItem {
            kind: Default::default(),
            dn: String::new(),
            include_nested: true,
            when_removed: Default::default(),
            user: Default::default(),
            id: None,
        });
        f.dn.clear();
        f
    }

    /// The item as a TOML table; `parse` judges every value.
    fn to_table(&self) -> Table {
        let s = |v: &str| Value::String(v.trim().to_string());
        let mut user = Table::new();
        user.insert(
            "enabled".into(),
            Value::Boolean(self.user_enabled.is_some()),
        );
        user.insert("method".into(), s(&self.method));
        user.insert("phone".into(), s(&self.phone));
        if !self.backup_phone.trim().is_empty() {
            user.insert("backup_phone".into(), s(&self.backup_phone));
        }
        user.insert("country_code".into(), s(&self.country_code));
        user.insert("language".into(), s(&self.language));
        user.insert(
            "welcome_email".into(),
            Value::Boolean(self.welcome_email.is_some()),
        );
        let mut t = Table::new();
        t.insert("kind".into(), s(&self.kind));
        t.insert("dn".into(), s(&self.dn));
        t.insert(
            "include_nested".into(),
            Value::Boolean(self.include_nested.is_some()),
        );
        t.insert("when_removed".into(), s(&self.when_removed));
        t.insert("user".into(), Value::Table(user));
        t
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct SettingsForm {
    csrf: String,
    version: String,
    enabled: Option<String>,
    interval: String,
    remove_deleted_users: Option<String>,
    always_full: Option<String>,
    approval: Option<String>,
    approval_threshold: String,
    /// Who is emailed when removals are held: addresses, one per line.
    notify: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct ActionForm {
    csrf: String,
    version: String,
}

pub(crate) fn options(all: &[&str], selected: &str, none: Option<&str>) -> String {
    let mut out = String::new();
    if let Some(label) = none {
        out.push_str(&format!(
            r#"<option value=""{}>{}</option>"#,
            if selected.is_empty() { " selected" } else { "" },
            esc(label)
        ));
    }
    for v in all {
        out.push_str(&format!(
            r#"<option value="{v}"{}>{v}</option>"#,
            if *v == selected { " selected" } else { "" }
        ));
    }
    out
}

pub(crate) fn checked(b: bool) -> &'static str {
    if b {
        " checked"
    } else {
        ""
    }
}

/// The Add / Edit form for one item.
fn item_form_html(admin: &Admin, version: i64, action: &str, f: &ItemForm, button: &str) -> String {
    format!(
        r#"<form method="post" action="{action}" class="item">{csrf}<input type="hidden" name="version" value="{version}">
<table>
<tr><th>Kind</th><td><select name="kind">{kinds}</select></td></tr>
<tr><th>Distinguished name</th><td><input name="dn" size="60" value="{dn}" required></td></tr>
<tr><th>Include nested</th><td><input type="checkbox" name="include_nested" value="true"{nested}> sub-containers, or nested groups</td></tr>
<tr><th>When removed</th><td><select name="when_removed">{when}</select> users no longer a member of this item</td></tr>
<tr><th>User enabled</th><td><input type="checkbox" name="user_enabled" value="true"{uenabled}></td></tr>
<tr><th>Method</th><td><select name="method">{methods}</select></td></tr>
<tr><th>Phone</th><td><select name="phone">{phones}</select></td></tr>
<tr><th>Backup phone</th><td><select name="backup_phone">{backups}</select></td></tr>
<tr><th>Country code</th><td><input name="country_code" size="4" value="{cc}"></td></tr>
<tr><th>Language</th><td><input name="language" size="6" value="{lang}"></td></tr>
<tr><th>Welcome email</th><td><input type="checkbox" name="welcome_email" value="true"{welcome}></td></tr>
</table>
<p><button type="submit">{button}</button></p></form>"#,
        csrf = csrf_field(admin),
        kinds = options(KINDS, &f.kind, None),
        dn = esc(&f.dn),
        nested = checked(f.include_nested.is_some()),
        when = options(WHEN_REMOVED, &f.when_removed, None),
        uenabled = checked(f.user_enabled.is_some()),
        methods = options(METHODS, &f.method, None),
        phones = options(PHONES, &f.phone, None),
        backups = options(PHONES, &f.backup_phone, Some("(none)")),
        cc = esc(&f.country_code),
        lang = esc(&f.language),
        welcome = checked(f.welcome_email.is_some()),
    )
}

/// The "Synchronize Now" prompt, when the items differ from those of the last
/// full synchronization (or none has run).
async fn prompt(app: &App, admin: &Admin, cfg: &Config) -> Result<String, String> {
    let wm = app.store.watermark().await.map_err(|e| e.to_string())?;
    let text = match wm {
        Some(w) if w.items_fingerprint != cfg.items_fingerprint() => {
            "Sync items changed since the last full synchronization"
        }
        Some(w) if w.mapping_fingerprint != cfg.mapping_fingerprint() => {
            "The attribute mapping or filters changed since the last full synchronization"
        }
        Some(_) => return Ok(String::new()),
        None => "No full synchronization has run with these sync items yet",
    };
    Ok(format!(
        r#"<div class="notice error" id="sync-prompt"><strong>{text}</strong> — a full synchronization is needed.
<form method="post" action="/sync" class="inline">{csrf}<input type="hidden" name="full" value="true"><input type="hidden" name="from" value="sync"><button type="submit" id="prompt-sync-now">Synchronize Now</button></form></div>"#,
        csrf = csrf_field(admin)
    ))
}

/// The whole page. `add` prefills the Add form (after a refused add).
pub(crate) async fn sync_page(
    app: &App,
    admin: &Admin,
    status: StatusCode,
    extra: &str,
    add: Option<&ItemForm>,
) -> Response {
    let active = match load_for_page(app, admin, "Synchronization", "/sync", extra).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let prompt = match prompt(app, admin, &active.config).await {
        Ok(p) => p,
        Err(e) => return db_error(Some(admin), e),
    };
    let csrf = csrf_field(admin);
    let version = active.version;
    let s = &active.config.sync;
    let hidden = format!(r#"<input type="hidden" name="version" value="{version}">"#);
    let settings = format!(
        r#"<form method="post" action="/sync/settings" id="sync-settings">{csrf}{hidden}
<p><label><input type="checkbox" name="enabled" value="true"{enabled}> Enable synchronization</label></p>
<p><label>Synchronize every <input name="interval" size="8" value="{interval}"></label> (such as 5m, 1h)</p>
<p><label><input type="checkbox" name="remove_deleted_users" value="true"{remove}> Remove users no longer in the directory</label></p>
<p><label><input type="checkbox" name="always_full" value="true"{full}> Always perform a full synchronization</label></p>
<p><label><input type="checkbox" name="approval" value="true"{approval}> Require approval when more than</label> <input name="approval_threshold" size="4" value="{threshold}"> users will be disabled or removed (1 to 999)</p>
<p><label>Email these addresses when removals wait for approval (one per line; needs [smtp]):<br><textarea name="notify" rows="3" cols="50" spellcheck="false">{notify}</textarea></label></p>
<p><button type="submit">Save settings</button></p></form>"#,
        enabled = checked(s.enabled),
        interval = esc(&s.interval),
        remove = checked(s.remove_deleted_users),
        full = checked(s.always_full),
        approval = checked(s.approval_threshold.is_some()),
        threshold = s.approval_threshold.unwrap_or(5),
        notify = esc(&s.notify.join("\n")),
    );
    let n = s.items.len();
    let mut rows = String::new();
    for (i, it) in s.items.iter().enumerate() {
        let button = |action: &str, label: &str, enabled: bool| {
            format!(
                r#"<form method="post" action="/sync/items/{i}/{action}" class="inline">{csrf}{hidden}<button type="submit"{}>{label}</button></form>"#,
                if enabled { "" } else { " disabled" }
            )
        };
        rows.push_str(&format!(
            r#"<tr><td>{num}</td><td>{kind}</td><td>{dn}</td><td class="item-id">{id}</td><td>{nested}</td><td>{when}</td><td>{method}</td><td>{phone}</td><td>{backup}</td><td>{cc}</td><td>{lang}</td><td><a href="/sync/items/{i}/edit">Edit</a> {up} {down} {remove}</td></tr>"#,
            num = i + 1,
            kind = enum_str(&it.kind),
            dn = esc(&it.dn),
            // the id the item is found by after a rename (docs/configuration.md)
            id = esc(it.id.as_deref().unwrap_or("")),
            nested = if it.include_nested { "yes" } else { "no" },
            when = enum_str(&it.when_removed),
            method = enum_str(&it.user.method),
            phone = enum_str(&it.user.phone),
            backup = it.user.backup_phone.as_ref().map(enum_str).unwrap_or_default(),
            cc = esc(&it.user.country_code),
            lang = esc(&it.user.language),
            up = button("up", "Move Up", i > 0),
            down = button("down", "Move Down", i + 1 < n),
            remove = button("remove", "Remove", true),
        ));
    }
    let list = if n == 0 {
        r#"<p id="no-items">No synchronization items yet: add at least one, then Synchronize Now.</p>"#
            .to_string()
    } else {
        format!(
            r#"<table id="sync-items"><tr><th>#</th><th>Kind</th><th>DN</th><th>Id</th><th>Nested</th><th>When removed</th><th>Method</th><th>Phone</th><th>Backup phone</th><th>Country code</th><th>Language</th><th></th></tr>{rows}</table>"#
        )
    };
    let fresh = ItemForm::new_item();
    let add_form = item_form_html(admin, version, "/sync/items", add.unwrap_or(&fresh), "Add");
    let body = format!(
        r#"{extra}{prompt}<p>Configuration version {shown}. Each change is validated and stored as a new configuration version.</p>
<h2>Settings</h2>
{settings}
<h2>Synchronization items</h2>
<p>In priority order: a user's settings come from the first item that holds it. A full synchronization is needed after items are added, edited, removed or reordered.</p>
{list}
<form method="post" action="/sync">{csrf}<input type="hidden" name="full" value="true"><input type="hidden" name="from" value="sync"><button type="submit" id="sync-now">Synchronize Now</button> (full)</form>
<h2 id="add">Add an item</h2>
<p>Type the DN, or choose it from the directory: <a href="/sync/browse?kind=container" id="browse-containers">containers</a> · <a href="/sync/browse?kind=security-group" id="browse-groups">security groups</a>.</p>
{add_form}"#,
        shown = if version == 0 {
            "none applied yet".to_string()
        } else {
            version.to_string()
        },
    );
    (status, page("Synchronization", Some(admin), "/sync", &body)).into_response()
}

/// `/sync?kind=..&dn=..`: the Add form prefilled with an item chosen on
/// `/sync/browse`.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct Prefill {
    kind: String,
    dn: String,
}

pub(crate) async fn sync_get(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    axum::extract::Query(pre): axum::extract::Query<Prefill>,
) -> Response {
    if pre.dn.is_empty() {
        return sync_page(&app, &admin, StatusCode::OK, "", None).await;
    }
    let mut f = ItemForm::new_item();
    f.dn = pre.dn;
    if KINDS.contains(&pre.kind.as_str()) {
        f.kind = pre.kind;
    }
    let msg = notice(
        "ok",
        &format!("{} chosen: check the settings below and press Add.", f.dn),
    );
    sync_page(&app, &admin, StatusCode::OK, &msg, Some(&f)).await
}

/// Entries listed on the browse page at most.
const BROWSE_LIMIT: usize = 5000;

/// The seed's container hierarchy and security group list: choose an item's
/// DN from the directory (query bind); each "Use" fills the Add form.
pub(crate) async fn browse(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    axum::extract::Query(pre): axum::extract::Query<Prefill>,
) -> Response {
    let kind = if pre.kind == "security-group" {
        "security-group"
    } else {
        "container"
    };
    let tabs = format!(
        r#"<p><a href="/sync">Back to Synchronization</a> · {} · {}</p>"#,
        if kind == "container" {
            "<strong>Containers</strong>".to_string()
        } else {
            r#"<a href="/sync/browse?kind=container">Containers</a>"#.to_string()
        },
        if kind == "security-group" {
            "<strong>Security groups</strong>".to_string()
        } else {
            r#"<a href="/sync/browse?kind=security-group">Security groups</a>"#.to_string()
        },
    );
    let body = match app.backend.directory_entries(kind, BROWSE_LIMIT).await {
        Err(e) => format!(
            "{tabs}{}",
            notice("error", &format!("The directory could not be read: {e}"))
        ),
        Ok(entries) if entries.is_empty() => format!(
            r#"{tabs}<p id="browse-empty">No {} found under the base DN with the configured filter.</p>"#,
            if kind == "container" {
                "containers"
            } else {
                "security groups"
            }
        ),
        Ok(entries) => {
            let min_depth = entries
                .iter()
                .map(|(dn, _)| dn_depth(dn))
                .min()
                .unwrap_or(0);
            let mut rows = String::new();
            for (dn, name) in &entries {
                let indent = if kind == "container" {
                    dn_depth(dn).saturating_sub(min_depth)
                } else {
                    0
                };
                rows.push_str(&format!(
                    r#"<tr><td class="depth{d}">{name}</td><td><code>{dn_text}</code></td><td><a href="/sync?kind={kind}&amp;dn={dn_url}" class="use">Use</a></td></tr>"#,
                    d = indent.min(8),
                    name = esc(name),
                    dn_text = esc(dn),
                    dn_url = crate::html::url_component(dn),
                ));
            }
            let more = if entries.len() >= BROWSE_LIMIT {
                notice(
                    "error",
                    &format!("Only the first {BROWSE_LIMIT} are listed; type the DN of others."),
                )
            } else {
                String::new()
            };
            format!(
                r#"{tabs}{more}<table id="browse"><tr><th>Name</th><th>DN</th><th></th></tr>{rows}</table>"#
            )
        }
    };
    page(
        "Choose a synchronization item",
        Some(&admin),
        "/sync",
        &body,
    )
    .into_response()
}

/// The number of RDNs of a DN (escaped commas aside).
fn dn_depth(dn: &str) -> usize {
    let mut n = 1;
    let mut escaped = false;
    for c in dn.chars() {
        match c {
            '\\' if !escaped => escaped = true,
            ',' if !escaped => n += 1,
            _ => escaped = false,
        }
    }
    n
}

async fn edit_page(
    app: &App,
    admin: &Admin,
    index: usize,
    status: StatusCode,
    extra: &str,
    form: Option<&ItemForm>,
) -> Response {
    let active = match load(app).await {
        Ok(a) => a,
        Err(LoadError::Db(e)) => return db_error(Some(admin), e),
        Err(LoadError::Invalid(m)) => {
            return sync_page(app, admin, StatusCode::CONFLICT, &notice("error", &m), None).await
        }
    };
    let Some(item) = active.config.sync.items.get(index) else {
        return sync_page(
            app,
            admin,
            StatusCode::NOT_FOUND,
            &notice("error", "No such synchronization item."),
            None,
        )
        .await;
    };
    let current = ItemForm::from_item(item);
    let body = format!(
        r#"{extra}<p><a href="/sync">Back to Synchronization</a></p>
<h2>Item {num}: {dn}</h2>{form}"#,
        num = index + 1,
        dn = esc(&item.dn),
        form = item_form_html(
            admin,
            active.version,
            &format!("/sync/items/{index}/save"),
            form.unwrap_or(&current),
            "Save"
        ),
    );
    (
        status,
        page("Edit synchronization item", Some(admin), "/sync", &body),
    )
        .into_response()
}

pub(crate) async fn item_edit(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Path(index): Path<usize>,
) -> Response {
    edit_page(&app, &admin, index, StatusCode::OK, "", None).await
}

/// Which page shows a refused change (with what was typed).
enum Back<'a> {
    Page,
    Add(&'a ItemForm),
    Edit(usize, &'a ItemForm),
}

pub(crate) fn errors_html(errors: &[String]) -> String {
    let items: String = errors
        .iter()
        .map(|e| format!("<li>{}</li>", esc(e)))
        .collect();
    format!(
        r#"<div class="notice error">Not saved: {} problem(s):<ul id="config-errors">{items}</ul></div>"#,
        errors.len()
    )
}

async fn refused(
    app: &App,
    admin: &Admin,
    status: StatusCode,
    msg: &str,
    back: Back<'_>,
) -> Response {
    match back {
        Back::Page => sync_page(app, admin, status, msg, None).await,
        Back::Add(f) => sync_page(app, admin, status, msg, Some(f)).await,
        Back::Edit(i, f) => edit_page(app, admin, i, status, msg, Some(f)).await,
    }
}

/// Load, check the form's version, edit the table, validate, store.
async fn change(
    app: &App,
    admin: &Admin,
    form_version: &str,
    back: Back<'_>,
    edit: impl FnOnce(&mut Table) -> Result<String, String>,
) -> Response {
    let active = match load(app).await {
        Ok(a) => a,
        Err(LoadError::Db(e)) => return db_error(Some(admin), e),
        Err(LoadError::Invalid(m)) => {
            return sync_page(app, admin, StatusCode::CONFLICT, &notice("error", &m), None).await
        }
    };
    if form_version.trim() != active.version.to_string() {
        let msg = notice(
            "error",
            &format!(
                "The configuration changed since this page was loaded (now version {}); nothing was saved. Check the page and try again.",
                active.version
            ),
        );
        return refused(app, admin, StatusCode::CONFLICT, &msg, back).await;
    }
    let mut table = active.table;
    let done = match edit(&mut table) {
        Ok(d) => d,
        Err(e) => {
            return refused(
                app,
                admin,
                StatusCode::UNPROCESSABLE_ENTITY,
                &errors_html(&[e]),
                back,
            )
            .await
        }
    };
    let text = match toml::to_string(&table) {
        Ok(t) => t,
        Err(e) => {
            let msg = errors_html(&[format!("(file): cannot write the configuration: {e}")]);
            return refused(app, admin, StatusCode::UNPROCESSABLE_ENTITY, &msg, back).await;
        }
    };
    if let Err(errors) = mfasync_core::config::parse(&text) {
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        return refused(
            app,
            admin,
            StatusCode::UNPROCESSABLE_ENTITY,
            &errors_html(&errors),
            back,
        )
        .await;
    }
    match app.backend.config_put(&text, &admin.username).await {
        Ok(version) => {
            tracing::info!(
                "synchronization settings: {done}; configuration version {version} applied by {}",
                admin.username
            );
            let msg = notice(
                "ok",
                &format!("{done}. Saved as configuration version {version}."),
            );
            sync_page(app, admin, StatusCode::OK, &msg, None).await
        }
        Err(errors) => {
            refused(
                app,
                admin,
                StatusCode::UNPROCESSABLE_ENTITY,
                &errors_html(&errors),
                back,
            )
            .await
        }
    }
}

fn sync_table(t: &mut Table) -> Result<&mut Table, String> {
    t.entry("sync")
        .or_insert_with(|| Value::Table(Table::new()))
        .as_table_mut()
        .ok_or_else(|| "sync: must be a table".to_string())
}

fn items_array(t: &mut Table) -> Result<&mut Vec<Value>, String> {
    sync_table(t)?
        .entry("items")
        .or_insert_with(|| Value::Array(Vec::new()))
        .as_array_mut()
        .ok_or_else(|| "sync.items: must be an array of tables".to_string())
}

/// An empty item list is left out rather than written as `items = []`.
fn tidy_items(t: &mut Table) {
    if let Some(Value::Table(s)) = t.get_mut("sync") {
        if s.get("items")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty)
        {
            s.remove("items");
        }
    }
}

pub(crate) async fn settings_save(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Form(form): Form<SettingsForm>,
) -> Response {
    if let Some(r) = csrf_refusal(&admin, &form.csrf) {
        return r;
    }
    let threshold = if form.approval.is_some() {
        match form.approval_threshold.trim().parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                let msg = errors_html(&[
                    "sync.approval_threshold: must be a whole number between 1 and 999".into(),
                ]);
                return sync_page(&app, &admin, StatusCode::UNPROCESSABLE_ENTITY, &msg, None).await;
            }
        }
    } else {
        None
    };
    change(&app, &admin, &form.version, Back::Page, |t| {
        let s = sync_table(t)?;
        s.insert("enabled".into(), Value::Boolean(form.enabled.is_some()));
        s.insert(
            "interval".into(),
            Value::String(form.interval.trim().to_string()),
        );
        s.insert(
            "remove_deleted_users".into(),
            Value::Boolean(form.remove_deleted_users.is_some()),
        );
        s.insert(
            "always_full".into(),
            Value::Boolean(form.always_full.is_some()),
        );
        match threshold {
            Some(n) => s.insert("approval_threshold".into(), Value::Integer(n)),
            None => s.remove("approval_threshold"),
        };
        let notify: Vec<Value> = form
            .notify
            .split(['\n', ',', ';'])
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| Value::String(a.to_string()))
            .collect();
        if notify.is_empty() {
            s.remove("notify");
        } else {
            s.insert("notify".into(), Value::Array(notify));
        }
        Ok("Synchronization settings saved".into())
    })
    .await
}

pub(crate) async fn item_add(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Form(form): Form<ItemForm>,
) -> Response {
    if let Some(r) = csrf_refusal(&admin, &form.csrf) {
        return r;
    }
    let item = form.to_table();
    change(&app, &admin, &form.version, Back::Add(&form), |t| {
        items_array(t)?.push(Value::Table(item));
        Ok(format!("Item {} added", form.dn.trim()))
    })
    .await
}

pub(crate) async fn item_save(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Path(index): Path<usize>,
    Form(form): Form<ItemForm>,
) -> Response {
    if let Some(r) = csrf_refusal(&admin, &form.csrf) {
        return r;
    }
    let item = form.to_table();
    change(&app, &admin, &form.version, Back::Edit(index, &form), |t| {
        let items = items_array(t)?;
        let slot = items
            .get_mut(index)
            .ok_or_else(|| format!("sync.items[{index}]: no such item"))?;
        *slot = Value::Table(item);
        Ok(format!("Item {} saved", index + 1))
    })
    .await
}

pub(crate) async fn item_action(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Path((index, action)): Path<(usize, String)>,
    Form(form): Form<ActionForm>,
) -> Response {
    if let Some(r) = csrf_refusal(&admin, &form.csrf) {
        return r;
    }
    if !matches!(action.as_str(), "up" | "down" | "remove") {
        return (StatusCode::NOT_FOUND, "no such action\n").into_response();
    }
    change(&app, &admin, &form.version, Back::Page, |t| {
        let items = items_array(t)?;
        let n = items.len();
        if index >= n {
            return Err(format!("sync.items[{index}]: no such item"));
        }
        let done = match action.as_str() {
            "up" if index > 0 => {
                items.swap(index - 1, index);
                format!("Item {} moved up", index + 1)
            }
            "down" if index + 1 < n => {
                items.swap(index, index + 1);
                format!("Item {} moved down", index + 1)
            }
            "remove" => {
                items.remove(index);
                format!("Item {} removed", index + 1)
            }
            _ => {
                return Err(format!(
                    "sync.items[{index}]: cannot move {action} from there"
                ))
            }
        };
        tidy_items(t);
        Ok(done)
    })
    .await
}

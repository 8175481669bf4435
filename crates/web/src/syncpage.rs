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

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use mfasync_core::config::{Config, SyncItem};
use serde::Deserialize;
use toml::{Table, Value};

use crate::auth::{csrf_refusal, Admin};
use crate::confedit::{load, load_for_page, not_saved, stale, LoadError};
use crate::kit::{choices, db_error, enum_str, render_with, Choice, Chrome, Flash};
use crate::App;

pub(crate) fn routes() -> Router<App> {
    Router::new()
        .route("/sync", get(sync_get).post(sync_now))
        .route("/sync/settings", post(settings_save))
        .route("/sync/browse", get(browse))
        .route("/sync/items", post(item_add))
        .route("/sync/items/{index}/edit", get(item_edit))
        .route("/sync/items/{index}/save", post(item_save))
        .route("/sync/items/{index}/{action}", post(item_action))
}

const KINDS: &[&str] = &["container", "security-group"];
const WHEN_REMOVED: &[&str] = &["disable", "remove", "keep"];
const METHODS: &[&str] = &["phone-call", "text-message", "mobile-app", "oath-token"];
const PHONES: &[&str] = &["business", "home", "pager", "mobile", "fax", "ip", "custom"];

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
            max_departures: None,
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
    /// Who gets each changing cycle's summary (`sync.summary`): the same.
    summary: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct ActionForm {
    csrf: String,
    version: String,
}

/// The Add / Edit form of one item as shown.
struct ItemView<'a> {
    version: i64,
    action: String,
    button: &'static str,
    f: &'a ItemForm,
    kinds: Vec<Choice>,
    when_removed: Vec<Choice>,
    methods: Vec<Choice>,
    phones: Vec<Choice>,
    backup_phones: Vec<Choice>,
}

impl<'a> ItemView<'a> {
    fn new(version: i64, action: String, f: &'a ItemForm, button: &'static str) -> ItemView<'a> {
        ItemView {
            version,
            action,
            button,
            kinds: choices(KINDS, &f.kind, None),
            when_removed: choices(WHEN_REMOVED, &f.when_removed, None),
            methods: choices(METHODS, &f.method, None),
            phones: choices(PHONES, &f.phone, None),
            backup_phones: choices(PHONES, &f.backup_phone, Some("(none)")),
            f,
        }
    }
}

/// The "Synchronize Now" prompt, when the items differ from those of the last
/// full synchronization (or none has run).
async fn prompt(app: &App, cfg: &Config) -> Result<Option<&'static str>, String> {
    let wm = app.store.watermark().await.map_err(|e| e.to_string())?;
    Ok(match wm {
        Some(w) if w.items_fingerprint != cfg.items_fingerprint() => {
            Some("Sync items changed since the last full synchronization")
        }
        Some(w) if w.mapping_fingerprint != cfg.mapping_fingerprint() => {
            Some("The attribute mapping or filters changed since the last full synchronization")
        }
        Some(_) => None,
        None => Some("No full synchronization has run with these sync items yet"),
    })
}

/// One row of the items table.
struct ItemRow {
    kind: String,
    dn: String,
    /// The id the item is found by after a rename (docs/configuration.md).
    id: String,
    nested: bool,
    when_removed: String,
    method: String,
    phone: String,
    backup_phone: String,
    country_code: String,
    language: String,
}

#[derive(Template)]
#[template(path = "sync.html")]
struct SyncPage<'a> {
    chrome: Chrome,
    flash: Vec<Flash>,
    prompt: Option<&'static str>,
    version: i64,
    s: &'a mfasync_core::config::Sync,
    /// As typed in the form: `5` or `2%`.
    threshold: String,
    notify: String,
    summary: String,
    items: Vec<ItemRow>,
    form: ItemView<'a>,
}

/// The whole page. `add` prefills the Add form (after a refused add).
pub(crate) async fn sync_page(
    app: &App,
    admin: &Admin,
    status: StatusCode,
    flash: Vec<Flash>,
    add: Option<&ItemForm>,
) -> Response {
    let active = match load_for_page(app, admin, "Synchronization", "/sync", &flash).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let prompt = match prompt(app, &active.config).await {
        Ok(p) => p,
        Err(e) => return db_error(Some(admin), e),
    };
    let s = &active.config.sync;
    let items = s
        .items
        .iter()
        .map(|it| ItemRow {
            kind: enum_str(&it.kind),
            dn: it.dn.clone(),
            id: it.id.clone().unwrap_or_default(),
            nested: it.include_nested,
            when_removed: enum_str(&it.when_removed),
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
        })
        .collect();
    let fresh = ItemForm::new_item();
    render_with(
        status,
        &SyncPage {
            chrome: Chrome::new("Synchronization", Some(admin), "/sync"),
            flash,
            prompt,
            version: active.version,
            s,
            threshold: s
                .approval_threshold
                .map_or("5".into(), |t| t.to_string().replace('"', "")),
            notify: s.notify.join("\n"),
            summary: s.summary.join("\n"),
            items,
            form: ItemView::new(
                active.version,
                "/sync/items".into(),
                add.unwrap_or(&fresh),
                "Add",
            ),
        },
    )
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
        return sync_page(&app, &admin, StatusCode::OK, Vec::new(), None).await;
    }
    let mut f = ItemForm::new_item();
    f.dn = pre.dn;
    if KINDS.contains(&pre.kind.as_str()) {
        f.kind = pre.kind;
    }
    let msg = Flash::ok(format!(
        "{} chosen: check the settings below and press Add.",
        f.dn
    ));
    sync_page(&app, &admin, StatusCode::OK, vec![msg], Some(&f)).await
}

/// Entries listed on the browse page at most.
const BROWSE_LIMIT: usize = 5000;

/// One directory entry on the browse page.
struct BrowseRow {
    name: String,
    dn: String,
    /// Indentation by DN depth (containers), 0 to 8.
    depth: usize,
}

#[derive(Template)]
#[template(path = "browse.html")]
struct BrowsePage {
    chrome: Chrome,
    kind: &'static str,
    error: Option<String>,
    rows: Vec<BrowseRow>,
    limit: usize,
}

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
    let (error, rows) = match app.backend.directory_entries(kind, BROWSE_LIMIT).await {
        Err(e) => (
            Some(format!("The directory could not be read: {e}")),
            Vec::new(),
        ),
        Ok(entries) => {
            let min_depth = entries
                .iter()
                .map(|(dn, _)| dn_depth(dn))
                .min()
                .unwrap_or(0);
            let rows = entries
                .into_iter()
                .map(|(dn, name)| BrowseRow {
                    depth: if kind == "container" {
                        dn_depth(&dn).saturating_sub(min_depth).min(8)
                    } else {
                        0
                    },
                    name,
                    dn,
                })
                .collect();
            (None, rows)
        }
    };
    render_with(
        StatusCode::OK,
        &BrowsePage {
            chrome: Chrome::new("Choose a synchronization item", Some(&admin), "/sync"),
            kind,
            error,
            rows,
            limit: BROWSE_LIMIT,
        },
    )
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

#[derive(Template)]
#[template(path = "sync_item.html")]
struct EditPage<'a> {
    chrome: Chrome,
    flash: Vec<Flash>,
    num: usize,
    dn: String,
    form: ItemView<'a>,
}

async fn edit_page(
    app: &App,
    admin: &Admin,
    index: usize,
    status: StatusCode,
    flash: Vec<Flash>,
    form: Option<&ItemForm>,
) -> Response {
    let active = match load(app).await {
        Ok(a) => a,
        Err(LoadError::Db(e)) => return db_error(Some(admin), e),
        Err(LoadError::Invalid(m)) => {
            return sync_page(
                app,
                admin,
                StatusCode::CONFLICT,
                vec![Flash::error(m)],
                None,
            )
            .await
        }
    };
    let Some(item) = active.config.sync.items.get(index) else {
        return sync_page(
            app,
            admin,
            StatusCode::NOT_FOUND,
            vec![Flash::error("No such synchronization item.")],
            None,
        )
        .await;
    };
    let current = ItemForm::from_item(item);
    render_with(
        status,
        &EditPage {
            chrome: Chrome::new("Edit synchronization item", Some(admin), "/sync"),
            flash,
            num: index + 1,
            dn: item.dn.clone(),
            form: ItemView::new(
                active.version,
                format!("/sync/items/{index}/save"),
                form.unwrap_or(&current),
                "Save",
            ),
        },
    )
}

pub(crate) async fn item_edit(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Path(index): Path<usize>,
) -> Response {
    edit_page(&app, &admin, index, StatusCode::OK, Vec::new(), None).await
}

/// Which page shows a refused change (with what was typed).
enum Back<'a> {
    Page,
    Add(&'a ItemForm),
    Edit(usize, &'a ItemForm),
}

async fn refused(
    app: &App,
    admin: &Admin,
    status: StatusCode,
    msg: Flash,
    back: Back<'_>,
) -> Response {
    match back {
        Back::Page => sync_page(app, admin, status, vec![msg], None).await,
        Back::Add(f) => sync_page(app, admin, status, vec![msg], Some(f)).await,
        Back::Edit(i, f) => edit_page(app, admin, i, status, vec![msg], Some(f)).await,
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
            return sync_page(
                app,
                admin,
                StatusCode::CONFLICT,
                vec![Flash::error(m)],
                None,
            )
            .await
        }
    };
    if form_version.trim() != active.version.to_string() {
        return refused(
            app,
            admin,
            StatusCode::CONFLICT,
            stale(active.version),
            back,
        )
        .await;
    }
    let mut table = active.table;
    let done = match edit(&mut table) {
        Ok(d) => d,
        Err(e) => {
            return refused(
                app,
                admin,
                StatusCode::UNPROCESSABLE_ENTITY,
                not_saved(vec![e]),
                back,
            )
            .await
        }
    };
    let text = match toml::to_string(&table) {
        Ok(t) => t,
        Err(e) => {
            let msg = not_saved(vec![format!("(file): cannot write the configuration: {e}")]);
            return refused(app, admin, StatusCode::UNPROCESSABLE_ENTITY, msg, back).await;
        }
    };
    if let Err(errors) = mfasync_core::config::parse(&text) {
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        return refused(
            app,
            admin,
            StatusCode::UNPROCESSABLE_ENTITY,
            not_saved(errors),
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
            let msg = Flash::ok(format!("{done}. Saved as configuration version {version}."));
            sync_page(app, admin, StatusCode::OK, vec![msg], None).await
        }
        Err(errors) => {
            refused(
                app,
                admin,
                StatusCode::UNPROCESSABLE_ENTITY,
                not_saved(errors),
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

/// The threshold typed in the form as a TOML value: a whole number, or a
/// percentage kept as text (`config::parse` checks both).
fn threshold_value(typed: &str) -> Option<Value> {
    let typed = typed.trim();
    if typed.ends_with('%') {
        return Some(Value::String(typed.to_string()));
    }
    typed.parse::<i64>().ok().map(Value::Integer)
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
        match threshold_value(&form.approval_threshold) {
            Some(v) => Some(v),
            None => {
                let msg = not_saved(vec![
                    "sync.approval_threshold: must be a whole number between 1 and 999 or a percentage such as 2%".into(),
                ]);
                return sync_page(
                    &app,
                    &admin,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    vec![msg],
                    None,
                )
                .await;
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
            Some(v) => s.insert("approval_threshold".into(), v),
            None => s.remove("approval_threshold"),
        };
        set_addresses(s, "notify", &form.notify);
        set_addresses(s, "summary", &form.summary);
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
        // the form does not show the item's departure budget: it is kept
        let budget = slot.get("max_departures").cloned();
        let mut item = item;
        if let Some(b) = budget {
            item.insert("max_departures".into(), b);
        }
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

#[derive(Deserialize, Default)]
#[serde(default)]
struct SyncForm {
    csrf: String,
    full: Option<String>,
    /// "sync": answer with the Synchronization page instead of the history.
    from: String,
}

async fn sync_now(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Form(form): Form<SyncForm>,
) -> Response {
    if let Some(r) = csrf_refusal(&admin, &form.csrf) {
        return r;
    }
    let full = form.full.as_deref() == Some("true");
    tracing::info!(
        "synchronization requested by {} (full: {full})",
        admin.username
    );
    let id = crate::jobs::start(&app, &admin, full, form.from == "sync");
    crate::jobs::redirect(id)
}

/// A `[sync]` list of email addresses from a text area (one per line, or
/// separated by `,` or `;`); the key is removed when none is left.
fn set_addresses(s: &mut Table, key: &str, text: &str) {
    let addresses: Vec<Value> = text
        .split(['\n', ',', ';'])
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| Value::String(a.to_string()))
        .collect();
    if addresses.is_empty() {
        s.remove(key);
    } else {
        s.insert(key.into(), Value::Array(addresses));
    }
}

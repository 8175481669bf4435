//! The seed's Filters and Attributes tabs as forms (`/filters`,
//! `/attributes`). Like every settings form (`confedit`), each save edits the STORED text of
//! the active configuration as a `toml::Table` (other keys and secrets are
//! kept), validates the result with `mfasync_core::config::parse` exactly as
//! `config apply` does, and stores it through `Backend::config_put` as a new,
//! audited version; on any problem nothing is stored and the problems are
//! listed by key path. A form posted against an older version is refused.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use mfasync_core::config::{AttrList, Attributes, Config, Filters, Schema, UniqueIdType};
use serde::Deserialize;
use toml::Value;

use crate::auth::{csrf_refusal, Admin};
use crate::confedit::{load_for_page, not_saved, save_edit, set_str, table_mut, Saved};
use crate::kit::{choices, render_with, Choice, Chrome, Flash};
use crate::App;

pub(crate) fn routes() -> Router<App> {
    Router::new()
        .route("/filters", get(filters_get).post(filters_save))
        .route("/filters/defaults", post(filters_defaults))
        .route("/attributes", get(attributes_get).post(attributes_save))
        .route("/attributes/defaults", post(attributes_defaults))
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

#[derive(Template)]
#[template(path = "filters.html")]
struct FiltersPage<'a> {
    chrome: Chrome,
    flash: Vec<Flash>,
    version: i64,
    f: &'a FiltersForm,
    defaults: Filters,
    schema_name: &'static str,
    schemas: Vec<Choice>,
}

async fn filters_page(
    app: &App,
    admin: &Admin,
    status: StatusCode,
    flash: Vec<Flash>,
    typed: Option<&FiltersForm>,
) -> Response {
    let active = match load_for_page(app, admin, "Filters", "/filters", &flash).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let current = FiltersForm::from_filters(&active.config.filters);
    let schema = Schema::of(&active.config);
    render_with(
        status,
        &FiltersPage {
            chrome: Chrome::new("Filters", Some(admin), "/filters"),
            flash,
            version: active.version,
            f: typed.unwrap_or(&current),
            defaults: schema.filters(),
            schema_name: schema.as_str(),
            schemas: choices(SCHEMAS, schema_of(&active.config), None),
        },
    )
}

pub(crate) async fn filters_get(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
) -> Response {
    filters_page(&app, &admin, StatusCode::OK, Vec::new(), None).await
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
        Ok(Saved::Stored(msg)) => filters_page(&app, &admin, StatusCode::OK, vec![msg], None).await,
        Ok(Saved::Refused(status, msg)) => {
            filters_page(&app, &admin, status, vec![msg], Some(&form)).await
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
        let msg = not_saved(vec![format!(
            "schema: {:?} is not active-directory or openldap",
            form.schema
        )]);
        return filters_page(
            &app,
            &admin,
            StatusCode::UNPROCESSABLE_ENTITY,
            vec![msg],
            None,
        )
        .await;
    };
    let what = format!("Default filters ({})", form.schema);
    let saved = save_edit(&app, &admin, &form.version, &what, |t| {
        t.insert("filters".into(), filters_values(&schema.filters())?);
        Ok(())
    })
    .await;
    match saved {
        Err(r) => r,
        Ok(Saved::Stored(msg)) => filters_page(&app, &admin, StatusCode::OK, vec![msg], None).await,
        Ok(Saved::Refused(status, msg)) => {
            filters_page(&app, &admin, status, vec![msg], None).await
        }
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

/// One row of the Attributes form.
struct AttributeRow {
    key: &'static str,
    label: &'static str,
    value: String,
    list: bool,
    /// The unique identifier type's select (None: a text field).
    id_types: Option<Vec<Choice>>,
}

#[derive(Template)]
#[template(path = "attributes.html")]
struct AttributesPage {
    chrome: Chrome,
    flash: Vec<Flash>,
    version: i64,
    rows: Vec<AttributeRow>,
    schemas: Vec<Choice>,
}

async fn attributes_page(
    app: &App,
    admin: &Admin,
    status: StatusCode,
    flash: Vec<Flash>,
    typed: Option<&[(String, String)]>,
) -> Response {
    let active = match load_for_page(app, admin, "Attributes", "/attributes", &flash).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let current = attribute_texts(&active.config.attributes);
    let values = typed.unwrap_or(&current);
    let rows = ATTRIBUTES
        .iter()
        .map(|(key, label, kind)| {
            let v = attribute_value(values, key);
            AttributeRow {
                key,
                label,
                value: v.to_string(),
                list: *kind == Kind::List,
                id_types: (*kind == Kind::IdType).then(|| choices(ID_TYPES, v, None)),
            }
        })
        .collect();
    render_with(
        status,
        &AttributesPage {
            chrome: Chrome::new("Attributes", Some(admin), "/attributes"),
            flash,
            version: active.version,
            rows,
            schemas: choices(SCHEMAS, schema_of(&active.config), None),
        },
    )
}

pub(crate) async fn attributes_get(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
) -> Response {
    attributes_page(&app, &admin, StatusCode::OK, Vec::new(), None).await
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
        Ok(Saved::Stored(msg)) => {
            attributes_page(&app, &admin, StatusCode::OK, vec![msg], None).await
        }
        Ok(Saved::Refused(status, msg)) => {
            attributes_page(&app, &admin, status, vec![msg], Some(&typed)).await
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
        let msg = not_saved(vec![format!(
            "schema: {:?} is not active-directory or openldap",
            form.schema
        )]);
        return attributes_page(
            &app,
            &admin,
            StatusCode::UNPROCESSABLE_ENTITY,
            vec![msg],
            None,
        )
        .await;
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
        Ok(Saved::Stored(msg)) => {
            attributes_page(&app, &admin, StatusCode::OK, vec![msg], None).await
        }
        Ok(Saved::Refused(status, msg)) => {
            attributes_page(&app, &admin, status, vec![msg], None).await
        }
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

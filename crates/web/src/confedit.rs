//! The kit of the pages that edit the configuration (Settings, SMTP,
//! Filters, Attributes, Synchronization): load the active configuration's
//! STORED text as a `toml::Table` (so inline passwords and every other key
//! survive), edit it, validate the result with `mfasync_core::config::parse`
//! exactly as `config apply` does, and store it through `Backend::config_put`
//! as a new, audited version. A form posted against an older version is
//! refused; on any problem nothing is stored and the problems are listed by
//! key path.

use axum::http::StatusCode;
use axum::response::Response;
use mfasync_core::config::Config;
use toml::{Table, Value};

use crate::auth::Admin;
use crate::kit::{db_error, message, Flash};
use crate::App;

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
/// `title` (nav `nav`) with `flash` and the problem, as 409.
pub(crate) async fn load_for_page(
    app: &App,
    admin: &Admin,
    title: &str,
    nav: &str,
    flash: &[Flash],
) -> Result<Active, Response> {
    match load(app).await {
        Ok(a) => Ok(a),
        Err(LoadError::Db(e)) => Err(db_error(Some(admin), e)),
        Err(LoadError::Invalid(m)) => {
            let mut flash = flash.to_vec();
            flash.push(Flash::error(m));
            Err(message(
                StatusCode::CONFLICT,
                title,
                Some(admin),
                nav,
                flash,
            ))
        }
    }
}

/// Configuration problems, as a refused change shows them.
pub(crate) fn not_saved(errors: Vec<String>) -> Flash {
    Flash::problems("Not saved", errors)
}

/// The refusal of a form rendered from an older version.
pub(crate) fn stale(now: i64) -> Flash {
    Flash::error(format!(
        "The configuration changed since this page was loaded (now version {now}); nothing was saved. Check the page and try again."
    ))
}

/// What a save came to.
pub(crate) enum Saved {
    /// Stored: the notice to show.
    Stored(Flash),
    /// Not stored: the status and the problems.
    Refused(StatusCode, Flash),
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
            return Ok(Saved::Refused(StatusCode::CONFLICT, Flash::error(m)))
        }
    };
    if form_version.trim() != active.version.to_string() {
        return Ok(Saved::Refused(StatusCode::CONFLICT, stale(active.version)));
    }
    let mut table = active.table;
    if let Err(errors) = edit(&mut table) {
        return Ok(Saved::Refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            not_saved(errors),
        ));
    }
    let text = match toml::to_string(&table) {
        Ok(t) => t,
        Err(e) => {
            return Ok(Saved::Refused(
                StatusCode::UNPROCESSABLE_ENTITY,
                not_saved(vec![format!("(file): cannot write the configuration: {e}")]),
            ))
        }
    };
    if let Err(errors) = mfasync_core::config::parse(&text) {
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        return Ok(Saved::Refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            not_saved(errors),
        ));
    }
    match app.backend.config_put(&text, &admin.username).await {
        Ok(version) => {
            tracing::info!(
                "{what} saved: configuration version {version} applied by {}",
                admin.username
            );
            Ok(Saved::Stored(Flash::ok(format!(
                "{what} saved as configuration version {version}."
            ))))
        }
        Err(errors) => Ok(Saved::Refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            not_saved(errors),
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

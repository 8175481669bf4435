//! The portal's kit, shared by every page: the layout (`templates/layout.html`)
//! a page renders into, notices, form pieces (select options, CSRF), readable
//! times, the error page, the stylesheet and the favicon. Pages import the
//! kit; the kit imports no page. HTML is written only in templates, which
//! askama escapes; no inline script or style (the CSP is `default-src 'self'`).

use askama::Template;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};

use crate::auth::Admin;

/// Every page's frame: the title, and for a signed-in administrator the
/// navigation (with `active` highlighted) and the sign-out form.
pub(crate) struct Chrome {
    pub(crate) title: String,
    pub(crate) nav: Vec<NavLink>,
    pub(crate) session: Option<Session>,
}

pub(crate) struct NavLink {
    pub(crate) href: &'static str,
    pub(crate) label: &'static str,
    pub(crate) active: bool,
}

pub(crate) struct Session {
    pub(crate) username: String,
    pub(crate) csrf: String,
}

const NAV: &[(&str, &str)] = &[
    ("/", "Overview"),
    ("/settings", "Settings"),
    ("/filters", "Filters"),
    ("/attributes", "Attributes"),
    ("/sync", "Synchronization"),
    ("/users", "Users"),
    ("/recycle-bin", "Recycle bin"),
    ("/approvals", "Approvals"),
    ("/history", "Sync history"),
    ("/outbox", "Outbox"),
    ("/tokens", "API tokens"),
    ("/servers", "Servers"),
];

impl Chrome {
    pub(crate) fn new(title: impl Into<String>, admin: Option<&Admin>, active: &str) -> Chrome {
        let (nav, session) = match admin {
            Some(a) => (
                NAV.iter()
                    .map(|(href, label)| NavLink {
                        href,
                        label,
                        active: *href == active,
                    })
                    .collect(),
                Some(Session {
                    username: a.username.clone(),
                    csrf: a.csrf.clone(),
                }),
            ),
            None => (Vec::new(), None),
        };
        Chrome {
            title: title.into(),
            nav,
            session,
        }
    }

    /// The session's CSRF token, for every form (`templates/csrf.html`).
    pub(crate) fn csrf(&self) -> &str {
        self.session.as_ref().map_or("", |s| s.csrf.as_str())
    }
}

/// A notice box above a page's content: `kind` is "ok", "error" or
/// "warning". `items` (when any) are listed under the text (with the id
/// `config-errors`: configuration problems by key path); `code` is a value to
/// copy (a new API token).
#[derive(Clone)]
pub(crate) struct Flash {
    pub(crate) kind: &'static str,
    pub(crate) text: String,
    pub(crate) items: Vec<String>,
    pub(crate) code: Option<String>,
}

impl Flash {
    pub(crate) fn ok(text: impl Into<String>) -> Flash {
        Flash::new("ok", text)
    }
    pub(crate) fn error(text: impl Into<String>) -> Flash {
        Flash::new("error", text)
    }
    fn new(kind: &'static str, text: impl Into<String>) -> Flash {
        Flash {
            kind,
            text: text.into(),
            items: Vec::new(),
            code: None,
        }
    }
    /// "Not saved: N problem(s):" and the problems.
    pub(crate) fn problems(lead: &str, errors: Vec<String>) -> Flash {
        Flash {
            kind: "error",
            text: format!("{lead}: {} problem(s):", errors.len()),
            items: errors,
            code: None,
        }
    }
}

/// The page of one or more notices only (errors, "no such ...").
#[derive(Template)]
#[template(path = "message.html")]
pub(crate) struct MessagePage {
    pub(crate) chrome: Chrome,
    pub(crate) flash: Vec<Flash>,
}

/// Render a page; a template that fails to render (it cannot, short of a
/// bug) is logged and answered 500.
pub(crate) fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!("template: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "page could not be rendered\n",
            )
                .into_response()
        }
    }
}

/// `render` with a status.
pub(crate) fn render_with(status: StatusCode, t: &impl Template) -> Response {
    let mut resp = render(t);
    if resp.status() == StatusCode::OK {
        *resp.status_mut() = status;
    }
    resp
}

/// A page of notices with a status.
pub(crate) fn message(
    status: StatusCode,
    title: &str,
    admin: Option<&Admin>,
    active: &str,
    flash: Vec<Flash>,
) -> Response {
    render_with(
        status,
        &MessagePage {
            chrome: Chrome::new(title, admin, active),
            flash,
        },
    )
}

/// The store could not be read: logged, and a page that says so.
pub(crate) fn db_error(admin: Option<&Admin>, e: impl std::fmt::Display) -> Response {
    tracing::error!("store: {e}");
    message(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Error",
        admin,
        "",
        vec![Flash::error(
            "The database could not be read; see the service log.",
        )],
    )
}

/// Escape a value for a URL query component (not HTML).
pub(crate) fn url_component(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One `<option>` of a select.
pub(crate) struct Choice {
    pub(crate) value: String,
    pub(crate) label: String,
    pub(crate) selected: bool,
}

/// The options of a select of fixed values, `selected` chosen; `none` adds a
/// first empty option with that label.
pub(crate) fn choices(all: &[&str], selected: &str, none: Option<&str>) -> Vec<Choice> {
    let mut out = Vec::new();
    if let Some(label) = none {
        out.push(Choice {
            value: String::new(),
            label: label.to_string(),
            selected: selected.is_empty(),
        });
    }
    out.extend(all.iter().map(|v| Choice {
        value: v.to_string(),
        label: v.to_string(),
        selected: *v == selected,
    }));
    out
}

/// Serialized enum value ("security-group").
pub(crate) fn enum_str<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A time as the portal shows it: to the second, UTC (`text`; the browser
/// shows it in its own time zone, `static/times.js`), and the full stored
/// text (`iso`) for the `title` and `datetime` attributes. A text that
/// is not an RFC 3339 time is shown as it is.
pub(crate) struct When {
    pub(crate) iso: String,
    pub(crate) text: String,
}

impl When {
    pub(crate) fn of(stored: &str) -> When {
        use time::format_description::well_known::Rfc3339;
        let text = time::OffsetDateTime::parse(stored, &Rfc3339)
            .ok()
            .and_then(|t| {
                t.to_offset(time::UtcOffset::UTC)
                    .format(time::macros::format_description!(
                        "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
                    ))
                    .ok()
            })
            .unwrap_or_else(|| stored.to_string());
        When {
            iso: stored.to_string(),
            text,
        }
    }

    /// Milliseconds since the epoch (the outbox's times).
    pub(crate) fn of_ms(ms: i64) -> When {
        When::of(&mfasync_store::time_text(ms))
    }
}

const CSS: &str = include_str!("../static/style.css");
const FAVICON: &str = include_str!("../static/favicon.svg");
const TIMES_JS: &str = include_str!("../static/times.js");

pub(crate) async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        CSS,
    )
        .into_response()
}

/// Shows every `<time>` in the browser's time zone.
pub(crate) async fn times_script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        TIMES_JS,
    )
        .into_response()
}

pub(crate) async fn favicon() -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "max-age=86400"),
        ],
        FAVICON,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_to_the_second() {
        let w = When::of("2026-12-06T22:54:41.378173927Z");
        assert_eq!(w.text, "2026-12-06 22:54:41 UTC");
        assert_eq!(w.iso, "2026-12-06T22:54:41.378173927Z");
        assert_eq!(When::of("running").text, "running");
        assert_eq!(url_component("a b/ü"), "a%20b%2F%C3%BC");
    }
}

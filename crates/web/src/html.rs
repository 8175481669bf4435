//! HTML building blocks: escaping, the page layout, the stylesheet. Every
//! value that comes from the directory, the store or the request goes through
//! [`esc`]. No inline script or style: the CSP is `default-src 'self'`.

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};

use crate::auth::Admin;

/// Escape text for HTML content and double-quoted attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escape a value for a URL query component.
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

/// The hidden CSRF field every form of a signed-in page carries.
pub(crate) fn csrf_field(admin: &Admin) -> String {
    format!(
        r#"<input type="hidden" name="csrf" value="{}">"#,
        esc(&admin.csrf)
    )
}

const NAV: &[(&str, &str)] = &[
    ("/", "Overview"),
    ("/settings", "Settings"),
    ("/filters", "Filters"),
    ("/attributes", "Attributes"),
    ("/sync", "Synchronization"),
    ("/users", "Users"),
    ("/approvals", "Approvals"),
    ("/history", "Sync history"),
    ("/outbox", "Outbox"),
    ("/tokens", "API tokens"),
    ("/servers", "Servers"),
];

/// A whole page. `body` is already HTML.
pub(crate) fn page(title: &str, admin: Option<&Admin>, active: &str, body: &str) -> Html<String> {
    let mut nav = String::new();
    if let Some(admin) = admin {
        nav.push_str("<nav>");
        for (href, label) in NAV {
            let class = if *href == active {
                r#" class="active""#
            } else {
                ""
            };
            nav.push_str(&format!(r#"<a href="{href}"{class}>{label}</a>"#));
        }
        nav.push_str(&format!(
            r#"<form method="post" action="/logout" class="logout">{}<span>{}</span> <button type="submit">Sign out</button></form></nav>"#,
            csrf_field(admin),
            esc(&admin.username)
        ));
        // Filled by `banner::approval_banner` while an approval is pending.
        nav.push_str(crate::banner::MARKER);
    }
    Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - mfasync</title>
<link rel="stylesheet" href="/static/style.css">
</head><body>
<header><strong>mfasync</strong> directory integration</header>
{nav}
<main><h1>{title}</h1>
{body}
</main></body></html>
"#,
        title = esc(title),
    ))
}

/// A notice box: `kind` is "ok" or "error".
pub(crate) fn notice(kind: &str, text: &str) -> String {
    format!(r#"<p class="notice {kind}">{}</p>"#, esc(text))
}

const CSS: &str = r#"body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#f6f7f9}
header{background:#1f3a5f;color:#fff;padding:.6em 1em}
nav{display:flex;flex-wrap:wrap;gap:.2em;align-items:center;background:#e4e8ee;padding:.3em 1em}
nav a{padding:.3em .7em;text-decoration:none;color:#1f3a5f;border-radius:3px}
nav a.active{background:#1f3a5f;color:#fff}
nav form.logout{margin-left:auto}
main{padding:1em 2em;max-width:1200px}
table{border-collapse:collapse;background:#fff;margin:.5em 0}
th,td{border:1px solid #ccd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#eef1f5}
pre{background:#fff;border:1px solid #ccd;padding:.6em;overflow:auto}
textarea{width:100%;font-family:monospace}
.notice{padding:.5em 1em;border-radius:3px}
.ok{background:#e3f4e3;border:1px solid #8c8}
.error{background:#fbe4e4;border:1px solid #d88}
.warning{background:#fff6dd;border:1px solid #dc8}
.bad{color:#a00;font-weight:bold}
.good{color:#070;font-weight:bold}
form.inline{display:inline}
pre.diff .add{background:#e3f4e3}
pre.diff .del{background:#fbe4e4}
button{cursor:pointer}
svg.chart{background:#fff;border:1px solid #ccd;max-width:100%;height:auto}
.c-created{fill:#2e7d32}
.c-updated{fill:#1f5fa8}
.c-enabled{fill:#26a69a}
.c-disabled{fill:#ef8c00}
.c-removed{fill:#c62828}
.c-failed{fill:#888}
svg.chart .axis{stroke:#667}
svg.chart .label{font-size:11px;fill:#445}
svg.chart .end{text-anchor:end}
.legend svg{vertical-align:middle}
td.depth1{padding-left:1.6em}
td.depth2{padding-left:2.8em}
td.depth3{padding-left:4em}
td.depth4{padding-left:5.2em}
td.depth5{padding-left:6.4em}
td.depth6{padding-left:7.6em}
td.depth7{padding-left:8.8em}
td.depth8{padding-left:10em}
.login{max-width:22em;background:#fff;padding:1em 2em;border:1px solid #ccd}
.login label{display:block;margin:.6em 0}
.login input{width:100%}
.banner{background:#fff4d6;border-bottom:2px solid #e0a800;padding:.6em 1em}
.banner a{margin-left:.6em;font-weight:bold;color:#1f3a5f}
"#;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(
            esc(r#"<a href="x">O'Brien & co</a>"#),
            "&lt;a href=&quot;x&quot;&gt;O&#39;Brien &amp; co&lt;/a&gt;"
        );
        assert_eq!(url_component("a b/ü"), "a%20b%2F%C3%BC");
    }
}

//! The pending-approval banner (the seed: opening the UI prompts for the
//! pending approval). Every signed-in page carries [`MARKER`] under its
//! navigation (`templates/layout.html`); this middleware replaces it with a banner
//! naming the held counts and linking to the Approvals page while an
//! approval is pending, or with nothing.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

use askama::Template;

use crate::App;

/// Where `templates/layout.html` leaves room for the banner (signed-in pages only).
pub(crate) const MARKER: &str = "<!--approval-banner-->";

#[derive(Template)]
#[template(path = "banner.html")]
struct Banner<'a> {
    id: &'a str,
    disable: usize,
    remove: usize,
}

/// The banner for the newest pending approval: its disable and removal
/// counts (the users still undecided).
pub(crate) fn banner_html(approval: &mfasync_store::Approval) -> String {
    let count = |action: &str| approval.undecided().filter(|c| c.action == action).count();
    let banner = Banner {
        id: &approval.id,
        disable: count("disable"),
        remove: count("remove"),
    };
    banner.render().unwrap_or_else(|e| {
        tracing::warn!("approval banner: {e}");
        String::new()
    })
}

/// Fill the banner slot of an HTML page. A page without the slot (sign-in,
/// JSON, scripts) passes untouched; a store error leaves the slot empty (the
/// page itself still shows).
pub(crate) async fn approval_banner(State(app): State<App>, req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let is_html = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if !is_html {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    if !text.contains(MARKER) {
        return Response::from_parts(parts, Body::from(bytes));
    }
    let banner = match app
        .store
        .approvals(Some(mfasync_store::ApprovalStatus::Pending))
        .await
    {
        Ok(pending) => pending.first().map(banner_html).unwrap_or_default(),
        Err(e) => {
            tracing::warn!("pending approvals for the banner: {e}");
            String::new()
        }
    };
    let filled = text.replacen(MARKER, &banner, 1);
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(filled))
}

//! The OpenAPI document of the REST API, generated: each API handler carries
//! `#[utoipa::path]`, and `utoipa-axum`'s `routes!` registers a handler and
//! its documentation together, so the router and the document cannot differ
//! (tested by `openapi_document_matches_the_router` in tests/web.rs).

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Router;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::OpenApi as Document;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::App;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "mfasync REST API",
        version = "1",
        description = "Directory integration of the MFA server. Authenticate with `Authorization: Bearer TOKEN` (an API token created on the portal's API tokens page). JSON shapes are those of `mfasync --json` (docs/commands.md).",
    ),
    servers((url = "/")),
    security(("bearer" = [])),
    modifiers(&Bearer),
)]
struct ApiDoc;

/// The `bearer` security scheme the document's `security` names.
struct Bearer;

impl utoipa::Modify for Bearer {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The API routers and their document: the routes behind an API token (under
/// `/api/v1`) and the public ones (`/api/v1/openapi.json`, `/metrics`,
/// `/healthz`). Every route here comes from a documented handler.
pub(crate) fn routers() -> (Router<App>, Router<App>, Document) {
    let api = crate::api::routes()
        .merge(crate::servers::api_routes())
        .merge(crate::outbox::api_routes());
    let (protected, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/api/v1", api)
        .split_for_parts();
    let (public, public_doc) = OpenApiRouter::new()
        .routes(routes!(openapi_json))
        .routes(routes!(crate::metrics::render))
        .routes(routes!(healthz))
        .split_for_parts();
    let mut public_doc = public_doc;
    // served without a token: `security: []` overrides the document's bearer
    for item in public_doc.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            op.security = Some(Vec::new());
        }
    }
    doc.merge(public_doc);
    (protected, public, doc)
}

/// The document as served, built once.
pub fn document() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let (_, _, doc) = routers();
        serde_json::to_string_pretty(&doc).unwrap_or_else(|e| {
            tracing::error!("openapi document: {e}");
            "{}".to_string()
        })
    })
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    summary = "This document",
    responses((status = 200, description = "OpenAPI 3.1", body = Object)),
)]
pub(crate) async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], document()).into_response()
}

/// Liveness.
#[utoipa::path(
    get,
    path = "/healthz",
    summary = "Liveness",
    responses((status = 200, description = "ok", body = String, content_type = "text/plain")),
)]
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

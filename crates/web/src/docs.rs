//! Swagger UI for the OpenAPI document, at `/api/v1/docs/`. The Swagger UI
//! files are vendored in the `utoipa-swagger-ui` crate (feature `vendored`):
//! nothing is downloaded at build or run time. All of its scripts and styles
//! are files served from here, so the CSP stays `default-src 'self'`; only
//! `img-src` also allows `data:` (Swagger UI's icons are data: URIs in its
//! stylesheet). Public like `/api/v1/openapi.json`; "Try it out" calls need
//! an API token (Authorize, bearer).

use std::sync::{Arc, OnceLock};

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use utoipa_swagger_ui::Config;

/// The CSP of the Swagger UI pages.
pub(crate) const CSP: &str =
    "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

fn config() -> Arc<Config<'static>> {
    static CONFIG: OnceLock<Arc<Config<'static>>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            Arc::new(
                Config::new(["/api/v1/openapi.json"])
                    // no badge fetched from validator.swagger.io
                    .validator_url("none")
                    .try_it_out_enabled(false),
            )
        })
        .clone()
}

fn file(path: &str) -> Response {
    match utoipa_swagger_ui::serve(path, config()) {
        Ok(Some(f)) => {
            let mut resp = (StatusCode::OK, f.bytes.into_owned()).into_response();
            let h = resp.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&f.content_type) {
                h.insert(header::CONTENT_TYPE, v);
            }
            if f.gzpipped {
                h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            );
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("max-age=3600"),
            );
            resp
        }
        Ok(None) => (StatusCode::NOT_FOUND, "no such file\n").into_response(),
        Err(e) => {
            tracing::error!("swagger ui: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "swagger ui unavailable\n",
            )
                .into_response()
        }
    }
}

pub(crate) async fn root() -> Response {
    Redirect::permanent("/api/v1/docs/").into_response()
}

pub(crate) async fn index() -> Response {
    file("index.html")
}

pub(crate) async fn asset(Path(path): Path<String>) -> Response {
    file(&path)
}

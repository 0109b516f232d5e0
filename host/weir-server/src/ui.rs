//! The web UI: its built assets (see `build.rs`), shipped inside the binary, under
//! `/assets/`, and its single page for every other path that is not the API's, so that
//! an address such as `/runs/frun_…` opens that run.

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

include!(concat!(env!("OUT_DIR"), "/ui_assets.rs"));

fn asset(name: &str) -> Option<&'static [u8]> {
    ASSETS
        .iter()
        .find(|(file, _)| *file == name)
        .map(|(_, bytes)| *bytes)
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Shown when the server was built without the UI.
const NO_UI: &str = "<!doctype html><title>weir</title><p>This weir server was built without its web UI (the <code>ui</code> feature of weir-server). The API is at <a href=\"/api/v1/openapi.json\">/api/v1</a>.</p>";

async fn page(uri: axum::http::Uri) -> Response {
    // The API's own paths never get the page (`/api/v1/` and the like).
    if uri.path() == "/api" || uri.path().starts_with("/api/") {
        return crate::ApiError::not_found(format!(
            "no API route `{}` (see /api/v1/openapi.json)",
            uri.path()
        ))
        .into_response();
    }
    let body = asset("index.html").unwrap_or(NO_UI.as_bytes());
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

async fn file(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    match asset(&name).filter(|_| name != "index.html") {
        Some(bytes) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(content_type(&name)),
                ),
                // Not fingerprinted: a new weir must not be served the old script.
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ],
            bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

pub(crate) fn router() -> Router {
    Router::new()
        .route("/assets/{name}", get(file))
        .fallback(get(page))
}

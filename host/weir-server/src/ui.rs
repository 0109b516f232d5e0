//! The web UI: its built assets, shipped inside the binary, and every page path
//! answered with its single page.

use axum::Router;

pub(crate) fn router() -> Router {
    Router::new()
}

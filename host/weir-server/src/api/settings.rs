//! The result cache and tag concurrency limits: the CLI's `weir cache` and
//! `weir concurrency-limit` verbs.

use crate::tenancy::Shared;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;
use weir_store::{CacheEntry, ConcurrencyLimit};

use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Json as Body, Path};

use axum::Json;

#[utoipa::path(get, path = "/cache", tag = "cache",
    responses((status = 200, body = Vec<CacheEntry>)))]
pub(super) async fn list_cache(
    Shared(app): Shared<Arc<AppState>>,
) -> ApiResult<Json<Vec<CacheEntry>>> {
    Ok(Json(
        weir_runner::views::cache_entries(app.store.as_ref()).await?,
    ))
}

/// How many entries a clear removed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Cleared {
    pub cleared: usize,
}

#[utoipa::path(delete, path = "/cache", tag = "cache",
    responses((status = 200, body = Cleared)))]
pub(super) async fn clear_cache(Shared(app): Shared<Arc<AppState>>) -> ApiResult<Json<Cleared>> {
    Ok(Json(Cleared {
        cleared: app.store.clear_cache().await?,
    }))
}

#[utoipa::path(get, path = "/concurrency-limits", tag = "concurrency limits",
    responses((status = 200, body = Vec<ConcurrencyLimit>, description = "Every limit, with the task runs holding its slots")))]
pub(super) async fn list_limits(
    Shared(app): Shared<Arc<AppState>>,
) -> ApiResult<Json<Vec<ConcurrencyLimit>>> {
    let now = app.clock().now();
    Ok(Json(
        weir_runner::views::concurrency_limits(app.store.as_ref(), now).await?,
    ))
}

/// The longest tag a limit may name.
const MAX_TAG_BYTES: usize = weir_core::declared::MAX_NAME_BYTES;

fn check_tag(tag: &str) -> ApiResult<()> {
    if tag.trim().is_empty() || tag.len() > MAX_TAG_BYTES || tag.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "a tag is 1 to {MAX_TAG_BYTES} bytes of printable text"
        ))
        .with_field("tag"));
    }
    Ok(())
}

fn no_limit(tag: &str) -> ApiError {
    ApiError::not_found(format!("no concurrency limit on tag `{tag}`"))
}

#[utoipa::path(get, path = "/concurrency-limits/{tag}", tag = "concurrency limits",
    params(("tag" = String, Path, description = "The tag")),
    responses((status = 200, body = ConcurrencyLimit), (status = 404, body = ErrorBody)))]
pub(super) async fn get_limit(
    Shared(app): Shared<Arc<AppState>>,
    Path(tag): Path<String>,
) -> ApiResult<Json<ConcurrencyLimit>> {
    check_tag(&tag)?;
    let now = app.clock().now();
    app.store
        .concurrency_limit(&tag, now)
        .await?
        .map(Json)
        .ok_or_else(|| no_limit(&tag))
}

/// A limit to set.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetLimit {
    /// Task runs with the tag that may run at once; 0 stops them all (they fail).
    pub limit: u32,
}

#[utoipa::path(put, path = "/concurrency-limits/{tag}", tag = "concurrency limits",
    params(("tag" = String, Path, description = "The tag")),
    request_body = SetLimit,
    responses((status = 200, body = ConcurrencyLimit), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn set_limit(
    Shared(app): Shared<Arc<AppState>>,
    Path(tag): Path<String>,
    Body(body): Body<SetLimit>,
) -> ApiResult<Json<ConcurrencyLimit>> {
    check_tag(&tag)?;
    let now = app.clock().now();
    app.store
        .set_concurrency_limit(&tag, body.limit, now)
        .await?;
    app.store
        .concurrency_limit(&tag, now)
        .await?
        .map(Json)
        .ok_or_else(|| no_limit(&tag))
}

#[utoipa::path(delete, path = "/concurrency-limits/{tag}", tag = "concurrency limits",
    params(("tag" = String, Path, description = "The tag")),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody)))]
pub(super) async fn delete_limit(
    Shared(app): Shared<Arc<AppState>>,
    Path(tag): Path<String>,
) -> ApiResult<StatusCode> {
    check_tag(&tag)?;
    if app.store.delete_concurrency_limit(&tag).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_limit(&tag))
    }
}

/// How many slots a reset freed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Reset {
    pub released: usize,
}

#[utoipa::path(post, path = "/concurrency-limits/{tag}/reset", tag = "concurrency limits",
    params(("tag" = String, Path, description = "The tag")),
    responses((status = 200, body = Reset, description = "Every slot of the limit freed"), (status = 404, body = ErrorBody)))]
pub(super) async fn reset_limit(
    Shared(app): Shared<Arc<AppState>>,
    Path(tag): Path<String>,
) -> ApiResult<Json<Reset>> {
    check_tag(&tag)?;
    let now = app.clock().now();
    if app.store.concurrency_limit(&tag, now).await?.is_none() {
        return Err(no_limit(&tag));
    }
    Ok(Json(Reset {
        released: app.store.reset_concurrency_limit(&tag).await?,
    }))
}

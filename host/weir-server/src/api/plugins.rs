//! Plugins: the ones the store has seen (by digest, with each task's metadata and input
//! schema), and uploads of new ones.

use crate::tenancy::Shared;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use std::sync::Arc;
use utoipa::IntoParams;
use weir_core::ComponentDigest;
use weir_store::PluginRecord;

use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Path, Query, declared_length, read_body, readable_size, too_large_error};

use axum::Json;

#[utoipa::path(get, path = "/plugins", tag = "plugins",
    responses((status = 200, body = Vec<PluginRecord>)))]
pub(super) async fn list_plugins(
    Shared(app): Shared<Arc<AppState>>,
) -> ApiResult<Json<Vec<PluginRecord>>> {
    Ok(Json(app.store.plugins().await?))
}

/// A digest as the store writes them: 64 lowercase hexadecimal digits.
fn check_digest(digest: &str) -> ApiResult<()> {
    let valid = digest.len() == 64
        && digest
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte));
    if valid {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "`{}` is not a plugin digest (64 hexadecimal digits, see GET /api/v1/plugins)",
            digest.chars().take(80).collect::<String>()
        ))
        .with_field("digest"))
    }
}

#[utoipa::path(get, path = "/plugins/{digest}", tag = "plugins",
    params(("digest" = String, Path, description = "The plugin's blake3 digest")),
    responses((status = 200, body = PluginRecord), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn get_plugin(
    Shared(app): Shared<Arc<AppState>>,
    Path(digest): Path<String>,
) -> ApiResult<Json<PluginRecord>> {
    check_digest(&digest)?;
    app.store
        .plugin(&ComponentDigest::from_hex(digest.clone()))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no plugin {digest} in the store")))
}

/// How an uploaded plugin is named.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UploadPlugin {
    /// The plugin's name in lists and messages (letters, digits, `-`, `_`, `.`; at most
    /// 64 characters).
    pub name: String,
}

fn check_name(name: &str) -> ApiResult<()> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "a plugin's name is 1 to 64 letters, digits, `-`, `_` or `.`, not starting with `.`",
        )
        .with_field("name"))
    }
}

#[utoipa::path(post, path = "/plugins", tag = "plugins", params(UploadPlugin),
    request_body(content = Vec<u8>, content_type = "application/wasm", description = "The component's bytes"),
    responses(
        (status = 201, body = PluginRecord, description = "Stored and checked"),
        (status = 200, body = PluginRecord, description = "The store already had it"),
        (status = 400, body = ErrorBody),
        (status = 413, body = ErrorBody, description = "Larger than the server's --max-plugin-size, or the tenant's plugin-size quota"),
        (status = 422, body = ErrorBody, description = "Not a weir plugin; the message says why")))]
pub(super) async fn upload_plugin(
    Shared(app): Shared<Arc<AppState>>,
    Query(query): Query<UploadPlugin>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<PluginRecord>)> {
    check_name(&query.name)?;
    let limit = app.config.max_plugin_bytes;
    let quota = app.settings().await?.quotas.plugin_bytes;
    let over_quota = |quota: u64| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the plugin is larger than tenant `{}`'s plugin-size quota of {}",
                app.store.tenant_id(),
                readable_size(usize::try_from(quota).unwrap_or(usize::MAX))
            ),
        )
    };
    // Refused before a byte of it is read.
    if let Some(length) = declared_length(&headers) {
        if let Some(quota) = quota.filter(|quota| length > *quota) {
            return Err(over_quota(quota));
        }
        if length > limit as u64 {
            return Err(too_large_error(limit));
        }
    }
    let bytes = read_body(body, limit).await?;
    if let Some(quota) = quota.filter(|quota| bytes.len() as u64 > *quota) {
        return Err(over_quota(quota));
    }
    let digest = ComponentDigest::of_bytes(&bytes);
    if let Some(known) = app.store.plugin(&digest).await? {
        return Ok((StatusCode::OK, Json(known)));
    }
    let plugin = app
        .flows
        .tasks()
        .runtime()
        .load_plugin_bytes(&query.name, &bytes)
        .await
        .map_err(|error| {
            ApiError::unprocessable(format!(
                "`{}` is not a weir plugin: {:#}",
                query.name,
                anyhow::Error::new(error)
            ))
        })?;
    app.store.put_blob(&bytes).await?;
    let record = PluginRecord {
        digest: plugin.digest().clone(),
        name: plugin.name().to_owned(),
        size_bytes: plugin.size_bytes() as u64,
        tasks: plugin.tasks().to_vec(),
        first_seen: app.clock().now(),
    };
    app.store.record_plugin(&record)?;
    app.store.flush().await?;
    Ok((StatusCode::CREATED, Json(record)))
}

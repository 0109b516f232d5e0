//! Results, content-addressed by the blake3 of their JSON text: inline in `results`
//! when small, in `blobs` when large (so that the result table stays narrow).

use weir_store::{StoreError, StoreResult};

/// Results whose JSON text is larger than this are stored as blobs.
pub(crate) const INLINE_RESULT_MAX_BYTES: usize = 64 * 1024;

/// A result ready to be recorded, in the same transaction as what refers to it.
#[derive(Debug, Clone)]
pub(crate) struct PreparedResult {
    pub(crate) digest: String,
    pub(crate) size: usize,
    pub(crate) inline: Option<String>,
    pub(crate) blob: Option<Vec<u8>>,
}

pub(crate) fn prepare(result: &serde_json::Value) -> PreparedResult {
    let text = result.to_string();
    let digest = weir_store::blob_digest(text.as_bytes());
    let size = text.len();
    if size <= INLINE_RESULT_MAX_BYTES {
        PreparedResult {
            digest,
            size,
            inline: Some(text),
            blob: None,
        }
    } else {
        PreparedResult {
            digest,
            size,
            inline: None,
            blob: Some(text.into_bytes()),
        }
    }
}

pub(crate) async fn read(
    client: &tokio_postgres::Client,
    digest: &str,
) -> StoreResult<serde_json::Value> {
    let row = client
        .query_opt(
            "SELECT r.inline_json, b.bytes FROM results r LEFT JOIN blobs b ON b.digest = r.digest
             WHERE r.digest = $1",
            &[&digest],
        )
        .await
        .map_err(|error| StoreError::broken_result(digest, error))?
        .ok_or_else(|| StoreError::broken_result(digest, "no such result"))?;
    let inline: Option<String> = row.get(0);
    let bytes = match inline {
        Some(text) => text.into_bytes(),
        None => {
            let blob: Option<Vec<u8>> = row.get(1);
            let blob =
                blob.ok_or_else(|| StoreError::broken_result(digest, "its blob is missing"))?;
            weir_store::check_blob(digest, blob)?
        }
    };
    serde_json::from_slice(&bytes).map_err(|error| StoreError::broken_result(digest, error))
}

//! Results, content-addressed by the blake3 of their JSON text: inline in the
//! database when small, as files under `results/` when large.

use rusqlite::{Connection, OptionalExtension};
use std::path::{Path, PathBuf};
use weir_store::{StoreError, StoreResult};

/// Results whose JSON text is larger than this live in files, not in the database.
pub(crate) const INLINE_RESULT_MAX_BYTES: usize = 64 * 1024;

/// A result ready to be recorded: hashed, and already on disk when large.
#[derive(Debug, Clone)]
pub(crate) struct PreparedResult {
    pub(crate) digest: String,
    pub(crate) size: usize,
    /// The text when it is stored inline.
    pub(crate) inline: Option<String>,
}

pub(crate) fn result_path(results_dir: &Path, digest: &str) -> PathBuf {
    results_dir
        .join(&digest[..2])
        .join(format!("{digest}.json"))
}

/// Hashes a result and writes it to its file when it is too large to keep inline.
/// Done by the caller, so the writer thread only touches the database.
pub(crate) fn prepare(
    results_dir: &Path,
    result: &serde_json::Value,
) -> StoreResult<PreparedResult> {
    let text = result.to_string();
    let digest = blake3::hash(text.as_bytes()).to_hex().to_string();
    let size = text.len();
    if size <= INLINE_RESULT_MAX_BYTES {
        return Ok(PreparedResult {
            digest,
            size,
            inline: Some(text),
        });
    }
    let path = result_path(results_dir, &digest);
    if !path.exists() {
        let io_error = |error: std::io::Error| StoreError::Backend {
            action: format!("writing the result file {}", path.display()),
            message: error.to_string(),
        };
        if let Some(parent) = path.parent() {
            fs_err::create_dir_all(parent).map_err(io_error)?;
        }
        // Write then rename, so a reader never sees half a result. The temporary name is
        // unique per write: runs of one process often store the same result at once.
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let write = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let temporary = path.with_extension(format!("tmp{}-{write}", std::process::id()));
        let written =
            fs_err::write(&temporary, &text).and_then(|()| fs_err::rename(&temporary, &path));
        if let Err(error) = written {
            // A full disk must not keep the half-written file.
            let _ = fs_err::remove_file(&temporary);
            return Err(io_error(error));
        }
    }
    Ok(PreparedResult {
        digest,
        size,
        inline: None,
    })
}

pub(crate) fn read(
    connection: &Connection,
    results_dir: &Path,
    digest: &str,
) -> StoreResult<serde_json::Value> {
    let broken = |message: String| StoreError::BrokenResult {
        digest: digest.to_owned(),
        message,
    };
    let inline: Option<Option<String>> = connection
        .prepare_cached("SELECT inline_json FROM results WHERE digest = ?1")
        .and_then(|mut statement| statement.query_row([digest], |row| row.get(0)).optional())
        .map_err(|error| broken(error.to_string()))?;
    let text = match inline {
        None => return Err(broken("no such result".into())),
        Some(Some(text)) => text,
        Some(None) => fs_err::read_to_string(result_path(results_dir, digest))
            .map_err(|error| broken(error.to_string()))?,
    };
    serde_json::from_str(&text).map_err(|error| broken(error.to_string()))
}

//! Results, content-addressed by the blake3 of their JSON text: inline in the
//! database when small, as blobs (files under `blobs/`, named by digest) when large.

use rusqlite::{Connection, OptionalExtension};
use std::path::{Path, PathBuf};
use weir_store::{StoreError, StoreResult};

/// Results whose JSON text is larger than this live in blob files, not in the database.
pub(crate) const INLINE_RESULT_MAX_BYTES: usize = 64 * 1024;

/// A result ready to be recorded: hashed, and already on disk when large.
#[derive(Debug, Clone)]
pub(crate) struct PreparedResult {
    pub(crate) digest: String,
    pub(crate) size: usize,
    /// The text when it is stored inline.
    pub(crate) inline: Option<String>,
}

/// The content-addressed directory of blobs: `blobs/ab/abcdef…`.
#[derive(Debug, Clone)]
pub(crate) struct BlobDir {
    root: PathBuf,
    /// Where stores written before blobs kept large results (`results/ab/abcdef….json`).
    legacy_results: PathBuf,
}

impl BlobDir {
    pub(crate) fn open(store_dir: &Path) -> StoreResult<Self> {
        let root = store_dir.join("blobs");
        fs_err::create_dir_all(&root).map_err(|error| {
            StoreError::backend(
                format!("creating the blob directory {}", root.display()),
                error,
            )
        })?;
        Ok(BlobDir {
            root,
            legacy_results: store_dir.join("results"),
        })
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.root.join(digest.get(..2).unwrap_or("00")).join(digest)
    }

    /// Writes `bytes` under `digest` unless it is there already. Write then rename, so
    /// a reader never sees half a blob; the temporary name is unique per write, since
    /// runs of one process often store the same result at once.
    pub(crate) fn put(&self, digest: &str, bytes: &[u8]) -> StoreResult<()> {
        let path = self.path(digest);
        if path.exists() {
            return Ok(());
        }
        let io_error = |error: std::io::Error| {
            StoreError::backend(format!("writing {}", path.display()), error)
        };
        if let Some(parent) = path.parent() {
            fs_err::create_dir_all(parent).map_err(io_error)?;
        }
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let write = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let temporary = path.with_extension(format!("tmp{}-{write}", std::process::id()));
        let written =
            fs_err::write(&temporary, bytes).and_then(|()| fs_err::rename(&temporary, &path));
        if let Err(error) = written {
            // A full disk must not keep the half-written file.
            let _ = fs_err::remove_file(&temporary);
            return Err(io_error(error));
        }
        Ok(())
    }

    /// The blob's bytes, checked against its digest; `None` when there is no such blob.
    pub(crate) fn get(&self, digest: &str) -> StoreResult<Option<Vec<u8>>> {
        if digest.len() != 64 || !digest.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let legacy = self
            .legacy_results
            .join(&digest[..2])
            .join(format!("{digest}.json"));
        for path in [self.path(digest), legacy] {
            match std::fs::read(&path) {
                Ok(bytes) => return weir_store::check_blob(digest, bytes).map(Some),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => {
                    return Err(StoreError::broken_result(
                        digest,
                        format!("reading {}: {error}", path.display()),
                    ));
                }
            }
        }
        Ok(None)
    }
}

/// Hashes a result and writes it as a blob when it is too large to keep inline. Done by
/// the caller, so the writer thread only touches the database.
pub(crate) fn prepare(blobs: &BlobDir, result: &serde_json::Value) -> StoreResult<PreparedResult> {
    let text = result.to_string();
    let digest = weir_store::blob_digest(text.as_bytes());
    let size = text.len();
    if size <= INLINE_RESULT_MAX_BYTES {
        return Ok(PreparedResult {
            digest,
            size,
            inline: Some(text),
        });
    }
    blobs.put(&digest, text.as_bytes())?;
    Ok(PreparedResult {
        digest,
        size,
        inline: None,
    })
}

/// Parses a result's JSON text as stored.
pub(crate) fn parse(digest: &str, text: &[u8]) -> StoreResult<serde_json::Value> {
    serde_json::from_slice(text).map_err(|error| StoreError::broken_result(digest, error))
}

pub(crate) fn read(
    connection: &Connection,
    blobs: &BlobDir,
    digest: &str,
) -> StoreResult<serde_json::Value> {
    let inline: Option<Option<String>> = connection
        .prepare_cached("SELECT inline_json FROM results WHERE digest = ?1")
        .and_then(|mut statement| statement.query_row([digest], |row| row.get(0)).optional())
        .map_err(|error| StoreError::broken_result(digest, error))?;
    match inline {
        None => Err(StoreError::broken_result(digest, "no such result")),
        Some(Some(text)) => parse(digest, text.as_bytes()),
        Some(None) => {
            let bytes = blobs
                .get(digest)?
                .ok_or_else(|| StoreError::broken_result(digest, "its blob file is missing"))?;
            parse(digest, &bytes)
        }
    }
}

//! Where runs are recorded: `--store DIR` (the embedded SQLite store, the default
//! `.weir`) or `--store postgres://user@host/db` (a shared PostgreSQL store), also
//! given as `WEIR_STORE`.

use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use weir_store::Store;

use crate::Failure;

/// A store as named on the command line.
#[derive(Debug, Clone)]
pub(crate) enum StoreLocation {
    /// A directory holding `weir.db` and `blobs/`.
    Directory(PathBuf),
    /// A PostgreSQL connection URL.
    Postgres(String),
}

impl StoreLocation {
    pub(crate) fn parse(text: &str) -> Self {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            StoreLocation::Postgres(text.to_owned())
        } else {
            StoreLocation::Directory(PathBuf::from(text))
        }
    }

    /// This machine's own directory for what is not shared (compiled plugins):
    /// `WEIR_LOCAL_DIR` when set, else the store's directory, or `.weir` for a shared
    /// store.
    pub(crate) fn local_dir(&self) -> PathBuf {
        if let Some(dir) = std::env::var_os("WEIR_LOCAL_DIR").filter(|dir| !dir.is_empty()) {
            return PathBuf::from(dir);
        }
        match self {
            StoreLocation::Directory(dir) => dir.clone(),
            StoreLocation::Postgres(_) => PathBuf::from(".weir"),
        }
    }

    /// Opens the store, creating it (or its schema) when it does not exist yet.
    pub(crate) async fn open(&self) -> Result<Arc<dyn Store>, Failure> {
        match self {
            StoreLocation::Directory(dir) => {
                let store = weir_store_sqlite::SqliteStore::open(dir)
                    .with_context(|| format!("opening the store in {}", dir.display()))
                    .map_err(Failure::internal)?;
                Ok(Arc::new(store))
            }
            StoreLocation::Postgres(url) => {
                let store = weir_store_postgres::PostgresStore::connect(url)
                    .await
                    .with_context(|| format!("opening the store {}", redacted(url)))
                    .map_err(Failure::internal)?;
                Ok(Arc::new(store))
            }
        }
    }

    /// Opens a store that must already exist: what commands that only read do, so a
    /// mistyped `--store` is an error instead of a new, empty store.
    pub(crate) async fn open_existing(&self) -> Result<Arc<dyn Store>, Failure> {
        if let StoreLocation::Directory(dir) = self
            && !dir.join("weir.db").exists()
        {
            return Err(no_store(dir));
        }
        self.open().await
    }
}

fn no_store(dir: &Path) -> Failure {
    Failure::usage(anyhow::anyhow!(
        "no store in {} (runs are recorded where `weir run` or `weir task run` ran, or in --store DIR)",
        dir.display()
    ))
}

/// A URL without its password, for messages.
pub(crate) fn redacted(url: &str) -> String {
    weir_store_postgres::redact_url(url)
}

impl std::fmt::Display for StoreLocation {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Directory(dir) => write!(formatter, "{}", dir.display()),
            StoreLocation::Postgres(url) => formatter.write_str(&redacted(url)),
        }
    }
}

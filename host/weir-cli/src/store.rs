//! Where runs are recorded: `--store DIR` (the embedded SQLite store, the default
//! `.weir`) or `--store postgres://user@host/db` (a shared PostgreSQL store), also
//! given as `WEIR_STORE`.

use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use weir_core::TenantId;
use weir_store::Store;

use crate::Failure;

/// A store as named on the command line, and the tenant a command acts as
/// (`--tenant`, `WEIR_TENANT`).
#[derive(Debug, Clone)]
pub(crate) struct StoreLocation {
    pub(crate) place: StorePlace,
    pub(crate) tenant: TenantId,
}

/// Where the store is.
#[derive(Debug, Clone)]
pub(crate) enum StorePlace {
    /// A directory holding `weir.db` and `blobs/`.
    Directory(PathBuf),
    /// A PostgreSQL connection URL.
    Postgres(String),
}

impl StoreLocation {
    pub(crate) fn parse(text: &str, tenant: TenantId) -> Self {
        let place = if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            StorePlace::Postgres(text.to_owned())
        } else {
            StorePlace::Directory(PathBuf::from(text))
        };
        StoreLocation { place, tenant }
    }

    /// Refuses `--tenant` for a command that serves every tenant (a worker, a server).
    pub(crate) fn all_tenants(&self, command: &str) -> Result<(), Failure> {
        if self.tenant.is_default() {
            return Ok(());
        }
        Err(Failure::usage(anyhow::anyhow!(
            "`weir {command}` serves every tenant: leave out --tenant (WEIR_TENANT), which names the tenant that commands such as `weir run` and `weir runs ls` act as"
        )))
    }

    /// This machine's own directory for what is not shared (compiled plugins):
    /// `WEIR_LOCAL_DIR` when set, else the store's directory, or `.weir` for a shared
    /// store.
    pub(crate) fn local_dir(&self) -> PathBuf {
        if let Some(dir) = std::env::var_os("WEIR_LOCAL_DIR").filter(|dir| !dir.is_empty()) {
            return PathBuf::from(dir);
        }
        match &self.place {
            StorePlace::Directory(dir) => dir.clone(),
            StorePlace::Postgres(_) => PathBuf::from(".weir"),
        }
    }

    /// Opens the store (creating it, or its schema, when it does not exist yet) as the
    /// command's tenant, which must exist.
    pub(crate) async fn open(&self) -> Result<Arc<dyn Store>, Failure> {
        let store = self.open_as_operator().await?;
        if self.tenant.is_default() {
            return Ok(store);
        }
        let known = store
            .tenant_record(&self.tenant)
            .await
            .map_err(Failure::internal)?;
        if known.is_none() {
            return Err(Failure::usage(weir_store::StoreError::UnknownTenant(
                self.tenant.to_string(),
            )));
        }
        Ok(store.for_tenant(&self.tenant))
    }

    /// Opens the store as the default tenant, whatever `--tenant` says: what commands
    /// that manage tenants, or serve all of them, use.
    pub(crate) async fn open_as_operator(&self) -> Result<Arc<dyn Store>, Failure> {
        match &self.place {
            StorePlace::Directory(dir) => {
                let store = weir_store_sqlite::SqliteStore::open(dir)
                    .with_context(|| format!("opening the store in {}", dir.display()))
                    .map_err(Failure::internal)?;
                Ok(Arc::new(store))
            }
            StorePlace::Postgres(url) => {
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
        if let StorePlace::Directory(dir) = &self.place
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
        match &self.place {
            StorePlace::Directory(dir) => write!(formatter, "{}", dir.display()),
            StorePlace::Postgres(url) => formatter.write_str(&redacted(url)),
        }
    }
}

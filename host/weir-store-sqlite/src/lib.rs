//! weir's embedded store: one SQLite database in WAL mode (by default
//! `.weir/weir.db` in the working directory) and, beside it, a content-addressed
//! directory `blobs/` for results too large to keep inline.
//!
//! Writes go to one writer thread that commits whatever is queued in one transaction
//! (group commit), so recording a run costs the caller a channel send, and thousands
//! of concurrent runs share each commit. Writes are applied in order: after a crash
//! the database holds everything up to some point, at most milliseconds before it.
//! Reads see every write made before them, and [`Recorder::flush`] makes everything
//! written so far durable. Several processes may share one store: SQLite's write lock
//! serializes their batches (each waits up to a minute for another's), and the schema
//! is created or migrated under that lock.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use weir_store::{History, TaskRunFilter};
//! use weir_store_sqlite::SqliteStore;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = SqliteStore::open(dir.path()).unwrap();
//! assert!(store.task_runs(&TaskRunFilter::default()).await.unwrap().is_empty());
//! # });
//! ```

mod history;
mod leases;
mod queue;
mod recorder;
mod results;
mod rows;
mod schema;
mod tenants;
mod writer;

use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use weir_core::TenantId;
use weir_store::{PendingEntries, Store, StoreError, StoreResult};

use results::BlobDir;
use writer::Writer;

/// The embedded SQLite store, acting as one tenant ([`Store::for_tenant`] gives the same
/// store as another).
pub struct SqliteStore {
    shared: Arc<Shared>,
    tenant: TenantId,
}

/// What every tenant's handle of one store shares: a writer thread with its own
/// connection, and up to [`MAX_READERS`] connections for reads (WAL lets them read at
/// once, beside the writer).
struct Shared {
    readers: Readers,
    writer: Writer,
    pending_cache: PendingEntries,
    blobs: BlobDir,
    database_path: PathBuf,
    /// The tenants' passes, for fair claims.
    fair: Arc<weir_store::FairShare>,
}

/// Runs `step` again while SQLite answers "database is locked" without waiting for its
/// busy timeout, which it does in a few cases (a process opening a new store while
/// another initializes its write-ahead log): for up to the busy timeout.
fn while_busy<T>(mut step: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let started = std::time::Instant::now();
    loop {
        match step() {
            Err(rusqlite::Error::SqliteFailure(error, _))
                if matches!(
                    error.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && started.elapsed() < schema::BUSY_TIMEOUT =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

fn backend(action: &str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |error| StoreError::backend(action, error)
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `dir`: `dir/weir.db` and `dir/blobs/`.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        fs_err::create_dir_all(dir).map_err(|error| {
            StoreError::backend(
                format!("creating the store directory {}", dir.display()),
                error,
            )
        })?;
        let blobs = BlobDir::open(dir)?;
        let database_path = dir.join("weir.db");
        let open = || {
            Connection::open(&database_path).map_err(|error| {
                StoreError::backend(format!("opening {}", database_path.display()), error)
            })
        };
        let mut writer_connection = open()?;
        let found = while_busy(|| schema::prepare(&mut writer_connection)).map_err(|error| {
            StoreError::backend(
                format!("reading the database {}", database_path.display()),
                describe_open_error(&error),
            )
        })?;
        if found > schema::VERSION {
            return Err(StoreError::NewerSchema {
                path: database_path.display().to_string(),
                found,
                known: schema::VERSION,
            });
        }
        let readers = Readers::new(database_path.clone())?;
        Ok(SqliteStore {
            shared: Arc::new(Shared {
                readers,
                writer: Writer::start(writer_connection)?,
                pending_cache: PendingEntries::default(),
                blobs,
                database_path,
                fair: Default::default(),
            }),
            tenant: TenantId::default_tenant(),
        })
    }

    /// The tenant this handle acts as, for the SQL it binds.
    pub(crate) fn tenant(&self) -> &str {
        self.tenant.as_str()
    }

    pub fn database_path(&self) -> &Path {
        &self.shared.database_path
    }

    /// Waits for queued writes (so a read sees them) and locks the reading connection.
    async fn read(&self) -> StoreResult<Reader<'_>> {
        if !self.shared.writer.is_idle() {
            self.shared.writer.wait().await?;
        }
        Ok(self.reader_now())
    }

    /// A reading connection, without waiting for queued writes: it sees what is
    /// committed. Reads are answered on the caller's thread: they take microseconds,
    /// less than a hop to a blocking thread would cost.
    fn reader_now(&self) -> Reader<'_> {
        self.shared.readers.take()
    }
}

/// Reading connections at most: a server answers that many reads at once.
pub const MAX_READERS: usize = 4;

/// The idle reading connections, opened as reads need them (a CLI command uses one).
struct Readers {
    path: PathBuf,
    idle: Mutex<ReaderPool>,
    returned: Condvar,
}

struct ReaderPool {
    connections: Vec<Connection>,
    opened: usize,
}

/// A reading connection, back to the pool when dropped.
pub(crate) struct Reader<'a> {
    readers: &'a Readers,
    connection: Option<Connection>,
}

impl std::ops::Deref for Reader<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.connection
            .as_ref()
            .expect("a reader holds its connection until dropped")
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            self.readers.lock().connections.push(connection);
            self.readers.returned.notify_one();
        }
    }
}

impl Readers {
    fn new(path: PathBuf) -> StoreResult<Self> {
        let first = Self::open(&path)?;
        Ok(Readers {
            path,
            idle: Mutex::new(ReaderPool {
                connections: vec![first],
                opened: 1,
            }),
            returned: Condvar::new(),
        })
    }

    fn open(path: &Path) -> StoreResult<Connection> {
        let connection = Connection::open(path)
            .map_err(|error| StoreError::backend(format!("opening {}", path.display()), error))?;
        while_busy(|| schema::configure(&connection))
            .map_err(backend("configuring the database connection"))?;
        Ok(connection)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReaderPool> {
        // The pool is a list: a panic elsewhere cannot leave it half changed.
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn take(&self) -> Reader<'_> {
        let mut pool = self.lock();
        loop {
            if let Some(connection) = pool.connections.pop() {
                return Reader {
                    readers: self,
                    connection: Some(connection),
                };
            }
            if pool.opened < MAX_READERS {
                pool.opened += 1;
                drop(pool);
                // A connection that cannot be opened now leaves the pool as it was: the
                // reads wait for the ones open.
                match Self::open(&self.path) {
                    Ok(connection) => {
                        return Reader {
                            readers: self,
                            connection: Some(connection),
                        };
                    }
                    Err(error) => {
                        tracing::warn!("opening another reading connection: {error}");
                        pool = self.lock();
                        pool.opened -= 1;
                    }
                }
            }
            pool = self
                .returned
                .wait(pool)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }
}

impl Store for SqliteStore {
    fn location(&self) -> String {
        self.shared
            .database_path
            .parent()
            .unwrap_or(&self.shared.database_path)
            .display()
            .to_string()
    }

    fn tenant_id(&self) -> &TenantId {
        &self.tenant
    }

    fn for_tenant(&self, tenant: &TenantId) -> Arc<dyn Store> {
        Arc::new(SqliteStore {
            shared: self.shared.clone(),
            tenant: tenant.clone(),
        })
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.writer.shut_down();
    }
}

/// SQLite's words for a damaged file, with what to do about it.
fn describe_open_error(error: &rusqlite::Error) -> String {
    use rusqlite::ErrorCode;
    match error.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => {
            format!("{error}: the file is not a weir store (or it is damaged)")
        }
        Some(ErrorCode::DatabaseCorrupt) => format!(
            "{error}: the file is damaged; move it away to start a new store, or restore a copy"
        ),
        Some(ErrorCode::DiskFull) => format!("{error}: free some disk space and try again"),
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests;

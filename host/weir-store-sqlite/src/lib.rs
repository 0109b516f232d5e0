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
mod writer;

use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use weir_store::{PendingEntries, Store, StoreError, StoreResult};

use results::BlobDir;
use writer::Writer;

/// The embedded SQLite store: a writer thread with its own connection, and a
/// connection for reads.
pub struct SqliteStore {
    reader: Mutex<Connection>,
    writer: Writer,
    pending_cache: PendingEntries,
    blobs: BlobDir,
    database_path: PathBuf,
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
        let reader = open()?;
        while_busy(|| schema::configure(&reader))
            .map_err(backend("configuring the database connection"))?;
        Ok(SqliteStore {
            reader: Mutex::new(reader),
            writer: Writer::start(writer_connection)?,
            pending_cache: PendingEntries::default(),
            blobs,
            database_path,
        })
    }

    pub fn database_path(&self) -> &Path {
        &self.database_path
    }

    /// Waits for queued writes (so a read sees them) and locks the reading connection.
    async fn read(&self) -> StoreResult<MutexGuard<'_, Connection>> {
        if !self.writer.is_idle() {
            self.writer.wait().await?;
        }
        Ok(self.reader_now())
    }

    /// The reading connection, without waiting for queued writes: it sees what is
    /// committed. Reads are answered on the caller's thread: they take microseconds,
    /// less than a hop to a blocking thread would cost.
    fn reader_now(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a read half done in a way that
        // matters: the connection has no open transaction between calls.
        self.reader
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Store for SqliteStore {
    fn location(&self) -> String {
        self.database_path
            .parent()
            .unwrap_or(&self.database_path)
            .display()
            .to_string()
    }
}

impl Drop for SqliteStore {
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

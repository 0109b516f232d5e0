//! weir's embedded store: one SQLite database in WAL mode (by default
//! `.weir/weir.db` in the working directory) and, beside it, a content-addressed
//! directory `results/` for results too large to keep inline.
//!
//! ```
//! use weir_store::{RunStore, TaskRunFilter};
//! use weir_store_sqlite::SqliteStore;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = SqliteStore::open(dir.path()).unwrap();
//! assert!(store.task_runs(&TaskRunFilter::default()).unwrap().is_empty());
//! ```

mod schema;

use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use weir_core::{CacheKey, ComponentDigest, FlowRunId, LogLevel, State, TaskRunId, Timestamp};
use weir_store::{
    CacheEntry, CacheEntryDraft, LogRecord, NewTaskRun, PluginRecord, RunStore, StateChange,
    StoreError, StoreResult, TaskRunFilter, TaskRunRecord,
};

/// Results whose JSON text is larger than this live in files, not in the database.
const INLINE_RESULT_MAX_BYTES: usize = 64 * 1024;

/// The embedded SQLite store. One connection behind a mutex: SQLite serializes
/// writers anyway, and each operation is a short transaction.
pub struct SqliteStore {
    connection: Mutex<Connection>,
    results_dir: PathBuf,
    database_path: PathBuf,
}

fn backend(action: &str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |error| StoreError::Backend {
        action: action.to_owned(),
        message: error.to_string(),
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `dir`: `dir/weir.db` and `dir/results/`.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        let io_error = |error: std::io::Error| StoreError::Backend {
            action: format!("creating the store directory {}", dir.display()),
            message: error.to_string(),
        };
        fs_err::create_dir_all(dir).map_err(io_error)?;
        let results_dir = dir.join("results");
        fs_err::create_dir_all(&results_dir).map_err(io_error)?;
        let database_path = dir.join("weir.db");
        let connection = Connection::open(&database_path).map_err(|error| StoreError::Backend {
            action: format!("opening {}", database_path.display()),
            message: error.to_string(),
        })?;
        schema::prepare(&connection).map_err(backend("preparing the database schema"))?;
        Ok(SqliteStore {
            connection: Mutex::new(connection),
            results_dir,
            database_path,
        })
    }

    pub fn database_path(&self) -> &Path {
        &self.database_path
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a transaction open (rusqlite rolls
        // back on drop), so the connection is still consistent.
        self.connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn result_path(&self, digest: &str) -> PathBuf {
        self.results_dir
            .join(&digest[..2])
            .join(format!("{digest}.json"))
    }

    /// Stores a result by digest: inline when small, as a file otherwise. Returns the digest.
    fn put_result(
        &self,
        transaction: &rusqlite::Transaction<'_>,
        result: &serde_json::Value,
    ) -> StoreResult<String> {
        let text = result.to_string();
        let digest = blake3::hash(text.as_bytes()).to_hex().to_string();
        if text.len() <= INLINE_RESULT_MAX_BYTES {
            transaction
                .prepare_cached(
                    "INSERT OR IGNORE INTO results (digest, size, inline_json) VALUES (?1, ?2, ?3)",
                )
                .and_then(|mut statement| {
                    statement.execute(params![digest, text.len() as i64, text])
                })
                .map_err(backend("storing a result"))?;
        } else {
            let path = self.result_path(&digest);
            if !path.exists() {
                let io_error = |error: std::io::Error| StoreError::Backend {
                    action: format!("writing the result file {}", path.display()),
                    message: error.to_string(),
                };
                if let Some(parent) = path.parent() {
                    fs_err::create_dir_all(parent).map_err(io_error)?;
                }
                let temporary = path.with_extension(format!("tmp{}", std::process::id()));
                fs_err::write(&temporary, &text).map_err(io_error)?;
                fs_err::rename(&temporary, &path).map_err(io_error)?;
            }
            transaction
                .prepare_cached("INSERT OR IGNORE INTO results (digest, size, inline_json) VALUES (?1, ?2, NULL)")
                .and_then(|mut statement| statement.execute(params![digest, text.len() as i64]))
                .map_err(backend("storing a result"))?;
        }
        Ok(digest)
    }

    fn read_result(&self, connection: &Connection, digest: &str) -> StoreResult<serde_json::Value> {
        let broken = |message: String| StoreError::BrokenResult {
            digest: digest.to_owned(),
            message,
        };
        let inline: Option<Option<String>> = connection
            .prepare_cached("SELECT inline_json FROM results WHERE digest = ?1")
            .and_then(|mut statement| statement.query_row([digest], |row| row.get(0)).optional())
            .map_err(backend("reading a result"))?;
        let text = match inline {
            None => return Err(broken("no such result".into())),
            Some(Some(text)) => text,
            Some(None) => fs_err::read_to_string(self.result_path(digest))
                .map_err(|error| broken(error.to_string()))?,
        };
        serde_json::from_str(&text).map_err(|error| broken(error.to_string()))
    }
}

fn state_from_sql(text: String) -> rusqlite::Result<State> {
    text.parse().map_err(|error| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(error))
    })
}

fn json_from_sql<T: serde::de::DeserializeOwned>(text: String) -> rusqlite::Result<T> {
    serde_json::from_str(&text).map_err(|error| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(error))
    })
}

const TASK_RUN_COLUMNS: &str = "id, name, task, plugin_name, plugin_digest, flow_run_id, state, state_message, attempts, input_json, tags_json, cache_key, result_digest, created, started, ended";

fn task_run_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TaskRunRecord> {
    Ok(TaskRunRecord {
        id: TaskRunId::from_string(row.get::<_, String>(0)?),
        name: row.get(1)?,
        task: row.get(2)?,
        plugin_name: row.get(3)?,
        plugin_digest: ComponentDigest::from_hex(row.get::<_, String>(4)?),
        flow_run_id: row.get::<_, Option<String>>(5)?.map(FlowRunId::from_string),
        state: state_from_sql(row.get(6)?)?,
        state_message: row.get(7)?,
        attempts: row.get(8)?,
        input: json_from_sql(row.get(9)?)?,
        tags: json_from_sql(row.get(10)?)?,
        cache_key: row.get::<_, Option<String>>(11)?.map(CacheKey::from_hex),
        result_digest: row.get(12)?,
        created: Timestamp(row.get(13)?),
        started: row.get::<_, Option<i64>>(14)?.map(Timestamp),
        ended: row.get::<_, Option<i64>>(15)?.map(Timestamp),
    })
}

fn cache_entry_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<CacheEntry> {
    Ok(CacheEntry {
        key: CacheKey::from_hex(row.get::<_, String>(0)?),
        task: row.get(1)?,
        plugin_digest: ComponentDigest::from_hex(row.get::<_, String>(2)?),
        result_digest: row.get(3)?,
        task_run_id: TaskRunId::from_string(row.get::<_, String>(4)?),
        created: Timestamp(row.get(5)?),
        expires: row.get::<_, Option<i64>>(6)?.map(Timestamp),
    })
}

fn insert_state(
    transaction: &rusqlite::Transaction<'_>,
    id: &TaskRunId,
    change: &StateChange,
) -> StoreResult<()> {
    transaction
        .prepare_cached(
            "INSERT INTO task_run_states (task_run_id, seq, state, message, attempt, at)
             VALUES (?1, (SELECT coalesce(max(seq), 0) + 1 FROM task_run_states WHERE task_run_id = ?1), ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                id.as_str(),
                change.state.as_str(),
                change.message,
                change.attempt,
                change.at.0
            ])
        })
        .map_err(backend("recording a state change"))?;
    Ok(())
}

impl RunStore for SqliteStore {
    fn record_plugin(&self, plugin: &PluginRecord) -> StoreResult<()> {
        let tasks = serde_json::to_string(&plugin.tasks).map_err(|error| StoreError::Backend {
            action: "encoding plugin metadata".into(),
            message: error.to_string(),
        })?;
        self.lock()
            .prepare_cached(
                "INSERT OR IGNORE INTO plugins (digest, name, size, tasks_json, first_seen) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    plugin.digest.as_str(),
                    plugin.name,
                    plugin.size_bytes as i64,
                    tasks,
                    plugin.first_seen.0
                ])
            })
            .map_err(backend("recording a plugin"))?;
        Ok(())
    }

    fn plugin(&self, digest: &ComponentDigest) -> StoreResult<Option<PluginRecord>> {
        self.lock()
            .prepare_cached(
                "SELECT digest, name, size, tasks_json, first_seen FROM plugins WHERE digest = ?1",
            )
            .and_then(|mut statement| {
                statement
                    .query_row([digest.as_str()], |row| {
                        Ok(PluginRecord {
                            digest: ComponentDigest::from_hex(row.get::<_, String>(0)?),
                            name: row.get(1)?,
                            size_bytes: row.get::<_, i64>(2)? as u64,
                            tasks: json_from_sql(row.get(3)?)?,
                            first_seen: Timestamp(row.get(4)?),
                        })
                    })
                    .optional()
            })
            .map_err(backend("reading a plugin"))
    }

    fn create_task_run(
        &self,
        run: &NewTaskRun,
        states: &[StateChange],
        result: Option<&serde_json::Value>,
    ) -> StoreResult<()> {
        let last = states.last().ok_or_else(|| StoreError::Backend {
            action: "creating a task run".into(),
            message: "a task run needs at least one state".into(),
        })?;
        let started = states
            .iter()
            .find(|change| change.state == State::Running)
            .map(|change| change.at.0);
        let ended = last.state.is_final().then_some(last.at.0);
        let mut connection = self.lock();
        let transaction = connection.transaction().map_err(backend("starting a transaction"))?;
        let result_digest = result
            .map(|result| self.put_result(&transaction, result))
            .transpose()?;
        transaction
            .prepare_cached(
                "INSERT INTO task_runs (id, name, task, plugin_name, plugin_digest, flow_run_id, state, state_message,
                     attempts, input_json, tags_json, result_digest, created, started, ended)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    run.id.as_str(),
                    run.name,
                    run.task,
                    run.plugin_name,
                    run.plugin_digest.as_str(),
                    run.flow_run_id.as_ref().map(FlowRunId::as_str),
                    last.state.as_str(),
                    last.message,
                    last.attempt,
                    run.input.to_string(),
                    serde_json::Value::from(run.tags.clone()).to_string(),
                    result_digest,
                    run.created.0,
                    started,
                    ended
                ])
            })
            .map_err(backend("creating a task run"))?;
        for change in states {
            insert_state(&transaction, &run.id, change)?;
        }
        transaction.commit().map_err(backend("committing a new task run"))
    }

    fn set_task_run_state(&self, id: &TaskRunId, change: &StateChange) -> StoreResult<()> {
        let mut connection = self.lock();
        let transaction = connection
            .transaction()
            .map_err(backend("starting a transaction"))?;
        let updated = transaction
            .prepare_cached(
                "UPDATE task_runs SET state = ?2, state_message = ?3, attempts = max(attempts, ?4),
                     started = CASE WHEN ?2 = 'Running' THEN coalesce(started, ?5) ELSE started END
                 WHERE id = ?1",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    id.as_str(),
                    change.state.as_str(),
                    change.message,
                    change.attempt,
                    change.at.0
                ])
            })
            .map_err(backend("updating a task run's state"))?;
        if updated == 0 {
            return Err(StoreError::UnknownTaskRun(id.to_string()));
        }
        insert_state(&transaction, id, change)?;
        transaction
            .commit()
            .map_err(backend("committing a state change"))
    }

    fn finish_task_run(
        &self,
        id: &TaskRunId,
        change: &StateChange,
        result: Option<&serde_json::Value>,
        cache: Option<&CacheEntryDraft>,
    ) -> StoreResult<()> {
        let mut connection = self.lock();
        let transaction = connection
            .transaction()
            .map_err(backend("starting a transaction"))?;
        let result_digest = result
            .map(|result| self.put_result(&transaction, result))
            .transpose()?;
        let updated = transaction
            .prepare_cached(
                "UPDATE task_runs SET state = ?2, state_message = ?3, attempts = max(attempts, ?4), ended = ?5,
                     result_digest = ?6, cache_key = ?7
                 WHERE id = ?1",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    id.as_str(),
                    change.state.as_str(),
                    change.message,
                    change.attempt,
                    change.at.0,
                    result_digest,
                    cache.map(|cache| cache.key.as_str())
                ])
            })
            .map_err(backend("finishing a task run"))?;
        if updated == 0 {
            return Err(StoreError::UnknownTaskRun(id.to_string()));
        }
        insert_state(&transaction, id, change)?;
        if let (Some(cache), Some(result_digest)) = (cache, &result_digest) {
            transaction
                .prepare_cached(
                    "INSERT OR REPLACE INTO cache_entries (key, task, plugin_digest, result_digest, task_run_id, created, expires)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .and_then(|mut statement| {
                    statement.execute(params![
                        cache.key.as_str(),
                        cache.task,
                        cache.plugin_digest.as_str(),
                        result_digest,
                        id.as_str(),
                        change.at.0,
                        cache.expires.map(|expires| expires.0)
                    ])
                })
                .map_err(backend("writing a cache entry"))?;
        }
        transaction
            .commit()
            .map_err(backend("committing a finished task run"))
    }

    fn append_logs(&self, id: &TaskRunId, lines: &[LogRecord]) -> StoreResult<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut connection = self.lock();
        let transaction = connection
            .transaction()
            .map_err(backend("starting a transaction"))?;
        {
            let mut statement = transaction
                .prepare_cached(
                    "INSERT INTO logs (task_run_id, at, level, message) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(backend("preparing a log insert"))?;
            for line in lines {
                statement
                    .execute(params![
                        id.as_str(),
                        line.at.0,
                        line.level.as_str(),
                        line.message
                    ])
                    .map_err(backend("writing a log line"))?;
            }
        }
        transaction
            .commit()
            .map_err(backend("committing log lines"))
    }

    fn task_run(&self, id: &TaskRunId) -> StoreResult<Option<TaskRunRecord>> {
        self.lock()
            .prepare_cached(&format!(
                "SELECT {TASK_RUN_COLUMNS} FROM task_runs WHERE id = ?1"
            ))
            .and_then(|mut statement| {
                statement
                    .query_row([id.as_str()], task_run_from_row)
                    .optional()
            })
            .map_err(backend("reading a task run"))
    }

    fn task_runs(&self, filter: &TaskRunFilter) -> StoreResult<Vec<TaskRunRecord>> {
        let connection = self.lock();
        let mut statement = connection
            .prepare_cached(&format!(
                "SELECT {TASK_RUN_COLUMNS} FROM task_runs
                 WHERE (?1 IS NULL OR task = ?1) AND (?2 IS NULL OR state = ?2) AND (?3 IS NULL OR created >= ?3)
                 ORDER BY id DESC LIMIT ?4"
            ))
            .map_err(backend("listing task runs"))?;
        let rows = statement
            .query_map(
                params![
                    filter.task,
                    filter.state.map(State::as_str),
                    filter.since.map(|since| since.0),
                    filter.limit.map_or(-1, |limit| limit as i64)
                ],
                task_run_from_row,
            )
            .map_err(backend("listing task runs"))?;
        rows.collect::<Result<_, _>>()
            .map_err(backend("listing task runs"))
    }

    fn state_history(&self, id: &TaskRunId) -> StoreResult<Vec<StateChange>> {
        let connection = self.lock();
        let mut statement = connection
            .prepare_cached("SELECT state, message, attempt, at FROM task_run_states WHERE task_run_id = ?1 ORDER BY seq")
            .map_err(backend("reading state history"))?;
        let rows = statement
            .query_map([id.as_str()], |row| {
                Ok(StateChange {
                    state: state_from_sql(row.get(0)?)?,
                    message: row.get(1)?,
                    attempt: row.get(2)?,
                    at: Timestamp(row.get(3)?),
                })
            })
            .map_err(backend("reading state history"))?;
        rows.collect::<Result<_, _>>()
            .map_err(backend("reading state history"))
    }

    fn logs(&self, id: &TaskRunId) -> StoreResult<Vec<LogRecord>> {
        let connection = self.lock();
        let mut statement = connection
            .prepare_cached(
                "SELECT at, level, message FROM logs WHERE task_run_id = ?1 ORDER BY seq",
            )
            .map_err(backend("reading logs"))?;
        let rows = statement
            .query_map([id.as_str()], |row| {
                let level: String = row.get(1)?;
                Ok(LogRecord {
                    at: Timestamp(row.get(0)?),
                    level: LogLevel::parse(&level).unwrap_or(LogLevel::Info),
                    message: row.get(2)?,
                })
            })
            .map_err(backend("reading logs"))?;
        rows.collect::<Result<_, _>>()
            .map_err(backend("reading logs"))
    }

    fn result(&self, digest: &str) -> StoreResult<serde_json::Value> {
        let connection = self.lock();
        self.read_result(&connection, digest)
    }

    fn cached_result(
        &self,
        key: &CacheKey,
        now: Timestamp,
    ) -> StoreResult<Option<(CacheEntry, serde_json::Value)>> {
        let connection = self.lock();
        let entry = connection
            .prepare_cached(
                "SELECT key, task, plugin_digest, result_digest, task_run_id, created, expires FROM cache_entries
                 WHERE key = ?1 AND (expires IS NULL OR expires > ?2)",
            )
            .and_then(|mut statement| statement.query_row(params![key.as_str(), now.0], cache_entry_from_row).optional())
            .map_err(backend("looking up the cache"))?;
        match entry {
            None => Ok(None),
            Some(entry) => {
                let result = self.read_result(&connection, &entry.result_digest)?;
                Ok(Some((entry, result)))
            }
        }
    }

    fn cache_entries(&self) -> StoreResult<Vec<CacheEntry>> {
        let connection = self.lock();
        let mut statement = connection
            .prepare_cached(
                "SELECT key, task, plugin_digest, result_digest, task_run_id, created, expires FROM cache_entries ORDER BY created DESC",
            )
            .map_err(backend("listing the cache"))?;
        let rows = statement
            .query_map([], cache_entry_from_row)
            .map_err(backend("listing the cache"))?;
        rows.collect::<Result<_, _>>()
            .map_err(backend("listing the cache"))
    }

    fn clear_cache(&self) -> StoreResult<usize> {
        self.lock()
            .execute("DELETE FROM cache_entries", [])
            .map_err(backend("clearing the cache"))
    }
}

//! weir's embedded store: one SQLite database in WAL mode (by default
//! `.weir/weir.db` in the working directory) and, beside it, a content-addressed
//! directory `results/` for results too large to keep inline.
//!
//! Writes go to one writer thread that commits whatever is queued in one transaction
//! (group commit), so recording a run costs the caller a channel send, and thousands
//! of concurrent runs share each commit. Writes are applied in order: after a crash
//! the database holds everything up to some point, at most milliseconds before it.
//! Reads see every write made before them ([`RunStore::flush`] is implied), and
//! [`RunStore::flush`] makes everything written so far durable.
//!
//! ```
//! use weir_store::{RunStore, TaskRunFilter};
//! use weir_store_sqlite::SqliteStore;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = SqliteStore::open(dir.path()).unwrap();
//! assert!(store.task_runs(&TaskRunFilter::default()).unwrap().is_empty());
//! ```

mod cache_index;
mod results;
mod schema;
mod writer;

use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use weir_core::{CacheKey, ComponentDigest, FlowRunId, LogLevel, State, TaskRunId, Timestamp};
use weir_store::{
    CacheEntry, CacheEntryDraft, CancelRequest, ConcurrencyLimit, EndedRuns, Ending, FlowRunFilter,
    FlowRunRecord, LogRecord, NewFlowRun, NewTaskRun, OwnerRecord, PluginRecord, RunStore,
    SlotRequest, StateChange, StoreError, StoreResult, TaskRunFilter, TaskRunRecord,
};

use cache_index::CacheIndex;
use writer::{WriteOp, Writer};

/// The embedded SQLite store: a writer thread with its own connection, and a
/// connection for reads.
pub struct SqliteStore {
    reader: Mutex<Connection>,
    writer: Writer,
    cache_index: CacheIndex,
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
        let open = || {
            Connection::open(&database_path).map_err(|error| StoreError::Backend {
                action: format!("opening {}", database_path.display()),
                message: error.to_string(),
            })
        };
        let writer_connection = open()?;
        let found = schema::prepare(&writer_connection).map_err(|error| StoreError::Backend {
            action: format!("reading the database {}", database_path.display()),
            message: describe_open_error(&error),
        })?;
        if found > schema::VERSION {
            return Err(StoreError::NewerSchema {
                path: database_path.display().to_string(),
                found,
                known: schema::VERSION,
            });
        }
        let reader = open()?;
        schema::configure(&reader).map_err(backend("configuring the database connection"))?;
        Ok(SqliteStore {
            reader: Mutex::new(reader),
            writer: Writer::start(writer_connection)?,
            cache_index: CacheIndex::default(),
            results_dir,
            database_path,
        })
    }

    pub fn database_path(&self) -> &Path {
        &self.database_path
    }

    /// Waits for queued writes (so a read sees them) and locks the reading connection.
    fn read(&self) -> StoreResult<MutexGuard<'_, Connection>> {
        if !self.writer.is_idle() {
            self.writer.wait()?;
        }
        // A panic while holding the lock cannot leave a read half done in a way that
        // matters: the connection has no open transaction between calls.
        Ok(self
            .reader
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// A run's state changes, in order (`query` selects state, message, attempt, at).
    fn history(&self, query: &str, id: &str) -> StoreResult<Vec<StateChange>> {
        let connection = self.read()?;
        let mut statement = connection
            .prepare_cached(query)
            .map_err(backend("reading a state history"))?;
        let rows = statement
            .query_map([id], |row| {
                Ok(StateChange {
                    state: state_from_sql(row.get(0)?)?,
                    message: row.get(1)?,
                    attempt: row.get(2)?,
                    at: Timestamp(row.get(3)?),
                })
            })
            .map_err(backend("reading a state history"))?;
        rows.collect::<Result<_, _>>()
            .map_err(backend("reading a state history"))
    }

    fn end_runs(&self, selection: writer::RunSelection, ending: &Ending) -> StoreResult<EndedRuns> {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.writer.send(WriteOp::EndRuns {
            selection,
            ending: ending.clone(),
            reply,
        })?;
        answer.recv().map_err(|_| StoreError::Backend {
            action: "ending runs".into(),
            message: "the store's writer thread has stopped".into(),
        })?
    }

    fn prepare_result(
        &self,
        result: Option<&serde_json::Value>,
    ) -> StoreResult<Option<results::PreparedResult>> {
        result
            .map(|result| results::prepare(&self.results_dir, result))
            .transpose()
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

const TASK_RUN_COLUMNS: &str = "id, name, task, plugin_name, plugin_digest, flow_run_id, state, state_message, attempts, input_json, tags_json, cache_key, result_digest, created, started, ended, node, map_index, owner";

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
        node: row.get(16)?,
        map_index: row.get(17)?,
        owner: row.get(18)?,
    })
}

const FLOW_RUN_COLUMNS: &str = "id, name, flow, source, parameters_json, parent_flow_run_id, parent_node, state, state_message, attempts, result_digest, created, started, ended, owner";

fn flow_run_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<FlowRunRecord> {
    Ok(FlowRunRecord {
        id: FlowRunId::from_string(row.get::<_, String>(0)?),
        name: row.get(1)?,
        flow: row.get(2)?,
        source: row.get(3)?,
        parameters: json_from_sql(row.get(4)?)?,
        parent_flow_run_id: row.get::<_, Option<String>>(5)?.map(FlowRunId::from_string),
        parent_node: row.get(6)?,
        state: state_from_sql(row.get(7)?)?,
        state_message: row.get(8)?,
        attempts: row.get(9)?,
        result_digest: row.get(10)?,
        created: Timestamp(row.get(11)?),
        started: row.get::<_, Option<i64>>(12)?.map(Timestamp),
        ended: row.get::<_, Option<i64>>(13)?.map(Timestamp),
        owner: row.get(14)?,
    })
}

const CACHE_ENTRY_COLUMNS: &str =
    "key, task, plugin_digest, result_digest, task_run_id, created, expires";

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

impl RunStore for SqliteStore {
    fn record_plugin(&self, plugin: &PluginRecord) -> StoreResult<()> {
        let tasks_json =
            serde_json::to_string(&plugin.tasks).map_err(|error| StoreError::Backend {
                action: "encoding plugin metadata".into(),
                message: error.to_string(),
            })?;
        self.writer.send(WriteOp::RecordPlugin {
            plugin: plugin.clone(),
            tasks_json,
        })
    }

    fn plugin(&self, digest: &ComponentDigest) -> StoreResult<Option<PluginRecord>> {
        self.read()?
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
        let result = self.prepare_result(result)?;
        self.writer.send(WriteOp::CreateTaskRun {
            run: run.clone(),
            input_json: run.input.to_string(),
            tags_json: serde_json::Value::from(run.tags.clone()).to_string(),
            states: states.to_vec(),
            result,
        })
    }

    fn set_task_run_state(&self, id: &TaskRunId, change: &StateChange) -> StoreResult<()> {
        self.writer.send(WriteOp::SetState {
            id: id.clone(),
            change: change.clone(),
        })
    }

    fn finish_task_run(
        &self,
        id: &TaskRunId,
        change: &StateChange,
        result: Option<&serde_json::Value>,
        cache: Option<&CacheEntryDraft>,
    ) -> StoreResult<()> {
        let prepared = self.prepare_result(result)?;
        if let (Some(cache), Some(prepared), Some(result)) = (cache, &prepared, result) {
            self.cache_index.insert(
                CacheEntry {
                    key: cache.key.clone(),
                    task: cache.task.clone(),
                    plugin_digest: cache.plugin_digest.clone(),
                    result_digest: prepared.digest.clone(),
                    task_run_id: id.clone(),
                    created: change.at,
                    expires: cache.expires,
                },
                Arc::new(result.clone()),
            );
        }
        self.writer.send(WriteOp::FinishTaskRun {
            id: id.clone(),
            change: change.clone(),
            result: prepared,
            cache: cache.cloned(),
        })
    }

    fn append_logs(&self, id: &TaskRunId, lines: &[LogRecord]) -> StoreResult<()> {
        if lines.is_empty() {
            return Ok(());
        }
        self.writer.send(WriteOp::AppendLogs {
            id: id.clone(),
            lines: lines.to_vec(),
        })
    }

    fn flush(&self) -> StoreResult<()> {
        self.writer.flush()
    }

    fn create_flow_run(&self, run: &NewFlowRun, states: &[StateChange]) -> StoreResult<()> {
        self.writer.send(WriteOp::CreateFlowRun {
            run: run.clone(),
            parameters_json: run.parameters.to_string(),
            states: states.to_vec(),
        })
    }

    fn set_flow_run_state(
        &self,
        id: &FlowRunId,
        change: &StateChange,
        result: Option<&serde_json::Value>,
    ) -> StoreResult<()> {
        let result = self.prepare_result(result)?;
        self.writer.send(WriteOp::SetFlowRunState {
            id: id.clone(),
            change: change.clone(),
            result,
        })
    }

    fn flow_run(&self, id: &FlowRunId) -> StoreResult<Option<FlowRunRecord>> {
        self.read()?
            .prepare_cached(&format!(
                "SELECT {FLOW_RUN_COLUMNS} FROM flow_runs WHERE id = ?1"
            ))
            .and_then(|mut statement| {
                statement
                    .query_row([id.as_str()], flow_run_from_row)
                    .optional()
            })
            .map_err(backend("reading a flow run"))
    }

    fn flow_runs(&self, filter: &FlowRunFilter) -> StoreResult<Vec<FlowRunRecord>> {
        let connection = self.read()?;
        let mut statement = connection
            .prepare_cached(&format!(
                "SELECT {FLOW_RUN_COLUMNS} FROM flow_runs
                 WHERE (?1 IS NULL OR flow = ?1) AND (?2 IS NULL OR state = ?2) AND (?3 IS NULL OR created >= ?3)
                   AND (?5 IS NULL OR name = ?5) AND (?6 IS NULL OR parent_flow_run_id = ?6)
                 ORDER BY id DESC LIMIT ?4"
            ))
            .map_err(backend("listing flow runs"))?;
        let rows = statement
            .query_map(
                params![
                    filter.flow,
                    filter.state.map(State::as_str),
                    filter.since.map(|since| since.0),
                    filter.limit.map_or(-1, |limit| limit as i64),
                    filter.name,
                    filter.parent.as_ref().map(FlowRunId::as_str)
                ],
                flow_run_from_row,
            )
            .map_err(backend("listing flow runs"))?;
        rows.collect::<Result<_, _>>()
            .map_err(backend("listing flow runs"))
    }

    fn flow_run_history(&self, id: &FlowRunId) -> StoreResult<Vec<StateChange>> {
        self.history(
            "SELECT state, message, attempt, at FROM flow_run_states WHERE flow_run_id = ?1 ORDER BY seq",
            id.as_str(),
        )
    }

    fn record_node_output(
        &self,
        id: &FlowRunId,
        node: &str,
        output: &serde_json::Value,
    ) -> StoreResult<()> {
        let result = results::prepare(&self.results_dir, output)?;
        self.writer.send(WriteOp::RecordNodeOutput {
            id: id.clone(),
            node: node.to_owned(),
            result,
        })
    }

    fn node_outputs(&self, id: &FlowRunId) -> StoreResult<Vec<(String, serde_json::Value)>> {
        let connection = self.read()?;
        let nodes: Vec<(String, String)> = connection
            .prepare_cached("SELECT node, result_digest FROM flow_run_nodes WHERE flow_run_id = ?1")
            .and_then(|mut statement| {
                statement
                    .query_map([id.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect::<Result<_, _>>()
            })
            .map_err(backend("reading a flow run's node outputs"))?;
        nodes
            .into_iter()
            .map(|(node, digest)| {
                Ok((
                    node,
                    results::read(&connection, &self.results_dir, &digest)?,
                ))
            })
            .collect()
    }

    fn task_run(&self, id: &TaskRunId) -> StoreResult<Option<TaskRunRecord>> {
        self.read()?
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
        let connection = self.read()?;
        let mut statement = connection
            .prepare_cached(&format!(
                "SELECT {TASK_RUN_COLUMNS} FROM task_runs
                 WHERE (?1 IS NULL OR task = ?1) AND (?2 IS NULL OR state = ?2) AND (?3 IS NULL OR created >= ?3)
                   AND (?5 IS NULL OR flow_run_id = ?5)
                 ORDER BY id DESC LIMIT ?4"
            ))
            .map_err(backend("listing task runs"))?;
        let rows = statement
            .query_map(
                params![
                    filter.task,
                    filter.state.map(State::as_str),
                    filter.since.map(|since| since.0),
                    filter.limit.map_or(-1, |limit| limit as i64),
                    filter.flow_run_id.as_ref().map(FlowRunId::as_str)
                ],
                task_run_from_row,
            )
            .map_err(backend("listing task runs"))?;
        rows.collect::<Result<_, _>>()
            .map_err(backend("listing task runs"))
    }

    fn state_history(&self, id: &TaskRunId) -> StoreResult<Vec<StateChange>> {
        self.history(
            "SELECT state, message, attempt, at FROM task_run_states WHERE task_run_id = ?1 ORDER BY seq",
            id.as_str(),
        )
    }

    fn logs(&self, id: &TaskRunId) -> StoreResult<Vec<LogRecord>> {
        let connection = self.read()?;
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
        let connection = self.read()?;
        results::read(&connection, &self.results_dir, digest)
    }

    fn cached_result(
        &self,
        key: &CacheKey,
        now: Timestamp,
    ) -> StoreResult<Option<(CacheEntry, serde_json::Value)>> {
        if let Some((entry, result)) = self.cache_index.get(key, now) {
            return Ok(Some((entry, (*result).clone())));
        }
        let connection = self.read()?;
        let entry = connection
            .prepare_cached(&format!(
                "SELECT {CACHE_ENTRY_COLUMNS} FROM cache_entries WHERE key = ?1 AND (expires IS NULL OR expires > ?2)"
            ))
            .and_then(|mut statement| {
                statement
                    .query_row(params![key.as_str(), now.0], cache_entry_from_row)
                    .optional()
            })
            .map_err(backend("looking up the cache"))?;
        let Some(entry) = entry else {
            return Ok(None);
        };
        let result = results::read(&connection, &self.results_dir, &entry.result_digest)?;
        drop(connection);
        self.cache_index
            .insert(entry.clone(), Arc::new(result.clone()));
        Ok(Some((entry, result)))
    }

    fn cache_entries(&self) -> StoreResult<Vec<CacheEntry>> {
        let connection = self.read()?;
        let mut statement = connection
            .prepare_cached(&format!(
                "SELECT {CACHE_ENTRY_COLUMNS} FROM cache_entries ORDER BY created DESC"
            ))
            .map_err(backend("listing the cache"))?;
        let rows = statement
            .query_map([], cache_entry_from_row)
            .map_err(backend("listing the cache"))?;
        rows.collect::<Result<_, _>>()
            .map_err(backend("listing the cache"))
    }

    fn clear_cache(&self) -> StoreResult<usize> {
        self.cache_index.clear();
        self.writer.call(|connection| {
            connection
                .execute("DELETE FROM cache_entries", [])
                .map_err(backend("clearing the cache"))
        })
    }

    fn set_concurrency_limit(&self, tag: &str, limit: u32, now: Timestamp) -> StoreResult<()> {
        let tag = tag.to_owned();
        self.writer.call(move |connection| {
            connection
                .execute(
                    "INSERT INTO concurrency_limits (tag, slot_limit, created) VALUES (?1, ?2, ?3)
                     ON CONFLICT (tag) DO UPDATE SET slot_limit = excluded.slot_limit",
                    params![tag, limit, now.0],
                )
                .map_err(backend("setting a concurrency limit"))?;
            Ok(())
        })
    }

    fn concurrency_limit(
        &self,
        tag: &str,
        now: Timestamp,
    ) -> StoreResult<Option<ConcurrencyLimit>> {
        Ok(self
            .concurrency_limits(now)?
            .into_iter()
            .find(|limit| limit.tag == tag))
    }

    fn concurrency_limits(&self, now: Timestamp) -> StoreResult<Vec<ConcurrencyLimit>> {
        let connection = self.read()?;
        let mut limits: Vec<ConcurrencyLimit> = connection
            .prepare_cached("SELECT tag, slot_limit, created FROM concurrency_limits ORDER BY tag")
            .and_then(|mut statement| {
                statement
                    .query_map([], |row| {
                        Ok(ConcurrencyLimit {
                            tag: row.get(0)?,
                            limit: row.get(1)?,
                            holders: Vec::new(),
                            created: Timestamp(row.get(2)?),
                        })
                    })?
                    .collect::<Result<_, _>>()
            })
            .map_err(backend("listing concurrency limits"))?;
        let mut statement = connection
            .prepare_cached("SELECT holder FROM concurrency_slots WHERE tag = ?1 AND expires > ?2 ORDER BY acquired")
            .map_err(backend("listing held slots"))?;
        for limit in &mut limits {
            limit.holders = statement
                .query_map(params![limit.tag, now.0], |row| row.get(0))
                .and_then(|rows| rows.collect::<Result<_, _>>())
                .map_err(backend("listing held slots"))?;
        }
        Ok(limits)
    }

    fn delete_concurrency_limit(&self, tag: &str) -> StoreResult<bool> {
        let tag = tag.to_owned();
        self.writer.call(move |connection| {
            connection
                .execute("DELETE FROM concurrency_slots WHERE tag = ?1", [&tag])
                .and_then(|_| {
                    connection.execute("DELETE FROM concurrency_limits WHERE tag = ?1", [&tag])
                })
                .map(|deleted| deleted > 0)
                .map_err(backend("deleting a concurrency limit"))
        })
    }

    fn reset_concurrency_limit(&self, tag: &str) -> StoreResult<usize> {
        let tag = tag.to_owned();
        self.writer.call(move |connection| {
            connection
                .execute("DELETE FROM concurrency_slots WHERE tag = ?1", [&tag])
                .map_err(backend("resetting a concurrency limit"))
        })
    }

    fn acquire_slots(
        &self,
        tags: &[String],
        holder: &str,
        now: Timestamp,
        expires: Timestamp,
    ) -> StoreResult<SlotRequest> {
        let tags = tags.to_vec();
        let holder = holder.to_owned();
        self.writer.call(move |connection| {
            let acquire = || -> rusqlite::Result<SlotRequest> {
                let mut limited = Vec::new();
                for tag in &tags {
                    let limit: Option<u32> = connection
                        .prepare_cached("SELECT slot_limit FROM concurrency_limits WHERE tag = ?1")?
                        .query_row([tag], |row| row.get(0))
                        .optional()?;
                    let Some(limit) = limit else { continue };
                    if limit == 0 {
                        return Ok(SlotRequest::Zero { tag: tag.clone() });
                    }
                    connection
                        .prepare_cached("DELETE FROM concurrency_slots WHERE tag = ?1 AND expires <= ?2")?
                        .execute(params![tag, now.0])?;
                    let held: u32 = connection
                        .prepare_cached(
                            "SELECT count(*) FROM concurrency_slots WHERE tag = ?1 AND holder != ?2",
                        )?
                        .query_row(params![tag, holder], |row| row.get(0))?;
                    if held >= limit {
                        return Ok(SlotRequest::Full {
                            tag: tag.clone(),
                            limit,
                        });
                    }
                    limited.push(tag);
                }
                for tag in limited {
                    connection
                        .prepare_cached(
                            "INSERT OR REPLACE INTO concurrency_slots (tag, holder, acquired, expires) VALUES (?1, ?2, ?3, ?4)",
                        )?
                        .execute(params![tag, holder, now.0, expires.0])?;
                }
                Ok(SlotRequest::Granted)
            };
            acquire().map_err(backend("acquiring concurrency slots"))
        })
    }

    fn register_owner(&self, owner: &OwnerRecord) -> StoreResult<()> {
        let owner = owner.clone();
        self.writer.call(move |connection| {
            connection
                .execute(
                    "INSERT OR REPLACE INTO owners (id, host, pid, machine, pid_started, started, heartbeat)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        owner.id,
                        owner.host,
                        owner.pid,
                        owner.machine,
                        owner.pid_started as i64,
                        owner.started.0,
                        owner.heartbeat.0
                    ],
                )
                .map_err(backend("registering this process as a run owner"))?;
            Ok(())
        })
    }

    fn heartbeat_owner(&self, owner: &str, now: Timestamp) -> StoreResult<()> {
        let owner = owner.to_owned();
        self.writer.send(WriteOp::Call(Box::new(move |connection| {
            if let Err(error) = connection.execute(
                "UPDATE owners SET heartbeat = max(heartbeat, ?2) WHERE id = ?1",
                params![owner, now.0],
            ) {
                tracing::error!("could not record the heartbeat of {owner}: {error}");
            }
        })))
    }

    fn owners(&self) -> StoreResult<Vec<OwnerRecord>> {
        let connection = self.read()?;
        let mut statement = connection
            .prepare_cached(
                "SELECT id, host, pid, machine, pid_started, started, heartbeat FROM owners ORDER BY started",
            )
            .map_err(backend("listing run owners"))?;
        let rows = statement
            .query_map([], |row| {
                Ok(OwnerRecord {
                    id: row.get(0)?,
                    host: row.get(1)?,
                    pid: row.get(2)?,
                    machine: row.get(3)?,
                    pid_started: row.get::<_, i64>(4)? as u64,
                    started: Timestamp(row.get(5)?),
                    heartbeat: Timestamp(row.get(6)?),
                })
            })
            .map_err(backend("listing run owners"))?;
        rows.collect::<Result<_, _>>()
            .map_err(backend("listing run owners"))
    }

    fn retire_owner(&self, owner: &str, ending: &Ending) -> StoreResult<EndedRuns> {
        self.end_runs(writer::RunSelection::Owner(owner.to_owned()), ending)
    }

    fn set_flow_run_owner(&self, id: &FlowRunId, owner: &str) -> StoreResult<()> {
        let (id, owner) = (id.clone(), owner.to_owned());
        self.writer.call(move |connection| {
            let updated = connection
                .execute(
                    "UPDATE flow_runs SET owner = ?2 WHERE id = ?1",
                    params![id.as_str(), owner],
                )
                .map_err(backend("giving a flow run to this process"))?;
            if updated == 0 {
                return Err(StoreError::UnknownFlowRun(id.to_string()));
            }
            Ok(())
        })
    }

    fn end_flow_run_tree(&self, id: &FlowRunId, ending: &Ending) -> StoreResult<EndedRuns> {
        self.end_runs(writer::RunSelection::FlowRunTree(id.clone()), ending)
    }

    fn request_cancel(&self, run_id: &str, reason: &str, at: Timestamp) -> StoreResult<()> {
        let (run_id, reason) = (run_id.to_owned(), reason.to_owned());
        self.writer.call(move |connection| {
            connection
                .execute(
                    "INSERT OR IGNORE INTO cancel_requests (run_id, reason, requested) VALUES (?1, ?2, ?3)",
                    params![run_id, reason, at.0],
                )
                .map_err(backend("requesting a cancellation"))?;
            Ok(())
        })
    }

    fn cancel_requests(&self, owner: &str) -> StoreResult<Vec<CancelRequest>> {
        let connection = self.read()?;
        let mut statement = connection
            .prepare_cached(
                "SELECT c.run_id, c.reason, c.requested FROM cancel_requests c
                   JOIN flow_runs f ON f.id = c.run_id WHERE f.owner = ?1 AND f.ended IS NULL
                 UNION ALL
                 SELECT c.run_id, c.reason, c.requested FROM cancel_requests c
                   JOIN task_runs t ON t.id = c.run_id WHERE t.owner = ?1 AND t.ended IS NULL",
            )
            .map_err(backend("reading cancellation requests"))?;
        let rows = statement
            .query_map([owner], |row| {
                Ok(CancelRequest {
                    run_id: row.get(0)?,
                    reason: row.get(1)?,
                    requested: Timestamp(row.get(2)?),
                })
            })
            .map_err(backend("reading cancellation requests"))?;
        rows.collect::<Result<_, _>>()
            .map_err(backend("reading cancellation requests"))
    }

    fn renew_slots(&self, holder: &str, expires: Timestamp) -> StoreResult<()> {
        let holder = holder.to_owned();
        self.writer.send(WriteOp::Call(Box::new(move |connection| {
            if let Err(error) = connection.execute(
                "UPDATE concurrency_slots SET expires = ?2 WHERE holder = ?1",
                params![holder, expires.0],
            ) {
                tracing::error!("could not renew the slots of {holder}: {error}");
            }
        })))
    }

    fn release_slots(&self, holder: &str) -> StoreResult<()> {
        let holder = holder.to_owned();
        self.writer.send(WriteOp::Call(Box::new(move |connection| {
            if let Err(error) =
                connection.execute("DELETE FROM concurrency_slots WHERE holder = ?1", [&holder])
            {
                tracing::error!("could not release the slots of {holder}: {error}");
            }
        })))
    }
}

#[cfg(test)]
mod tests;

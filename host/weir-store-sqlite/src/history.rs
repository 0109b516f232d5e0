//! What readers query: runs, histories, logs, results, the change feed, plugins and
//! blobs. Every read first waits for this store's queued writes.

use async_trait::async_trait;
use rusqlite::OptionalExtension;
use std::collections::{BTreeMap, HashMap};
use weir_core::{ComponentDigest, FlowRunId, LogLevel, State, TaskRunId, Timestamp};
use weir_store::{
    Blobs, ChangeCursor, Changes, FlowRunFilter, FlowRunRecord, History, LogRecord, PluginRecord,
    Plugins, StateChange, StoreError, StoreResult, TaskRunFilter, TaskRunRecord, change_log,
};

use crate::rows::{
    FLOW_RUN_COLUMNS, TASK_RUN_COLUMNS, flow_run_from_row, json_from_sql, state_from_sql,
    task_run_from_row,
};
use crate::writer::WriteOp;
use crate::{SqliteStore, backend, results};

impl SqliteStore {
    /// A run's state changes, in order (`query` selects state, message, attempt, at, of
    /// the run `?1` when the tenant `?2` owns it).
    async fn history(&self, query: &str, id: &str) -> StoreResult<Vec<StateChange>> {
        let connection = self.read().await?;
        let mut statement = connection
            .prepare_cached(query)
            .map_err(backend("reading a state history"))?;
        let rows = statement
            .query_map([id, self.tenant()], |row| {
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
}

/// A listing's query with only the conditions a filter sets: with `(?1 IS NULL OR
/// flow_run_id = ?1)` SQLite cannot use the index, and listing one flow run's task runs
/// would read them all.
#[derive(Default)]
struct Query {
    conditions: Vec<String>,
    params: Vec<rusqlite::types::Value>,
}

impl Query {
    fn condition(&mut self, condition: &str, value: Option<impl Into<rusqlite::types::Value>>) {
        if let Some(value) = value {
            self.params.push(value.into());
            self.conditions
                .push(format!("{condition}?{}", self.params.len()));
        }
    }

    /// A condition whose value is followed by more text (`LIKE ?1 ESCAPE …`).
    fn condition_then(
        &mut self,
        condition: &str,
        after: &str,
        value: Option<impl Into<rusqlite::types::Value>>,
    ) {
        if let Some(value) = value {
            self.params.push(value.into());
            self.conditions
                .push(format!("{condition}?{}{after}", self.params.len()));
        }
    }

    /// Newest first (ids sort by creation time), at most `limit`.
    fn sql(&mut self, select: &str, limit: Option<usize>) -> String {
        let mut sql = select.to_owned();
        if !self.conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&self.conditions.join(" AND "));
        }
        sql.push_str(" ORDER BY id DESC");
        if let Some(limit) = limit {
            self.params
                .push(i64::try_from(limit).unwrap_or(i64::MAX).into());
            sql.push_str(&format!(" LIMIT ?{}", self.params.len()));
        }
        sql
    }
}

#[async_trait]
impl History for SqliteStore {
    async fn flow_run(&self, id: &FlowRunId) -> StoreResult<Option<FlowRunRecord>> {
        self.read()
            .await?
            .prepare_cached(&format!(
                "SELECT {FLOW_RUN_COLUMNS} FROM flow_runs WHERE id = ?1 AND tenant = ?2"
            ))
            .and_then(|mut statement| {
                statement
                    .query_row([id.as_str(), self.tenant()], flow_run_from_row)
                    .optional()
            })
            .map_err(backend("reading a flow run"))
    }

    async fn flow_runs(&self, filter: &FlowRunFilter) -> StoreResult<Vec<FlowRunRecord>> {
        let mut query = Query::default();
        query.condition("tenant = ", Some(self.tenant().to_owned()));
        query.condition("flow = ", filter.flow.clone());
        query.condition(
            "state = ",
            filter.state.map(|state| state.as_str().to_owned()),
        );
        query.condition("created >= ", filter.since.map(|since| since.0));
        query.condition("name = ", filter.name.clone());
        query.condition_then(
            "name LIKE ",
            " ESCAPE '\\'",
            filter
                .name_contains
                .as_deref()
                .map(weir_store::like_contains),
        );
        query.condition(
            "parent_flow_run_id = ",
            filter.parent.as_ref().map(FlowRunId::to_string),
        );
        query.condition("id < ", filter.before.as_ref().map(FlowRunId::to_string));
        query.condition_then(
            "EXISTS (SELECT 1 FROM json_each(flow_runs.tags_json) WHERE value = ",
            ")",
            filter.tag.clone(),
        );
        if filter.top_level {
            // `+` keeps SQLite off the parent index: most runs are top-level, and walking
            // them by id stops at the page's end instead of sorting them all.
            query.conditions.push("+parent_flow_run_id IS NULL".into());
        }
        let sql = query.sql(
            &format!("SELECT {FLOW_RUN_COLUMNS} FROM flow_runs"),
            filter.limit,
        );
        let connection = self.read().await?;
        let mut statement = connection
            .prepare_cached(&sql)
            .map_err(backend("listing flow runs"))?;
        let rows = statement
            .query_map(rusqlite::params_from_iter(&query.params), flow_run_from_row)
            .map_err(backend("listing flow runs"))?;
        rows.collect::<Result<_, _>>()
            .map_err(backend("listing flow runs"))
    }

    async fn flow_run_history(&self, id: &FlowRunId) -> StoreResult<Vec<StateChange>> {
        self.history(
            "SELECT state, message, attempt, at FROM flow_run_states WHERE flow_run_id = ?1
               AND EXISTS (SELECT 1 FROM flow_runs WHERE id = ?1 AND tenant = ?2) ORDER BY seq",
            id.as_str(),
        )
        .await
    }

    async fn node_outputs(&self, id: &FlowRunId) -> StoreResult<Vec<(String, serde_json::Value)>> {
        let connection = self.read().await?;
        let nodes: Vec<(String, String)> = connection
            .prepare_cached(
                "SELECT node, result_digest FROM flow_run_nodes WHERE flow_run_id = ?1
                   AND EXISTS (SELECT 1 FROM flow_runs WHERE id = ?1 AND tenant = ?2)",
            )
            .and_then(|mut statement| {
                statement
                    .query_map([id.as_str(), self.tenant()], |row| {
                        Ok((row.get(0)?, row.get(1)?))
                    })?
                    .collect::<Result<_, _>>()
            })
            .map_err(backend("reading a flow run's node outputs"))?;
        nodes
            .into_iter()
            .map(|(node, digest)| {
                Ok((
                    node,
                    results::read(&connection, &self.shared.blobs, &digest)?,
                ))
            })
            .collect()
    }

    async fn flow_graph(&self, id: &FlowRunId) -> StoreResult<Option<weir_store::FlowGraph>> {
        let text: Option<Option<String>> = self
            .read()
            .await?
            .prepare_cached("SELECT graph_json FROM flow_runs WHERE id = ?1 AND tenant = ?2")
            .and_then(|mut statement| {
                statement
                    .query_row([id.as_str(), self.tenant()], |row| row.get(0))
                    .optional()
            })
            .map_err(backend("reading a flow run's graph"))?;
        Ok(weir_store::graph_from_json(text.flatten().as_deref()))
    }

    async fn task_run(&self, id: &TaskRunId) -> StoreResult<Option<TaskRunRecord>> {
        self.read()
            .await?
            .prepare_cached(&format!(
                "SELECT {TASK_RUN_COLUMNS} FROM task_runs WHERE id = ?1 AND tenant = ?2"
            ))
            .and_then(|mut statement| {
                statement
                    .query_row([id.as_str(), self.tenant()], task_run_from_row)
                    .optional()
            })
            .map_err(backend("reading a task run"))
    }

    async fn task_runs(&self, filter: &TaskRunFilter) -> StoreResult<Vec<TaskRunRecord>> {
        let mut query = Query::default();
        query.condition("tenant = ", Some(self.tenant().to_owned()));
        query.condition("task = ", filter.task.clone());
        query.condition(
            "state = ",
            filter.state.map(|state| state.as_str().to_owned()),
        );
        query.condition("created >= ", filter.since.map(|since| since.0));
        query.condition(
            "flow_run_id = ",
            filter.flow_run_id.as_ref().map(FlowRunId::to_string),
        );
        query.condition("id < ", filter.before.as_ref().map(TaskRunId::to_string));
        let sql = query.sql(
            &format!("SELECT {TASK_RUN_COLUMNS} FROM task_runs"),
            filter.limit,
        );
        let connection = self.read().await?;
        let mut statement = connection
            .prepare_cached(&sql)
            .map_err(backend("listing task runs"))?;
        let rows = statement
            .query_map(rusqlite::params_from_iter(&query.params), task_run_from_row)
            .map_err(backend("listing task runs"))?;
        rows.collect::<Result<_, _>>()
            .map_err(backend("listing task runs"))
    }

    async fn state_history(&self, id: &TaskRunId) -> StoreResult<Vec<StateChange>> {
        self.history(
            "SELECT state, message, attempt, at FROM task_run_states WHERE task_run_id = ?1
               AND EXISTS (SELECT 1 FROM task_runs WHERE id = ?1 AND tenant = ?2) ORDER BY seq",
            id.as_str(),
        )
        .await
    }

    async fn task_run_counts(
        &self,
        flow_runs: &[FlowRunId],
    ) -> StoreResult<HashMap<FlowRunId, BTreeMap<State, usize>>> {
        let connection = self.read().await?;
        let mut statement = connection
            .prepare_cached(
                "SELECT state, count(*) FROM task_runs WHERE flow_run_id = ?1 AND tenant = ?2 GROUP BY state",
            )
            .map_err(backend("counting task runs"))?;
        let mut counts = HashMap::new();
        for id in flow_runs {
            let states = statement
                .query_map([id.as_str(), self.tenant()], |row| {
                    Ok((state_from_sql(row.get(0)?)?, row.get::<_, i64>(1)? as usize))
                })
                .and_then(|rows| rows.collect::<Result<BTreeMap<_, _>, _>>())
                .map_err(backend("counting task runs"))?;
            counts.insert(id.clone(), states);
        }
        Ok(counts)
    }

    async fn logs(&self, id: &TaskRunId) -> StoreResult<Vec<LogRecord>> {
        let connection = self.read().await?;
        let mut statement = connection
            .prepare_cached(
                "SELECT at, level, message FROM logs WHERE task_run_id = ?1
                   AND EXISTS (SELECT 1 FROM task_runs WHERE id = ?1 AND tenant = ?2) ORDER BY seq",
            )
            .map_err(backend("reading logs"))?;
        let rows = statement
            .query_map([id.as_str(), self.tenant()], |row| {
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

    async fn result(&self, digest: &str) -> StoreResult<serde_json::Value> {
        let connection = self.read().await?;
        results::read(&connection, &self.shared.blobs, digest)
    }

    async fn changes_now(&self) -> StoreResult<ChangeCursor> {
        let connection = self.read().await?;
        let seq: i64 = connection
            .prepare_cached("SELECT coalesce(max(seq), 0) FROM run_changes")
            .and_then(|mut statement| statement.query_row([], |row| row.get(0)))
            .map_err(backend("reading the change feed's end"))?;
        Ok(ChangeCursor { seq, after: None })
    }

    async fn changes(&self, since: &ChangeCursor, limit: usize) -> StoreResult<Changes> {
        let connection = self.read().await?;
        let (ids, next) = {
            let mut statement = connection
                .prepare_cached(
                    "SELECT seq, run_ids FROM run_changes WHERE seq >= ?1 ORDER BY seq LIMIT ?2",
                )
                .map_err(backend("reading the change feed"))?;
            let entries = statement
                .query_map(
                    rusqlite::params![
                        change_log::first_position(since),
                        i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX)
                    ],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .map_err(backend("reading the change feed"))?
                .map(|entry| entry.map_err(backend("reading the change feed")));
            change_log::read(since, limit, entries)?
        };
        let mut changes = Changes {
            next,
            ..Changes::default()
        };
        // A run changed in two batches of the page is returned once, as it is now.
        let mut seen = std::collections::HashSet::new();
        // Only the tenant's runs: the log lists every tenant's.
        let mut flow_run = connection
            .prepare_cached(&format!(
                "SELECT {FLOW_RUN_COLUMNS} FROM flow_runs WHERE id = ?1 AND tenant = ?2"
            ))
            .map_err(backend("reading the change feed"))?;
        let mut task_run = connection
            .prepare_cached(&format!(
                "SELECT {TASK_RUN_COLUMNS} FROM task_runs WHERE id = ?1 AND tenant = ?2"
            ))
            .map_err(backend("reading the change feed"))?;
        for id in ids {
            if !seen.insert(id.clone()) {
                continue;
            }
            if id.starts_with(FlowRunId::PREFIX) {
                if let Some(run) = flow_run
                    .query_row([id.as_str(), self.tenant()], flow_run_from_row)
                    .optional()
                    .map_err(backend("reading the change feed"))?
                {
                    changes.flow_runs.push(run);
                }
            } else if let Some(run) = task_run
                .query_row([id.as_str(), self.tenant()], task_run_from_row)
                .optional()
                .map_err(backend("reading the change feed"))?
            {
                changes.task_runs.push(run);
            }
        }
        Ok(changes)
    }
}

#[async_trait]
impl Plugins for SqliteStore {
    fn record_plugin(&self, plugin: &PluginRecord) -> StoreResult<()> {
        let tasks_json = serde_json::to_string(&plugin.tasks)
            .map_err(|error| StoreError::backend("encoding plugin metadata", error))?;
        self.shared.writer.send(WriteOp::RecordPlugin {
            tenant: self.tenant.clone(),
            plugin: plugin.clone(),
            tasks_json,
        })?;
        Ok(())
    }

    async fn plugin(&self, digest: &ComponentDigest) -> StoreResult<Option<PluginRecord>> {
        self.read()
            .await?
            .prepare_cached(
                "SELECT digest, name, size, tasks_json, first_seen FROM plugins WHERE tenant = ?2 AND digest = ?1",
            )
            .and_then(|mut statement| {
                statement
                    .query_row([digest.as_str(), self.tenant()], plugin_from_row)
                    .optional()
            })
            .map_err(backend("reading a plugin"))
    }

    async fn plugins(&self) -> StoreResult<Vec<PluginRecord>> {
        self.read()
            .await?
            .prepare_cached(
                "SELECT digest, name, size, tasks_json, first_seen FROM plugins WHERE tenant = ?1 ORDER BY first_seen, digest",
            )
            .and_then(|mut statement| {
                statement
                    .query_map([self.tenant()], plugin_from_row)?
                    .collect::<Result<_, _>>()
            })
            .map_err(backend("listing plugins"))
    }
}

fn plugin_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<PluginRecord> {
    Ok(PluginRecord {
        digest: ComponentDigest::from_hex(row.get::<_, String>(0)?),
        name: row.get(1)?,
        size_bytes: row.get::<_, i64>(2)? as u64,
        tasks: json_from_sql(row.get(3)?)?,
        first_seen: Timestamp(row.get(4)?),
    })
}

#[async_trait]
impl Blobs for SqliteStore {
    async fn put_blob(&self, bytes: &[u8]) -> StoreResult<String> {
        let digest = weir_store::blob_digest(bytes);
        self.shared.blobs.put(&digest, bytes)?;
        Ok(digest)
    }

    async fn blob(&self, digest: &str) -> StoreResult<Option<Vec<u8>>> {
        self.shared.blobs.get(digest)
    }
}

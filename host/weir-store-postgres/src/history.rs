//! What readers query: runs, histories, logs, results, the change feed, plugins and
//! blobs. Every read first waits for this store's queued writes.

use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use weir_core::{ComponentDigest, FlowRunId, LogLevel, State, TaskRunId, Timestamp};
use weir_store::{
    Blobs, ChangeCursor, Changes, FlowRunFilter, FlowRunRecord, History, LogRecord, PluginRecord,
    Plugins, StateChange, StoreError, StoreResult, TaskRunFilter, TaskRunRecord, change_log,
};

use crate::rows::{self, FLOW_RUN_COLUMNS, TASK_RUN_COLUMNS};
use crate::writer::WriteOp;
use crate::{PostgresStore, backend, results};

/// A listing's query with only the conditions a filter sets: a condition such as
/// `($1 IS NULL OR flow_run_id = $1)` would keep PostgreSQL's generic plan from using the
/// index, and a listing of one flow run's task runs would scan them all.
#[derive(Default)]
struct Query {
    conditions: Vec<String>,
    params: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>>,
}

impl Query {
    fn text(&mut self, condition: &str, value: Option<String>) {
        if let Some(value) = value {
            self.params.push(Box::new(value));
            self.conditions
                .push(format!("{condition}${}", self.params.len()));
        }
    }

    /// A condition whose value is followed by more text (`LIKE $1 ESCAPE …`).
    fn text_then(&mut self, condition: &str, after: &str, value: Option<String>) {
        if let Some(value) = value {
            self.params.push(Box::new(value));
            self.conditions
                .push(format!("{condition}${}{after}", self.params.len()));
        }
    }

    fn number(&mut self, condition: &str, value: Option<i64>) {
        if let Some(value) = value {
            self.params.push(Box::new(value));
            self.conditions
                .push(format!("{condition}${}", self.params.len()));
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
        // In the text, not a parameter: statements get generic plans (see `lib.rs`), and
        // one plan for any limit may sort every row to return the first few.
        if let Some(limit) = limit {
            sql.push_str(&format!(" LIMIT {limit}"));
        }
        sql
    }

    fn params(&self) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
        self.params
            .iter()
            .map(|param| param.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect()
    }
}

impl PostgresStore {
    /// A run's state changes, in order (`query` selects state, message, attempt, at, of
    /// the run `$1` when the tenant `$2` owns it).
    async fn history(&self, query: &str, id: &str) -> StoreResult<Vec<StateChange>> {
        let client = self.read().await?;
        let rows = client
            .query(query, &[&id, &self.tenant()])
            .await
            .map_err(backend("reading a state history"))?;
        rows.iter()
            .map(|row| {
                Ok(StateChange {
                    state: rows::state(row.get(0))?,
                    message: row.get(1),
                    attempt: u32::try_from(row.get::<_, i32>(2)).unwrap_or(0),
                    at: Timestamp(row.get(3)),
                })
            })
            .collect()
    }
}

#[async_trait]
impl History for PostgresStore {
    async fn flow_run(&self, id: &FlowRunId) -> StoreResult<Option<FlowRunRecord>> {
        let client = self.read().await?;
        let row = client
            .query_opt(
                &format!("SELECT {FLOW_RUN_COLUMNS} FROM flow_runs WHERE id = $1 AND tenant = $2"),
                &[&id.as_str(), &self.tenant()],
            )
            .await
            .map_err(backend("reading a flow run"))?;
        row.map(|row| rows::flow_run(&row)).transpose()
    }

    async fn flow_runs(&self, filter: &FlowRunFilter) -> StoreResult<Vec<FlowRunRecord>> {
        let mut query = Query::default();
        query.text("tenant = ", Some(self.tenant().to_owned()));
        query.text("flow = ", filter.flow.clone());
        query.text(
            "state = ",
            filter.state.map(|state| state.as_str().to_owned()),
        );
        query.number("created >= ", filter.since.map(|since| since.0));
        query.text("name = ", filter.name.clone());
        query.text_then(
            "name ILIKE ",
            " ESCAPE '\\'",
            filter
                .name_contains
                .as_deref()
                .map(weir_store::like_contains),
        );
        query.text(
            "parent_flow_run_id = ",
            filter.parent.as_ref().map(FlowRunId::to_string),
        );
        query.text("id < ", filter.before.as_ref().map(FlowRunId::to_string));
        query.text_then("tags_json::jsonb ? ", "", filter.tag.clone());
        if filter.top_level {
            query.conditions.push("parent_flow_run_id IS NULL".into());
        }
        let sql = query.sql(
            &format!("SELECT {FLOW_RUN_COLUMNS} FROM flow_runs"),
            filter.limit,
        );
        let client = self.read().await?;
        let statement = client
            .prepare_cached(&sql)
            .await
            .map_err(backend("listing flow runs"))?;
        let rows = client
            .query(&statement, &query.params())
            .await
            .map_err(backend("listing flow runs"))?;
        rows.iter().map(rows::flow_run).collect()
    }

    async fn flow_run_history(&self, id: &FlowRunId) -> StoreResult<Vec<StateChange>> {
        self.history(
            "SELECT state, message, attempt, at FROM flow_run_states WHERE flow_run_id = $1
               AND EXISTS (SELECT 1 FROM flow_runs WHERE id = $1 AND tenant = $2) ORDER BY seq",
            id.as_str(),
        )
        .await
    }

    async fn node_outputs(&self, id: &FlowRunId) -> StoreResult<Vec<(String, serde_json::Value)>> {
        let client = self.read().await?;
        let rows = client
            .query(
                "SELECT node, result_digest FROM flow_run_nodes WHERE flow_run_id = $1
                   AND EXISTS (SELECT 1 FROM flow_runs WHERE id = $1 AND tenant = $2)",
                &[&id.as_str(), &self.tenant()],
            )
            .await
            .map_err(backend("reading a flow run's node outputs"))?;
        let mut outputs = Vec::with_capacity(rows.len());
        for row in rows {
            let digest: String = row.get(1);
            outputs.push((row.get(0), results::read(&client, &digest).await?));
        }
        Ok(outputs)
    }

    async fn flow_graph(&self, id: &FlowRunId) -> StoreResult<Option<weir_store::FlowGraph>> {
        let client = self.read().await?;
        let row = client
            .query_opt(
                "SELECT graph_json FROM flow_runs WHERE id = $1 AND tenant = $2",
                &[&id.as_str(), &self.tenant()],
            )
            .await
            .map_err(backend("reading a flow run's graph"))?;
        let text: Option<String> = row.and_then(|row| row.get(0));
        Ok(weir_store::graph_from_json(text.as_deref()))
    }

    async fn task_run(&self, id: &TaskRunId) -> StoreResult<Option<TaskRunRecord>> {
        let client = self.read().await?;
        let row = client
            .query_opt(
                &format!("SELECT {TASK_RUN_COLUMNS} FROM task_runs WHERE id = $1 AND tenant = $2"),
                &[&id.as_str(), &self.tenant()],
            )
            .await
            .map_err(backend("reading a task run"))?;
        row.map(|row| rows::task_run(&row)).transpose()
    }

    async fn task_runs(&self, filter: &TaskRunFilter) -> StoreResult<Vec<TaskRunRecord>> {
        let mut query = Query::default();
        query.text("tenant = ", Some(self.tenant().to_owned()));
        query.text("task = ", filter.task.clone());
        query.text(
            "state = ",
            filter.state.map(|state| state.as_str().to_owned()),
        );
        query.number("created >= ", filter.since.map(|since| since.0));
        query.text(
            "flow_run_id = ",
            filter.flow_run_id.as_ref().map(FlowRunId::to_string),
        );
        query.text("id < ", filter.before.as_ref().map(TaskRunId::to_string));
        let sql = query.sql(
            &format!("SELECT {TASK_RUN_COLUMNS} FROM task_runs"),
            filter.limit,
        );
        let client = self.read().await?;
        let statement = client
            .prepare_cached(&sql)
            .await
            .map_err(backend("listing task runs"))?;
        let rows = client
            .query(&statement, &query.params())
            .await
            .map_err(backend("listing task runs"))?;
        rows.iter().map(rows::task_run).collect()
    }

    async fn state_history(&self, id: &TaskRunId) -> StoreResult<Vec<StateChange>> {
        self.history(
            "SELECT state, message, attempt, at FROM task_run_states WHERE task_run_id = $1
               AND EXISTS (SELECT 1 FROM task_runs WHERE id = $1 AND tenant = $2) ORDER BY seq",
            id.as_str(),
        )
        .await
    }

    async fn task_run_counts(
        &self,
        flow_runs: &[FlowRunId],
    ) -> StoreResult<HashMap<FlowRunId, BTreeMap<State, usize>>> {
        let client = self.read().await?;
        let ids: Vec<&str> = flow_runs.iter().map(FlowRunId::as_str).collect();
        let rows = client
            .query(
                "SELECT flow_run_id, state, count(*) FROM task_runs WHERE flow_run_id = ANY($1) AND tenant = $2
                 GROUP BY flow_run_id, state",
                &[&ids, &self.tenant()],
            )
            .await
            .map_err(backend("counting task runs"))?;
        let mut counts: HashMap<FlowRunId, BTreeMap<State, usize>> = flow_runs
            .iter()
            .map(|id| (id.clone(), BTreeMap::new()))
            .collect();
        for row in rows {
            let id = FlowRunId::from_string(row.get::<_, String>(0));
            let state = rows::state(row.get(1))?;
            let count = usize::try_from(row.get::<_, i64>(2)).unwrap_or(0);
            counts.entry(id).or_default().insert(state, count);
        }
        Ok(counts)
    }

    async fn logs(&self, id: &TaskRunId) -> StoreResult<Vec<LogRecord>> {
        let client = self.read().await?;
        let rows = client
            .query(
                "SELECT at, level, message FROM logs WHERE task_run_id = $1
                   AND EXISTS (SELECT 1 FROM task_runs WHERE id = $1 AND tenant = $2) ORDER BY seq",
                &[&id.as_str(), &self.tenant()],
            )
            .await
            .map_err(backend("reading logs"))?;
        Ok(rows
            .iter()
            .map(|row| LogRecord {
                at: Timestamp(row.get(0)),
                level: LogLevel::parse(row.get(1)).unwrap_or(LogLevel::Info),
                message: row.get(2),
            })
            .collect())
    }

    async fn result(&self, digest: &str) -> StoreResult<serde_json::Value> {
        let client = self.read().await?;
        results::read(&client, digest).await
    }

    async fn changes_now(&self) -> StoreResult<ChangeCursor> {
        let client = self.read().await?;
        // Every transaction from the oldest still running on is yet to be read.
        let xmin: i64 = client
            .query_one(
                "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
                &[],
            )
            .await
            .map_err(backend("reading the change feed's end"))?
            .get(0);
        Ok(ChangeCursor {
            seq: xmin.saturating_sub(1),
            after: None,
        })
    }

    async fn changes(&self, since: &ChangeCursor, limit: usize) -> StoreResult<Changes> {
        let client = self.read().await?;
        // Only transactions older than every one still running: a later poll then never
        // finds an older transaction that committed after this one looked.
        let rows = client
            .query(
                &format!(
                    "SELECT xid::text::bigint, run_ids FROM run_changes
                     WHERE xid >= $1::text::xid8 AND xid < pg_snapshot_xmin(pg_current_snapshot())
                     ORDER BY xid LIMIT {}",
                    limit.saturating_add(1)
                ),
                &[&change_log::first_position(since).to_string()],
            )
            .await
            .map_err(backend("reading the change feed"))?;
        let entries = rows
            .iter()
            .map(|row| Ok((row.get::<_, i64>(0), row.get::<_, String>(1))));
        let (ids, next) = change_log::read(since, limit, entries)?;
        let mut changes = Changes {
            next,
            ..Changes::default()
        };
        let (flow_ids, task_ids): (Vec<&str>, Vec<&str>) = ids
            .iter()
            .map(String::as_str)
            .partition(|id| id.starts_with(FlowRunId::PREFIX));
        let flow_rows = client
            .query(
                // Only the tenant's runs: the log lists every tenant's.
                &format!(
                    "SELECT {FLOW_RUN_COLUMNS} FROM flow_runs WHERE id = ANY($1) AND tenant = $2"
                ),
                &[&flow_ids, &self.tenant()],
            )
            .await
            .map_err(backend("reading the change feed"))?;
        let task_rows = client
            .query(
                &format!(
                    "SELECT {TASK_RUN_COLUMNS} FROM task_runs WHERE id = ANY($1) AND tenant = $2"
                ),
                &[&task_ids, &self.tenant()],
            )
            .await
            .map_err(backend("reading the change feed"))?;
        // In the order of the log, each run once, as it is now.
        let order: HashMap<&str, usize> = ids
            .iter()
            .enumerate()
            .rev()
            .map(|(index, id)| (id.as_str(), index))
            .collect();
        changes.flow_runs = flow_rows
            .iter()
            .map(rows::flow_run)
            .collect::<StoreResult<_>>()?;
        changes
            .flow_runs
            .sort_by_key(|run| order.get(run.id.as_str()).copied());
        changes.task_runs = task_rows
            .iter()
            .map(rows::task_run)
            .collect::<StoreResult<_>>()?;
        changes
            .task_runs
            .sort_by_key(|run| order.get(run.id.as_str()).copied());
        Ok(changes)
    }
}

#[async_trait]
impl Plugins for PostgresStore {
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
        let client = self.read().await?;
        let row = client
            .query_opt(
                "SELECT digest, name, size, tasks_json, first_seen FROM plugins WHERE tenant = $2 AND digest = $1",
                &[&digest.as_str(), &self.tenant()],
            )
            .await
            .map_err(backend("reading a plugin"))?;
        row.map(|row| rows::plugin(&row)).transpose()
    }

    async fn plugins(&self) -> StoreResult<Vec<PluginRecord>> {
        let client = self.read().await?;
        let rows = client
            .query(
                "SELECT digest, name, size, tasks_json, first_seen FROM plugins WHERE tenant = $1
                 ORDER BY first_seen, digest",
                &[&self.tenant()],
            )
            .await
            .map_err(backend("listing plugins"))?;
        rows.iter().map(rows::plugin).collect()
    }
}

#[async_trait]
impl Blobs for PostgresStore {
    async fn put_blob(&self, bytes: &[u8]) -> StoreResult<String> {
        let digest = weir_store::blob_digest(bytes);
        let client = self.connection().await?;
        client
            .execute(
                "INSERT INTO blobs (digest, bytes) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&digest, &bytes],
            )
            .await
            .map_err(backend("storing a blob"))?;
        Ok(digest)
    }

    async fn blob(&self, digest: &str) -> StoreResult<Option<Vec<u8>>> {
        let client = self.connection().await?;
        let row = client
            .query_opt("SELECT bytes FROM blobs WHERE digest = $1", &[&digest])
            .await
            .map_err(backend("reading a blob"))?;
        row.map(|row| weir_store::check_blob(digest, row.get(0)))
            .transpose()
    }
}

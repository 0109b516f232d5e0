//! What a runner records, and the cache it reads: writes go to the writer thread.

use async_trait::async_trait;
use std::sync::Arc;
use weir_core::{CacheKey, FlowRunId, TaskRunId, Timestamp};
use weir_store::{
    Cache, CacheEntry, CacheEntryDraft, Fence, LogRecord, NewFlowRun, NewTaskRun, StateChange,
    StoreResult,
};

use crate::rows::{CACHE_ENTRY_COLUMNS, cache_entry};
use crate::writer::WriteOp;
use crate::{PostgresStore, backend, results};

weir_store::delegate_recorder!(PostgresStore, self => self.writes(None));
weir_store::delegate_recorder!(FencedRecorder, self => self.store.writes(Some(&self.fence)));

/// A recorder whose writes carry a fence ([`weir_store::Queue::fenced`]).
pub(crate) struct FencedRecorder {
    pub(crate) store: Arc<PostgresStore>,
    pub(crate) fence: Fence,
}

/// The recorder's writes, fenced or not.
pub(crate) struct Writes<'a> {
    store: &'a PostgresStore,
    fence: Option<&'a Fence>,
}

impl PostgresStore {
    pub(crate) fn writes<'a>(&'a self, fence: Option<&'a Fence>) -> Writes<'a> {
        Writes { store: self, fence }
    }
}

impl Writes<'_> {
    /// Queues a write, wrapped in its fence when there is one.
    fn send(&self, op: WriteOp) -> StoreResult<u64> {
        match self.fence {
            None => self.store.shared.writer.send(op),
            Some(fence) => self.store.shared.writer.send(WriteOp::Fenced {
                fence: fence.clone(),
                op: Box::new(op),
            }),
        }
    }

    pub(crate) fn create_task_run(
        &self,
        run: &NewTaskRun,
        states: &[StateChange],
        result: Option<&serde_json::Value>,
    ) -> StoreResult<()> {
        self.send(WriteOp::CreateTaskRun {
            tenant: self.store.tenant.clone(),
            run: run.clone(),
            input_json: run.input.to_string(),
            tags_json: serde_json::Value::from(run.tags.clone()).to_string(),
            states: states.to_vec(),
            result: result.map(results::prepare),
        })?;
        Ok(())
    }

    pub(crate) fn set_task_run_state(
        &self,
        id: &TaskRunId,
        change: &StateChange,
    ) -> StoreResult<()> {
        self.send(WriteOp::SetState {
            id: id.clone(),
            change: change.clone(),
        })?;
        Ok(())
    }

    pub(crate) fn finish_task_run(
        &self,
        id: &TaskRunId,
        change: &StateChange,
        result: Option<&serde_json::Value>,
        cache: Option<&CacheEntryDraft>,
    ) -> StoreResult<()> {
        let prepared = result.map(results::prepare);
        let entry = match (cache, &prepared, result) {
            (Some(cache), Some(prepared), Some(result)) => Some((
                cache.entry(id, &prepared.digest, change.at),
                Arc::new(result.clone()),
            )),
            _ => None,
        };
        let sequence = self.send(WriteOp::FinishTaskRun {
            id: id.clone(),
            change: change.clone(),
            result: prepared,
            cache: cache.cloned(),
        })?;
        if let Some((entry, result)) = entry {
            self.store.shared.pending_cache.insert(
                &self.store.tenant,
                entry,
                result,
                sequence,
                self.store.shared.writer.committed(),
            );
        }
        Ok(())
    }

    pub(crate) fn append_logs(&self, id: &TaskRunId, lines: &[LogRecord]) -> StoreResult<()> {
        if lines.is_empty() {
            return Ok(());
        }
        self.send(WriteOp::AppendLogs {
            id: id.clone(),
            lines: lines.to_vec(),
        })?;
        Ok(())
    }

    pub(crate) fn create_flow_run(
        &self,
        run: &NewFlowRun,
        states: &[StateChange],
    ) -> StoreResult<()> {
        self.send(WriteOp::CreateFlowRun {
            tenant: self.store.tenant.clone(),
            run: run.clone(),
            parameters_json: run.parameters.to_string(),
            states: states.to_vec(),
        })?;
        Ok(())
    }

    pub(crate) fn set_flow_run_state(
        &self,
        id: &FlowRunId,
        change: &StateChange,
        result: Option<&serde_json::Value>,
    ) -> StoreResult<()> {
        self.send(WriteOp::SetFlowRunState {
            id: id.clone(),
            change: change.clone(),
            result: result.map(results::prepare),
        })?;
        Ok(())
    }

    pub(crate) fn record_node_output(
        &self,
        id: &FlowRunId,
        node: &str,
        output: &serde_json::Value,
    ) -> StoreResult<()> {
        self.send(WriteOp::RecordNodeOutput {
            id: id.clone(),
            node: node.to_owned(),
            result: results::prepare(output),
        })?;
        Ok(())
    }

    pub(crate) async fn flush(&self) -> StoreResult<()> {
        self.store.shared.writer.flush().await
    }
}

#[async_trait]
impl Cache for PostgresStore {
    async fn cached_result(
        &self,
        key: &CacheKey,
        now: Timestamp,
    ) -> StoreResult<Option<(CacheEntry, serde_json::Value)>> {
        // Read before the pending entries are looked at: an entry whose write commits in
        // between is then either read here or still pending there.
        let committed = self.shared.writer.committed();
        let client = self.connection().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {CACHE_ENTRY_COLUMNS} FROM cache_entries WHERE tenant = $3 AND key = $1 AND (expires IS NULL OR expires > $2)"
            ))
            .await
            .map_err(backend("looking up the cache"))?;
        let found = match client
            .query_opt(&statement, &[&key.as_str(), &now.0, &self.tenant()])
            .await
            .map_err(backend("looking up the cache"))?
        {
            Some(row) => {
                let entry = cache_entry(&row);
                let result = results::read(&client, &entry.result_digest).await?;
                Some((entry, result))
            }
            None => None,
        };
        if let Some((entry, result)) =
            self.shared
                .pending_cache
                .get(&self.tenant, key, now, committed)
        {
            return Ok(Some((entry, (*result).clone())));
        }
        Ok(found)
    }

    async fn cache_entries(&self) -> StoreResult<Vec<CacheEntry>> {
        let client = self.read().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {CACHE_ENTRY_COLUMNS} FROM cache_entries WHERE tenant = $1 ORDER BY created DESC"
                ),
                &[&self.tenant()],
            )
            .await
            .map_err(backend("listing the cache"))?;
        Ok(rows.iter().map(cache_entry).collect())
    }

    async fn clear_cache(&self) -> StoreResult<usize> {
        let client = self.read().await?;
        let cleared = client
            .execute(
                "DELETE FROM cache_entries WHERE tenant = $1",
                &[&self.tenant()],
            )
            .await
            .map_err(backend("clearing the cache"))?;
        self.shared.pending_cache.clear(&self.tenant);
        Ok(cleared as usize)
    }
}

//! What a runner records, and the cache it reads: writes go to the writer thread.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use std::sync::Arc;
use weir_core::{CacheKey, FlowRunId, TaskRunId, Timestamp};
use weir_store::{
    Cache, CacheEntry, CacheEntryDraft, Fence, LogRecord, NewFlowRun, NewTaskRun, StateChange,
    StoreResult,
};

use crate::rows::{CACHE_ENTRY_COLUMNS, cache_entry_from_row};
use crate::writer::WriteOp;
use crate::{SqliteStore, backend, results};

impl SqliteStore {
    fn prepare_result(
        &self,
        result: Option<&serde_json::Value>,
    ) -> StoreResult<Option<results::PreparedResult>> {
        result
            .map(|result| results::prepare(&self.shared.blobs, result))
            .transpose()
    }
}

weir_store::delegate_recorder!(SqliteStore, self => self.writes(None));
weir_store::delegate_recorder!(FencedRecorder, self => self.store.writes(Some(&self.fence)));

/// A recorder whose writes carry a fence ([`weir_store::Queue::fenced`]).
pub(crate) struct FencedRecorder {
    pub(crate) store: Arc<SqliteStore>,
    pub(crate) fence: Fence,
}

/// The recorder's writes, fenced or not.
pub(crate) struct Writes<'a> {
    store: &'a SqliteStore,
    fence: Option<&'a Fence>,
}

impl SqliteStore {
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
        let result = self.store.prepare_result(result)?;
        self.send(WriteOp::CreateTaskRun {
            tenant: self.store.tenant.clone(),
            run: run.clone(),
            input_json: run.input.to_string(),
            tags_json: serde_json::Value::from(run.tags.clone()).to_string(),
            states: states.to_vec(),
            result,
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
        let prepared = self.store.prepare_result(result)?;
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
        let result = self.store.prepare_result(result)?;
        self.send(WriteOp::SetFlowRunState {
            id: id.clone(),
            change: change.clone(),
            result,
        })?;
        Ok(())
    }

    pub(crate) fn record_node_output(
        &self,
        id: &FlowRunId,
        node: &str,
        output: &serde_json::Value,
    ) -> StoreResult<()> {
        let result = results::prepare(&self.store.shared.blobs, output)?;
        self.send(WriteOp::RecordNodeOutput {
            id: id.clone(),
            node: node.to_owned(),
            result,
        })?;
        Ok(())
    }

    pub(crate) async fn flush(&self) -> StoreResult<()> {
        self.store.shared.writer.flush().await
    }
}

#[async_trait]
impl Cache for SqliteStore {
    async fn cached_result(
        &self,
        key: &CacheKey,
        now: Timestamp,
    ) -> StoreResult<Option<(CacheEntry, serde_json::Value)>> {
        // Read before the pending entries are looked at: an entry whose write commits in
        // between is then either read here or still pending there.
        let committed = self.shared.writer.committed();
        let found = {
            let connection = self.reader_now();
            let entry = connection
                .prepare_cached(&format!(
                    "SELECT {CACHE_ENTRY_COLUMNS} FROM cache_entries WHERE tenant = ?3 AND key = ?1 AND (expires IS NULL OR expires > ?2)"
                ))
                .and_then(|mut statement| {
                    statement
                        .query_row(
                            params![key.as_str(), now.0, self.tenant()],
                            cache_entry_from_row,
                        )
                        .optional()
                })
                .map_err(backend("looking up the cache"))?;
            match entry {
                Some(entry) => {
                    let result =
                        results::read(&connection, &self.shared.blobs, &entry.result_digest)?;
                    Some((entry, result))
                }
                None => None,
            }
        };
        // This process's own entry, newer than what is committed, wins.
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
        let connection = self.read().await?;
        let mut statement = connection
            .prepare_cached(&format!(
                "SELECT {CACHE_ENTRY_COLUMNS} FROM cache_entries WHERE tenant = ?1 ORDER BY created DESC"
            ))
            .map_err(backend("listing the cache"))?;
        let rows = statement
            .query_map([self.tenant()], cache_entry_from_row)
            .map_err(backend("listing the cache"))?;
        rows.collect::<Result<_, _>>()
            .map_err(backend("listing the cache"))
    }

    async fn clear_cache(&self) -> StoreResult<usize> {
        let tenant = self.tenant.clone();
        let cleared = self
            .shared
            .writer
            .call(move |connection| {
                connection
                    .execute(
                        "DELETE FROM cache_entries WHERE tenant = ?1",
                        [tenant.as_str()],
                    )
                    .map_err(backend("clearing the cache"))
            })
            .await;
        self.shared.pending_cache.clear(&self.tenant);
        cleared
    }
}

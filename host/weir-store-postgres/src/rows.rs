//! Reading records out of rows: the column lists (the same as the SQLite store's) and
//! their mapping.

use tokio_postgres::Row;
use weir_core::{CacheKey, ComponentDigest, FlowRunId, State, TaskRunId, Timestamp};
use weir_store::{CacheEntry, FlowRunRecord, StoreError, StoreResult, TaskRunRecord};

pub(crate) const TASK_RUN_COLUMNS: &str = "id, name, task, plugin_name, plugin_digest, flow_run_id, state, state_message, attempts, input_json, tags_json, cache_key, result_digest, created, started, ended, node, map_index, owner";

pub(crate) const FLOW_RUN_COLUMNS: &str = "id, name, flow, source, parameters_json, parent_flow_run_id, parent_node, state, state_message, attempts, result_digest, created, started, ended, owner, tags_json";

pub(crate) const CACHE_ENTRY_COLUMNS: &str =
    "key, task, plugin_digest, result_digest, task_run_id, created, expires";

fn corrupt(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::backend(format!("reading {what}"), error.to_string())
}

pub(crate) fn state(text: &str) -> StoreResult<State> {
    text.parse().map_err(|error| corrupt("a state", error))
}

fn json<T: serde::de::DeserializeOwned>(text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|error| corrupt("stored JSON", error))
}

fn count(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

/// A task run from its columns ([`TASK_RUN_COLUMNS`]).
pub(crate) fn task_run(row: &Row) -> StoreResult<TaskRunRecord> {
    let get_text = |index: usize| -> String { row.get(index) };
    Ok(TaskRunRecord {
        id: TaskRunId::from_string(get_text(0)),
        name: get_text(1),
        task: get_text(2),
        plugin_name: get_text(3),
        plugin_digest: ComponentDigest::from_hex(get_text(4)),
        flow_run_id: row.get::<_, Option<String>>(5).map(FlowRunId::from_string),
        state: state(&get_text(6))?,
        state_message: row.get(7),
        attempts: count(row.get(8)),
        input: json(&get_text(9))?,
        tags: json(&get_text(10))?,
        cache_key: row.get::<_, Option<String>>(11).map(CacheKey::from_hex),
        result_digest: row.get(12),
        created: Timestamp(row.get(13)),
        started: row.get::<_, Option<i64>>(14).map(Timestamp),
        ended: row.get::<_, Option<i64>>(15).map(Timestamp),
        node: row.get(16),
        map_index: row.get::<_, Option<i32>>(17).map(count),
        owner: row.get(18),
    })
}

/// A flow run from its columns ([`FLOW_RUN_COLUMNS`]).
pub(crate) fn flow_run(row: &Row) -> StoreResult<FlowRunRecord> {
    let get_text = |index: usize| -> String { row.get(index) };
    Ok(FlowRunRecord {
        id: FlowRunId::from_string(get_text(0)),
        name: get_text(1),
        flow: get_text(2),
        source: row.get(3),
        parameters: json(&get_text(4))?,
        parent_flow_run_id: row.get::<_, Option<String>>(5).map(FlowRunId::from_string),
        parent_node: row.get(6),
        state: state(&get_text(7))?,
        state_message: row.get(8),
        attempts: count(row.get(9)),
        result_digest: row.get(10),
        created: Timestamp(row.get(11)),
        started: row.get::<_, Option<i64>>(12).map(Timestamp),
        ended: row.get::<_, Option<i64>>(13).map(Timestamp),
        owner: row.get(14),
        tags: serde_json::from_str(&get_text(15)).unwrap_or_default(),
    })
}

pub(crate) fn cache_entry(row: &Row) -> CacheEntry {
    CacheEntry {
        key: CacheKey::from_hex(row.get::<_, String>(0)),
        task: row.get(1),
        plugin_digest: ComponentDigest::from_hex(row.get::<_, String>(2)),
        result_digest: row.get(3),
        task_run_id: TaskRunId::from_string(row.get::<_, String>(4)),
        created: Timestamp(row.get(5)),
        expires: row.get::<_, Option<i64>>(6).map(Timestamp),
    }
}

pub(crate) fn plugin(row: &Row) -> StoreResult<weir_store::PluginRecord> {
    Ok(weir_store::PluginRecord {
        digest: ComponentDigest::from_hex(row.get::<_, String>(0)),
        name: row.get(1),
        size_bytes: u64::try_from(row.get::<_, i64>(2)).unwrap_or(0),
        tasks: json(&row.get::<_, String>(3))?,
        first_seen: Timestamp(row.get(4)),
    })
}

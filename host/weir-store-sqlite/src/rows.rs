//! Reading records out of rows: the column lists and their mapping.

use weir_core::{CacheKey, ComponentDigest, FlowRunId, State, TaskRunId, Timestamp};
use weir_store::{CacheEntry, FlowRunRecord, TaskRunRecord};

pub(crate) fn state_from_sql(text: String) -> rusqlite::Result<State> {
    text.parse().map_err(|error| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(error))
    })
}

pub(crate) fn json_from_sql<T: serde::de::DeserializeOwned>(text: String) -> rusqlite::Result<T> {
    serde_json::from_str(&text).map_err(|error| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(error))
    })
}

pub(crate) const TASK_RUN_COLUMNS: &str = "id, name, task, plugin_name, plugin_digest, flow_run_id, state, state_message, attempts, input_json, tags_json, cache_key, result_digest, created, started, ended, node, map_index, owner";

pub(crate) fn task_run_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TaskRunRecord> {
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

pub(crate) const FLOW_RUN_COLUMNS: &str = "id, name, flow, source, parameters_json, parent_flow_run_id, parent_node, state, state_message, attempts, result_digest, created, started, ended, owner, tags_json";

pub(crate) fn flow_run_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<FlowRunRecord> {
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
        tags: serde_json::from_str(&row.get::<_, String>(15)?).unwrap_or_default(),
    })
}

pub(crate) const CACHE_ENTRY_COLUMNS: &str =
    "key, task, plugin_digest, result_digest, task_run_id, created, expires";

pub(crate) fn cache_entry_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<CacheEntry> {
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

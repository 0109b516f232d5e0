//! What is recorded about runs: the records the role traits take and return.

use serde::{Deserialize, Serialize};
use weir_core::{
    CacheKey, ComponentDigest, FlowRunId, LogLevel, State, TaskInfo, TaskRunId, Timestamp,
};

/// A task run as first recorded, in state Pending.
#[derive(Debug, Clone)]
pub struct NewTaskRun {
    pub id: TaskRunId,
    pub name: String,
    pub task: String,
    pub plugin_name: String,
    pub plugin_digest: ComponentDigest,
    pub flow_run_id: Option<FlowRunId>,
    /// The flow node it runs for.
    pub node: Option<String>,
    /// Its element, when the node maps over a list.
    pub map_index: Option<u32>,
    pub input: serde_json::Value,
    pub tags: Vec<String>,
    pub created: Timestamp,
    /// The process running it (an [`OwnerRecord`] id), so that its death is noticed.
    pub owner: Option<String>,
}

/// A task run as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskRunRecord {
    pub id: TaskRunId,
    pub name: String,
    pub task: String,
    pub plugin_name: String,
    pub plugin_digest: ComponentDigest,
    pub flow_run_id: Option<FlowRunId>,
    pub node: Option<String>,
    pub map_index: Option<u32>,
    pub state: State,
    pub state_message: Option<String>,
    /// Attempts started so far (0 for a cache hit).
    pub attempts: u32,
    pub input: serde_json::Value,
    pub tags: Vec<String>,
    pub cache_key: Option<CacheKey>,
    /// blake3 of the result's JSON text, when there is one.
    pub result_digest: Option<String>,
    pub created: Timestamp,
    pub started: Option<Timestamp>,
    pub ended: Option<Timestamp>,
    /// The process that ran (or runs) it.
    pub owner: Option<String>,
}

/// One entry of a run's state history.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StateChange {
    pub state: State,
    pub message: Option<String>,
    pub attempt: u32,
    pub at: Timestamp,
}

/// One log line of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogRecord {
    pub at: Timestamp,
    pub level: LogLevel,
    pub message: String,
}

/// A reusable result.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CacheEntry {
    pub key: CacheKey,
    pub task: String,
    pub plugin_digest: ComponentDigest,
    pub result_digest: String,
    /// The run that produced the result.
    pub task_run_id: TaskRunId,
    pub created: Timestamp,
    pub expires: Option<Timestamp>,
}

/// A plugin the store has seen, by digest.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PluginRecord {
    pub digest: ComponentDigest,
    pub name: String,
    pub size_bytes: u64,
    pub tasks: Vec<TaskInfo>,
    pub first_seen: Timestamp,
}

/// A flow run as first recorded.
#[derive(Debug, Clone)]
pub struct NewFlowRun {
    pub id: FlowRunId,
    pub name: String,
    pub flow: String,
    /// The flow file, when it came from one.
    pub source: Option<String>,
    pub parameters: serde_json::Value,
    /// The flow run and node that ran this one as a subflow.
    pub parent: Option<(FlowRunId, String)>,
    pub created: Timestamp,
    /// The process driving it (an [`OwnerRecord`] id).
    pub owner: Option<String>,
    /// The flow's nodes and their dependencies, so that a reader can draw the run's
    /// graph without the flow file.
    pub graph: Option<FlowGraph>,
    /// The flow's tags.
    pub tags: Vec<String>,
}

/// The shape of a flow as recorded with its runs: its nodes and the edges between them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FlowGraph {
    /// In the flow file's order.
    pub nodes: Vec<GraphNode>,
}

/// One node of a [`FlowGraph`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GraphNode {
    pub id: String,
    /// `task` or `subflow`.
    pub kind: GraphNodeKind,
    /// What it runs: `plugin.task`, or the subflow's file.
    pub runs: String,
    /// Whether it maps over a list (one task run per element).
    pub mapped: bool,
    /// Nodes whose output its input references.
    pub inputs_from: Vec<String>,
    /// Nodes it waits for without using their output.
    pub wait_for: Vec<String>,
    /// What its task runs are granted, as people read it (`dir /srv as /data
    /// (read-only)`, `env TOKEN`, `http api.github.com`, or an HTTP grant written with a
    /// parameter, `http ${params.api}`).
    #[serde(default)]
    pub grants: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum GraphNodeKind {
    Task,
    Subflow,
}

/// A `LIKE` pattern that matches text containing `text`, with `\\` escaping `%`, `_` and
/// itself (the backends add `ESCAPE '\\'`).
pub fn like_contains(text: &str) -> String {
    let mut pattern = String::from("%");
    for character in text.chars() {
        if matches!(character, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(character);
    }
    pattern.push('%');
    pattern
}

/// Tags as the backends store them (a JSON list).
pub fn tags_json(tags: &[String]) -> String {
    serde_json::Value::from(tags.to_vec()).to_string()
}

/// A graph as the backends store it (JSON text).
pub fn graph_json(graph: Option<&FlowGraph>) -> Option<String> {
    // A graph is plain strings and lists: serializing it cannot fail.
    graph.and_then(|graph| serde_json::to_string(graph).ok())
}

/// A stored graph read back; text that is not a graph (written by a newer weir) reads as
/// none, which only costs a reader its edges.
pub fn graph_from_json(text: Option<&str>) -> Option<FlowGraph> {
    text.and_then(|text| serde_json::from_str(text).ok())
}

/// A flow run as stored.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FlowRunRecord {
    pub id: FlowRunId,
    pub name: String,
    pub flow: String,
    pub source: Option<String>,
    pub parameters: serde_json::Value,
    pub parent_flow_run_id: Option<FlowRunId>,
    pub parent_node: Option<String>,
    pub state: State,
    pub state_message: Option<String>,
    pub attempts: u32,
    pub result_digest: Option<String>,
    pub created: Timestamp,
    pub started: Option<Timestamp>,
    pub ended: Option<Timestamp>,
    /// The process that drove (or drives) it.
    pub owner: Option<String>,
    /// The flow's tags.
    pub tags: Vec<String>,
}

/// Which flow runs to list.
#[derive(Debug, Clone, Default)]
pub struct FlowRunFilter {
    pub flow: Option<String>,
    /// The run's name (e.g. `great-ammonite`).
    pub name: Option<String>,
    /// Runs whose name contains this text (case-insensitive).
    pub name_contains: Option<String>,
    /// Only the subflow runs of this flow run.
    pub parent: Option<FlowRunId>,
    /// Only top-level runs (no subflow runs).
    pub top_level: bool,
    /// Only runs with this tag.
    pub tag: Option<String>,
    pub state: Option<State>,
    pub since: Option<Timestamp>,
    /// A cursor: only runs older than this one (ids sort by creation time), so a page
    /// starts where the last one ended.
    pub before: Option<FlowRunId>,
    pub limit: Option<usize>,
}

/// Which task runs to list.
#[derive(Debug, Clone, Default)]
pub struct TaskRunFilter {
    pub flow_run_id: Option<FlowRunId>,
    pub task: Option<String>,
    pub state: Option<State>,
    pub since: Option<Timestamp>,
    /// A cursor: only runs older than this one.
    pub before: Option<TaskRunId>,
    pub limit: Option<usize>,
}

/// A process that runs work: it heartbeats while it lives, so that the runs it leaves
/// behind when it dies can be told from runs still going on.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OwnerRecord {
    /// `own_…`, new for every process.
    pub id: String,
    pub host: String,
    pub pid: u32,
    /// The machine's boot and process namespace, `boot_id/pidns`: another process on
    /// the same machine may check `pid` directly when this matches its own.
    pub machine: String,
    /// When `pid` started, to tell it from a later process given the same pid.
    pub pid_started: u64,
    pub started: Timestamp,
    pub heartbeat: Timestamp,
}

/// How runs end when they are ended in bulk.
#[derive(Debug, Clone, PartialEq)]
pub struct Ending {
    pub state: State,
    pub message: String,
    pub at: Timestamp,
}

impl Ending {
    /// The state change of one run (at its own attempt).
    pub fn change(&self, attempt: u32) -> StateChange {
        StateChange {
            state: self.state,
            message: Some(self.message.clone()),
            attempt,
            at: self.at,
        }
    }
}

/// The runs a bulk ending ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EndedRuns {
    pub flow_runs: Vec<FlowRunId>,
    pub task_runs: Vec<TaskRunId>,
}

impl EndedRuns {
    pub fn is_empty(&self) -> bool {
        self.flow_runs.is_empty() && self.task_runs.is_empty()
    }
}

/// A request, made by another process, to cancel a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CancelRequest {
    /// A flow run id (`frun_…`) or a task run id (`trun_…`).
    pub run_id: String,
    pub reason: String,
    pub requested: Timestamp,
}

/// A tag's concurrency limit and the slots in use now.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConcurrencyLimit {
    pub tag: String,
    pub limit: u32,
    /// Task runs holding a slot (leases not expired).
    pub holders: Vec<String>,
    pub created: Timestamp,
}

/// The answer to a request for slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotRequest {
    /// Every limited tag had a free slot; they are now held.
    Granted,
    /// A tag's limit is reached; nothing was taken.
    Full { tag: String, limit: u32 },
    /// A tag's limit is 0: runs with it are not to run at all.
    Zero { tag: String },
}

/// A cache entry to write when a run completes.
#[derive(Debug, Clone)]
pub struct CacheEntryDraft {
    pub key: CacheKey,
    pub task: String,
    pub plugin_digest: ComponentDigest,
    pub expires: Option<Timestamp>,
}

impl CacheEntryDraft {
    /// The entry once run `task_run_id` produced the result `result_digest` at `created`.
    pub fn entry(
        &self,
        task_run_id: &TaskRunId,
        result_digest: &str,
        created: Timestamp,
    ) -> CacheEntry {
        CacheEntry {
            key: self.key.clone(),
            task: self.task.clone(),
            plugin_digest: self.plugin_digest.clone(),
            result_digest: result_digest.to_owned(),
            task_run_id: task_run_id.clone(),
            created,
            expires: self.expires,
        }
    }
}

/// A position in the store's feed of changed runs ([`History::changes`](crate::History::changes)):
/// start at the default, then pass each answer's `next`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ChangeCursor {
    /// The backend's commit order: runs changed in commits at or after it come next.
    pub seq: i64,
    /// Within `seq`, the last run already returned (a page may end inside one commit).
    pub after: Option<String>,
}

/// Runs changed since a cursor, each as it is now, oldest change first.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Changes {
    pub flow_runs: Vec<FlowRunRecord>,
    pub task_runs: Vec<TaskRunRecord>,
    /// Where the next poll continues.
    pub next: ChangeCursor,
}

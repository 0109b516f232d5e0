//! The storage interface of weir: what is recorded about runs, and the [`RunStore`]
//! trait every backend implements (`weir-store-sqlite` is the embedded default).
//!
//! The interface is synchronous: a write enqueues or commits in microseconds, less
//! than a hop to a blocking thread would cost. A backend may commit writes in the
//! background, but only in the order they were made, so after a crash the store
//! holds a consistent prefix of the history; [`RunStore::flush`] waits for durability.

use serde::Serialize;
use weir_core::{
    CacheKey, ComponentDigest, FlowRunId, LogLevel, State, TaskInfo, TaskRunId, Timestamp,
};

/// A storage failure, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store error while {action}: {message}")]
    Backend { action: String, message: String },
    #[error("no task run with id `{0}`")]
    UnknownTaskRun(String),
    #[error("no flow run with id `{0}`")]
    UnknownFlowRun(String),
    #[error(
        "the store {path} was written by a newer weir (schema version {found}; this weir knows versions up to {known}): upgrade weir, or use another --store"
    )]
    NewerSchema {
        path: String,
        found: i64,
        known: i64,
    },
    #[error("the stored result {digest} is missing or unreadable: {message}")]
    BrokenResult { digest: String, message: String },
}

pub type StoreResult<T> = Result<T, StoreError>;

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
#[derive(Debug, Clone, Serialize)]
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
pub struct StateChange {
    pub state: State,
    pub message: Option<String>,
    pub attempt: u32,
    pub at: Timestamp,
}

/// One log line of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogRecord {
    pub at: Timestamp,
    pub level: LogLevel,
    pub message: String,
}

/// A reusable result.
#[derive(Debug, Clone, Serialize)]
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
}

/// A flow run as stored.
#[derive(Debug, Clone, Serialize)]
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
}

/// Which flow runs to list.
#[derive(Debug, Clone, Default)]
pub struct FlowRunFilter {
    pub flow: Option<String>,
    /// The run's name (e.g. `great-ammonite`).
    pub name: Option<String>,
    /// Only the subflow runs of this flow run.
    pub parent: Option<FlowRunId>,
    pub state: Option<State>,
    pub since: Option<Timestamp>,
    pub limit: Option<usize>,
}

/// Which task runs to list.
#[derive(Debug, Clone, Default)]
pub struct TaskRunFilter {
    pub flow_run_id: Option<FlowRunId>,
    pub task: Option<String>,
    pub state: Option<State>,
    pub since: Option<Timestamp>,
    pub limit: Option<usize>,
}

/// Where runs are recorded. Implementations must be safe to share between threads.
pub trait RunStore: Send + Sync {
    /// Records a plugin's metadata under its digest (idempotent).
    fn record_plugin(&self, plugin: &PluginRecord) -> StoreResult<()>;
    fn plugin(&self, digest: &ComponentDigest) -> StoreResult<Option<PluginRecord>>;

    /// Inserts the run with its first states (Pending, then e.g. Running or Cached), in
    /// one transaction. When the last state is final, the run is finished with `result`.
    fn create_task_run(
        &self,
        run: &NewTaskRun,
        states: &[StateChange],
        result: Option<&serde_json::Value>,
    ) -> StoreResult<()>;
    /// Moves a run to a non-final state (Running, AwaitingRetry, Pending) and records it.
    fn set_task_run_state(&self, id: &TaskRunId, change: &StateChange) -> StoreResult<()>;
    /// Moves a run to its final state, storing its result (if any) and cache key in the
    /// same transaction, and the cache entry when one is given.
    fn finish_task_run(
        &self,
        id: &TaskRunId,
        change: &StateChange,
        result: Option<&serde_json::Value>,
        cache: Option<&CacheEntryDraft>,
    ) -> StoreResult<()>;
    fn append_logs(&self, id: &TaskRunId, lines: &[LogRecord]) -> StoreResult<()>;
    /// Waits until every write made so far is durable, and reports a write that failed
    /// since the last flush. Backends may apply writes in the background, in order;
    /// reads always see the writes made before them.
    fn flush(&self) -> StoreResult<()>;

    /// Inserts a flow run with its first states.
    fn create_flow_run(&self, run: &NewFlowRun, states: &[StateChange]) -> StoreResult<()>;
    /// Records a flow run's state; a final state ends it, with its result.
    fn set_flow_run_state(
        &self,
        id: &FlowRunId,
        change: &StateChange,
        result: Option<&serde_json::Value>,
    ) -> StoreResult<()>;
    fn flow_run(&self, id: &FlowRunId) -> StoreResult<Option<FlowRunRecord>>;
    fn flow_runs(&self, filter: &FlowRunFilter) -> StoreResult<Vec<FlowRunRecord>>;
    fn flow_run_history(&self, id: &FlowRunId) -> StoreResult<Vec<StateChange>>;
    /// Records the output of a flow run's node once it completed (what a resume reuses).
    fn record_node_output(
        &self,
        id: &FlowRunId,
        node: &str,
        output: &serde_json::Value,
    ) -> StoreResult<()>;
    /// The outputs of the flow run's completed nodes.
    fn node_outputs(&self, id: &FlowRunId) -> StoreResult<Vec<(String, serde_json::Value)>>;

    fn task_run(&self, id: &TaskRunId) -> StoreResult<Option<TaskRunRecord>>;
    fn task_runs(&self, filter: &TaskRunFilter) -> StoreResult<Vec<TaskRunRecord>>;
    fn state_history(&self, id: &TaskRunId) -> StoreResult<Vec<StateChange>>;
    fn logs(&self, id: &TaskRunId) -> StoreResult<Vec<LogRecord>>;
    fn result(&self, digest: &str) -> StoreResult<serde_json::Value>;

    /// Creates or changes a tag's limit.
    fn set_concurrency_limit(&self, tag: &str, limit: u32, now: Timestamp) -> StoreResult<()>;
    fn concurrency_limit(&self, tag: &str, now: Timestamp)
    -> StoreResult<Option<ConcurrencyLimit>>;
    fn concurrency_limits(&self, now: Timestamp) -> StoreResult<Vec<ConcurrencyLimit>>;
    /// Removes a limit; returns whether there was one.
    fn delete_concurrency_limit(&self, tag: &str) -> StoreResult<bool>;
    /// Frees every slot of a tag; returns how many were held.
    fn reset_concurrency_limit(&self, tag: &str) -> StoreResult<usize>;
    /// Atomically takes one slot of each limited tag among `tags` for `holder` until
    /// `expires`, or nothing. Holds across processes sharing the store.
    fn acquire_slots(
        &self,
        tags: &[String],
        holder: &str,
        now: Timestamp,
        expires: Timestamp,
    ) -> StoreResult<SlotRequest>;
    /// Extends the holder's leases (a heartbeat while it runs).
    fn renew_slots(&self, holder: &str, expires: Timestamp) -> StoreResult<()>;
    fn release_slots(&self, holder: &str) -> StoreResult<()>;

    /// Records a process that runs work (see [`OwnerRecord`]); replaces one of that id.
    fn register_owner(&self, owner: &OwnerRecord) -> StoreResult<()>;
    /// The owner is alive at `now`.
    fn heartbeat_owner(&self, owner: &str, now: Timestamp) -> StoreResult<()>;
    fn owners(&self) -> StoreResult<Vec<OwnerRecord>>;
    /// Ends every unfinished flow and task run of `owner` in `ending.state` (each at its
    /// own attempt), frees the concurrency slots its task runs hold, and forgets the
    /// owner, in one transaction. What a process does when it exits, and what another
    /// does for a process that died.
    fn retire_owner(&self, owner: &str, ending: &Ending) -> StoreResult<EndedRuns>;
    /// Gives a flow run (and, from now on, its new task runs) to `owner`: a resume.
    fn set_flow_run_owner(&self, id: &FlowRunId, owner: &str) -> StoreResult<()>;
    /// Ends a flow run and everything under it that has not ended (its subflow runs and
    /// the task runs of all of them), in one transaction, and frees their slots.
    fn end_flow_run_tree(&self, id: &FlowRunId, ending: &Ending) -> StoreResult<EndedRuns>;
    /// Asks the owner of a run (a flow run or task run id) to cancel it.
    fn request_cancel(&self, run_id: &str, reason: &str, at: Timestamp) -> StoreResult<()>;
    /// The cancellation requests for unfinished runs of `owner`.
    fn cancel_requests(&self, owner: &str) -> StoreResult<Vec<CancelRequest>>;

    /// The unexpired entry for `key` at `now`, with its result.
    fn cached_result(
        &self,
        key: &CacheKey,
        now: Timestamp,
    ) -> StoreResult<Option<(CacheEntry, serde_json::Value)>>;
    fn cache_entries(&self) -> StoreResult<Vec<CacheEntry>>;
    /// Removes every cache entry (results stay with their runs); returns how many.
    fn clear_cache(&self) -> StoreResult<usize>;
}

/// A process that runs work: it heartbeats while it lives, so that the runs it leaves
/// behind when it dies can be told from runs still going on.
#[derive(Debug, Clone, PartialEq, Serialize)]
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

use weir_core::{FlowRunId, LogLevel, State, TaskRunId};

/// Names a run in what is shown to a person.
#[derive(Debug, Clone)]
pub struct RunLabel {
    pub id: TaskRunId,
    pub name: String,
    pub task: String,
    /// The flow run and node it belongs to, and its element when the node maps.
    pub flow_run_id: Option<FlowRunId>,
    pub node: Option<String>,
    pub map_index: Option<u32>,
}

/// Names a flow run in what is shown to a person.
#[derive(Debug, Clone)]
pub struct FlowRunLabel {
    pub id: FlowRunId,
    pub name: String,
    pub flow: String,
}

/// What a person watching a run sees, as it happens. Everything here is also in the store.
pub trait RunObserver: Send + Sync {
    fn task_run_created(&self, run: &RunLabel);
    fn task_run_log(&self, run: &RunLabel, level: LogLevel, message: &str);
    fn task_run_state(&self, run: &RunLabel, state: State, message: Option<&str>);
    fn flow_run_created(&self, _run: &FlowRunLabel) {}
    fn flow_run_state(&self, _run: &FlowRunLabel, _state: State, _message: Option<&str>) {}
    /// A node mapping over `total` elements has `finished` of them done (0 when it starts).
    fn map_progress(&self, _run: &FlowRunLabel, _node: &str, _finished: usize, _total: usize) {}
    /// What a worker (by name) does: claims it cannot serve, leases lost, stopping.
    fn worker(&self, _worker: &str, _message: &str) {}
}

/// Shows nothing; for embedding and benchmarks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SilentObserver;

impl RunObserver for SilentObserver {
    fn task_run_created(&self, _run: &RunLabel) {}
    fn task_run_log(&self, _run: &RunLabel, _level: LogLevel, _message: &str) {}
    fn task_run_state(&self, _run: &RunLabel, _state: State, _message: Option<&str>) {}
}

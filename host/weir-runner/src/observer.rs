use weir_core::{FlowRunId, LogLevel, State, TaskRunId};

/// Names a run in what is shown to a person.
#[derive(Debug, Clone)]
pub struct RunLabel {
    pub id: TaskRunId,
    pub name: String,
    pub task: String,
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
}

/// Shows nothing; for embedding and benchmarks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SilentObserver;

impl RunObserver for SilentObserver {
    fn task_run_created(&self, _run: &RunLabel) {}
    fn task_run_log(&self, _run: &RunLabel, _level: LogLevel, _message: &str) {}
    fn task_run_state(&self, _run: &RunLabel, _state: State, _message: Option<&str>) {}
}

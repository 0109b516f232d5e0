//! The run history as people read it: serializable views built from the store's
//! records, so the CLI and the server show the same data (the CLI prints them as text
//! or `--json`, the server returns them). Every view is read through the role traits,
//! on any backend.

use serde::Serialize;
use std::collections::BTreeMap;
use weir_core::{Clock, FlowRunId, State, TaskRunId, Timestamp};
use weir_store::{
    CacheEntry, ConcurrencyLimit, FlowRunFilter, FlowRunRecord, OwnerRecord, StateChange, Store,
    StoreError, TaskRunFilter, TaskRunRecord,
};

use crate::owner::{live_owner, reap_orphans};

/// Why a view could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error("no run `{0}` in the store (see `weir runs ls`)")]
    NoSuchRun(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A run named by a person: a flow run's id (`frun_…`) or name, or a task run's id.
#[derive(Debug, Clone)]
pub enum FoundRun {
    Flow(FlowRunRecord),
    Task(TaskRunRecord),
}

/// Finds a run by flow run id, flow run name (the newest with it) or task run id.
pub async fn find_run(store: &dyn Store, run: &str) -> Result<FoundRun, ViewError> {
    let missing = || ViewError::NoSuchRun(run.to_owned());
    if run.starts_with(TaskRunId::PREFIX) {
        let record = store.task_run(&TaskRunId::from_string(run)).await?;
        return record.map(FoundRun::Task).ok_or_else(missing);
    }
    find_flow_run(store, run).await.map(FoundRun::Flow)
}

/// A flow run by id or name (the newest run with that name).
pub async fn find_flow_run(store: &dyn Store, run: &str) -> Result<FlowRunRecord, ViewError> {
    let missing = || ViewError::NoSuchRun(run.to_owned());
    if run.starts_with(FlowRunId::PREFIX) {
        return store
            .flow_run(&FlowRunId::from_string(run))
            .await?
            .ok_or_else(missing);
    }
    let named = store
        .flow_runs(&FlowRunFilter {
            name: Some(run.to_owned()),
            limit: Some(1),
            ..Default::default()
        })
        .await?;
    named.into_iter().next().ok_or_else(missing)
}

/// The live process running an unfinished run.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunningIn {
    pub owner: String,
    pub pid: u32,
    pub host: String,
    /// Seconds since its last heartbeat.
    pub heartbeat_age_secs: u64,
}

async fn running_in(
    store: &dyn Store,
    state: State,
    owner: Option<&str>,
    now: Timestamp,
) -> Result<Option<RunningIn>, StoreError> {
    let Some(owner) = owner.filter(|_| !state.is_final()) else {
        return Ok(None);
    };
    Ok(live_owner(store, owner, now)
        .await?
        .map(|record: OwnerRecord| RunningIn {
            owner: record.id,
            pid: record.pid,
            host: record.host,
            heartbeat_age_secs: now.since(record.heartbeat).as_secs(),
        }))
}

/// A task run with its history and result.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskRunView {
    pub task_run: TaskRunRecord,
    pub states: Vec<StateChange>,
    pub result: Option<serde_json::Value>,
    pub running_in: Option<RunningIn>,
}

/// The task runs of one node of a flow run.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeView {
    pub node: String,
    pub task_runs: usize,
    /// How many of them are in each state.
    pub states: BTreeMap<State, usize>,
}

/// A flow run with its history, its task runs (oldest first), nodes, subflow runs and
/// result.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FlowRunView {
    pub flow_run: FlowRunRecord,
    pub states: Vec<StateChange>,
    pub task_runs: Vec<TaskRunRecord>,
    /// Its nodes that ran tasks, in the order they first ran.
    pub nodes: Vec<NodeView>,
    /// Oldest first.
    pub subflow_runs: Vec<FlowRunRecord>,
    pub result: Option<serde_json::Value>,
    pub running_in: Option<RunningIn>,
}

/// What `inspect` shows.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum RunView {
    Flow(Box<FlowRunView>),
    Task(Box<TaskRunView>),
}

async fn result_of(
    store: &dyn Store,
    digest: Option<&str>,
) -> Result<Option<serde_json::Value>, StoreError> {
    match digest {
        Some(digest) => Ok(Some(store.result(digest).await?)),
        None => Ok(None),
    }
}

/// The task runs of a flow run, oldest first.
pub async fn task_runs_of(
    store: &dyn Store,
    flow_run: &FlowRunId,
) -> Result<Vec<TaskRunRecord>, StoreError> {
    let mut runs = store
        .task_runs(&TaskRunFilter {
            flow_run_id: Some(flow_run.clone()),
            ..Default::default()
        })
        .await?;
    runs.reverse();
    Ok(runs)
}

pub async fn task_run_view(
    store: &dyn Store,
    run: TaskRunRecord,
    now: Timestamp,
) -> Result<TaskRunView, StoreError> {
    Ok(TaskRunView {
        states: store.state_history(&run.id).await?,
        result: result_of(store, run.result_digest.as_deref()).await?,
        running_in: running_in(store, run.state, run.owner.as_deref(), now).await?,
        task_run: run,
    })
}

pub async fn flow_run_view(
    store: &dyn Store,
    run: FlowRunRecord,
    now: Timestamp,
) -> Result<FlowRunView, StoreError> {
    let task_runs = task_runs_of(store, &run.id).await?;
    let mut subflow_runs = store
        .flow_runs(&FlowRunFilter {
            parent: Some(run.id.clone()),
            ..Default::default()
        })
        .await?;
    subflow_runs.reverse();
    let mut nodes: Vec<NodeView> = Vec::new();
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    for task in &task_runs {
        let Some(node) = task.node.as_deref() else {
            continue;
        };
        let at = *index.entry(node).or_insert_with(|| {
            nodes.push(NodeView {
                node: node.to_owned(),
                task_runs: 0,
                states: BTreeMap::new(),
            });
            nodes.len() - 1
        });
        nodes[at].task_runs += 1;
        *nodes[at].states.entry(task.state).or_insert(0) += 1;
    }
    Ok(FlowRunView {
        states: store.flow_run_history(&run.id).await?,
        result: result_of(store, run.result_digest.as_deref()).await?,
        running_in: running_in(store, run.state, run.owner.as_deref(), now).await?,
        task_runs,
        nodes,
        subflow_runs,
        flow_run: run,
    })
}

/// A run as `inspect` shows it.
pub async fn inspect(store: &dyn Store, run: &str, now: Timestamp) -> Result<RunView, ViewError> {
    Ok(match find_run(store, run).await? {
        FoundRun::Task(run) => RunView::Task(Box::new(task_run_view(store, run, now).await?)),
        FoundRun::Flow(run) => RunView::Flow(Box::new(flow_run_view(store, run, now).await?)),
    })
}

/// One log line of a run, with the task run that wrote it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogLine {
    /// The task run's name.
    pub task_run: String,
    pub task_run_id: TaskRunId,
    pub at: Timestamp,
    pub level: weir_core::LogLevel,
    pub message: String,
}

/// The log lines of a task run, or of every task run of a flow run, in time order.
pub async fn logs(store: &dyn Store, run: &str) -> Result<Vec<LogLine>, ViewError> {
    let runs = match find_run(store, run).await? {
        FoundRun::Task(run) => vec![run],
        FoundRun::Flow(run) => task_runs_of(store, &run.id).await?,
    };
    let mut lines = Vec::new();
    for run in runs {
        for line in store.logs(&run.id).await? {
            lines.push(LogLine {
                task_run: run.name.clone(),
                task_run_id: run.id.clone(),
                at: line.at,
                level: line.level,
                message: line.message,
            });
        }
    }
    lines.sort_by_key(|line| line.at);
    Ok(lines)
}

/// Flow runs, newest first, each with how many of its task runs are in each state.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FlowRunSummary {
    #[serde(flatten)]
    pub flow_run: FlowRunRecord,
    pub task_run_states: BTreeMap<State, usize>,
}

pub async fn flow_runs(
    store: &dyn Store,
    filter: &FlowRunFilter,
) -> Result<Vec<FlowRunSummary>, StoreError> {
    let runs = store.flow_runs(filter).await?;
    let ids: Vec<FlowRunId> = runs.iter().map(|run| run.id.clone()).collect();
    let mut counts = store.task_run_counts(&ids).await?;
    Ok(runs
        .into_iter()
        .map(|run| FlowRunSummary {
            task_run_states: counts.remove(&run.id).unwrap_or_default(),
            flow_run: run,
        })
        .collect())
}

pub async fn task_runs(
    store: &dyn Store,
    filter: &TaskRunFilter,
) -> Result<Vec<TaskRunRecord>, StoreError> {
    store.task_runs(filter).await
}

pub async fn cache_entries(store: &dyn Store) -> Result<Vec<CacheEntry>, StoreError> {
    store.cache_entries().await
}

pub async fn concurrency_limits(
    store: &dyn Store,
    now: Timestamp,
) -> Result<Vec<ConcurrencyLimit>, StoreError> {
    store.concurrency_limits(now).await
}

/// A flow run that was running in a process that stopped, now Crashed.
#[derive(Debug, Clone, Serialize)]
pub struct OrphanedFlowRun {
    pub flow_run: FlowRunRecord,
    /// The process that stopped.
    pub pid: u32,
    pub host: String,
}

/// Records `Crashed` every run whose process stopped (see [`reap_orphans`]) and returns
/// the top-level flow runs it ended: what every reader does first, so that no run is
/// shown `Running` without a live process running it.
pub async fn settle_orphans(
    store: &dyn Store,
    clock: &dyn Clock,
) -> Result<Vec<OrphanedFlowRun>, StoreError> {
    let mut orphaned = Vec::new();
    for (owner, ended) in reap_orphans(store, clock).await? {
        for id in &ended.flow_runs {
            let Some(run) = store.flow_run(id).await? else {
                continue;
            };
            if run.parent_flow_run_id.is_none() {
                orphaned.push(OrphanedFlowRun {
                    flow_run: run,
                    pid: owner.pid,
                    host: owner.host.clone(),
                });
            }
        }
    }
    Ok(orphaned)
}

//! Flow runs: the list (filters, cursor pages), one run, its graph, cancel and resume.

use crate::tenancy::Shared;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};
use weir_core::{FlowRunId, State, Timestamp};
use weir_runner::CancelOutcome;
use weir_runner::views::{self, FlowRunSummary, FoundRun, NodeView, RunningIn};
use weir_store::{FlowRunFilter, FlowRunRecord, GraphNodeKind, StateChange};

use super::{page_size, state_param};
use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Path, Query};

use axum::Json;

/// Which flow runs to list, newest first.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListFlowRuns {
    /// Only runs in this state (`Running`, `Failed`, …).
    pub state: Option<String>,
    /// Only runs of this flow.
    pub flow: Option<String>,
    /// Only runs whose name contains this text (case-insensitive).
    pub name: Option<String>,
    /// Only runs created at or after this time (microseconds since the epoch).
    pub since: Option<i64>,
    /// Only the subflow runs of this flow run.
    pub parent: Option<String>,
    /// Only top-level runs (no subflow runs).
    pub top: Option<bool>,
    /// Only runs of flows with this tag (`tags = […]` in the flow file).
    pub tag: Option<String>,
    /// The cursor: the `next` of the previous page.
    pub before: Option<String>,
    /// At most this many (default 50, at most 500).
    pub limit: Option<usize>,
}

/// A page of flow runs.
#[derive(Debug, Serialize, ToSchema)]
pub struct FlowRunPage {
    pub items: Vec<FlowRunSummary>,
    /// Pass as `before` for the next page; none on the last page.
    pub next: Option<String>,
}

#[utoipa::path(get, path = "/flow-runs", tag = "flow runs", params(ListFlowRuns),
    responses((status = 200, body = FlowRunPage), (status = 400, body = ErrorBody)))]
pub(super) async fn list_flow_runs(
    Shared(app): Shared<Arc<AppState>>,
    Query(query): Query<ListFlowRuns>,
) -> ApiResult<Json<FlowRunPage>> {
    let limit = page_size(query.limit)?;
    let filter = FlowRunFilter {
        flow: query.flow,
        name: None,
        name_contains: query.name.filter(|name| !name.is_empty()),
        parent: query.parent.map(FlowRunId::from_string),
        top_level: query.top.unwrap_or(false),
        tag: query.tag.filter(|tag| !tag.is_empty()),
        state: state_param(query.state.as_deref(), "state")?,
        since: query.since.map(Timestamp),
        before: query.before.map(FlowRunId::from_string),
        // One more than asked: whether a next page exists.
        limit: Some(limit + 1),
    };
    let mut items = app.counts.summaries(app.store.as_ref(), &filter).await?;
    let next = (items.len() > limit).then(|| {
        items.truncate(limit);
        items.last().map(|run| run.flow_run.id.to_string())
    });
    Ok(Json(FlowRunPage {
        items,
        next: next.flatten(),
    }))
}

/// A flow run with its history, nodes, subflow runs and result.
#[derive(Debug, Serialize, ToSchema)]
pub struct FlowRunDetail {
    pub flow_run: FlowRunRecord,
    pub states: Vec<StateChange>,
    /// Its nodes that ran tasks, with their task runs counted by state.
    pub nodes: Vec<NodeView>,
    /// Its task runs counted by state.
    pub task_run_states: BTreeMap<State, usize>,
    /// Oldest first.
    pub subflow_runs: Vec<FlowRunRecord>,
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    pub running_in: Option<RunningIn>,
    /// Where the UI shows it.
    pub url: String,
}

pub(super) async fn find_flow_run(app: &AppState, id: &str) -> ApiResult<FlowRunRecord> {
    Ok(views::find_flow_run(app.store.as_ref(), id).await?)
}

#[utoipa::path(get, path = "/flow-runs/{id}", tag = "flow runs",
    params(("id" = String, Path, description = "A flow run's id (`frun_…`) or name")),
    responses((status = 200, body = FlowRunDetail), (status = 404, body = ErrorBody)))]
pub(super) async fn get_flow_run(
    Shared(app): Shared<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<FlowRunDetail>> {
    let run = find_flow_run(&app, &id).await?;
    let view = views::flow_run_view(app.store.as_ref(), run, app.clock().now()).await?;
    let mut task_run_states = BTreeMap::new();
    for node in &view.nodes {
        for (state, count) in &node.states {
            *task_run_states.entry(*state).or_insert(0) += count;
        }
    }
    Ok(Json(FlowRunDetail {
        url: format!("/runs/{}", view.flow_run.id),
        flow_run: view.flow_run,
        states: view.states,
        nodes: view.nodes,
        task_run_states,
        subflow_runs: view.subflow_runs,
        result: view.result,
        running_in: view.running_in,
    }))
}

/// A task run as the graph and the timeline draw it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TaskRunBrief {
    pub id: String,
    pub name: String,
    pub node: Option<String>,
    pub map_index: Option<u32>,
    pub state: State,
    pub attempts: u32,
    pub created: Timestamp,
    pub started: Option<Timestamp>,
    pub ended: Option<Timestamp>,
}

impl From<&weir_store::TaskRunRecord> for TaskRunBrief {
    fn from(run: &weir_store::TaskRunRecord) -> Self {
        TaskRunBrief {
            id: run.id.to_string(),
            name: run.name.clone(),
            node: run.node.clone(),
            map_index: run.map_index,
            state: run.state,
            attempts: run.attempts,
            created: run.created,
            started: run.started,
            ended: run.ended,
        }
    }
}

/// A node of a run's graph, with what ran for it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunGraphNode {
    pub id: String,
    pub kind: GraphNodeKind,
    /// `plugin.task`, or the subflow's file.
    pub runs: String,
    /// One task run per element of a list.
    pub mapped: bool,
    /// How many task runs (or subflow runs) it has.
    pub count: usize,
    /// How many of them are in each state.
    pub states: BTreeMap<State, usize>,
    /// The most attempts any of them took.
    pub max_attempts: u32,
    /// Its subflow runs' ids, for a subflow node.
    pub subflow_runs: Vec<String>,
    /// What its task runs are granted.
    pub grants: Vec<String>,
}

/// An edge of a run's graph: `to` runs after `from`.
#[derive(Debug, Serialize, ToSchema)]
pub struct GraphEdge {
    pub from: String,
    pub to: String,
    /// `data` when `to` uses the output of `from`, `wait` for a `wait_for`.
    pub kind: String,
}

/// A flow run's graph: its nodes (in the flow file's order), the edges between them,
/// and every task run, small, for the nodes' details and the timeline.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunGraph {
    pub flow_run: FlowRunRecord,
    pub nodes: Vec<RunGraphNode>,
    pub edges: Vec<GraphEdge>,
    /// Oldest first.
    pub task_runs: Vec<TaskRunBrief>,
    /// Whether the flow's shape was recorded (runs recorded by older weir versions have
    /// nodes from their task runs only, and no edges).
    pub recorded: bool,
}

#[utoipa::path(get, path = "/flow-runs/{id}/graph", tag = "flow runs",
    params(("id" = String, Path, description = "A flow run's id or name")),
    responses((status = 200, body = RunGraph), (status = 404, body = ErrorBody)))]
pub(super) async fn get_graph(
    Shared(app): Shared<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<RunGraph>> {
    let run = find_flow_run(&app, &id).await?;
    let store = app.store.as_ref();
    let graph = store.flow_graph(&run.id).await?;
    let task_runs = views::task_runs_of(store, &run.id).await?;
    let mut subflows = store
        .flow_runs(&FlowRunFilter {
            parent: Some(run.id.clone()),
            ..Default::default()
        })
        .await?;
    subflows.reverse();
    let recorded = graph.is_some();
    let mut nodes: Vec<RunGraphNode> = Vec::new();
    let mut edges = Vec::new();
    if let Some(graph) = graph {
        for node in graph.nodes {
            for from in &node.inputs_from {
                edges.push(GraphEdge {
                    from: from.clone(),
                    to: node.id.clone(),
                    kind: "data".into(),
                });
            }
            for from in node
                .wait_for
                .iter()
                .filter(|from| !node.inputs_from.contains(from))
            {
                edges.push(GraphEdge {
                    from: from.clone(),
                    to: node.id.clone(),
                    kind: "wait".into(),
                });
            }
            nodes.push(RunGraphNode {
                id: node.id,
                kind: node.kind,
                runs: node.runs,
                mapped: node.mapped,
                count: 0,
                states: BTreeMap::new(),
                max_attempts: 0,
                subflow_runs: Vec::new(),
                grants: node.grants,
            });
        }
    }
    let mut index: BTreeMap<String, usize> = nodes
        .iter()
        .enumerate()
        .map(|(at, node)| (node.id.clone(), at))
        .collect();
    let mut place = |id: &str, kind: GraphNodeKind, runs: &str| -> usize {
        *index.entry(id.to_owned()).or_insert_with(|| {
            nodes.push(RunGraphNode {
                id: id.to_owned(),
                kind,
                runs: runs.to_owned(),
                mapped: false,
                count: 0,
                states: BTreeMap::new(),
                max_attempts: 0,
                subflow_runs: Vec::new(),
                grants: Vec::new(),
            });
            nodes.len() - 1
        })
    };
    let mut counted = Vec::new();
    for task in &task_runs {
        let Some(node) = task.node.as_deref() else {
            continue;
        };
        let at = place(node, GraphNodeKind::Task, &task.task);
        counted.push((at, task.state, task.attempts, task.map_index.is_some()));
    }
    let mut subflow_counts = Vec::new();
    for subflow in &subflows {
        let Some(node) = subflow.parent_node.as_deref() else {
            continue;
        };
        let at = place(node, GraphNodeKind::Subflow, &subflow.flow);
        subflow_counts.push((at, subflow.state, subflow.attempts, subflow.id.to_string()));
    }
    for (at, state, attempts, mapped) in counted {
        let node = &mut nodes[at];
        node.count += 1;
        node.mapped |= mapped;
        *node.states.entry(state).or_insert(0) += 1;
        node.max_attempts = node.max_attempts.max(attempts);
    }
    for (at, state, attempts, id) in subflow_counts {
        let node = &mut nodes[at];
        node.count += 1;
        *node.states.entry(state).or_insert(0) += 1;
        node.max_attempts = node.max_attempts.max(attempts);
        node.subflow_runs.push(id);
    }
    Ok(Json(RunGraph {
        flow_run: run,
        nodes,
        edges,
        task_runs: task_runs.iter().map(TaskRunBrief::from).collect(),
        recorded,
    }))
}

/// What a cancel request did.
#[derive(Debug, Serialize, ToSchema)]
pub struct CancelAnswer {
    pub id: String,
    /// The run's state now.
    pub state: State,
    pub message: String,
}

/// How long a cancel request waits for the process running the run.
const CANCEL_GRACE: Duration = Duration::from_secs(5);
const CANCEL_REASON: &str = "requested through the API";

pub(super) async fn cancel(
    app: &AppState,
    found: FoundRun,
) -> ApiResult<(StatusCode, Json<CancelAnswer>)> {
    let (kind, id, name) = match &found {
        FoundRun::Flow(run) => ("flow run", run.id.to_string(), run.name.clone()),
        FoundRun::Task(run) => ("task run", run.id.to_string(), run.name.clone()),
    };
    let outcome = weir_runner::cancel_run(
        app.store.as_ref(),
        app.clock(),
        &found,
        CANCEL_REASON,
        CANCEL_GRACE,
    )
    .await?;
    let answer = |status, state, message: String| {
        Ok((
            status,
            Json(CancelAnswer {
                id: id.clone(),
                state,
                message,
            }),
        ))
    };
    match outcome {
        CancelOutcome::AlreadyEnded(state) => Err(ApiError::conflict(format!(
            "{kind} '{name}' ({id}) already ended {state}: there is nothing to cancel"
        ))),
        CancelOutcome::EndedBy { owner, state } => answer(
            StatusCode::OK,
            state,
            format!(
                "{kind} '{name}' ended {state} (cancelled by process {} on {})",
                owner.pid, owner.host
            ),
        ),
        CancelOutcome::EndedHere => answer(
            StatusCode::OK,
            State::Cancelled,
            format!("{kind} '{name}' ended Cancelled"),
        ),
        CancelOutcome::Asked { owner, state } => answer(
            StatusCode::ACCEPTED,
            state,
            format!(
                "asked process {} on {} to cancel {kind} '{name}'; it has not recorded the end yet",
                owner.pid, owner.host
            ),
        ),
    }
}

#[utoipa::path(post, path = "/flow-runs/{id}/cancel", tag = "flow runs",
    params(("id" = String, Path, description = "A flow run's id or name")),
    responses(
        (status = 200, body = CancelAnswer, description = "The run ended"),
        (status = 202, body = CancelAnswer, description = "The process running it was asked and has not ended it yet"),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The run had already ended")))]
pub(super) async fn cancel_flow_run(
    Shared(app): Shared<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<CancelAnswer>)> {
    let run = find_flow_run(&app, &id).await?;
    cancel(&app, FoundRun::Flow(run)).await
}

/// A flow run queued or resumed.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubmittedRun {
    pub id: String,
    pub name: String,
    pub state: State,
    /// Where the UI shows it.
    pub url: String,
}

#[utoipa::path(post, path = "/flow-runs/{id}/resume", tag = "flow runs",
    params(("id" = String, Path, description = "A flow run's id or name")),
    responses(
        (status = 202, body = SubmittedRun, description = "The run continues in this server's process"),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The run completed or is still running, or this server runs no work")))]
pub(super) async fn resume_flow_run(
    Shared(app): Shared<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<SubmittedRun>)> {
    let run = find_flow_run(&app, &id).await?;
    if run.parent_flow_run_id.is_some() {
        return Err(ApiError::conflict(format!(
            "'{}' is a subflow run: resume its top-level flow run",
            run.name
        )));
    }
    if !run.state.is_final() {
        return Err(ApiError::conflict(format!(
            "flow run '{}' is still {}: only an ended run can be resumed",
            run.name, run.state
        )));
    }
    if matches!(run.state, State::Completed | State::Cached) {
        return Err(ApiError::conflict(format!(
            "flow run '{}' completed: there is nothing to resume",
            run.name
        )));
    }
    if !app.config.runs_work {
        return Err(ApiError::conflict(
            "this server runs no work (--no-worker): resume the run with `weir run --resume` where it can run",
        ));
    }
    let flows = app.flows.clone();
    let id = run.id.clone();
    tokio::spawn(async move {
        if let Err(error) = flows.resume_flow(&id).await {
            tracing::warn!("resuming flow run {id}: {error}");
        }
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(SubmittedRun {
            url: format!("/runs/{}", run.id),
            id: run.id.to_string(),
            name: run.name,
            state: run.state,
        }),
    ))
}

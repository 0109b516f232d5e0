//! Task runs (the list, one run, its states, attempts and result, cancel) and logs.

use crate::tenancy::Shared;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};
use weir_core::{FlowRunId, LogLevel, State, TaskInfo, TaskRunId, Timestamp};
use weir_runner::views::{self, FoundRun, LogLine, TaskRunView};
use weir_store::{StateChange, TaskRunFilter, TaskRunRecord};

use super::flow_runs::{CancelAnswer, cancel};
use super::{page_size, state_param};
use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Path, Query};

use axum::Json;

/// A result larger than this is not inlined in a task run's detail: it is linked.
pub const MAX_INLINE_RESULT_BYTES: usize = 64 << 10;

/// Which task runs to list, newest first.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListTaskRuns {
    /// Only the task runs of this flow run (its id).
    pub flow_run: Option<String>,
    /// Only runs of this task.
    pub task: Option<String>,
    /// Only runs in this state.
    pub state: Option<String>,
    /// Only runs created at or after this time (microseconds since the epoch).
    pub since: Option<i64>,
    /// The cursor: the `next` of the previous page.
    pub before: Option<String>,
    /// At most this many (default 50, at most 500).
    pub limit: Option<usize>,
}

/// A page of task runs.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskRunPage {
    pub items: Vec<TaskRunRecord>,
    /// Pass as `before` for the next page; none on the last page.
    pub next: Option<String>,
}

#[utoipa::path(get, path = "/task-runs", tag = "task runs", params(ListTaskRuns),
    responses((status = 200, body = TaskRunPage), (status = 400, body = ErrorBody)))]
pub(super) async fn list_task_runs(
    Shared(app): Shared<Arc<AppState>>,
    Query(query): Query<ListTaskRuns>,
) -> ApiResult<Json<TaskRunPage>> {
    let limit = page_size(query.limit)?;
    let filter = TaskRunFilter {
        flow_run_id: query.flow_run.map(FlowRunId::from_string),
        task: query.task,
        state: state_param(query.state.as_deref(), "state")?,
        since: query.since.map(Timestamp),
        before: query.before.map(TaskRunId::from_string),
        limit: Some(limit + 1),
    };
    let mut items = views::task_runs(app.store.as_ref(), &filter).await?;
    let next = (items.len() > limit).then(|| {
        items.truncate(limit);
        items.last().map(|run| run.id.to_string())
    });
    Ok(Json(TaskRunPage {
        items,
        next: next.flatten(),
    }))
}

/// One attempt of a task run.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Attempt {
    /// From 1.
    pub attempt: u32,
    pub started: Timestamp,
    pub ended: Option<Timestamp>,
    /// How it ended (`AwaitingRetry` when another attempt followed), or `Running`.
    pub state: State,
    /// Its error, for an attempt that failed.
    pub message: Option<String>,
}

/// The attempts in a state history: each `Running` starts one; the next state of the
/// same attempt number ends it.
pub fn attempts(states: &[StateChange]) -> Vec<Attempt> {
    let mut attempts: Vec<Attempt> = Vec::new();
    for change in states {
        if change.state == State::Running {
            attempts.push(Attempt {
                attempt: change.attempt,
                started: change.at,
                ended: None,
                state: State::Running,
                message: None,
            });
            continue;
        }
        if let Some(last) = attempts.last_mut()
            && last.attempt == change.attempt
            && last.ended.is_none()
        {
            last.ended = Some(change.at);
            last.state = change.state;
            last.message = change.message.clone();
        }
    }
    attempts
}

/// The plugin that ran a task run.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginOfRun {
    pub name: String,
    pub digest: String,
    /// The task's metadata, as the plugin declared it.
    pub task: Option<TaskInfo>,
}

/// A task run with its history, attempts, result and plugin.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskRunDetail {
    #[serde(flatten)]
    pub view: TaskRunView,
    pub attempts: Vec<Attempt>,
    /// Set when the result is too large to inline (`result` is then none): fetch it there.
    pub result_url: Option<String>,
    pub plugin: PluginOfRun,
    /// What it was granted, for a task run of a flow (its node's grants, as recorded with
    /// the flow run): `dir /srv as /data (read-only)`, `env TOKEN`, `http HOST`.
    pub grants: Vec<String>,
    /// Where the UI shows it.
    pub url: String,
}

async fn find_task_run(app: &AppState, id: &str) -> ApiResult<TaskRunRecord> {
    if !id.starts_with(TaskRunId::PREFIX) {
        return Err(ApiError::not_found(format!(
            "no task run `{id}`: task run ids start with `{}`",
            TaskRunId::PREFIX
        )));
    }
    app.store
        .task_run(&TaskRunId::from_string(id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no task run `{id}` in the store")))
}

#[utoipa::path(get, path = "/task-runs/{id}", tag = "task runs",
    params(("id" = String, Path, description = "A task run's id (`trun_…`)")),
    responses((status = 200, body = TaskRunDetail), (status = 404, body = ErrorBody)))]
pub(super) async fn get_task_run(
    Shared(app): Shared<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<TaskRunDetail>> {
    let run = find_task_run(&app, &id).await?;
    let plugin_record = app.store.plugin(&run.plugin_digest).await?;
    let grants = match (&run.flow_run_id, &run.node) {
        (Some(flow_run), Some(node)) => app
            .store
            .flow_graph(flow_run)
            .await?
            .and_then(|graph| {
                graph
                    .nodes
                    .into_iter()
                    .find(|graph_node| &graph_node.id == node)
            })
            .map(|graph_node| graph_node.grants)
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    let mut view = views::task_run_view(app.store.as_ref(), run, app.clock().now()).await?;
    let large = view
        .result
        .as_ref()
        .is_some_and(|result| result.to_string().len() > MAX_INLINE_RESULT_BYTES);
    let result_url = large.then(|| format!("/api/v1/task-runs/{}/result", view.task_run.id));
    if large {
        view.result = None;
    }
    let plugin = PluginOfRun {
        name: view.task_run.plugin_name.clone(),
        digest: view.task_run.plugin_digest.to_string(),
        task: plugin_record.and_then(|record| {
            record
                .tasks
                .into_iter()
                .find(|task| task.name == view.task_run.task)
        }),
    };
    Ok(Json(TaskRunDetail {
        attempts: attempts(&view.states),
        url: format!("/task-runs/{}", view.task_run.id),
        result_url,
        plugin,
        grants,
        view,
    }))
}

#[utoipa::path(get, path = "/task-runs/{id}/states", tag = "task runs",
    params(("id" = String, Path, description = "A task run's id")),
    responses((status = 200, body = Vec<StateChange>), (status = 404, body = ErrorBody)))]
pub(super) async fn get_states(
    Shared(app): Shared<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<StateChange>>> {
    let run = find_task_run(&app, &id).await?;
    Ok(Json(app.store.state_history(&run.id).await?))
}

#[utoipa::path(get, path = "/task-runs/{id}/attempts", tag = "task runs",
    params(("id" = String, Path, description = "A task run's id")),
    responses((status = 200, body = Vec<Attempt>), (status = 404, body = ErrorBody)))]
pub(super) async fn get_attempts(
    Shared(app): Shared<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<Attempt>>> {
    let run = find_task_run(&app, &id).await?;
    Ok(Json(attempts(&app.store.state_history(&run.id).await?)))
}

#[utoipa::path(get, path = "/task-runs/{id}/result", tag = "task runs",
    params(("id" = String, Path, description = "A task run's id")),
    responses((status = 200, description = "The result, as JSON", content_type = "application/json"),
        (status = 404, body = ErrorBody, description = "No such run, or it has no result")))]
pub(super) async fn get_result(
    Shared(app): Shared<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let run = find_task_run(&app, &id).await?;
    let Some(digest) = &run.result_digest else {
        return Err(ApiError::not_found(format!(
            "task run '{}' has no result (it is {})",
            run.name, run.state
        )));
    };
    let result = app.store.result(digest).await?;
    Ok(Json(result).into_response())
}

#[utoipa::path(post, path = "/task-runs/{id}/cancel", tag = "task runs",
    params(("id" = String, Path, description = "A task run's id")),
    responses(
        (status = 200, body = CancelAnswer, description = "The run ended"),
        (status = 202, body = CancelAnswer, description = "The process running it was asked and has not ended it yet"),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The run had already ended")))]
pub(super) async fn cancel_task_run(
    Shared(app): Shared<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<CancelAnswer>)> {
    let run = find_task_run(&app, &id).await?;
    cancel(&app, FoundRun::Task(run)).await
}

/// Which log lines to read, in time order.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListLogs {
    /// A flow run (its id or name: the lines of all its task runs) or a task run id.
    pub run: String,
    /// Only lines at this level or above (`debug`, `info`, `warning`, `error`).
    pub level: Option<String>,
    /// Lines to skip: the `next` of the previous page.
    pub offset: Option<usize>,
    /// At most this many (default 50, at most 500).
    pub limit: Option<usize>,
}

/// A page of log lines.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogPage {
    pub items: Vec<LogLine>,
    /// Lines that match in all.
    pub total: usize,
    /// Pass as `offset` for the next page; none on the last page.
    pub next: Option<usize>,
}

pub(super) fn level_param(text: Option<&str>) -> ApiResult<Option<LogLevel>> {
    text.map(|text| {
        LogLevel::parse(text).ok_or_else(|| {
            ApiError::bad_request(format!(
                "unknown log level `{text}` (levels: trace, debug, info, warning, error)"
            ))
            .with_field("level")
        })
    })
    .transpose()
}

#[utoipa::path(get, path = "/logs", tag = "logs", params(ListLogs),
    responses((status = 200, body = LogPage), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn list_logs(
    Shared(app): Shared<Arc<AppState>>,
    Query(query): Query<ListLogs>,
) -> ApiResult<Json<LogPage>> {
    let limit = page_size(query.limit)?;
    let level = level_param(query.level.as_deref())?;
    let lines = views::logs(app.store.as_ref(), &query.run).await?;
    let matching: Vec<LogLine> = lines
        .into_iter()
        .filter(|line| level.is_none_or(|level| line.level >= level))
        .collect();
    let total = matching.len();
    let offset = query.offset.unwrap_or(0).min(total);
    let items: Vec<LogLine> = matching.into_iter().skip(offset).take(limit).collect();
    let end = offset + items.len();
    Ok(Json(LogPage {
        items,
        total,
        next: (end < total).then_some(end),
    }))
}

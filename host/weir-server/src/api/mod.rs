//! The JSON API, `/api/v1`: every route, and the OpenAPI document generated from the
//! handlers' annotations and the types' schemas.

use axum::Router;
use axum::routing::{get, post};
use std::sync::Arc;
use std::time::Duration;
use utoipa::OpenApi;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};

mod events;
mod flow_runs;
mod flows;
mod plugins;
mod settings;
mod task_runs;
mod whoami;

pub use events::RunEvent;
pub use flow_runs::{
    CancelAnswer, FlowRunDetail, FlowRunPage, GraphEdge, RunGraph, RunGraphNode, SubmittedRun,
    TaskRunBrief,
};
pub use task_runs::{Attempt, LogPage, TaskRunDetail, TaskRunPage};
pub use whoami::Whoami;

/// The most items a page holds, whatever `limit` asks.
pub const MAX_PAGE: usize = 500;
/// Items per page when `limit` is not given.
pub const DEFAULT_PAGE: usize = 50;
/// How long a request may take (event streams excepted).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(OpenApi)]
#[openapi(
    info(
        title = "weir",
        description = "The API of a weir server: flows, flow runs, task runs, logs, plugins, the cache and concurrency limits, each of the caller's tenant only (another tenant's is not found). Calls bear `Authorization: Bearer TOKEN` once the server needs a token; reading needs a token of scope `read`, changing runs `run`, changing limits and the cache `admin` (403 otherwise). Times are microseconds since the Unix epoch. Errors are `ErrorBody` objects.",
        license(name = "Apache-2.0 WITH LLVM-exception OR MIT")
    ),
    servers((url = "/api/v1")),
    paths(
        flows::list_flows,
        flows::get_flow,
        flows::submit_run,
        flow_runs::list_flow_runs,
        flow_runs::get_flow_run,
        flow_runs::get_graph,
        flow_runs::cancel_flow_run,
        flow_runs::resume_flow_run,
        events::flow_run_events,
        task_runs::list_task_runs,
        task_runs::get_task_run,
        task_runs::get_states,
        task_runs::get_attempts,
        task_runs::get_result,
        task_runs::cancel_task_run,
        task_runs::list_logs,
        plugins::list_plugins,
        plugins::get_plugin,
        plugins::upload_plugin,
        settings::list_cache,
        settings::clear_cache,
        settings::list_limits,
        settings::get_limit,
        settings::set_limit,
        settings::delete_limit,
        settings::reset_limit,
        whoami::whoami,
    ),
    components(schemas(ErrorBody, RunEvent))
)]
pub struct ApiDoc;

/// The OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

pub(crate) fn router(state: Arc<AppState>) -> Router {
    let document = Arc::new(openapi());
    let max_plugin = state.config.max_plugin_bytes;
    let bounded = Router::new()
        .route(
            "/openapi.json",
            get(move || {
                let document = document.clone();
                async move { axum::Json(document.as_ref().clone()) }
            }),
        )
        .route("/whoami", get(whoami::whoami))
        .route("/flows", get(flows::list_flows))
        .route("/flows/{name}", get(flows::get_flow))
        .route("/flows/{name}/runs", post(flows::submit_run))
        .route("/flow-runs", get(flow_runs::list_flow_runs))
        .route("/flow-runs/{id}", get(flow_runs::get_flow_run))
        .route("/flow-runs/{id}/graph", get(flow_runs::get_graph))
        .route("/flow-runs/{id}/cancel", post(flow_runs::cancel_flow_run))
        .route("/flow-runs/{id}/resume", post(flow_runs::resume_flow_run))
        .route("/task-runs", get(task_runs::list_task_runs))
        .route("/task-runs/{id}", get(task_runs::get_task_run))
        .route("/task-runs/{id}/states", get(task_runs::get_states))
        .route("/task-runs/{id}/attempts", get(task_runs::get_attempts))
        .route("/task-runs/{id}/result", get(task_runs::get_result))
        .route("/task-runs/{id}/cancel", post(task_runs::cancel_task_run))
        .route("/logs", get(task_runs::list_logs))
        .route(
            "/plugins",
            get(plugins::list_plugins).post(plugins::upload_plugin),
        )
        .route("/plugins/{digest}", get(plugins::get_plugin))
        .route(
            "/cache",
            get(settings::list_cache).delete(settings::clear_cache),
        )
        .route("/concurrency-limits", get(settings::list_limits))
        .route(
            "/concurrency-limits/{tag}",
            get(settings::get_limit)
                .put(settings::set_limit)
                .delete(settings::delete_limit),
        )
        .route(
            "/concurrency-limits/{tag}/reset",
            post(settings::reset_limit),
        )
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ));
    Router::new()
        .merge(bounded)
        .route("/flow-runs/{id}/events", get(events::flow_run_events))
        .fallback(|uri: axum::http::Uri| async move {
            ApiError::not_found(format!(
                "no API route `{}` (see /api/v1/openapi.json)",
                uri.path()
            ))
        })
        // The plugin upload reads its own body, up to its own bound (see `plugins`).
        .layer(axum::extract::DefaultBodyLimit::max(max_plugin))
        .with_state(state)
}

/// A page size asked for, checked.
fn page_size(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(0) => Err(ApiError::bad_request("`limit` must be at least 1").with_field("limit")),
        Some(limit) if limit > MAX_PAGE => {
            Err(ApiError::bad_request(format!("`limit` is at most {MAX_PAGE}")).with_field("limit"))
        }
        Some(limit) => Ok(limit),
    }
}

/// A state named in a query (`Completed`, case-insensitive).
fn state_param(text: Option<&str>, field: &str) -> Result<Option<weir_core::State>, ApiError> {
    text.map(|text| {
        text.parse::<weir_core::State>()
            .map_err(|error| ApiError::bad_request(error.to_string()).with_field(field))
    })
    .transpose()
}

//! Flows: the flow files of the server's flow directories, and runs of them submitted
//! to the queue.

use crate::tenancy::Shared;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;
use weir_core::State;
use weir_runner::FlowRunError;
use weir_store::FlowGraph;

use super::flow_runs::SubmittedRun;
use crate::catalog::CatalogEntry;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Json as Body, Path};
use crate::{AppState, CatalogEntry as Entry};

use axum::Json;

#[utoipa::path(get, path = "/flows", tag = "flows",
    responses((status = 200, body = Vec<CatalogEntry>, description = "The flow files of the server's flow directories, by name")))]
pub(super) async fn list_flows(Shared(app): Shared<Arc<AppState>>) -> Json<Vec<Entry>> {
    let catalog = app.catalog.clone();
    // Reading files is blocking work.
    let entries = tokio::task::spawn_blocking(move || catalog.entries())
        .await
        .unwrap_or_default();
    Json(entries)
}

/// A flow file: what the list shows, its graph and its text.
#[derive(Debug, Serialize, ToSchema)]
pub struct FlowDetail {
    #[serde(flatten)]
    pub entry: CatalogEntry,
    pub graph: FlowGraph,
    /// The file's text.
    pub source: String,
}

async fn find(app: &AppState, name: &str) -> ApiResult<Entry> {
    let catalog = app.catalog.clone();
    let wanted = name.to_owned();
    let found = tokio::task::spawn_blocking(move || catalog.find(&wanted))
        .await
        .ok()
        .flatten();
    found.ok_or_else(|| {
        ApiError::not_found(format!(
            "no runnable flow named `{name}` in the server's flow directories (see GET /api/v1/flows)"
        ))
    })
}

#[utoipa::path(get, path = "/flows/{name}", tag = "flows",
    params(("name" = String, Path, description = "The flow's name")),
    responses((status = 200, body = FlowDetail), (status = 404, body = ErrorBody)))]
pub(super) async fn get_flow(
    Shared(app): Shared<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult<Json<FlowDetail>> {
    let entry = find(&app, &name).await?;
    let flow = entry
        .flow
        .as_ref()
        .expect("runnable entries hold their flow");
    let source = fs_err::read_to_string(&entry.file)
        .map_err(|error| ApiError::not_found(format!("the flow file is gone: {error}")))?;
    Ok(Json(FlowDetail {
        graph: weir_runner::graph_of(flow),
        source,
        entry,
    }))
}

/// A run to submit.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitRun {
    /// The run's parameters by name; the flow's defaults fill in the rest.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub parameters: serde_json::Map<String, serde_json::Value>,
}

#[utoipa::path(post, path = "/flows/{name}/runs", tag = "flows",
    params(("name" = String, Path, description = "The flow's name")),
    request_body = SubmitRun,
    responses(
        (status = 201, body = SubmittedRun, description = "Queued for a worker"),
        (status = 400, body = ErrorBody, description = "The body is not JSON"),
        (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "A parameter is unknown, missing or of the wrong type (`field` names it), or a node grants more than the tenant may"),
        (status = 429, body = ErrorBody, description = "The tenant's quota of runs submitted per minute is used up (`Retry-After` says for how long)")))]
pub(super) async fn submit_run(
    Shared(app): Shared<Arc<AppState>>,
    Path(name): Path<String>,
    Body(body): Body<SubmitRun>,
) -> ApiResult<(StatusCode, Json<SubmittedRun>)> {
    let entry = find(&app, &name).await?;
    let flow = entry.flow.expect("runnable entries hold their flow");
    let settings = app.settings().await?;
    let tenant = app.store.tenant_id();
    // With the defaults: a grant written with a parameter may take one. Parameters that do
    // not bind are refused by the submission below, which says why.
    let bound = flow
        .bind_parameters(&body.parameters)
        .unwrap_or_else(|_| body.parameters.clone());
    if let Some((node, beyond)) = settings
        .ceilings
        .as_ref()
        .and_then(|ceilings| weir_runner::grants_beyond(&flow, &bound, ceilings))
    {
        return Err(ApiError::unprocessable(format!(
            "flow `{}`, node `{node}`: it grants {beyond}, beyond what tenant `{tenant}` may grant",
            flow.name
        )));
    }
    let quotas = settings.quotas;
    if let Some(per_minute) = quotas.runs_per_minute {
        let burst = quotas.runs_burst.unwrap_or(per_minute);
        if let Err(wait) = app
            .store
            .take_submission(tenant, app.clock().now(), per_minute, burst)
            .await?
        {
            let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
            return Err(ApiError::quota_reached(
                format!(
                    "tenant `{tenant}` has used its quota of {per_minute} runs submitted per minute ({burst} at once): try again in {seconds} s"
                ),
                seconds,
            ));
        }
    }
    let submitted = app
        .flows
        .submit_flow(&flow, &body.parameters)
        .await
        .map_err(|error| match error {
            FlowRunError::Invalid(error) => {
                let api = ApiError::unprocessable(error.message.clone());
                match error.field {
                    Some(field) => api.with_field(field),
                    None => api,
                }
            }
            FlowRunError::Store(error) => error.into(),
            error @ FlowRunError::Plugin { .. } => ApiError::unprocessable(error.to_string()),
        })?;
    Ok((
        StatusCode::CREATED,
        Json(SubmittedRun {
            url: format!("/runs/{}", submitted.id),
            id: submitted.id.to_string(),
            name: submitted.name,
            state: State::Pending,
        }),
    ))
}

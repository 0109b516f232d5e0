//! Resuming a flow run: what it finished is reused (node outputs, map elements, a task
//! run whose node output was not recorded, completed subflow runs), unfinished subflow
//! runs are continued, and a run still driven by a live process is refused.

use serde_json::Value;
use std::sync::Arc;
use weir_core::{FlowRunId, State};
use weir_flow::{Flow, FlowError};
use weir_store::{FlowRunFilter, StateChange, TaskRunFilter};

use super::prepare::Source;
use super::{BoxFuture, FlowRunError, FlowRunOutcome, FlowRunner, PreparedFlow, Resumed};
use crate::cancel::CancelToken;
use crate::observer::FlowRunLabel;

impl FlowRunner {
    /// Continues a flow run that was interrupted (its process killed, or cancelled) or
    /// that failed: completed nodes and map elements are reused, an unfinished subflow
    /// run is continued the same way, the rest runs. The flow file must still be where
    /// the run was started from.
    pub async fn resume_flow(
        self: &Arc<Self>,
        id: &FlowRunId,
    ) -> Result<FlowRunOutcome, FlowRunError> {
        let store = self.tasks.store().clone();
        let record = store.flow_run(id).await?.ok_or_else(|| FlowError {
            origin: id.to_string(),
            node: None,
            field: None,
            message: "no flow run with this id in the store".into(),
        })?;
        let refuse = |message: String| FlowError {
            origin: format!("flow run '{}' ({})", record.name, record.id),
            node: None,
            field: None,
            message,
        };
        if record.state == State::Completed {
            return Err(refuse("it already completed; there is nothing to resume".into()).into());
        }
        // Two processes driving one run would run its nodes twice.
        if let Some(owner) = &record.owner
            && owner != self.tasks.owner_id()
            && !record.state.is_final()
        {
            let now = self.tasks.clock().now();
            if let Some(live) = crate::owner::live_owner(store.as_ref(), owner, now).await? {
                return Err(refuse(format!(
                    "it is still running in process {} on {}; cancel it first (`weir runs cancel {}`)",
                    live.pid, live.host, record.name
                ))
                .into());
            }
        }
        let source = record.source.clone().ok_or_else(|| {
            refuse("it was not started from a flow file, so it cannot be resumed".into())
        })?;
        let flow = Flow::load(std::path::Path::new(&source))?;
        let prepared = self.prepare(flow, Vec::new(), &Source::Files).await?;
        let cancel = self.tasks.cancel_token();
        self.resume_prepared(record, prepared, cancel).await
    }

    /// Resumes a recorded flow run of a prepared flow (a top-level run, or a subflow run
    /// whose parent is being resumed).
    pub(super) fn resume_prepared(
        self: &Arc<Self>,
        record: weir_store::FlowRunRecord,
        prepared: Arc<PreparedFlow>,
        cancel: CancelToken,
    ) -> BoxFuture<'_, Result<FlowRunOutcome, FlowRunError>> {
        Box::pin(async move {
            let store = self.tasks.store().clone();
            let id = &record.id;
            let Value::Object(given) = record.parameters.clone() else {
                return Err(FlowError {
                    origin: format!("flow run '{}' ({})", record.name, record.id),
                    node: None,
                    field: None,
                    message: "its recorded parameters are not an object".into(),
                }
                .into());
            };
            let parameters = prepared.flow.bind_parameters(&given)?;
            let resumed = self.what_was_done(id, false).await?;
            let label = FlowRunLabel {
                id: record.id.clone(),
                name: record.name.clone(),
                flow: record.flow.clone(),
            };
            let attempt = record.attempts + 1;
            self.tasks.ensure_owner().await?;
            store
                .set_flow_run_owner(&label.id, self.tasks.owner_id())
                .await?;
            let _active = self.tasks.activate(label.id.as_str(), &cancel);
            store.set_flow_run_state(
                &label.id,
                &StateChange {
                    state: State::Running,
                    message: Some("resumed".into()),
                    attempt,
                    at: self.tasks.clock().now(),
                },
                None,
            )?;
            self.drive(prepared, parameters, label, resumed, attempt, cancel, None)
                .await
        })
    }

    /// What a flow run finished before it stopped: node outputs, completed map elements
    /// and task runs, and its subflow runs. Its unfinished task runs are recorded Crashed
    /// (they will run again).
    /// Driven from the queue (`queued`), its unfinished runs are still queued or running
    /// on workers: they are waited for, not crashed and run again.
    pub(super) async fn what_was_done(
        &self,
        id: &FlowRunId,
        queued: bool,
    ) -> Result<Resumed, FlowRunError> {
        let store = self.tasks.store();
        let mut resumed = Resumed::default();
        for (node, output) in store.node_outputs(id).await? {
            resumed.nodes.insert(node, output);
        }
        let filter = TaskRunFilter {
            flow_run_id: Some(id.clone()),
            ..Default::default()
        };
        for run in store.task_runs(&filter).await? {
            match (
                &run.node,
                run.map_index,
                run.state.is_success(),
                &run.result_digest,
            ) {
                (Some(node), Some(index), true, Some(digest)) => {
                    resumed
                        .elements
                        .insert((node.clone(), index), store.result(digest).await?);
                }
                // Completed, but the process stopped before it recorded the node's output:
                // running it again would complete it twice.
                (Some(node), None, true, Some(digest)) if !resumed.nodes.contains_key(node) => {
                    let output = store.result(digest).await?;
                    resumed.nodes.insert(node.clone(), output);
                }
                (Some(node), index, false, _) if queued && !run.state.is_final() => {
                    resumed
                        .in_flight
                        .insert((node.clone(), index), run.id.to_string());
                }
                _ if !run.state.is_final() => {
                    // Its process died while it ran; it will run again.
                    let change = StateChange {
                        state: State::Crashed,
                        message: Some("the process running it stopped before it finished".into()),
                        attempt: run.attempts,
                        at: self.tasks.clock().now(),
                    };
                    store.finish_task_run(&run.id, &change, None, None)?;
                }
                _ => {}
            }
        }
        let children = store
            .flow_runs(&FlowRunFilter {
                parent: Some(id.clone()),
                ..Default::default()
            })
            .await?;
        // Newest first: the latest run of each subflow node is the one to continue.
        for child in children {
            let Some(node) = child.parent_node.clone() else {
                continue;
            };
            if resumed.nodes.contains_key(&node) || resumed.subflows.contains_key(&node) {
                continue;
            }
            if child.state == State::Completed {
                // It completed, but its parent stopped before recording the node.
                let output = match &child.result_digest {
                    Some(digest) => store.result(digest).await?,
                    None => Value::Null,
                };
                resumed.nodes.insert(node, output);
            } else if queued && !child.state.is_final() {
                resumed.in_flight.insert((node, None), child.id.to_string());
            } else {
                resumed.subflows.insert(node, child);
            }
        }
        Ok(resumed)
    }
}

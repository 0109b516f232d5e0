//! A map node: one task run per element of its mapped fields (zipped), each taking a
//! share of the map's permits and then a permit of the runner's, outputs gathered in
//! order; elements completed before a resume are not run again.

use serde_json::{Map, Value};
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use weir_core::State;

use super::NodeOutcome;
use super::graph::{FlowRunShared, execute_request};

/// Runs a map node whose input is resolved.
pub(super) async fn run_map(
    shared: &Arc<FlowRunShared>,
    node_id: &str,
    plugin: &str,
    task: &str,
    input: &Value,
    map: &[String],
) -> NodeOutcome {
    let failed = |cause: String| NodeOutcome::Failed {
        state: State::Failed,
        cause,
    };
    let inputs = match fan_out(input, map) {
        Ok(inputs) => inputs,
        Err(cause) => return failed(cause),
    };
    let total = inputs.len();
    let mut outputs = vec![Value::Null; total];
    let mut first_failure = None;
    let observer = shared.runner.tasks.observer().clone();
    observer.map_progress(&shared.label, node_id, 0, total);
    let mut finished = 0;
    let mut gather = |joined: Result<(usize, NodeOutcome), tokio::task::JoinError>| {
        finished += 1;
        observer.map_progress(&shared.label, node_id, finished, total);
        match joined {
            Ok((index, NodeOutcome::Completed(value))) => outputs[index] = value,
            Ok((index, NodeOutcome::Failed { state, cause })) => {
                first_failure.get_or_insert((Some(index), state, cause));
            }
            // A bug in weir: which element it was is lost with the task.
            Err(panic) => {
                first_failure.get_or_insert((None, State::Crashed, panic.to_string()));
            }
        }
    };
    let mut elements = JoinSet::new();
    let share = Arc::new(Semaphore::new(shared.map_share));
    for (index, element) in inputs.into_iter().enumerate() {
        // An element completed before a resume is not run again.
        let reused = shared
            .reused_elements
            .get(&(node_id.to_owned(), index as u32))
            .cloned();
        if let Some(done) = reused {
            gather(Ok((index, NodeOutcome::Completed(done))));
            continue;
        }
        // Take a permit before spawning, so that only as many element futures
        // exist as can run: a map of 100,000 must not hold 100,000 futures at
        // once; and a share first, so that other nodes keep a quarter of the
        // permits. A cancelled run spawns no more elements.
        let shares = async {
            let share = share.clone().acquire_owned().await;
            let permit = shared.permits.clone().acquire_owned().await;
            (share, permit)
        };
        let permits = tokio::select! {
            biased;
            reason = shared.cancel.cancelled() => {
                gather(Ok((
                    index,
                    NodeOutcome::Failed {
                        state: State::Cancelled,
                        cause: format!("cancelled: {reason}"),
                    },
                )));
                break;
            }
            (share, permit) = shares => (
                share.expect("the share is never closed"),
                permit.expect("the permits are never closed"),
            ),
        };
        let request = shared.request(node_id, plugin, task, element, Some(index as u32));
        let shared = shared.clone();
        elements.spawn(async move {
            let _permits = permits;
            (index, execute_request(&shared, request).await)
        });
        while let Some(joined) = elements.try_join_next() {
            gather(joined);
        }
    }
    while let Some(joined) = elements.join_next().await {
        gather(joined);
    }
    match first_failure {
        None => NodeOutcome::Completed(Value::Array(outputs)),
        Some((Some(index), state, cause)) => NodeOutcome::Failed {
            state,
            cause: format!("element {index} of the map: {cause}"),
        },
        Some((None, state, cause)) => NodeOutcome::Failed {
            state,
            cause: format!("an element of the map: {cause}"),
        },
    }
}

/// One input per element: mapped fields zipped, the others passed unmapped.
fn fan_out(input: &Value, map: &[String]) -> Result<Vec<Value>, String> {
    let object = input.as_object().ok_or("the input is not an object")?;
    let mut length = None;
    for field in map {
        let Some(Value::Array(items)) = object.get(field) else {
            return Err(format!("the mapped field `{field}` is not a list"));
        };
        match length {
            None => length = Some(items.len()),
            Some(expected) if expected != items.len() => {
                return Err(format!(
                    "the mapped fields have different lengths ({expected} and {} for `{field}`)",
                    items.len()
                ));
            }
            _ => {}
        }
    }
    Ok((0..length.unwrap_or(0))
        .map(|index| {
            // Copy the unmapped fields and one element of each mapped list: cloning the
            // whole object would copy every list once per element (quadratic).
            let element: Map<String, Value> = object
                .iter()
                .map(|(key, value)| {
                    let value = if map.contains(key) {
                        value[index].clone()
                    } else {
                        value.clone()
                    };
                    (key.clone(), value)
                })
                .collect();
            Value::Object(element)
        })
        .collect())
}

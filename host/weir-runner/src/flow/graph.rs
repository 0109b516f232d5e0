//! The scheduler of one flow run: every node starts as soon as its upstreams have ended,
//! a failure makes what depends on it NotReady, a lone runnable node runs inline, and a
//! cancelled run starts nothing more.

use futures_util::FutureExt as _;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use weir_core::{HttpGrant, State};
use weir_flow::NodeKind;
use weir_flow::reference::{self, Reference, ResolveError, Target};
use weir_store::Recorder;

use super::queued::Driving;
use super::{FlowRunner, NodeOutcome, PreparedFlow};
use crate::cancel::CancelToken;
use crate::naming::RunNumbers;
use crate::observer::FlowRunLabel;
use crate::runner::{FlowRunRef, TaskRequest};

/// What every node of one flow run shares.
pub(super) struct FlowRunShared {
    pub(super) runner: Arc<FlowRunner>,
    pub(super) prepared: Arc<PreparedFlow>,
    pub(super) flow_run: FlowRunRef,
    pub(super) parameters: Map<String, Value>,
    /// `task-N` numbering within this flow run.
    pub(super) run_numbers: RunNumbers,
    /// Subflow runs to continue instead of starting anew (taken by the first attempt).
    pub(super) resumed_subflows: Mutex<HashMap<String, weir_store::FlowRunRecord>>,
    /// Map elements that completed before a resume: (node, index) → output.
    pub(super) reused_elements: HashMap<(String, u32), Value>,
    pub(super) label: FlowRunLabel,
    /// HTTP grants written with parameters, resolved for this run, by node.
    pub(super) http_grants: HashMap<String, Vec<HttpGrant>>,
    /// Cancels the flow run; its task runs and subflow runs hold children of it.
    pub(super) cancel: CancelToken,
    /// Where the flow run's own writes go: the store, or the driver's fence.
    pub(super) recorder: Arc<dyn Recorder>,
    /// Driven from the queue: its task runs and subflow runs are queued for workers.
    pub(super) queue: Option<Arc<Driving>>,
    /// Bounds the task runs in progress (or, queued, waiting for workers) at once, and
    /// the share of them one map may hold.
    pub(super) permits: Arc<Semaphore>,
    pub(super) map_share: usize,
}

impl FlowRunShared {
    pub(super) fn request(
        &self,
        node: &str,
        plugin: &str,
        task: &str,
        input: Value,
        map_index: Option<u32>,
    ) -> TaskRequest {
        let NodeKind::Task { overrides, .. } = &self.prepared.node(node).kind else {
            unreachable!("a request is built for task nodes only");
        };
        TaskRequest {
            plugin: self.prepared.plugins[plugin].clone(),
            task: task.to_owned(),
            input,
            overrides: {
                let mut overrides = (**overrides).clone();
                if let Some(resolved) = self.http_grants.get(node) {
                    overrides.grants.http.extend(resolved.iter().cloned());
                }
                overrides
            },
            flow_run: Some(self.flow_run.clone()),
            node: Some(node.to_owned()),
            map_index,
            default_name: Some(self.run_numbers.next(task)),
            cancel: Some(self.cancel.child()),
        }
    }
}

/// Runs every node not yet completed, each as soon as its upstreams are done. Returns the
/// first unhandled failure (its state and cause), or None when the flow succeeded.
pub(super) async fn execute_graph(
    shared: Arc<FlowRunShared>,
    completed: &mut HashMap<String, Value>,
) -> Option<(State, String)> {
    let flow = &shared.prepared.flow;
    let mut outcomes: BTreeMap<String, NodeOutcome> = completed
        .iter()
        .map(|(node, value)| (node.clone(), NodeOutcome::Completed(value.clone())))
        .collect();
    // Each node's upstreams are computed once, with the reverse edges, so that a node's end
    // looks only at its own downstream nodes: scanning every waiting node at every end made a
    // chain of n nodes cost O(n²) dependency computations.
    let mut dependencies: HashMap<String, Vec<String>> = HashMap::new();
    let mut downstream: HashMap<String, Vec<String>> = HashMap::new();
    let mut unfinished_upstreams: HashMap<String, usize> = HashMap::new();
    // In the validated order, so that runs are created (and numbered) in file order.
    let mut ready: VecDeque<String> = VecDeque::new();
    for node_id in &shared.prepared.order {
        if outcomes.contains_key(node_id) {
            continue;
        }
        let upstreams = shared.prepared.node(node_id).dependencies();
        let unfinished = upstreams
            .iter()
            .filter(|upstream| !outcomes.contains_key(*upstream))
            .count();
        for upstream in &upstreams {
            downstream
                .entry(upstream.clone())
                .or_default()
                .push(node_id.clone());
        }
        if unfinished == 0 {
            ready.push_back(node_id.clone());
        } else {
            unfinished_upstreams.insert(node_id.clone(), unfinished);
        }
        dependencies.insert(node_id.clone(), upstreams);
    }
    let handled_failures: HashSet<&str> = flow
        .nodes
        .iter()
        .flat_map(|node| node.allow_failure.iter().map(String::as_str))
        .collect();
    let mut running = JoinSet::new();
    let mut first_failure: Option<(String, State, String)> = None;
    loop {
        // Start (or mark NotReady) every node whose upstreams have all ended. A node marked
        // NotReady has ended too, and may make its own downstream nodes ready.
        let mut inline: Option<(String, HashMap<String, NodeOutcome>)> = None;
        if shared.cancel.is_cancelled() {
            // A cancelled run starts nothing more; what runs ends Cancelled on its own.
            ready.clear();
        }
        while let Some(node_id) = ready.pop_front() {
            let node = shared.prepared.node(&node_id);
            let upstreams = &dependencies[&node_id];
            let blocking = upstreams.iter().find(|upstream| {
                matches!(outcomes[*upstream], NodeOutcome::Failed { .. })
                    && !node.allow_failure.contains(upstream)
            });
            if let Some(upstream) = blocking {
                let cause = format!("upstream node `{upstream}` did not complete");
                record_not_ready(&shared, &node_id, &cause);
                release_downstream(&node_id, &downstream, &mut unfinished_upstreams, &mut ready);
                outcomes.insert(
                    node_id,
                    NodeOutcome::Failed {
                        state: State::NotReady,
                        cause,
                    },
                );
                continue;
            }
            let upstream: HashMap<String, NodeOutcome> = upstreams
                .iter()
                .map(|upstream| (upstream.clone(), outcomes[upstream].clone()))
                .collect();
            if running.is_empty() && ready.is_empty() && inline.is_none() {
                // The only node that can run: run it in this task. Spawning it and waiting
                // for it to join costs two wake-ups, often across threads, which made each
                // step of a chain several times dearer than the task itself.
                inline = Some((node_id, upstream));
                continue;
            }
            let shared = shared.clone();
            running.spawn(async move {
                let outcome = run_node(&shared, &node_id, &upstream).await;
                (node_id, outcome)
            });
        }
        let ended = match inline {
            Some((node_id, upstream)) => {
                let node_run = AssertUnwindSafe(run_node(&shared, &node_id, &upstream));
                node_run
                    .catch_unwind()
                    .await
                    .map(|outcome| (node_id, outcome))
                    .map_err(|panic| panic_message(&*panic))
            }
            None => match running.join_next().await {
                Some(joined) => joined.map_err(|error| error.to_string()),
                None => break,
            },
        };
        let (node_id, outcome) = match ended {
            Ok(done) => done,
            Err(panic) => {
                // A bug in weir, not in a task: report it as the flow's failure.
                first_failure.get_or_insert((
                    String::new(),
                    State::Crashed,
                    format!("a node's runner failed: {panic}"),
                ));
                continue;
            }
        };
        // An output that cannot be recorded (a full disk) fails the node: going on would
        // lose it for a resume.
        let outcome = match outcome {
            NodeOutcome::Completed(value) => {
                match shared
                    .recorder
                    .record_node_output(&shared.flow_run.id, &node_id, &value)
                {
                    Ok(()) => NodeOutcome::Completed(value),
                    Err(error) => NodeOutcome::Failed {
                        state: State::Crashed,
                        cause: format!("its output could not be recorded: {}", error.describe()),
                    },
                }
            }
            failed => failed,
        };
        match &outcome {
            NodeOutcome::Completed(value) => {
                completed.insert(node_id.clone(), value.clone());
            }
            NodeOutcome::Failed { state, cause } => {
                let handled = handled_failures.contains(node_id.as_str());
                if !handled && first_failure.is_none() {
                    first_failure = Some((node_id.clone(), *state, cause.clone()));
                }
            }
        }
        release_downstream(&node_id, &downstream, &mut unfinished_upstreams, &mut ready);
        outcomes.insert(node_id, outcome);
    }
    // Whatever ended the node (a failure, a crash, a timeout, an abort), the flow failed.
    first_failure.map(|(node, _state, cause)| {
        if node.is_empty() {
            (State::Failed, cause)
        } else {
            (
                State::Failed,
                format!("node `{node}` did not complete: {cause}"),
            )
        }
    })
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panicked".to_owned())
}

/// `ended` has ended: each node downstream of it with no other unfinished upstream is ready.
fn release_downstream(
    ended: &str,
    downstream: &HashMap<String, Vec<String>>,
    unfinished_upstreams: &mut HashMap<String, usize>,
    ready: &mut VecDeque<String>,
) {
    for node in downstream.get(ended).into_iter().flatten() {
        if let Some(count) = unfinished_upstreams.get_mut(node) {
            *count -= 1;
            if *count == 0 {
                unfinished_upstreams.remove(node);
                ready.push_back(node.clone());
            }
        }
    }
}

fn record_not_ready(shared: &FlowRunShared, node_id: &str, cause: &str) {
    let node = shared.prepared.node(node_id);
    if let NodeKind::Task {
        plugin,
        task,
        input,
        ..
    } = &node.kind
    {
        let request = shared.request(node_id, plugin, task, input.clone(), None);
        let recorded =
            shared
                .runner
                .tasks
                .record_not_ready_in(shared.recorder.as_ref(), &request, cause);
        if let Err(error) = recorded {
            tracing::error!(
                "could not record node `{node_id}` as NotReady: {}",
                weir_core::describe_error(&error)
            );
        }
    }
}

/// Resolves a node's references from the parameters and its upstreams' outputs.
fn resolve(
    shared: &FlowRunShared,
    template: &Value,
    upstream: &HashMap<String, NodeOutcome>,
) -> Result<Value, ResolveError> {
    let lookup = |reference: &Reference| -> Result<Value, ResolveError> {
        let root = match &reference.target {
            Target::Parameter(name) => shared.parameters.get(name).cloned().unwrap_or(Value::Null),
            Target::Node(node) => match upstream.get(node) {
                Some(NodeOutcome::Completed(value)) => value.clone(),
                // An allowed failure reads as null.
                _ => return Ok(Value::Null),
            },
        };
        reference::follow(reference, &root).cloned()
    };
    reference::resolve(template, &lookup)
}

async fn run_node(
    shared: &Arc<FlowRunShared>,
    node_id: &str,
    upstream: &HashMap<String, NodeOutcome>,
) -> NodeOutcome {
    let node = shared.prepared.node(node_id);
    let failed = |cause: String| NodeOutcome::Failed {
        state: State::Failed,
        cause,
    };
    match &node.kind {
        NodeKind::Task {
            plugin,
            task,
            input,
            map,
            ..
        } => {
            let input = match resolve(shared, input, upstream) {
                Ok(input) => input,
                Err(error) => return failed(format!("its input could not be resolved: {error}")),
            };
            if map.is_empty() {
                return run_task(shared, node_id, plugin, task, input).await;
            }
            super::map::run_map(shared, node_id, plugin, task, &input, map).await
        }
        NodeKind::Subflow { parameters, .. } => {
            let parameters = match resolve(shared, parameters, upstream) {
                Ok(Value::Object(parameters)) => parameters,
                Ok(_) => return failed("its parameters are not a table".into()),
                Err(error) => {
                    return failed(format!("its parameters could not be resolved: {error}"));
                }
            };
            let prepared = shared.prepared.subflows[node_id].clone();
            let parameters = match prepared.flow.bind_parameters(&parameters) {
                Ok(parameters) => parameters,
                Err(error) => return failed(error.to_string()),
            };
            if let Some(queue) = &shared.queue {
                return queue
                    .run_subflow(shared, node_id, &prepared, parameters)
                    .await;
            }
            let parent = Some((shared.flow_run.id.clone(), node_id.to_owned()));
            let unfinished = shared
                .resumed_subflows
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .remove(node_id);
            let subflow_run = match unfinished {
                Some(record) => {
                    shared
                        .runner
                        .resume_prepared(record, prepared, shared.cancel.child())
                        .await
                }
                None => {
                    shared
                        .runner
                        .run_prepared(prepared, parameters, parent, shared.cancel.child())
                        .await
                }
            };
            match subflow_run {
                Ok(outcome) => NodeOutcome::of_run(
                    "subflow run",
                    &outcome.name,
                    outcome.state,
                    outcome.message,
                    outcome.output,
                ),
                Err(error) => failed(weir_core::describe_error(&error)),
            }
        }
    }
}

async fn run_task(
    shared: &Arc<FlowRunShared>,
    node_id: &str,
    plugin: &str,
    task: &str,
    input: Value,
) -> NodeOutcome {
    let request = shared.request(node_id, plugin, task, input, None);
    run_request(shared, request).await
}

async fn run_request(shared: &Arc<FlowRunShared>, request: TaskRequest) -> NodeOutcome {
    // The semaphore is never closed, so acquiring only waits.
    let _permit = shared
        .permits
        .clone()
        .acquire_owned()
        .await
        .expect("the permits are never closed");
    execute_request(shared, request).await
}

/// Runs a task request; the caller holds a slot.
pub(super) async fn execute_request(
    shared: &Arc<FlowRunShared>,
    request: TaskRequest,
) -> NodeOutcome {
    if let Some(queue) = &shared.queue {
        return queue.run_task(request).await;
    }
    match shared.runner.tasks.run_task(request).await {
        Ok(outcome) => NodeOutcome::of_run(
            "task run",
            &outcome.name,
            outcome.state,
            outcome.message,
            outcome.output,
        ),
        Err(error) => NodeOutcome::Failed {
            state: State::Failed,
            cause: weir_core::describe_error(&error),
        },
    }
}

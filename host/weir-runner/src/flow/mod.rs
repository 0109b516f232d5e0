//! Flow runs: a validated graph run with as much concurrency as it allows, maps fanned
//! out and gathered in order, subflows, NotReady for what a failure blocks, flow
//! retries that keep completed nodes, and a flow timeout.

use serde_json::{Map, Value};
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;
use weir_core::{FlowRunId, State, format_duration};
use weir_flow::{Flow, FlowError, FlowOutput, Node, flow_run_name};
use weir_runtime::Plugin;
use weir_store::{NewFlowRun, Recorder, StateChange, StoreError, TaskRunFilter};

mod grants;
mod graph;
mod map;
mod prepare;
mod queued;
mod resume;

pub use grants::grants_beyond;
pub use queued::{ClaimedFlow, SubmittedRun};

use grants::resolve_http_grants;
use graph::{FlowRunShared, execute_graph};

use crate::cancel::CancelToken;
use crate::observer::FlowRunLabel;
use crate::runner::{FlowRunRef, RunnerError, TaskRunner};

/// Why a flow run could not start. How a started run ends is its state, not an error.
#[derive(Debug, thiserror::Error)]
pub enum FlowRunError {
    #[error(transparent)]
    Invalid(#[from] FlowError),
    #[error("{origin}: plugin `{alias}`: {source}")]
    Plugin {
        origin: String,
        alias: String,
        #[source]
        source: RunnerError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How a flow run ended.
#[derive(Debug, Clone)]
pub struct FlowRunOutcome {
    pub id: FlowRunId,
    pub name: String,
    pub state: State,
    /// The first cause, for every state but Completed.
    pub message: Option<String>,
    pub output: Option<Value>,
    pub attempts: u32,
}

/// A flow ready to run: validated, its plugins loaded, its subflows prepared.
struct PreparedFlow {
    flow: Flow,
    order: Vec<String>,
    plugins: HashMap<String, Plugin>,
    subflows: HashMap<String, Arc<PreparedFlow>>,
    /// Each node's position in `flow.nodes`: `Flow::node` searches the list, which a flow
    /// of thousands of nodes cannot afford several times per node.
    positions: HashMap<String, usize>,
}

impl PreparedFlow {
    fn node(&self, id: &str) -> &Node {
        &self.flow.nodes[self.positions[id]]
    }
}

/// What an interrupted flow run had finished, for a resume.
#[derive(Default)]
struct Resumed {
    nodes: HashMap<String, Value>,
    elements: HashMap<(String, u32), Value>,
    /// Subflow runs that did not complete, by node: continued rather than run anew.
    subflows: HashMap<String, weir_store::FlowRunRecord>,
    /// Driven from the queue: runs still queued or running on workers, by node and
    /// element, waited for instead of queued again.
    in_flight: HashMap<(String, Option<u32>), String>,
}

/// How one node ended.
#[derive(Debug, Clone)]
enum NodeOutcome {
    Completed(Value),
    /// Failed, TimedOut, Crashed, NotReady… with the cause.
    Failed {
        state: State,
        cause: String,
    },
}

impl NodeOutcome {
    /// How a node ended when the task run or subflow run it made ended in `state`.
    fn of_run(
        kind: &str,
        name: &str,
        state: State,
        message: Option<String>,
        output: Option<Value>,
    ) -> Self {
        if state.is_success() {
            return NodeOutcome::Completed(output.unwrap_or(Value::Null));
        }
        NodeOutcome::Failed {
            state,
            cause: format!(
                "{kind} '{name}' ended {state}: {}",
                message.unwrap_or_default()
            ),
        }
    }
}

/// Runs flows over a task runner. Share it behind an `Arc`.
pub struct FlowRunner {
    tasks: Arc<TaskRunner>,
    /// Bounds the task runs (attempts) in progress at once, across all flow runs.
    permits: Arc<Semaphore>,
    /// The most permits one map's elements hold at once, so that a map (of slow or
    /// spinning tasks, say) never starves the other nodes of its flow.
    map_share: usize,
    plugins: Mutex<HashMap<PathBuf, Plugin>>,
    /// Plugins fetched from the store by digest (a worker's), compiled once; shared by
    /// the runner's tenant views.
    fetched: Arc<Mutex<HashMap<String, Plugin>>>,
}

/// Three quarters of the permits for one map's elements; all of them below 4, where a
/// quarter would be less than one.
fn map_share(concurrency: usize) -> usize {
    let concurrency = concurrency.max(1);
    if concurrency < 4 {
        concurrency
    } else {
        concurrency * 3 / 4
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl FlowRunner {
    /// `concurrency` bounds task runs in progress at once (at least 1).
    pub fn new(tasks: Arc<TaskRunner>, concurrency: usize) -> Self {
        FlowRunner {
            tasks,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            map_share: map_share(concurrency),
            plugins: Mutex::new(HashMap::new()),
            fetched: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The same runner (its permits, fetched plugins, owner) recording into the store as
    /// `tenant` (see [`TaskRunner::for_tenant`]).
    pub fn for_tenant(&self, tenant: &weir_core::TenantId) -> FlowRunner {
        FlowRunner {
            tasks: Arc::new(self.tasks.for_tenant(tenant)),
            permits: self.permits.clone(),
            map_share: self.map_share,
            plugins: Mutex::new(HashMap::new()),
            fetched: self.fetched.clone(),
        }
    }

    /// A default concurrency: enough to keep every core busy while some tasks wait, and
    /// below the runtime's instance pool.
    pub fn default_concurrency() -> usize {
        let cores = std::thread::available_parallelism().map_or(2, |cores| cores.get());
        (cores * 8).clamp(16, 128)
    }

    pub fn tasks(&self) -> &Arc<TaskRunner> {
        &self.tasks
    }

    /// Checks the flow (and its subflows, and that every task exists), then runs it.
    /// Returns an error only when it cannot start.
    pub async fn run_flow(
        self: &Arc<Self>,
        flow: &Flow,
        parameters: &Map<String, Value>,
    ) -> Result<FlowRunOutcome, FlowRunError> {
        let prepared = self
            .prepare(flow.clone(), Vec::new(), &prepare::Source::Files)
            .await?;
        let parameters = prepared.flow.bind_parameters(parameters)?;
        let cancel = self.tasks.cancel_token();
        self.run_prepared(prepared, parameters, None, cancel).await
    }

    async fn load_plugin(&self, path: &PathBuf) -> Result<Plugin, RunnerError> {
        if let Some(plugin) = self.lock_plugins().get(path) {
            return Ok(plugin.clone());
        }
        let plugin = self.tasks.load_plugin(path).await?;
        self.lock_plugins().insert(path.clone(), plugin.clone());
        Ok(plugin)
    }

    fn lock_plugins(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Plugin>> {
        self.plugins
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn run_prepared(
        self: &Arc<Self>,
        prepared: Arc<PreparedFlow>,
        parameters: Map<String, Value>,
        parent: Option<(FlowRunId, String)>,
        cancel: CancelToken,
    ) -> BoxFuture<'_, Result<FlowRunOutcome, FlowRunError>> {
        Box::pin(async move {
            self.tasks.ensure_owner().await?;
            let flow = &prepared.flow;
            let store = self.tasks.store().clone();
            let clock = self.tasks.clock().clone();
            let label = FlowRunLabel {
                id: FlowRunId::generate(),
                name: flow_run_name(),
                flow: flow.name.clone(),
            };
            let change = |state, attempt| StateChange {
                state,
                message: None,
                attempt,
                at: clock.now(),
            };
            store.create_flow_run(
                &NewFlowRun {
                    id: label.id.clone(),
                    name: label.name.clone(),
                    flow: flow.name.clone(),
                    source: flow.source.as_ref().map(|path| path.display().to_string()),
                    parameters: Value::Object(parameters.clone()),
                    parent: parent.clone(),
                    created: clock.now(),
                    owner: Some(self.tasks.owner_id().to_owned()),
                    graph: Some(graph_of(flow)),
                    tags: flow.tags.clone(),
                },
                &[change(State::Pending, 0), change(State::Running, 1)],
            )?;
            self.tasks.observer().flow_run_created(&label);
            let _active = self.tasks.activate(label.id.as_str(), &cancel);
            self.drive(
                prepared.clone(),
                parameters,
                label,
                Resumed::default(),
                1,
                cancel,
                None,
            )
            .await
        })
    }

    /// Runs the graph (and the flow's retries) of a recorded flow run to its final state;
    /// with `queue`, as a driver whose task runs and subflow runs go to workers.
    #[allow(clippy::too_many_arguments)]
    async fn drive(
        self: &Arc<Self>,
        prepared: Arc<PreparedFlow>,
        parameters: Map<String, Value>,
        label: FlowRunLabel,
        resumed: Resumed,
        first_attempt: u32,
        cancel: CancelToken,
        queue: Option<Arc<queued::Driving>>,
    ) -> Result<FlowRunOutcome, FlowRunError> {
        let flow = &prepared.flow;
        let recorder: Arc<dyn Recorder> = match &queue {
            Some(queue) => queue.recorder.clone(),
            None => self.tasks.store().clone(),
        };
        let store = recorder.clone();
        let clock = self.tasks.clock().clone();
        let observer = self.tasks.observer().clone();
        let change = |state, message: Option<String>, attempt| StateChange {
            state,
            message,
            attempt,
            at: clock.now(),
        };
        let http_grants = match resolve_http_grants(flow, &parameters) {
            Ok(grants) => grants,
            Err(message) => {
                return self.finish(
                    recorder.as_ref(),
                    label,
                    State::Failed,
                    Some(message),
                    None,
                    first_attempt,
                );
            }
        };
        let (permits, map_share) = match &queue {
            Some(queue) => {
                queue.expect(resumed.in_flight);
                (
                    Arc::new(Semaphore::new(queued::IN_FLIGHT)),
                    map_share(queued::IN_FLIGHT),
                )
            }
            None => (self.permits.clone(), self.map_share),
        };
        let shared = Arc::new(FlowRunShared {
            http_grants,
            runner: self.clone(),
            prepared: prepared.clone(),
            flow_run: FlowRunRef {
                id: label.id.clone(),
                name: label.name.clone(),
                parameters: Arc::new(Value::Object(parameters.clone())),
            },
            parameters,
            run_numbers: Default::default(),
            reused_elements: resumed.elements,
            resumed_subflows: Mutex::new(resumed.subflows),
            label: label.clone(),
            cancel: cancel.clone(),
            recorder: recorder.clone(),
            queue: queue.clone(),
            permits,
            map_share,
        });
        // Nodes that completed keep their values across flow retries (and resumes).
        let mut completed: HashMap<String, Value> = resumed.nodes;
        let mut attempt = first_attempt;
        loop {
            let graph = execute_graph(shared.clone(), &mut completed);
            let failure = match flow.timeout {
                Some(timeout) => match tokio::time::timeout(timeout, graph).await {
                    Ok(failure) => failure,
                    Err(_) => {
                        self.cancel_unfinished(
                            &label.id,
                            &format!("the flow run timed out after {}", format_duration(timeout)),
                        )
                        .await;
                        Some((
                            State::TimedOut,
                            format!(
                                "the flow run exceeded its timeout of {}",
                                format_duration(timeout)
                            ),
                        ))
                    }
                },
                None => graph.await,
            };
            // A cancelled run ends Cancelled whatever its nodes did, and does not retry.
            if let Some(reason) = cancel.reason() {
                if let Some(queue) = &queue
                    && let Some(outcome) = self.claim_cancelled(queue, &label, &reason, attempt)
                {
                    return outcome;
                }
                let message = format!("cancelled: {reason}");
                return self.finish(
                    recorder.as_ref(),
                    label,
                    State::Cancelled,
                    Some(message),
                    None,
                    attempt,
                );
            }
            let Some((state, cause)) = failure else {
                let output = flow_output(flow, &completed);
                return self.finish(
                    recorder.as_ref(),
                    label,
                    State::Completed,
                    None,
                    output,
                    attempt,
                );
            };
            if attempt - first_attempt >= flow.retries {
                return self.finish(recorder.as_ref(), label, state, Some(cause), None, attempt);
            }
            let note = format!(
                "attempt {attempt} ended {state}: {cause}; retry {attempt}/{} in {}",
                flow.retries,
                format_duration(flow.retry_delay)
            );
            store.set_flow_run_state(
                &label.id,
                &change(State::AwaitingRetry, Some(note.clone()), attempt),
                None,
            )?;
            observer.flow_run_state(&label, State::AwaitingRetry, Some(&note));
            if !flow.retry_delay.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(flow.retry_delay) => {}
                    // Checked at the top of the next attempt, which starts nothing.
                    _ = cancel.cancelled() => {}
                }
            }
            attempt += 1;
            store.set_flow_run_state(&label.id, &change(State::Running, None, attempt), None)?;
        }
    }

    /// Records a flow run's final state (with its output), tells the observer, and gives
    /// the outcome.
    fn finish(
        &self,
        recorder: &dyn Recorder,
        label: FlowRunLabel,
        state: State,
        message: Option<String>,
        output: Option<Value>,
        attempts: u32,
    ) -> Result<FlowRunOutcome, FlowRunError> {
        let change = StateChange {
            state,
            message: message.clone(),
            attempt: attempts,
            at: self.tasks.clock().now(),
        };
        recorder.set_flow_run_state(&label.id, &change, output.as_ref())?;
        self.tasks
            .observer()
            .flow_run_state(&label, state, message.as_deref());
        Ok(FlowRunOutcome {
            id: label.id,
            name: label.name,
            state,
            message,
            output,
            attempts,
        })
    }

    /// Marks the flow run's unfinished task runs Cancelled (their attempts were dropped).
    async fn cancel_unfinished(&self, flow_run: &FlowRunId, reason: &str) {
        let store = self.tasks.store();
        let filter = TaskRunFilter {
            flow_run_id: Some(flow_run.clone()),
            ..Default::default()
        };
        let Ok(runs) = store.task_runs(&filter).await else {
            return;
        };
        for run in runs.into_iter().filter(|run| !run.state.is_final()) {
            let change = StateChange {
                state: State::Cancelled,
                message: Some(reason.to_owned()),
                attempt: run.attempts,
                at: self.tasks.clock().now(),
            };
            if let Err(error) = store.finish_task_run(&run.id, &change, None, None) {
                tracing::error!("could not cancel task run {}: {}", run.id, error.describe());
            }
        }
    }
}

fn flow_output(flow: &Flow, completed: &HashMap<String, Value>) -> Option<Value> {
    match &flow.output {
        None => None,
        Some(FlowOutput::Node(node)) => completed.get(node).cloned(),
        Some(FlowOutput::Named(named)) => Some(Value::Object(
            named
                .iter()
                .map(|(name, node)| {
                    (
                        name.clone(),
                        completed.get(node).cloned().unwrap_or(Value::Null),
                    )
                })
                .collect(),
        )),
    }
}

/// The shape of a flow as recorded with its runs (see [`weir_store::FlowGraph`]).
pub fn graph_of(flow: &Flow) -> weir_store::FlowGraph {
    use weir_flow::NodeKind;
    use weir_store::{GraphNode, GraphNodeKind};
    let nodes = flow
        .nodes
        .iter()
        .map(|node| {
            let (kind, runs, mapped, grants) = match &node.kind {
                NodeKind::Task {
                    plugin,
                    task,
                    map,
                    overrides,
                    http_templates,
                    ..
                } => {
                    let mut grants = overrides.grants.describe();
                    grants.extend(
                        http_templates
                            .iter()
                            .map(|template| format!("http {template}")),
                    );
                    let runs = format!("{plugin}.{task}");
                    (GraphNodeKind::Task, runs, !map.is_empty(), grants)
                }
                NodeKind::Subflow { path, .. } => (
                    GraphNodeKind::Subflow,
                    path.display().to_string(),
                    false,
                    Vec::new(),
                ),
            };
            GraphNode {
                id: node.id.clone(),
                kind,
                runs,
                mapped,
                inputs_from: node.inputs_from(),
                wait_for: node.wait_for.clone(),
                grants,
            }
        })
        .collect();
    weir_store::FlowGraph { nodes }
}

//! Flow runs: a validated graph run with as much concurrency as it allows, maps fanned
//! out and gathered in order, subflows, NotReady for what a failure blocks, flow
//! retries that keep completed nodes, and a flow timeout.

use futures_util::FutureExt as _;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use weir_core::{FlowRunId, HttpGrant, Need, State, format_duration};
use weir_flow::reference::{self, Reference, ResolveError, Target};
use weir_flow::{Flow, FlowError, FlowOutput, Node, NodeKind, flow_run_name};
use weir_runtime::Plugin;
use weir_store::{FlowRunFilter, NewFlowRun, StateChange, StoreError, TaskRunFilter};

use crate::cancel::CancelToken;
use crate::observer::FlowRunLabel;
use crate::runner::{FlowRunRef, RunnerError, TaskRequest, TaskRunner};

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

/// Runs flows over a task runner. Share it behind an `Arc`.
pub struct FlowRunner {
    tasks: Arc<TaskRunner>,
    /// Bounds the task runs (attempts) in progress at once, across all flow runs.
    permits: Arc<Semaphore>,
    /// The most permits one map's elements hold at once, so that a map (of slow or
    /// spinning tasks, say) never starves the other nodes of its flow.
    map_share: usize,
    plugins: Mutex<HashMap<PathBuf, Plugin>>,
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
        let prepared = self.prepare(flow.clone(), Vec::new()).await?;
        let parameters = prepared.flow.bind_parameters(parameters)?;
        let cancel = self.tasks.cancel_token();
        self.run_prepared(prepared, parameters, None, cancel).await
    }

    fn prepare(
        self: &Arc<Self>,
        flow: Flow,
        mut stack: Vec<PathBuf>,
    ) -> BoxFuture<'_, Result<Arc<PreparedFlow>, FlowRunError>> {
        Box::pin(async move {
            let order = flow.validate()?;
            let mut plugins = HashMap::new();
            for (alias, path) in &flow.plugins {
                let plugin =
                    self.load_plugin(path)
                        .await
                        .map_err(|source| FlowRunError::Plugin {
                            origin: flow.origin(),
                            alias: alias.clone(),
                            source,
                        })?;
                plugins.insert(alias.clone(), plugin);
            }
            if let Some(source) = &flow.source {
                stack.push(source.canonicalize().unwrap_or_else(|_| source.clone()));
            }
            let mut subflows = HashMap::new();
            for node in &flow.nodes {
                match &node.kind {
                    NodeKind::Task {
                        plugin,
                        task,
                        overrides,
                        http_templates,
                        ..
                    } => {
                        let loaded = &plugins[plugin];
                        if loaded.task(task).is_none() {
                            let tasks: Vec<&str> = loaded
                                .tasks()
                                .iter()
                                .map(|info| info.name.as_str())
                                .collect();
                            return Err(flow
                                .error(
                                    Some(&node.id),
                                    Some("task"),
                                    format!(
                                        "plugin `{plugin}` has no task `{task}` (its tasks: {})",
                                        tasks.join(", ")
                                    ),
                                )
                                .into());
                        }

                        // HTTP grants written with parameters are only known when a run
                        // starts; the runner checks those needs then.
                        let needs: Vec<Need> = loaded
                            .task(task)
                            .expect("checked above")
                            .needs
                            .iter()
                            .filter(|need| {
                                http_templates.is_empty()
                                    || !matches!(need, Need::AnyHttp | Need::Http(_))
                            })
                            .cloned()
                            .collect();
                        if let Some(need) = overrides.grants.first_missing(&needs) {
                            return Err(flow
                                .error(
                                    Some(&node.id),
                                    Some("task"),
                                    format!(
                                        "task `{task}` needs {}, which this node is not granted",
                                        need.how_to_grant()
                                    ),
                                )
                                .into());
                        }
                    }
                    NodeKind::Subflow { path, .. } => {
                        let canonical = path.canonicalize().unwrap_or_else(|_| path.clone());
                        if stack.contains(&canonical) {
                            return Err(flow
                                .error(
                                    Some(&node.id),
                                    Some("flow"),
                                    format!(
                                        "{} runs itself as a subflow (directly or through others)",
                                        path.display()
                                    ),
                                )
                                .into());
                        }
                        let subflow = Flow::load(path).map_err(|error| {
                            flow.error(Some(&node.id), Some("flow"), error.to_string())
                        })?;
                        let prepared = self.prepare(subflow, stack.clone()).await?;
                        subflows.insert(node.id.clone(), prepared);
                    }
                }
            }
            let positions = flow
                .nodes
                .iter()
                .enumerate()
                .map(|(position, node)| (node.id.clone(), position))
                .collect();
            Ok(Arc::new(PreparedFlow {
                flow,
                order,
                plugins,
                subflows,
                positions,
            }))
        })
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
            self.register_owner()?;
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
            )
            .await
        })
    }

    /// Continues a flow run that was interrupted (its process killed, or cancelled) or
    /// that failed: completed nodes and map elements are reused, an unfinished subflow
    /// run is continued the same way, the rest runs. The flow file must still be where
    /// the run was started from.
    pub async fn resume_flow(
        self: &Arc<Self>,
        id: &FlowRunId,
    ) -> Result<FlowRunOutcome, FlowRunError> {
        let store = self.tasks.store().clone();
        let record = store.flow_run(id)?.ok_or_else(|| FlowError {
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
        let source = record.source.clone().ok_or_else(|| {
            refuse("it was not started from a flow file, so it cannot be resumed".into())
        })?;
        let flow = Flow::load(std::path::Path::new(&source))?;
        let prepared = self.prepare(flow, Vec::new()).await?;
        let cancel = self.tasks.cancel_token();
        self.resume_prepared(record, prepared, cancel).await
    }

    fn register_owner(&self) -> Result<(), FlowRunError> {
        self.tasks.ensure_owner().map_err(|error| match error {
            RunnerError::Store(error) => FlowRunError::Store(error),
            other => FlowRunError::Store(StoreError::Backend {
                action: "registering this process as a run owner".into(),
                message: other.to_string(),
            }),
        })
    }

    /// Resumes a recorded flow run of a prepared flow (a top-level run, or a subflow run
    /// whose parent is being resumed).
    fn resume_prepared(
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
            let resumed = self.what_was_done(id)?;
            let label = FlowRunLabel {
                id: record.id.clone(),
                name: record.name.clone(),
                flow: record.flow.clone(),
            };
            let attempt = record.attempts + 1;
            self.register_owner()?;
            store.set_flow_run_owner(&label.id, self.tasks.owner_id())?;
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
            self.drive(prepared, parameters, label, resumed, attempt, cancel)
                .await
        })
    }

    /// What a flow run finished before it stopped: node outputs, completed map elements
    /// and task runs, and its subflow runs. Its unfinished task runs are recorded Crashed
    /// (they will run again).
    fn what_was_done(&self, id: &FlowRunId) -> Result<Resumed, FlowRunError> {
        let store = self.tasks.store();
        let mut resumed = Resumed::default();
        for (node, output) in store.node_outputs(id)? {
            resumed.nodes.insert(node, output);
        }
        let filter = TaskRunFilter {
            flow_run_id: Some(id.clone()),
            ..Default::default()
        };
        for run in store.task_runs(&filter)? {
            match (
                &run.node,
                run.map_index,
                run.state.is_success(),
                &run.result_digest,
            ) {
                (Some(node), Some(index), true, Some(digest)) => {
                    resumed
                        .elements
                        .insert((node.clone(), index), store.result(digest)?);
                }
                // Completed, but the process stopped before it recorded the node's output:
                // running it again would complete it twice.
                (Some(node), None, true, Some(digest)) if !resumed.nodes.contains_key(node) => {
                    let output = store.result(digest)?;
                    resumed.nodes.insert(node.clone(), output);
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
        let children = store.flow_runs(&FlowRunFilter {
            parent: Some(id.clone()),
            ..Default::default()
        })?;
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
                    Some(digest) => store.result(digest)?,
                    None => Value::Null,
                };
                resumed.nodes.insert(node, output);
            } else {
                resumed.subflows.insert(node, child);
            }
        }
        Ok(resumed)
    }

    /// Runs the graph (and the flow's retries) of a recorded flow run to its final state.
    async fn drive(
        self: &Arc<Self>,
        prepared: Arc<PreparedFlow>,
        parameters: Map<String, Value>,
        label: FlowRunLabel,
        resumed: Resumed,
        first_attempt: u32,
        cancel: CancelToken,
    ) -> Result<FlowRunOutcome, FlowRunError> {
        {
            let flow = &prepared.flow;
            let store = self.tasks.store().clone();
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
                    store.set_flow_run_state(
                        &label.id,
                        &change(State::Failed, Some(message.clone()), first_attempt),
                        None,
                    )?;
                    observer.flow_run_state(&label, State::Failed, Some(&message));
                    return Ok(FlowRunOutcome {
                        id: label.id,
                        name: label.name,
                        state: State::Failed,
                        message: Some(message),
                        output: None,
                        attempts: first_attempt,
                    });
                }
            };
            let shared = Arc::new(FlowRunShared {
                http_grants,
                runner: self.clone(),
                prepared: prepared.clone(),
                flow_run: FlowRunRef {
                    id: label.id.clone(),
                    name: label.name.clone(),
                    parameters: Value::Object(parameters.clone()),
                },
                parameters,
                name_counters: Mutex::new(HashMap::new()),
                reused_elements: resumed.elements,
                resumed_subflows: Mutex::new(resumed.subflows),
                label: label.clone(),
                cancel: cancel.clone(),
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
                                &format!(
                                    "the flow run timed out after {}",
                                    format_duration(timeout)
                                ),
                            );
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
                    let message = format!("cancelled: {reason}");
                    store.set_flow_run_state(
                        &label.id,
                        &change(State::Cancelled, Some(message.clone()), attempt),
                        None,
                    )?;
                    observer.flow_run_state(&label, State::Cancelled, Some(&message));
                    return Ok(FlowRunOutcome {
                        id: label.id,
                        name: label.name,
                        state: State::Cancelled,
                        message: Some(message),
                        output: None,
                        attempts: attempt,
                    });
                }
                let Some((state, cause)) = failure else {
                    let output = flow_output(flow, &completed);
                    store.set_flow_run_state(
                        &label.id,
                        &change(State::Completed, None, attempt),
                        output.as_ref(),
                    )?;
                    observer.flow_run_state(&label, State::Completed, None);
                    return Ok(FlowRunOutcome {
                        id: label.id,
                        name: label.name,
                        state: State::Completed,
                        message: None,
                        output,
                        attempts: attempt,
                    });
                };
                if attempt - first_attempt >= flow.retries {
                    store.set_flow_run_state(
                        &label.id,
                        &change(state, Some(cause.clone()), attempt),
                        None,
                    )?;
                    observer.flow_run_state(&label, state, Some(&cause));
                    return Ok(FlowRunOutcome {
                        id: label.id,
                        name: label.name,
                        state,
                        message: Some(cause),
                        output: None,
                        attempts: attempt,
                    });
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
                store.set_flow_run_state(
                    &label.id,
                    &change(State::Running, None, attempt),
                    None,
                )?;
            }
        }
    }

    /// Marks the flow run's unfinished task runs Cancelled (their attempts were dropped).
    fn cancel_unfinished(&self, flow_run: &FlowRunId, reason: &str) {
        let store = self.tasks.store();
        let filter = TaskRunFilter {
            flow_run_id: Some(flow_run.clone()),
            ..Default::default()
        };
        let Ok(runs) = store.task_runs(&filter) else {
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
                tracing::error!("could not cancel task run {}: {error}", run.id);
            }
        }
    }
}

/// Resolves the HTTP grants written with parameters (`http = ["${params.api}"]`).
fn resolve_http_grants(
    flow: &Flow,
    parameters: &Map<String, Value>,
) -> Result<HashMap<String, Vec<HttpGrant>>, String> {
    let lookup = |reference: &Reference| -> Result<Value, ResolveError> {
        let root = match &reference.target {
            Target::Parameter(name) => parameters.get(name).cloned().unwrap_or(Value::Null),
            Target::Node(_) => Value::Null,
        };
        reference::follow(reference, &root).cloned()
    };
    let mut grants = HashMap::new();
    for node in &flow.nodes {
        let NodeKind::Task { http_templates, .. } = &node.kind else {
            continue;
        };
        for template in http_templates {
            let resolved = reference::resolve(&Value::String(template.clone()), &lookup)
                .map_err(|error| format!("node `{}`, field `http`: {error}", node.id))?;
            let text = match resolved {
                Value::String(text) => text,
                other => other.to_string(),
            };
            let grant = HttpGrant::parse(&text).map_err(|message| {
                format!(
                    "node `{}`, field `http`: `{template}` gives {message}",
                    node.id
                )
            })?;
            grants
                .entry(node.id.clone())
                .or_insert_with(Vec::new)
                .push(grant);
        }
    }
    Ok(grants)
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

/// What every node of one flow run shares.
struct FlowRunShared {
    runner: Arc<FlowRunner>,
    prepared: Arc<PreparedFlow>,
    flow_run: FlowRunRef,
    parameters: Map<String, Value>,
    /// `task-N` numbering within this flow run.
    name_counters: Mutex<HashMap<String, u64>>,
    /// Subflow runs to continue instead of starting anew (taken by the first attempt).
    resumed_subflows: Mutex<HashMap<String, weir_store::FlowRunRecord>>,
    /// Map elements that completed before a resume: (node, index) → output.
    reused_elements: HashMap<(String, u32), Value>,
    label: FlowRunLabel,
    /// HTTP grants written with parameters, resolved for this run, by node.
    http_grants: HashMap<String, Vec<HttpGrant>>,
    /// Cancels the flow run; its task runs and subflow runs hold children of it.
    cancel: CancelToken,
}

impl FlowRunShared {
    fn next_name(&self, task: &str) -> String {
        let mut counters = self
            .name_counters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let counter = counters.entry(task.to_owned()).or_insert(0);
        let name = format!("{task}-{counter}");
        *counter += 1;
        name
    }

    fn request(
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
            default_name: Some(self.next_name(task)),
            cancel: Some(self.cancel.child()),
        }
    }
}

/// Runs every node not yet completed, each as soon as its upstreams are done. Returns the
/// first unhandled failure (its state and cause), or None when the flow succeeded.
async fn execute_graph(
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
        let store = shared.runner.tasks.store();
        let outcome = match outcome {
            NodeOutcome::Completed(value) => {
                match store.record_node_output(&shared.flow_run.id, &node_id, &value) {
                    Ok(()) => NodeOutcome::Completed(value),
                    Err(error) => NodeOutcome::Failed {
                        state: State::Crashed,
                        cause: format!("its output could not be recorded: {error}"),
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
        if let Err(error) = shared.runner.tasks.record_not_ready(&request, cause) {
            tracing::error!("could not record node `{node_id}` as NotReady: {error}");
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
            let inputs = match fan_out(&input, map) {
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
            let share = Arc::new(Semaphore::new(shared.runner.map_share));
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
                    let permit = shared.runner.permits.clone().acquire_owned().await;
                    (share, permit)
                };
                let slot = tokio::select! {
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
                    let _slot = slot;
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
                Ok(outcome) if outcome.state == State::Completed => {
                    NodeOutcome::Completed(outcome.output.unwrap_or(Value::Null))
                }
                Ok(outcome) => NodeOutcome::Failed {
                    state: outcome.state,
                    cause: format!(
                        "subflow run '{}' ended {}: {}",
                        outcome.name,
                        outcome.state,
                        outcome.message.unwrap_or_default()
                    ),
                },
                Err(error) => failed(error.to_string()),
            }
        }
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
    let _slot = shared
        .runner
        .permits
        .clone()
        .acquire_owned()
        .await
        .expect("the permits are never closed");
    execute_request(shared, request).await
}

/// Runs a task request; the caller holds a slot.
async fn execute_request(shared: &Arc<FlowRunShared>, request: TaskRequest) -> NodeOutcome {
    match shared.runner.tasks.run_task(request).await {
        Ok(outcome) if outcome.state.is_success() => {
            NodeOutcome::Completed(outcome.output.unwrap_or(Value::Null))
        }
        Ok(outcome) => NodeOutcome::Failed {
            state: outcome.state,
            cause: format!(
                "task run '{}' ended {}: {}",
                outcome.name,
                outcome.state,
                outcome.message.unwrap_or_default()
            ),
        },
        Err(error) => NodeOutcome::Failed {
            state: State::Failed,
            cause: error.to_string(),
        },
    }
}

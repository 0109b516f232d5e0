//! Flow runs driven from the queue. A submitted flow run is a queued row; the worker that
//! claims it drives its graph (the same scheduler as a local run) but queues each task
//! run and subflow run for workers instead of running it, and waits for the queue to
//! hand their ends back ([`Queue::collect`](weir_store::Queue::collect)). Every write the
//! driver makes carries its fence, so a driver whose lease was taken over writes nothing
//! more; the worker that took it over resumes the run from the store, waiting for what is
//! still queued or running instead of running it again.

use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};
use weir_core::{FlowRunId, State, Timestamp};
use weir_flow::{Flow, FlowError, NodeKind, flow_run_name};
use weir_runtime::Plugin;
use weir_store::{
    Ending, Fence, Finished, FlowRunRecord, NewFlowRun, NewWork, NewWorkRun, Recorder, StateChange,
    Store, StoreError,
};

use super::graph::FlowRunShared;
use super::prepare::Source;
use super::{FlowRunError, FlowRunOutcome, FlowRunner, NodeOutcome, PreparedFlow};
use crate::cancel::CancelToken;
use crate::observer::FlowRunLabel;
use crate::runner::{HAND_BACK, LEASE_LOST, RunnerError, TaskRequest};
use crate::work::{FlowBundle, FlowSpec, MAX_BUNDLE_BYTES};

/// The most task runs and subflow runs one driver keeps queued or running at once: the
/// driver holds only a small future for each.
pub(super) const IN_FLIGHT: usize = 1024;
/// The longest a driver with runs out waits before it asks the queue for the ones that
/// ended (it is woken sooner when a run ends: LISTEN/NOTIFY on PostgreSQL).
const COLLECT_WAIT: Duration = Duration::from_millis(250);
/// How long a driver waits before asking again after the store failed.
const COLLECT_RETRY: Duration = Duration::from_millis(500);

/// A flow run a worker claimed, to drive.
pub struct ClaimedFlow {
    pub fence: Fence,
    pub record: FlowRunRecord,
    /// The queue row's spec.
    pub spec: String,
    /// The worker (by name) whose lease ran out while it drove the run.
    pub lost_from: Option<String>,
    pub cancel: CancelToken,
}

/// The runs a driver waits for.
#[derive(Default)]
struct Waiters {
    waiting: HashMap<String, oneshot::Sender<Finished>>,
    /// Ends collected before anyone waited for them.
    early: HashMap<String, Finished>,
    /// Runs still out from before a resume, by node and element.
    in_flight: HashMap<(String, Option<u32>), String>,
}

/// One driven flow run's side of the queue: its fence, its fenced recorder, and the
/// collector that hands the ends of its runs to the nodes waiting for them.
pub(crate) struct Driving {
    pub(super) fence: Fence,
    pub(super) recorder: Arc<dyn Recorder>,
    runner: Arc<FlowRunner>,
    bundle: String,
    waiters: Arc<Mutex<Waiters>>,
    wake: Arc<Notify>,
    collector: tokio::task::JoinHandle<()>,
    /// The flow run's token: a cancelled run stops waiting for what it queued.
    cancel: CancelToken,
}

impl Drop for Driving {
    fn drop(&mut self) {
        self.collector.abort();
    }
}

impl Driving {
    fn start(
        runner: &Arc<FlowRunner>,
        flow_run: FlowRunId,
        fence: Fence,
        bundle: String,
        cancel: CancelToken,
    ) -> Arc<Self> {
        let store = runner.tasks.store().clone();
        let waiters = Arc::new(Mutex::new(Waiters::default()));
        let wake = Arc::new(Notify::new());
        let collector = tokio::spawn(collect(
            store.clone(),
            flow_run,
            fence.clone(),
            waiters.clone(),
            wake.clone(),
            cancel.clone(),
        ));
        Arc::new(Driving {
            recorder: store.fenced(fence.clone()),
            fence,
            runner: runner.clone(),
            bundle,
            waiters,
            wake,
            collector,
            cancel,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiters> {
        self.waiters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs still out from before a resume: waited for rather than queued again.
    pub(super) fn expect(&self, in_flight: HashMap<(String, Option<u32>), String>) {
        self.lock().in_flight.extend(in_flight);
    }

    fn take_in_flight(&self, node: &str, index: Option<u32>) -> Option<String> {
        self.lock().in_flight.remove(&(node.to_owned(), index))
    }

    /// Waits for the end of a queued run of this flow run.
    async fn wait(&self, run_id: String) -> Option<Finished> {
        let receiver = {
            let mut waiters = self.lock();
            if let Some(finished) = waiters.early.remove(&run_id) {
                return Some(finished);
            }
            let (sender, receiver) = oneshot::channel();
            waiters.waiting.insert(run_id, sender);
            receiver
        };
        self.wake.notify_one();
        tokio::select! {
            finished = receiver => finished.ok(),
            _ = self.cancel.cancelled() => None,
        }
    }

    /// How a node ends with the end of its queued run.
    async fn outcome(&self, kind: &str, finished: Option<Finished>) -> NodeOutcome {
        let Some(finished) = finished else {
            let cause = match self.cancel.reason() {
                Some(reason) => format!("cancelled: {reason}"),
                None => format!("the driver stopped waiting for its {kind}"),
            };
            return NodeOutcome::Failed {
                state: State::Cancelled,
                cause,
            };
        };
        let inline = finished
            .inline_result
            .as_deref()
            .filter(|_| finished.state.is_success())
            .and_then(|text| serde_json::from_str(text).ok());
        let output = match (&finished.result_digest, finished.state.is_success()) {
            _ if inline.is_some() => inline,
            (Some(digest), true) => match self.runner.tasks.store().result(digest).await {
                Ok(output) => Some(output),
                Err(error) => {
                    return NodeOutcome::Failed {
                        state: State::Crashed,
                        cause: format!(
                            "the result of {kind} '{}' could not be read: {}",
                            finished.name,
                            error.describe()
                        ),
                    };
                }
            },
            _ => None,
        };
        NodeOutcome::of_run(
            kind,
            &finished.name,
            finished.state,
            finished.message,
            output,
        )
    }

    /// Queues a task run of the flow (or finds it still out from before a resume) and
    /// waits for it to end.
    pub(super) async fn run_task(&self, request: TaskRequest) -> NodeOutcome {
        let node = request.node.clone().unwrap_or_default();
        let run_id = match self.take_in_flight(&node, request.map_index) {
            Some(run_id) => run_id,
            None => match self.runner.tasks.queue_task(&request, &self.fence) {
                Ok(label) => label.id.to_string(),
                Err(error) => {
                    return NodeOutcome::Failed {
                        state: State::Failed,
                        cause: weir_core::describe_error(&error),
                    };
                }
            },
        };
        let finished = self.wait(run_id).await;
        self.outcome("task run", finished).await
    }

    /// Queues a subflow run for a worker to drive (or finds it still out) and waits for it.
    pub(super) async fn run_subflow(
        &self,
        shared: &FlowRunShared,
        node_id: &str,
        prepared: &PreparedFlow,
        parameters: Map<String, Value>,
    ) -> NodeOutcome {
        let run_id = match self.take_in_flight(node_id, None) {
            Some(run_id) => run_id,
            None => {
                let NodeKind::Subflow { path, .. } = &shared.prepared.node(node_id).kind else {
                    unreachable!("run_subflow is called for subflow nodes");
                };
                let now = self.runner.tasks.clock().now();
                let id = FlowRunId::generate();
                let spec = FlowSpec {
                    bundle: self.bundle.clone(),
                    path: path.display().to_string(),
                };
                let work = NewWork {
                    run: NewWorkRun::Flow {
                        run: NewFlowRun {
                            id: id.clone(),
                            name: flow_run_name(),
                            flow: prepared.flow.name.clone(),
                            source: Some(spec.path.clone()),
                            parameters: Value::Object(parameters),
                            parent: Some((shared.flow_run.id.clone(), node_id.to_owned())),
                            created: now,
                            owner: None,
                            graph: Some(super::graph_of(&prepared.flow)),
                            tags: prepared.flow.tags.clone(),
                        },
                        states: vec![pending(now)],
                    },
                    spec: serde_json::to_string(&spec).unwrap_or_default(),
                    tags: Vec::new(),
                    requirements: Default::default(),
                    ready_at: now,
                    priority: 0,
                    memory_bytes: None,
                };
                if let Err(error) = self.runner.tasks.store().enqueue(&work, Some(&self.fence)) {
                    return NodeOutcome::Failed {
                        state: State::Crashed,
                        cause: format!("its subflow run could not be queued: {}", error.describe()),
                    };
                }
                id.to_string()
            }
        };
        let finished = self.wait(run_id).await;
        self.outcome("subflow run", finished).await
    }
}

fn pending(at: Timestamp) -> StateChange {
    StateChange {
        state: State::Pending,
        message: None,
        attempt: 0,
        at,
    }
}

/// Hands the ends of a flow run's queued runs to the nodes waiting for them, asking the
/// queue while any wait. A lost lease cancels the drive (another worker drives it now).
async fn collect(
    store: Arc<dyn Store>,
    flow_run: FlowRunId,
    fence: Fence,
    waiters: Arc<Mutex<Waiters>>,
    wake: Arc<Notify>,
    cancel: CancelToken,
) {
    let lock = || {
        waiters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    };
    loop {
        let woken = wake.notified();
        if lock().waiting.is_empty() {
            woken.await;
            continue;
        }
        match store.collect(&flow_run, Some(&fence)).await {
            Ok(finished) => {
                let idle = finished.is_empty();
                {
                    let mut waiters = lock();
                    for end in finished {
                        match waiters.waiting.remove(&end.run_id) {
                            Some(sender) => {
                                let _ = sender.send(end);
                            }
                            None => {
                                waiters.early.insert(end.run_id.clone(), end);
                            }
                        }
                    }
                }
                if idle {
                    store.wait_for_done(&flow_run, COLLECT_WAIT).await;
                }
            }
            Err(StoreError::LeaseLost { .. }) => {
                cancel.cancel(LEASE_LOST);
                return;
            }
            Err(error) => {
                tracing::error!(
                    "could not collect the ended runs of flow run {flow_run}: {}",
                    error.describe()
                );
                tokio::time::sleep(COLLECT_RETRY).await;
            }
        }
    }
}

/// A submitted flow run: queued for workers.
#[derive(Debug, Clone)]
pub struct SubmittedRun {
    pub id: FlowRunId,
    pub name: String,
}

impl FlowRunner {
    /// Checks the flow as [`run_flow`](Self::run_flow) does, stores its files and plugins
    /// in the store (plugins by digest, as blobs), and queues the run for workers.
    pub async fn submit_flow(
        self: &Arc<Self>,
        flow: &Flow,
        parameters: &Map<String, Value>,
    ) -> Result<SubmittedRun, FlowRunError> {
        let source = flow.source.clone().ok_or_else(|| FlowError {
            origin: flow.origin(),
            node: None,
            field: None,
            message: "only a flow read from a file can be submitted".into(),
        })?;
        let prepared = self
            .prepare(flow.clone(), Vec::new(), &Source::Files)
            .await?;
        let parameters = prepared.flow.bind_parameters(parameters)?;
        let store = self.tasks.store().clone();
        let mut bundle = FlowBundle::default();
        self.bundle(&prepared, &mut bundle).await?;
        let bundle_json = serde_json::to_vec(&bundle)
            .map_err(|error| StoreError::backend("writing the flow's bundle", error))?;
        let spec = FlowSpec {
            bundle: store.put_blob(&bundle_json).await?,
            path: source.display().to_string(),
        };
        let now = self.tasks.clock().now();
        let id = FlowRunId::generate();
        let name = flow_run_name();
        let work = NewWork {
            run: NewWorkRun::Flow {
                run: NewFlowRun {
                    id: id.clone(),
                    name: name.clone(),
                    flow: flow.name.clone(),
                    source: Some(spec.path.clone()),
                    parameters: Value::Object(parameters),
                    parent: None,
                    created: now,
                    owner: None,
                    graph: Some(super::graph_of(flow)),
                    tags: flow.tags.clone(),
                },
                states: vec![pending(now)],
            },
            spec: serde_json::to_string(&spec)
                .map_err(|error| StoreError::backend("writing a queued run's spec", error))?,
            tags: Vec::new(),
            requirements: Default::default(),
            ready_at: now,
            priority: 0,
            memory_bytes: None,
        };
        store.enqueue(&work, None)?;
        store.flush().await?;
        Ok(SubmittedRun { id, name })
    }

    /// Adds a prepared flow's file and plugins (and its subflows') to a bundle, storing
    /// each plugin's bytes under its digest.
    fn bundle<'a>(
        self: &'a Arc<Self>,
        prepared: &'a PreparedFlow,
        bundle: &'a mut FlowBundle,
    ) -> super::BoxFuture<'a, Result<(), FlowRunError>> {
        Box::pin(async move {
            let flow = &prepared.flow;
            if let Some(path) = &flow.source {
                let text = std::fs::read_to_string(path).map_err(|error| FlowError {
                    origin: flow.origin(),
                    node: None,
                    field: None,
                    message: format!("cannot read the flow file again to submit it: {error}"),
                })?;
                bundle.flows.insert(path.display().to_string(), text);
            }
            let store = self.tasks.store().clone();
            for (alias, path) in &flow.plugins {
                let key = path.display().to_string();
                if bundle.plugins.contains_key(&key) {
                    continue;
                }
                let plugin = &prepared.plugins[alias];
                let bytes = std::fs::read(path).map_err(|source| FlowRunError::Plugin {
                    origin: flow.origin(),
                    alias: alias.clone(),
                    source: RunnerError::Load(weir_runtime::LoadError::Read {
                        path: path.clone(),
                        source,
                    }),
                })?;
                let digest = store.put_blob(&bytes).await?;
                if digest != plugin.digest().as_str() {
                    return Err(FlowError {
                        origin: flow.origin(),
                        node: None,
                        field: None,
                        message: format!(
                            "plugin `{alias}` ({key}) changed while it was being submitted"
                        ),
                    }
                    .into());
                }
                bundle.plugins.insert(key, digest);
            }
            for subflow in prepared.subflows.values() {
                self.bundle(subflow, bundle).await?;
            }
            Ok(())
        })
    }

    /// A plugin of a bundle, by its digest: fetched from the store's blobs once, checked
    /// against the digest, and compiled (the compiled form is cached on this machine).
    pub(super) async fn fetch_plugin(
        &self,
        bundle: &FlowBundle,
        path: &Path,
    ) -> Result<Plugin, RunnerError> {
        let key = path.display().to_string();
        let digest = bundle.plugins.get(&key).ok_or_else(|| {
            StoreError::backend(
                format!("finding plugin {key}"),
                "the submitted run's bundle does not name it",
            )
        })?;
        let name = path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_else(|| digest.clone());
        self.plugin_by_digest(digest, &name).await
    }

    /// A plugin by its digest: from this runner's memory, else fetched from the store's
    /// blobs (checked against the digest) and compiled, the compiled form cached on this
    /// machine. `name` names it in messages.
    pub async fn plugin_by_digest(&self, digest: &str, name: &str) -> Result<Plugin, RunnerError> {
        if let Some(plugin) = self.lock_fetched().get(digest) {
            return Ok(plugin.clone());
        }
        let bytes = self.tasks.store().blob(digest).await?.ok_or_else(|| {
            StoreError::broken_result(digest.to_owned(), "the plugin is not in the store's blobs")
        })?;
        let plugin = self.tasks.runtime().load_plugin_bytes(name, &bytes).await?;
        self.lock_fetched()
            .insert(digest.to_owned(), plugin.clone());
        Ok(plugin)
    }

    fn lock_fetched(&self) -> std::sync::MutexGuard<'_, HashMap<String, Plugin>> {
        self.fetched
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Drives a claimed flow run to its end: a new run from its start, a run another
    /// driver left (its lease lost) from what the store holds. A flow that cannot be
    /// prepared here ends `Failed`, saying why.
    pub async fn drive_claimed(
        self: &Arc<Self>,
        claimed: ClaimedFlow,
    ) -> Result<FlowRunOutcome, FlowRunError> {
        let ClaimedFlow {
            fence,
            record,
            spec,
            lost_from,
            cancel,
        } = claimed;
        let store = self.tasks.store().clone();
        let recorder = store.clone().fenced(fence.clone());
        let label = FlowRunLabel {
            id: record.id.clone(),
            name: record.name.clone(),
            flow: record.flow.clone(),
        };
        let attempt = record.attempts.max(1);
        let prepared = match self.prepare_claimed(&spec, &record).await {
            Ok(prepared) => prepared,
            Err(message) => {
                self.tasks.observer().flow_run_created(&label);
                return self.finish(
                    recorder.as_ref(),
                    label,
                    State::Failed,
                    Some(message),
                    None,
                    attempt,
                );
            }
        };
        let (prepared, parameters, bundle) = prepared;
        let driving = Driving::start(
            self,
            record.id.clone(),
            fence.clone(),
            bundle,
            cancel.clone(),
        );
        self.tasks.ensure_owner().await?;
        let _active = self.tasks.activate(label.id.as_str(), &cancel);
        let fresh = record.attempts == 0;
        let resumed = if fresh {
            super::Resumed::default()
        } else {
            self.what_was_done(&record.id, true).await?
        };
        let message = match (&lost_from, fresh) {
            (Some(worker), _) => Some(format!(
                "taken over from worker {worker}, which stopped heartbeating"
            )),
            (None, false) => Some("resumed".to_owned()),
            (None, true) => None,
        };
        self.tasks.observer().flow_run_created(&label);
        recorder.set_flow_run_state(
            &label.id,
            &StateChange {
                state: State::Running,
                message,
                attempt,
                at: self.tasks.clock().now(),
            },
            None,
        )?;
        let outcome = self
            .drive(
                prepared,
                parameters,
                label,
                resumed,
                attempt,
                cancel,
                Some(driving),
            )
            .await?;
        if !matches!(outcome.state, State::Completed | State::Pending) {
            // A cancel or a timeout leaves runs out: end them, and take them (and the
            // ends nobody will collect) off the queue.
            let ending = Ending {
                state: State::Cancelled,
                message: format!("its flow run ended {}", outcome.state),
                at: self.tasks.clock().now(),
            };
            if let Err(error) = store.end_flow_run_tree(&outcome.id, &ending).await {
                tracing::error!(
                    "could not end the runs left by flow run {}: {}",
                    outcome.id,
                    error.describe()
                );
            }
        }
        Ok(outcome)
    }

    /// The claimed flow, prepared from its bundle, with its parameters and the bundle's
    /// digest; or why it cannot run.
    async fn prepare_claimed(
        self: &Arc<Self>,
        spec: &str,
        record: &FlowRunRecord,
    ) -> Result<(Arc<PreparedFlow>, Map<String, Value>, String), String> {
        let spec: FlowSpec = serde_json::from_str(spec)
            .map_err(|error| format!("its queued spec is unreadable: {error}"))?;
        let bytes = self
            .tasks
            .store()
            .blob(&spec.bundle)
            .await
            .map_err(|error| error.describe())?
            .ok_or_else(|| format!("its bundle {} is not in the store", spec.bundle))?;
        if bytes.len() > MAX_BUNDLE_BYTES {
            return Err(format!(
                "its bundle is {} bytes, above the {MAX_BUNDLE_BYTES} a worker reads",
                bytes.len()
            ));
        }
        let bundle: FlowBundle = serde_json::from_slice(&bytes)
            .map_err(|error| format!("its bundle is unreadable: {error}"))?;
        let text = bundle
            .flows
            .get(&spec.path)
            .ok_or_else(|| format!("its bundle has no flow file {}", spec.path))?;
        let flow =
            Flow::from_toml(text, Path::new(&spec.path)).map_err(|error| error.to_string())?;
        let prepared = self
            .prepare(flow, Vec::new(), &Source::Bundle(&bundle))
            .await
            .map_err(|error| weir_core::describe_error(&error))?;
        let Value::Object(given) = &record.parameters else {
            return Err("its recorded parameters are not an object".into());
        };
        let parameters = prepared
            .flow
            .bind_parameters(given)
            .map_err(|error| error.to_string())?;
        Ok((prepared, parameters, spec.bundle))
    }

    /// A claimed flow run's token was cancelled to hand it back (the worker shuts down)
    /// or because its lease was lost: what to record (nothing, for a lost lease).
    pub(super) fn claim_cancelled(
        &self,
        queue: &Driving,
        label: &FlowRunLabel,
        reason: &str,
        attempt: u32,
    ) -> Option<Result<FlowRunOutcome, FlowRunError>> {
        let outcome = |state| FlowRunOutcome {
            id: label.id.clone(),
            name: label.name.clone(),
            state,
            message: Some(reason.to_owned()),
            output: None,
            attempts: 0,
        };
        match reason {
            LEASE_LOST => Some(Ok(outcome(State::Pending))),
            HAND_BACK => {
                let handed_back = queue
                    .recorder
                    .set_flow_run_state(
                        &label.id,
                        &StateChange {
                            state: State::Pending,
                            message: Some(format!("given back to the queue: {reason}")),
                            attempt,
                            at: self.tasks.clock().now(),
                        },
                        None,
                    )
                    .and_then(|()| {
                        self.tasks
                            .store()
                            .requeue(&queue.fence, self.tasks.clock().now())
                    });
                Some(
                    handed_back
                        .map(|()| outcome(State::Pending))
                        .map_err(Into::into),
                )
            }
            _ => None,
        }
    }
}

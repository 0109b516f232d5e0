//! A worker: claims queued runs from the store and runs them, on any machine that shares
//! it. Task runs get one attempt per claim; flow runs are driven (their task runs queued
//! for every worker). Its leases are renewed while it lives; a run whose lease it lost is
//! dropped (another worker has it). It stops claiming when asked to stop, lets what it
//! holds finish for a grace period, and gives the rest back to the queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use weir_core::{Grants, Timestamp};
use weir_store::{
    Claim, ClaimTimes, Fence, Requirements, Room, WorkKind, WorkerCapabilities, WorkerOffer,
    WorkerRecord,
};

use crate::cancel::CancelToken;
use crate::flow::{ClaimedFlow, FlowRunner};
use crate::runner::{ClaimedEnd, ClaimedTask, FlowRunRef, HAND_BACK, LEASE_LOST, TaskRunner};
use crate::work::TaskSpec;

/// How a worker works.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// How it is named in messages and in the runs it holds (`w-host-1234`).
    pub name: String,
    /// Task runs it runs at once.
    pub concurrency: usize,
    /// When not empty, it claims only runs with one of these tags.
    pub tags: Vec<String>,
    /// The most it grants: runs needing a directory, variable or HTTP host beyond these
    /// are left to other workers.
    pub ceilings: Grants,
    /// How long a claim holds without a renewal: a dead worker's runs are taken over
    /// after this.
    pub lease: Duration,
    /// Whether it drives flow runs (else it only runs task runs).
    pub drives_flows: bool,
}

impl WorkerConfig {
    pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

    /// A worker named after this machine and process.
    pub fn named_after_this_process(concurrency: usize) -> Self {
        WorkerConfig {
            name: default_name(),
            concurrency: concurrency.max(1),
            tags: Vec::new(),
            ceilings: Grants::default(),
            lease: Self::DEFAULT_LEASE,
            drives_flows: true,
        }
    }
}

/// `w-HOST-PID`.
pub fn default_name() -> String {
    format!("w-{}-{}", crate::owner::host_name(), std::process::id())
}

/// The most flow runs one worker drives at once: a driver holds little (its graph and a
/// future per queued run), so this is well above the task concurrency.
const MAX_DRIVEN: usize = 256;
/// The most rows one claim takes: claims are grouped, but a worker that takes more
/// than it starts soon leaves less for the others.
const MAX_CLAIM: usize = 64;
/// How long a busy worker with little room waits for more of its runs to end before it
/// claims.
const CLAIM_GATHER: Duration = Duration::from_millis(2);
/// Flow runs whose parameters a worker keeps (forgotten all at once past this).
const PARAMETERS_KEPT: usize = 64;
/// How often a worker says why runs nobody can take wait.
const EXPLAIN_EVERY: Duration = Duration::from_secs(3);
/// The longest an idle worker waits before it claims again (it is woken sooner when
/// work is queued: LISTEN/NOTIFY on PostgreSQL).
const IDLE_WAIT: Duration = Duration::from_millis(250);
/// How often an idle worker looks for work.
const IDLE_POLL: Duration = Duration::from_millis(20);
/// The longest wait between claims while the store cannot be reached.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Requirement sets remembered as not servable here (then skipped by the claim query).
const MAX_UNSERVABLE: usize = 256;

/// What a worker did, when it stops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerSummary {
    pub task_claims: u64,
    pub flow_claims: u64,
    pub handed_back: u64,
    pub leases_lost: u64,
}

/// A run this worker holds.
struct Held {
    fence: Fence,
    kind: WorkKind,
    cancel: CancelToken,
    /// Its lease was lost (said once; the run is being dropped).
    lost: bool,
}

#[derive(Default)]
struct State {
    held: HashMap<String, Held>,
    /// Parameters of the flow runs whose task runs it ran lately.
    parameters: HashMap<weir_core::FlowRunId, Arc<serde_json::Value>>,
    unservable: Vec<String>,
    summary: WorkerSummary,
    /// The runner as each tenant whose runs it claimed lately.
    tenants: HashMap<weir_core::TenantId, Arc<FlowRunner>>,
}

/// Tenant views kept at most (each is a few handles; more tenants than this only cost
/// a view made again).
const TENANT_VIEWS_KEPT: usize = 1024;

/// A worker over a flow runner (and its task runner and store).
pub struct Worker {
    flows: Arc<FlowRunner>,
    config: WorkerConfig,
    state: Mutex<State>,
    /// A held run ended: there is room to claim.
    freed: Notify,
}

impl Worker {
    pub fn new(flows: Arc<FlowRunner>, config: WorkerConfig) -> Arc<Self> {
        Arc::new(Worker {
            flows,
            config,
            state: Mutex::new(State::default()),
            freed: Notify::new(),
        })
    }

    fn tasks(&self) -> &Arc<TaskRunner> {
        self.flows.tasks()
    }

    /// The runner a claim runs with: recording into the store as the claim's tenant.
    fn runner_for(&self, tenant: &weir_core::TenantId) -> Arc<FlowRunner> {
        if self.tasks().store().tenant_id() == tenant {
            return self.flows.clone();
        }
        let mut state = self.lock();
        if let Some(runner) = state.tenants.get(tenant) {
            return runner.clone();
        }
        if state.tenants.len() >= TENANT_VIEWS_KEPT {
            state.tenants.clear();
        }
        let runner = Arc::new(self.flows.for_tenant(tenant));
        state.tenants.insert(tenant.clone(), runner.clone());
        runner
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn say(&self, message: &str) {
        self.tasks().observer().worker(&self.config.name, message);
    }

    /// Claims and runs work until `stop` is cancelled; then lets what it holds finish for
    /// up to `grace`, gives back the rest, and returns.
    pub async fn run(
        self: &Arc<Self>,
        stop: CancelToken,
        grace: Duration,
    ) -> Result<WorkerSummary, weir_store::StoreError> {
        let tasks = self.tasks().clone();
        tasks.ensure_owner().await?;
        let store = tasks.store().clone();
        let now = tasks.clock().now();
        store
            .register_worker(&WorkerRecord {
                owner: tasks.owner_id().to_owned(),
                name: self.config.name.clone(),
                offer: WorkerCapabilities {
                    tags: self.config.tags.clone(),
                    drives_flows: self.config.drives_flows,
                    concurrency: self.config.concurrency,
                    ceilings: self.config.ceilings.clone(),
                    lease_ms: self.config.lease.as_millis() as u64,
                },
                started: now,
                heartbeat: now,
            })
            .await?;
        let renewer = tokio::spawn(self.clone().renew_leases());
        let sweeper = tokio::spawn(self.clone().explain_waiting());
        let mut backoff = IDLE_POLL;
        let mut running = tokio::task::JoinSet::new();
        while !stop.is_cancelled() {
            while running.try_join_next().is_some() {}
            let (mut free_tasks, mut free_flows, mut offer) = self.offer();
            // Busy, with little room: let more runs end first, so that one claim takes
            // several rows (a claim per run ending made claims the bottleneck).
            let batch = (self.config.concurrency / 4).max(1);
            if free_tasks > 0 && free_tasks < batch && !running.is_empty() {
                tokio::time::sleep(CLAIM_GATHER).await;
                (free_tasks, free_flows, offer) = self.offer();
            }
            let kinds_wanted = free_tasks > 0 || free_flows > 0;
            let mut claimed = Vec::new();
            if kinds_wanted {
                let now = tasks.clock().now();
                let times = ClaimTimes {
                    now,
                    lease_until: now.saturating_add(self.config.lease),
                };
                // Each kind up to its room: a row claimed beyond it would go straight back.
                let room = Room {
                    tasks: free_tasks.min(MAX_CLAIM),
                    flows: free_flows.min(MAX_CLAIM),
                };
                let claims = store.claim(&offer, times, room).await;
                match claims {
                    Ok(claims) => {
                        backoff = IDLE_POLL;
                        claimed = claims;
                    }
                    Err(error) => {
                        self.say(&format!(
                            "could not claim work, trying again in {} ms: {}",
                            backoff.as_millis(),
                            error.describe()
                        ));
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = stop.cancelled() => {}
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            }
            let got_work = !claimed.is_empty();
            for claim in claimed {
                if !self.serves(&claim) {
                    // It needs more than this worker grants: back to the queue, as it
                    // was, for another worker.
                    if let Err(error) = store.unclaim(&claim) {
                        self.say(&format!(
                            "could not give back {}: {}",
                            claim.run_id,
                            error.describe()
                        ));
                    }
                    continue;
                }
                let cancel = tasks.cancel_token();
                self.lock().held.insert(
                    claim.run_id.clone(),
                    Held {
                        fence: claim.fence.clone(),
                        kind: claim.kind,
                        cancel: cancel.clone(),
                        lost: false,
                    },
                );
                let worker = self.clone();
                running.spawn(async move {
                    let run_id = claim.run_id.clone();
                    worker.execute(claim, cancel).await;
                    worker.lock().held.remove(&run_id);
                    worker.freed.notify_one();
                });
            }
            if !got_work || !kinds_wanted {
                tokio::select! {
                    _ = store.wait_for_work(IDLE_WAIT), if kinds_wanted => {}
                    _ = self.freed.notified() => {}
                    _ = stop.cancelled() => {}
                }
            }
        }
        // Stopping: nothing more is claimed; what runs may finish within the grace period.
        let held = self.lock().held.len();
        if held > 0 {
            self.say(&format!(
                "stopping: waiting up to {} s for {held} run(s) to finish",
                grace.as_secs()
            ));
        }
        let finished = tokio::time::timeout(grace, async {
            while running.join_next().await.is_some() {}
        })
        .await;
        if finished.is_err() {
            let cancels: Vec<CancelToken> = self
                .lock()
                .held
                .values()
                .map(|held| held.cancel.clone())
                .collect();
            for cancel in cancels {
                cancel.cancel(HAND_BACK);
            }
            while running.join_next().await.is_some() {}
        }
        renewer.abort();
        sweeper.abort();
        match store.flush().await {
            // Writes of runs it lost were refused, as they should be.
            Ok(()) | Err(weir_store::StoreError::LeaseLost { .. }) => {}
            Err(error) => return Err(error),
        }
        Ok(self.lock().summary.clone())
    }

    /// Room for task runs and flow runs, and the offer to claim with.
    fn offer(&self) -> (usize, usize, WorkerOffer) {
        let state = self.lock();
        let count = |kind| state.held.values().filter(|held| held.kind == kind).count();
        let free_tasks = self
            .config
            .concurrency
            .saturating_sub(count(WorkKind::Task));
        let free_flows = match self.config.drives_flows {
            true => MAX_DRIVEN.saturating_sub(count(WorkKind::Flow)),
            false => 0,
        };
        let offer = WorkerOffer {
            worker: self.tasks().owner_id().to_owned(),
            name: self.config.name.clone(),
            tags: self.config.tags.clone(),
            unservable: state.unservable.clone(),
            holding: state.held.keys().cloned().collect(),
        };
        (free_tasks, free_flows, offer)
    }

    /// Whether this worker grants all a run needs; a run it cannot serve is remembered
    /// (by its requirements), so that the next claims skip its like.
    fn serves(&self, claim: &Claim) -> bool {
        if grants_cover(&self.config.ceilings, &claim.requirements) {
            return true;
        }
        let key = claim.requirements.key();
        let mut state = self.lock();
        if !state.unservable.contains(&key) && state.unservable.len() < MAX_UNSERVABLE {
            state.unservable.push(key);
        }
        false
    }

    async fn execute(self: &Arc<Self>, claim: Claim, cancel: CancelToken) {
        match claim.kind {
            WorkKind::Task => {
                self.lock().summary.task_claims += 1;
                self.execute_task(claim, cancel).await
            }
            WorkKind::Flow => {
                self.lock().summary.flow_claims += 1;
                self.execute_flow(claim, cancel).await
            }
        }
    }

    async fn execute_task(self: &Arc<Self>, claim: Claim, cancel: CancelToken) {
        let runner = self.runner_for(&claim.tenant);
        let tasks = runner.tasks();
        let store = tasks.store();
        let id = weir_core::TaskRunId::from_string(claim.run_id.clone());
        let record = match claim.task_run.clone() {
            Some(record) => Ok(Some(record)),
            None => store.task_run(&id).await,
        };
        let record = match record {
            Ok(Some(record)) => record,
            Ok(None) => {
                self.say(&format!(
                    "queued task run {id} has no record; left to its lease"
                ));
                return;
            }
            Err(error) => {
                self.say(&format!(
                    "could not read task run {id}: {}",
                    error.describe()
                ));
                return;
            }
        };
        // The tenant's ceiling holds for runs queued before it was lowered too.
        if let Some(beyond) = claim
            .settings
            .ceilings
            .as_ref()
            .and_then(|ceilings| first_beyond(ceilings, &claim.requirements))
        {
            let message = format!(
                "it is granted {beyond}, beyond what tenant `{}` may grant (its ceilings are set with `weir tenant set`)",
                claim.tenant
            );
            self.fail_task(tasks, &claim, &record, message);
            return;
        }
        let spec: TaskSpec = match serde_json::from_str(&claim.spec) {
            Ok(spec) => spec,
            Err(error) => {
                self.fail_task(
                    tasks,
                    &claim,
                    &record,
                    format!("its queued spec is unreadable: {error}"),
                );
                return;
            }
        };
        let plugin = match self
            .flows
            .plugin_by_digest(&spec.plugin, &spec.plugin_name)
            .await
        {
            Ok(plugin) => plugin,
            Err(error) => {
                let message = format!(
                    "plugin {} ({}) could not be loaded on this worker: {}",
                    spec.plugin_name,
                    spec.plugin,
                    weir_core::describe_error(&error)
                );
                self.fail_task(tasks, &claim, &record, message);
                return;
            }
        };
        let flow_run = match spec.flow_run {
            Some(flow) => {
                let id = weir_core::FlowRunId::from_string(flow.id);
                match self.parameters_of(tasks, &id).await {
                    Ok(parameters) => Some(FlowRunRef {
                        id,
                        name: flow.name,
                        parameters,
                    }),
                    Err(error) => {
                        let message = format!(
                            "the parameters of its flow run could not be read: {}",
                            error.describe()
                        );
                        self.fail_task(tasks, &claim, &record, message);
                        return;
                    }
                }
            }
            None => None,
        };
        let claimed = ClaimedTask {
            fence: claim.fence.clone(),
            plugin,
            record,
            overrides: spec.overrides,
            flow_run,
            lost_from: claim.lost_from.map(|(name, _)| name),
            cancel,
            quotas: claim.settings.quotas.clone(),
        };
        match tasks.run_claimed(claimed).await {
            Ok(ClaimedEnd::HandedBack) => self.lock().summary.handed_back += 1,
            Ok(ClaimedEnd::LeaseLost) => self.lock().summary.leases_lost += 1,
            Ok(ClaimedEnd::Finished(_) | ClaimedEnd::Requeued { .. }) => {}
            Err(error) => self.say(&format!(
                "task run {id} could not be run: {}",
                weir_core::describe_error(&error)
            )),
        }
    }

    /// A flow run's parameters (for its task runs' context), read once per flow run.
    async fn parameters_of(
        &self,
        tasks: &TaskRunner,
        id: &weir_core::FlowRunId,
    ) -> Result<Arc<serde_json::Value>, weir_store::StoreError> {
        if let Some(parameters) = self.lock().parameters.get(id) {
            return Ok(parameters.clone());
        }
        let parameters = Arc::new(
            tasks
                .store()
                .flow_run(id)
                .await?
                .map(|run| run.parameters)
                .unwrap_or_else(|| serde_json::Value::Object(Default::default())),
        );
        let mut state = self.lock();
        if state.parameters.len() >= PARAMETERS_KEPT {
            state.parameters.clear();
        }
        state.parameters.insert(id.clone(), parameters.clone());
        Ok(parameters)
    }

    /// Ends a claimed task run that cannot run at all (its spec or plugin is broken).
    fn fail_task(
        &self,
        tasks: &TaskRunner,
        claim: &Claim,
        record: &weir_store::TaskRunRecord,
        message: String,
    ) {
        let change = weir_store::StateChange {
            state: weir_core::State::Failed,
            message: Some(message.clone()),
            attempt: record.attempts,
            at: self.tasks().clock().now(),
        };
        let recorder = tasks.store().clone().fenced(claim.fence.clone());
        if let Err(error) = recorder.finish_task_run(&record.id, &change, None, None) {
            self.say(&format!(
                "could not record task run {}: {}",
                record.id,
                error.describe()
            ));
        }
        self.say(&format!("task run '{}' failed: {message}", record.name));
    }

    async fn execute_flow(self: &Arc<Self>, claim: Claim, cancel: CancelToken) {
        let runner = self.runner_for(&claim.tenant);
        let store = runner.tasks().store();
        let id = weir_core::FlowRunId::from_string(claim.run_id.clone());
        let record = match store.flow_run(&id).await {
            Ok(Some(record)) => record,
            Ok(None) => {
                self.say(&format!(
                    "queued flow run {id} has no record; left to its lease"
                ));
                return;
            }
            Err(error) => {
                self.say(&format!(
                    "could not read flow run {id}: {}",
                    error.describe()
                ));
                return;
            }
        };
        let claimed = ClaimedFlow {
            fence: claim.fence,
            record,
            spec: claim.spec,
            lost_from: claim.lost_from.map(|(name, _)| name),
            cancel,
        };
        match runner.drive_claimed(claimed).await {
            Ok(outcome) if outcome.message.as_deref() == Some(LEASE_LOST) => {
                self.lock().summary.leases_lost += 1;
            }
            Ok(outcome) if outcome.message.as_deref() == Some(HAND_BACK) => {
                self.lock().summary.handed_back += 1;
            }
            Ok(_) => {}
            Err(error) => self.say(&format!(
                "flow run {id} could not be driven: {}",
                weir_core::describe_error(&error)
            )),
        }
    }

    /// Every few seconds, says in their state messages why queued runs that no live
    /// worker can take wait.
    async fn explain_waiting(self: Arc<Self>) {
        let tasks = self.tasks().clone();
        loop {
            tokio::time::sleep(EXPLAIN_EVERY).await;
            let store = tasks.store().as_ref();
            if let Err(error) =
                crate::waiting::explain_waiting_runs(store, tasks.clock().as_ref()).await
            {
                self.say(&format!(
                    "could not look at the waiting runs: {}",
                    error.describe()
                ));
            }
        }
    }

    /// Renews this worker's leases every third of a lease; a run no longer held (another
    /// worker took it over while this one could not renew) is dropped.
    async fn renew_leases(self: Arc<Self>) {
        let tasks = self.tasks().clone();
        let store = tasks.store().clone();
        let every = self.config.lease / 3;
        loop {
            tokio::time::sleep(every).await;
            // Only runs held before the renewal can be missing from its answer: one
            // claimed meanwhile is not lost.
            let before: Vec<(String, Fence, CancelToken)> = self
                .lock()
                .held
                .iter()
                .filter(|(_, run)| !run.lost)
                .map(|(id, run)| (id.clone(), run.fence.clone(), run.cancel.clone()))
                .collect();
            let until: Timestamp = tasks.clock().now().saturating_add(self.config.lease);
            let held = match store.renew_leases(tasks.owner_id(), until).await {
                Ok(held) => held,
                Err(error) => {
                    self.say(&format!("could not renew leases: {}", error.describe()));
                    continue;
                }
            };
            for (id, fence, cancel) in before {
                if !held.contains(&fence) {
                    if let Some(run) = self.lock().held.get_mut(&id) {
                        run.lost = true;
                    }
                    self.say(&format!(
                        "lost the lease on {id}: another worker took it over"
                    ));
                    cancel.cancel(LEASE_LOST);
                }
            }
        }
    }
}

/// Whether `ceilings` grant everything `needed` asks for.
pub fn grants_cover(ceilings: &Grants, needed: &Requirements) -> bool {
    first_beyond(ceilings, needed).is_none()
}

/// The first grant of `needed` that `ceilings` do not cover, as people read it
/// (`http api.example.com`, `env TOKEN`, `dir /srv/data (read-write)`).
pub fn first_beyond(ceilings: &Grants, needed: &Requirements) -> Option<String> {
    for dir in &needed.dirs {
        let (host, writable) = match dir.strip_suffix(":rw") {
            Some(host) => (host, true),
            None => (dir.as_str(), false),
        };
        let covered = ceilings.dirs.iter().any(|allowed| {
            std::path::Path::new(host).starts_with(&allowed.host) && (allowed.writable || !writable)
        });
        if !covered {
            let access = if writable { "read-write" } else { "read-only" };
            return Some(format!("dir {host} ({access})"));
        }
    }
    if let Some(name) = needed.env.iter().find(|name| !ceilings.env.contains(name)) {
        return Some(format!("env {name}"));
    }
    needed
        .http
        .iter()
        .find(|host| {
            !ceilings
                .http
                .iter()
                .any(|allowed| allowed.host == "*" || allowed.to_string() == **host)
        })
        .map(|host| format!("http {host}"))
}

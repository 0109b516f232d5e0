use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weir_core::{
    CacheKey, CachePolicy, Clock, FlowRunId, Limits, RetryPolicy, RunContext, State, TaskInfo,
    TaskOverrides, TaskRunId, format_duration,
};
use weir_runtime::{AttemptOutcome, AttemptSpec, LoadError, Plugin, Runtime};
use weir_store::{
    CacheEntryDraft, Fence, NewTaskRun, PluginRecord, Recorder, StateChange, Store, StoreError,
};

mod queued;

pub use queued::{ClaimedEnd, ClaimedTask, HAND_BACK, LEASE_LOST};

use crate::cancel::CancelToken;
use crate::logs::RunLog;
use crate::naming::{RunNumbers, render_run_name};
use crate::observer::{RunLabel, RunObserver};
use crate::owner::Ownership;

/// Why a task run could not be started or recorded. How a started run ends is not an
/// error: it is the run's final state in [`TaskRunOutcome`].
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("plugin `{plugin}` has no task named `{task}`; its tasks are: {available}")]
    UnknownTask {
        plugin: String,
        task: String,
        available: String,
    },
    #[error("the input of task `{task}` must be a JSON object, not {found}")]
    InputNotObject { task: String, found: String },
    #[error(
        "task `{task}` is granted the environment variable `{name}`, but it is neither in the secrets file nor in this environment"
    )]
    MissingEnv { task: String, name: String },
    #[error("task `{task}` needs {grant}, which this run is not granted")]
    NeedNotGranted { task: String, grant: String },
    #[error(
        "task `{task}` is granted the directory {path}, which does not exist or is not a directory"
    )]
    MissingDir { task: String, path: String },
    #[error(
        "the memory limit of {requested} bytes is above this host's maximum of {maximum} bytes"
    )]
    MemoryAboveMaximum { requested: u64, maximum: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A flow run a task run belongs to.
#[derive(Debug, Clone)]
pub struct FlowRunRef {
    pub id: FlowRunId,
    pub name: String,
    /// Shared: every task run of the flow run refers to it (a map of 10,000 over a
    /// parameter of 10,000 values must not copy it 10,000 times).
    pub parameters: Arc<serde_json::Value>,
}

/// One request to run a task.
#[derive(Debug, Clone)]
pub struct TaskRequest {
    pub plugin: Plugin,
    pub task: String,
    pub input: serde_json::Value,
    pub overrides: TaskOverrides,
    pub flow_run: Option<FlowRunRef>,
    /// The flow node this run is for.
    pub node: Option<String>,
    /// Its element, when the node maps over a list.
    pub map_index: Option<u32>,
    /// The run's name when neither the request nor the task has a template
    /// (a flow numbers its runs itself); by default `task-N` per runner.
    pub default_name: Option<String>,
    /// Cancels the run (a flow run passes its own token's child); by default a child
    /// of the runner's, which [`TaskRunner::cancel_all`] cancels.
    pub cancel: Option<CancelToken>,
}

impl TaskRequest {
    pub fn new(plugin: Plugin, task: impl Into<String>, input: serde_json::Value) -> Self {
        TaskRequest {
            plugin,
            task: task.into(),
            input,
            overrides: TaskOverrides::default(),
            flow_run: None,
            node: None,
            map_index: None,
            default_name: None,
            cancel: None,
        }
    }

    pub fn with_overrides(mut self, overrides: TaskOverrides) -> Self {
        self.overrides = overrides;
        self
    }
}

/// How a task run ended.
#[derive(Debug, Clone)]
pub struct TaskRunOutcome {
    pub id: TaskRunId,
    pub name: String,
    pub state: State,
    /// Why it ended so, for every state but Completed.
    pub message: Option<String>,
    pub output: Option<serde_json::Value>,
    /// Attempts made (0 for a cache hit).
    pub attempts: u32,
}

/// What a run may touch, resolved when it starts.
#[derive(Default)]
struct Access {
    env: Vec<(String, String)>,
    secrets: Vec<String>,
}

/// The settings of one run: the task's defaults with the request's overrides applied.
struct Effective {
    retry: RetryPolicy,
    timeout: Option<Duration>,
    limits: Limits,
    cache_policy: CachePolicy,
    cache_expiration: Option<Duration>,
    refresh_cache: bool,
    tags: Vec<String>,
    log_prints: bool,
    grants: weir_core::Grants,
}

impl Effective {
    fn new(info: &TaskInfo, overrides: &TaskOverrides) -> Self {
        let mut retry = info.retry.clone();
        if let Some(retries) = overrides.retries {
            retry.retries = retries;
        }
        if let Some(delays) = &overrides.retry_delays {
            retry.delays = delays.clone();
        }
        if let Some(jitter) = overrides.retry_jitter_factor {
            retry.jitter_factor = Some(jitter);
        }
        let mut tags = info.tags.clone();
        for tag in &overrides.extra_tags {
            if !tags.contains(tag) {
                tags.push(tag.clone());
            }
        }
        Effective {
            retry,
            timeout: overrides.timeout.or(info.timeout),
            limits: Limits {
                memory_bytes: overrides
                    .memory_bytes
                    .unwrap_or(Limits::DEFAULT_MEMORY_BYTES),
                fuel: overrides.fuel,
            },
            cache_policy: overrides.cache_policy.unwrap_or(info.cache_policy),
            cache_expiration: overrides.cache_expiration.or(info.cache_expiration),
            refresh_cache: overrides.refresh_cache,
            tags,
            log_prints: overrides.log_prints.unwrap_or(info.log_prints),
            grants: overrides.grants.clone(),
        }
    }
}

/// Runs tasks and records them. Share it behind an `Arc`; runs may go on concurrently.
pub struct TaskRunner {
    runtime: Arc<Runtime>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    observer: Arc<dyn RunObserver>,
    /// Next `task-N` number per task name, for runs not named by a template.
    run_numbers: RunNumbers,
    /// Wakes runs waiting for a tag's concurrency slot when this process frees one.
    pub(crate) slots_freed: Arc<tokio::sync::Notify>,
    /// Values for granted environment variables, redacted wherever shown.
    secrets: HashMap<String, String>,
    /// This process as the owner of its runs: heartbeat, cancellation tokens.
    pub(crate) ownership: Arc<Ownership>,
    /// When this runner last looked for dead owners holding slots it waits for.
    pub(crate) last_reap: Mutex<Option<std::time::Instant>>,
    /// False for a tenant's view of another runner ([`for_tenant`](Self::for_tenant)):
    /// the process's runs are retired once, by the runner they belong to.
    retires_on_drop: bool,
}

impl Drop for TaskRunner {
    fn drop(&mut self) {
        if !self.retires_on_drop {
            return;
        }
        // Blocking here is safe on any thread, an async worker included: every backend
        // answers a retirement from a writer thread of its own, not from this runtime.
        futures::executor::block_on(
            self.ownership
                .retire(self.store.as_ref(), self.clock.as_ref()),
        );
    }
}

impl TaskRunner {
    pub fn new(
        runtime: Arc<Runtime>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        observer: Arc<dyn RunObserver>,
    ) -> Self {
        let ownership = Arc::new(Ownership::new(clock.now()));
        TaskRunner {
            runtime,
            store,
            clock,
            observer,
            run_numbers: RunNumbers::default(),
            slots_freed: Arc::new(tokio::sync::Notify::new()),
            secrets: HashMap::new(),
            ownership,
            last_reap: Mutex::new(None),
            retires_on_drop: true,
        }
    }

    /// The same runner (its runtime, clock, observer, owner and cancellation) recording
    /// into the store as `tenant`: what a worker runs a claim of that tenant with.
    pub fn for_tenant(&self, tenant: &weir_core::TenantId) -> TaskRunner {
        TaskRunner {
            runtime: self.runtime.clone(),
            store: self.store.for_tenant(tenant),
            clock: self.clock.clone(),
            observer: self.observer.clone(),
            run_numbers: RunNumbers::default(),
            slots_freed: self.slots_freed.clone(),
            secrets: self.secrets.clone(),
            ownership: self.ownership.clone(),
            last_reap: Mutex::new(None),
            retires_on_drop: false,
        }
    }

    /// Cancels every run of this runner, in progress or yet to start, with `reason`
    /// (e.g. "interrupted (SIGINT)"): each ends `Cancelled`, its attempt dropped and its
    /// slots released. Runs started afterwards end `Cancelled` at once.
    pub fn cancel_all(&self, reason: &str) {
        self.ownership.root.cancel(reason);
    }

    /// A token that [`cancel_all`](Self::cancel_all) cancels, for a run's request.
    pub fn cancel_token(&self) -> CancelToken {
        self.ownership.root.child()
    }

    /// This process's id as the owner of the runs it records (`own_…`).
    pub fn owner_id(&self) -> &str {
        &self.ownership.record.id
    }

    /// Registers this process as a run owner (once) and starts its heartbeat.
    pub(crate) async fn ensure_owner(&self) -> Result<(), StoreError> {
        self.ownership
            .ensure_registered(&self.store, &self.clock)
            .await
    }

    /// Makes a run cancellable by id (from another process) while the guard lives.
    pub(crate) fn activate(&self, id: &str, token: &CancelToken) -> crate::owner::ActiveRun {
        self.ownership.activate(id, token)
    }

    /// Values for granted environment variables (see [`load_secrets`](crate::load_secrets)).
    pub fn with_secrets(mut self, secrets: HashMap<String, String>) -> Self {
        self.secrets = secrets;
        self
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn observer(&self) -> &Arc<dyn RunObserver> {
        &self.observer
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Loads a plugin file and records it in the store by digest.
    pub async fn load_plugin(&self, path: &Path) -> Result<Plugin, RunnerError> {
        let plugin = self.runtime.load_plugin_file(path).await?;
        self.store.record_plugin(&PluginRecord {
            digest: plugin.digest().clone(),
            name: plugin.name().to_owned(),
            size_bytes: plugin.size_bytes() as u64,
            tasks: plugin.tasks().to_vec(),
            first_seen: self.clock.now(),
        })?;
        Ok(plugin)
    }

    /// Records a run that never starts because something it needs failed (state NotReady).
    pub fn record_not_ready(
        &self,
        request: &TaskRequest,
        reason: &str,
    ) -> Result<TaskRunOutcome, RunnerError> {
        self.record_not_ready_in(self.store.as_ref(), request, reason)
    }

    /// [`record_not_ready`](Self::record_not_ready) through `recorder` (a driver's fence).
    pub(crate) fn record_not_ready_in(
        &self,
        recorder: &dyn Recorder,
        request: &TaskRequest,
        reason: &str,
    ) -> Result<TaskRunOutcome, RunnerError> {
        let info = self.task_info(request)?;
        let name = self.run_name(request, &info);
        let id = TaskRunId::generate();
        let now = self.clock.now();
        let label = RunLabel {
            id: id.clone(),
            name: name.clone(),
            task: info.name.clone(),
            flow_run_id: request.flow_run.as_ref().map(|flow| flow.id.clone()),
            node: request.node.clone(),
            map_index: request.map_index,
        };
        let change = |state, message: Option<&str>| StateChange {
            state,
            message: message.map(str::to_owned),
            attempt: 0,
            at: now,
        };
        recorder.create_task_run(
            &NewTaskRun {
                id: id.clone(),
                name: name.clone(),
                task: info.name.clone(),
                plugin_name: request.plugin.name().to_owned(),
                plugin_digest: request.plugin.digest().clone(),
                flow_run_id: request.flow_run.as_ref().map(|flow| flow.id.clone()),
                node: request.node.clone(),
                map_index: request.map_index,
                input: request.input.clone(),
                tags: info.tags.clone(),
                created: now,
                owner: Some(self.owner_id().to_owned()),
            },
            &[
                change(State::Pending, None),
                change(State::NotReady, Some(reason)),
            ],
            None,
        )?;
        self.observer.task_run_created(&label);
        self.observer
            .task_run_state(&label, State::NotReady, Some(reason));
        Ok(TaskRunOutcome {
            id,
            name,
            state: State::NotReady,
            message: Some(reason.to_owned()),
            output: None,
            attempts: 0,
        })
    }

    /// Checks a run's grants and reads the granted environment variables' values: from
    /// the secrets file (redacted wherever shown) or the host's environment.
    fn resolve_grants(
        &self,
        task: &str,
        grants: &weir_core::Grants,
    ) -> Result<Access, RunnerError> {
        for dir in &grants.dirs {
            if !dir.host.is_dir() {
                return Err(RunnerError::MissingDir {
                    task: task.to_owned(),
                    path: dir.host.display().to_string(),
                });
            }
        }
        let mut access = Access::default();
        for name in &grants.env {
            let value = match self.secrets.get(name) {
                Some(secret) => {
                    access.secrets.push(secret.clone());
                    secret.clone()
                }
                None => std::env::var(name).map_err(|_| RunnerError::MissingEnv {
                    task: task.to_owned(),
                    name: name.clone(),
                })?,
            };
            access.env.push((name.clone(), value));
        }
        Ok(access)
    }

    /// The checks a run passes before it is recorded (here or in the queue): the task
    /// exists, the input is an object, the memory limit is allowed, its needs are granted.
    fn check_request(&self, request: &TaskRequest) -> Result<(TaskInfo, Effective), RunnerError> {
        let info = self.task_info(request)?;
        if !request.input.is_object() {
            return Err(RunnerError::InputNotObject {
                task: request.task.clone(),
                found: describe_json_kind(&request.input).to_owned(),
            });
        }
        let settings = Effective::new(&info, &request.overrides);
        let maximum = self.runtime.config().max_memory_bytes;
        if settings.limits.memory_bytes > maximum {
            return Err(RunnerError::MemoryAboveMaximum {
                requested: settings.limits.memory_bytes,
                maximum,
            });
        }
        if let Some(need) = settings.grants.first_missing(&info.needs) {
            return Err(RunnerError::NeedNotGranted {
                task: info.name.clone(),
                grant: need.how_to_grant(),
            });
        }
        Ok((info, settings))
    }

    fn task_info(&self, request: &TaskRequest) -> Result<TaskInfo, RunnerError> {
        let plugin = &request.plugin;
        plugin
            .task(&request.task)
            .cloned()
            .ok_or_else(|| RunnerError::UnknownTask {
                plugin: plugin.name().to_owned(),
                task: request.task.clone(),
                available: plugin
                    .tasks()
                    .iter()
                    .map(|task| task.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    fn run_name(&self, request: &TaskRequest, info: &TaskInfo) -> String {
        match request
            .overrides
            .run_name
            .as_ref()
            .or(info.run_name.as_ref())
        {
            Some(template) => render_run_name(template, &request.input),
            None => match &request.default_name {
                Some(name) => name.clone(),
                None => self.run_numbers.next(&info.name),
            },
        }
    }

    /// Runs a task to a final state, recording everything. Returns an error only when
    /// the run cannot start (unknown task, bad input, store failure).
    pub async fn run_task(&self, request: TaskRequest) -> Result<TaskRunOutcome, RunnerError> {
        let plugin = &request.plugin;
        let (info, settings) = self.check_request(&request)?;
        let access = self.resolve_grants(&info.name, &settings.grants)?;
        let name = self.run_name(&request, &info);
        let label = RunLabel {
            id: TaskRunId::generate(),
            name,
            task: info.name.clone(),
            flow_run_id: request.flow_run.as_ref().map(|flow| flow.id.clone()),
            node: request.node.clone(),
            map_index: request.map_index,
        };
        let new_run = NewTaskRun {
            id: label.id.clone(),
            name: label.name.clone(),
            task: info.name.clone(),
            plugin_name: plugin.name().to_owned(),
            plugin_digest: plugin.digest().clone(),
            flow_run_id: request.flow_run.as_ref().map(|flow| flow.id.clone()),
            node: request.node.clone(),
            map_index: request.map_index,
            input: request.input.clone(),
            tags: settings.tags.clone(),
            created: self.clock.now(),
            owner: Some(self.owner_id().to_owned()),
        };
        self.ensure_owner().await?;
        let cancel = request
            .cancel
            .clone()
            .unwrap_or_else(|| self.cancel_token());
        let _active = self.activate(label.id.as_str(), &cancel);
        self.observer.task_run_created(&label);
        let recorder: Arc<dyn Recorder> = self.store.clone();
        let log = Arc::new(RunLog::new(
            label.clone(),
            recorder.clone(),
            self.clock.clone(),
            self.observer.clone(),
        ));
        let execution = Execution {
            runner: self,
            request: &request,
            info: &info,
            settings,
            label,
            log,
            input_text: request.input.to_string(),
            access,
            new_run,
            created: AtomicBool::new(false),
            attempt: AtomicU32::new(0),
            recorder,
            claim: None,
            memory_quota: None,
        };
        tokio::select! {
            biased;
            reason = cancel.cancelled() => execution.cancelled(&reason),
            outcome = execution.run() => outcome,
        }
    }
}

fn describe_json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// How one attempt ended, for the run.
enum AttemptEnd {
    Completed(serde_json::Value),
    /// Failed and not to be retried, with why.
    Fatal(String),
    /// Failed, TimedOut or Crashed: retried while retries are left.
    Retriable(State, String),
}

/// One task run in progress.
struct Execution<'a> {
    runner: &'a TaskRunner,
    request: &'a TaskRequest,
    info: &'a TaskInfo,
    settings: Effective,
    label: RunLabel,
    log: Arc<RunLog>,
    input_text: String,
    /// Granted directories and environment (with values), and the values to redact.
    access: Access,
    /// Recorded together with its first states, once it is known whether it hits the cache.
    new_run: NewTaskRun,
    /// Whether `new_run` is in the store yet, and the attempt in progress: what a
    /// cancellation needs to record the run's end.
    created: AtomicBool,
    attempt: AtomicU32,
    /// Where its writes go: the store, or a fenced recorder for a run claimed from the
    /// queue (refused once another worker took the run over).
    recorder: Arc<dyn Recorder>,
    /// Claimed from the queue: its fence, for a requeue.
    claim: Option<Fence>,
    /// The tenant's memory-per-task quota, when it held the task's memory limit down.
    memory_quota: Option<u64>,
}

impl Execution<'_> {
    /// The memory limit the task asks for (before a tenant's quota held it down).
    fn task_memory(&self) -> u64 {
        Effective::new(self.info, &self.request.overrides)
            .limits
            .memory_bytes
    }

    fn context(&self, attempt: u32) -> RunContext {
        let flow = self.request.flow_run.as_ref();
        RunContext {
            flow_run_id: flow.map(|flow| flow.id.to_string()),
            flow_run_name: flow.map(|flow| flow.name.clone()),
            task_run_id: self.label.id.to_string(),
            task_run_name: self.label.name.clone(),
            task_name: self.info.name.clone(),
            attempt,
            tags: self.settings.tags.clone(),
            parameters: flow
                .map(|flow| flow.parameters.clone())
                .unwrap_or_else(|| Arc::new(serde_json::Value::Object(Default::default()))),
        }
    }

    fn attempt_spec(&self, attempt: u32) -> AttemptSpec {
        AttemptSpec {
            task: self.info.name.clone(),
            input: self.input_text.clone(),
            context: self.context(attempt),
            limits: self.settings.limits,
            timeout: self.settings.timeout,
            log_prints: self.settings.log_prints,
            sink: self.log.clone(),
            dirs: self.settings.grants.dirs.clone(),
            env: self.access.env.clone(),
            secrets: self.access.secrets.clone(),
            http: self.settings.grants.http.clone(),
        }
    }

    fn change(&self, state: State, message: Option<String>, attempt: u32) -> StateChange {
        StateChange {
            state,
            message,
            attempt,
            at: self.runner.clock.now(),
        }
    }

    fn pending(&self) -> StateChange {
        StateChange {
            state: State::Pending,
            message: None,
            attempt: 0,
            at: self.new_run.created,
        }
    }

    fn set_state(&self, change: StateChange) -> Result<(), RunnerError> {
        self.log.flush();
        self.recorder.set_task_run_state(&self.label.id, &change)?;
        self.runner
            .observer
            .task_run_state(&self.label, change.state, change.message.as_deref());
        Ok(())
    }

    /// Records the run with its first states in one transaction.
    fn create(
        &self,
        states: &[StateChange],
        output: Option<&serde_json::Value>,
    ) -> Result<(), RunnerError> {
        self.log.flush();
        self.recorder
            .create_task_run(&self.new_run, states, output)?;
        self.created.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// The run was cancelled: whatever it was doing (computing its key, waiting for a
    /// slot or a retry, an attempt) has been dropped; record it `Cancelled`.
    fn cancelled(&self, reason: &str) -> Result<TaskRunOutcome, RunnerError> {
        let message = format!("cancelled: {reason}");
        let change = self.change(
            State::Cancelled,
            Some(message),
            self.attempt.load(Ordering::SeqCst),
        );
        if !self.created.load(Ordering::SeqCst) {
            self.create(&[self.pending()], None)?;
        }
        // A slot granted while the cancel dropped its waiter would otherwise stay held
        // until its lease ran out.
        self.runner.store.release_slots(self.label.id.as_str())?;
        self.runner.slots_freed.notify_waiters();
        self.finish(change, None, None)
    }

    fn finish(
        &self,
        change: StateChange,
        output: Option<serde_json::Value>,
        cache: Option<&CacheEntryDraft>,
    ) -> Result<TaskRunOutcome, RunnerError> {
        self.log.flush();
        self.recorder
            .finish_task_run(&self.label.id, &change, output.as_ref(), cache)?;
        self.runner
            .observer
            .task_run_state(&self.label, change.state, change.message.as_deref());
        Ok(TaskRunOutcome {
            id: self.label.id.clone(),
            name: self.label.name.clone(),
            state: change.state,
            message: change.message,
            output,
            attempts: change.attempt,
        })
    }

    /// The cache key of this run, or none when its result must not be reused.
    async fn cache_key(&self) -> Option<CacheKey> {
        let plugin = &self.request.plugin;
        let version = self.info.version.as_deref();
        match self.settings.cache_policy {
            CachePolicy::None => None,
            CachePolicy::Inputs => Some(CacheKey::for_input(
                plugin.digest(),
                &self.info.name,
                version,
                &self.request.input,
            )),
            CachePolicy::CustomKey => {
                use weir_runtime::LogSink as _;
                if plugin.cache_key_stalled(&self.info.name) {
                    self.log.log(
                        weir_core::LogLevel::Warning,
                        "the cache key function of this task timed out earlier in this process; running without cache",
                    );
                    return None;
                }
                let mut spec = self.attempt_spec(0);
                // Computing a key must be quick; a plugin that hangs here only loses caching.
                let limit = self.runner.runtime.config().cache_key_timeout;
                spec.timeout = Some(spec.timeout.map_or(limit, |timeout| timeout.min(limit)));
                match self.runner.runtime.plugin_cache_key(plugin, spec).await {
                    Ok(Some(key)) => Some(CacheKey::for_plugin_key(
                        plugin.digest(),
                        &self.info.name,
                        version,
                        &key,
                    )),
                    Ok(None) => None,
                    Err(outcome) => {
                        if matches!(outcome, AttemptOutcome::TimedOut { .. }) {
                            plugin.mark_cache_key_stalled(&self.info.name);
                        }
                        self.log.log(
                            weir_core::LogLevel::Warning,
                            &format!(
                                "computing the cache key failed, running without cache: {outcome:?}"
                            ),
                        );
                        None
                    }
                }
            }
        }
    }

    /// How an attempt's outcome ends it, with the message its state records.
    fn attempt_end(&self, outcome: AttemptOutcome) -> AttemptEnd {
        match outcome {
            AttemptOutcome::Completed { output } => AttemptEnd::Completed(output),
            AttemptOutcome::Failed {
                retriable: false,
                message,
            } => AttemptEnd::Fatal(format!("fatal error, not retried: {message}")),
            AttemptOutcome::Failed {
                retriable: true,
                message,
            } => AttemptEnd::Retriable(State::Failed, message),
            AttemptOutcome::TimedOut { after } => AttemptEnd::Retriable(
                State::TimedOut,
                format!(
                    "timed out: the attempt exceeded its timeout of {} (stopped after {})",
                    self.settings
                        .timeout
                        .map(format_duration)
                        .unwrap_or_default(),
                    format_duration(Duration::from_millis(after.as_millis() as u64))
                ),
            ),
            AttemptOutcome::Crashed { message, .. } => {
                let message = match self.memory_quota {
                    Some(quota) if message.starts_with("out of memory") => format!(
                        "{message}: the tenant's memory-per-task quota of {} held the task below the {} it asks for",
                        weir_core::format_size(quota),
                        weir_core::format_size(self.task_memory())
                    ),
                    _ => message,
                };
                AttemptEnd::Retriable(State::Crashed, message)
            }
        }
    }

    /// The cached result for `key` (unless the run refreshes the cache), with the
    /// `Cached` state that records it.
    async fn cache_hit(
        &self,
        key: Option<&CacheKey>,
    ) -> Result<Option<(StateChange, serde_json::Value)>, RunnerError> {
        let Some(key) = key.filter(|_| !self.settings.refresh_cache) else {
            return Ok(None);
        };
        let Some((entry, output)) = self
            .runner
            .store
            .cached_result(key, self.runner.clock.now())
            .await?
        else {
            return Ok(None);
        };
        let message = format!(
            "result of task run {} reused from the cache",
            entry.task_run_id
        );
        Ok(Some((self.change(State::Cached, Some(message), 0), output)))
    }

    /// The cache entry a completed run writes under `key`.
    fn cache_draft(&self, key: Option<CacheKey>) -> Option<CacheEntryDraft> {
        key.map(|key| CacheEntryDraft {
            key,
            task: self.info.name.clone(),
            plugin_digest: self.request.plugin.digest().clone(),
            expires: self
                .settings
                .cache_expiration
                .map(|expiration| self.runner.clock.now().saturating_add(expiration)),
        })
    }

    async fn run(&self) -> Result<TaskRunOutcome, RunnerError> {
        let cache_key = self.cache_key().await;
        if let Some((cached, output)) = self.cache_hit(cache_key.as_ref()).await? {
            self.create(&[self.pending(), cached.clone()], Some(&output))?;
            self.runner.observer.task_run_state(
                &self.label,
                State::Cached,
                cached.message.as_deref(),
            );
            return Ok(TaskRunOutcome {
                id: self.label.id.clone(),
                name: self.label.name.clone(),
                state: State::Cached,
                message: cached.message,
                output: Some(output),
                attempts: 0,
            });
        }
        let cache_draft = self.cache_draft(cache_key);

        let retries = self.settings.retry.retries;
        let mut attempt = 1;
        // A run with tags may wait in Pending for concurrency slots; one without starts at once.
        let tagged = !self.settings.tags.is_empty();
        if tagged {
            self.create(&[self.pending()], None)?;
        } else {
            self.create(
                &[self.pending(), self.change(State::Running, None, 1)],
                None,
            )?;
        }
        loop {
            // Held while this attempt runs; dropped (released) however it ends.
            let slot = if tagged {
                match self
                    .runner
                    .acquire_slots(&self.settings.tags, self.label.id.as_str())
                    .await
                {
                    Ok(slot) => Some(slot),
                    Err(reason) => {
                        return self.finish(
                            self.change(State::Cancelled, Some(reason), attempt - 1),
                            None,
                            None,
                        );
                    }
                }
            } else {
                None
            };
            self.attempt.store(attempt, Ordering::SeqCst);
            if attempt > 1 || tagged {
                self.set_state(self.change(State::Running, None, attempt))?;
            }
            let outcome = self
                .runner
                .runtime
                .run_attempt(&self.request.plugin, self.attempt_spec(attempt))
                .await;
            let (final_state, message) = match self.attempt_end(outcome) {
                AttemptEnd::Completed(output) => {
                    return self.finish(
                        self.change(State::Completed, None, attempt),
                        Some(output),
                        cache_draft.as_ref(),
                    );
                }
                AttemptEnd::Fatal(message) => {
                    return self.finish(
                        self.change(State::Failed, Some(message), attempt),
                        None,
                        None,
                    );
                }
                AttemptEnd::Retriable(state, message) => (state, message),
            };
            if attempt > retries {
                let message = if retries > 0 {
                    format!("{message} (after {attempt} attempts)")
                } else {
                    message
                };
                return self.finish(self.change(final_state, Some(message), attempt), None, None);
            }
            let delay = self
                .settings
                .retry
                .delay_before_retry(attempt - 1, fastrand::f64());
            let note = format!(
                "attempt {attempt} ended {final_state}: {message}; retry {attempt}/{retries} in {}",
                format_duration(delay)
            );
            self.set_state(self.change(State::AwaitingRetry, Some(note), attempt))?;
            drop(slot);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            attempt += 1;
        }
    }
}

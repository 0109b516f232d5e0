//! Task runs through the queue: a flow run's driver queues them ([`TaskRunner::queue_task`]),
//! and a worker runs one attempt per claim ([`TaskRunner::run_claimed`]): a retry with a
//! delay goes back to the queue (no worker waits through it), and an attempt whose worker
//! stopped heartbeating is recorded `Crashed` by the next worker and retried by the
//! task's policy. Every write goes through the claim's fence.

use weir_core::Timestamp;
use weir_store::{NewWork, NewWorkRun, TaskRunRecord};

use super::*;
use crate::work::{FlowRunContext, TaskSpec, requirements};

/// The reason a worker cancels a claimed run with when it shuts down: the run goes back
/// to the queue instead of ending `Cancelled`.
pub const HAND_BACK: &str = "the worker is shutting down";
/// The reason a worker cancels a claimed run with when its lease was taken over: nothing
/// is recorded (its writes would be refused anyway).
pub const LEASE_LOST: &str = "its lease was taken over by another worker";

/// A task run a worker claimed, with what it needs to run it.
pub struct ClaimedTask {
    pub fence: Fence,
    pub plugin: Plugin,
    pub record: TaskRunRecord,
    pub overrides: TaskOverrides,
    pub flow_run: Option<FlowRunRef>,
    /// The worker (by name) whose lease ran out while it held the run.
    pub lost_from: Option<String>,
    pub cancel: CancelToken,
    /// Its tenant's quotas, as the claim found them.
    pub quotas: weir_store::Quotas,
}

/// How a claim of a task run ended.
#[derive(Debug)]
pub enum ClaimedEnd {
    Finished(TaskRunOutcome),
    /// Back in the queue until `ready_at`, after attempt `attempt` (a retry's delay).
    Requeued {
        attempt: u32,
        ready_at: Timestamp,
    },
    /// Given back to the queue because the worker shuts down.
    HandedBack,
    /// Another worker took the run over; nothing more was recorded.
    LeaseLost,
}

impl TaskRunner {
    /// Records a task run of a driven flow run and queues it for a worker, under the
    /// driver's fence. The same checks as [`run_task`](Self::run_task) come first.
    pub(crate) fn queue_task(
        &self,
        request: &TaskRequest,
        fence: &Fence,
    ) -> Result<RunLabel, RunnerError> {
        let (info, settings) = self.check_request(request)?;
        let now = self.clock.now();
        let label = RunLabel {
            id: TaskRunId::generate(),
            name: self.run_name(request, &info),
            task: info.name.clone(),
            flow_run_id: request.flow_run.as_ref().map(|flow| flow.id.clone()),
            node: request.node.clone(),
            map_index: request.map_index,
        };
        let plugin = &request.plugin;
        let spec = TaskSpec {
            plugin: plugin.digest().to_string(),
            plugin_name: plugin.name().to_owned(),
            task: request.task.clone(),
            overrides: request.overrides.clone(),
            flow_run: request.flow_run.as_ref().map(|flow| FlowRunContext {
                id: flow.id.to_string(),
                name: flow.name.clone(),
            }),
        };
        let spec = serde_json::to_string(&spec)
            .map_err(|error| StoreError::backend("writing a queued run's spec", error))?;
        let work = NewWork {
            run: NewWorkRun::Task {
                run: NewTaskRun {
                    id: label.id.clone(),
                    name: label.name.clone(),
                    task: info.name.clone(),
                    plugin_name: plugin.name().to_owned(),
                    plugin_digest: plugin.digest().clone(),
                    flow_run_id: label.flow_run_id.clone(),
                    node: request.node.clone(),
                    map_index: request.map_index,
                    input: request.input.clone(),
                    tags: settings.tags.clone(),
                    created: now,
                    owner: None,
                },
                states: vec![StateChange {
                    state: State::Pending,
                    message: None,
                    attempt: 0,
                    at: now,
                }],
            },
            spec,
            tags: settings.tags.clone(),
            requirements: requirements(&settings.grants),
            ready_at: now,
            priority: 0,
            memory_bytes: Some(settings.limits.memory_bytes),
        };
        self.store.enqueue(&work, Some(fence))?;
        self.observer.task_run_created(&label);
        Ok(label)
    }

    /// Runs a claimed task run: its lost attempt (if its last worker died) recorded and
    /// retried, then one attempt (or a cache hit). A run that cannot start on this worker
    /// (a granted directory missing here, say) ends `Failed` saying why.
    pub async fn run_claimed(&self, claimed: ClaimedTask) -> Result<ClaimedEnd, RunnerError> {
        let ClaimedTask {
            fence,
            plugin,
            record,
            overrides,
            flow_run,
            lost_from,
            cancel,
            quotas,
        } = claimed;
        let recorder = self.store.clone().fenced(fence.clone());
        let label = RunLabel {
            id: record.id.clone(),
            name: record.name.clone(),
            task: record.task.clone(),
            flow_run_id: record.flow_run_id.clone(),
            node: record.node.clone(),
            map_index: record.map_index,
        };
        let request = TaskRequest {
            plugin,
            task: record.task.clone(),
            input: record.input.clone(),
            overrides,
            flow_run,
            node: record.node.clone(),
            map_index: record.map_index,
            default_name: Some(record.name.clone()),
            cancel: Some(cancel.clone()),
        };
        let unstartable = |message: String| -> Result<ClaimedEnd, RunnerError> {
            let change = StateChange {
                state: State::Failed,
                message: Some(message),
                attempt: record.attempts,
                at: self.clock.now(),
            };
            recorder.finish_task_run(&label.id, &change, None, None)?;
            self.observer
                .task_run_state(&label, State::Failed, change.message.as_deref());
            Ok(ClaimedEnd::Finished(TaskRunOutcome {
                id: label.id.clone(),
                name: label.name.clone(),
                state: State::Failed,
                message: change.message,
                output: None,
                attempts: record.attempts,
            }))
        };
        let info = match self.task_info(&request) {
            Ok(info) => info,
            Err(error) => return unstartable(weir_core::describe_error(&error)),
        };
        let mut settings = Effective::new(&info, &request.overrides);
        // The tenant's ceiling holds whatever the task asks: an attempt that needs more
        // crashes out of memory, naming the quota.
        let memory_quota = quotas
            .memory_per_task_bytes
            .filter(|quota| settings.limits.memory_bytes > *quota);
        if let Some(quota) = memory_quota {
            settings.limits.memory_bytes = quota;
        }
        let maximum = self.runtime.config().max_memory_bytes;
        if settings.limits.memory_bytes > maximum {
            let error = RunnerError::MemoryAboveMaximum {
                requested: settings.limits.memory_bytes,
                maximum,
            };
            return unstartable(error.to_string());
        }
        if record.state.is_final() {
            // Finished, yet still queued (a row written before its release was atomic):
            // finish it again as it was, which releases the row.
            let result = match &record.result_digest {
                Some(digest) => Some(self.store.result(digest).await?),
                None => None,
            };
            let change = StateChange {
                state: record.state,
                message: record.state_message.clone(),
                attempt: record.attempts,
                at: record.ended.unwrap_or_else(|| self.clock.now()),
            };
            recorder.finish_task_run(&label.id, &change, result.as_ref(), None)?;
            return Ok(ClaimedEnd::Finished(TaskRunOutcome {
                id: label.id.clone(),
                name: label.name.clone(),
                state: record.state,
                message: record.state_message.clone(),
                output: result,
                attempts: record.attempts,
            }));
        }
        let access = match self.resolve_grants(&info.name, &settings.grants) {
            Ok(access) => access,
            Err(error) => return unstartable(format!("it cannot run on this worker: {error}")),
        };
        self.ensure_owner().await?;
        let _active = self.activate(label.id.as_str(), &cancel);
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
            new_run: NewTaskRun {
                id: record.id.clone(),
                name: record.name.clone(),
                task: record.task.clone(),
                plugin_name: record.plugin_name.clone(),
                plugin_digest: record.plugin_digest.clone(),
                flow_run_id: record.flow_run_id.clone(),
                node: record.node.clone(),
                map_index: record.map_index,
                input: record.input.clone(),
                tags: record.tags.clone(),
                created: record.created,
                owner: None,
            },
            label,
            log,
            input_text: request.input.to_string(),
            access,
            created: AtomicBool::new(true),
            attempt: AtomicU32::new(record.attempts),
            recorder,
            claim: Some(fence),
            memory_quota,
        };
        tokio::select! {
            biased;
            reason = cancel.cancelled() => execution.claim_cancelled(&reason),
            end = execution.run_claimed(&record, lost_from.as_deref()) => end,
        }
    }
}

impl Execution<'_> {
    fn fence(&self) -> &Fence {
        self.claim.as_ref().expect("a claimed run has a fence")
    }

    /// A claimed run's token was cancelled: a hand-back, a lost lease, or a cancel.
    fn claim_cancelled(&self, reason: &str) -> Result<ClaimedEnd, RunnerError> {
        match reason {
            LEASE_LOST => Ok(ClaimedEnd::LeaseLost),
            HAND_BACK => {
                let attempt = self.attempt.load(Ordering::SeqCst);
                let message = format!("given back to the queue during attempt {attempt}: {reason}");
                self.set_state(self.change(State::Pending, Some(message), attempt))?;
                self.runner
                    .store
                    .requeue(self.fence(), self.runner.clock.now())?;
                Ok(ClaimedEnd::HandedBack)
            }
            reason => self.cancelled(reason).map(ClaimedEnd::Finished),
        }
    }

    async fn run_claimed(
        &self,
        record: &TaskRunRecord,
        lost_from: Option<&str>,
    ) -> Result<ClaimedEnd, RunnerError> {
        let mut attempt = record.attempts;
        // The attempt its last worker was running when that worker stopped.
        let mut lost = lost_from
            .filter(|_| record.state == State::Running)
            .map(|worker| format!("worker {worker} stopped heartbeating"));
        let cache_key = self.cache_key().await;
        // Looked up before the first attempt only, as a local run does.
        if attempt == 0
            && let Some((cached, output)) = self.cache_hit(cache_key.as_ref()).await?
        {
            return self
                .finish(cached, Some(output), None)
                .map(ClaimedEnd::Finished);
        }
        let cache_draft = self.cache_draft(cache_key);
        loop {
            if let Some(message) = lost.take()
                && let Some(end) = self.after_failure(attempt, State::Crashed, message)?
            {
                return Ok(end);
            }
            attempt += 1;
            self.attempt.store(attempt, Ordering::SeqCst);
            self.set_state(self.change(State::Running, None, attempt))?;
            let outcome = self
                .runner
                .runtime
                .run_attempt(&self.request.plugin, self.attempt_spec(attempt))
                .await;
            match self.attempt_end(outcome) {
                AttemptEnd::Completed(output) => {
                    return self
                        .finish(
                            self.change(State::Completed, None, attempt),
                            Some(output),
                            cache_draft.as_ref(),
                        )
                        .map(ClaimedEnd::Finished);
                }
                AttemptEnd::Fatal(message) => {
                    return self
                        .finish(
                            self.change(State::Failed, Some(message), attempt),
                            None,
                            None,
                        )
                        .map(ClaimedEnd::Finished);
                }
                AttemptEnd::Retriable(state, message) => {
                    if let Some(end) = self.after_failure(attempt, state, message)? {
                        return Ok(end);
                    }
                }
            }
        }
    }

    /// Attempt `attempt` failed in `state`: the run ends there when no retry is left;
    /// else it awaits its retry, in the queue when there is a delay (None: retry now).
    fn after_failure(
        &self,
        attempt: u32,
        state: State,
        message: String,
    ) -> Result<Option<ClaimedEnd>, RunnerError> {
        let retries = self.settings.retry.retries;
        if attempt > retries {
            let message = if retries > 0 {
                format!("{message} (after {attempt} attempts)")
            } else {
                message
            };
            return self
                .finish(self.change(state, Some(message), attempt), None, None)
                .map(|outcome| Some(ClaimedEnd::Finished(outcome)));
        }
        let delay = self
            .settings
            .retry
            .delay_before_retry(attempt.saturating_sub(1), fastrand::f64());
        let note = format!(
            "attempt {attempt} ended {state}: {message}; retry {attempt}/{retries} in {}",
            format_duration(delay)
        );
        self.set_state(self.change(State::AwaitingRetry, Some(note), attempt))?;
        if delay.is_zero() {
            return Ok(None);
        }
        let ready_at = self.runner.clock.now().saturating_add(delay);
        self.runner.store.requeue(self.fence(), ready_at)?;
        Ok(Some(ClaimedEnd::Requeued { attempt, ready_at }))
    }
}

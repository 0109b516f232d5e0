//! One attempt of one task: a fresh store, bounded memory, fuel and time, and an
//! outcome that says exactly what happened.

use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::{Store, Trap, UpdateDeadline};
use weir_core::{DirGrant, HttpGrant, Limits, RunContext, format_duration};

use crate::bindings::{self, WitTaskError, WitTaskInfo};
use crate::output::{AttemptLog, LogSink};
use crate::plugin::Plugin;
use crate::runtime::Runtime;
use crate::sandbox::AttemptState;

/// What to run, with which bounds, and where its log lines go.
pub struct AttemptSpec {
    pub task: String,
    /// The input object as JSON text.
    pub input: String,
    pub context: RunContext,
    pub limits: Limits,
    pub timeout: Option<Duration>,
    /// Turn the guest's stdout and stderr into log lines.
    pub log_prints: bool,
    pub sink: Arc<dyn LogSink>,
    /// Host directories the guest may open.
    pub dirs: Vec<DirGrant>,
    /// Environment variables the guest sees, with their values.
    pub env: Vec<(String, String)>,
    /// Values replaced by `[redacted]` in log lines and messages.
    pub secrets: Vec<String>,
    /// Hosts the guest may send HTTP requests to.
    pub http: Vec<HttpGrant>,
}

impl AttemptSpec {
    /// An attempt with default limits, no timeout and a context outside any flow.
    pub fn new(task: impl Into<String>, input: impl Into<String>, sink: Arc<dyn LogSink>) -> Self {
        let task = task.into();
        AttemptSpec {
            context: RunContext {
                flow_run_id: None,
                flow_run_name: None,
                task_run_id: String::new(),
                task_run_name: task.clone(),
                task_name: task.clone(),
                attempt: 1,
                tags: Vec::new(),
                parameters: std::sync::Arc::new(serde_json::Value::Object(Default::default())),
            },
            task,
            input: input.into(),
            limits: Limits::default(),
            timeout: None,
            log_prints: true,
            sink,
            dirs: Vec::new(),
            env: Vec::new(),
            secrets: Vec::new(),
            http: Vec::new(),
        }
    }
}

/// Why an attempt crashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashKind {
    /// The task panicked (its message was logged by the SDK).
    Panic,
    /// A WebAssembly trap other than the ones below.
    Trap,
    /// Memory growth was refused at the task's memory limit.
    OutOfMemory,
    /// The fuel limit was used up.
    OutOfFuel,
    StackOverflow,
    /// The task returned something that is not JSON.
    BadOutput,
    /// The component could not be instantiated.
    Instantiation,
    /// The task called `exit` (WASI `proc_exit`) instead of returning.
    Exit,
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptOutcome {
    Completed {
        output: serde_json::Value,
    },
    /// The task returned an error; `retriable` is false for a fatal one.
    Failed {
        retriable: bool,
        message: String,
    },
    /// Stopped at its deadline; `after` is the time from start to stop.
    TimedOut {
        after: Duration,
    },
    Crashed {
        kind: CrashKind,
        message: String,
    },
}

/// What the guest is asked to do in one store.
pub(crate) enum Call {
    Info,
    Run { task: String, input: String },
    CacheKey { task: String, input: String },
}

pub(crate) enum CallResult {
    Info(Vec<WitTaskInfo>),
    Run(Result<String, WitTaskError>),
    CacheKey(Option<String>),
}

/// An attempt that did not return normally: its outcome (TimedOut or Crashed).
pub(crate) struct Interrupted(pub(crate) AttemptOutcome);

/// What one store is allowed: its context, log, limits, timeout and grants.
pub(crate) struct AttemptBounds {
    pub(crate) context: RunContext,
    pub(crate) log: Arc<AttemptLog>,
    pub(crate) limits: Limits,
    pub(crate) timeout: Option<Duration>,
    pub(crate) dirs: Vec<DirGrant>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) http: Vec<HttpGrant>,
}

impl Runtime {
    /// Runs one attempt of `spec.task` in a fresh store. Never panics and never hangs
    /// past the timeout: every way the guest can end becomes an [`AttemptOutcome`].
    pub async fn run_attempt(&self, plugin: &Plugin, spec: AttemptSpec) -> AttemptOutcome {
        let (guard, task, input) = self.guard(spec);
        let log = guard.log.clone();
        let call = Call::Run { task, input };
        let outcome = match self.call_guarded(plugin.pre(), guard, call).await {
            Ok(CallResult::Run(Ok(text))) => match self.check_output_size(&text) {
                Err(message) => AttemptOutcome::Crashed {
                    kind: CrashKind::BadOutput,
                    message,
                },
                Ok(()) => match serde_json::from_str(&text) {
                    Ok(output) => AttemptOutcome::Completed { output },
                    Err(error) => AttemptOutcome::Crashed {
                        kind: CrashKind::BadOutput,
                        message: format!(
                            "the task returned output that is not JSON ({error}); it begins with `{}`",
                            text.chars().take(80).collect::<String>()
                        ),
                    },
                },
            },
            Ok(CallResult::Run(Err(WitTaskError::Retriable(message)))) => AttemptOutcome::Failed {
                retriable: true,
                message,
            },
            Ok(CallResult::Run(Err(WitTaskError::Fatal(message)))) => AttemptOutcome::Failed {
                retriable: false,
                message,
            },
            Ok(_) => unreachable!("a run call returns a run result"),
            Err(Interrupted(outcome)) => outcome,
        };
        log.finish();
        // A message may quote what the guest saw, secrets included, and may be of any
        // size: it is cut to a bound (the rest is dropped) and redacted.
        let bound = |message: String| bound_message(&log, message, self.config.max_message_bytes);
        match outcome {
            AttemptOutcome::Failed { retriable, message } => AttemptOutcome::Failed {
                retriable,
                message: bound(message),
            },
            AttemptOutcome::Crashed { kind, message } => AttemptOutcome::Crashed {
                kind,
                message: bound(message),
            },
            other => other,
        }
    }

    /// Refuses an output above the configured size or value count before parsing it:
    /// parsing costs host memory per value (64 MiB of `[0,0,…]` took 2.4 GiB).
    fn check_output_size(&self, text: &str) -> Result<(), String> {
        let max_bytes = self.config.max_output_bytes;
        if text.len() > max_bytes {
            return Err(format!(
                "the task's output is {}, above the limit of {} (WEIR_MAX_OUTPUT)",
                format_bytes(text.len() as u64),
                format_bytes(max_bytes as u64)
            ));
        }
        let max_values = self.config.max_output_values;
        let values = count_json_values(text);
        if values > max_values {
            return Err(format!(
                "the task's output holds about {values} JSON values, above the limit of {max_values} (WEIR_MAX_OUTPUT_VALUES)"
            ));
        }
        Ok(())
    }

    /// Asks the plugin for its own cache key (tasks whose policy is custom-key).
    pub async fn plugin_cache_key(
        &self,
        plugin: &Plugin,
        spec: AttemptSpec,
    ) -> Result<Option<String>, AttemptOutcome> {
        let (guard, task, input) = self.guard(spec);
        let log = guard.log.clone();
        let call = Call::CacheKey { task, input };
        let result = self.call_guarded(plugin.pre(), guard, call).await;
        log.finish();
        match result {
            Ok(CallResult::CacheKey(key)) => Ok(key),
            Ok(_) => unreachable!("a cache-key call returns a key"),
            Err(Interrupted(outcome)) => Err(outcome),
        }
    }

    /// Splits a spec into the bounds of its store (with its log) and what to call.
    fn guard(&self, spec: AttemptSpec) -> (AttemptBounds, String, String) {
        let log = Arc::new(AttemptLog::new(
            spec.sink,
            spec.log_prints,
            self.config.log_limit_bytes,
            spec.secrets,
        ));
        let guard = AttemptBounds {
            context: spec.context,
            log,
            limits: spec.limits,
            timeout: spec.timeout,
            dirs: spec.dirs,
            env: spec.env,
            http: spec.http,
        };
        (guard, spec.task, spec.input)
    }

    /// Instantiates `pre` in a fresh store and makes `call`, bounded by the guard.
    pub(crate) async fn call_guarded(
        &self,
        pre: &bindings::PluginPre<AttemptState>,
        guard: AttemptBounds,
        call: Call,
    ) -> Result<CallResult, Interrupted> {
        let started = Instant::now();
        let memory_limit = guard.limits.memory_bytes.min(self.config.max_memory_bytes);
        let state = match AttemptState::new(
            guard.context,
            guard.log.clone(),
            memory_limit,
            &guard.dirs,
            &guard.env,
            &guard.http,
            self.config.max_http_response_bytes,
        ) {
            Ok(state) => state,
            Err(message) => {
                return Err(Interrupted(AttemptOutcome::Crashed {
                    kind: CrashKind::Instantiation,
                    message,
                }));
            }
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        let fuel = guard.limits.fuel.unwrap_or(u64::MAX);
        if let Err(error) = store.set_fuel(fuel) {
            return Err(Interrupted(AttemptOutcome::Crashed {
                kind: CrashKind::Instantiation,
                message: format!("could not set the fuel limit: {error:#}"),
            }));
        }
        let deadline = guard.timeout.map(|timeout| started + timeout);
        // Check the deadline at every epoch tick and otherwise yield, so that many
        // attempts share few threads and a spinning guest is stopped within a tick.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| match deadline {
            Some(deadline) if Instant::now() >= deadline => Ok(UpdateDeadline::Interrupt),
            _ => Ok(UpdateDeadline::Yield(1)),
        });

        let work = async {
            let plugin = pre
                .instantiate_async(&mut store)
                .await
                .map_err(|error| (true, error))?;
            let exports = plugin.weir_task_task();
            let result = match call {
                Call::Info => exports.call_info(&mut store).await.map(CallResult::Info),
                Call::Run { task, input } => exports
                    .call_run(&mut store, &task, &input)
                    .await
                    .map(CallResult::Run),
                Call::CacheKey { task, input } => exports
                    .call_cache_key(&mut store, &task, &input)
                    .await
                    .map(CallResult::CacheKey),
            };
            result.map_err(|error| (false, error))
        };
        // The wall-clock race: a guest blocked in a host call never reaches an epoch
        // check, so the call itself is dropped when the deadline passes.
        let raced = match guard.timeout {
            Some(timeout) => match tokio::time::timeout(timeout, work).await {
                Ok(result) => result,
                Err(_elapsed) => {
                    return Err(Interrupted(AttemptOutcome::TimedOut {
                        after: started.elapsed(),
                    }));
                }
            },
            None => work.await,
        };
        match raced {
            // A guest that catches a refused allocation (Python's MemoryError, a JS
            // RangeError) reports an ordinary error; the limit it hit is the real cause.
            Ok(CallResult::Run(Err(error))) if store.data().limiter.refused_growth_to.is_some() => {
                let limiter = &store.data().limiter;
                let guest_said = match error {
                    WitTaskError::Retriable(message) | WitTaskError::Fatal(message) => message,
                };
                Err(Interrupted(AttemptOutcome::Crashed {
                    kind: CrashKind::OutOfMemory,
                    message: format!(
                        "{}; the task reported: {guest_said}",
                        out_of_memory_message(
                            limiter.limit_bytes(),
                            limiter.refused_growth_to.unwrap_or_default()
                        )
                    ),
                }))
            }
            Ok(result) => Ok(result),
            Err((during_instantiation, error)) => {
                let limiter = &store.data().limiter;
                Err(Interrupted(classify_error(
                    &error,
                    during_instantiation,
                    limiter.refused_growth_to,
                    limiter.limit_bytes(),
                    guard.limits.fuel,
                    &guard.log,
                    started.elapsed(),
                )))
            }
        }
    }
}

/// An upper bound on the number of values in a JSON text, counted without parsing: every
/// value but the first follows a `,` or opens a container, outside strings.
pub(crate) fn count_json_values(text: &str) -> usize {
    let mut count = 1;
    let mut in_string = false;
    let mut escaped = false;
    for byte in text.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b',' | b'[' | b'{' => count += 1,
            _ => {}
        }
    }
    count
}

/// Cuts `message` to `max_bytes` (on a character boundary, saying how long it was) and
/// redacts it. Redaction sees a little more than is kept, so that a secret straddling
/// the cut is not left half visible.
fn bound_message(log: &AttemptLog, message: String, max_bytes: usize) -> String {
    if message.len() <= max_bytes {
        return log.redact(&message);
    }
    let total = message.len();
    let window = floor_char_boundary(&message, max_bytes + 4096);
    let redacted = log.redact(&message[..window]);
    let cut = floor_char_boundary(&redacted, max_bytes);
    format!(
        "{}… (cut: {} in all, limit {})",
        &redacted[..cut],
        format_bytes(total as u64),
        format_bytes(max_bytes as u64)
    )
}

fn floor_char_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn out_of_memory_message(memory_limit: u64, tried: u64) -> String {
    format!(
        "out of memory: the task exceeded its memory limit of {} (it tried to grow to {})",
        format_bytes(memory_limit),
        format_bytes(tried)
    )
}

fn classify_error(
    error: &wasmtime::Error,
    during_instantiation: bool,
    refused_growth_to: Option<u64>,
    memory_limit: u64,
    fuel_limit: Option<u64>,
    log: &AttemptLog,
    elapsed: Duration,
) -> AttemptOutcome {
    let trap = error.downcast_ref::<Trap>().copied();
    if trap == Some(Trap::Interrupt) {
        return AttemptOutcome::TimedOut { after: elapsed };
    }
    if let Some(tried) = refused_growth_to {
        let said = log
            .cause_line()
            .map(|line| format!(" (the task said: {line})"))
            .unwrap_or_default();
        return AttemptOutcome::Crashed {
            kind: CrashKind::OutOfMemory,
            message: format!("{}{said}", out_of_memory_message(memory_limit, tried)),
        };
    }
    // `exit` in the guest is an error value, not a trap: the guest chose to stop.
    if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
        let message = match exit.0 {
            0 => "the task called exit(0) before it returned".to_owned(),
            // WASI 0.2's exit carries success or failure only, not the code.
            _ => "the task called exit with a failure status before it returned".to_owned(),
        };
        return AttemptOutcome::Crashed {
            kind: CrashKind::Exit,
            message,
        };
    }
    if let Some(wasmtime::component::ResourceTableError::Full) =
        error.downcast_ref::<wasmtime::component::ResourceTableError>()
    {
        return AttemptOutcome::Crashed {
            kind: CrashKind::OutOfMemory,
            message: format!(
                "out of host resources: the task holds more than {} handles (HTTP header sets, streams, …) at once, the limit for its memory limit of {}",
                crate::sandbox::resource_limit(memory_limit),
                format_bytes(memory_limit)
            ),
        };
    }
    match trap {
        Some(Trap::OutOfFuel) => AttemptOutcome::Crashed {
            kind: CrashKind::OutOfFuel,
            message: format!(
                "out of fuel: the task used up its fuel limit of {} units",
                fuel_limit.unwrap_or(u64::MAX)
            ),
        },
        Some(Trap::StackOverflow) => AttemptOutcome::Crashed {
            kind: CrashKind::StackOverflow,
            message: "stack overflow: the task recursed too deeply (wasm stack limit 1 MiB)".into(),
        },
        Some(trap) => {
            let last_error = log.cause_line().or_else(|| log.last_error_line());
            match last_error {
                Some(line) if line.starts_with("memory allocation of") => AttemptOutcome::Crashed {
                    kind: CrashKind::OutOfMemory,
                    message: format!(
                        "out of memory: {line} in the task (its memory limit is {})",
                        format_bytes(memory_limit)
                    ),
                },
                Some(line) if line.starts_with("panicked at") => AttemptOutcome::Crashed {
                    kind: CrashKind::Panic,
                    message: format!("the task {line}"),
                },
                Some(line) => AttemptOutcome::Crashed {
                    kind: CrashKind::Trap,
                    message: format!("the task trapped: {trap} (last error output: {line})"),
                },
                None => AttemptOutcome::Crashed {
                    kind: CrashKind::Trap,
                    message: format!("the task trapped: {trap}{}", trap_hint(trap)),
                },
            }
        }
        None if during_instantiation => AttemptOutcome::Crashed {
            kind: CrashKind::Instantiation,
            message: format!("could not instantiate the plugin: {error:#}"),
        },
        None => AttemptOutcome::Crashed {
            kind: CrashKind::Trap,
            message: format!("the task failed in the host: {error:#}"),
        },
    }
}

/// What usually causes a trap that says little by itself.
fn trap_hint(trap: Trap) -> &'static str {
    match trap {
        // Languages compiled to wasm32 keep their own stack in linear memory; overflowing
        // it runs off the start of memory rather than hitting the engine's stack guard.
        Trap::MemoryOutOfBounds => {
            " (often a stack overflow of the guest's own stack, e.g. unbounded recursion)"
        }
        _ => "",
    }
}

fn format_bytes(bytes: u64) -> String {
    weir_core::format_size(bytes)
}

/// Used in messages about timeouts.
pub(crate) fn describe_timeout(after: Duration) -> String {
    format!("timed out after {}", format_duration(after))
}

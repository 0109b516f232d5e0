//! Loading a plugin: check it is a component, compile it (or reuse the compiled
//! artifact from disk), link it, and read its tasks' metadata.

use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::Component;
use weir_core::{
    CachePolicy, ComponentDigest, Limits, RetryDelays, RetryPolicy, RunContext, TaskInfo,
};

use crate::attempt::{
    AttemptBounds, AttemptOutcome, Call, CallResult, Interrupted, describe_timeout,
};
use crate::bindings::{self, WitCachePolicy, WitTaskInfo};
use crate::output::{AttemptLog, LogSink, StderrLogSink};
use crate::runtime::Runtime;
use crate::sandbox::AttemptState;

/// Why a file could not be loaded as a plugin. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read plugin {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{name} is not a WebAssembly file (it does not start with the `\\0asm` magic bytes)")]
    NotWasm { name: String },
    #[error(
        "{name} is a core WebAssembly module, not a component; build it for the wasm32-wasip2 target (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule { name: String },
    #[error("{name} is not a valid WebAssembly component: {message}")]
    Invalid { name: String, message: String },
    #[error(
        "{name} is not a weir plugin: it does not export `weir:task/task@0.1.0` ({message}); build it with a weir SDK"
    )]
    WrongWorld { name: String, message: String },
    #[error("{name} needs imports this host does not provide: {message}")]
    MissingImport { name: String, message: String },
    #[error("{name}: calling its `info` export failed: {message}")]
    InfoFailed { name: String, message: String },
    #[error("{name}: its task metadata is invalid: {message}")]
    BadInfo { name: String, message: String },
    #[error("{name}: {source:#}")]
    Other {
        name: String,
        #[source]
        source: anyhow::Error,
    },
}

/// A loaded plugin: cheap to clone, shareable across tasks and threads.
#[derive(Clone)]
pub struct Plugin {
    inner: Arc<PluginInner>,
}

struct PluginInner {
    name: String,
    digest: ComponentDigest,
    size_bytes: usize,
    tasks: Vec<TaskInfo>,
    pub(crate) pre: bindings::PluginPre<AttemptState>,
    /// Tasks whose `cache-key` timed out: not asked again by this process.
    stalled_cache_keys: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Plugin {
    /// The file stem (or given name), e.g. `hello` for `hello.wasm`.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn digest(&self) -> &ComponentDigest {
        &self.inner.digest
    }

    pub fn size_bytes(&self) -> usize {
        self.inner.size_bytes
    }

    pub fn tasks(&self) -> &[TaskInfo] {
        &self.inner.tasks
    }

    pub fn task(&self, name: &str) -> Option<&TaskInfo> {
        self.inner.tasks.iter().find(|task| task.name == name)
    }

    pub(crate) fn pre(&self) -> &bindings::PluginPre<AttemptState> {
        &self.inner.pre
    }

    fn stalled_cache_keys(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.inner
            .stalled_cache_keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether `task`'s cache-key function timed out before in this process.
    pub fn cache_key_stalled(&self, task: &str) -> bool {
        self.stalled_cache_keys().contains(task)
    }

    /// Remembers that `task`'s cache-key function timed out: it is not asked again.
    pub fn mark_cache_key_stalled(&self, task: &str) {
        self.stalled_cache_keys().insert(task.to_owned());
    }
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.inner.name)
            .field("digest", &self.inner.digest)
            .field("tasks", &self.inner.tasks.len())
            .finish()
    }
}

const WASM_MAGIC: &[u8; 4] = b"\0asm";
/// Version and layer fields of the preamble: a core module is `01 00 00 00`.
const CORE_MODULE_VERSION: [u8; 4] = [1, 0, 0, 0];

impl Runtime {
    /// Loads a plugin file; the name is the file stem.
    pub async fn load_plugin_file(&self, path: &Path) -> Result<Plugin, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        let name = path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        self.load_plugin_bytes(&name, &bytes).await
    }

    /// Loads a plugin from its bytes.
    pub async fn load_plugin_bytes(&self, name: &str, bytes: &[u8]) -> Result<Plugin, LoadError> {
        let name = name.to_owned();
        if bytes.len() < 8 || &bytes[..4] != WASM_MAGIC {
            return Err(LoadError::NotWasm { name });
        }
        if bytes[4..8] == CORE_MODULE_VERSION {
            return Err(LoadError::CoreModule { name });
        }
        let digest = ComponentDigest::of_bytes(bytes);
        let component = self.compile_or_reuse(&name, &digest, bytes)?;
        let instance_pre =
            self.linker
                .instantiate_pre(&component)
                .map_err(|error| LoadError::MissingImport {
                    name: name.clone(),
                    message: format!("{error:#}"),
                })?;
        let pre =
            bindings::PluginPre::new(instance_pre).map_err(|error| LoadError::WrongWorld {
                name: name.clone(),
                message: format!("{error:#}"),
            })?;
        let tasks = self.read_task_info(&name, &pre).await?;
        Ok(Plugin {
            inner: Arc::new(PluginInner {
                name,
                digest,
                size_bytes: bytes.len(),
                tasks,
                pre,
                stalled_cache_keys: Default::default(),
            }),
        })
    }

    fn compile_or_reuse(
        &self,
        name: &str,
        digest: &ComponentDigest,
        bytes: &[u8],
    ) -> Result<Component, LoadError> {
        let cached_path = self.compiled_path(digest);
        if let Some(path) = &cached_path
            && path.exists()
        {
            // SAFETY: the file was written by `Component::serialize` of an engine with the
            // same compatibility hash (it is in the file name), into weir's own cache
            // directory; wasmtime also checks the header and refuses a mismatch.
            match unsafe { Component::deserialize_file(&self.engine, path) } {
                Ok(component) => return Ok(component),
                Err(error) => tracing::warn!(
                    "ignoring unusable compiled artifact {}: {error:#}",
                    path.display()
                ),
            }
        }
        let component =
            Component::new(&self.engine, bytes).map_err(|error| LoadError::Invalid {
                name: name.to_owned(),
                message: format!("{error:#}"),
            })?;
        if let Some(path) = cached_path
            && let Err(error) = write_compiled(&component, &path)
        {
            // The cache only saves time; a read-only directory must not stop the run.
            tracing::warn!("could not cache the compiled plugin {name}: {error:#}");
        }
        Ok(component)
    }

    fn compiled_path(&self, digest: &ComponentDigest) -> Option<PathBuf> {
        let dir = self.config.compiled_cache_dir.as_ref()?;
        let mut hasher = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(&self.engine.precompile_compatibility_hash(), &mut hasher);
        let engine_hash = std::hash::Hasher::finish(&hasher);
        Some(dir.join(format!("{}-{engine_hash:016x}.cwasm", digest.as_str())))
    }

    async fn read_task_info(
        &self,
        name: &str,
        pre: &bindings::PluginPre<AttemptState>,
    ) -> Result<Vec<TaskInfo>, LoadError> {
        let info_failed = |message: String| LoadError::InfoFailed {
            name: name.to_owned(),
            message,
        };
        let log = Arc::new(AttemptLog::new(
            Arc::new(StderrLogSink) as Arc<dyn LogSink>,
            false,
            self.config.log_limit_bytes,
            Vec::new(),
        ));
        let context = RunContext {
            flow_run_id: None,
            flow_run_name: None,
            task_run_id: String::new(),
            task_run_name: String::new(),
            task_name: String::new(),
            attempt: 0,
            tags: Vec::new(),
            parameters: std::sync::Arc::new(serde_json::Value::Object(Default::default())),
        };
        let guard = AttemptBounds {
            context,
            log,
            limits: Limits::default(),
            timeout: Some(self.config.info_timeout),
            dirs: Vec::new(),
            env: Vec::new(),
            http: Vec::new(),
        };
        let raw = match self.call_guarded(pre, guard, Call::Info).await {
            Ok(CallResult::Info(raw)) => raw,
            Ok(_) => unreachable!("an info call returns task info"),
            Err(Interrupted(outcome)) => return Err(info_failed(describe_outcome(&outcome))),
        };
        let bad_info = |message: String| LoadError::BadInfo {
            name: name.to_owned(),
            message,
        };
        let maximum = weir_core::declared::MAX_TASKS;
        if raw.len() > maximum {
            return Err(bad_info(format!(
                "it declares {} tasks, above the maximum of {maximum}",
                raw.len()
            )));
        }
        let tasks = raw
            .into_iter()
            .map(convert_task_info)
            .collect::<anyhow::Result<Vec<_>>>()
            .map_err(|error| LoadError::BadInfo {
                name: name.to_owned(),
                message: format!("{error:#}"),
            })?;
        let mut seen = std::collections::HashSet::new();
        for task in &tasks {
            task.check().map_err(bad_info)?;
            if !seen.insert(task.name.as_str()) {
                return Err(LoadError::BadInfo {
                    name: name.to_owned(),
                    message: format!("two tasks are named `{}`", task.name),
                });
            }
        }
        Ok(tasks)
    }
}

fn describe_outcome(outcome: &AttemptOutcome) -> String {
    match outcome {
        AttemptOutcome::Completed { .. } => "completed".into(),
        AttemptOutcome::Failed { message, .. } => message.clone(),
        AttemptOutcome::TimedOut { after } => describe_timeout(*after),
        AttemptOutcome::Crashed { message, .. } => message.clone(),
    }
}

fn write_compiled(component: &Component, path: &Path) -> anyhow::Result<()> {
    let bytes = component
        .serialize()
        .map_err(anyhow::Error::from)
        .context("serializing the compiled component")?;
    if let Some(dir) = path.parent() {
        fs_err::create_dir_all(dir)?;
    }
    // Write then rename, so a concurrent reader never sees half a file.
    let temporary = path.with_extension(format!("tmp{}", std::process::id()));
    fs_err::write(&temporary, bytes)?;
    fs_err::rename(&temporary, path)?;
    Ok(())
}

fn convert_task_info(raw: WitTaskInfo) -> anyhow::Result<TaskInfo> {
    let shown_name: String = raw.name.chars().take(64).collect();
    let schema = |text: Option<String>, which: &str| -> anyhow::Result<Option<serde_json::Value>> {
        let maximum = weir_core::declared::MAX_SCHEMA_BYTES;
        if let Some(text) = &text
            && text.len() > maximum
        {
            anyhow::bail!(
                "task `{shown_name}`: its {which} schema is {} bytes, above the maximum of {maximum}",
                text.len()
            );
        }
        text.map(|text| {
            serde_json::from_str(&text)
                .with_context(|| format!("task `{}`: its {which} schema is not JSON", shown_name))
        })
        .transpose()
    };
    let input_schema = schema(raw.input_schema.clone(), "input")?;
    let needs = raw
        .needs
        .iter()
        .map(|need| weir_core::Need::parse(need))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|message| anyhow::anyhow!("task `{}`: {message}", shown_name))?;
    let output_schema = schema(raw.output_schema.clone(), "output")?;
    let delays = match raw.retry_backoff {
        Some(backoff) => RetryDelays::Exponential {
            base: Duration::from_millis(backoff.base_ms),
            max: backoff.max_ms.map(Duration::from_millis),
        },
        None => RetryDelays::PerRetry(
            raw.retry_delays_ms
                .iter()
                .copied()
                .map(Duration::from_millis)
                .collect(),
        ),
    };
    Ok(TaskInfo {
        name: raw.name,
        description: raw.description,
        version: raw.version,
        tags: raw.tags,
        retry: RetryPolicy {
            retries: raw.retries,
            delays,
            jitter_factor: raw.retry_jitter_factor,
        },
        timeout: raw.timeout_ms.map(Duration::from_millis),
        cache_policy: match raw.cache_policy {
            WitCachePolicy::None => CachePolicy::None,
            WitCachePolicy::Inputs => CachePolicy::Inputs,
            WitCachePolicy::CustomKey => CachePolicy::CustomKey,
        },
        cache_expiration: raw.cache_expiration_ms.map(Duration::from_millis),
        log_prints: raw.log_prints,
        run_name: raw.run_name,
        input_schema,
        output_schema,
        needs,
    })
}

#[cfg(test)]
mod properties {
    //! Whatever a hostile plugin's `info()` returns, reading it gives task metadata
    //! within the declared maxima or an error, never a panic.

    use super::*;
    use crate::bindings::weir::task::types::ExponentialBackoff;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "\\PC{0,16}",
            Just(String::new()),
            // Past every name and text bound, up to a megabyte.
            prop::sample::select(vec![300usize, 20_000, 1 << 20])
                .prop_map(|length| "x".repeat(length)),
        ]
    }

    fn float() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(-1.0),
            Just(1e300),
            Just(0.5)
        ]
    }

    fn raw_info() -> impl Strategy<Value = WitTaskInfo> {
        (
            (text(), prop::option::of(text()), prop::option::of(text())),
            prop::collection::vec(text(), 0..4),
            (
                any::<u32>(),
                prop::collection::vec(any::<u64>(), 0..4),
                prop::option::of((any::<u64>(), prop::option::of(any::<u64>()))),
                prop::option::of(float()),
            ),
            (
                prop::option::of(any::<u64>()),
                prop::option::of(any::<u64>()),
                prop::option::of(prop_oneof![Just("{}".to_owned()), text()]),
                prop::collection::vec(
                    prop_oneof![Just("http".to_owned()), Just("env:X".to_owned()), text()],
                    0..3,
                ),
            ),
        )
            .prop_map(
                |(
                    (name, description, version),
                    tags,
                    (retries, delays, backoff, jitter),
                    (timeout, expiration, schema, needs),
                )| WitTaskInfo {
                    name,
                    description,
                    version,
                    tags,
                    retries,
                    retry_delays_ms: delays,
                    retry_backoff: backoff
                        .map(|(base_ms, max_ms)| ExponentialBackoff { base_ms, max_ms }),
                    retry_jitter_factor: jitter,
                    timeout_ms: timeout,
                    cache_policy: WitCachePolicy::Inputs,
                    cache_expiration_ms: expiration,
                    log_prints: true,
                    run_name: None,
                    input_schema: schema,
                    output_schema: None,
                    needs,
                },
            )
    }

    proptest! {
        #[test]
        fn any_declared_metadata_is_within_bounds_or_refused(raw in raw_info()) {
            let Ok(info) = convert_task_info(raw) else {
                return Ok(());
            };
            if info.check().is_ok() {
                use weir_core::declared::*;
                prop_assert!(info.name.len() <= MAX_NAME_BYTES);
                prop_assert!(info.retry.retries <= MAX_RETRIES);
                prop_assert!(info.retry.jitter_factor.is_none_or(|jitter| (0.0..=MAX_JITTER_FACTOR).contains(&jitter)));
                prop_assert!(info.timeout.is_none_or(|timeout| timeout <= MAX_TIMEOUT));
                for retry in [0, 1, 1000, u32::MAX] {
                    prop_assert!(info.retry.delay_before_retry(retry, 0.99) <= MAX_RETRY_DELAY);
                }
            }
        }
    }
}

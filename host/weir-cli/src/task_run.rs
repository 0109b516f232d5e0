use anyhow::Context as _;
use clap::Args;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use weir_core::{RetryDelays, SystemClock, TaskOverrides, parse_duration};
use weir_runner::{RunnerError, TaskRequest, TaskRunner};

use crate::Failure;
use crate::store::StoreLocation;
use crate::terminal::TerminalObserver;

#[derive(Debug, Args)]
pub(crate) struct TaskRunArgs {
    /// The plugin: a `.wasm` component built with a weir SDK.
    plugin: PathBuf,
    /// The task to run (see `weir inspect PLUGIN`).
    #[arg(long)]
    task: String,
    /// The input object as JSON, or `@FILE` to read it from a file.
    #[arg(long, default_value = "{}")]
    input: String,
    /// Retry a failed attempt this many times.
    #[arg(long)]
    retries: Option<u32>,
    /// Wait before each retry (e.g. 500ms, 2s); repeat the flag for one delay per retry.
    #[arg(long = "retry-delay", value_parser = parse_duration_arg)]
    retry_delays: Vec<Duration>,
    /// Stop an attempt after this long (e.g. 200ms, 30s, 5m).
    #[arg(long, value_parser = parse_duration_arg)]
    timeout: Option<Duration>,
    /// Memory limit of the task (e.g. 64MiB, 1GiB).
    #[arg(long, value_parser = weir_core::parse_size)]
    memory: Option<u64>,
    /// Bound the task's CPU work deterministically with this much fuel.
    #[arg(long)]
    fuel: Option<u64>,
    /// Neither read nor write the cache for this run.
    #[arg(long, conflicts_with = "refresh_cache")]
    no_cache: bool,
    /// Run even if a cached result exists, and replace it.
    #[arg(long)]
    refresh_cache: bool,
    /// Grant a host directory: `HOST:GUEST[:ro|rw]` (read-only unless `rw`); repeatable.
    #[arg(long = "dir", value_name = "HOST:GUEST[:ro|rw]", value_parser = weir_core::DirGrant::parse)]
    dirs: Vec<weir_core::DirGrant>,
    /// Grant an environment variable by name (its value from --secrets-file or this
    /// environment); repeatable.
    #[arg(long = "env", value_name = "NAME")]
    env: Vec<String>,
    /// Allow HTTP requests to a host: `HOST`, `HOST:PORT` or `SCHEME://HOST[:PORT]`
    /// (`*.domain` for subdomains); repeatable.
    #[arg(long = "allow-http", value_name = "HOST", value_parser = weir_core::HttpGrant::parse)]
    http: Vec<weir_core::HttpGrant>,
    /// `NAME=value` lines for granted variables; their values are redacted from logs.
    #[arg(long)]
    secrets_file: Option<PathBuf>,
    /// Print a JSON object with the run's id, name, state, message and output.
    #[arg(long)]
    json: bool,
}

fn parse_duration_arg(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|error| error.to_string())
}

fn read_input(text: &str) -> Result<serde_json::Value, Failure> {
    let (source, content) = match text.strip_prefix('@') {
        Some(path) => (
            format!("input file {path}"),
            fs_err::read_to_string(path).map_err(Failure::usage)?,
        ),
        None => ("--input".to_owned(), text.to_owned()),
    };
    serde_json::from_str(&content)
        .with_context(|| format!("{source} is not valid JSON"))
        .map_err(Failure::usage)
}

/// Opens the store and a runtime whose compiled-plugin cache lives in the store's local
/// directory.
pub(crate) async fn open_runner(
    store: &StoreLocation,
    secrets_file: Option<&Path>,
) -> Result<TaskRunner, Failure> {
    let secrets = match secrets_file {
        Some(path) => weir_runner::load_secrets(path)
            .map_err(|message| Failure::usage(anyhow::anyhow!(message)))?,
        None => Default::default(),
    };
    let local_dir = store.local_dir();
    let store = store.open().await?;
    let runtime =
        weir_runtime::Runtime::new(runtime_config(&local_dir)?).map_err(Failure::internal)?;
    Ok(TaskRunner::new(
        Arc::new(runtime),
        store,
        Arc::new(SystemClock),
        Arc::new(TerminalObserver::stderr()),
    )
    .with_secrets(secrets))
}

/// The runtime's bounds, each changeable with an environment variable (the README's
/// table of bounds lists them).
fn runtime_config(local_dir: &Path) -> Result<weir_runtime::RuntimeConfig, Failure> {
    let mut config = weir_runtime::RuntimeConfig {
        compiled_cache_dir: Some(local_dir.join("compiled")),
        ..Default::default()
    };
    let read = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|value| !value.trim().is_empty())
    };
    let bad = |name: &str, message: String| {
        Failure::usage(anyhow::anyhow!(
            "the environment variable {name}: {message}"
        ))
    };
    let size = |name: &str, field: &mut usize| -> Result<(), Failure> {
        if let Some(text) = read(name) {
            let bytes = weir_core::parse_size(&text).map_err(|message| bad(name, message))?;
            *field = usize::try_from(bytes).map_err(|_| bad(name, "too large".into()))?;
        }
        Ok(())
    };
    size("WEIR_LOG_LIMIT", &mut config.log_limit_bytes)?;
    size("WEIR_MAX_OUTPUT", &mut config.max_output_bytes)?;
    size("WEIR_MAX_MESSAGE", &mut config.max_message_bytes)?;
    size("WEIR_MAX_HTTP_BODY", &mut config.max_http_response_bytes)?;
    if let Some(text) = read("WEIR_MAX_MEMORY") {
        config.max_memory_bytes =
            weir_core::parse_size(&text).map_err(|message| bad("WEIR_MAX_MEMORY", message))?;
    }
    if let Some(text) = read("WEIR_MAX_OUTPUT_VALUES") {
        config.max_output_values = text
            .trim()
            .parse()
            .map_err(|_| bad("WEIR_MAX_OUTPUT_VALUES", format!("`{text}` is not a count")))?;
    }
    for (name, field) in [
        ("WEIR_INFO_TIMEOUT", &mut config.info_timeout),
        ("WEIR_CACHE_KEY_TIMEOUT", &mut config.cache_key_timeout),
    ] {
        if let Some(text) = read(name) {
            *field = parse_duration(&text).map_err(|error| bad(name, error.to_string()))?;
        }
    }
    Ok(config)
}

pub(crate) fn runner_failure(error: RunnerError) -> Failure {
    match error {
        RunnerError::Store(_) => Failure::internal(error),
        _ => Failure::usage(error),
    }
}

pub(crate) async fn run(store: &StoreLocation, args: TaskRunArgs) -> Result<u8, Failure> {
    let input = read_input(&args.input)?;
    let runner = Arc::new(open_runner(store, args.secrets_file.as_deref()).await?);
    let interrupts = crate::interrupt::Interrupts::watch(runner.clone());
    let plugin = runner
        .load_plugin(&args.plugin)
        .await
        .map_err(runner_failure)?;
    let overrides = TaskOverrides {
        retries: args.retries,
        retry_delays: (!args.retry_delays.is_empty())
            .then(|| RetryDelays::PerRetry(args.retry_delays.clone())),
        timeout: args.timeout,
        memory_bytes: args.memory,
        fuel: args.fuel,
        cache_policy: args.no_cache.then_some(weir_core::CachePolicy::None),
        refresh_cache: args.refresh_cache,
        grants: weir_core::Grants {
            dirs: args.dirs.clone(),
            env: args.env.clone(),
            http: args.http.clone(),
        },
        ..Default::default()
    };
    let outcome = runner
        .run_task(TaskRequest::new(plugin, &args.task, input).with_overrides(overrides))
        .await
        .map_err(runner_failure)?;
    // Everything about the run is durable before the command reports it.
    runner
        .store()
        .flush()
        .await
        .with_context(|| format!("recording the run in the store {store}"))
        .map_err(Failure::internal)?;
    let code = crate::report_run(
        args.json,
        outcome.id.as_str(),
        &outcome.name,
        outcome.state,
        outcome.message.as_deref(),
        outcome.attempts,
        outcome.output.as_ref(),
    );
    Ok(interrupts.exit_code().unwrap_or(code))
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_input_text_is_json_or_a_usage_error(text in "\\PC{0,80}") {
            match read_input(&text) {
                Ok(_) => {}
                Err(failure) => prop_assert_eq!(failure.code, crate::exit::USAGE),
            }
        }
    }
}

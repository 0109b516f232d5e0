use anyhow::Context as _;
use clap::Args;
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::sync::Arc;
use weir_flow::Flow;
use weir_runner::{FlowRunError, FlowRunner};

use crate::Failure;
use crate::store::StoreLocation;
use crate::task_run::open_runner;

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The flow file (TOML).
    #[arg(required_unless_present = "resume")]
    flow: Option<PathBuf>,
    /// Continue an interrupted (or failed) flow run, by id or name, without running again
    /// what it completed.
    #[arg(long, value_name = "RUN", conflicts_with_all = ["flow", "params", "params_file"])]
    resume: Option<String>,
    /// A parameter, `key=value` (repeatable); the value is read as the parameter's type.
    #[arg(short = 'p', long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// A JSON file with an object of parameters (`-p` wins over it).
    #[arg(long)]
    params_file: Option<PathBuf>,
    /// Task runs in progress at once (default: 8 per core, between 16 and 128).
    #[arg(long)]
    concurrency: Option<usize>,
    /// `NAME=value` lines for the environment variables nodes are granted (`env = [...]`);
    /// their values are redacted from logs.
    #[arg(long)]
    secrets_file: Option<PathBuf>,
    /// Print a JSON object with the flow run's id, name, state, message and output.
    #[arg(long)]
    json: bool,
    /// Queue the run for workers (`weir worker`) instead of running it here, and print
    /// its id.
    #[arg(long, conflicts_with = "resume")]
    submit: bool,
    /// With --submit: follow the run to its end (its lines, output and exit code, as if
    /// it ran here).
    #[arg(long, requires = "submit")]
    wait: bool,
}

fn parameters(flow: &Flow, args: &RunArgs) -> Result<Map<String, Value>, Failure> {
    let mut given = Map::new();
    if let Some(path) = &args.params_file {
        let text = fs_err::read_to_string(path).map_err(Failure::usage)?;
        match serde_json::from_str(&text) {
            Ok(Value::Object(object)) => given.extend(object),
            Ok(_) => {
                return Err(Failure::usage(anyhow::anyhow!(
                    "{} must hold a JSON object of parameters",
                    path.display()
                )));
            }
            Err(error) => {
                return Err(Failure::usage(anyhow::anyhow!(
                    "{} is not valid JSON: {error}",
                    path.display()
                )));
            }
        }
    }
    for assignment in &args.params {
        let (key, text) = assignment.split_once('=').ok_or_else(|| {
            Failure::usage(anyhow::anyhow!(
                "`-p {assignment}` should be `-p key=value`"
            ))
        })?;
        let parameter = flow.parameters.get(key).ok_or_else(|| {
            let known: Vec<&str> = flow.parameters.keys().map(String::as_str).collect();
            Failure::usage(anyhow::anyhow!(
                "{}: the flow has no parameter `{key}` (parameters: {})",
                flow.origin(),
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ))
        })?;
        let value = parameter
            .kind
            .parse_value(text)
            .map_err(|message| Failure::usage(anyhow::anyhow!("parameter `{key}`: {message}")))?;
        given.insert(key.to_owned(), value);
    }
    Ok(given)
}

pub(crate) async fn run(store: &StoreLocation, args: RunArgs) -> Result<u8, Failure> {
    let tasks = Arc::new(open_runner(store, args.secrets_file.as_deref()).await?);
    let concurrency = args
        .concurrency
        .unwrap_or_else(FlowRunner::default_concurrency);
    let runner = Arc::new(FlowRunner::new(tasks.clone(), concurrency));
    if args.submit {
        let path = args.flow.as_ref().expect("clap requires a flow file");
        let flow = Flow::load(path).map_err(Failure::usage)?;
        let given = parameters(&flow, &args)?;
        return submit(&runner, &flow, &given, &args).await;
    }
    let interrupts = crate::interrupt::Interrupts::watch(tasks.clone());
    let started = match (&args.resume, &args.flow) {
        (Some(run), _) => {
            crate::runs::reap_orphans(tasks.store().as_ref()).await?;
            let record = weir_runner::views::find_flow_run(tasks.store().as_ref(), run)
                .await
                .map_err(crate::runs::view_failure)?;
            runner.resume_flow(&record.id).await
        }
        (None, Some(path)) => {
            let flow = Flow::load(path).map_err(Failure::usage)?;
            let given = parameters(&flow, &args)?;
            runner.run_flow(&flow, &given).await
        }
        (None, None) => unreachable!("clap requires a flow file or --resume"),
    };
    let outcome = started.map_err(|error| match error {
        FlowRunError::Store(_) => Failure::internal(error),
        _ => Failure::usage(error),
    })?;
    tasks
        .store()
        .flush()
        .await
        .with_context(|| format!("recording the flow run in the store {store}"))
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

/// `weir run --submit [--wait]`: queues the run; with --wait, follows it to its end.
async fn submit(
    runner: &Arc<FlowRunner>,
    flow: &Flow,
    given: &Map<String, Value>,
    args: &RunArgs,
) -> Result<u8, Failure> {
    let store = runner.tasks().store().clone();
    // Taken before the run exists: following from here misses nothing of it.
    let cursor = store.changes_now().await.map_err(Failure::internal)?;
    let submitted = runner
        .submit_flow(flow, given)
        .await
        .map_err(|error| match error {
            FlowRunError::Store(_) => Failure::internal(error),
            _ => Failure::usage(error),
        })?;
    let observer = crate::terminal::TerminalObserver::stderr();
    observer.note(
        &format!("Flow run '{}'", submitted.name),
        &format!(
            "Submitted to the queue of {store_location} ({})",
            submitted.id,
            store_location = store.location()
        ),
    );
    let waiting =
        weir_runner::waiting::explain_waiting_runs(store.as_ref(), &weir_core::SystemClock)
            .await
            .map_err(Failure::internal)?;
    if let Some(address) = observer.run_address(&submitted.id) {
        observer.note(
            &format!("Flow run '{}'", submitted.name),
            &format!("View at {address}"),
        );
    }
    if let Some((_, message)) = waiting
        .iter()
        .find(|(run, _)| run.as_str() == submitted.id.as_str())
        && !args.wait
    {
        observer.note(&format!("Flow run '{}'", submitted.name), message);
    }
    if !args.wait {
        if args.json {
            println!(
                "{}",
                serde_json::json!({"id": submitted.id, "name": submitted.name, "state": "Pending"})
            );
        } else {
            println!("{}", submitted.id);
        }
        return Ok(0);
    }
    let ended = crate::follow::follow_flow_run(
        store.as_ref(),
        &submitted.id,
        cursor,
        &observer,
        Default::default(),
    )
    .await
    .map_err(Failure::internal)?;
    let output = match &ended.result_digest {
        Some(digest) => Some(store.result(digest).await.map_err(Failure::internal)?),
        None => None,
    };
    Ok(crate::report_run(
        args.json,
        ended.id.as_str(),
        &ended.name,
        ended.state,
        ended.state_message.as_deref(),
        ended.attempts,
        output.as_ref(),
    ))
}

#[cfg(test)]
mod properties {
    //! Whatever is typed after `-p`, `--params-file` aside, the parameters parse or the
    //! command refuses them with a message; nothing panics.

    use super::*;
    use proptest::prelude::*;

    fn flow() -> Flow {
        Flow::from_toml(
            r#"
format = 1
name = "typed"
[parameters.count]
type = "integer"
[parameters.ratio]
type = "number"
[parameters.label]
type = "string"
[parameters.items]
type = "array"
[parameters.blob]
type = "any"
[plugins]
[nodes]
"#,
            std::path::Path::new("typed.toml"),
        )
        .expect("the flow parses")
    }

    fn args(params: Vec<String>) -> RunArgs {
        RunArgs {
            flow: None,
            resume: None,
            params,
            params_file: None,
            concurrency: None,
            secrets_file: None,
            json: false,
            submit: false,
            wait: false,
        }
    }

    proptest! {
        #[test]
        fn any_parameter_assignment_parses_or_is_refused(
            key in prop::sample::select(vec!["count", "ratio", "label", "items", "blob", "nope", ""]),
            separator in prop::sample::select(vec!["=", "", "==", " = "]),
            value in "\\PC{0,40}",
        ) {
            let assignment = format!("{key}{separator}{value}");
            match parameters(&flow(), &args(vec![assignment])) {
                Ok(given) => prop_assert!(given.len() <= 1),
                Err(failure) => prop_assert_eq!(failure.code, crate::exit::USAGE),
            }
        }
    }
}

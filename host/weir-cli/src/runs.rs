//! `weir runs ls|inspect|logs` and `weir cache ls|clear`: reading the run history.

use clap::{Args, Subcommand};
use std::collections::HashMap;
use std::time::Duration;
use weir_core::{
    Clock, FlowRunId, State, SystemClock, TaskRunId, Timestamp, format_duration, parse_duration,
};
use weir_runner::views::{self, RunView, ViewError};
use weir_store::{FlowRunFilter, StateChange, Store, TaskRunFilter};

use crate::Failure;
use crate::store::StoreLocation;

#[derive(Debug, Subcommand)]
pub(crate) enum RunsCommand {
    /// List flow runs (or task runs with --tasks), newest first.
    Ls(LsArgs),
    /// Show a run: its states, timings, and for a flow run its nodes' task runs.
    Inspect(RunArgs),
    /// Print the log lines of a task run, or of every task run of a flow run.
    Logs(LogsArgs),
    /// Cancel a flow run (and everything under it) or a task run, wherever it runs.
    Cancel(RunArgs),
}

#[derive(Debug, Args)]
pub(crate) struct LsArgs {
    /// List task runs instead of flow runs.
    #[arg(long)]
    tasks: bool,
    /// Only runs of this flow (or, with --tasks, this task).
    #[arg(long)]
    flow: Option<String>,
    /// Only runs in this state (e.g. Failed).
    #[arg(long)]
    state: Option<State>,
    /// Only runs created within this long (e.g. 1h, 2d).
    #[arg(long, value_parser = |text: &str| parse_duration(text).map_err(|error| error.to_string()))]
    since: Option<Duration>,
    /// At most this many runs.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// The next page: runs older than this one (the last id of the page before).
    #[arg(long, value_name = "RUN_ID")]
    before: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// A flow run's id (`frun_…`) or name, or a task run's id (`trun_…`).
    run: String,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Go on printing the flow run's lines (its task runs' states and logs, from any
    /// machine) until it ends.
    #[arg(long, conflicts_with = "json")]
    follow: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum CacheCommand {
    /// List cache entries, newest first.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Remove every cache entry (the runs and their results stay).
    Clear,
}

fn duration(run_started: Option<Timestamp>, run_ended: Option<Timestamp>) -> String {
    match (run_started, run_ended) {
        (Some(started), Some(ended)) => {
            let took = ended.since(started);
            if took < Duration::from_secs(1) {
                format!("{:.1}ms", took.as_secs_f64() * 1000.0)
            } else if took < Duration::from_secs(120) {
                format!("{:.2}s", took.as_secs_f64())
            } else {
                format_duration(Duration::from_secs(took.as_secs()))
            }
        }
        (Some(_), None) => "running".into(),
        _ => "-".into(),
    }
}

pub(crate) async fn runs(location: &StoreLocation, command: RunsCommand) -> Result<u8, Failure> {
    let store = location.open_existing().await?;
    let store = store.as_ref();
    reap_orphans(store).await?;
    match command {
        RunsCommand::Ls(args) => list(store, &args).await,
        RunsCommand::Inspect(args) => inspect(store, &args).await,
        RunsCommand::Logs(args) => logs(store, &args).await,
        RunsCommand::Cancel(args) => crate::cancel::cancel(store, &args.run, args.json).await,
    }
}

/// A view that could not be made: a run nobody can find is the user's to fix.
pub(crate) fn view_failure(error: ViewError) -> Failure {
    match error {
        ViewError::NoSuchRun(_) => Failure::usage(error),
        ViewError::Store(_) => Failure::internal(error),
    }
}

/// Records `Crashed` the runs of processes that died while running them (see
/// [`weir_runner::reap_orphans`]), saying so for each flow run it ended.
pub(crate) async fn reap_orphans(store: &dyn Store) -> Result<(), Failure> {
    let orphaned = views::settle_orphans(store, &SystemClock)
        .await
        .map_err(Failure::internal)?;
    for orphan in orphaned {
        let run = &orphan.flow_run;
        eprintln!(
            "note: flow run '{}' ({}) was running in process {} on {}, which stopped; it is now Crashed (continue it with `weir run --resume {}`)",
            run.name, run.id, orphan.pid, orphan.host, run.name
        );
    }
    Ok(())
}

async fn list(store: &dyn Store, args: &LsArgs) -> Result<u8, Failure> {
    let since = args
        .since
        .map(|window| Timestamp(SystemClock.now().0 - window.as_micros() as i64));
    let (prefix, kind) = match args.tasks {
        true => (TaskRunId::PREFIX, "task run"),
        false => (FlowRunId::PREFIX, "flow run"),
    };
    if let Some(before) = &args.before
        && !before.starts_with(prefix)
    {
        return Err(Failure::usage(anyhow::anyhow!(
            "--before takes a {kind} id (`{prefix}…`), the last one of the page before; got `{before}`"
        )));
    }
    if args.tasks {
        let runs = views::task_runs(
            store,
            &TaskRunFilter {
                task: args.flow.clone(),
                state: args.state,
                since,
                limit: Some(args.limit),
                before: args.before.clone().map(TaskRunId::from_string),
                ..Default::default()
            },
        )
        .await
        .map_err(Failure::internal)?;
        let rows = runs
            .iter()
            .map(|run| ListRow {
                id: run.id.to_string(),
                name: &run.name,
                of: &run.task,
                state: run.state,
                created: run.created,
                duration: duration(run.started, run.ended),
            })
            .collect();
        return print_listing(args.json, &runs, "TASK", rows);
    }
    let runs = views::flow_runs(
        store,
        &FlowRunFilter {
            flow: args.flow.clone(),
            state: args.state,
            since,
            limit: Some(args.limit),
            before: args.before.clone().map(FlowRunId::from_string),
            ..Default::default()
        },
    )
    .await
    .map_err(Failure::internal)?;
    let rows = runs
        .iter()
        .map(|summary| &summary.flow_run)
        .map(|run| ListRow {
            id: run.id.to_string(),
            name: &run.name,
            of: &run.flow,
            state: run.state,
            created: run.created,
            duration: duration(run.started, run.ended),
        })
        .collect();
    print_listing(args.json, &runs, "FLOW", rows)
}

/// One line of `weir runs ls`.
struct ListRow<'a> {
    id: String,
    name: &'a str,
    /// The flow (or task) it ran.
    of: &'a str,
    state: State,
    created: Timestamp,
    duration: String,
}

fn print_listing<T: serde::Serialize>(
    json: bool,
    records: &[T],
    of_heading: &str,
    rows: Vec<ListRow<'_>>,
) -> Result<u8, Failure> {
    if json {
        println!(
            "{}",
            serde_json::to_string(records).map_err(Failure::internal)?
        );
        return Ok(0);
    }
    println!(
        "{:<32} {:<24} {:<16} {:<14} {:<24} {:>9}",
        "ID", "NAME", of_heading, "STATE", "CREATED", "DURATION"
    );
    for row in rows {
        println!(
            "{:<32} {:<24} {:<16} {:<14} {:<24} {:>9}",
            row.id, row.name, row.of, row.state, row.created, row.duration
        );
    }
    Ok(0)
}

/// `process 4242 on build-1 (heartbeat 1s ago)`.
fn describe_running(running: &views::RunningIn) -> String {
    format!(
        "process {} on {} (heartbeat {}s ago)",
        running.pid, running.host, running.heartbeat_age_secs
    )
}

async fn inspect(store: &dyn Store, args: &RunArgs) -> Result<u8, Failure> {
    let view = views::inspect(store, &args.run, SystemClock.now())
        .await
        .map_err(view_failure)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&view).map_err(Failure::internal)?
        );
        return Ok(0);
    }
    match view {
        RunView::Task(view) => print_task_run(&view),
        RunView::Flow(view) => print_flow_run(&view),
    }
    Ok(0)
}

fn state_line(state: State, message: Option<&str>) -> String {
    format!(
        "{state}{}",
        message.map(|m| format!(": {m}")).unwrap_or_default()
    )
}

fn print_history(history: &[StateChange]) {
    println!("history");
    for change in history {
        let message = change
            .message
            .as_deref()
            .map(|message| format!(" - {message}"))
            .unwrap_or_default();
        println!(
            "  {}  {:<14} attempt {}{message}",
            change.at,
            change.state.as_str(),
            change.attempt
        );
    }
}

fn print_task_run(view: &views::TaskRunView) {
    let run = &view.task_run;
    println!("task run  {} ({})", run.name, run.id);
    println!(
        "task      {} of plugin {} ({})",
        run.task,
        run.plugin_name,
        run.plugin_digest.short()
    );
    if let Some(flow_run) = &run.flow_run_id {
        println!(
            "flow run  {flow_run}, node {}",
            run.node.as_deref().unwrap_or("-")
        );
    }
    println!(
        "state     {}",
        state_line(run.state, run.state_message.as_deref())
    );
    println!(
        "attempts  {}    duration {}",
        run.attempts,
        duration(run.started, run.ended)
    );
    if let Some(running) = &view.running_in {
        println!("running   in {}", describe_running(running));
    }
    println!("input     {}", run.input);
    if let Some(result) = &view.result {
        println!("result    {result}");
    }
    print_history(&view.states);
}

fn print_flow_run(view: &views::FlowRunView) {
    let run = &view.flow_run;
    println!("flow run    {} ({})", run.name, run.id);
    println!(
        "flow        {}{}",
        run.flow,
        run.source
            .as_deref()
            .map(|s| format!(" ({s})"))
            .unwrap_or_default()
    );
    println!("parameters  {}", run.parameters);
    println!(
        "state       {}",
        state_line(run.state, run.state_message.as_deref())
    );
    println!(
        "attempts    {}    duration {}",
        run.attempts,
        duration(run.started, run.ended)
    );
    if let Some(running) = &view.running_in {
        println!("running in  {}", describe_running(running));
    }
    if let Some(result) = &view.result {
        println!("result      {result}");
    }
    println!("nodes");
    for node in &view.nodes {
        let single = (node.task_runs == 1)
            .then(|| {
                view.task_runs
                    .iter()
                    .find(|task| task.node.as_deref() == Some(node.node.as_str()))
            })
            .flatten();
        match single {
            Some(task) => println!(
                "  {:<20} {:<20} {:<14} {:>9}",
                node.node,
                task.name,
                task.state,
                duration(task.started, task.ended)
            ),
            None => {
                let summary: Vec<String> = node
                    .states
                    .iter()
                    .map(|(state, count)| format!("{count} {state}"))
                    .collect();
                println!(
                    "  {:<20} {} task runs: {}",
                    node.node,
                    node.task_runs,
                    summary.join(", ")
                );
            }
        }
    }
    for subflow in &view.subflow_runs {
        println!(
            "  {:<20} subflow run {} ({}) {}",
            subflow.parent_node.as_deref().unwrap_or("-"),
            subflow.name,
            subflow.flow,
            subflow.state
        );
    }
    print_history(&view.states);
}

async fn logs(store: &dyn Store, args: &LogsArgs) -> Result<u8, Failure> {
    let (follow, args) = (args.follow, &args.run);
    // Taken before the lines are read: following from here misses none.
    let cursor = match follow {
        true => Some(store.changes_now().await.map_err(Failure::internal)?),
        false => None,
    };
    let lines = views::logs(store, &args.run).await.map_err(view_failure)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&lines).map_err(Failure::internal)?
        );
        return Ok(0);
    }
    let mut shown: HashMap<TaskRunId, usize> = HashMap::new();
    for line in lines {
        *shown.entry(line.task_run_id.clone()).or_default() += 1;
        println!(
            "{} | {:<7} | Task run '{}' - {}",
            line.at.time_of_day(),
            line.level.as_str(),
            line.task_run,
            line.message
        );
    }
    let Some(cursor) = cursor else {
        return Ok(0);
    };
    let flow_run = match views::find_run(store, &args.run)
        .await
        .map_err(view_failure)?
    {
        views::FoundRun::Flow(run) => Some(run.id),
        views::FoundRun::Task(run) => run.flow_run_id,
    };
    let Some(flow_run) = flow_run else {
        return Ok(0);
    };
    let out = crate::terminal::TerminalObserver::new(Box::new(std::io::stdout()), false);
    crate::follow::follow_flow_run(store, &flow_run, cursor, &out, shown)
        .await
        .map_err(Failure::internal)?;
    Ok(0)
}

pub(crate) async fn cache(location: &StoreLocation, command: CacheCommand) -> Result<u8, Failure> {
    let store = location.open_existing().await?;
    match command {
        CacheCommand::Ls { json } => {
            let entries = views::cache_entries(store.as_ref())
                .await
                .map_err(Failure::internal)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&entries).map_err(Failure::internal)?
                );
                return Ok(0);
            }
            println!(
                "{:<14} {:<20} {:<32} {:<24} {:<24}",
                "KEY", "TASK", "TASK RUN", "CREATED", "EXPIRES"
            );
            for entry in entries {
                println!(
                    "{:<14} {:<20} {:<32} {:<24} {:<24}",
                    &entry.key.as_str()[..12],
                    entry.task,
                    entry.task_run_id,
                    entry.created,
                    entry
                        .expires
                        .map_or("never".into(), |expires| expires.to_string())
                );
            }
        }
        CacheCommand::Clear => {
            let removed = store.clear_cache().await.map_err(Failure::internal)?;
            println!("removed {removed} cache entries");
        }
    }
    Ok(0)
}

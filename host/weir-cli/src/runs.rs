//! `weir runs ls|inspect|logs` and `weir cache ls|clear`: reading the run history.

use clap::{Args, Subcommand};
use serde_json::json;
use std::path::Path;
use std::time::Duration;
use weir_core::{
    Clock, FlowRunId, State, SystemClock, TaskRunId, Timestamp, format_duration, parse_duration,
};
use weir_store::{FlowRunFilter, FlowRunRecord, LogRecord, RunStore, TaskRunFilter, TaskRunRecord};
use weir_store_sqlite::SqliteStore;

use crate::Failure;

#[derive(Debug, Subcommand)]
pub(crate) enum RunsCommand {
    /// List flow runs (or task runs with --tasks), newest first.
    Ls(LsArgs),
    /// Show a run: its states, timings, and for a flow run its nodes' task runs.
    Inspect(RunArgs),
    /// Print the log lines of a task run, or of every task run of a flow run.
    Logs(RunArgs),
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

fn open_store(store_dir: &Path) -> Result<SqliteStore, Failure> {
    if !store_dir.join("weir.db").exists() {
        return Err(Failure::usage(anyhow::anyhow!(
            "no store in {} (runs are recorded where `weir run` or `weir task run` ran, or in --store DIR)",
            store_dir.display()
        )));
    }
    SqliteStore::open(store_dir).map_err(Failure::internal)
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

pub(crate) fn runs(store_dir: &Path, command: RunsCommand) -> Result<u8, Failure> {
    let store = open_store(store_dir)?;
    reap_orphans(&store)?;
    match command {
        RunsCommand::Ls(args) => list(&store, &args),
        RunsCommand::Inspect(args) => inspect(&store, &args),
        RunsCommand::Logs(args) => logs(&store, &args),
        RunsCommand::Cancel(args) => crate::cancel::cancel(&store, &args.run, args.json),
    }
}

/// Records `Crashed` the runs of processes that died while running them (see
/// [`weir_runner::reap_orphans`]), saying so for each flow run it ended.
pub(crate) fn reap_orphans(store: &dyn RunStore) -> Result<(), Failure> {
    let reaped = weir_runner::reap_orphans(store, &SystemClock).map_err(Failure::internal)?;
    for (owner, ended) in reaped {
        for id in &ended.flow_runs {
            let Ok(Some(run)) = store.flow_run(id) else {
                continue;
            };
            if run.parent_flow_run_id.is_some() {
                continue;
            }
            eprintln!(
                "note: flow run '{}' ({id}) was running in process {} on {}, which stopped; it is now Crashed (continue it with `weir run --resume {}`)",
                run.name, owner.pid, owner.host, run.name
            );
        }
    }
    Ok(())
}

fn list(store: &SqliteStore, args: &LsArgs) -> Result<u8, Failure> {
    let since = args
        .since
        .map(|window| Timestamp(SystemClock.now().0 - window.as_micros() as i64));
    if args.tasks {
        let runs = store
            .task_runs(&TaskRunFilter {
                task: args.flow.clone(),
                state: args.state,
                since,
                limit: Some(args.limit),
                ..Default::default()
            })
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
    let runs = store
        .flow_runs(&FlowRunFilter {
            flow: args.flow.clone(),
            state: args.state,
            since,
            limit: Some(args.limit),
            ..Default::default()
        })
        .map_err(Failure::internal)?;
    let rows = runs
        .iter()
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

pub(crate) enum Found {
    Flow(FlowRunRecord),
    Task(TaskRunRecord),
}

/// A flow run by id (`frun_…`) or name (the newest with that name).
pub(crate) fn find_flow_run(store: &dyn RunStore, run: &str) -> Result<FlowRunRecord, Failure> {
    let missing = || {
        Failure::usage(anyhow::anyhow!(
            "no run `{run}` in the store (see `weir runs ls`)"
        ))
    };
    if run.starts_with(FlowRunId::PREFIX) {
        let record = store
            .flow_run(&FlowRunId::from_string(run))
            .map_err(Failure::internal)?;
        return record.ok_or_else(missing);
    }
    let named = store
        .flow_runs(&FlowRunFilter {
            name: Some(run.to_owned()),
            limit: Some(1),
            ..Default::default()
        })
        .map_err(Failure::internal)?;
    named.into_iter().next().ok_or_else(missing)
}

pub(crate) fn find(store: &dyn RunStore, run: &str) -> Result<Found, Failure> {
    if run.starts_with(TaskRunId::PREFIX) {
        let record = store
            .task_run(&TaskRunId::from_string(run))
            .map_err(Failure::internal)?;
        return record.map(Found::Task).ok_or_else(|| {
            Failure::usage(anyhow::anyhow!(
                "no run `{run}` in the store (see `weir runs ls`)"
            ))
        });
    }
    find_flow_run(store, run).map(Found::Flow)
}

fn task_runs_of(store: &SqliteStore, flow_run: &FlowRunId) -> Result<Vec<TaskRunRecord>, Failure> {
    let mut runs = store
        .task_runs(&TaskRunFilter {
            flow_run_id: Some(flow_run.clone()),
            ..Default::default()
        })
        .map_err(Failure::internal)?;
    runs.reverse();
    Ok(runs)
}

/// Which live process runs an unfinished run: `process 4242 on build-1 (heartbeat 1s ago)`.
fn running_in(
    store: &SqliteStore,
    state: &State,
    owner: Option<&str>,
) -> Result<Option<String>, Failure> {
    let Some(owner) = owner.filter(|_| !state.is_final()) else {
        return Ok(None);
    };
    let now = SystemClock.now();
    Ok(weir_runner::live_owner(store, owner, now)
        .map_err(Failure::internal)?
        .map(|record| {
            format!(
                "process {} on {} (heartbeat {}s ago)",
                record.pid,
                record.host,
                now.since(record.heartbeat).as_secs()
            )
        }))
}

fn inspect(store: &SqliteStore, args: &RunArgs) -> Result<u8, Failure> {
    match find(store, &args.run)? {
        Found::Task(run) => {
            let history = store.state_history(&run.id).map_err(Failure::internal)?;
            let result = match &run.result_digest {
                Some(digest) => Some(store.result(digest).map_err(Failure::internal)?),
                None => None,
            };
            if args.json {
                println!(
                    "{}",
                    json!({"task_run": run, "states": history, "result": result})
                );
                return Ok(0);
            }
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
                "state     {}{}",
                run.state,
                run.state_message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            );
            println!(
                "attempts  {}    duration {}",
                run.attempts,
                duration(run.started, run.ended)
            );
            if let Some(owner) = running_in(store, &run.state, run.owner.as_deref())? {
                println!("running   in {owner}");
            }
            println!("input     {}", run.input);
            if let Some(result) = result {
                println!("result    {result}");
            }
            println!("history");
            for change in history {
                let message = change
                    .message
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
        Found::Flow(run) => {
            let history = store.flow_run_history(&run.id).map_err(Failure::internal)?;
            let task_runs = task_runs_of(store, &run.id)?;
            let mut subflows = store
                .flow_runs(&FlowRunFilter {
                    parent: Some(run.id.clone()),
                    ..Default::default()
                })
                .map_err(Failure::internal)?;
            subflows.reverse();
            let result = match &run.result_digest {
                Some(digest) => Some(store.result(digest).map_err(Failure::internal)?),
                None => None,
            };
            if args.json {
                println!(
                    "{}",
                    json!({"flow_run": run, "states": history, "task_runs": task_runs, "subflow_runs": subflows, "result": result})
                );
                return Ok(0);
            }
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
                "state       {}{}",
                run.state,
                run.state_message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            );
            println!(
                "attempts    {}    duration {}",
                run.attempts,
                duration(run.started, run.ended)
            );
            if let Some(owner) = running_in(store, &run.state, run.owner.as_deref())? {
                println!("running in  {owner}");
            }
            if let Some(result) = result {
                println!("result      {result}");
            }
            println!("nodes");
            let mut nodes: Vec<&str> = task_runs
                .iter()
                .filter_map(|task| task.node.as_deref())
                .collect();
            nodes.dedup();
            let mut seen = std::collections::BTreeSet::new();
            for node in nodes {
                if !seen.insert(node) {
                    continue;
                }
                let runs: Vec<&TaskRunRecord> = task_runs
                    .iter()
                    .filter(|task| task.node.as_deref() == Some(node))
                    .collect();
                let mut counts = std::collections::BTreeMap::new();
                for task in &runs {
                    *counts.entry(task.state.as_str()).or_insert(0) += 1;
                }
                let summary: Vec<String> = counts
                    .iter()
                    .map(|(state, count)| format!("{count} {state}"))
                    .collect();
                if runs.len() == 1 {
                    let task = runs[0];
                    println!(
                        "  {node:<20} {:<20} {:<14} {:>9}",
                        task.name,
                        task.state,
                        duration(task.started, task.ended)
                    );
                } else {
                    println!(
                        "  {node:<20} {} task runs: {}",
                        runs.len(),
                        summary.join(", ")
                    );
                }
            }
            for subflow in subflows {
                println!(
                    "  {:<20} subflow run {} ({}) {}",
                    subflow.parent_node.as_deref().unwrap_or("-"),
                    subflow.name,
                    subflow.flow,
                    subflow.state
                );
            }
            println!("history");
            for change in history {
                let message = change
                    .message
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
    }
    Ok(0)
}

fn logs(store: &SqliteStore, args: &RunArgs) -> Result<u8, Failure> {
    let mut lines: Vec<(String, LogRecord)> = Vec::new();
    match find(store, &args.run)? {
        Found::Task(run) => {
            for line in store.logs(&run.id).map_err(Failure::internal)? {
                lines.push((run.name.clone(), line));
            }
        }
        Found::Flow(run) => {
            for task in task_runs_of(store, &run.id)? {
                for line in store.logs(&task.id).map_err(Failure::internal)? {
                    lines.push((task.name.clone(), line));
                }
            }
            lines.sort_by_key(|(_, line)| line.at);
        }
    }
    if args.json {
        let objects: Vec<_> = lines
            .iter()
            .map(|(run, line)| json!({"task_run": run, "at": line.at, "level": line.level, "message": line.message}))
            .collect();
        println!("{}", serde_json::Value::Array(objects));
        return Ok(0);
    }
    for (run, line) in lines {
        println!(
            "{} | {:<7} | Task run '{run}' - {}",
            line.at.time_of_day(),
            line.level.as_str(),
            line.message
        );
    }
    Ok(0)
}

pub(crate) fn cache(store_dir: &Path, command: CacheCommand) -> Result<u8, Failure> {
    let store = open_store(store_dir)?;
    match command {
        CacheCommand::Ls { json } => {
            let entries = store.cache_entries().map_err(Failure::internal)?;
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
            let removed = store.clear_cache().map_err(Failure::internal)?;
            println!("removed {removed} cache entries");
        }
    }
    Ok(0)
}

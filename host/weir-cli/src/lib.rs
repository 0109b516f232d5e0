//! The `weir` command line: argument parsing and printing over the weir crates.
//! The binary is [`main`]; it lives in a library so that other packages (the
//! integration tests) can build the same command.
//!
//! Exit codes (documented in the README): 0 the task or flow Completed (or was Cached),
//! 1 Failed, 2 bad usage or input (unreadable plugin, unknown task, malformed JSON, an
//! invalid flow file),
//! 3 Crashed, 4 TimedOut, 5 an internal error (e.g. the store could not be opened),
//! 6 Cancelled (by `weir runs cancel`, or a limit of 0), 130 interrupted by SIGINT
//! (Ctrl-C), 143 by SIGTERM.

mod cancel;
mod flow_run;
mod follow;
mod inspect;
mod interrupt;
mod limits;
mod project;
mod runs;
mod serve;
mod store;
mod task_run;
mod tenants;
mod terminal;
mod worker;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Run workflow tasks as sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about)]
struct Cli {
    /// Where runs are recorded: a directory (the embedded SQLite store, with results and
    /// compiled plugins) or a PostgreSQL URL, `postgres://user@host/db` (a shared store).
    #[arg(long, global = true, env = "WEIR_STORE", default_value = ".weir")]
    store: String,

    /// The tenant a command acts as: it sees and records only that tenant's runs,
    /// plugins, cache and limits. The default tenant needs no setup.
    #[arg(long, global = true, env = "WEIR_TENANT", default_value = weir_core::TenantId::DEFAULT, value_parser = parse_tenant)]
    tenant: weir_core::TenantId,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a flow file: its tasks, maps and subflows, recorded in the store.
    Run(flow_run::RunArgs),
    /// Run tasks.
    #[command(subcommand)]
    Task(TaskCommand),
    /// Claim queued runs from a shared store and run them (`weir run --submit` queues
    /// them), until SIGTERM or Ctrl-C.
    Worker(worker::WorkerArgs),
    /// Show a plugin's tasks, their metadata and the plugin's digest.
    Inspect(inspect::InspectArgs),
    /// The run history: list runs, inspect one, print its logs.
    #[command(subcommand)]
    Runs(runs::RunsCommand),
    /// The result cache: list or clear entries.
    #[command(subcommand)]
    Cache(runs::CacheCommand),
    /// Tag concurrency limits: how many task runs with a tag may run at once.
    #[command(subcommand)]
    ConcurrencyLimit(limits::LimitCommand),
    /// Serve the HTTP API and the web UI over the store, and run submitted work (unless
    /// --no-worker), until SIGTERM or Ctrl-C.
    Serve(serve::ServeArgs),
    /// Start a plugin project (Rust, Python or JavaScript) with an example task and its test.
    New(project::NewArgs),
    /// Build a plugin project into a component and check it against the weir:task world.
    Build(project::BuildArgs),
    /// Tenants: each owns its runs, plugins, cache and limits (an operator's command).
    #[command(subcommand)]
    Tenant(tenants::TenantCommand),
    /// API tokens of tenants (an operator's command).
    #[command(subcommand)]
    Token(tenants::TokenCommand),
}

fn parse_tenant(text: &str) -> Result<weir_core::TenantId, String> {
    weir_core::TenantId::parse(text).map_err(|error| error.to_string())
}

#[derive(Debug, Subcommand)]
enum TaskCommand {
    /// Run one task of a plugin and print its output as JSON.
    Run(task_run::TaskRunArgs),
}

/// An error with the exit code it should end the process with.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) error: anyhow::Error,
}

impl Failure {
    pub(crate) fn usage(error: impl Into<anyhow::Error>) -> Self {
        Failure {
            code: exit::USAGE,
            error: error.into(),
        }
    }

    pub(crate) fn internal(error: impl Into<anyhow::Error>) -> Self {
        Failure {
            code: exit::INTERNAL,
            error: error.into(),
        }
    }
}

/// Prints how a run ended (its output, or with `--json` a report) and returns the exit
/// code for its state. Shared by `weir run` and `weir task run`.
pub(crate) fn report_run(
    json: bool,
    id: &str,
    name: &str,
    state: weir_core::State,
    message: Option<&str>,
    attempts: u32,
    output: Option<&serde_json::Value>,
) -> u8 {
    use weir_core::State;
    if json {
        let report = serde_json::json!({
            "id": id,
            "name": name,
            "state": state,
            "message": message,
            "attempts": attempts,
            "output": output,
        });
        println!("{report}");
    } else if let Some(output) = output {
        println!("{output}");
    }
    match state {
        State::Completed | State::Cached => 0,
        State::TimedOut => exit::TIMED_OUT,
        State::Crashed => exit::CRASHED,
        State::Cancelled => exit::CANCELLED,
        _ => exit::FAILED,
    }
}

pub(crate) mod exit {
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const CRASHED: u8 = 3;
    pub const TIMED_OUT: u8 = 4;
    pub const INTERNAL: u8 = 5;
    pub const CANCELLED: u8 = 6;
}

/// A panic in weir is a bug whatever caused it: say so, and when `WEIR_PANIC_LOG` names
/// a file, append the panic to it (the test command fails if any weir process wrote
/// one).
fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        eprintln!("error: weir panicked; this is a bug in weir, not in your flow or plugin");
        if let Some(path) = std::env::var_os("WEIR_PANIC_LOG") {
            use std::io::Write as _;
            let args: Vec<String> = std::env::args().collect();
            if let Ok(mut file) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                let _ = writeln!(
                    file,
                    "pid {}: weir {}: {info}",
                    std::process::id(),
                    args.join(" ")
                );
            }
        }
    }));
}

/// Parses the process's arguments, runs the command, and returns its exit code.
pub fn main() -> ExitCode {
    install_panic_hook();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: could not start the async runtime: {error}");
            return ExitCode::from(exit::INTERNAL);
        }
    };
    let store = store::StoreLocation::parse(&cli.store, cli.tenant);
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => flow_run::run(&store, args).await,
            Command::Task(TaskCommand::Run(args)) => task_run::run(&store, args).await,
            Command::Worker(args) => worker::run(&store, args).await,
            Command::Serve(args) => serve::run(&store, args).await,
            Command::Inspect(args) => inspect::run(&store, args).await,
            Command::Runs(command) => runs::runs(&store, command).await,
            Command::Cache(command) => runs::cache(&store, command).await,
            Command::ConcurrencyLimit(command) => limits::run(&store, command).await,
            Command::New(args) => project::new(args),
            Command::Build(args) => project::build(&store, args).await,
            Command::Tenant(command) => tenants::tenant(&store, command).await,
            Command::Token(command) => tenants::token(&store, command).await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("error: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}

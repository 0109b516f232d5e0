//! `weir worker`: claims queued runs from a shared store and runs them, until SIGTERM or
//! Ctrl-C; then it stops claiming, lets what it holds finish for a grace period, and
//! gives the rest back to the queue.

use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use weir_core::{DirGrant, Grants, HttpGrant, parse_duration};
use weir_runner::{CancelToken, FlowRunner, Worker, WorkerConfig};

use crate::Failure;
use crate::store::StoreLocation;
use crate::task_run::open_runner;

fn duration(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|error| error.to_string())
}

#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    /// Task runs at once (default: 8 per core, between 16 and 128).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Claim only runs with one of these tags (comma-separated).
    #[arg(long, value_delimiter = ',')]
    tags: Vec<String>,
    /// The worker's name in its lines and in the runs it takes over (default w-HOST-PID).
    #[arg(long)]
    name: Option<String>,
    /// A host directory this worker may grant, and what is under it (repeatable;
    /// `PATH:rw` to let runs write). Runs granted others are left to other workers.
    #[arg(long = "allow-dir", value_name = "PATH[:rw]")]
    allow_dirs: Vec<String>,
    /// An environment variable this worker may grant (repeatable).
    #[arg(long = "allow-env", value_name = "NAME")]
    allow_env: Vec<String>,
    /// An HTTP host this worker may grant (repeatable; `*` for any).
    #[arg(long = "allow-http", value_name = "HOST")]
    allow_http: Vec<String>,
    /// How long a claim holds without a heartbeat: a dead worker's runs are taken over
    /// after this.
    #[arg(long, default_value = "10s", value_parser = duration)]
    lease: Duration,
    /// How long held runs may finish after SIGTERM or Ctrl-C before they are given back.
    #[arg(long, default_value = "30s", value_parser = duration)]
    grace: Duration,
    /// Run task runs only; drive no flow runs.
    #[arg(long)]
    no_flows: bool,
    /// `NAME=value` lines for the environment variables runs are granted; their values
    /// are redacted from logs.
    #[arg(long)]
    secrets_file: Option<PathBuf>,
}

impl WorkerArgs {
    pub(crate) fn secrets_file(&self) -> Option<&std::path::Path> {
        self.secrets_file.as_deref()
    }
}

fn ceilings(args: &WorkerArgs) -> Result<Grants, Failure> {
    grants_allowed(&args.allow_dirs, &args.allow_env, &args.allow_http)
}

/// The grants that `--allow-dir PATH[:rw]`, `--allow-env NAME` and `--allow-http HOST`
/// (or `*`) allow: a worker's ceilings, or a tenant's.
pub(crate) fn grants_allowed(
    allow_dirs: &[String],
    allow_env: &[String],
    allow_http: &[String],
) -> Result<Grants, Failure> {
    let mut grants = Grants::default();
    for dir in allow_dirs {
        let (host, writable) = match dir.strip_suffix(":rw") {
            Some(host) => (host, true),
            None => (dir.strip_suffix(":ro").unwrap_or(dir), false),
        };
        if host.is_empty() {
            return Err(Failure::usage(anyhow::anyhow!(
                "--allow-dir `{dir}` should be PATH[:rw]"
            )));
        }
        grants.dirs.push(DirGrant {
            host: PathBuf::from(host),
            guest: host.to_owned(),
            writable,
        });
    }
    grants.env = allow_env.to_vec();
    for host in allow_http {
        let grant = match host.as_str() {
            "*" => HttpGrant {
                scheme: None,
                host: "*".into(),
                port: None,
            },
            spec => HttpGrant::parse(spec)
                .map_err(|message| Failure::usage(anyhow::anyhow!("--allow-http: {message}")))?,
        };
        grants.http.push(grant);
    }
    Ok(grants)
}

/// A worker set up and announced, not yet claiming.
pub(crate) struct ReadyWorker {
    pub(crate) flows: Arc<FlowRunner>,
    worker: Arc<Worker>,
    name: String,
    grace: Duration,
}

/// Opens the store and sets up a worker over it, as `args` say.
pub(crate) async fn prepare(
    store: &StoreLocation,
    args: &WorkerArgs,
) -> Result<ReadyWorker, Failure> {
    store.all_tenants("worker")?;
    let ceilings = ceilings(args)?;
    let tasks = Arc::new(open_runner(store, args.secrets_file.as_deref()).await?);
    let concurrency = args
        .concurrency
        .unwrap_or_else(FlowRunner::default_concurrency);
    let flows = Arc::new(FlowRunner::new(tasks.clone(), concurrency));
    let mut config = WorkerConfig::named_after_this_process(concurrency);
    if let Some(name) = &args.name {
        config.name = name.clone();
    }
    config.tags = args.tags.clone();
    config.ceilings = ceilings;
    config.lease = args.lease.max(Duration::from_millis(300));
    config.drives_flows = !args.no_flows;
    let name = config.name.clone();
    let serving = match config.tags.is_empty() {
        true => "any tags".to_owned(),
        false => format!("tags {}", config.tags.join(", ")),
    };
    let worker = Worker::new(flows.clone(), config);
    tasks.observer().worker(
        &name,
        &format!(
            "started on {store}: {concurrency} task runs at once, {serving}, lease {} s",
            args.lease.as_secs_f64()
        ),
    );
    Ok(ReadyWorker {
        flows,
        worker,
        name,
        grace: args.grace,
    })
}

impl ReadyWorker {
    /// Claims and runs work until `stop` is cancelled, then winds down.
    pub(crate) async fn run(self, stop: CancelToken) -> Result<(), Failure> {
        let summary = self
            .worker
            .run(stop, self.grace)
            .await
            .map_err(Failure::internal)?;
        self.flows.tasks().observer().worker(
            &self.name,
            &format!(
                "stopped: {} task-run claims, {} flow-run claims, {} given back, {} leases lost",
                summary.task_claims, summary.flow_claims, summary.handed_back, summary.leases_lost
            ),
        );
        Ok(())
    }
}

pub(crate) async fn run(store: &StoreLocation, args: WorkerArgs) -> Result<u8, Failure> {
    let stop = CancelToken::new();
    // Watched before the worker says it started, so that a signal from then on stops it.
    let _interrupts = crate::interrupt::Interrupts::watch_with("stopping the worker", {
        let stop = stop.clone();
        move |reason| stop.cancel(reason)
    });
    let worker = prepare(store, &args).await?;
    worker.run(stop).await?;
    Ok(0)
}

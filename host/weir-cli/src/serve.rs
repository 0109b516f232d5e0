//! `weir serve`: the HTTP API and the web UI over a store, and (unless `--no-worker`) a
//! worker that runs what is submitted, so that `weir serve` alone is a whole
//! single-machine installation. Stops on SIGTERM or Ctrl-C: the server stops accepting,
//! the worker lets what it holds finish for its grace period.

use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use weir_runner::{CancelToken, FlowRunner};

use crate::Failure;
use crate::store::StoreLocation;
use crate::worker::WorkerArgs;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum AuthArg {
    Auto,
    Tokens,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// The address to listen on. Beyond loopback, an API token is required.
    #[arg(long, default_value = weir_server::DEFAULT_BIND)]
    bind: SocketAddr,
    /// A file holding the API token every call must bear (`Authorization: Bearer …`).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// A directory of flow files (`*.toml`) the API lists and can run (repeatable), for
    /// the default tenant.
    #[arg(long = "flows", value_name = "DIR")]
    flow_dirs: Vec<PathBuf>,
    /// A directory whose subdirectory NAME holds the flow files of tenant NAME.
    #[arg(long, value_name = "DIR")]
    tenant_flows: Option<PathBuf>,
    /// `tokens`: every API call needs a token (`weir token create`), even before any
    /// tenant but the default exists. By default one is needed once one does.
    #[arg(long, value_enum, default_value = "auto")]
    auth: AuthArg,
    /// The largest plugin an upload may carry.
    #[arg(long, default_value = "256MiB", value_parser = size)]
    max_plugin_size: u64,
    /// Serve only: run no work here (workers elsewhere run what is submitted).
    #[arg(long)]
    no_worker: bool,
    #[command(flatten)]
    worker: WorkerArgs,
}

fn size(text: &str) -> Result<u64, String> {
    weir_core::parse_size(text)
}

fn read_token(path: &PathBuf) -> Result<String, Failure> {
    let text = fs_err::read_to_string(path).map_err(Failure::usage)?;
    let token = text.trim().to_owned();
    if token.is_empty() {
        return Err(Failure::usage(anyhow::anyhow!(
            "the token file {} is empty",
            path.display()
        )));
    }
    Ok(token)
}

pub(crate) async fn run(store: &StoreLocation, args: ServeArgs) -> Result<u8, Failure> {
    store.all_tenants("serve")?;
    let config = weir_server::ServerConfig {
        bind: args.bind,
        token: args.token_file.as_ref().map(read_token).transpose()?,
        flow_dirs: args.flow_dirs.clone(),
        tenant_flows: args.tenant_flows.clone(),
        auth: match args.auth {
            AuthArg::Auto => weir_server::AuthMode::Auto,
            AuthArg::Tokens => weir_server::AuthMode::Tokens,
        },
        max_plugin_bytes: usize::try_from(args.max_plugin_size).unwrap_or(usize::MAX),
        runs_work: !args.no_worker,
    };
    config.check().map_err(Failure::usage)?;
    let stop = CancelToken::new();
    let _interrupts = crate::interrupt::Interrupts::watch_with("stopping the server", {
        let stop = stop.clone();
        move |reason| stop.cancel(reason)
    });
    let (flows, worker) = if args.no_worker {
        let tasks =
            Arc::new(crate::task_run::open_runner(store, args.worker.secrets_file()).await?);
        let concurrency = FlowRunner::default_concurrency();
        (Arc::new(FlowRunner::new(tasks, concurrency)), None)
    } else {
        let worker = crate::worker::prepare(store, &args.worker).await?;
        (worker.flows.clone(), Some(worker))
    };
    let server = weir_server::Server::new(flows.clone(), config).map_err(Failure::usage)?;
    let listener = server.bind().await.map_err(Failure::usage)?;
    let address = listener.local_addr().map_err(Failure::internal)?;
    crate::terminal::TerminalObserver::stderr().note(
        "Server",
        &format!(
            "serving the API and the UI of {store} at http://{address}/ (API: http://{address}/api/v1/openapi.json)"
        ),
    );
    let shutdown = {
        let stop = stop.clone();
        async move {
            stop.cancelled().await;
        }
    };
    let serving = tokio::spawn(server.serve(listener, shutdown));
    if let Some(worker) = worker {
        worker.run(stop.clone()).await?;
    }
    let served = serving.await.map_err(Failure::internal)?;
    served.map_err(Failure::internal)?;
    Ok(0)
}

//! weir's HTTP server: the JSON API under `/api/v1` (described by the OpenAPI document at
//! `/api/v1/openapi.json`), live run events over Server-Sent Events, and the web UI,
//! over any store.
//!
//! The server reads and writes through the same role traits and views as the CLI
//! (`weir_runner::views`), and submits flow runs to the store's queue; whoever runs work
//! (`weir serve` itself unless `--no-worker`, or `weir worker` processes) runs them.
//!
//! ```no_run
//! # async fn example(flows: std::sync::Arc<weir_runner::FlowRunner>) -> anyhow::Result<()> {
//! let server = weir_server::Server::new(flows, weir_server::ServerConfig::default())?;
//! let listener = server.bind().await?;
//! server.serve(listener, std::future::pending()).await?;
//! # Ok(()) }
//! ```
//!
//! ```
//! // Bound beyond loopback, the server needs a token.
//! let config = weir_server::ServerConfig {
//!     bind: "0.0.0.0:4200".parse().unwrap(),
//!     ..Default::default()
//! };
//! assert!(config.check().is_err());
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use weir_runner::FlowRunner;
use weir_store::Store;

pub mod api;
mod catalog;
mod counts;
mod error;
mod extract;
mod feed;
mod tenancy;
mod ui;

pub use catalog::{CatalogEntry, FlowCatalog};
pub use error::{ApiError, ErrorBody};
pub use tenancy::{AuthMode, TOKEN_RECHECK, needed_scope};

/// The default address: loopback, on Prefect's port, where a Prefect user looks for the UI.
pub const DEFAULT_BIND: &str = "127.0.0.1:4200";
/// The default bound on an uploaded plugin.
pub const DEFAULT_MAX_PLUGIN_BYTES: usize = 256 << 20;

/// How the server is set up.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub bind: SocketAddr,
    /// The API token every call must bear (`Authorization: Bearer …`); required when
    /// `bind` is not a loopback address.
    pub token: Option<String>,
    /// Directories whose `*.toml` flow files the API lists and can run, for the
    /// default tenant.
    pub flow_dirs: Vec<PathBuf>,
    /// A directory whose subdirectory `NAME/` holds tenant NAME's flow files.
    pub tenant_flows: Option<PathBuf>,
    /// When calls need a token (see [`AuthMode`]).
    pub auth: AuthMode,
    /// The largest plugin an upload may carry.
    pub max_plugin_bytes: usize,
    /// Whether this process also runs work (it then resumes runs itself).
    pub runs_work: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: DEFAULT_BIND.parse().expect("the default address parses"),
            token: None,
            flow_dirs: Vec::new(),
            tenant_flows: None,
            auth: AuthMode::Auto,
            max_plugin_bytes: DEFAULT_MAX_PLUGIN_BYTES,
            runs_work: true,
        }
    }
}

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "refusing to listen on {0} without an API token: anyone who can reach it could run code; give a token with --token-file FILE, ask for store tokens with --auth tokens, or bind to 127.0.0.1"
    )]
    NoToken(SocketAddr),
    #[error("the API token is empty")]
    EmptyToken,
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl ServerConfig {
    /// Checks that the server may start as set up.
    pub fn check(&self) -> Result<(), ServerError> {
        match &self.token {
            Some(token) if token.trim().is_empty() => Err(ServerError::EmptyToken),
            None if !self.bind.ip().is_loopback() && self.auth != AuthMode::Tokens => {
                Err(ServerError::NoToken(self.bind))
            }
            _ => Ok(()),
        }
    }
}

/// What the handlers of one tenant's calls share: its tenant's store handle, runner,
/// change feed and flows (see `tenancy`).
pub(crate) struct AppState {
    pub flows: Arc<FlowRunner>,
    pub store: Arc<dyn Store>,
    pub config: ServerConfig,
    pub catalog: FlowCatalog,
    pub feed: feed::Feed,
    /// Keyed by flow run id, which no two tenants share.
    pub counts: Arc<counts::EndedCounts>,
}

impl AppState {
    pub fn clock(&self) -> &dyn weir_core::Clock {
        self.flows.tasks().clock().as_ref()
    }

    /// The quotas and grant ceilings of this view's tenant, as they are now.
    pub async fn settings(&self) -> Result<weir_store::TenantSettings, ApiError> {
        Ok(self
            .store
            .tenant_record(self.store.tenant_id())
            .await?
            .map(|tenant| weir_store::TenantSettings {
                quotas: tenant.quotas,
                ceilings: tenant.ceilings,
            })
            .unwrap_or_default())
    }

    /// The same server as `tenant`, with that tenant's flows.
    fn for_tenant(&self, tenant: &weir_core::TenantId, catalog: FlowCatalog) -> AppState {
        let flows = Arc::new(self.flows.for_tenant(tenant));
        let store = flows.tasks().store().clone();
        AppState {
            feed: feed::Feed::new(store.clone()),
            store,
            flows,
            config: self.config.clone(),
            catalog,
            counts: self.counts.clone(),
        }
    }
}

/// The server: build it, bind it, serve until a shutdown signal.
pub struct Server {
    state: Arc<AppState>,
    tenancy: Arc<tenancy::Tenancy>,
}

impl Server {
    pub fn new(flows: Arc<FlowRunner>, config: ServerConfig) -> Result<Self, ServerError> {
        config.check()?;
        let store = flows.tasks().store().clone();
        let state = Arc::new(AppState {
            catalog: FlowCatalog::new(config.flow_dirs.clone()),
            feed: feed::Feed::new(store.clone()),
            counts: Default::default(),
            store,
            flows,
            config,
        });
        Ok(Server {
            tenancy: Arc::new(tenancy::Tenancy::new(state.clone())),
            state,
        })
    }

    /// Every route: the API, the UI and its assets.
    pub fn router(&self) -> axum::Router {
        let api = api::router(self.state.clone());
        let api = tenancy::guard(api, self.tenancy.clone());
        axum::Router::new().nest("/api/v1", api).merge(ui::router())
    }

    /// Listens on the configured address.
    pub async fn bind(&self) -> Result<tokio::net::TcpListener, ServerError> {
        let address = self.state.config.bind;
        tokio::net::TcpListener::bind(address)
            .await
            .map_err(|source| ServerError::Bind { address, source })
    }

    /// Serves until `shutdown` completes; then stops accepting, ends the live event
    /// streams, and lets requests in flight finish (for up to [`DRAIN`]).
    ///
    /// Connections are served by hyper directly rather than `axum::serve`, for a bound
    /// on how long a client may take to send its request's head ([`HEADER_TIMEOUT`]):
    /// without one, a client that sends half a request holds its connection forever.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let router = self.router();
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = &mut shutdown => break,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, most often: wait for some to close.
                    tracing::warn!("accepting a connection: {error}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let service = hyper_util::service::TowerToHyperService::new(router.clone());
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES);
            let connection =
                builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!("a connection ended: {error}");
                }
            });
        }
        drop(listener);
        for view in self.tenancy.views() {
            view.feed.close();
        }
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(DRAIN) => {}
        }
        Ok(())
    }
}

/// How long a client may take to send a request's line and headers.
pub const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The largest request head (line and headers) read.
pub const MAX_HEAD_BYTES: usize = 64 << 10;
/// How long requests in flight may finish once the server stops.
pub const DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

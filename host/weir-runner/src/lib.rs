//! weir's task runner: turns one request to run a task into a recorded task run,
//! with Prefect's semantics: states and their history, retries with delays and
//! jitter, timeouts, result caching with expiration and refresh, and logs.
//!
//! It drives the sandbox (`weir-runtime`) one attempt at a time and writes every
//! state change, log line and result to a [`Store`](weir_store::Store) as it
//! happens. What a person watching sees (created, logs, state changes) goes to a
//! [`RunObserver`], which the command line turns into Prefect-style lines.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::sync::Arc;
//! use weir_core::{SystemClock, TaskOverrides};
//! use weir_runner::{SilentObserver, TaskRequest, TaskRunner};
//! use weir_runtime::{Runtime, RuntimeConfig};
//! use weir_store_sqlite::SqliteStore;
//!
//! let runtime = Arc::new(Runtime::new(RuntimeConfig::default())?);
//! let store = Arc::new(SqliteStore::open(".weir".as_ref())?);
//! let runner = TaskRunner::new(runtime.clone(), store, Arc::new(SystemClock), Arc::new(SilentObserver));
//! let plugin = runner.load_plugin("hello.wasm".as_ref()).await?;
//! let run = runner
//!     .run_task(TaskRequest::new(plugin, "hello", serde_json::json!({"name": "world"})))
//!     .await?;
//! println!("{} ended {} with {:?}", run.name, run.state, run.output);
//! # Ok(()) }
//! ```

mod cancel;
mod cancelling;
mod flow;
mod logs;
mod naming;
mod observer;
mod owner;
mod runner;
mod secrets;
mod slots;
pub mod views;
pub mod waiting;
mod work;
mod worker;

pub use cancel::CancelToken;
pub use cancelling::{CancelOutcome, cancel_run};
pub use flow::{
    ClaimedFlow, FlowRunError, FlowRunOutcome, FlowRunner, SubmittedRun, grants_beyond, graph_of,
};
pub use observer::{FlowRunLabel, RunLabel, RunObserver, SilentObserver};
pub use owner::{CANCEL_POLL, HEARTBEAT, STALE_AFTER, live_owner, owner_gone, reap_orphans};
pub use runner::{
    ClaimedEnd, ClaimedTask, FlowRunRef, HAND_BACK, LEASE_LOST, RunnerError, TaskRequest,
    TaskRunOutcome, TaskRunner,
};
pub use secrets::load_secrets;
pub use worker::{Worker, WorkerConfig, WorkerSummary, default_name, first_beyond, grants_cover};

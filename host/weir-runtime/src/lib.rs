//! weir's sandbox: loads task plugins (WebAssembly components of the `weir:task`
//! world) and runs one attempt of one task at a time, bounded in memory, time and
//! output, with no authority beyond what it is given.
//!
//! One [`Runtime`] per process owns the wasmtime `Engine` (component model, async,
//! epoch interruption, pooling allocator), the ticker thread that advances epochs, and
//! the on-disk cache of compiled components. A [`Plugin`] is a loaded component: its
//! digest, its tasks' metadata and a pre-linked instance. Every attempt gets a fresh
//! wasmtime `Store`, so nothing leaks from one run to the next.
//!
//! Retries, caching and states are the task runner's job (`weir-runner`); this crate
//! reports what one attempt did as an [`AttemptOutcome`].
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::sync::Arc;
//! use weir_runtime::{AttemptSpec, AttemptOutcome, Runtime, RuntimeConfig, StderrLogSink};
//!
//! let runtime = Runtime::new(RuntimeConfig::default())?;
//! let plugin = runtime.load_plugin_file("hello.wasm".as_ref()).await?;
//! let spec = AttemptSpec::new("hello", r#"{"name":"world"}"#, Arc::new(StderrLogSink));
//! match runtime.run_attempt(&plugin, spec).await {
//!     AttemptOutcome::Completed { output } => println!("{output}"),
//!     other => eprintln!("{other:?}"),
//! }
//! # Ok(()) }
//! ```

mod attempt;
mod bindings;
mod output;
mod plugin;
mod runtime;
mod sandbox;

pub use attempt::{AttemptOutcome, AttemptSpec, CrashKind};
pub use output::{LogSink, StderrLogSink};
pub use plugin::{LoadError, Plugin};
pub use runtime::{Runtime, RuntimeConfig};
pub use sandbox::{HTTP_FIELDS_LIMIT_BYTES, resource_limit};

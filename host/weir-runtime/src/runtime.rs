//! The process-wide engine, linker, epoch ticker and compiled-component cache.

use anyhow::Context as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::bindings;
use crate::sandbox::AttemptState;

/// How the runtime is set up; one per process.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled components are kept between processes; `None` compiles every time.
    pub compiled_cache_dir: Option<PathBuf>,
    /// How often the epoch advances: the granularity of timeouts and of yielding.
    pub epoch_tick: Duration,
    /// The most memory any one task may be allowed (a per-task limit above this is refused).
    pub max_memory_bytes: u64,
    /// Bytes of log lines and printed output kept per attempt.
    pub log_limit_bytes: usize,
    /// The largest HTTP response body a task may receive.
    pub max_http_response_bytes: usize,
    /// Reserve instance slots up front (fast instantiation); off falls back to on-demand allocation.
    pub pooling: bool,
    /// Slots in the pool: the most component instances alive at once.
    pub pool_instances: u32,
    /// How long a plugin's `info()` may take when it loads.
    pub info_timeout: Duration,
    /// How long a plugin's own `cache-key` may take; one that times out is not asked
    /// again in this process (its task runs without cache).
    pub cache_key_timeout: Duration,
    /// The largest output (JSON text) a task may return.
    pub max_output_bytes: usize,
    /// The most JSON values (numbers, strings, items…) an output may hold: parsing
    /// costs tens of bytes of host memory per value, whatever its size in the text.
    pub max_output_values: usize,
    /// Bytes of an error message kept from a task (the rest is cut, and says so).
    pub max_message_bytes: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            compiled_cache_dir: None,
            epoch_tick: Duration::from_millis(10),
            max_memory_bytes: 4 << 30,
            log_limit_bytes: 1 << 20,
            max_http_response_bytes: 64 << 20,
            pooling: true,
            pool_instances: 256,
            info_timeout: Duration::from_secs(10),
            cache_key_timeout: Duration::from_secs(2),
            max_output_bytes: 16 << 20,
            max_output_values: 2_000_000,
            max_message_bytes: 16 << 10,
        }
    }
}

/// The sandbox host: compiles and loads plugins and runs attempts. Cheap to share
/// behind an `Arc`; every method takes `&self`.
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<AttemptState>,
    pub(crate) config: RuntimeConfig,
    ticker_stop: Arc<AtomicBool>,
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> anyhow::Result<Self> {
        let engine = build_engine(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)
            .context("adding WASI to the linker")?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)
            .context("adding WASI HTTP to the linker")?;
        bindings::Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(anyhow::Error::from)
            .context("adding the weir host interface to the linker")?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        spawn_epoch_ticker(engine.clone(), config.epoch_tick, ticker_stop.clone())?;
        Ok(Runtime {
            engine,
            linker,
            config,
            ticker_stop,
        })
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// The wasmtime engine, for embedders that want to compare with a bare call.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

fn build_engine(config: &RuntimeConfig) -> anyhow::Result<Engine> {
    let mut wasm_config = Config::new();
    wasm_config
        .wasm_component_model(true)
        .epoch_interruption(true)
        // Fuel is always metered so that a per-task fuel limit needs no second engine;
        // tasks without a limit get u64::MAX.
        .consume_fuel(true)
        .max_wasm_stack(1 << 20)
        .async_stack_size(4 << 20);
    if config.pooling {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(config.pool_instances)
            .total_core_instances(config.pool_instances * 8)
            .total_memories(config.pool_instances * 2)
            .total_tables(config.pool_instances * 4)
            .total_stacks(config.pool_instances)
            .max_memory_size(config.max_memory_bytes as usize)
            // Interpreters compiled to components (Python, JavaScript) have many core
            // instances and large tables.
            .max_core_instances_per_component(64)
            .max_memories_per_component(8)
            .max_tables_per_component(16)
            .max_component_instance_size(1 << 20)
            .max_core_instance_size(1 << 20)
            // Returning a slot with madvise costs a TLB shootdown on every other core
            // the process runs on; scanning for dirty pages and rewriting only those
            // keeps memory resident and skips the system call (Linux 6.7+, else madvise).
            .pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(16 << 20)
            .table_keep_resident(1 << 20)
            .async_stack_keep_resident(512 << 10)
            .decommit_batch_size(16);
        wasm_config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    Engine::new(&wasm_config)
        .map_err(anyhow::Error::from)
        .context("creating the wasmtime engine")
}

/// Advances the engine's epoch every `tick` until `stop` is set. Each running
/// attempt yields (and checks its deadline) at every tick.
fn spawn_epoch_ticker(engine: Engine, tick: Duration, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("weir-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                engine.increment_epoch();
            }
        })
        .context("starting the epoch ticker thread")?;
    Ok(())
}

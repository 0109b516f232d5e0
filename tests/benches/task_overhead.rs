//! Per-task overhead of weir against a bare wasmtime instantiate+call of the same
//! component, and the cost of a cache hit, measured in one run.
//!
//! Run with `cargo bench -p weir-tests --bench task_overhead` (add `-- --quick` for a
//! smoke run, `-- --weir-only` to profile weir without the bare rows). Figures are
//! recorded in BENCHMARKS.md.

use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use weir_core::{State, SystemClock};
use weir_runner::{SilentObserver, TaskRequest, TaskRunner};
use weir_runtime::{AttemptOutcome, AttemptSpec, LogSink, Runtime, RuntimeConfig};
use weir_store_sqlite::SqliteStore;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "weir:task/plugin",
});

/// The least a host must do to call the task: WASI with nothing granted, a host
/// interface that ignores logs.
struct BareState {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for BareState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl weir::task::types::Host for BareState {}

impl weir::task::host::Host for BareState {
    fn log(&mut self, _level: weir::task::types::LogLevel, _message: String) {}

    fn context(&mut self) -> weir::task::types::RunContext {
        weir::task::types::RunContext {
            flow_run_id: None,
            flow_run_name: None,
            task_run_id: String::new(),
            task_run_name: String::new(),
            task_name: String::new(),
            attempt: 1,
            tags: Vec::new(),
            parameters: "{}".into(),
        }
    }
}

struct SilentSink;

impl LogSink for SilentSink {
    fn log(&self, _level: weir_core::LogLevel, _message: &str) {}
}

/// Mean time per iteration of `body`, after a warm-up, including one `finish` at the end.
fn measure(iterations: u32, mut body: impl FnMut(), finish: impl Fn()) -> Duration {
    for _ in 0..iterations / 10 {
        body();
    }
    finish();
    let started = Instant::now();
    for _ in 0..iterations {
        body();
    }
    finish();
    started.elapsed() / iterations
}

#[derive(Clone, Copy)]
enum Allocator {
    OnDemand,
    Pooling,
    /// Pooling with the settings weir uses: dirty pages found by PAGEMAP_SCAN and
    /// rewritten in place instead of returned with madvise.
    PoolingKeepResident,
}

fn bare_call(allocator: Allocator, bytes: &[u8], iterations: u32) -> Duration {
    let mut config = Config::new();
    config.wasm_component_model(true);
    match allocator {
        Allocator::OnDemand => {}
        Allocator::Pooling => {
            config.allocation_strategy(InstanceAllocationStrategy::pooling());
        }
        Allocator::PoolingKeepResident => {
            let mut pool = wasmtime::PoolingAllocationConfig::default();
            pool.pagemap_scan(wasmtime::Enabled::Auto)
                .linear_memory_keep_resident(16 << 20)
                .table_keep_resident(1 << 20);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
    }
    let engine = Engine::new(&config).unwrap();
    let component = Component::new(&engine, bytes).unwrap();
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
    Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state).unwrap();
    let pre = PluginPre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
    measure(
        iterations,
        || {
            let mut store = Store::new(
                &engine,
                BareState {
                    wasi: WasiCtx::builder().build(),
                    table: ResourceTable::new(),
                },
            );
            let plugin = pre.instantiate(&mut store).unwrap();
            let output = plugin
                .weir_task_task()
                .call_run(&mut store, "add", r#"{"a":1,"b":2}"#)
                .unwrap()
                .unwrap();
            assert_eq!(output, "3");
        },
        || {},
    )
}

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    // For profiling weir alone: skips the bare rows (and their compilations).
    let weir_only = std::env::args().any(|arg| arg == "--weir-only");
    let iterations = if quick { 50 } else { 3000 };
    let path = weir_tests::plugin_path("arith");
    let bytes = std::fs::read(&path).unwrap();

    let bare_row = |allocator| {
        if weir_only {
            Duration::from_nanos(1)
        } else {
            bare_call(allocator, &bytes, iterations)
        }
    };
    let bare_on_demand = bare_row(Allocator::OnDemand);
    let bare_pooling = bare_row(Allocator::Pooling);
    let bare_resident = bare_row(Allocator::PoolingKeepResident);
    let bare = bare_on_demand.min(bare_pooling).min(bare_resident);

    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let runtime = Arc::new(Runtime::new(RuntimeConfig::default()).unwrap());
    let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let runner = TaskRunner::new(
        runtime.clone(),
        store,
        Arc::new(SystemClock),
        Arc::new(SilentObserver),
    );
    let plugin = tokio.block_on(runtime.load_plugin_file(&path)).unwrap();

    let sandbox_only = measure(
        iterations,
        || {
            let spec = AttemptSpec::new("add", r#"{"a":1,"b":2}"#, Arc::new(SilentSink));
            let outcome = tokio.block_on(runtime.run_attempt(&plugin, spec));
            assert!(
                matches!(outcome, AttemptOutcome::Completed { .. }),
                "{outcome:?}"
            );
        },
        || {},
    );
    let run = |task: &str, input: serde_json::Value, expected: State| {
        let request = TaskRequest::new(plugin.clone(), task, input);
        let outcome = tokio.block_on(runner.run_task(request)).unwrap();
        assert_eq!(outcome.state, expected, "{outcome:?}");
    };
    // Each measurement ends with a flush, so the history is committed, not just queued.
    let flush = || runner.store().flush().unwrap();
    let end_to_end = measure(
        iterations,
        || run("add", json!({"a": 1, "b": 2}), State::Completed),
        flush,
    );
    run("cached-add", json!({"a": 1, "b": 2}), State::Completed);
    let cache_hit = measure(
        iterations,
        || run("cached-add", json!({"a": 1, "b": 2}), State::Cached),
        flush,
    );

    let micros = |duration: Duration| duration.as_secs_f64() * 1e6;
    println!("task_overhead: {iterations} iterations each, plugin arith (task add)");
    println!("{:<58} {:>10}", "measure", "µs/task");
    println!(
        "{:<58} {:>10.1}",
        "bare wasmtime instantiate+call (default allocator)",
        micros(bare_on_demand)
    );
    println!(
        "{:<58} {:>10.1}",
        "bare wasmtime instantiate+call (pooling allocator)",
        micros(bare_pooling)
    );
    println!(
        "{:<58} {:>10.1}",
        "bare wasmtime instantiate+call (pooling, keep resident)",
        micros(bare_resident)
    );
    println!(
        "{:<58} {:>10.1}",
        "weir sandbox attempt only (async, epochs, fuel, limits)",
        micros(sandbox_only)
    );
    println!(
        "{:<58} {:>10.1}",
        "weir task run, end to end, history in SQLite",
        micros(end_to_end)
    );
    println!(
        "{:<58} {:>10.1}",
        "weir cache hit, end to end, recorded in SQLite",
        micros(cache_hit)
    );
    println!(
        "ratio weir / fastest bare call: {:.2}x (target within 3x); weir under 100 µs: {}; cache hit under 20 µs: {}",
        micros(end_to_end) / micros(bare),
        micros(end_to_end) < 100.0,
        micros(cache_hit) < 20.0
    );
}

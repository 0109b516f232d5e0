//! Per-task overhead of weir against a bare wasmtime instantiate+call of the same
//! component, and the cost of a cache hit, measured in one run.
//!
//! Run with `cargo bench -p weir-tests --bench task_overhead` (add `-- --quick` for a
//! smoke run, `-- --weir-only` to profile weir without the bare rows). Figures are
//! recorded in BENCHMARKS.md.

use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use weir_core::{State, SystemClock};
use weir_runner::{SilentObserver, TaskRequest, TaskRunner};
use weir_runtime::{AttemptOutcome, AttemptSpec, LogSink, Runtime, RuntimeConfig};
use weir_store_sqlite::SqliteStore;
use weir_tests::bare::{Allocator, bare_call, measure};

struct SilentSink;

impl LogSink for SilentSink {
    fn log(&self, _level: weir_core::LogLevel, _message: &str) {}
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
            bare_call(allocator, &bytes, "add", r#"{"a":1,"b":2}"#, iterations)
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
    let flush = || tokio.block_on(runner.store().flush()).unwrap();
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

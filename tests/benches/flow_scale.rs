//! Flows at scale, measured in one run: a map of 10,000 trivial tasks (time per task run
//! with its history recorded, and peak memory), a map of 100,000 (it completes; memory
//! grows at most linearly), and 20 tasks of 0.2 s under a tag concurrency limit of 2.
//!
//! Run with `cargo bench -p weir-tests --bench flow_scale` (`-- --quick` for a smoke run).
//! Figures are recorded in BENCHMARKS.md.

use serde_json::Map;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_core::{Clock, State, SystemClock};
use weir_runner::{FlowRunner, SilentObserver, TaskRunner};
use weir_runtime::{Runtime, RuntimeConfig};
use weir_store::{Leases as _, Recorder as _};
use weir_store_sqlite::SqliteStore;
use weir_tests::shapes::{map_of_adds, memory_mib, tagged_sleepers};

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let (small, large) = if quick {
        (200, 1000)
    } else {
        (10_000, 100_000)
    };
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let runtime = Arc::new(Runtime::new(RuntimeConfig::default()).unwrap());
    // Each scenario gets a fresh store, so none pays for another's checkpoints.
    let fresh = |dir: &tempfile::TempDir| {
        let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let tasks = Arc::new(TaskRunner::new(
            runtime.clone(),
            store.clone(),
            Arc::new(SystemClock),
            Arc::new(SilentObserver),
        ));
        (
            store,
            Arc::new(FlowRunner::new(tasks, FlowRunner::default_concurrency())),
        )
    };
    let (limit_dir, map_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (limit_store, limit_flows) = fresh(&limit_dir);
    let (store, flows) = fresh(&map_dir);

    // 20 tasks of 0.2 s under a limit of 2 on their tag, after a warm-up run that
    // compiles the plugin.
    tokio
        .block_on(limit_store.set_concurrency_limit("db", 2, SystemClock.now()))
        .unwrap();
    tokio
        .block_on(limit_flows.run_flow(&tagged_sleepers(2, 1), &Map::new()))
        .unwrap();
    let started = Instant::now();
    let outcome = tokio
        .block_on(limit_flows.run_flow(&tagged_sleepers(20, 200), &Map::new()))
        .unwrap();
    let limited = started.elapsed();
    assert_eq!(outcome.state, State::Completed, "{outcome:?}");

    // Warm up the map: compile the plugin, fill the pool.
    tokio
        .block_on(flows.run_flow(&map_of_adds(100), &Map::new()))
        .unwrap();
    let (baseline_rss, _) = memory_mib();

    let measure_map = |count: usize| {
        let flow = map_of_adds(count);
        let started = Instant::now();
        let outcome = tokio.block_on(flows.run_flow(&flow, &Map::new())).unwrap();
        tokio.block_on(store.flush()).unwrap();
        let elapsed = started.elapsed();
        assert_eq!(outcome.state, State::Completed, "{outcome:?}");
        assert_eq!(outcome.output, None);
        let (rss, peak) = memory_mib();
        (elapsed, rss, peak)
    };
    let (small_time, small_rss, small_peak) = measure_map(small);
    let (large_time, large_rss, large_peak) = measure_map(large);

    let per_task = |elapsed: Duration, count: usize| elapsed.as_secs_f64() * 1e6 / count as f64;
    println!(
        "flow_scale: a map of trivial tasks (arith add), history recorded in SQLite, default concurrency"
    );
    println!("{:<52} {:>12}", "measure", "value");
    println!(
        "{:<52} {:>9.1} µs",
        format!("map of {small}: time per task run"),
        per_task(small_time, small)
    );
    println!(
        "{:<52} {:>9.2} s",
        format!("map of {small}: total"),
        small_time.as_secs_f64()
    );
    println!(
        "{:<52} {:>9.1} µs",
        format!("map of {large}: time per task run"),
        per_task(large_time, large)
    );
    println!(
        "{:<52} {:>9.2} s",
        format!("map of {large}: total"),
        large_time.as_secs_f64()
    );
    println!(
        "{:<52} {:>8.0} MiB",
        "resident memory after warm-up", baseline_rss
    );
    println!(
        "{:<52} {:>8.0} MiB",
        format!("resident after the {small} map (peak {small_peak:.0})"),
        small_rss
    );
    println!(
        "{:<52} {:>8.0} MiB",
        format!("resident after the {large} map (peak {large_peak:.0})"),
        large_rss
    );
    println!(
        "{:<52} {:>9.2} s",
        "20 tasks of 0.2 s under a tag limit of 2: total",
        limited.as_secs_f64()
    );
    println!(
        "targets: under 100 µs per task: {}; peak under 200 MiB at {small}: {}; 20 × 0.2 s / 2 under 2.5 s: {}",
        per_task(small_time, small) < 100.0,
        small_peak < 200.0,
        limited < Duration::from_millis(2500)
    );
}

//! How fast a plugin starts, by language: the first start compiles the component to native code
//! (and stores it), the second loads the stored code. Python and JavaScript components embed
//! their interpreter (CPython, SpiderMonkey), so their first start is long and the cache is what
//! makes later ones quick. Also: a fresh `weir task run` process with a warm cache, and the time
//! per task run once loaded.
//!
//! Run with `cargo bench -p weir-tests --bench plugin_start` (`-- --quick` for a smoke run).
//! Figures are recorded in BENCHMARKS.md.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_core::{State, SystemClock};
use weir_runner::{SilentObserver, TaskRequest, TaskRunner};
use weir_runtime::{Runtime, RuntimeConfig};
use weir_store_sqlite::SqliteStore;

/// (language, plugin, task, input): a trivial task of each language.
const PLUGINS: [(&str, &str, &str, &str); 3] = [
    ("Rust", "hello", "hello", r#"{"name": "weir"}"#),
    ("Python", "pydemo", "word-stats", r#"{"text": "a b c"}"#),
    ("JavaScript", "jsdemo", "shout", r#"{"text": "abc"}"#),
];

fn runtime(cache: &Path) -> Arc<Runtime> {
    Arc::new(
        Runtime::new(RuntimeConfig {
            compiled_cache_dir: Some(cache.to_owned()),
            ..Default::default()
        })
        .unwrap(),
    )
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1e3)
}

/// Minor page faults of this process so far (/proc/self/stat field 10).
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
    after_name
        .split_whitespace()
        .nth(7)
        .and_then(|field| field.parse().ok())
        .unwrap_or(0)
}

fn us(duration: Duration) -> String {
    format!("{:.0} µs", duration.as_secs_f64() * 1e6)
}

/// Wall time of one `weir task run` process, from spawn to exit.
fn process_run(store: &Path, plugin: &Path, task: &str, input: &str) -> Duration {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_weir-under-test"))
        .arg("--store")
        .arg(store)
        .args(["task", "run"])
        .arg(plugin)
        .args(["--task", task, "--input", input])
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    elapsed
}

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let runs = if quick { 3 } else { 200 };
    let processes = if quick { 1 } else { 10 };
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("plugin start, by language ({runs} task runs, {processes} processes each)");
    println!(
        "| language | component | first start (compile) | second start (cached) | `weir task run` process, cached | per task run, loaded |"
    );
    println!("|---|---|---|---|---|---|");
    for (language, name, task, input) in PLUGINS {
        let path = weir_tests::plugin_path(name);
        let size = std::fs::metadata(&path).unwrap().len();
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("compiled");

        // Each start gets a new runtime (a new engine), as a new process would.
        let started = Instant::now();
        tokio
            .block_on(runtime(&cache).load_plugin_file(&path))
            .unwrap();
        let first = started.elapsed();
        let second_runtime = runtime(&cache);
        let started = Instant::now();
        let plugin = tokio
            .block_on(second_runtime.load_plugin_file(&path))
            .unwrap();
        let second = started.elapsed();

        // The CLI keeps its compiled cache in the store: warm it once, then time fresh processes.
        let store = dir.path().join("store");
        process_run(&store, &path, task, input);
        let process = (0..processes)
            .map(|_| process_run(&store, &path, task, input))
            .min()
            .unwrap();

        let store = Arc::new(SqliteStore::open(&dir.path().join("runs")).unwrap());
        let runner = TaskRunner::new(
            second_runtime,
            store,
            Arc::new(SystemClock),
            Arc::new(SilentObserver),
        );
        let input: serde_json::Value = serde_json::from_str(input).unwrap();
        let faults = minor_faults();
        let started = Instant::now();
        for _ in 0..runs {
            let outcome = tokio
                .block_on(runner.run_task(TaskRequest::new(plugin.clone(), task, input.clone())))
                .unwrap();
            assert_eq!(outcome.state, State::Completed, "{outcome:?}");
        }
        let per_run = started.elapsed() / runs;
        let faults_per_run = (minor_faults() - faults) / u64::from(runs);
        println!(
            "| {language} | {:.1} MB | {} | {} | {} | {} ({faults_per_run} page faults) |",
            size as f64 / 1e6,
            ms(first),
            ms(second),
            ms(process),
            us(per_run)
        );
    }
}

//! weir's side of the benchmark against Prefect (`bench/run`): one scenario per process, its
//! result as one JSON line on stdout. `--quick` runs tiny sizes (a smoke run).
//!
//!   weir-bench sequential|map|cache-hit|retries|timeout|limit|python [--quick]

use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_core::{Clock, State, SystemClock, TaskOverrides};
use weir_flow::Flow;
use weir_runner::{FlowRunner, SilentObserver, TaskRequest, TaskRunner};
use weir_runtime::{Runtime, RuntimeConfig};
use weir_store::{Leases as _, Recorder as _};
use weir_store_sqlite::SqliteStore;
use weir_tests::bare::{Allocator, bare_call};
use weir_tests::plugin_path;
use weir_tests::shapes::{chain, map_of_adds, memory_mib, tagged_sleepers};

struct Bench {
    tokio: tokio::runtime::Runtime,
    store: Arc<SqliteStore>,
    tasks: Arc<TaskRunner>,
    flows: Arc<FlowRunner>,
    plugins: std::sync::Mutex<std::collections::HashMap<String, weir_runtime::Plugin>>,
    _dir: tempfile::TempDir,
}

impl Bench {
    /// A fresh store in a temporary directory and a runtime compiling into `<target>/…`,
    /// so that compiling a plugin is paid once, not in the timed part.
    fn new() -> Self {
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let runtime = Arc::new(
            Runtime::new(RuntimeConfig {
                compiled_cache_dir: Some(
                    std::path::PathBuf::from(env!("OUT_DIR")).join("compiled"),
                ),
                ..Default::default()
            })
            .unwrap(),
        );
        let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let tasks = Arc::new(TaskRunner::new(
            runtime,
            store.clone(),
            Arc::new(SystemClock),
            Arc::new(SilentObserver),
        ));
        let flows = Arc::new(FlowRunner::new(
            tasks.clone(),
            FlowRunner::default_concurrency(),
        ));
        Bench {
            tokio,
            store,
            tasks,
            flows,
            plugins: Default::default(),
            _dir: dir,
        }
    }

    /// Runs `flow` to completion and returns how long it took, its history committed.
    fn run_flow(&self, flow: &Flow) -> Duration {
        let started = Instant::now();
        let outcome = self
            .tokio
            .block_on(self.flows.run_flow(flow, &Map::new()))
            .unwrap();
        self.tokio.block_on(self.store.flush()).unwrap();
        let elapsed = started.elapsed();
        assert_eq!(outcome.state, State::Completed, "{outcome:?}");
        elapsed
    }

    fn run_task(
        &self,
        plugin: &str,
        task: &str,
        input: Value,
        overrides: TaskOverrides,
    ) -> (State, Duration) {
        // Loaded once: the timed part is the run, as in a flow.
        let plugin = self
            .plugins
            .lock()
            .unwrap()
            .entry(plugin.to_owned())
            .or_insert_with(|| {
                self.tokio
                    .block_on(self.tasks.load_plugin(&plugin_path(plugin)))
                    .unwrap()
            })
            .clone();
        let started = Instant::now();
        let outcome = self
            .tokio
            .block_on(
                self.tasks
                    .run_task(TaskRequest::new(plugin, task, input).with_overrides(overrides)),
            )
            .unwrap();
        (outcome.state, started.elapsed())
    }
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|arg| arg == "--quick");
    let scenario = args
        .iter()
        .find(|arg| !arg.starts_with("--"))
        .cloned()
        .unwrap_or_default();
    let bench = Bench::new();
    let result = match scenario.as_str() {
        // 1. 1,000 sequential tasks in one flow, and the bare instantiate+call of the same task.
        "sequential" => {
            let count = if quick { 20 } else { 1000 };
            let add = |i: usize| json!({"a": i, "b": 1});
            bench.run_flow(&chain(count.min(50), "arith", "add", add));
            let elapsed = bench.run_flow(&chain(count, "arith", "add", add));
            let bytes = std::fs::read(plugin_path("arith")).unwrap();
            let bare = bare_call(
                Allocator::PoolingKeepResident,
                &bytes,
                "add",
                r#"{"a":1,"b":2}"#,
                count as u32,
            );
            json!({"tasks": count, "per_task_us": micros(elapsed) / count as f64, "bare_us": micros(bare)})
        }
        // 2. A map of 10,000 tasks.
        "map" => {
            let count = if quick { 100 } else { 10_000 };
            bench.run_flow(&map_of_adds(50));
            let elapsed = bench.run_flow(&map_of_adds(count));
            json!({"tasks": count, "per_task_us": micros(elapsed) / count as f64, "peak_rss_mib": memory_mib().1})
        }
        // 3. A cache hit.
        "cache-hit" => {
            let count = if quick { 20 } else { 1000 };
            let input = json!({"a": 1, "b": 2});
            assert_eq!(
                bench
                    .run_task(
                        "arith",
                        "cached-add",
                        input.clone(),
                        TaskOverrides::default()
                    )
                    .0,
                State::Completed
            );
            let started = Instant::now();
            for _ in 0..count {
                let (state, _) = bench.run_task(
                    "arith",
                    "cached-add",
                    input.clone(),
                    TaskOverrides::default(),
                );
                assert_eq!(state, State::Cached);
            }
            bench.tokio.block_on(bench.store.flush()).unwrap();
            json!({"tasks": count, "per_task_us": micros(started.elapsed()) / count as f64})
        }
        // 4. Fails twice, then succeeds, with 0-delay retries: the time per retry is the extra
        // time over a run that succeeds at once, halved.
        "retries" => {
            let repeats = if quick { 3 } else { 100 };
            let retrying = TaskOverrides {
                retries: Some(2),
                retry_delays: Some(weir_core::RetryDelays::PerRetry(vec![Duration::ZERO])),
                ..Default::default()
            };
            let mut once = Duration::ZERO;
            let mut thrice = Duration::ZERO;
            bench.run_task("flaky", "flaky", json!({"succeed_on": 1}), retrying.clone());
            for _ in 0..repeats {
                let (state, elapsed) =
                    bench.run_task("flaky", "flaky", json!({"succeed_on": 1}), retrying.clone());
                assert_eq!(state, State::Completed);
                once += elapsed;
                let (state, elapsed) =
                    bench.run_task("flaky", "flaky", json!({"succeed_on": 3}), retrying.clone());
                assert_eq!(state, State::Completed);
                thrice += elapsed;
            }
            let per_retry = thrice.saturating_sub(once) / (2 * repeats);
            json!({"per_retry_us": micros(per_retry)})
        }
        // 5. A busy infinite loop with a 1 s timeout: time until the run is TimedOut.
        "timeout" => {
            let timeout = Duration::from_millis(if quick { 200 } else { 1000 });
            let overrides = TaskOverrides {
                timeout: Some(timeout),
                ..Default::default()
            };
            // Warm-up: compile and instantiate the plugin once.
            bench.run_task(
                "misbehave",
                "sleepy",
                json!({"ms": 0}),
                TaskOverrides::default(),
            );
            let (state, elapsed) = bench.run_task("misbehave", "spin", json!({}), overrides);
            json!({"state": state.to_string(), "seconds": elapsed.as_secs_f64(), "deadline_seconds": timeout.as_secs_f64()})
        }
        // 6. 20 tasks of 0.2 s under a tag concurrency limit of 2.
        "limit" => {
            let (count, ms) = if quick { (4, 50) } else { (20, 200) };
            bench
                .tokio
                .block_on(
                    bench
                        .store
                        .set_concurrency_limit("db", 2, SystemClock.now()),
                )
                .unwrap();
            bench.run_flow(&tagged_sleepers(2, 1));
            let elapsed = bench.run_flow(&tagged_sleepers(count, ms));
            json!({"tasks": count, "task_seconds": ms as f64 / 1000.0, "seconds": elapsed.as_secs_f64()})
        }
        // 8. A Python task (componentize-py) run sequentially in a flow; and its bare call.
        "python" => {
            let count = if quick { 5 } else { 200 };
            let text = |_: usize| json!({"text": "the quick brown fox jumps over the lazy dog"});
            bench.run_flow(&chain(count.min(10), "pydemo", "word-stats", text));
            let elapsed = bench.run_flow(&chain(count, "pydemo", "word-stats", text));
            let bytes = std::fs::read(plugin_path("pydemo")).unwrap();
            let bare = bare_call(
                Allocator::PoolingKeepResident,
                &bytes,
                "word-stats",
                r#"{"text": "the quick brown fox jumps over the lazy dog"}"#,
                count as u32,
            );
            json!({"tasks": count, "per_task_us": micros(elapsed) / count as f64, "bare_us": micros(bare)})
        }
        other => {
            eprintln!(
                "unknown scenario `{other}`: sequential, map, cache-hit, retries, timeout, limit or python"
            );
            std::process::exit(2);
        }
    };
    println!("{result}");
}

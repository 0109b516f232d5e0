//! SQLite against PostgreSQL, measured in one run on the same machine (PostgreSQL
//! sharing it):
//! - the store alone: task runs recorded (created Running, finished with a result) per
//!   second through the recorder, flushed;
//! - a map of 10,000 trivial tasks (arith add) end to end: time per task run;
//! - eight `weir run` processes at once, each a map of 1,000, on one store: task runs per
//!   second over all of them.
//!
//! It needs a PostgreSQL server whose user may create databases, named in
//! `WEIR_TEST_POSTGRES` (`scripts/postgres start --durable` starts one with the
//! durability of the SQLite store: fsync on, synchronous_commit off). Run with
//! `cargo bench -p weir-tests --bench store_backends` (`-- --quick` for a smoke run).
//! Figures are recorded in BENCHMARKS.md.

use serde_json::{Map, json};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;
use weir_core::{ComponentDigest, State, SystemClock, TaskRunId, Timestamp};
use weir_runner::{FlowRunner, SilentObserver, TaskRunner};
use weir_runtime::{Runtime, RuntimeConfig};
use weir_store::{NewTaskRun, StateChange, Store};
use weir_tests::shapes::map_of_adds;
use weir_tests::{Backend, plugin_path, postgres};

struct Measured {
    recorded_per_second: f64,
    map_micros_per_task: f64,
    processes_per_second: f64,
}

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let (records, map, processes, per_process) = if quick {
        (500, 200, 2, 50)
    } else {
        (50_000, 10_000, 8, 1_000)
    };
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let runtime = Arc::new(Runtime::new(RuntimeConfig::default()).unwrap());
    let local = tempfile::tempdir().unwrap();
    let mut results = Vec::new();
    for backend in Backend::ALL {
        let measured = tokio.block_on(measure(
            backend,
            &runtime,
            &local,
            (records, map, processes, per_process),
        ));
        results.push((backend, measured));
    }
    println!("store_backends: SQLite against PostgreSQL on this machine, in one run");
    println!(
        "{:<58} {:>12} {:>12} {:>7}",
        "measure", "SQLite", "PostgreSQL", "ratio"
    );
    let (sqlite, postgres) = (&results[0].1, &results[1].1);
    let row = |name: String, unit: &str, sqlite: f64, postgres: f64| {
        println!(
            "{name:<58} {sqlite:>9.1} {unit:<2} {postgres:>9.1} {unit:<2} {:>6.2}x",
            postgres / sqlite
        );
    };
    row(
        format!("store alone: {records} task runs recorded, per second"),
        "/s",
        sqlite.recorded_per_second,
        postgres.recorded_per_second,
    );
    row(
        format!("a map of {map}: time per task run"),
        "µs",
        sqlite.map_micros_per_task,
        postgres.map_micros_per_task,
    );
    row(
        format!("{processes} processes × a map of {per_process}: task runs per second"),
        "/s",
        sqlite.processes_per_second,
        postgres.processes_per_second,
    );
    println!(
        "targets: PostgreSQL within 3x of SQLite per task run in the map: {}; ≥ 5,000 task runs/s recorded: {}",
        postgres.map_micros_per_task <= 3.0 * sqlite.map_micros_per_task,
        postgres.recorded_per_second >= 5_000.0
    );
}

async fn open(backend: Backend, dir: &tempfile::TempDir) -> (Arc<dyn Store>, String) {
    match backend {
        Backend::Sqlite => {
            let path = dir.path().join(format!("store-{}", TaskRunId::generate()));
            let store = weir_store_sqlite::SqliteStore::open(&path).unwrap();
            (Arc::new(store), path.display().to_string())
        }
        Backend::Postgres => {
            let url = postgres::fresh_database().await;
            let store = weir_store_postgres::PostgresStore::connect(&url)
                .await
                .unwrap();
            (Arc::new(store), url)
        }
    }
}

async fn measure(
    backend: Backend,
    runtime: &Arc<Runtime>,
    local: &tempfile::TempDir,
    (records, map, processes, per_process): (usize, usize, usize, usize),
) -> Measured {
    // The store alone: what the writer sustains.
    let (store, _) = open(backend, local).await;
    let change = |state: State, at: i64| StateChange {
        state,
        message: None,
        attempt: 1,
        at: Timestamp(at),
    };
    let started = Instant::now();
    for index in 0..records {
        let run = NewTaskRun {
            id: TaskRunId::generate(),
            name: format!("add-{index}"),
            task: "add".into(),
            plugin_name: "arith".into(),
            plugin_digest: ComponentDigest::of_bytes(b"arith"),
            flow_run_id: None,
            node: Some("add".into()),
            map_index: Some(index as u32),
            input: json!({"a": index, "b": 1}),
            tags: Vec::new(),
            created: Timestamp(1),
            owner: None,
        };
        store
            .create_task_run(
                &run,
                &[change(State::Pending, 1), change(State::Running, 2)],
                None,
            )
            .unwrap();
        store
            .finish_task_run(
                &run.id,
                &change(State::Completed, 3),
                Some(&json!(index + 1)),
                None,
            )
            .unwrap();
    }
    store.flush().await.unwrap();
    let recorded_per_second = records as f64 / started.elapsed().as_secs_f64();
    drop(store);

    // A map end to end, after a warm-up that compiles the plugin and fills the pool.
    let (store, _) = open(backend, local).await;
    let tasks = Arc::new(TaskRunner::new(
        runtime.clone(),
        store.clone(),
        Arc::new(SystemClock),
        Arc::new(SilentObserver),
    ));
    let flows = Arc::new(FlowRunner::new(tasks, FlowRunner::default_concurrency()));
    flows
        .run_flow(&map_of_adds(100), &Map::new())
        .await
        .unwrap();
    let started = Instant::now();
    let outcome = flows
        .run_flow(&map_of_adds(map), &Map::new())
        .await
        .unwrap();
    store.flush().await.unwrap();
    let map_micros_per_task = started.elapsed().as_secs_f64() * 1e6 / map as f64;
    assert_eq!(outcome.state, State::Completed, "{outcome:?}");
    drop(flows);
    drop(store);

    // Processes sharing one store, each with its own runtime and writer.
    let (store, location) = open(backend, local).await;
    drop(store);
    let values: Vec<String> = (0..per_process).map(|value| value.to_string()).collect();
    let flow = local.path().join(format!("wide-{per_process}.toml"));
    std::fs::write(
        &flow,
        format!(
            "format = 1\nname = \"wide\"\noutput = \"add\"\n[plugins]\narith = \"{}\"\n[nodes.add]\ntask = \"arith.add\"\ninput = {{ a = [{}], b = 1 }}\nmap = [\"a\"]\n",
            plugin_path("arith").display(),
            values.join(", ")
        ),
    )
    .unwrap();
    let weir = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_weir-under-test"));
        command
            .args(["--store", &location])
            .args(args)
            .env("WEIR_LOCAL_DIR", local.path().join("local"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    };
    // Compiled once before the clock starts.
    let warm = weir(&["inspect", &plugin_path("arith").display().to_string()])
        .output()
        .unwrap();
    assert!(
        warm.status.success(),
        "{}",
        String::from_utf8_lossy(&warm.stderr)
    );
    let started = Instant::now();
    let children: Vec<_> = (0..processes)
        .map(|_| weir(&["run", &flow.display().to_string()]).spawn().unwrap())
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let processes_per_second =
        (processes * per_process) as f64 / started.elapsed().as_secs_f64().max(1e-9);
    Measured {
        recorded_per_second,
        map_micros_per_task,
        processes_per_second,
    }
}

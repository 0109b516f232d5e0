//! Tag concurrency limits: never more than the limit at once (from recorded times), slots
//! freed however runs end, 0 aborts, leases of dead processes expire, and limits hold
//! across processes sharing a store.

use serde_json::{Map, json};
use std::process::Command;
use std::time::Duration;
use weir_core::{Clock, State, SystemClock, Timestamp};
use weir_flow::Flow;
use weir_store::History as _;
use weir_store::{TaskRunFilter, TaskRunRecord};
use weir_tests::Harness;

const SLEEPERS: &str = r#"
format = 1
name = "sleepers"

[parameters.ms]
type = "array"

[plugins]
misbehave = "{misbehave}"

[nodes.sleep]
task = "misbehave.sleepy"
input = { ms = "${params.ms}" }
map = ["ms"]
tags = ["db"]
"#;

/// The most runs whose [started, ended) intervals overlap at one instant.
fn peak_overlap(runs: &[TaskRunRecord]) -> usize {
    let mut events: Vec<(Timestamp, i32)> = Vec::new();
    for run in runs {
        // Ends sort before starts at the same instant: a slot handed over is no overlap.
        events.push((run.started.expect("the run started"), 1));
        events.push((run.ended.expect("the run ended"), -1));
    }
    events.sort();
    let (mut current, mut peak) = (0i32, 0i32);
    for (_, change) in events {
        current += change;
        peak = peak.max(current);
    }
    peak as usize
}

#[tokio::test]
async fn twenty_runs_under_a_limit_of_two_never_overlap_more_than_two() {
    let harness = Harness::new();
    harness
        .store
        .set_concurrency_limit("db", 2, SystemClock.now())
        .await
        .unwrap();
    let flow = Flow::load(&harness.write_flow("sleepers.toml", SLEEPERS)).unwrap();
    let parameters: Map<_, _> = json!({"ms": vec![100; 20]}).as_object().unwrap().clone();
    let started = std::time::Instant::now();
    let outcome = harness
        .flows(20)
        .run_flow(&flow, &parameters)
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(outcome.state, State::Completed, "{outcome:?}");
    let runs = harness
        .store
        .task_runs(&TaskRunFilter {
            flow_run_id: Some(outcome.id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(runs.len(), 20);
    assert_eq!(peak_overlap(&runs), 2);
    // 20 × 100 ms in 2 lanes take 1 s at least; generous above, the machine is shared.
    assert!(elapsed >= Duration::from_millis(1000), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    let limit = harness
        .store
        .concurrency_limit("db", SystemClock.now())
        .await
        .unwrap()
        .unwrap();
    assert!(
        limit.holders.is_empty(),
        "slots still held: {:?}",
        limit.holders
    );
}

#[tokio::test]
async fn slots_are_released_when_runs_crash_fail_or_time_out() {
    let harness = Harness::new();
    harness
        .store
        .set_concurrency_limit("fragile", 1, SystemClock.now())
        .await
        .unwrap();
    let flow = Flow::load(&harness.write_flow(
        "crashes.toml",
        r#"
format = 1
name = "crashes"

[parameters.messages]
type = "array"

[plugins]
misbehave = "{misbehave}"
arith = "{arith}"

[nodes.boom]
task = "misbehave.boom"
input = { message = "${params.messages}" }
map = ["message"]
tags = ["fragile"]

[nodes.spin]
task = "misbehave.spin"
tags = ["fragile"]
timeout = "100ms"
retries = 1

[nodes.divide]
task = "arith.divide"
input = { a = 1, b = 0 }
tags = ["fragile"]
"#,
    ))
    .unwrap();
    let parameters: Map<_, _> = json!({"messages": ["a", "b", "c", "d"]})
        .as_object()
        .unwrap()
        .clone();
    let outcome = harness.flows(8).run_flow(&flow, &parameters).await.unwrap();
    assert_eq!(outcome.state, State::Failed);
    let runs = harness
        .store
        .task_runs(&TaskRunFilter {
            flow_run_id: Some(outcome.id),
            ..Default::default()
        })
        .await
        .unwrap();
    let states: Vec<State> = runs.iter().map(|run| run.state).collect();
    assert_eq!(
        states
            .iter()
            .filter(|state| **state == State::Crashed)
            .count(),
        4
    );
    assert!(
        states.contains(&State::TimedOut) && states.contains(&State::Failed),
        "{states:?}"
    );
    let limit = harness
        .store
        .concurrency_limit("fragile", SystemClock.now())
        .await
        .unwrap()
        .unwrap();
    assert!(
        limit.holders.is_empty(),
        "slots still held: {:?}",
        limit.holders
    );
}

#[tokio::test]
async fn a_limit_of_zero_aborts_and_a_dead_holders_lease_expires() {
    let harness = Harness::new();
    let now = SystemClock.now();
    harness
        .store
        .set_concurrency_limit("frozen", 0, now)
        .await
        .unwrap();
    let flow = Flow::load(&harness.write_flow(
        "frozen.toml",
        r#"
format = 1
name = "frozen"

[plugins]
arith = "{arith}"

[nodes.add]
task = "arith.add"
input = { a = 1, b = 2 }
tags = ["frozen"]
"#,
    ))
    .unwrap();
    let outcome = harness.flows(2).run_flow(&flow, &Map::new()).await.unwrap();
    assert_eq!(outcome.state, State::Failed);
    let runs = harness
        .store
        .task_runs(&TaskRunFilter::default())
        .await
        .unwrap();
    assert_eq!(runs[0].state, State::Cancelled);
    assert_eq!(
        runs[0].state_message.as_deref(),
        Some("tag `frozen` has a concurrency limit of 0: its task runs are aborted")
    );

    // A process that died holding the only slot: its lease has run out.
    harness
        .store
        .set_concurrency_limit("frozen", 1, now)
        .await
        .unwrap();
    let expired = Timestamp(now.0 - 1);
    harness
        .store
        .acquire_slots(
            &["frozen".to_owned()],
            "trun_killed",
            Timestamp(now.0 - 31_000_000),
            expired,
        )
        .await
        .unwrap();
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        harness.flows(2).run_flow(&flow, &Map::new()),
    )
    .await
    .expect("the expired lease does not block")
    .unwrap();
    assert_eq!(outcome.state, State::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_across_processes_sharing_a_store() {
    let harness = Harness::new();
    let flow = harness.write_flow("sleepers.toml", SLEEPERS);
    let weir = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_weir-under-test"))
            .current_dir(harness.dir.path())
            .args(args)
            .output()
            .unwrap()
    };
    let created = weir(&["concurrency-limit", "create", "db", "2"]);
    assert_eq!(
        created.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let flow = flow.display().to_string();
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_weir-under-test"))
            .current_dir(harness.dir.path())
            .args(["run", &flow, "-p", "ms=[150, 150, 150, 150, 150, 150]"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (first, second) = (spawn(), spawn());
    for child in [first, second] {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let store = weir_store_sqlite::SqliteStore::open(&harness.dir.path().join(".weir")).unwrap();
    let runs = store.task_runs(&TaskRunFilter::default()).await.unwrap();
    assert_eq!(runs.len(), 12);
    assert!(
        peak_overlap(&runs) <= 2,
        "more than 2 at once across processes"
    );

    let listed = weir(&["concurrency-limit", "ls"]);
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout),
        "db                     0 of 2   slots in use\n"
    );
    assert_eq!(
        weir(&["concurrency-limit", "read", "nope"]).status.code(),
        Some(2)
    );
    assert_eq!(
        weir(&["concurrency-limit", "reset", "db"]).status.code(),
        Some(0)
    );
    assert_eq!(
        weir(&["concurrency-limit", "delete", "db"]).status.code(),
        Some(0)
    );
    assert_eq!(
        String::from_utf8_lossy(&weir(&["concurrency-limit", "ls"]).stdout),
        ""
    );
}

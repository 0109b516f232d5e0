//! Every way a run can stop is recorded and recoverable: Ctrl-C and SIGTERM, `weir runs
//! cancel` from another process, a process killed outright (its runs become Crashed and
//! its concurrency slots free at once), and cancellation inside the library.

use serde_json::{Map, Value, json};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use weir_core::{Clock, State, SystemClock};
use weir_store::{FlowRunFilter, TaskRunFilter};
use weir_tests::Harness;

use crate::command::{spawn_weir, text, weir};

/// A map of four sleepers, a node under the `db` limit, a subflow that sleeps, and a node
/// after the map that must never start once the run is cancelled.
const LONG_FLOW: &str = r#"
format = 1
name = "long"

[plugins]
misbehave = "{misbehave}"

[nodes.sleep]
task = "misbehave.sleepy"
input = { ms = [20000, 20000, 20000, 20000] }
map = ["ms"]

[nodes.locked]
task = "misbehave.sleepy"
input = { ms = 20000 }
tags = ["db"]

[nodes.sub]
flow = "sub.toml"

[nodes.after]
task = "misbehave.sleepy"
input = { ms = 1 }
wait_for = ["sleep"]
"#;

const SUB_FLOW: &str = r#"
format = 1
name = "sub"

[plugins]
misbehave = "{misbehave}"

[nodes.nap]
task = "misbehave.sleepy"
input = { ms = 20000 }
"#;

/// One node under the `db` limit, sleeping `ms`.
const TAGGED_FLOW: &str = r#"
format = 1
name = "tagged"

[parameters.ms]
type = "integer"
default = 30000

[plugins]
misbehave = "{misbehave}"

[nodes.locked]
task = "misbehave.sleepy"
input = { ms = "${params.ms}" }
tags = ["db"]
"#;

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// Polls the store until `ready` holds (a generous deadline: the machine is shared).
async fn wait_for<Ready: Future<Output = bool>>(what: &str, mut ready: impl FnMut() -> Ready) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn running_task_runs(harness: &Harness) -> usize {
    harness
        .store
        .task_runs(&TaskRunFilter {
            state: Some(State::Running),
            ..Default::default()
        })
        .await
        .unwrap()
        .len()
}

async fn long_flow(harness: &Harness) {
    harness.write_flow("long.toml", LONG_FLOW);
    harness.write_flow("sub.toml", SUB_FLOW);
    harness
        .store
        .set_concurrency_limit("db", 1, SystemClock.now())
        .await
        .unwrap();
}

/// Nothing is left unfinished, and every task run that was in flight says why it ended.
async fn assert_everything_cancelled(harness: &Harness, reason: &str) {
    let message = format!("cancelled: {reason}");
    for run in harness
        .store
        .flow_runs(&FlowRunFilter::default())
        .await
        .unwrap()
    {
        assert_eq!(run.state, State::Cancelled, "flow run {}", run.name);
        assert_eq!(run.state_message.as_deref(), Some(message.as_str()));
    }
    let task_runs = harness
        .store
        .task_runs(&TaskRunFilter::default())
        .await
        .unwrap();
    // Four map elements, the tagged node and the subflow's node; `after` never started.
    assert_eq!(task_runs.len(), 6, "{task_runs:#?}");
    for run in &task_runs {
        assert_eq!(run.state, State::Cancelled, "task run {}", run.name);
        assert_eq!(run.state_message.as_deref(), Some(message.as_str()));
        assert!(run.ended.is_some());
    }
    assert!(
        task_runs
            .iter()
            .all(|run| run.node.as_deref() != Some("after"))
    );
    let limits = harness
        .store
        .concurrency_limits(SystemClock.now())
        .await
        .unwrap();
    assert_eq!(
        limits[0].holders,
        Vec::<String>::new(),
        "no slot stays held"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_cancels_the_flow_run_and_everything_under_it_and_exits_130() {
    let harness = Harness::new();
    long_flow(&harness).await;
    let child = spawn_weir(harness.dir.path(), &["run", "long.toml"]);
    wait_for("six running task runs", || async {
        running_task_runs(&harness).await == 6
    })
    .await;
    let interrupted = Instant::now();
    signal(&child, "INT");
    let output = child.wait_with_output().unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(
        interrupted.elapsed() < Duration::from_secs(10),
        "the attempts were dropped, not waited for"
    );
    assert!(
        stderr.contains("SIGINT: cancelling the run (press Ctrl-C again to exit at once)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Finished in state Cancelled('cancelled: interrupted (SIGINT)')"),
        "{stderr}"
    );
    assert_everything_cancelled(&harness, "interrupted (SIGINT)").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_cancels_a_task_run_and_exits_143() {
    let harness = Harness::new();
    let misbehave = weir_tests::plugin_path("misbehave").display().to_string();
    let child = spawn_weir(
        harness.dir.path(),
        &[
            "task",
            "run",
            &misbehave,
            "--task",
            "sleepy",
            "--input",
            r#"{"ms": 30000}"#,
        ],
    );
    wait_for("the task run to start", || async {
        running_task_runs(&harness).await == 1
    })
    .await;
    signal(&child, "TERM");
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(143), "{}", text(&output.stderr));
    let runs = harness
        .store
        .task_runs(&TaskRunFilter::default())
        .await
        .unwrap();
    assert_eq!(runs[0].state, State::Cancelled);
    assert_eq!(
        runs[0].state_message.as_deref(),
        Some("cancelled: interrupted (SIGTERM)")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_cancel_stops_a_run_of_another_process_within_a_second() {
    let harness = Harness::new();
    long_flow(&harness).await;
    let child = spawn_weir(harness.dir.path(), &["run", "long.toml"]);
    wait_for("six running task runs", || async {
        running_task_runs(&harness).await == 6
    })
    .await;
    let top = harness
        .store
        .flow_runs(&FlowRunFilter::default())
        .await
        .unwrap()
        .into_iter()
        .find(|run| run.parent_flow_run_id.is_none())
        .unwrap();

    let asked = Instant::now();
    let cancel = weir(harness.dir.path(), &["runs", "cancel", &top.name]);
    let took = asked.elapsed();
    let printed = text(&cancel.stdout);
    assert_eq!(cancel.status.code(), Some(0), "{}", text(&cancel.stderr));
    assert!(
        printed.starts_with(&format!(
            "flow run '{}' ({}) ended Cancelled (cancelled by process {}",
            top.name,
            top.id,
            child.id()
        )),
        "{printed}"
    );
    // The owner polls every 200 ms; a second, with room for a busy machine.
    assert!(took < Duration::from_secs(5), "cancelling took {took:?}");

    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(6), "{}", text(&output.stderr));
    assert_everything_cancelled(&harness, "requested by `weir runs cancel`").await;

    // Cancelling again is a clear no-op.
    let again = weir(harness.dir.path(), &["runs", "cancel", top.id.as_str()]);
    assert_eq!(again.status.code(), Some(0));
    assert_eq!(
        text(&again.stdout),
        format!(
            "flow run '{}' ({}) already ended Cancelled: there is nothing to cancel\n",
            top.name, top.id
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_process_leaves_crashed_runs_and_frees_its_slots_at_once() {
    let harness = Harness::new();
    harness.write_flow("tagged.toml", TAGGED_FLOW);
    harness
        .store
        .set_concurrency_limit("db", 1, SystemClock.now())
        .await
        .unwrap();
    let mut killed = spawn_weir(harness.dir.path(), &["run", "tagged.toml"]);
    wait_for("the tagged run to hold its slot", || async {
        running_task_runs(&harness).await == 1
    })
    .await;
    killed.kill().unwrap(); // SIGKILL: nothing runs in the process after this
    killed.wait().unwrap();

    // The next run with the tag takes the dead process's slot without waiting out its
    // 30-second lease.
    let started = Instant::now();
    let next = weir(harness.dir.path(), &["run", "tagged.toml", "-p", "ms=10"]);
    assert_eq!(next.status.code(), Some(0), "{}", text(&next.stderr));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "waited {:?} for the slot",
        started.elapsed()
    );

    let listing = weir(harness.dir.path(), &["runs", "ls", "--json"]);
    assert_eq!(listing.status.code(), Some(0));
    let runs: Value = serde_json::from_slice(&listing.stdout).unwrap();
    let states: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|run| run["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["Completed", "Crashed"]);
    let message = runs[1]["state_message"].as_str().unwrap();
    assert!(
        message.starts_with("the process running it stopped at ")
            && message.contains(&format!("(pid {} on ", killed.id())),
        "{message}"
    );
    let tasks = harness
        .store
        .task_runs(&TaskRunFilter {
            flow_run_id: Some(weir_core::FlowRunId::from_string(
                runs[1]["id"].as_str().unwrap(),
            )),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(tasks[0].state, State::Crashed);
    let limits = weir(harness.dir.path(), &["concurrency-limit", "ls", "--json"]);
    let limits: Value = serde_json::from_slice(&limits.stdout).unwrap();
    assert_eq!(limits[0]["holders"], json!([]));

    // The crashed run resumes as before.
    let resumed = weir(
        harness.dir.path(),
        &["run", "--resume", runs[1]["id"].as_str().unwrap()],
    );
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphan_is_shown_crashed_by_the_next_command_that_looks() {
    let harness = Harness::new();
    harness.write_flow("tagged.toml", TAGGED_FLOW);
    let mut killed = spawn_weir(harness.dir.path(), &["run", "tagged.toml"]);
    wait_for("the run to start", || async {
        running_task_runs(&harness).await == 1
    })
    .await;
    killed.kill().unwrap();
    killed.wait().unwrap();
    let listing = weir(harness.dir.path(), &["runs", "ls"]);
    let stderr = text(&listing.stderr);
    assert!(
        stderr.contains(&format!("was running in process {} on ", killed.id()))
            && stderr.contains("it is now Crashed (continue it with `weir run --resume "),
        "{stderr}"
    );
    assert!(text(&listing.stdout).contains("Crashed"));
    // Said once: the next look finds nothing left to reap.
    let again = weir(harness.dir.path(), &["runs", "ls"]);
    assert!(
        !text(&again.stderr).contains("note:"),
        "{}",
        text(&again.stderr)
    );
}

#[tokio::test]
async fn cancel_all_ends_a_flow_run_cancelled_and_later_runs_at_once() {
    let harness = Harness::new();
    long_flow(&harness).await;
    let flow = weir_flow::Flow::load(&harness.dir.path().join("long.toml")).unwrap();
    let flows = harness.flows(16);
    let running = tokio::spawn({
        let flows = flows.clone();
        async move { flows.run_flow(&flow, &Map::new()).await }
    });
    let store = harness.store.clone();
    tokio::time::timeout(Duration::from_secs(60), async {
        while store
            .task_runs(&TaskRunFilter {
                state: Some(State::Running),
                ..Default::default()
            })
            .await
            .unwrap()
            .len()
            < 6
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the flow starts its nodes");
    harness.runner.cancel_all("shutting down");
    let outcome = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("a cancelled run ends at once")
        .unwrap()
        .unwrap();
    assert_eq!(outcome.state, State::Cancelled);
    assert_eq!(outcome.message.as_deref(), Some("cancelled: shutting down"));
    assert_everything_cancelled(&harness, "shutting down").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_still_running_elsewhere_is_not_resumed_twice() {
    let harness = Harness::new();
    harness.write_flow("tagged.toml", TAGGED_FLOW);
    let child = spawn_weir(harness.dir.path(), &["run", "tagged.toml"]);
    wait_for("the run to start", || async {
        running_task_runs(&harness).await == 1
    })
    .await;
    let run = &harness
        .store
        .flow_runs(&FlowRunFilter::default())
        .await
        .unwrap()[0];
    let again = weir(harness.dir.path(), &["run", "--resume", &run.name]);
    let stderr = text(&again.stderr);
    assert_eq!(again.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "it is still running in process {} on ",
            child.id()
        )) && stderr.contains(&format!(
            "cancel it first (`weir runs cancel {}`)",
            run.name
        )),
        "{stderr}"
    );
    // Who runs it is shown.
    let inspect = weir(harness.dir.path(), &["runs", "inspect", &run.name]);
    assert!(
        text(&inspect.stdout).contains(&format!("running in  process {} on ", child.id())),
        "{}",
        text(&inspect.stdout)
    );
    signal(&child, "INT");
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(130));
}

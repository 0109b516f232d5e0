//! Chaos: a `weir run` of a 1,000-task flow (a map, a chain and a subflow, some of it
//! under a tag limit) killed with SIGKILL at 30 random moments and resumed after each.
//! The final output equals an uninterrupted run's, every node and element completed
//! exactly once, no slot stays held and no run is left Running.

use serde_json::Value;
use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;
use weir_core::{FlowRunId, State};
use weir_store::{FlowRunFilter, Store, TaskRunFilter};
use weir_tests::Harness;

use crate::command::{weir, weir_command};

const MAP: usize = 800;
const CHAIN: usize = 100;
const SUB_MAP: usize = 100;

fn chaos_flow() -> String {
    let squares: Vec<String> = (0..MAP).map(|index| (5 + index % 7).to_string()).collect();
    let mut text = format!(
        r#"
format = 1
name = "chaos"
output = {{ squares = "squares", chain = "step_{}", sub = "sub" }}

[plugins]
misbehave = "{{misbehave}}"

[nodes.squares]
task = "misbehave.sleepy"
input = {{ ms = [{}] }}
map = ["ms"]
tags = ["chaos"]

[nodes.sub]
flow = "chaos-sub.toml"

[nodes.step_0]
task = "misbehave.sleepy"
input = {{ ms = 40 }}
"#,
        CHAIN - 1,
        squares.join(", ")
    );
    for step in 1..CHAIN {
        text.push_str(&format!(
            "\n[nodes.step_{step}]\ntask = \"misbehave.sleepy\"\ninput = {{ ms = \"${{step_{}}}\" }}\n",
            step - 1
        ));
    }
    text
}

fn chaos_subflow() -> String {
    let naps: Vec<String> = (0..SUB_MAP)
        .map(|index| (2 + index % 3).to_string())
        .collect();
    format!(
        r#"
format = 1
name = "chaos-sub"
output = "naps"

[plugins]
misbehave = "{{misbehave}}"

[nodes.naps]
task = "misbehave.sleepy"
input = {{ ms = [{}] }}
map = ["ms"]
"#,
        naps.join(", ")
    )
}

/// The flow run and its subflow runs.
async fn tree(store: &dyn Store, root: &FlowRunId) -> Vec<FlowRunId> {
    let mut tree = vec![root.clone()];
    let mut next = 0;
    while next < tree.len() {
        let children = store
            .flow_runs(&FlowRunFilter {
                parent: Some(tree[next].clone()),
                ..Default::default()
            })
            .await
            .unwrap();
        tree.extend(children.into_iter().map(|run| run.id));
        next += 1;
    }
    tree
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_killed_at_thirty_random_moments_resumes_to_the_uninterrupted_output() {
    let harness = Harness::new();
    harness.write_flow("chaos.toml", &chaos_flow());
    harness.write_flow("chaos-sub.toml", &chaos_subflow());
    let created = weir(
        harness.dir.path(),
        &["concurrency-limit", "create", "chaos", "8"],
    );
    assert_eq!(created.status.code(), Some(0));

    let reference = weir(harness.dir.path(), &["run", "chaos.toml", "--json"]);
    assert_eq!(
        reference.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&reference.stderr)
    );
    let reference: Value = serde_json::from_slice(&reference.stdout).unwrap();
    let reference_id = FlowRunId::from_string(reference["id"].as_str().unwrap());

    let seed = fastrand::u64(..);
    eprintln!("chaos seed: {seed}");
    let mut random = fastrand::Rng::with_seed(seed);
    let mut chaos_id: Option<FlowRunId> = None;
    let mut kills = 0;
    while kills < 30 {
        let id = chaos_id.as_ref().map(|id| id.to_string());
        let args: Vec<&str> = match &id {
            None => vec!["run", "chaos.toml"],
            Some(id) => vec!["run", "--resume", id],
        };
        let mut child = weir_command(harness.dir.path(), &args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if chaos_id.is_none() {
            // The run to resume is the one this process records.
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            chaos_id = loop {
                let runs = harness
                    .store
                    .flow_runs(&FlowRunFilter::default())
                    .await
                    .unwrap();
                if let Some(run) = runs
                    .into_iter()
                    .find(|run| run.parent_flow_run_id.is_none() && run.id != reference_id)
                {
                    break Some(run.id);
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the run never started"
                );
                std::thread::sleep(Duration::from_millis(5));
            };
        }
        std::thread::sleep(Duration::from_millis(random.u64(30..300)));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        if status.success() {
            break; // it finished before this kill
        }
        kills += 1;
    }
    assert!(
        kills >= 20,
        "only {kills} kills landed before the run completed"
    );
    let chaos_id = chaos_id.unwrap();
    let finished = weir(
        harness.dir.path(),
        &["run", "--resume", chaos_id.as_str(), "--json"],
    );
    let report: Value = match finished.status.code() {
        Some(0) => serde_json::from_slice(&finished.stdout).unwrap(),
        // The last kill came too late: it had completed; its record says how.
        _ => {
            let record = harness.store.flow_run(&chaos_id).await.unwrap().unwrap();
            assert_eq!(
                record.state,
                State::Completed,
                "{}",
                String::from_utf8_lossy(&finished.stderr)
            );
            serde_json::json!({"output": harness.store.result(record.result_digest.as_deref().unwrap()).await.unwrap()})
        }
    };
    assert_eq!(report["output"], reference["output"]);

    // Every node and element of the tree completed exactly once.
    let mut completions: HashMap<(FlowRunId, String, Option<u32>), usize> = HashMap::new();
    for flow_run in tree(harness.store.as_ref(), &chaos_id).await {
        let runs = harness
            .store
            .task_runs(&TaskRunFilter {
                flow_run_id: Some(flow_run.clone()),
                ..Default::default()
            })
            .await
            .unwrap();
        for run in runs {
            assert!(run.state.is_final(), "{} is left {}", run.name, run.state);
            if run.state == State::Completed {
                *completions
                    .entry((flow_run.clone(), run.node.clone().unwrap(), run.map_index))
                    .or_default() += 1;
            }
        }
    }
    assert_eq!(completions.len(), MAP + CHAIN + SUB_MAP);
    let twice: Vec<_> = completions
        .iter()
        .filter(|(_, count)| **count != 1)
        .collect();
    assert!(twice.is_empty(), "completed more than once: {twice:?}");

    // Nothing is left held or Running.
    let limits = weir(harness.dir.path(), &["concurrency-limit", "ls", "--json"]);
    let limits: Value = serde_json::from_slice(&limits.stdout).unwrap();
    assert_eq!(limits[0]["holders"], serde_json::json!([]));
    for listing in [
        weir(
            harness.dir.path(),
            &["runs", "ls", "--json", "--limit", "100"],
        ),
        weir(
            harness.dir.path(),
            &["runs", "ls", "--tasks", "--json", "--limit", "100000"],
        ),
    ] {
        let runs: Value = serde_json::from_slice(&listing.stdout).unwrap();
        assert!(
            runs.as_array()
                .unwrap()
                .iter()
                .all(|run| run["state"] != "Running" && run["state"] != "Pending"),
            "a run is left unfinished"
        );
    }
}

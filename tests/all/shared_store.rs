//! The `weir` command on either store, named with `--store`: a representative set of
//! what the other tests check on the embedded store (a map, a subflow, retries, caching,
//! resume after kill -9, tag limits across processes), run on SQLite and on PostgreSQL;
//! and eight processes sharing one new store.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use weir_tests::{Backend, plugin_path, postgres};

use crate::command::text;

/// A temporary directory for flow files and compiled plugins, and a store named as
/// `--store` takes it.
struct Place {
    dir: tempfile::TempDir,
    store: String,
}

impl Place {
    async fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = match backend {
            Backend::Sqlite => dir.path().join("shared-store").display().to_string(),
            Backend::Postgres => postgres::fresh_database().await,
        };
        Place { dir, store }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_weir-under-test"));
        command
            .current_dir(self.dir.path())
            .args(["--store", &self.store])
            .args(args)
            .env_remove("WEIR_STORE")
            // Compiled plugins are per machine, not in the store: here, per test.
            .env("WEIR_LOCAL_DIR", self.dir.path().join("local"));
        command
    }

    fn weir(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let output = self.weir(args);
        assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
        serde_json::from_slice(&output.stdout).unwrap()
    }

    fn write(&self, name: &str, body: &str) {
        let mut body = body.to_owned();
        for plugin in ["arith", "flaky", "misbehave"] {
            body = body.replace(
                &format!("{{{plugin}}}"),
                &plugin_path(plugin).display().to_string(),
            );
        }
        std::fs::write(self.dir.path().join(name), body).unwrap();
    }
}

on_both_backends!(
    a_map_a_subflow_retries_and_the_cache,
    a_run_killed_with_sigkill_resumes,
    tag_limits_hold_across_processes,
    eight_processes_share_a_new_store,
);

const SUM: &str = r#"
format = 1
name = "sum"
output = "total"

[parameters.values]
type = "array"

[plugins]
arith = "{arith}"

[nodes.total]
task = "arith.sum"
input = { values = "${params.values}" }
"#;

const SQUARES: &str = r#"
format = 1
name = "squares"
output = { total = "total", scaled = "scaled", flaky = "flaky" }

[parameters.values]
type = "array"
default = [1, 2, 3, 4]

[plugins]
arith = "{arith}"
flaky = "{flaky}"

[nodes.squares]
task = "arith.multiply"
input = { a = "${params.values}", b = "${params.values}" }
map = ["a", "b"]

[nodes.total]
flow = "sum.toml"
parameters = { values = "${squares}" }

[nodes.scaled]
task = "arith.multiply"
input = { a = "${total}", b = 2 }
cache = "inputs"

[nodes.flaky]
task = "flaky.flaky"
input = { succeed_on = 3 }
"#;

async fn a_map_a_subflow_retries_and_the_cache(backend: Backend) {
    let place = Place::new(backend).await;
    place.write("sum.toml", SUM);
    place.write("squares.toml", SQUARES);
    let first = place.json(&["run", "squares.toml", "--json"]);
    assert_eq!(first["state"], "Completed", "{first}");
    assert_eq!(first["output"]["total"], 30.0);
    assert_eq!(first["output"]["scaled"], 60.0);
    let second = place.json(&["run", "squares.toml", "--json"]);
    assert_eq!(second["output"], first["output"]);

    let view = place.json(&["runs", "inspect", second["id"].as_str().unwrap(), "--json"]);
    let task_runs = view["task_runs"].as_array().unwrap();
    let state_of = |node: &str| -> Vec<String> {
        task_runs
            .iter()
            .filter(|run| run["node"] == node)
            .map(|run| run["state"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(state_of("scaled"), ["Cached"]);
    assert_eq!(state_of("squares"), ["Completed"; 4]);
    let flaky = task_runs.iter().find(|run| run["node"] == "flaky").unwrap();
    assert_eq!(flaky["attempts"], 3, "two retries");
    assert_eq!(view["subflow_runs"].as_array().unwrap().len(), 1);
    assert_eq!(view["subflow_runs"][0]["state"], "Completed");

    let listed = place.json(&["runs", "ls", "--json"]);
    assert_eq!(
        listed.as_array().unwrap().len(),
        4,
        "two runs and their subflow runs"
    );
    // Pages: the next starts after the last id of the one before.
    let page = place.json(&["runs", "ls", "--limit", "3", "--json"]);
    let last = page[2]["id"].as_str().unwrap();
    let next = place.json(&["runs", "ls", "--limit", "3", "--before", last, "--json"]);
    assert_eq!(next.as_array().unwrap().len(), 1);
    assert_eq!(next[0]["id"], listed[3]["id"]);
    let summary = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|run| run["id"] == second["id"])
        .unwrap();
    assert_eq!(summary["task_run_states"]["Completed"], 5, "{summary}");
    assert_eq!(summary["task_run_states"]["Cached"], 1, "{summary}");
    let wrong = place.weir(&["runs", "ls", "--before", "trun_x"]);
    assert_eq!(wrong.status.code(), Some(2));
    assert!(
        text(&wrong.stderr).contains("flow run id"),
        "{}",
        text(&wrong.stderr)
    );
    let cache = place.json(&["cache", "ls", "--json"]);
    assert_eq!(cache.as_array().unwrap().len(), 1);
    let logs = place.weir(&["runs", "logs", first["id"].as_str().unwrap()]);
    assert_eq!(logs.status.code(), Some(0), "{}", text(&logs.stderr));
}

async fn a_run_killed_with_sigkill_resumes(backend: Backend) {
    let place = Place::new(backend).await;
    let delays = vec!["100"; 40].join(", ");
    place.write(
        "sleepers.toml",
        &format!(
            r#"
format = 1
name = "sleepers"
output = "sleep"

[plugins]
misbehave = "{{misbehave}}"

[nodes.sleep]
task = "misbehave.sleepy"
input = {{ ms = [{delays}] }}
map = ["ms"]
"#
        ),
    );
    let mut child = place
        .command(&["run", "sleepers.toml", "--concurrency", "4"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let completed = |place: &Place| -> usize {
        let output = place.weir(&[
            "runs",
            "ls",
            "--tasks",
            "--state",
            "Completed",
            "--limit",
            "100",
            "--json",
        ]);
        serde_json::from_slice::<serde_json::Value>(&output.stdout)
            .ok()
            .and_then(|runs| runs.as_array().map(Vec::len))
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while completed(&place) < 8 {
        assert!(Instant::now() < deadline, "the flow made no progress");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = completed(&place);
    assert!(before < 40, "{before} completed before the kill");

    let runs = place.json(&["runs", "ls", "--json"]);
    let id = runs[0]["id"].as_str().unwrap().to_owned();
    let resumed = place.weir(&["run", "--resume", &id, "--concurrency", "8"]);
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed.stderr));
    let output: serde_json::Value = serde_json::from_slice(&resumed.stdout).unwrap();
    assert_eq!(output, serde_json::json!(vec![100; 40]));
    let view = place.json(&["runs", "inspect", &id, "--json"]);
    for index in 0..40 {
        let completions = view["task_runs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|run| run["map_index"] == index && run["state"] == "Completed")
            .count();
        assert_eq!(completions, 1, "element {index} completed once");
    }
}

async fn tag_limits_hold_across_processes(backend: Backend) {
    let place = Place::new(backend).await;
    let created = place.weir(&["concurrency-limit", "create", "db", "1"]);
    assert_eq!(created.status.code(), Some(0), "{}", text(&created.stderr));
    place.write(
        "tagged.toml",
        r#"
format = 1
name = "tagged"

[plugins]
misbehave = "{misbehave}"

[nodes.sleep]
task = "misbehave.sleepy"
input = { ms = [300, 300] }
map = ["ms"]
tags = ["db"]
"#,
    );
    let started = Instant::now();
    let children: Vec<_> = (0..2)
        .map(|_| {
            place
                .command(&["run", "tagged.toml"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    }
    // Four runs of 0.3 s, one at a time across both processes.
    assert!(
        started.elapsed() >= Duration::from_millis(1_200),
        "{:?}: the limit did not hold",
        started.elapsed()
    );
    let runs = place.json(&["runs", "ls", "--tasks", "--json"]);
    let mut spans: Vec<(i64, i64)> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|run| {
            (
                run["started"].as_i64().unwrap(),
                run["ended"].as_i64().unwrap(),
            )
        })
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "two tagged runs overlapped: {spans:?}"
        );
    }
}

/// Eight `weir run` processes of a 1,000-element map, started at once on a store that
/// does not exist yet: every one completes, every task run is recorded once, and no
/// process sees "database is locked".
async fn eight_processes_share_a_new_store(backend: Backend) {
    let place = Place::new(backend).await;
    let values: Vec<String> = (0..1000).map(|value| value.to_string()).collect();
    place.write(
        "map.toml",
        &format!(
            r#"
format = 1
name = "wide"
output = "add"

[plugins]
arith = "{{arith}}"

[nodes.add]
task = "arith.add"
input = {{ a = [{}], b = 1 }}
map = ["a"]
"#,
            values.join(", ")
        ),
    );
    // The plugin compiled once beforehand (in the local directory, not the store, which
    // must not exist yet): the test is about the store.
    let compiled = Command::new(env!("CARGO_BIN_EXE_weir-under-test"))
        .current_dir(place.dir.path())
        .args([
            "--store",
            &place.dir.path().join("warm-up").display().to_string(),
        ])
        .args(["inspect", &plugin_path("arith").display().to_string()])
        .env("WEIR_LOCAL_DIR", place.dir.path().join("local"))
        .output()
        .unwrap();
    assert_eq!(
        compiled.status.code(),
        Some(0),
        "{}",
        text(&compiled.stderr)
    );
    if !place.store.starts_with("postgres") {
        assert!(!Path::new(&place.store).exists());
    }
    let children: Vec<_> = (0..8)
        .map(|_| {
            place
                .command(&["run", "map.toml", "--json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut ids = Vec::new();
    for child in children {
        let output = child.wait_with_output().unwrap();
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{stderr}");
        assert!(!stderr.contains("locked"), "{stderr}");
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(report["output"].as_array().unwrap().len(), 1000);
        ids.push(report["id"].as_str().unwrap().to_owned());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 8);
    for id in &ids {
        let view = place.json(&["runs", "inspect", id, "--json"]);
        let runs = view["task_runs"].as_array().unwrap();
        assert_eq!(runs.len(), 1000, "each element recorded once");
        let mut indexes: Vec<i64> = runs
            .iter()
            .map(|run| run["map_index"].as_i64().unwrap())
            .collect();
        indexes.sort();
        indexes.dedup();
        assert_eq!(indexes.len(), 1000);
        assert!(runs.iter().all(|run| run["state"] == "Completed"));
    }
}

//! Grants: a task reaches exactly the directories and environment variables it is given,
//! nothing around them, and secrets never show in what is recorded.

use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use weir_core::{DirGrant, Grants, State, SystemClock, TaskOverrides};
use weir_flow::Flow;
use weir_runner::{RunnerError, TaskRequest, TaskRunner};
use weir_store::History as _;
use weir_store::TaskRunFilter;
use weir_tests::{Harness, RecordingObserver, load_plugin, shared_runtime};

/// A granted directory with a file, a sibling file outside it, and a symlink from inside
/// to outside.
fn layout() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let granted = root.path().join("granted");
    std::fs::create_dir(&granted).unwrap();
    std::fs::write(granted.join("inside.txt"), "inside").unwrap();
    std::fs::write(root.path().join("outside.txt"), "outside").unwrap();
    std::os::unix::fs::symlink(root.path().join("outside.txt"), granted.join("link-out")).unwrap();
    root
}

fn grant(root: &tempfile::TempDir, writable: bool) -> TaskOverrides {
    TaskOverrides {
        grants: Grants {
            dirs: vec![DirGrant {
                host: root.path().join("granted"),
                guest: "/data".into(),
                writable,
            }],
            env: Vec::new(),
            http: Vec::new(),
        },
        ..Default::default()
    }
}

fn report(outcome: &weir_runner::TaskRunOutcome) -> Map<String, Value> {
    assert_eq!(outcome.state, State::Completed, "{outcome:?}");
    outcome.output.clone().unwrap().as_object().unwrap().clone()
}

#[tokio::test]
async fn a_read_only_grant_reaches_its_directory_and_nothing_else() {
    let harness = Harness::new();
    let root = layout();
    let plugin = load_plugin("misbehave").await;
    let input = json!({
        "read": ["/data/inside.txt", "/data/../outside.txt", "/data/link-out", "/etc/passwd", "outside.txt"],
        "write": ["/data/new.txt", "/data/inside.txt"],
    });
    let outcome = harness
        .runner
        .run_task(TaskRequest::new(plugin, "files", input).with_overrides(grant(&root, false)))
        .await
        .unwrap();
    let report = report(&outcome);
    assert_eq!(report["read /data/inside.txt"], "ok: inside");
    for escape in [
        "read /data/../outside.txt",
        "read /data/link-out",
        "read /etc/passwd",
        "read outside.txt",
    ] {
        assert!(
            report[escape].as_str().unwrap().starts_with("denied"),
            "{escape}: {}",
            report[escape]
        );
    }
    for write in ["write /data/new.txt", "write /data/inside.txt"] {
        assert!(
            report[write].as_str().unwrap().starts_with("denied"),
            "{write}: {}",
            report[write]
        );
    }
    assert!(!root.path().join("granted/new.txt").exists());
    assert_eq!(
        std::fs::read_to_string(root.path().join("granted/inside.txt")).unwrap(),
        "inside"
    );
}

#[tokio::test]
async fn a_read_write_grant_lets_the_task_write_there_only() {
    let harness = Harness::new();
    let root = layout();
    let plugin = load_plugin("misbehave").await;
    let input =
        json!({"read": [], "write": ["/data/new.txt", "/data/../escaped.txt", "/tmp/escaped.txt"]});
    let outcome = harness
        .runner
        .run_task(TaskRequest::new(plugin, "files", input).with_overrides(grant(&root, true)))
        .await
        .unwrap();
    let report = report(&outcome);
    assert_eq!(report["write /data/new.txt"], "ok: written");
    assert_eq!(
        std::fs::read_to_string(root.path().join("granted/new.txt")).unwrap(),
        "written by a weir task\n"
    );
    assert!(
        report["write /data/../escaped.txt"]
            .as_str()
            .unwrap()
            .starts_with("denied")
    );
    assert!(
        report["write /tmp/escaped.txt"]
            .as_str()
            .unwrap()
            .starts_with("denied")
    );
    assert!(!root.path().join("escaped.txt").exists());
}

#[tokio::test]
async fn only_granted_environment_variables_are_seen_and_secrets_are_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(weir_store_sqlite::SqliteStore::open(dir.path()).unwrap());
    let observer = Arc::new(RecordingObserver::default());
    let secrets = HashMap::from([("API_TOKEN".to_owned(), "tok-12345-secret".to_owned())]);
    let runner = TaskRunner::new(
        shared_runtime(),
        store.clone(),
        Arc::new(SystemClock),
        observer.clone(),
    )
    .with_secrets(secrets);
    let plugin = load_plugin("misbehave").await;
    let overrides = TaskOverrides {
        // CARGO_PKG_NAME is set in this test process by cargo.
        grants: Grants {
            dirs: Vec::new(),
            env: vec!["API_TOKEN".into(), "CARGO_PKG_NAME".into()],
            http: Vec::new(),
        },
        ..Default::default()
    };
    let input = json!({"names": ["API_TOKEN", "CARGO_PKG_NAME", "HOME", "PATH"]});
    let outcome = runner
        .run_task(TaskRequest::new(plugin.clone(), "env", input).with_overrides(overrides.clone()))
        .await
        .unwrap();
    let report = report(&outcome);
    assert_eq!(report["CARGO_PKG_NAME"], "ok: weir-tests");
    assert_eq!(report["API_TOKEN"], "ok: tok-12345-secret");
    assert!(report["HOME"].as_str().unwrap().starts_with("denied"));
    assert!(report["PATH"].as_str().unwrap().starts_with("denied"));

    let logs: Vec<String> = store
        .logs(&outcome.id)
        .await
        .unwrap()
        .into_iter()
        .map(|line| line.message)
        .collect();
    assert!(
        logs.contains(&"API_TOKEN is [redacted]".to_owned()),
        "{logs:?}"
    );
    assert!(
        logs.contains(&"CARGO_PKG_NAME is weir-tests".to_owned()),
        "{logs:?}"
    );
    assert!(
        observer
            .log_messages()
            .iter()
            .all(|line| !line.contains("tok-12345-secret"))
    );
    let record = store.task_run(&outcome.id).await.unwrap().unwrap();
    assert!(!record.input.to_string().contains("tok-12345"));

    // A granted variable with no value anywhere stops the run before it starts.
    let missing = TaskOverrides {
        grants: Grants {
            dirs: Vec::new(),
            env: vec!["WEIR_SURELY_UNSET_VARIABLE".into()],
            http: Vec::new(),
        },
        ..Default::default()
    };
    let error = runner
        .run_task(TaskRequest::new(plugin, "env", json!({"names": []})).with_overrides(missing))
        .await
        .unwrap_err();
    assert!(matches!(error, RunnerError::MissingEnv { .. }));
    assert!(
        error.to_string().contains("`WEIR_SURELY_UNSET_VARIABLE`"),
        "{error}"
    );
}

#[tokio::test]
async fn a_missing_granted_directory_is_named() {
    let harness = Harness::new();
    let plugin = load_plugin("misbehave").await;
    let overrides = TaskOverrides {
        grants: Grants {
            dirs: vec![DirGrant::parse("no/such/dir:/data").unwrap()],
            env: Vec::new(),
            http: Vec::new(),
        },
        ..Default::default()
    };
    let error = harness
        .runner
        .run_task(
            TaskRequest::new(plugin, "files", json!({"read": [], "write": []}))
                .with_overrides(overrides),
        )
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "task `files` is granted the directory no/such/dir, which does not exist or is not a directory"
    );
}

#[tokio::test]
async fn grants_are_per_node_in_a_flow_and_denials_do_not_stop_other_tasks() {
    let harness = Harness::new();
    let data = harness.dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("numbers.txt"), "1 2 3").unwrap();
    let flow = Flow::load(&harness.write_flow(
        "grants.toml",
        r#"
format = 1
name = "grants"
output = { granted = "granted", ungranted = "ungranted" }

[plugins]
misbehave = "{misbehave}"

[nodes.granted]
task = "misbehave.files"
input = { read = ["/data/numbers.txt"], write = [] }
dirs = ["data:/data"]

[nodes.ungranted]
task = "misbehave.files"
input = { read = ["/data/numbers.txt"], write = [] }
"#,
    ))
    .unwrap();
    let outcome = harness.flows(4).run_flow(&flow, &Map::new()).await.unwrap();
    assert_eq!(outcome.state, State::Completed, "{outcome:?}");
    let output = outcome.output.unwrap();
    assert_eq!(output["granted"]["read /data/numbers.txt"], "ok: 1 2 3");
    assert!(
        output["ungranted"]["read /data/numbers.txt"]
            .as_str()
            .unwrap()
            .starts_with("denied")
    );
    let runs = harness
        .store
        .task_runs(&TaskRunFilter::default())
        .await
        .unwrap();
    assert_eq!(runs.len(), 2);
}

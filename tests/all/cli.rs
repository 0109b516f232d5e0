//! The `weir` command as a user runs it: printed lines, output and exit codes.

use std::path::Path;
use std::process::Command;
use weir_store::History as _;

use crate::command::{text, weir};
use weir_tests::plugin_path;

fn plugin(name: &str) -> String {
    plugin_path(name).display().to_string()
}

#[test]
fn task_run_prints_prefect_style_lines_and_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let hello = plugin("hello");
    let output = weir(
        dir.path(),
        &[
            "task",
            "run",
            &hello,
            "--task",
            "hello",
            "--input",
            r#"{"name":"world"}"#,
        ],
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(text(&output.stdout), "\"Hello, world!\"\n");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(
        lines[0].ends_with(
            "| INFO    | Task run 'hello-0' - Created task run 'hello-0' for task 'hello'"
        ),
        "{stderr}"
    );
    assert!(
        lines[1].ends_with("| INFO    | Task run 'hello-0' - greeting world"),
        "{stderr}"
    );
    assert!(
        lines[2].ends_with("| INFO    | Task run 'hello-0' - Finished in state Completed()"),
        "{stderr}"
    );
    // The store is created under .weir in the working directory.
    assert!(dir.path().join(".weir/weir.db").exists());

    // The second run of a cached task is Cached, across processes.
    let arith = plugin("arith");
    let args = [
        "task",
        "run",
        &arith,
        "--task",
        "cached-add",
        "--input",
        r#"{"a":1,"b":2}"#,
    ];
    assert_eq!(weir(dir.path(), &args).status.code(), Some(0));
    let again = weir(dir.path(), &args);
    assert!(
        text(&again.stderr).contains("Finished in state Cached()"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(text(&again.stdout), "3\n");
}

#[test]
fn input_can_come_from_a_file_and_json_output_reports_the_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("input.json"), r#"{"a": 20, "b": 22}"#).unwrap();
    let arith = plugin("arith");
    let output = weir(
        dir.path(),
        &[
            "task",
            "run",
            &arith,
            "--task",
            "add",
            "--input",
            "@input.json",
            "--json",
        ],
    );
    assert_eq!(output.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["output"], 42);
    assert_eq!(report["state"], "Completed");
    assert!(report["id"].as_str().unwrap().starts_with("trun_"));
}

#[test]
fn exit_codes_tell_how_the_run_ended() {
    let dir = tempfile::tempdir().unwrap();
    let (flaky, misbehave, arith) = (plugin("flaky"), plugin("misbehave"), plugin("arith"));

    let failed = weir(
        dir.path(),
        &["task", "run", &flaky, "--task", "fatal-fails"],
    );
    assert_eq!(failed.status.code(), Some(1));
    assert!(text(&failed.stderr).contains("Finished in state Failed('fatal error, not retried"));

    let timed_out = weir(
        dir.path(),
        &[
            "task",
            "run",
            &misbehave,
            "--task",
            "spin",
            "--timeout",
            "200ms",
        ],
    );
    assert_eq!(timed_out.status.code(), Some(4));
    assert!(text(&timed_out.stderr).contains("Finished in state TimedOut('timed out"));

    let crashed = weir(
        dir.path(),
        &[
            "task", "run", &misbehave, "--task", "hog", "--memory", "16MiB",
        ],
    );
    assert_eq!(crashed.status.code(), Some(3));
    assert!(text(&crashed.stderr).contains("memory limit of 16 MiB"));

    let retried = weir(
        dir.path(),
        &[
            "task",
            "run",
            &flaky,
            "--task",
            "always-fails",
            "--retries",
            "1",
            "--retry-delay",
            "10ms",
        ],
    );
    assert_eq!(retried.status.code(), Some(1));
    let stderr = text(&retried.stderr);
    assert!(
        stderr.contains("| WARNING | Task run 'always-fails-0' - attempt 1 ended Failed"),
        "{stderr}"
    );
    assert!(stderr.contains("retry 1/1 in 10ms"), "{stderr}");

    let unknown = weir(dir.path(), &["task", "run", &arith, "--task", "nope"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(text(&unknown.stderr).contains("error: plugin `arith` has no task named `nope`"));

    let bad_json = weir(
        dir.path(),
        &["task", "run", &arith, "--task", "add", "--input", "{a:1}"],
    );
    assert_eq!(bad_json.status.code(), Some(2));
    assert!(text(&bad_json.stderr).contains("--input is not valid JSON"));
}

#[test]
fn bad_plugins_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fake.wasm"), "not wasm at all").unwrap();
    let fake = weir(dir.path(), &["task", "run", "fake.wasm", "--task", "x"]);
    assert_eq!(fake.status.code(), Some(2));
    assert_eq!(
        text(&fake.stderr).trim(),
        "error: fake is not a WebAssembly file (it does not start with the `\\0asm` magic bytes)"
    );
    let wrong = weir(dir.path(), &["inspect", &plugin("wrongworld")]);
    assert_eq!(wrong.status.code(), Some(2));
    assert!(text(&wrong.stderr).contains("wrongworld is not a weir plugin"));
}

#[test]
fn the_guest_does_not_inherit_stdin() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let misbehave = plugin("misbehave");
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir-under-test"))
        .current_dir(dir.path())
        .args([
            "task",
            "run",
            &misbehave,
            "--task",
            "escape",
            "--input",
            r#"{"port": 9}"#,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"secret typed at the terminal\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let stdin = report["stdin_bytes"].as_str().unwrap();
    assert!(stdin == "ok: 0" || stdin.starts_with("denied"), "{stdin}");
}

#[test]
fn inspect_lists_tasks_and_digest() {
    let dir = tempfile::tempdir().unwrap();
    let arith = plugin("arith");
    let output = weir(dir.path(), &["inspect", &arith, "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["name"], "arith");
    assert_eq!(report["digest"].as_str().unwrap().len(), 64);
    let cached = report["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|task| task["name"] == "cached-add")
        .unwrap();
    assert_eq!(cached["cache_policy"], "inputs");
    assert_eq!(cached["cache_expiration"], 3_600_000);

    let fetcher = text(&weir(dir.path(), &["inspect", &plugin("fetcher")]).stdout);
    assert!(fetcher.contains("  needs       http\n"), "{fetcher}");
    let human = weir(dir.path(), &["inspect", &plugin("flaky")]);
    let stdout = text(&human.stdout);
    assert!(
        stdout.contains("task flaky") && stdout.contains("retries     3"),
        "{stdout}"
    );
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn the_example_flow_runs_and_its_second_run_uses_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let squares = example("squares.toml");
    let args = ["run", &squares, "-p", "values=[1, 2, 3]", "-p", "scale=2"];
    let first = weir(dir.path(), &args);
    let stderr = text(&first.stderr);
    assert_eq!(first.status.code(), Some(0), "{stderr}");
    let output: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(
        output,
        serde_json::json!({"total": 14.0, "scaled": 28.0, "greeting": "Hello, sum of squares 14.0!"})
    );
    assert!(stderr.contains("| INFO    | Flow run '"), "{stderr}");
    assert!(stderr.contains("for flow 'squares'"), "{stderr}");
    assert!(
        stderr.contains("for flow 'sum'"),
        "the subflow runs: {stderr}"
    );
    assert!(
        stderr.contains("Created task run 'multiply-2' for task 'multiply'"),
        "{stderr}"
    );

    let second = weir(dir.path(), &args);
    let stderr = text(&second.stderr);
    assert_eq!(second.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("Finished in state Cached()"), "{stderr}");
}

#[test]
fn weir_run_reports_bad_flows_and_parameters() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("typo.toml"),
        "format = 1\nname = \"t\"\nnodez = 1\n",
    )
    .unwrap();
    let typo = weir(dir.path(), &["run", "typo.toml"]);
    assert_eq!(typo.status.code(), Some(2));
    let stderr = text(&typo.stderr);
    assert!(
        stderr.starts_with("error: typo.toml: TOML parse error at line 3, column 1"),
        "{stderr}"
    );
    assert!(
        stderr.contains("unknown field `nodez`, expected one of"),
        "{stderr}"
    );

    let squares = example("squares.toml");
    let unknown = weir(dir.path(), &["run", &squares, "-p", "colour=red"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        text(&unknown.stderr)
            .contains("the flow has no parameter `colour` (parameters: scale, values)")
    );
    let wrong = weir(dir.path(), &["run", &squares, "-p", "scale=big"]);
    assert_eq!(wrong.status.code(), Some(2));
    assert!(
        text(&wrong.stderr).contains("parameter `scale`: `big` is not a valid number"),
        "{}",
        text(&wrong.stderr)
    );
}

#[test]
fn run_history_can_be_listed_inspected_and_read() {
    let dir = tempfile::tempdir().unwrap();
    let squares = example("squares.toml");
    let run = weir(
        dir.path(),
        &["run", &squares, "-p", "values=[2, 3]", "--json"],
    );
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let name = report["name"].as_str().unwrap();
    let id = report["id"].as_str().unwrap();

    let listed = weir(dir.path(), &["runs", "ls", "--flow", "squares", "--json"]);
    let runs: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 1);
    assert_eq!(runs[0]["id"], id);
    let table = text(&weir(dir.path(), &["runs", "ls"]).stdout);
    assert!(
        table.contains(name) && table.contains("squares") && table.contains("sum"),
        "{table}"
    );
    let failed = weir(dir.path(), &["runs", "ls", "--state", "Failed", "--json"]);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&failed.stdout).unwrap(),
        serde_json::json!([])
    );

    let inspected = text(&weir(dir.path(), &["runs", "inspect", name]).stdout);
    assert!(
        inspected.contains(&format!("flow run    {name} ({id})")),
        "{inspected}"
    );
    assert!(
        inspected.contains("squares              2 task runs: 2 Completed"),
        "{inspected}"
    );
    assert!(inspected.contains("subflow run"), "{inspected}");
    let json = weir(dir.path(), &["runs", "inspect", id, "--json"]);
    let detail: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(detail["result"]["total"], 13.0);
    assert_eq!(detail["task_runs"].as_array().unwrap().len(), 4);

    let logs = text(&weir(dir.path(), &["runs", "logs", name]).stdout);
    assert!(
        logs.contains("Task run 'hello-0' - greeting sum of squares 13.0"),
        "{logs}"
    );

    let cache = weir(dir.path(), &["cache", "ls", "--json"]);
    let entries: serde_json::Value = serde_json::from_slice(&cache.stdout).unwrap();
    assert_eq!(entries.as_array().unwrap().len(), 1);
    assert_eq!(entries[0]["task"], "multiply");
    assert_eq!(
        text(&weir(dir.path(), &["cache", "clear"]).stdout),
        "removed 1 cache entries\n"
    );

    let missing = weir(dir.path(), &["runs", "inspect", "no-such-run"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("no run `no-such-run` in the store"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_killed_with_sigkill_is_resumed_without_rerunning_what_completed() {
    let dir = tempfile::tempdir().unwrap();
    let flow = dir.path().join("sleepers.toml");
    std::fs::write(
        &flow,
        format!(
            r#"
format = 1
name = "sleepers"
output = "sleep"

[plugins]
misbehave = "{}"

[nodes.sleep]
task = "misbehave.sleepy"
input = {{ ms = [{}] }}
map = ["ms"]

[nodes.after]
task = "misbehave.sleepy"
input = {{ ms = 1 }}
wait_for = ["sleep"]
"#,
            plugin("misbehave"),
            vec!["100"; 40].join(", ")
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir-under-test"))
        .current_dir(dir.path())
        .args(["run", "sleepers.toml", "--concurrency", "4"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let store_dir = dir.path().join(".weir");
    async fn completed(store: &weir_store_sqlite::SqliteStore) -> usize {
        use weir_store::History as _;
        store
            .task_runs(&weir_store::TaskRunFilter {
                state: Some(weir_core::State::Completed),
                ..Default::default()
            })
            .await
            .unwrap()
            .len()
    }
    // Wait until a fair part of the map is done, then kill the process outright.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        std::thread::sleep(std::time::Duration::from_millis(50));
        if store_dir.join("weir.db").exists() {
            let store = weir_store_sqlite::SqliteStore::open(&store_dir).unwrap();
            if completed(&store).await >= 8 {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the flow made no progress"
        );
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let store = weir_store_sqlite::SqliteStore::open(&store_dir).unwrap();
    let before = completed(&store).await;
    assert!(
        (8..40).contains(&before),
        "{before} completed before the kill"
    );
    let runs = store.flow_runs(&Default::default()).await.unwrap();
    assert_eq!(
        runs[0].state,
        weir_core::State::Running,
        "the killed run is left Running"
    );
    let id = runs[0].id.to_string();
    drop(store);

    let resumed = weir(dir.path(), &["run", "--resume", &id, "--concurrency", "8"]);
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed.stderr));
    let output: serde_json::Value = serde_json::from_slice(&resumed.stdout).unwrap();
    assert_eq!(output, serde_json::json!(vec![100; 40]));

    let store = weir_store_sqlite::SqliteStore::open(&store_dir).unwrap();
    let all = store
        .task_runs(&weir_store::TaskRunFilter::default())
        .await
        .unwrap();
    for index in 0..40u32 {
        let completed = all
            .iter()
            .filter(|run| run.map_index == Some(index) && run.state == weir_core::State::Completed)
            .count();
        assert_eq!(completed, 1, "element {index} completed {completed} times");
    }
    let crashed = all
        .iter()
        .filter(|run| run.state == weir_core::State::Crashed)
        .count();
    assert!(crashed <= 8, "{crashed} runs were in flight at the kill");
    let record = store
        .flow_run(&weir_core::FlowRunId::from_string(id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.state, weir_core::State::Completed);
}

#[test]
fn task_run_grants_directories_and_environment_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/hello.txt"), "hello from the host").unwrap();
    std::fs::write(
        dir.path().join("secrets.env"),
        "# for the test\nAPI_TOKEN=tok-98765-secret\n",
    )
    .unwrap();
    let misbehave = plugin("misbehave");
    let files = weir(
        dir.path(),
        &[
            "task",
            "run",
            &misbehave,
            "--task",
            "files",
            "--input",
            r#"{"read": ["/in/hello.txt"], "write": ["/in/x"]}"#,
            "--dir",
            "data:/in",
        ],
    );
    assert_eq!(files.status.code(), Some(0), "{}", text(&files.stderr));
    let report: serde_json::Value = serde_json::from_slice(&files.stdout).unwrap();
    assert_eq!(report["read /in/hello.txt"], "ok: hello from the host");
    assert!(
        report["write /in/x"]
            .as_str()
            .unwrap()
            .starts_with("denied"),
        "read-only by default"
    );

    let env = weir(
        dir.path(),
        &[
            "task",
            "run",
            &misbehave,
            "--task",
            "env",
            "--input",
            r#"{"names": ["API_TOKEN"]}"#,
            "--env",
            "API_TOKEN",
            "--secrets-file",
            "secrets.env",
        ],
    );
    let stderr = text(&env.stderr);
    assert_eq!(env.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("API_TOKEN is [redacted]"), "{stderr}");
    assert!(!stderr.contains("tok-98765"), "{stderr}");
    let logs = weir(
        dir.path(),
        &["runs", "logs", &{
            let listed = weir(dir.path(), &["runs", "ls", "--tasks", "--json"]);
            let runs: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
            runs[0]["id"].as_str().unwrap().to_owned()
        }],
    );
    assert!(
        !text(&logs.stdout).contains("tok-98765"),
        "{}",
        text(&logs.stdout)
    );

    let bad = weir(
        dir.path(),
        &[
            "task",
            "run",
            &misbehave,
            "--task",
            "files",
            "--dir",
            "data:/in:maybe",
        ],
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("should be `ro` or `rw`"),
        "{}",
        text(&bad.stderr)
    );
}

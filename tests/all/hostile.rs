//! A plugin that attacks the host (`plugins/hostile`): whatever its metadata says and
//! whatever its tasks do, the host refuses it or records a named state, with a message
//! that says what happened, and stays within bounded memory.

use serde_json::json;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use weir_core::State;
use weir_runner::TaskRequest;
use weir_tests::{Harness, load_plugin, plugin_path, runtime_with, shared_runtime};

use crate::command::weir_command;

/// A copy of the hostile plugin whose `info()` runs in `mode` (see its source).
fn variant(dir: &std::path::Path, mode: &str) -> PathBuf {
    let marker = b"WEIR-HOSTILE-MODE:normal........";
    let mut replacement = format!("WEIR-HOSTILE-MODE:{mode}").into_bytes();
    assert!(
        replacement.len() <= marker.len(),
        "mode `{mode}` is too long"
    );
    replacement.resize(marker.len(), b'.');
    let mut bytes = std::fs::read(plugin_path("hostile")).unwrap();
    let at = bytes
        .windows(marker.len())
        .position(|window| window == marker)
        .expect("the mode marker is in the component");
    bytes[at..at + marker.len()].copy_from_slice(&replacement);
    let path = dir.join(format!("hostile-{mode}.wasm"));
    std::fs::write(&path, bytes).unwrap();
    path
}

#[tokio::test]
async fn hostile_metadata_is_refused_at_load_naming_the_task_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "jitter-inf",
            "task `jittery`: retry-jitter-factor is inf, not a number from 0 to 10",
        ),
        ("jitter-nan", "task `jittery`: retry-jitter-factor is NaN"),
        (
            "delay-max",
            "task `patient`: a retry delay is 18446744073709551615 ms, above the maximum of 86400000 ms (a day)",
        ),
        (
            "backoff-max",
            "task `patient`: retry-backoff.base-ms is 18446744073709551615 ms",
        ),
        (
            "timeout-max",
            "task `forever`: timeout-ms is 18446744073709551615 ms, above the maximum",
        ),
        (
            "retries-max",
            "task `stubborn`: retries is 4294967295, above the maximum of 1000",
        ),
        ("dup", "two tasks are named `twin`"),
        ("empty", "a task has an empty name"),
        ("huge-name", "a task name is 1048576 bytes long"),
        (
            "many",
            "it declares 100000 tasks, above the maximum of 1000",
        ),
        ("panic", "the task panicked at hostile/src/lib.rs:"),
        ("exit", "the task called exit(0) before it returned"),
        ("alloc", "memory allocation of"),
    ];
    for (mode, expected) in cases {
        let path = variant(dir.path(), mode);
        let error = shared_runtime()
            .load_plugin_file(&path)
            .await
            .expect_err(mode)
            .to_string();
        assert!(
            error.starts_with(&format!("hostile-{mode}: ")) && error.contains(expected),
            "{mode}: {error}"
        );
        assert!(error.len() < 4096, "{mode}: a bounded message");
    }
    // A panic's message (on the line after `panicked at …:`) is the cause, not Rust's
    // backtrace hint on the last line.
    let error = shared_runtime()
        .load_plugin_file(&variant(dir.path(), "panic"))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("info exploded"), "{error}");
    assert!(!error.contains("RUST_BACKTRACE"), "{error}");
}

#[tokio::test]
async fn a_spinning_info_fails_the_load_at_the_configured_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime_with(|config| config.info_timeout = Duration::from_millis(300));
    let started = Instant::now();
    let error = runtime
        .load_plugin_file(&variant(dir.path(), "spin"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("calling its `info` export failed: timed out after"),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}

async fn run(
    harness: &Harness,
    task: &str,
    input: serde_json::Value,
) -> weir_runner::TaskRunOutcome {
    let plugin = load_plugin("hostile").await;
    harness
        .runner
        .run_task(TaskRequest::new(plugin, task, input))
        .await
        .unwrap()
}

#[tokio::test]
async fn outputs_past_the_size_or_value_bound_crash_naming_the_limit() {
    let harness = Harness::new();
    let big = run(&harness, "big-output", json!({"mib": 64})).await;
    assert_eq!(big.state, State::Crashed);
    let message = big.message.unwrap();
    assert!(
        message.contains("the task's output is 64")
            && message.contains("above the limit of 16 MiB"),
        "{message}"
    );
    let many = run(&harness, "big-output", json!({"mib": 8})).await;
    assert_eq!(many.state, State::Crashed);
    let message = many.message.unwrap();
    assert!(
        message.contains("JSON values, above the limit of 2000000"),
        "{message}"
    );
    let fine = run(&harness, "big-output", json!({"mib": 1})).await;
    assert_eq!(fine.state, State::Completed);
}

#[tokio::test]
async fn a_huge_error_message_is_cut_to_its_bound() {
    let harness = Harness::new();
    let failed = run(&harness, "big-error", json!({"mib": 100})).await;
    assert_eq!(failed.state, State::Failed);
    let message = failed.message.unwrap();
    assert!(message.len() < 20 << 10, "{} bytes kept", message.len());
    assert!(
        message.ends_with("… (cut: 100 MiB in all, limit 16384 bytes)"),
        "{}",
        &message[message.len() - 80..]
    );
    let history = harness.store.state_history(&failed.id).await.unwrap();
    assert!(history.iter().all(|change| {
        change
            .message
            .as_ref()
            .is_none_or(|message| message.len() < 20 << 10)
    }));
}

#[tokio::test]
async fn exit_and_allocation_failures_blame_the_guest() {
    let harness = Harness::new();
    let exited = run(&harness, "exit", json!({"code": 0})).await;
    assert_eq!(exited.state, State::Crashed);
    assert_eq!(
        exited.message.as_deref(),
        Some("the task called exit(0) before it returned")
    );
    let exited = run(&harness, "exit", json!({"code": 3})).await;
    assert_eq!(
        exited.message.as_deref(),
        Some("the task called exit with a failure status before it returned")
    );
    let starved = run(&harness, "alloc", json!({})).await;
    assert_eq!(starved.state, State::Crashed);
    let message = starved.message.unwrap();
    // The guest's allocator gives up before asking the host for memory: its own words
    // are the cause.
    assert_eq!(
        message,
        "out of memory: memory allocation of 2147483647 bytes failed in the task (its memory limit is 256 MiB)"
    );
}

#[tokio::test]
async fn host_resources_are_bounded_by_the_memory_limit() {
    let harness = Harness::new();
    let held = run(&harness, "headers", json!({"count": 10000})).await;
    assert_eq!(held.state, State::Crashed);
    let message = held.message.unwrap();
    assert!(
        message.starts_with("out of host resources: the task holds more than 1024 handles"),
        "{message}"
    );
    let few = run(&harness, "headers", json!({"count": 100})).await;
    assert_eq!(few.state, State::Completed);
    assert_eq!(few.output, Some(json!(100)));
}

#[tokio::test]
async fn a_cache_key_that_times_out_is_not_asked_again() {
    let harness = Harness::with_runtime(runtime_with(|config| {
        config.cache_key_timeout = Duration::from_millis(200)
    }));
    let plugin = harness
        .runner
        .runtime()
        .load_plugin_file(&plugin_path("hostile"))
        .await
        .unwrap();
    let first = harness
        .runner
        .run_task(TaskRequest::new(plugin.clone(), "slow-key", json!({})))
        .await
        .unwrap();
    assert_eq!(first.state, State::Completed);
    let started = Instant::now();
    let second = harness
        .runner
        .run_task(TaskRequest::new(plugin, "slow-key", json!({})))
        .await
        .unwrap();
    assert_eq!(second.state, State::Completed);
    assert!(started.elapsed() < Duration::from_secs(5));
    let logs = harness.observer.log_messages();
    assert!(
        logs.iter().any(|line| line
            .starts_with("computing the cache key failed, running without cache: TimedOut")),
        "{logs:#?}"
    );
    assert!(
        logs.iter().any(|line| line
            == "the cache key function of this task timed out earlier in this process; running without cache"),
        "{logs:#?}"
    );
}

/// The peak resident memory of a `weir task run` of a hostile task, sampled from /proc.
fn peak_rss_mib(dir: &std::path::Path, task: &str, input: &str) -> (Option<i32>, u64) {
    let hostile = plugin_path("hostile").display().to_string();
    let mut child = weir_command(
        dir,
        &["task", "run", &hostile, "--task", task, "--input", input],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0;
    loop {
        if let Ok(status) = std::fs::read_to_string(&status_file)
            && let Some(line) = status.lines().find(|line| line.starts_with("VmHWM:"))
        {
            let kib: u64 = line
                .split_whitespace()
                .nth(1)
                .and_then(|kib| kib.parse().ok())
                .unwrap_or(0);
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            return (status.code(), peak_kib >> 10);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn hostile_tasks_keep_the_host_process_within_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    // Each was ~0.8–2.4 GiB before the bounds; a generous bound against a noisy machine.
    for (task, input) in [
        ("big-output", r#"{"mib": 64}"#),
        ("big-error", r#"{"mib": 100}"#),
        ("headers", r#"{"count": 10000}"#),
    ] {
        let (code, peak) = peak_rss_mib(dir.path(), task, input);
        assert!(matches!(code, Some(1 | 3)), "{task} exited {code:?}");
        assert!(peak < 700, "{task}: peak RSS {peak} MiB");
    }
}

#[test]
fn bounds_change_with_environment_variables_and_a_bad_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let hostile = plugin_path("hostile").display().to_string();
    let run = |variable: &str, value: &str| {
        weir_command(
            dir.path(),
            &[
                "task",
                "run",
                &hostile,
                "--task",
                "big-output",
                "--input",
                r#"{"mib": 1}"#,
            ],
        )
        .env(variable, value)
        .output()
        .unwrap()
    };
    let small = run("WEIR_MAX_OUTPUT", "1KiB");
    let stderr = String::from_utf8_lossy(&small.stderr);
    assert_eq!(small.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("above the limit of 1024 bytes (WEIR_MAX_OUTPUT)"),
        "{stderr}"
    );
    let bad = run("WEIR_MAX_OUTPUT", "lots");
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the environment variable WEIR_MAX_OUTPUT: invalid size `lots`"),
        "{stderr}"
    );
}

//! The sandbox: time, memory, fuel, output bounds, crashes and denied authority.

use serde_json::json;
use std::time::{Duration, Instant};
use weir_core::{State, TaskOverrides};
use weir_runner::TaskRequest;
use weir_tests::{Harness, load_plugin};

fn overrides(timeout_ms: Option<u64>) -> TaskOverrides {
    TaskOverrides {
        timeout: timeout_ms.map(Duration::from_millis),
        ..Default::default()
    }
}

/// CPU time consumed by the calling thread so far, from /proc (utime + stime, in ticks).
fn thread_cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("/proc is mounted");
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

// A single-threaded runtime: if the timed-out guest were still being run, it would be
// run on this very thread and show up in its CPU time.
#[tokio::test(flavor = "current_thread")]
async fn an_infinite_loop_times_out_at_its_deadline_and_stops_running() {
    let harness = Harness::new();
    let plugin = load_plugin("misbehave").await;
    let started = Instant::now();
    let outcome = harness
        .runner
        .run_task(
            TaskRequest::new(plugin.clone(), "spin", json!({}))
                .with_overrides(overrides(Some(200))),
        )
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(outcome.state, State::TimedOut, "{outcome:?}");
    assert!(
        elapsed >= Duration::from_millis(200),
        "stopped early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(300),
        "stopped late: {elapsed:?}"
    );
    assert!(
        outcome
            .message
            .as_deref()
            .unwrap()
            .contains("timeout of 200ms")
    );

    let before = thread_cpu_ticks();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spent = thread_cpu_ticks() - before;
    // Ticks are 10 ms; a guest still spinning would burn about 30 of them.
    assert!(
        spent <= 5,
        "the thread kept working after the timeout: {spent} ticks"
    );
}

#[tokio::test]
async fn a_blocking_host_call_is_stopped_by_the_wall_clock() {
    let harness = Harness::new();
    let plugin = load_plugin("misbehave").await;
    let started = Instant::now();
    let outcome = harness
        .runner
        .run_task(
            TaskRequest::new(plugin, "sleepy", json!({"ms": 10_000}))
                .with_overrides(overrides(Some(200))),
        )
        .await
        .unwrap();
    assert_eq!(outcome.state, State::TimedOut, "{outcome:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn unbounded_allocation_crashes_at_the_memory_limit_and_the_host_carries_on() {
    let harness = Harness::new();
    let plugin = load_plugin("misbehave").await;
    let outcome = harness
        .runner
        .run_task(
            TaskRequest::new(plugin, "hog", json!({})).with_overrides(TaskOverrides {
                memory_bytes: Some(32 << 20),
                timeout: Some(Duration::from_secs(20)),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    assert_eq!(outcome.state, State::Crashed, "{outcome:?}");
    let message = outcome.message.unwrap();
    assert!(message.contains("memory limit of 32 MiB"), "{message}");

    let hello = load_plugin("hello").await;
    let next = harness
        .runner
        .run_task(TaskRequest::new(hello, "hello", json!({"name": "after"})))
        .await
        .unwrap();
    assert_eq!(next.output, Some(json!("Hello, after!")));
}

#[tokio::test]
async fn fuel_bounds_cpu_deterministically() {
    let harness = Harness::new();
    let plugin = load_plugin("misbehave").await;
    let outcome = harness
        .runner
        .run_task(
            TaskRequest::new(plugin, "spin", json!({})).with_overrides(TaskOverrides {
                fuel: Some(5_000_000),
                timeout: Some(Duration::from_secs(20)),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    assert_eq!(outcome.state, State::Crashed, "{outcome:?}");
    assert!(outcome.message.unwrap().contains("fuel limit of 5000000"));
}

#[tokio::test]
async fn a_panic_crashes_with_its_message() {
    let harness = Harness::new();
    let plugin = load_plugin("misbehave").await;
    let outcome = harness
        .runner
        .run_task(TaskRequest::new(
            plugin,
            "boom",
            json!({"message": "the flux capacitor broke"}),
        ))
        .await
        .unwrap();
    assert_eq!(outcome.state, State::Crashed);
    let message = outcome.message.unwrap();
    assert!(message.contains("panicked at"), "{message}");
    assert!(message.contains("the flux capacitor broke"), "{message}");
    // The panic is also a log line of the run.
    let logs = harness.store.logs(&outcome.id).await.unwrap();
    assert!(
        logs.iter()
            .any(|line| line.message.contains("the flux capacitor broke"))
    );
}

#[tokio::test]
async fn a_stack_overflow_crashes() {
    let harness = Harness::new();
    let plugin = load_plugin("misbehave").await;
    let outcome = harness
        .runner
        .run_task(
            TaskRequest::new(plugin, "overflow", json!({})).with_overrides(overrides(Some(20_000))),
        )
        .await
        .unwrap();
    assert_eq!(outcome.state, State::Crashed, "{outcome:?}");
    let message = outcome.message.unwrap();
    assert!(message.contains("stack overflow"), "{message}");
}

#[tokio::test]
async fn files_environment_and_sockets_are_denied() {
    let harness = Harness::new();
    let plugin = load_plugin("misbehave").await;
    // A real listener the guest is not allowed to reach.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let outcome = harness
        .runner
        .run_task(TaskRequest::new(plugin, "escape", json!({"port": port})))
        .await
        .unwrap();
    assert_eq!(outcome.state, State::Completed, "{outcome:?}");
    let report = outcome.output.unwrap();
    for (attempt, result) in report.as_object().unwrap() {
        let result = result.as_str().unwrap();
        if attempt == "env_count" {
            assert_eq!(result, "ok: 0", "the guest saw environment variables");
        } else if attempt == "stdin_bytes" {
            // Either no bytes or a closed stream; never the host's stdin.
            assert!(
                result == "ok: 0" || result.starts_with("denied"),
                "stdin: {result}"
            );
        } else {
            assert!(
                result.starts_with("denied"),
                "{attempt} was not denied: {result}"
            );
        }
    }
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err(), "the guest reached the listener");
}

#[tokio::test]
async fn endless_printing_is_bounded() {
    let harness = Harness::new();
    let plugin = load_plugin("misbehave").await;
    let outcome = harness
        .runner
        .run_task(
            TaskRequest::new(plugin, "flood", json!({})).with_overrides(overrides(Some(1500))),
        )
        .await
        .unwrap();
    assert_eq!(outcome.state, State::TimedOut, "{outcome:?}");
    let logs = harness.store.logs(&outcome.id).await.unwrap();
    let stored: usize = logs.iter().map(|line| line.message.len()).sum();
    assert!(stored <= (1 << 20) + 4096, "{stored} bytes of log kept");
    assert!(
        logs.iter()
            .any(|line| line.message.contains("log limit of 1048576 bytes reached")),
        "the truncation is not reported"
    );
    assert!(logs.iter().any(|line| {
        line.message
            .contains("bytes of log lines and output were dropped")
    }));
}

#[tokio::test]
async fn printed_lines_become_log_lines_of_the_run() {
    let harness = Harness::new();
    let plugin = load_plugin("misbehave").await;
    let outcome = harness
        .runner
        .run_task(TaskRequest::new(plugin, "chatty", json!({"lines": 3})))
        .await
        .unwrap();
    assert_eq!(outcome.state, State::Completed);
    let messages: Vec<String> = harness
        .store
        .logs(&outcome.id)
        .await
        .unwrap()
        .into_iter()
        .map(|line| line.message)
        .collect();
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert_eq!(harness.observer.log_messages(), messages);
}

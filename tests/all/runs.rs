//! Task runs: outputs, several tasks per plugin, states and their history, retries,
//! input and output errors, and what is recorded.

use serde_json::json;
use std::time::Duration;
use weir_core::{RetryDelays, State, TaskOverrides};
use weir_runner::{RunnerError, TaskRequest};
use weir_store::TaskRunFilter;
use weir_tests::{Event, Harness, load_plugin};

#[tokio::test]
async fn hello_completes_and_is_recorded() {
    let harness = Harness::new();
    let plugin = load_plugin("hello").await;
    let outcome = harness
        .runner
        .run_task(TaskRequest::new(
            plugin.clone(),
            "hello",
            json!({"name": "world"}),
        ))
        .await
        .unwrap();
    assert_eq!(outcome.state, State::Completed);
    assert_eq!(outcome.output, Some(json!("Hello, world!")));
    assert_eq!(outcome.name, "hello-0");

    let record = harness.store.task_run(&outcome.id).await.unwrap().unwrap();
    assert_eq!(record.state, State::Completed);
    assert_eq!(record.plugin_digest, *plugin.digest());
    assert_eq!(record.input, json!({"name": "world"}));
    let stored = harness
        .store
        .result(record.result_digest.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(stored, json!("Hello, world!"));
    let states: Vec<State> = harness
        .store
        .state_history(&outcome.id)
        .await
        .unwrap()
        .iter()
        .map(|change| change.state)
        .collect();
    assert_eq!(states, [State::Pending, State::Running, State::Completed]);
    let logs = harness.store.logs(&outcome.id).await.unwrap();
    assert_eq!(logs[0].message, "greeting world");
    assert_eq!(
        harness.observer.events()[0],
        Event::Created {
            name: "hello-0".into(),
            task: "hello".into()
        }
    );
}

#[tokio::test]
async fn a_plugin_holds_several_tasks() {
    let harness = Harness::new();
    let plugin = load_plugin("arith").await;
    let names: Vec<&str> = plugin
        .tasks()
        .iter()
        .map(|task| task.name.as_str())
        .collect();
    for expected in [
        "add",
        "multiply",
        "divide",
        "whoami",
        "cached-add",
        "keyed",
        "echo",
        "big",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    let run = |task: &'static str, input| {
        let request = TaskRequest::new(plugin.clone(), task, input);
        let runner = &harness.runner;
        async move { runner.run_task(request).await.unwrap() }
    };
    assert_eq!(
        run("add", json!({"a": 2, "b": 40})).await.output,
        Some(json!(42))
    );
    assert_eq!(
        run("multiply", json!({"a": 1.5, "b": 4})).await.output,
        Some(json!(6.0))
    );
    let nested = json!({"list": [1, {"deep": null}], "text": "ünïcode"});
    assert_eq!(
        run("echo", json!({"value": nested})).await.output,
        Some(nested)
    );

    let whoami = run("whoami", json!({})).await;
    let context = whoami.output.unwrap();
    assert_eq!(context["task_run_id"], json!(whoami.id.to_string()));
    assert_eq!(context["task_run_name"], json!(whoami.name));
    assert_eq!(context["task_name"], json!("whoami"));
    assert_eq!(context["attempt"], json!(1));
}

#[tokio::test]
async fn a_loaded_plugin_is_recorded_by_digest() {
    let harness = Harness::new();
    let plugin = harness
        .runner
        .load_plugin(&weir_tests::plugin_path("hello"))
        .await
        .unwrap();
    let record = harness
        .store
        .plugin(plugin.digest())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.name, "hello");
    assert_eq!(record.tasks[0].name, "hello");
    assert_eq!(record.tasks[0].version.as_deref(), Some("1.0"));
}

#[tokio::test]
async fn a_flaky_task_succeeds_on_its_third_attempt() {
    let harness = Harness::new();
    let plugin = load_plugin("flaky").await;
    let outcome = harness
        .runner
        .run_task(TaskRequest::new(plugin, "flaky", json!({"succeed_on": 3})))
        .await
        .unwrap();
    assert_eq!(outcome.state, State::Completed, "{outcome:?}");
    assert_eq!(outcome.output, Some(json!("succeeded on attempt 3")));
    assert_eq!(outcome.attempts, 3);
    let history = harness.store.state_history(&outcome.id).await.unwrap();
    let states: Vec<(State, u32)> = history
        .iter()
        .map(|change| (change.state, change.attempt))
        .collect();
    assert_eq!(
        states,
        [
            (State::Pending, 0),
            (State::Running, 1),
            (State::AwaitingRetry, 1),
            (State::Running, 2),
            (State::AwaitingRetry, 2),
            (State::Running, 3),
            (State::Completed, 3),
        ]
    );
    assert!(
        history[2]
            .message
            .as_deref()
            .unwrap()
            .contains("attempt 1 failed")
    );
    assert!(history.windows(2).all(|pair| pair[0].at <= pair[1].at));
}

#[tokio::test]
async fn retry_delays_are_waited() {
    let harness = Harness::new();
    let plugin = load_plugin("flaky").await;
    let started = std::time::Instant::now();
    let outcome = harness
        .runner
        .run_task(
            TaskRequest::new(plugin, "flaky", json!({"succeed_on": 3})).with_overrides(
                TaskOverrides {
                    retry_delays: Some(RetryDelays::PerRetry(vec![
                        Duration::from_millis(100),
                        Duration::from_millis(200),
                    ])),
                    ..Default::default()
                },
            ),
        )
        .await
        .unwrap();
    assert_eq!(outcome.state, State::Completed);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    let history = harness.store.state_history(&outcome.id).await.unwrap();
    assert!(
        history[2]
            .message
            .as_deref()
            .unwrap()
            .ends_with("retry 1/3 in 100ms")
    );
    assert!(
        history[4]
            .message
            .as_deref()
            .unwrap()
            .ends_with("retry 2/3 in 200ms")
    );
}

#[tokio::test]
async fn retries_run_out_and_the_run_fails() {
    let harness = Harness::new();
    let plugin = load_plugin("flaky").await;
    let outcome = harness
        .runner
        .run_task(TaskRequest::new(plugin, "always-fails", json!({})))
        .await
        .unwrap();
    assert_eq!(outcome.state, State::Failed);
    assert_eq!(outcome.attempts, 3);
    assert!(outcome.message.unwrap().contains("after 3 attempts"));
}

#[tokio::test]
async fn a_fatal_error_is_not_retried() {
    let harness = Harness::new();
    let plugin = load_plugin("flaky").await;
    let outcome = harness
        .runner
        .run_task(TaskRequest::new(plugin, "fatal-fails", json!({})))
        .await
        .unwrap();
    assert_eq!(outcome.state, State::Failed);
    assert_eq!(outcome.attempts, 1);
    assert!(
        outcome
            .message
            .unwrap()
            .starts_with("fatal error, not retried")
    );
}

#[tokio::test]
async fn timeouts_and_crashes_are_retried_like_failures() {
    let harness = Harness::new();
    let plugin = load_plugin("misbehave").await;
    let outcome = harness
        .runner
        .run_task(
            TaskRequest::new(plugin.clone(), "spin", json!({})).with_overrides(TaskOverrides {
                retries: Some(1),
                timeout: Some(Duration::from_millis(100)),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    assert_eq!(outcome.state, State::TimedOut);
    assert_eq!(outcome.attempts, 2);

    let crashed = harness
        .runner
        .run_task(
            TaskRequest::new(plugin, "boom", json!({"message": "again"})).with_overrides(
                TaskOverrides {
                    retries: Some(2),
                    ..Default::default()
                },
            ),
        )
        .await
        .unwrap();
    assert_eq!(crashed.state, State::Crashed);
    assert_eq!(crashed.attempts, 3);
    let states: Vec<State> = harness
        .store
        .state_history(&crashed.id)
        .await
        .unwrap()
        .iter()
        .map(|change| change.state)
        .collect();
    assert_eq!(
        states
            .iter()
            .filter(|state| **state == State::AwaitingRetry)
            .count(),
        2
    );
}

#[tokio::test]
async fn a_wrong_input_is_a_fatal_error_naming_the_field() {
    let harness = Harness::new();
    let plugin = load_plugin("arith").await;
    let wrong_type = harness
        .runner
        .run_task(TaskRequest::new(
            plugin.clone(),
            "add",
            json!({"a": 1, "b": "two"}),
        ))
        .await
        .unwrap();
    assert_eq!(wrong_type.state, State::Failed);
    let message = wrong_type.message.unwrap();
    assert!(message.contains("fatal"), "{message}");
    assert!(
        message.contains('b') && message.contains("invalid type"),
        "{message}"
    );

    let missing = harness
        .runner
        .run_task(TaskRequest::new(plugin.clone(), "add", json!({"a": 1})))
        .await
        .unwrap();
    assert!(missing.message.unwrap().contains("missing field `b`"));

    let division = harness
        .runner
        .run_task(TaskRequest::new(plugin, "divide", json!({"a": 1, "b": 0})))
        .await
        .unwrap();
    assert_eq!(division.state, State::Failed);
    assert_eq!(division.attempts, 1);
}

#[tokio::test]
async fn an_unknown_task_or_a_non_object_input_does_not_start() {
    let harness = Harness::new();
    let plugin = load_plugin("arith").await;
    let error = harness
        .runner
        .run_task(TaskRequest::new(plugin.clone(), "subtract", json!({})))
        .await
        .unwrap_err();
    assert!(matches!(error, RunnerError::UnknownTask { .. }));
    let message = error.to_string();
    assert!(
        message.contains("no task named `subtract`") && message.contains("add, multiply"),
        "{message}"
    );

    let error = harness
        .runner
        .run_task(TaskRequest::new(plugin, "add", json!([1, 2])))
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "the input of task `add` must be a JSON object, not an array"
    );
    assert!(
        harness
            .store
            .task_runs(&TaskRunFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn output_that_is_not_json_crashes_the_run() {
    let harness = Harness::new();
    let plugin = load_plugin("rawplugin").await;
    let outcome = harness
        .runner
        .run_task(TaskRequest::new(plugin, "garbage", json!({})))
        .await
        .unwrap();
    assert_eq!(outcome.state, State::Crashed);
    let message = outcome.message.unwrap();
    assert!(
        message.contains("not JSON") && message.contains("this is {not json"),
        "{message}"
    );
}

#[tokio::test]
async fn large_results_live_in_the_content_addressed_directory() {
    let harness = Harness::new();
    let plugin = load_plugin("arith").await;
    let outcome = harness
        .runner
        .run_task(TaskRequest::new(plugin, "big", json!({"size": 300_000})))
        .await
        .unwrap();
    assert_eq!(outcome.state, State::Completed);
    let digest = harness
        .store
        .task_run(&outcome.id)
        .await
        .unwrap()
        .unwrap()
        .result_digest
        .unwrap();
    let file = harness
        .dir
        .path()
        .join(".weir/blobs")
        .join(&digest[..2])
        .join(&digest);
    assert!(file.metadata().unwrap().len() > 300_000);
    let stored = harness.store.result(&digest).await.unwrap();
    assert_eq!(stored.as_str().unwrap().len(), 300_000);
}

#[tokio::test]
async fn runs_can_be_listed_by_task_and_state() {
    let harness = Harness::new();
    let arith = load_plugin("arith").await;
    for b in 0..3 {
        harness
            .runner
            .run_task(TaskRequest::new(
                arith.clone(),
                "divide",
                json!({"a": 6, "b": b}),
            ))
            .await
            .unwrap();
    }
    let all = harness
        .store
        .task_runs(&TaskRunFilter::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    let names: Vec<&str> = all.iter().map(|run| run.name.as_str()).collect();
    assert_eq!(names, ["divide-2", "divide-1", "divide-0"]);
    let failed = harness
        .store
        .task_runs(&TaskRunFilter {
            state: Some(State::Failed),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].name, "divide-0");
}

//! Tasks written in Python (componentize-py) and JavaScript (componentize-js) run in the same
//! host as Rust ones, with the same guarantees: retries, fatal errors, timeouts, memory limits,
//! logs and caching; and a flow passes data between the three languages.

use serde_json::json;
use std::time::{Duration, Instant};
use weir_core::{LogLevel, State, TaskOverrides};
use weir_runner::TaskRequest;
use weir_tests::{Harness, load_plugin};

/// The Python and the JavaScript test plugins hold tasks of the same names and behaviour.
const PLUGINS: [&str; 2] = ["pydemo", "jsdemo"];

async fn run_with(
    harness: &Harness,
    plugin: &str,
    task: &str,
    input: serde_json::Value,
    overrides: TaskOverrides,
) -> weir_runner::TaskRunOutcome {
    let plugin = load_plugin(plugin).await;
    harness
        .runner
        .run_task(TaskRequest::new(plugin, task, input).with_overrides(overrides))
        .await
        .unwrap()
}

async fn run(
    harness: &Harness,
    plugin: &str,
    task: &str,
    input: serde_json::Value,
) -> weir_runner::TaskRunOutcome {
    run_with(harness, plugin, task, input, TaskOverrides::default()).await
}

async fn logs(harness: &Harness, id: &weir_core::TaskRunId) -> Vec<(LogLevel, String)> {
    harness
        .store
        .logs(id)
        .await
        .unwrap()
        .into_iter()
        .map(|line| (line.level, line.message))
        .collect()
}

#[tokio::test]
async fn an_exception_is_retried_until_the_task_succeeds() {
    let harness = Harness::new();
    for plugin in PLUGINS {
        let outcome = run(&harness, plugin, "flaky", json!({})).await;
        assert_eq!(outcome.state, State::Completed, "{plugin}: {outcome:?}");
        assert_eq!(outcome.attempts, 3, "{plugin}");
        assert_eq!(
            outcome.output,
            Some(json!("succeeded on attempt 3")),
            "{plugin}"
        );
        let lines = logs(&harness, &outcome.id).await;
        assert!(
            lines
                .iter()
                .any(|(level, message)| *level == LogLevel::Error
                    && message.contains("attempt 1 failed")),
            "{plugin}: the exception and its stack are logged: {lines:?}"
        );
    }
}

#[tokio::test]
async fn a_fatal_error_is_not_retried() {
    let harness = Harness::new();
    for plugin in PLUGINS {
        let outcome = run(
            &harness,
            plugin,
            "fatal",
            json!({"reason": "the moon is full"}),
        )
        .await;
        assert_eq!(outcome.state, State::Failed, "{plugin}: {outcome:?}");
        assert_eq!(outcome.attempts, 1, "{plugin}: a fatal error was retried");
        let message = outcome.message.unwrap();
        assert!(
            message.contains("fatal") && message.contains("the moon is full"),
            "{plugin}: {message}"
        );
    }
}

#[tokio::test]
async fn an_infinite_loop_ends_timed_out() {
    let harness = Harness::new();
    for plugin in PLUGINS {
        let started = Instant::now();
        let outcome = run_with(
            &harness,
            plugin,
            "spin",
            json!({}),
            TaskOverrides {
                timeout: Some(Duration::from_secs(1)),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(outcome.state, State::TimedOut, "{plugin}: {outcome:?}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{plugin}: took {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn unbounded_allocation_crashes_at_the_memory_limit() {
    let harness = Harness::new();
    for plugin in PLUGINS {
        let outcome = run_with(
            &harness,
            plugin,
            "hog",
            json!({}),
            TaskOverrides {
                memory_bytes: Some(96 << 20),
                timeout: Some(Duration::from_secs(60)),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(outcome.state, State::Crashed, "{plugin}: {outcome:?}");
        let message = outcome.message.unwrap();
        assert!(
            message.contains("memory limit of 96 MiB"),
            "{plugin}: {message}"
        );
        // The host carries on: the same plugin runs again at once.
        let after = run(&harness, plugin, "context", json!({})).await;
        assert_eq!(after.state, State::Completed, "{plugin}: {after:?}");
    }
}

#[tokio::test]
async fn logger_lines_and_prints_become_the_runs_log() {
    let harness = Harness::new();
    for plugin in PLUGINS {
        let outcome = run(&harness, plugin, "chatter", json!({})).await;
        assert_eq!(outcome.state, State::Completed, "{plugin}: {outcome:?}");
        let lines = logs(&harness, &outcome.id).await;
        for (level, text) in [
            (LogLevel::Debug, "a debug line"),
            (LogLevel::Info, "an info line"),
            (LogLevel::Warning, "a warning line"),
            (LogLevel::Error, "an error line"),
            (LogLevel::Info, "a printed line"),
        ] {
            assert!(
                lines
                    .iter()
                    .any(|(l, message)| *l == level && message == text),
                "{plugin}: no {level:?} line `{text}` in {lines:?}"
            );
        }
    }
}

#[tokio::test]
async fn results_are_cached_by_input() {
    let harness = Harness::new();
    for plugin in PLUGINS {
        let first = run(&harness, plugin, "cached", json!({"x": 7})).await;
        assert_eq!(first.state, State::Completed, "{plugin}: {first:?}");
        let second = run(&harness, plugin, "cached", json!({"x": 7})).await;
        assert_eq!(second.state, State::Cached, "{plugin}: {second:?}");
        assert_eq!(second.output, first.output, "{plugin}");
        let other = run(&harness, plugin, "cached", json!({"x": 8})).await;
        assert_eq!(other.state, State::Completed, "{plugin}");
        assert_ne!(other.output, first.output, "{plugin}");
    }
}

#[tokio::test]
async fn the_run_context_reaches_the_guest() {
    let harness = Harness::new();
    for plugin in PLUGINS {
        let outcome = run(&harness, plugin, "context", json!({})).await;
        assert_eq!(outcome.state, State::Completed, "{plugin}: {outcome:?}");
        let output = outcome.output.unwrap();
        let id_field = if plugin == "pydemo" {
            "task_run_id"
        } else {
            "taskRunId"
        };
        assert_eq!(
            output[id_field],
            json!(outcome.id.as_str()),
            "{plugin}: {output}"
        );
        assert_eq!(output["attempt"], json!(1), "{plugin}: {output}");
    }
}

#[tokio::test]
async fn python_checks_the_input_against_the_type_hints() {
    let harness = Harness::new();
    let ok = run(
        &harness,
        "pydemo",
        "greet",
        json!({"person": {"name": "Ada", "age": 36}}),
    )
    .await;
    assert_eq!(ok.output, Some(json!("Hello, Ada (36)!")), "{ok:?}");
    for (input, expected) in [
        (
            json!({"person": {"name": 3}}),
            "invalid input for task `greet`: person.name: expected a string, got an integer",
        ),
        (
            json!({"person": {"name": "Ada", "height": 2}}),
            "invalid input for task `greet`: person: unknown field `height`, expected `name` or `age`",
        ),
        (
            json!({}),
            "invalid input for task `greet`: missing field `person`",
        ),
        (
            json!({"person": {"name": "Ada"}, "greting": "Hi"}),
            "invalid input for task `greet`: unknown field `greting`, expected `person` or `greeting`",
        ),
    ] {
        let outcome = run(&harness, "pydemo", "greet", input.clone()).await;
        assert_eq!(outcome.state, State::Failed, "{input}: {outcome:?}");
        assert_eq!(outcome.attempts, 1, "{input}: a wrong input was retried");
        let message = outcome.message.unwrap();
        assert!(message.ends_with(expected), "{input}: {message}");
    }
    // The hints also describe the input to `weir inspect`.
    let plugin = load_plugin("pydemo").await;
    let greet = plugin.task("greet").unwrap();
    let schema = greet.input_schema.as_ref().unwrap();
    assert_eq!(schema["required"], json!(["person"]), "{schema}");
    assert_eq!(
        schema["properties"]["person"]["properties"]["age"],
        json!({"anyOf": [{"type": "integer"}, {"type": "null"}]})
    );
}

#[tokio::test]
async fn python_task_options_become_the_tasks_defaults() {
    let plugin = load_plugin("pydemo").await;
    let names: Vec<&str> = plugin
        .tasks()
        .iter()
        .map(|task| task.name.as_str())
        .collect();
    assert!(names.contains(&"word-stats"), "{names:?}");
    let stats = plugin.task("word-stats").unwrap();
    assert_eq!(stats.tags, vec!["text".to_owned()]);
    assert_eq!(
        stats.description.as_deref(),
        Some("Counts the words and letters of a text.")
    );
    let cached = plugin.task("cached").unwrap();
    assert_eq!(cached.cache_policy, weir_core::CachePolicy::Inputs);
    assert_eq!(cached.cache_expiration, Some(Duration::from_secs(3600)));
    let flaky = plugin.task("flaky").unwrap();
    assert_eq!(flaky.retry.retries, 3);
    let context = plugin.task("context").unwrap();
    assert_eq!(context.run_name.as_deref(), Some("ctx-{label}"));
}

#[tokio::test]
async fn the_example_flow_passes_data_between_rust_python_and_javascript() {
    let harness = Harness::new();
    let flow = weir_flow::Flow::load(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/polyglot/polyglot.toml"),
    )
    .unwrap();
    let parameters = json!({"text": "three small words", "lines": ["a", "b c"]});
    let parameters = parameters.as_object().unwrap().clone();
    let flows = harness.flows(4);
    let outcome = flows.run_flow(&flow, &parameters).await.unwrap();
    assert_eq!(outcome.state, State::Completed, "{outcome:?}");
    assert_eq!(
        outcome.output,
        Some(json!({
            "stats": {"text": "three small words", "words": 3, "letters": 15},
            "total": 18,
            "headline": "3 WORDS AND 15 LETTERS: 18 IN ALL",
            "lines": ["A", "B C"],
            "greeting": "Behold, 3 WORDS AND 15 LETTERS: 18 IN ALL!",
        }))
    );
    // The map's elements come from the cache the second time.
    let second = flows.run_flow(&flow, &parameters).await.unwrap();
    assert_eq!(second.state, State::Completed, "{second:?}");
    let cached = harness
        .store
        .task_runs(&weir_store::TaskRunFilter {
            state: Some(State::Cached),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(cached.len(), 2, "{cached:?}");
}

#[tokio::test]
async fn a_cache_key_function_decides_what_is_the_same_input() {
    let harness = Harness::new();
    for plugin in PLUGINS {
        let first = run(&harness, plugin, "keyed", json!({"key": "k", "payload": 1})).await;
        assert_eq!(first.state, State::Completed, "{plugin}: {first:?}");
        // Another payload, the same key: the first result.
        let second = run(&harness, plugin, "keyed", json!({"key": "k", "payload": 2})).await;
        assert_eq!(second.state, State::Cached, "{plugin}: {second:?}");
        assert_eq!(second.output, first.output, "{plugin}");
        let other = run(
            &harness,
            plugin,
            "keyed",
            json!({"key": "other", "payload": 1}),
        )
        .await;
        assert_eq!(other.state, State::Completed, "{plugin}: {other:?}");
    }
}

//! Result caching: hits without running, misses on other input or after expiration,
//! refresh, the plugin's own key, and caching across processes' stores.

use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use weir_core::{CachePolicy, Clock, ManualClock, State, SystemClock, TaskOverrides};
use weir_runner::TaskRequest;
use weir_tests::{Harness, load_plugin};

async fn computed_lines(harness: &Harness, id: &weir_core::TaskRunId) -> usize {
    harness
        .store
        .logs(id)
        .await
        .unwrap()
        .iter()
        .filter(|line| line.message.contains("computing"))
        .count()
}

#[tokio::test]
async fn a_second_run_with_the_same_input_is_cached() {
    let harness = Harness::new();
    let plugin = load_plugin("arith").await;
    let request = TaskRequest::new(plugin.clone(), "cached-add", json!({"a": 1, "b": 2}));
    let first = harness.runner.run_task(request.clone()).await.unwrap();
    assert_eq!(first.state, State::Completed);
    assert_eq!(computed_lines(&harness, &first.id).await, 1);

    let second = harness.runner.run_task(request).await.unwrap();
    assert_eq!(second.state, State::Cached);
    assert_eq!(second.output, Some(json!(3)));
    assert_eq!(second.attempts, 0);
    assert_eq!(
        computed_lines(&harness, &second.id).await,
        0,
        "the task ran on a cache hit"
    );
    assert!(second.message.unwrap().contains(first.id.as_str()));

    // Key order in the input does not matter.
    let reordered: serde_json::Value = serde_json::from_str(r#"{"b": 2, "a": 1}"#).unwrap();
    let third = harness
        .runner
        .run_task(TaskRequest::new(plugin.clone(), "cached-add", reordered))
        .await
        .unwrap();
    assert_eq!(third.state, State::Cached);

    let other = harness
        .runner
        .run_task(TaskRequest::new(
            plugin,
            "cached-add",
            json!({"a": 1, "b": 3}),
        ))
        .await
        .unwrap();
    assert_eq!(other.state, State::Completed, "other input must miss");
    assert_eq!(harness.store.cache_entries().await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_cached_result_expires() {
    let clock = ManualClock::new(SystemClock.now());
    let harness = Harness::with_clock(Arc::new(clock.clone()));
    let plugin = load_plugin("arith").await;
    let request = TaskRequest::new(plugin, "cached-add", json!({"a": 5, "b": 5}));
    assert_eq!(
        harness
            .runner
            .run_task(request.clone())
            .await
            .unwrap()
            .state,
        State::Completed
    );
    clock.advance(Duration::from_secs(59 * 60));
    assert_eq!(
        harness
            .runner
            .run_task(request.clone())
            .await
            .unwrap()
            .state,
        State::Cached
    );
    // The task declares cache_expiration = "1h".
    clock.advance(Duration::from_secs(2 * 60));
    let after = harness.runner.run_task(request.clone()).await.unwrap();
    assert_eq!(after.state, State::Completed, "an expired entry must miss");
    // The new result is cached again, for another hour.
    assert_eq!(
        harness.runner.run_task(request).await.unwrap().state,
        State::Cached
    );
}

#[tokio::test]
async fn refresh_runs_anyway_and_no_cache_neither_reads_nor_writes() {
    let harness = Harness::new();
    let plugin = load_plugin("arith").await;
    let request = TaskRequest::new(plugin.clone(), "cached-add", json!({"a": 7, "b": 1}));
    harness.runner.run_task(request.clone()).await.unwrap();
    let refreshed = harness
        .runner
        .run_task(request.clone().with_overrides(TaskOverrides {
            refresh_cache: true,
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(refreshed.state, State::Completed);
    let entries = harness.store.cache_entries().await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(
        entries[0].task_run_id, refreshed.id,
        "refresh replaces the entry"
    );

    let uncached = TaskRequest::new(plugin, "cached-add", json!({"a": 100, "b": 1}))
        .with_overrides(TaskOverrides {
            cache_policy: Some(CachePolicy::None),
            ..Default::default()
        });
    assert_eq!(
        harness
            .runner
            .run_task(uncached.clone())
            .await
            .unwrap()
            .state,
        State::Completed
    );
    assert_eq!(
        harness.runner.run_task(uncached).await.unwrap().state,
        State::Completed
    );
    assert_eq!(harness.store.cache_entries().await.unwrap().len(), 1);
    assert_eq!(harness.store.clear_cache().await.unwrap(), 1);
    assert_eq!(
        harness.runner.run_task(request).await.unwrap().state,
        State::Completed
    );
}

#[tokio::test]
async fn the_plugins_own_cache_key_replaces_the_input() {
    let harness = Harness::new();
    let plugin = load_plugin("arith").await;
    let first = harness
        .runner
        .run_task(TaskRequest::new(
            plugin.clone(),
            "keyed",
            json!({"id": "x", "noise": 1}),
        ))
        .await
        .unwrap();
    assert_eq!(first.output, Some(json!("x:1")));
    // Same id, other noise: the plugin's key ignores noise, so this is a hit.
    let second = harness
        .runner
        .run_task(TaskRequest::new(
            plugin.clone(),
            "keyed",
            json!({"id": "x", "noise": 2}),
        ))
        .await
        .unwrap();
    assert_eq!(second.state, State::Cached);
    assert_eq!(second.output, Some(json!("x:1")));
    let other = harness
        .runner
        .run_task(TaskRequest::new(
            plugin,
            "keyed",
            json!({"id": "y", "noise": 2}),
        ))
        .await
        .unwrap();
    assert_eq!(other.state, State::Completed);
}

#[tokio::test]
async fn a_failed_run_is_not_cached() {
    let harness = Harness::new();
    let plugin = load_plugin("arith").await;
    let request = TaskRequest::new(plugin, "cached-add", json!({"a": "x", "b": 1}));
    assert_eq!(
        harness
            .runner
            .run_task(request.clone())
            .await
            .unwrap()
            .state,
        State::Failed
    );
    assert_eq!(
        harness.runner.run_task(request).await.unwrap().state,
        State::Failed
    );
    assert!(harness.store.cache_entries().await.unwrap().is_empty());
}

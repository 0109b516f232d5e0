//! Outgoing HTTP: only to granted hosts (host and port), refused requests fail inside the
//! guest and are logged, 5xx answers are retried. Against a real server on 127.0.0.1.

use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use weir_core::{Grants, HttpGrant, State, TaskOverrides};
use weir_runner::TaskRequest;
use weir_tests::{Harness, load_plugin};

/// `/ok` answers 200, `/flaky` answers 500 twice then 200, `/big` 10,000 bytes.
fn serve() -> (u16, Arc<AtomicUsize>) {
    let flaky_calls = Arc::new(AtomicUsize::new(0));
    let calls = flaky_calls.clone();
    let address = weir_tests::http_server(move |path| match path {
        "/ok" => (200, r#"{"stars": 42}"#.to_owned()),
        "/flaky" if calls.fetch_add(1, Ordering::SeqCst) < 2 => (500, "try again".to_owned()),
        "/flaky" => (200, "finally".to_owned()),
        "/big" => (200, "x".repeat(10_000)),
        _ => (404, "no such page".to_owned()),
    });
    let port = address.rsplit(':').next().unwrap().parse().unwrap();
    (port, flaky_calls)
}

fn granting(spec: &str) -> TaskOverrides {
    TaskOverrides {
        grants: Grants {
            http: vec![HttpGrant::parse(spec).unwrap()],
            ..Default::default()
        },
        ..Default::default()
    }
}

#[tokio::test]
async fn a_granted_host_is_reached_and_5xx_answers_are_retried() {
    let harness = Harness::new();
    let (port, flaky_calls) = serve();
    let plugin = load_plugin("fetcher").await;
    let ok = harness
        .runner
        .run_task(
            TaskRequest::new(
                plugin.clone(),
                "get",
                json!({"url": format!("http://127.0.0.1:{port}/ok")}),
            )
            .with_overrides(granting(&format!("127.0.0.1:{port}"))),
        )
        .await
        .unwrap();
    assert_eq!(ok.state, State::Completed, "{ok:?}");
    assert_eq!(
        ok.output,
        Some(json!({"status": 200, "body": "{\"stars\": 42}"}))
    );

    let flaky = harness
        .runner
        .run_task(
            TaskRequest::new(
                plugin,
                "get",
                json!({"url": format!("http://127.0.0.1:{port}/flaky")}),
            )
            .with_overrides(granting(&format!("http://127.0.0.1:{port}"))),
        )
        .await
        .unwrap();
    assert_eq!(flaky.state, State::Completed, "{flaky:?}");
    assert_eq!(flaky.attempts, 3);
    assert_eq!(flaky_calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_task_whose_declared_needs_are_not_granted_does_not_start() {
    let harness = Harness::new();
    let plugin = load_plugin("fetcher").await;
    let info = plugin.task("get").unwrap();
    assert_eq!(info.needs, [weir_core::Need::AnyHttp]);
    let error = harness
        .runner
        .run_task(TaskRequest::new(
            plugin,
            "get",
            json!({"url": "http://127.0.0.1:9/"}),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "task `get` needs HTTP to some host (--allow-http HOST, or http = [\"HOST\"] on the node), which this run is not granted"
    );
    assert!(
        harness
            .store
            .task_runs(&Default::default())
            .await
            .unwrap()
            .is_empty()
    );

    // In a flow, the node is named before anything runs.
    let flow = weir_flow::Flow::load(&harness.write_flow(
        "needs.toml",
        r#"
format = 1
name = "needs"

[plugins]
fetcher = "{fetcher}"

[nodes.fetch]
task = "fetcher.get"
input = { url = "http://127.0.0.1:9/" }
"#,
    ))
    .unwrap();
    let error = harness
        .flows(2)
        .run_flow(&flow, &Default::default())
        .await
        .unwrap_err();
    assert!(
        error.to_string().ends_with("needs.toml: node `fetch`, field `task`: task `get` needs HTTP to some host (--allow-http HOST, or http = [\"HOST\"] on the node), which this node is not granted"),
        "{error}"
    );
}

#[tokio::test]
async fn hosts_and_ports_not_granted_are_refused_and_logged() {
    let harness = Harness::new();
    let (port, _) = serve();
    let plugin = load_plugin("fetcher").await;
    let cases = [
        // The listed host on another port.
        (
            format!("127.0.0.1:{}", port.wrapping_add(1)),
            format!("http://127.0.0.1:{port}/ok"),
        ),
        // Another host.
        (
            "example.com".to_owned(),
            format!("http://127.0.0.1:{port}/ok"),
        ),
    ];
    for (grant, url) in cases {
        let overrides = granting(&grant);
        let outcome = harness
            .runner
            .run_task(
                TaskRequest::new(plugin.clone(), "get", json!({"url": url}))
                    .with_overrides(overrides),
            )
            .await
            .unwrap();
        assert_eq!(outcome.state, State::Failed, "{grant:?}: {outcome:?}");
        let message = outcome.message.unwrap();
        assert!(message.contains("HttpRequestDenied"), "{message}");
        let logs = harness.store.logs(&outcome.id).await.unwrap();
        assert!(
            logs.iter().any(|line| line.message.starts_with(&format!(
                "refused an HTTP request to http://127.0.0.1:{port}: this host is not granted"
            ))),
            "{logs:?}"
        );
    }
}

#[tokio::test]
async fn a_response_body_over_the_bound_fails_inside_the_task() {
    let (port, _) = serve();
    let runtime = std::sync::Arc::new(
        weir_runtime::Runtime::new(weir_runtime::RuntimeConfig {
            max_http_response_bytes: 1024,
            pool_instances: 8,
            ..Default::default()
        })
        .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(weir_store_sqlite::SqliteStore::open(dir.path()).unwrap());
    let runner = weir_runner::TaskRunner::new(
        runtime.clone(),
        store,
        std::sync::Arc::new(weir_core::SystemClock),
        std::sync::Arc::new(weir_runner::SilentObserver),
    );
    let plugin = runner
        .load_plugin(&weir_tests::plugin_path("fetcher"))
        .await
        .unwrap();
    let outcome = runner
        .run_task(
            TaskRequest::new(
                plugin,
                "get",
                json!({"url": format!("http://127.0.0.1:{port}/big")}),
            )
            .with_overrides(granting(&format!("127.0.0.1:{port}"))),
        )
        .await
        .unwrap();
    assert_eq!(outcome.state, State::Failed, "{outcome:?}");
    let message = outcome.message.unwrap();
    assert!(message.contains("reading the body from"), "{message}");
}

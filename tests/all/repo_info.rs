//! The repo-info example (Prefect's tutorial flow) against a small GitHub-like server on
//! 127.0.0.1: pages of issues fetched by a map in a subflow, a 500 retried, a slow page
//! timed out, a second run served from the cache, other addresses refused.

use serde_json::{Map, json};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir_core::{Grants, HttpGrant, State, TaskOverrides};
use weir_flow::Flow;
use weir_runner::TaskRequest;
use weir_store::TaskRunFilter;
use weir_tests::{Harness, load_plugin};

/// Serves the GitHub API paths the example uses, for `acme/widgets` (5 open issues);
/// the second page of issues answers 500 the first time; `/slow` answers after 3 s.
/// Counts requests per path.
fn github_like_server() -> (String, Arc<Mutex<HashMap<String, usize>>>) {
    let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let counted = hits.clone();
    let address = weir_tests::http_server(move |path| {
        let hit = {
            let mut hits = counted.lock().unwrap();
            let count = hits.entry(path.to_owned()).or_insert(0);
            *count += 1;
            *count
        };
        let issue = |number: u32| json!({"number": number, "title": format!("issue {number}")});
        let (status, body) = match path {
            "/repos/acme/widgets" => (
                200,
                json!({"full_name": "acme/widgets", "stargazers_count": 42, "forks_count": 7, "open_issues_count": 5}),
            ),
            "/repos/acme/widgets/issues?page=1&per_page=2" => (200, json!([issue(1), issue(2)])),
            "/repos/acme/widgets/issues?page=2&per_page=2" if hit == 1 => {
                (500, json!({"message": "try again"}))
            }
            "/repos/acme/widgets/issues?page=2&per_page=2" => (200, json!([issue(3), issue(4)])),
            "/repos/acme/widgets/issues?page=3&per_page=2" => (200, json!([issue(5)])),
            "/slow" => {
                std::thread::sleep(Duration::from_secs(3));
                (200, json!({}))
            }
            _ => (404, json!({"message": "Not Found"})),
        };
        (status, body.to_string())
    });
    (address, hits)
}

fn example() -> Flow {
    Flow::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/repo-info/repo-info.toml"))
        .unwrap()
}

fn parameters(address: &str) -> Map<String, serde_json::Value> {
    json!({"api": format!("http://{address}"), "owner": "acme", "repo": "widgets", "per_page": 2})
        .as_object()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn the_example_pages_through_issues_retries_a_500_and_hits_the_cache_the_second_time() {
    let harness = Harness::new();
    let (address, hits) = github_like_server();
    let flows = harness.flows(8);
    let outcome = flows
        .run_flow(&example(), &parameters(&address))
        .await
        .unwrap();
    assert_eq!(outcome.state, State::Completed, "{outcome:?}");
    assert_eq!(
        outcome.output,
        Some(
            json!({"repository": "acme/widgets", "stars": 42, "forks": 7, "open_issues": 5, "issues_fetched": 5})
        )
    );
    assert_eq!(
        hits.lock().unwrap()["/repos/acme/widgets/issues?page=2&per_page=2"],
        2,
        "the 500 was retried"
    );
    let summary_logs: Vec<String> = harness.observer.log_messages();
    assert!(
        summary_logs.contains(&"Stars 🌠 : 42".to_owned()),
        "{summary_logs:?}"
    );

    // The second run takes every page from the cache: the server sees no new request.
    let before: usize = hits.lock().unwrap().values().sum();
    let second = flows
        .run_flow(&example(), &parameters(&address))
        .await
        .unwrap();
    assert_eq!(second.state, State::Completed, "{second:?}");
    assert_eq!(hits.lock().unwrap().values().sum::<usize>(), before);
    let cached = harness
        .store
        .task_runs(&TaskRunFilter {
            state: Some(State::Cached),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(cached.len(), 4, "the repository and its 3 pages");
}

fn granted(address: &str, timeout: Option<Duration>) -> TaskOverrides {
    TaskOverrides {
        grants: Grants {
            http: vec![HttpGrant::parse(address).unwrap()],
            ..Default::default()
        },
        timeout,
        retries: Some(0),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_slow_page_times_out_and_other_addresses_are_refused() {
    let harness = Harness::new();
    let (address, _) = github_like_server();
    let plugin = load_plugin("github").await;
    let started = Instant::now();
    let slow = harness
        .runner
        .run_task(
            TaskRequest::new(
                plugin.clone(),
                "get-url",
                json!({"url": format!("http://{address}/slow")}),
            )
            .with_overrides(granted(&address, Some(Duration::from_millis(300)))),
        )
        .await
        .unwrap();
    assert_eq!(slow.state, State::TimedOut, "{slow:?}");
    assert!(started.elapsed() < Duration::from_secs(2));

    let elsewhere = harness
        .runner
        .run_task(
            TaskRequest::new(
                plugin,
                "get-url",
                json!({"url": "http://127.0.0.1:1/repos/acme/widgets"}),
            )
            .with_overrides(granted(&address, None)),
        )
        .await
        .unwrap();
    assert_eq!(elsewhere.state, State::Failed);
    let logs = harness.store.logs(&elsewhere.id).await.unwrap();
    assert!(
        logs.iter().any(|line| line
            .message
            .starts_with("refused an HTTP request to http://127.0.0.1:1")),
        "{logs:?}"
    );
}

//! The web UI in a real headless Chromium (Debian's `chromium`, over chromedriver),
//! against the test run's `weir serve` on SQLite: the runs list shows a run just made,
//! its graph has its nodes and states, a running node turns Completed without a reload,
//! a map of 10,000 opens within the bound, and logs filter by level. Screenshots of the
//! main pages go to `target/ui-screenshots/`.

use serde_json::json;
use std::time::{Duration, Instant};
use weir_tests::Backend;
use weir_tests::browser::Browser;

use crate::server::{api, shared, submit};

const WAIT: Duration = Duration::from_secs(30);
const LEVELS_SHOWN: &str =
    "return [...document.querySelectorAll('[data-testid=logs] tr')].map(r => r.dataset.level)";

async fn node_state(browser: &Browser, node: &str) -> String {
    browser
        .eval(&format!(
            "return document.querySelector('[data-node=\"{node}\"]')?.dataset.state ?? null"
        ))
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Waits until the graph's node shows `state`, failing at `deadline`.
async fn wait_for_node_state(browser: &Browser, node: &str, state: &str, deadline: Instant) {
    while node_state(browser, node).await != state {
        assert!(Instant::now() < deadline, "{node} never showed {state}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runs_list_shows_a_run_just_made_and_its_graph_has_its_nodes_and_states() {
    let api = api(Backend::Sqlite).await;
    let url = &shared(Backend::Sqlite).await.server.url;
    let id = submit(&api, "quick", json!({"values": [1, 2, 3, 4]})).await;
    api.wait_for_end(&id, WAIT).await;
    let browser = Browser::open().await;
    browser.client.goto(&format!("{url}/runs")).await.unwrap();
    let row = browser
        .wait_for(&format!("tr[data-run=\"{id}\"]"), WAIT)
        .await;
    let text = row.text().await.unwrap();
    assert!(
        text.contains("quick") && text.contains("Completed"),
        "{text}"
    );
    browser.screenshot("runs-list").await;
    row.find(fantoccini::Locator::Css("a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.wait_for("[data-testid=graph]", WAIT).await;
    let nodes = browser
        .eval("return [...document.querySelectorAll('.node')].map(n => [n.dataset.node, n.dataset.state, Number(n.dataset.count)])")
        .await;
    assert_eq!(
        nodes,
        json!([
            ["squares", "Completed", 4],
            ["total", "Completed", 1],
            ["greet", "Completed", 1]
        ])
    );
    let edges = browser
        .eval("return [...document.querySelectorAll('polyline')].map(e => e.dataset.edge + ' ' + e.getAttribute('class')).sort()")
        .await;
    assert_eq!(
        edges,
        json!([
            "squares->greet wait",
            "squares->total data",
            "total->greet data"
        ])
    );
    // The mapped node expands into one cell per element.
    browser.click("[data-expand=squares]").await;
    assert_eq!(
        browser
            .attribute("canvas.cells", "data-cells")
            .await
            .as_deref(),
        Some("4")
    );
    browser.screenshot("flow-run-graph").await;
    // The timeline has a row per task run; a task run's page shows its attempt.
    browser.click("[data-tab=timeline]").await;
    assert_eq!(
        browser
            .attribute("[data-testid=timeline]", "data-rows")
            .await
            .as_deref(),
        Some("6")
    );
    browser.screenshot("flow-run-timeline").await;
    browser.click("[data-tab=graph]").await;
    browser.click("[data-node=greet] a").await;
    let attempt = browser
        .wait_for("[data-testid=attempts] tr[data-attempt=\"1\"]", WAIT)
        .await;
    assert!(attempt.text().await.unwrap().contains("Completed"));
    let page = browser.eval("return document.body.innerText").await;
    assert!(
        page.as_str().unwrap().contains("Hello, total 30.0!"),
        "{page}"
    );
    let grants = browser.wait_for("[data-testid=grants]", WAIT).await;
    assert_eq!(grants.text().await.unwrap(), "http api.example.com");
    browser.screenshot("task-run").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_flows_node_turns_completed_without_a_reload() {
    let api = api(Backend::Sqlite).await;
    let url = &shared(Backend::Sqlite).await.server.url;
    // The browser first: waiting for its turn must not eat the nap.
    let browser = Browser::open().await;
    let id = submit(&api, "slow", json!({"nap": 4000})).await;
    browser
        .client
        .goto(&format!("{url}/runs/{id}"))
        .await
        .unwrap();
    browser.wait_for("[data-node=nap]", WAIT).await;
    // Marks this page: a reload would lose the mark.
    browser
        .eval("window.weirMark = 'same page'; return null")
        .await;
    let deadline = Instant::now() + WAIT;
    wait_for_node_state(&browser, "nap", "Running", deadline).await;
    browser.screenshot("flow-run-running").await;
    wait_for_node_state(&browser, "talk", "Completed", deadline).await;
    assert_eq!(node_state(&browser, "nap").await, "Completed");
    assert_eq!(
        browser.eval("return window.weirMark").await,
        json!("same page")
    );
    let heading = browser.wait_for("h1 .state", WAIT).await;
    let deadline = Instant::now() + WAIT;
    while heading.text().await.unwrap() != "Completed" {
        assert!(
            Instant::now() < deadline,
            "the run's state never showed Completed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_map_of_ten_thousand_opens_within_the_bound_and_stays_interactive() {
    let api = api(Backend::Sqlite).await;
    let url = &shared(Backend::Sqlite).await.server.url;
    let values: Vec<u32> = (0..10_000).collect();
    let id = submit(&api, "quick", json!({"values": values})).await;
    api.wait_for_end(&id, Duration::from_secs(300)).await;
    let browser = Browser::open().await;
    // Once, to warm the server's and the browser's caches as a person's second look would.
    browser
        .client
        .goto(&format!("{url}/runs/{id}"))
        .await
        .unwrap();
    browser.wait_for("[data-testid=graph]", WAIT).await;
    browser.client.goto(&format!("{url}/runs")).await.unwrap();
    let started = Instant::now();
    browser
        .client
        .goto(&format!("{url}/runs/{id}"))
        .await
        .unwrap();
    let graph = browser
        .wait_for("[data-node=squares][data-count=\"10000\"]", WAIT)
        .await;
    let seen_after = started.elapsed();
    let ready_ms = browser
        .eval("return Number(document.body.dataset.graphReadyMs)")
        .await
        .as_f64()
        .unwrap();
    eprintln!(
        "a 10,000-element map's graph: drawn {ready_ms} ms after the page started, seen by the test after {seen_after:?}"
    );
    // The target is 2 s on an idle machine (BENCHMARKS.md measures it); the test's bound
    // is generous, as the suite shares the machine with itself.
    assert!(seen_after < Duration::from_secs(10), "{seen_after:?}");
    assert_eq!(
        graph.attr("data-state").await.unwrap().as_deref(),
        Some("Completed")
    );
    // Interactive: the map expands into 10,000 cells, and the timeline opens.
    let clicked = Instant::now();
    browser.click("[data-expand=squares]").await;
    assert_eq!(
        browser
            .attribute("canvas.cells", "data-cells")
            .await
            .as_deref(),
        Some("10000")
    );
    let expanded_after = clicked.elapsed();
    browser.screenshot("flow-run-map-10000").await;
    browser.click("[data-tab=timeline]").await;
    assert_eq!(
        browser
            .attribute("[data-testid=timeline]", "data-rows")
            .await
            .as_deref(),
        Some("10002")
    );
    eprintln!("expanded in {expanded_after:?}");
    assert!(
        expanded_after < Duration::from_secs(10),
        "{expanded_after:?}"
    );
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_filter_by_level() {
    let api = api(Backend::Sqlite).await;
    let url = &shared(Backend::Sqlite).await.server.url;
    let id = submit(&api, "levels", json!({})).await;
    let ended = api.wait_for_end(&id, WAIT).await;
    assert_eq!(ended["flow_run"]["state"], "Failed", "{ended}");
    let browser = Browser::open().await;
    browser
        .client
        .goto(&format!("{url}/runs/{id}"))
        .await
        .unwrap();
    browser.click("[data-tab=logs]").await;
    browser
        .wait_for("[data-testid=logs] tr[data-level=error]", WAIT)
        .await;
    let all = browser.eval(LEVELS_SHOWN).await;
    assert!(all.as_array().unwrap().contains(&json!("info")), "{all}");
    browser.screenshot("flow-run-logs").await;
    let select = browser.wait_for("select[name=level]", WAIT).await;
    select.select_by_value("error").await.unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let shown = browser.eval(LEVELS_SHOWN).await;
        let shown = shown.as_array().unwrap();
        if !shown.is_empty() && shown.iter().all(|level| level == "error") {
            break;
        }
        assert!(Instant::now() < deadline, "still shown: {shown:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = browser
        .eval("return document.querySelector('[data-testid=logs]').innerText")
        .await;
    assert!(text.as_str().unwrap().contains("kaboom"), "{text}");
    browser.close().await;
}

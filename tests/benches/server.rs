//! `weir serve` under load, on the embedded SQLite store, from this (second) process on
//! loopback:
//! - the runs list at 100,000 flow runs: the first page, a page 50,000 runs deep (by
//!   cursor), a page filtered by state, a search by name;
//! - a flow run's graph at 10,000 task runs: the API's answer, and the UI's time to draw
//!   it in headless Chromium;
//! - requests per second on the runs list from 32 connections at once, while 100 live
//!   followers stream the events of a running flow (every follower must get every log
//!   line, and no request may fail), with the server's memory before and after.
//!
//! Run with `cargo bench -p weir-tests --bench server` (`-- --quick` for a smoke run).
//! Figures are recorded in BENCHMARKS.md.

use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use weir_core::{ComponentDigest, FlowRunId, State, TaskRunId, Timestamp};
use weir_store::{FlowGraph, GraphNode, GraphNodeKind, NewFlowRun, NewTaskRun, StateChange, Store};
use weir_tests::browser::Browser;
use weir_tests::plugin_path;
use weir_tests::server::{Api, ServerProcess};

struct Sizes {
    flow_runs: usize,
    map: usize,
    clients: usize,
    followers: usize,
    load: Duration,
}

fn change(state: State, attempt: u32, at: i64) -> StateChange {
    StateChange {
        state,
        message: None,
        attempt,
        at: Timestamp(at),
    }
}

fn flow_run(name: String, flow: &str, at: i64, graph: Option<FlowGraph>) -> NewFlowRun {
    NewFlowRun {
        id: FlowRunId::generate(),
        name,
        flow: flow.into(),
        source: None,
        parameters: json!({}),
        parent: None,
        created: Timestamp(at),
        owner: None,
        graph,
        tags: Vec::new(),
    }
}

fn task_run(flow_run: &FlowRunId, node: &str, index: Option<u32>, at: i64) -> NewTaskRun {
    NewTaskRun {
        id: TaskRunId::generate(),
        name: match index {
            Some(index) => format!("multiply-{index}"),
            None => format!("{node}-0"),
        },
        task: "multiply".into(),
        plugin_name: "arith".into(),
        plugin_digest: ComponentDigest::of_bytes(b"arith"),
        flow_run_id: Some(flow_run.clone()),
        node: Some(node.into()),
        map_index: index,
        input: json!({"a": index, "b": index}),
        tags: Vec::new(),
        created: Timestamp(at),
        owner: None,
    }
}

/// 100,000 ended flow runs (1 in 100 Failed), each with a task run, and one run with a
/// map of `map` beside two nodes. Returns the map's run and every id, newest first.
async fn seed(store: &dyn Store, sizes: &Sizes) -> (FlowRunId, Vec<FlowRunId>) {
    let start = 1_700_000_000_000_000i64;
    let mut ids = Vec::with_capacity(sizes.flow_runs);
    for index in 0..sizes.flow_runs {
        let at = start + index as i64 * 1_000;
        let run = flow_run(format!("seeded-run-{index}"), "seeded", at, None);
        let failed = index % 100 == 7;
        store
            .create_flow_run(
                &run,
                &[
                    change(State::Pending, 0, at),
                    change(State::Running, 1, at + 1),
                ],
            )
            .unwrap();
        let task = task_run(&run.id, "only", None, at + 2);
        let end = if failed {
            State::Failed
        } else {
            State::Completed
        };
        store
            .create_task_run(
                &task,
                &[
                    change(State::Pending, 0, at + 2),
                    change(State::Running, 1, at + 3),
                    change(end, 1, at + 4),
                ],
                (!failed).then_some(&json!(index)),
            )
            .unwrap();
        store
            .set_flow_run_state(
                &run.id,
                &change(end, 1, at + 5),
                (!failed).then_some(&json!(index)),
            )
            .unwrap();
        ids.push(run.id);
        if index % 10_000 == 9_999 {
            store.flush().await.unwrap();
        }
    }
    let node = |id: &str, runs: &str, mapped: bool, inputs_from: &[&str]| GraphNode {
        id: id.into(),
        kind: GraphNodeKind::Task,
        runs: runs.into(),
        mapped,
        inputs_from: inputs_from.iter().map(|from| from.to_string()).collect(),
        wait_for: Vec::new(),
        grants: Vec::new(),
    };
    let graph = FlowGraph {
        nodes: vec![
            node("squares", "arith.multiply", true, &[]),
            node("total", "arith.sum", false, &["squares"]),
            node("greet", "hello.hello", false, &["total"]),
        ],
    };
    let at = start + sizes.flow_runs as i64 * 1_000;
    let mapped = flow_run("the-big-map".into(), "quick", at, Some(graph));
    store
        .create_flow_run(
            &mapped,
            &[
                change(State::Pending, 0, at),
                change(State::Running, 1, at + 1),
            ],
        )
        .unwrap();
    for index in 0..sizes.map {
        let task = task_run(&mapped.id, "squares", Some(index as u32), at + 2);
        let t = at + 10 + index as i64 * 20;
        store
            .create_task_run(
                &task,
                &[
                    change(State::Pending, 0, t),
                    change(State::Running, 1, t + 1),
                    change(State::Completed, 1, t + 15),
                ],
                Some(&json!(index * index)),
            )
            .unwrap();
    }
    for node in ["total", "greet"] {
        let task = task_run(&mapped.id, node, None, at + 500_000);
        store
            .create_task_run(
                &task,
                &[
                    change(State::Pending, 0, at + 500_000),
                    change(State::Running, 1, at + 500_001),
                    change(State::Completed, 1, at + 500_010),
                ],
                Some(&json!(1)),
            )
            .unwrap();
    }
    store
        .set_flow_run_state(
            &mapped.id,
            &change(State::Completed, 1, at + 600_000),
            Some(&json!(1)),
        )
        .unwrap();
    store.flush().await.unwrap();
    ids.reverse();
    (mapped.id, ids)
}

/// Median and 90th percentile of `rounds` calls, in milliseconds.
async fn latency(api: &Api, path: &str, rounds: usize) -> (f64, f64, usize) {
    let mut times = Vec::with_capacity(rounds);
    let mut bytes = 0;
    for _ in 0..rounds {
        let started = Instant::now();
        let response = api
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        bytes = response.bytes().await.unwrap().len();
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[times.len() * 9 / 10], bytes)
}

const TALKATIVE: &str = r#"
format = 1
name = "talkative"

[parameters.elements]
type = "array"

[plugins]
misbehave = "{misbehave}"

[nodes.nap]
task = "misbehave.sleepy"
input = { ms = 400 }

[nodes.talk]
task = "misbehave.chatty"
input = { lines = "${params.elements}" }
map = ["lines"]
wait_for = ["nap"]

[nodes.nap2]
task = "misbehave.sleepy"
input = { ms = 400 }
wait_for = ["talk"]

[nodes.talk2]
task = "misbehave.chatty"
input = { lines = "${params.elements}" }
map = ["lines"]
wait_for = ["nap2"]
"#;

/// Follows a run's events to its end; returns the log lines received.
async fn follow(api: Api, id: String) -> Result<usize, String> {
    use futures::StreamExt;
    let response = api
        .request(
            reqwest::Method::GET,
            &format!("/flow-runs/{id}/events?backlog=false"),
        )
        .send()
        .await
        .map_err(|error| error.to_string())?;
    if !response.status().is_success() {
        return Err(response.status().to_string());
    }
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    let mut lines = 0;
    while let Some(chunk) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(
            &chunk.map_err(|error| error.to_string())?,
        ));
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            if block.starts_with("event: log") {
                lines += 1;
            } else if block.starts_with("event: end") {
                return Ok(lines);
            }
        }
    }
    Err("the stream ended before the run".into())
}

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let sizes = if quick {
        Sizes {
            flow_runs: 2_000,
            map: 500,
            clients: 4,
            followers: 5,
            load: Duration::from_secs(1),
        }
    } else {
        Sizes {
            flow_runs: 100_000,
            map: 10_000,
            clients: 32,
            followers: 100,
            load: Duration::from_secs(8),
        }
    };
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(measure(&sizes, quick));
}

async fn measure(sizes: &Sizes, quick: bool) {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let seeding = Instant::now();
    let (map_run, ids) = {
        let store = weir_store_sqlite::SqliteStore::open(&store_dir).unwrap();
        seed(&store, sizes).await
    };
    let seeded_in = seeding.elapsed();
    let flows = dir.path().join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    std::fs::write(
        flows.join("talkative.toml"),
        TALKATIVE.replace(
            "{misbehave}",
            &plugin_path("misbehave").display().to_string(),
        ),
    )
    .unwrap();
    let server = ServerProcess::start(
        Path::new(env!("CARGO_BIN_EXE_weir-under-test")),
        dir.path(),
        &store_dir.display().to_string(),
        &["--flows", &flows.display().to_string()],
    );
    let api = Api::new(&server.url);
    let rounds = if quick { 5 } else { 30 };
    let deep = &ids[ids.len() / 2];
    let first = latency(&api, "/flow-runs?limit=50&top=true", rounds).await;
    let deep_page = latency(
        &api,
        &format!("/flow-runs?limit=50&top=true&before={deep}"),
        rounds,
    )
    .await;
    let failed = latency(&api, "/flow-runs?limit=50&state=Failed", rounds).await;
    let searched = latency(&api, "/flow-runs?limit=50&name=run-4242", rounds).await;
    let graph = latency(&api, &format!("/flow-runs/{map_run}/graph"), rounds.min(10)).await;

    // The UI's time to draw the graph, from the page's start.
    let browser = Browser::open().await;
    let mut drawn = Vec::new();
    for _ in 0..if quick { 1 } else { 5 } {
        browser
            .client
            .goto(&format!("{}/runs", server.url))
            .await
            .unwrap();
        browser
            .client
            .goto(&format!("{}/runs/{map_run}", server.url))
            .await
            .unwrap();
        browser
            .wait_for(
                &format!("[data-node=squares][data-count=\"{}\"]", sizes.map),
                Duration::from_secs(60),
            )
            .await;
        let ms = browser
            .eval("return Number(document.body.dataset.graphReadyMs)")
            .await;
        drawn.push(ms.as_f64().unwrap());
    }
    browser.close().await;
    drawn.sort_by(f64::total_cmp);

    // Load: the runs list from many connections while followers stream a running flow.
    let memory_before = server.memory_kib();
    let elements: Vec<u32> = vec![1; if quick { 50 } else { 500 }];
    let (status, submitted) = api
        .post(
            "/flows/talkative/runs",
            json!({"parameters": {"elements": elements}}),
        )
        .await;
    assert_eq!(status, 201, "{submitted}");
    let run = submitted["id"].as_str().unwrap().to_owned();
    let followers: Vec<_> = (0..sizes.followers)
        .map(|_| tokio::spawn(follow(api.clone(), run.clone())))
        .collect();
    let served = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + sizes.load;
    let started = Instant::now();
    let clients: Vec<_> = (0..sizes.clients)
        .map(|_| {
            let api = api.clone();
            let (served, failures) = (served.clone(), failures.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let answered = match api
                        .request(reqwest::Method::GET, "/flow-runs?limit=50&top=true")
                        .send()
                        .await
                    {
                        Ok(response) if response.status().is_success() => {
                            response.bytes().await.is_ok()
                        }
                        _ => false,
                    };
                    let counter = if answered { &served } else { &failures };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    let per_second = served.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    let mut received = Vec::new();
    for follower in followers {
        received.push(
            tokio::time::timeout(Duration::from_secs(120), follower)
                .await
                .expect("followers end")
                .unwrap(),
        );
    }
    let memory_after = server.memory_kib();
    let ended = api.wait_for_end(&run, Duration::from_secs(60)).await;
    assert_eq!(ended["flow_run"]["state"], "Completed", "{ended}");
    let expected = elements.len() * 2;
    let complete = received
        .iter()
        .filter(|got| got.as_ref().is_ok_and(|lines| *lines == expected))
        .count();
    let stream_errors: Vec<&String> = received
        .iter()
        .filter_map(|got| got.as_ref().err())
        .collect();

    println!("server: weir serve on SQLite, measured from another process on loopback, in one run");
    println!(
        "  seeded {} flow runs and a map of {} in {:.1} s",
        sizes.flow_runs,
        sizes.map,
        seeded_in.as_secs_f64()
    );
    let row = |what: &str, (median, p90, bytes): (f64, f64, usize)| {
        println!(
            "  {what:<52} median {median:>7.1} ms  p90 {p90:>7.1} ms  {:>8} bytes",
            bytes
        );
    };
    row(
        &format!("runs list, first page of 50 (of {})", sizes.flow_runs),
        first,
    );
    row("runs list, a page 50% deep (cursor)", deep_page);
    row("runs list, state Failed", failed);
    row("runs list, name search `run-4242`", searched);
    row(
        &format!("graph of a run of {} task runs", sizes.map + 2),
        graph,
    );
    println!(
        "  UI: graph of {} task runs drawn {:.0} ms after the page started (median of {})",
        sizes.map + 2,
        drawn[drawn.len() / 2],
        drawn.len()
    );
    println!(
        "  load: {per_second:.0} runs-list requests/s from {} connections for {:.0} s, {} failed",
        sizes.clients,
        sizes.load.as_secs_f64(),
        failures.load(Ordering::Relaxed)
    );
    println!(
        "  while {} live followers of a running flow each got its {expected} log lines: {complete} did, {} stream errors {:?}",
        sizes.followers,
        stream_errors.len(),
        stream_errors.first()
    );
    if let (Some(before), Some(after)) = (memory_before, memory_after) {
        println!(
            "  server memory: {} MiB resident before, {} MiB after, peak {} MiB",
            before.0 / 1024,
            after.0 / 1024,
            after.1 / 1024
        );
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests failed under load"
    );
    assert!(
        stream_errors.is_empty(),
        "followers failed: {stream_errors:?}"
    );
    assert_eq!(
        complete, sizes.followers,
        "a follower missed lines: {received:?}"
    );
    drop(server);
}

//! `weir serve`'s API over a real server process on 127.0.0.1 and a real store (one
//! server per backend for the whole test run, started on first use): every endpoint,
//! its errors, live events of a running flow, and the token beyond loopback.

use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use weir_tests::server::{Api, ServerProcess};
use weir_tests::{Backend, plugin_path, postgres};

on_both_backends!(
    a_flow_submitted_through_the_api_runs_and_every_view_shows_it,
    lists_filter_search_and_page_by_cursor,
    a_running_flows_events_stream_its_states_and_log_lines,
    a_run_is_cancelled_and_resumed_through_the_api,
);

pub(crate) const QUICK_FLOW: &str = r#"
format = 1
name = "quick"
description = "Squares a list, adds it up and says so"
tags = ["math", "demo"]

[parameters.values]
type = "array"
default = [1, 2, 3]

[parameters.label]
type = "string"
default = "total"

[plugins]
arith = "{arith}"
hello = "{hello}"

[nodes.squares]
task = "arith.multiply"
input = { a = "${params.values}", b = "${params.values}" }
map = ["a", "b"]

[nodes.total]
task = "arith.sum"
input = { values = "${squares}" }

[nodes.greet]
task = "hello.hello"
input = { name = "${params.label} ${total}" }
wait_for = ["squares"]
http = ["api.example.com"]
"#;

pub(crate) const LEVELS_FLOW: &str = r#"
format = 1
name = "levels"

[plugins]
misbehave = "{misbehave}"

[nodes.talk]
task = "misbehave.chatty"
input = { lines = 2 }

[nodes.boom]
task = "misbehave.boom"
input = { message = "kaboom" }
wait_for = ["talk"]
"#;

pub(crate) const SLOW_FLOW: &str = r#"
format = 1
name = "slow"

[parameters.nap]
type = "integer"
default = 1500

[plugins]
misbehave = "{misbehave}"

[nodes.nap]
task = "misbehave.sleepy"
input = { ms = "${params.nap}" }

[nodes.talk]
task = "misbehave.chatty"
input = { lines = 3 }
wait_for = ["nap"]
"#;

/// Writes the test flows into `dir/flows`, with the built plugins' paths.
pub(crate) fn write_flows(dir: &Path) -> PathBuf {
    let flows = dir.join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    for (file, body) in [
        ("quick.toml", QUICK_FLOW),
        ("slow.toml", SLOW_FLOW),
        ("levels.toml", LEVELS_FLOW),
    ] {
        let mut body = body.to_owned();
        for plugin in ["arith", "hello", "misbehave"] {
            body = body.replace(
                &format!("{{{plugin}}}"),
                &plugin_path(plugin).display().to_string(),
            );
        }
        std::fs::write(flows.join(file), body).unwrap();
    }
    std::fs::write(
        flows.join("broken.toml"),
        "format = 1\nname = \"broken\"\n[nodez]\n",
    )
    .unwrap();
    flows
}

/// A server with a worker and the test flows.
pub(crate) struct Shared {
    pub server: ServerProcess,
    /// Its store, flows and logs.
    #[allow(dead_code)]
    pub dir: PathBuf,
}

/// The test run's server on `backend`, started on first use.
pub(crate) async fn shared(backend: Backend) -> &'static Shared {
    static SQLITE: tokio::sync::OnceCell<Shared> = tokio::sync::OnceCell::const_new();
    static POSTGRES: tokio::sync::OnceCell<Shared> = tokio::sync::OnceCell::const_new();
    let cell = match backend {
        Backend::Sqlite => &SQLITE,
        Backend::Postgres => &POSTGRES,
    };
    cell.get_or_init(|| async move {
        // Kept for the whole run: the server's store and logs are in it.
        let dir = tempfile::tempdir().unwrap().keep();
        let store = match backend {
            Backend::Sqlite => dir.join("store").display().to_string(),
            Backend::Postgres => postgres::fresh_database().await,
        };
        let flows = write_flows(&dir);
        let server = ServerProcess::start(
            Path::new(env!("CARGO_BIN_EXE_weir-under-test")),
            &dir,
            &store,
            &[
                "--flows",
                &flows.display().to_string(),
                "--lease",
                "2s",
                // What the quick flow's `greet` node is granted (and never uses).
                "--allow-http",
                "api.example.com",
            ],
        );
        Shared { server, dir }
    })
    .await
}

pub(crate) async fn api(backend: Backend) -> Api {
    Api::new(&shared(backend).await.server.url)
}

pub(crate) async fn submit(api: &Api, flow: &str, parameters: Value) -> String {
    let (status, body) = api
        .post(
            &format!("/flows/{flow}/runs"),
            json!({ "parameters": parameters }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["state"], "Pending");
    body["id"].as_str().unwrap().to_owned()
}

async fn a_flow_submitted_through_the_api_runs_and_every_view_shows_it(backend: Backend) {
    let api = api(backend).await;
    let (status, flows) = api.get("/flows").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = flows
        .as_array()
        .unwrap()
        .iter()
        .map(|flow| flow["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["broken", "levels", "quick", "slow"]);
    assert!(
        flows[0]["error"].as_str().unwrap().contains("nodez"),
        "{flows}"
    );
    let (status, quick) = api.get("/flows/quick").await;
    assert_eq!(status, 200);
    assert_eq!(quick["parameters"][1]["name"], "values");
    assert_eq!(quick["graph"]["nodes"].as_array().unwrap().len(), 3);
    assert!(
        quick["source"]
            .as_str()
            .unwrap()
            .contains("[nodes.squares]")
    );

    let id = submit(
        &api,
        "quick",
        json!({"values": [1, 2, 3, 4], "label": "sum"}),
    )
    .await;
    let ended = api.wait_for_end(&id, Duration::from_secs(60)).await;
    assert_eq!(ended["flow_run"]["state"], "Completed", "{ended}");
    assert_eq!(ended["task_run_states"]["Completed"], 6);
    assert_eq!(ended["url"], format!("/runs/{id}"));
    let states: Vec<&str> = ended["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|change| change["state"].as_str().unwrap())
        .collect();
    assert_eq!(states.first(), Some(&"Pending"));
    assert_eq!(states.last(), Some(&"Completed"));

    // The graph: three nodes, a map of four, the edges with their kinds.
    let (status, graph) = api.get(&format!("/flow-runs/{id}/graph")).await;
    assert_eq!(status, 200);
    assert_eq!(graph["recorded"], true);
    let nodes = graph["nodes"].as_array().unwrap();
    let squares = &nodes[0];
    assert_eq!(squares["id"], "squares");
    assert_eq!(squares["mapped"], true);
    assert_eq!(squares["count"], 4);
    assert_eq!(squares["states"]["Completed"], 4);
    assert_eq!(nodes[1]["runs"], "arith.sum");
    let edges: Vec<(String, String, String)> = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|edge| {
            (
                edge["from"].as_str().unwrap().to_owned(),
                edge["to"].as_str().unwrap().to_owned(),
                edge["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(edges.contains(&("squares".into(), "total".into(), "data".into())));
    assert!(edges.contains(&("total".into(), "greet".into(), "data".into())));
    assert!(edges.contains(&("squares".into(), "greet".into(), "wait".into())));
    assert_eq!(graph["task_runs"].as_array().unwrap().len(), 6);

    // Task runs: the list of the flow run's, one in detail, its states and attempts.
    let (status, page) = api.get(&format!("/task-runs?flow_run={id}")).await;
    assert_eq!(status, 200);
    let runs = page["items"].as_array().unwrap();
    assert_eq!(runs.len(), 6);
    let greet = runs.iter().find(|run| run["node"] == "greet").unwrap();
    let greet_id = greet["id"].as_str().unwrap();
    let (status, detail) = api.get(&format!("/task-runs/{greet_id}")).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["result"], "Hello, sum 30.0!");
    assert_eq!(detail["plugin"]["name"], "hello");
    assert_eq!(detail["plugin"]["task"]["name"], "hello");
    assert_eq!(detail["attempts"][0]["attempt"], 1);
    assert_eq!(detail["attempts"][0]["state"], "Completed");
    assert_eq!(detail["grants"], json!(["http api.example.com"]));
    assert_eq!(graph["nodes"][2]["grants"], json!(["http api.example.com"]));
    assert_eq!(graph["nodes"][0]["grants"], json!([]));
    let (_, states) = api.get(&format!("/task-runs/{greet_id}/states")).await;
    assert_eq!(states.as_array().unwrap().len(), 3);
    let (_, attempts) = api.get(&format!("/task-runs/{greet_id}/attempts")).await;
    assert_eq!(attempts.as_array().unwrap().len(), 1);
    let (status, result) = api.get(&format!("/task-runs/{greet_id}/result")).await;
    assert_eq!((status, result), (200, json!("Hello, sum 30.0!")));
    let (status, body) = api
        .post(&format!("/task-runs/{greet_id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 409, "an ended task run: {body}");
    for path in [
        "/task-runs/trun_NOPE",
        "/task-runs/trun_NOPE/states",
        "/task-runs/trun_NOPE/attempts",
        "/task-runs/trun_NOPE/result",
        "/task-runs/frun_not_a_task_run",
        "/flow-runs/no-such-run/graph",
        "/logs?run=no-such-run",
    ] {
        let (status, body) = api.get(path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|error| !error.is_empty())
        );
    }

    // Logs: the flow run's, and filtered by level.
    let (status, logs) = api.get(&format!("/logs?run={id}")).await;
    assert_eq!(status, 200);
    let messages: Vec<&str> = logs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|line| line["message"].as_str().unwrap())
        .collect();
    assert!(messages.contains(&"greeting sum 30.0"), "{logs}");
    let (_, errors) = api.get(&format!("/logs?run={id}&level=error")).await;
    assert_eq!(errors["total"], 0);

    // Its subflow-free run is listed, with counts by state.
    let (_, listed) = api.get("/flow-runs?flow=quick&limit=500").await;
    let row = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|run| run["id"] == id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(row["task_run_states"]["Completed"], 6);

    // The same run by name.
    let name = ended["flow_run"]["name"].as_str().unwrap();
    let (status, by_name) = api.get(&format!("/flow-runs/{name}")).await;
    assert_eq!(status, 200);
    assert_eq!(by_name["flow_run"]["id"], id.as_str());
}

async fn lists_filter_search_and_page_by_cursor(backend: Backend) {
    let api = api(backend).await;
    let label = format!("page-{}", fastrand::u32(..));
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(submit(&api, "quick", json!({"values": [2], "label": label})).await);
    }
    for id in &ids {
        api.wait_for_end(id, Duration::from_secs(60)).await;
    }
    // Pages of two, newest first, until the runs of this test are all seen.
    let mut seen = Vec::new();
    let mut before: Option<String> = None;
    while seen.len() < 5 {
        let path = match &before {
            Some(cursor) => format!("/flow-runs?flow=quick&limit=2&before={cursor}"),
            None => "/flow-runs?flow=quick&limit=2".to_owned(),
        };
        let (status, page) = api.get(&path).await;
        assert_eq!(status, 200, "{page}");
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        for item in items {
            if ids.iter().any(|id| item["id"] == id.as_str()) {
                seen.push(item["id"].as_str().unwrap().to_owned());
            }
        }
        before = page["next"].as_str().map(str::to_owned);
        assert!(before.is_some() || seen.len() == 5, "the pages ended early");
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);

    // A search by part of a run's name, and filters by state.
    let (_, one) = api.get(&format!("/flow-runs/{}", ids[0])).await;
    let name = one["flow_run"]["name"].as_str().unwrap().to_owned();
    let (_, found) = api
        .get(&format!("/flow-runs?name={}", &name.to_uppercase()[2..]))
        .await;
    assert!(
        found["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|run| run["id"] == ids[0].as_str()),
        "{found}"
    );
    let (_, tagged) = api.get("/flow-runs?tag=math&limit=500").await;
    let tagged = tagged["items"].as_array().unwrap();
    assert!(tagged.iter().any(|run| run["id"] == ids[0].as_str()));
    assert!(
        tagged
            .iter()
            .all(|run| run["tags"] == json!(["math", "demo"]))
    );
    let (_, untagged) = api.get("/flow-runs?tag=nope").await;
    assert!(untagged["items"].as_array().unwrap().is_empty());
    let (_, failed) = api.get("/flow-runs?state=failed&flow=quick").await;
    assert!(failed["items"].as_array().unwrap().is_empty());
    let (status, completed) = api.get("/flow-runs?state=Completed&top=true").await;
    assert_eq!(status, 200);
    assert!(!completed["items"].as_array().unwrap().is_empty());

    // Bad queries name the field.
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=many", "limit"),
        ("state=Done", "state"),
        ("colour=red", ""),
    ] {
        let (status, body) = api.get(&format!("/flow-runs?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(!body["error"].as_str().unwrap().is_empty());
        if !field.is_empty() {
            assert_eq!(body["field"], field, "{query}: {body}");
        }
    }
    let (status, body) = api.get("/task-runs?state=nope").await;
    assert_eq!((status, body["field"].as_str()), (400, Some("state")));
    let (status, body) = api.get(&format!("/logs?run={}&level=loud", ids[0])).await;
    assert_eq!((status, body["field"].as_str()), (400, Some("level")));
}

/// Reads an SSE stream until `end` (or the deadline): each event's name and data.
async fn read_events(response: reqwest::Response, within: Duration) -> Vec<(String, Value)> {
    use futures::StreamExt;
    let deadline = tokio::time::Instant::now() + within;
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    loop {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("the stream ends in time");
        let Some(chunk) = chunk else {
            return events;
        };
        buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut name = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("event: ") {
                    name = value.to_owned();
                } else if let Some(value) = line.strip_prefix("data: ") {
                    data.push_str(value);
                }
            }
            if name.is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(&data).unwrap();
            let done = name == "end";
            events.push((name, value));
            if done {
                return events;
            }
        }
    }
}

async fn a_running_flows_events_stream_its_states_and_log_lines(backend: Backend) {
    let api = api(backend).await;
    let id = submit(&api, "slow", json!({"nap": 1500})).await;
    // Opened while the run goes on: its `nap` task run is running (a busy machine may
    // take a while to claim it after the flow run started).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, tasks) = api.get(&format!("/task-runs?flow_run={id}")).await;
        let napping = tasks["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|task| task["node"] == "nap" && task["state"] == "Running");
        if napping {
            break;
        }
        assert!(Instant::now() < deadline, "the nap never started: {tasks}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let response = api
        .request(reqwest::Method::GET, &format!("/flow-runs/{id}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let events = read_events(response, Duration::from_secs(60)).await;
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names.first(), Some(&"flow-run"), "{names:?}");
    assert_eq!(events.last().unwrap().1["state"], "Completed", "{events:?}");
    let lines: Vec<&str> = events
        .iter()
        .filter(|(name, _)| name == "log")
        .map(|(_, event)| event["line"]["message"].as_str().unwrap())
        .collect();
    assert_eq!(lines, ["line 1", "line 2", "line 3"], "{events:?}");
    // Seen live: `nap` running when the stream opened, then its end; `talk` after it.
    let states_of = |node: &str| -> Vec<String> {
        events
            .iter()
            .filter(|(name, event)| name == "task-run" && event["task_run"]["node"] == node)
            .map(|(_, event)| event["task_run"]["state"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(states_of("nap"), ["Running", "Completed"], "{events:?}");
    assert_eq!(
        states_of("talk").last().map(String::as_str),
        Some("Completed")
    );
    // A stream of an ended run sends what is and ends at once; lines filtered by level.
    let response = api
        .request(
            reqwest::Method::GET,
            &format!("/flow-runs/{id}/events?level=warning"),
        )
        .send()
        .await
        .unwrap();
    let events = read_events(response, Duration::from_secs(10)).await;
    assert!(events.iter().all(|(name, _)| name != "log"), "{events:?}");
    assert_eq!(events.last().unwrap().0, "end");
}

async fn a_run_is_cancelled_and_resumed_through_the_api(backend: Backend) {
    let api = api(backend).await;
    let id = submit(&api, "slow", json!({"nap": 20000})).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, graph) = api.get(&format!("/flow-runs/{id}/graph")).await;
        if graph["nodes"][0]["states"]["Running"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the nap never started: {graph}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, cancelled) = api
        .post(&format!("/flow-runs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["state"], "Cancelled");
    let (status, again) = api
        .post(&format!("/flow-runs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 409, "{again}");
    assert!(again["error"].as_str().unwrap().contains("already ended"));
    let (_, run) = api.get(&format!("/flow-runs/{id}")).await;
    assert_eq!(run["flow_run"]["state"], "Cancelled");

    let (status, resumed) = api
        .post(&format!("/flow-runs/{id}/resume"), json!({}))
        .await;
    assert_eq!(status, 202, "{resumed}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, run) = api.get(&format!("/flow-runs/{id}")).await;
        if run["flow_run"]["state"] == "Running" {
            break;
        }
        assert!(Instant::now() < deadline, "the run was not resumed: {run}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, cancelled) = api
        .post(&format!("/flow-runs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(
        (status, &cancelled["state"]),
        (200, &json!("Cancelled")),
        "{cancelled}"
    );
    // A completed run has nothing to resume; an unknown one is a 404.
    let done = submit(&api, "quick", json!({})).await;
    api.wait_for_end(&done, Duration::from_secs(60)).await;
    let (status, body) = api
        .post(&format!("/flow-runs/{done}/resume"), json!({}))
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = api.post("/flow-runs/frun_NOPE/cancel", json!({})).await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submissions_with_bad_parameters_or_bodies_are_refused_naming_the_field() {
    let api = api(Backend::Sqlite).await;
    for (body, status, field) in [
        (
            json!({"parameters": {"nope": 1}}),
            422,
            Some("parameters.nope"),
        ),
        (
            json!({"parameters": {"values": "many"}}),
            422,
            Some("parameters.values"),
        ),
        (json!({"parameters": []}), 422, Some("parameters")),
        (json!({"params": {}}), 422, Some("params")),
    ] {
        let (got, answer) = api.post("/flows/quick/runs", body.clone()).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert_eq!(answer["field"].as_str(), field, "{body}: {answer}");
        assert_eq!(answer["status"], status);
    }
    let (status, answer) = api
        .send(
            api.request(reqwest::Method::POST, "/flows/quick/runs")
                .header("content-type", "application/json")
                .body("{\"parameters\": {"),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("not valid JSON"));
    let (status, answer) = api
        .send(
            api.request(reqwest::Method::POST, "/flows/quick/runs")
                .body("parameters=1"),
        )
        .await;
    assert_eq!(status, 415, "{answer}");
    // Refused from its declared length, before the body is sent.
    let address = shared(Backend::Sqlite)
        .await
        .server
        .url
        .trim_start_matches("http://")
        .to_owned();
    let answer = tokio::task::spawn_blocking(move || {
        raw_exchange(
            &address,
            b"POST /api/v1/flows/quick/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2097152\r\n\r\n",
            Duration::from_secs(10),
        )
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let (status, _) = api.post("/flows/broken/runs", json!({})).await;
    assert_eq!(status, 404);
    let (status, answer) = api.get("/no/such/route").await;
    assert_eq!(status, 404);
    assert!(answer["error"].as_str().unwrap().contains("no API route"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_in_paths_never_reach_the_file_system() {
    let api = api(Backend::Sqlite).await;
    for path in [
        "/flows/..%2F..%2F..%2Fetc%2Fpasswd",
        "/flows/%2Fetc%2Fpasswd",
        "/flows/..",
        "/flow-runs/..%2F..%2Fweir.db",
        "/task-runs/..%2Fweir.db",
        "/concurrency-limits/..%2F..",
    ] {
        let (status, body) = api.get(path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(!body.to_string().contains("root:"), "{path}: {body}");
    }
    for digest in ["..%2F..%2Fweir.db", "abc", &"g".repeat(64)] {
        let (status, body) = api.get(&format!("/plugins/{digest}")).await;
        assert_eq!(status, 400, "{digest}: {body}");
        assert_eq!(body["field"], "digest");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_are_uploaded_inspected_and_bad_ones_refused() {
    let api = api(Backend::Sqlite).await;
    let bytes = std::fs::read(plugin_path("arith")).unwrap();
    let upload = |name: &str, body: Vec<u8>| {
        api.request(reqwest::Method::POST, &format!("/plugins?name={name}"))
            .header("content-type", "application/wasm")
            .body(body)
    };
    let (status, record) = api.send(upload("arith", bytes.clone())).await;
    assert!(status == 201 || status == 200, "{status}: {record}");
    let digest = record["digest"].as_str().unwrap().to_owned();
    assert_eq!(record["size_bytes"], bytes.len());
    let tasks: Vec<&str> = record["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|task| task["name"].as_str().unwrap())
        .collect();
    assert!(
        tasks.contains(&"multiply") && tasks.contains(&"burn"),
        "{tasks:?}"
    );
    let (status, _) = api.send(upload("arith", bytes.clone())).await;
    assert_eq!(status, 200, "a second upload finds it");
    let (status, found) = api.get(&format!("/plugins/{digest}")).await;
    assert_eq!(status, 200);
    let add = found["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|task| task["name"] == "add")
        .unwrap();
    assert_eq!(add["description"], "Adds two integers.", "{add}");
    assert!(add.get("input_schema").is_some(), "{add}");
    let (_, all) = api.get("/plugins").await;
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .any(|plugin| plugin["digest"] == digest.as_str())
    );
    let (status, _) = api.get(&format!("/plugins/{}", "0".repeat(64))).await;
    assert_eq!(status, 404);

    let (status, refused) = api.send(upload("junk", b"not a component".to_vec())).await;
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("not a weir plugin")
    );
    let (status, refused) = api.send(upload("../evil", bytes.clone())).await;
    assert_eq!((status, refused["field"].as_str()), (400, Some("name")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_and_concurrency_limits_have_the_clis_verbs() {
    let api = api(Backend::Sqlite).await;
    let tag = format!("api-{}", fastrand::u32(..));
    let (status, set) = api
        .put(&format!("/concurrency-limits/{tag}"), json!({"limit": 3}))
        .await;
    assert_eq!(status, 200, "{set}");
    assert_eq!(set["limit"], 3);
    let (_, got) = api.get(&format!("/concurrency-limits/{tag}")).await;
    assert_eq!(
        (got["tag"].as_str(), &got["holders"]),
        (Some(tag.as_str()), &json!([]))
    );
    let (_, all) = api.get("/concurrency-limits").await;
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .any(|limit| limit["tag"] == tag.as_str())
    );
    let (status, reset) = api
        .post(&format!("/concurrency-limits/{tag}/reset"), json!({}))
        .await;
    assert_eq!((status, &reset["released"]), (200, &json!(0)));
    let (status, body) = api
        .put(
            &format!("/concurrency-limits/{tag}"),
            json!({"limit": "three"}),
        )
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("limit")),
        "{body}"
    );
    let (status, _) = api.delete(&format!("/concurrency-limits/{tag}")).await;
    assert_eq!(status, 204);
    let (status, body) = api.delete(&format!("/concurrency-limits/{tag}")).await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = api
        .post(&format!("/concurrency-limits/{tag}/reset"), json!({}))
        .await;
    assert_eq!(status, 404);

    let (status, entries) = api.get("/cache").await;
    assert_eq!(status, 200);
    assert!(entries.is_array());
    let (status, cleared) = api.delete("/cache").await;
    assert_eq!(status, 200);
    assert!(cleared["cleared"].is_u64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_every_route() {
    let api = api(Backend::Sqlite).await;
    let (status, document) = api.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let paths: Vec<&str> = document["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for path in [
        "/flows",
        "/flows/{name}",
        "/flows/{name}/runs",
        "/flow-runs",
        "/flow-runs/{id}",
        "/flow-runs/{id}/graph",
        "/flow-runs/{id}/events",
        "/flow-runs/{id}/cancel",
        "/flow-runs/{id}/resume",
        "/task-runs",
        "/task-runs/{id}",
        "/task-runs/{id}/states",
        "/task-runs/{id}/attempts",
        "/task-runs/{id}/result",
        "/task-runs/{id}/cancel",
        "/logs",
        "/plugins",
        "/plugins/{digest}",
        "/cache",
        "/concurrency-limits",
        "/concurrency-limits/{tag}",
        "/concurrency-limits/{tag}/reset",
    ] {
        assert!(paths.contains(&path), "{path} is not described: {paths:?}");
    }
    let schemas = document["components"]["schemas"].as_object().unwrap();
    for schema in [
        "FlowRunRecord",
        "TaskRunRecord",
        "RunGraph",
        "ErrorBody",
        "RunEvent",
        "TaskInfo",
    ] {
        assert!(schemas.contains_key(schema), "no schema {schema}");
    }
}

/// Writes a raw request and reads the whole answer (the server closes or answers).
fn raw_exchange(address: &str, request: &[u8], read_for: Duration) -> String {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(read_for)).unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => {
                answer.extend_from_slice(&buffer[..read]);
                if answer.windows(4).any(|window| window == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_loopback_every_call_needs_the_token_and_an_upload_over_the_bound_is_refused_unread()
{
    let dir = tempfile::tempdir().unwrap();
    let binary = Path::new(env!("CARGO_BIN_EXE_weir-under-test"));
    let store = dir.path().join("store").display().to_string();
    // Without a token it refuses to start.
    let output = std::process::Command::new(binary)
        .args([
            "--store",
            &store,
            "serve",
            "--bind",
            "0.0.0.0:0",
            "--no-worker",
        ])
        .env_remove("WEIR_STORE")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("without an API token"), "{stderr}");

    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let server = ServerProcess::start(
        binary,
        dir.path(),
        &store,
        &[
            "--bind",
            "0.0.0.0:0",
            "--no-worker",
            "--token-file",
            &token_file.display().to_string(),
            "--max-plugin-size",
            "64KiB",
        ],
    );
    let url = server.url.replace("0.0.0.0", "127.0.0.1");
    let anonymous = Api::new(&url);
    let (status, body) = anonymous.get("/flow-runs").await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("needs an API token")
    );
    let (status, body) = anonymous
        .clone()
        .with_token("guess")
        .get("/flow-runs")
        .await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"].as_str().unwrap().contains("not valid"));
    let (status, body) = anonymous.get("/openapi.json").await;
    assert_eq!(status, 401, "{body}");
    let api = anonymous.clone().with_token("s3cret-token");
    let (status, body) = api.get("/flow-runs").await;
    assert_eq!(status, 200, "{body}");
    // The token in the query string counts only on event streams.
    let (status, _) = anonymous.get("/flow-runs?access_token=s3cret-token").await;
    assert_eq!(status, 401);

    // Refused from its declared length, before any of it is sent.
    let address = url.trim_start_matches("http://").to_owned();
    let answer = tokio::task::spawn_blocking(move || {
        raw_exchange(
            &address,
            b"POST /api/v1/plugins?name=big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret-token\r\nContent-Type: application/wasm\r\nContent-Length: 10000000000\r\n\r\n",
            Duration::from_secs(10),
        )
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.to_lowercase().contains("connection: close"),
        "{answer}"
    );
    // A body that grows past the bound, without a declared length (on a connection of
    // its own: the server closes it, with the rest of the body unread).
    let uploader = Api::new(&url).with_token("s3cret-token");
    let (status, body) = uploader
        .send(
            uploader
                .request(reqwest::Method::POST, "/plugins?name=big")
                .body(reqwest::Body::wrap_stream(futures::stream::iter(
                    (0..100).map(|_| Ok::<_, std::io::Error>(vec![0u8; 4096])),
                ))),
        )
        .await;
    assert_eq!(status, 413, "{body}");
    assert!(body["error"].as_str().unwrap().contains("64 KiB"), "{body}");
    // A client that sends half a request holds no thread (others are answered meanwhile)
    // and is disconnected after the 10 s the server gives a request's head.
    let address = url.trim_start_matches("http://").to_owned();
    let slow = std::thread::spawn(move || {
        let started = Instant::now();
        let answer = raw_exchange(
            &address,
            b"GET /api/v1/flow-runs HTTP/1.1\r\nHost:",
            Duration::from_secs(30),
        );
        (answer, started.elapsed())
    });
    for _ in 0..20 {
        let (status, _) = api.get("/flow-runs").await;
        assert_eq!(status, 200);
    }
    let (answer, after) = tokio::task::spawn_blocking(move || slow.join().unwrap())
        .await
        .unwrap();
    assert!(
        after >= Duration::from_secs(9) && after < Duration::from_secs(25),
        "the slow client was let go after {after:?}: {answer}"
    );
    let (status, _) = api.get("/flow-runs").await;
    assert_eq!(status, 200);
    let output = server.stop();
    assert!(!output.contains("panicked"), "{output}");
}

#[test]
fn a_flow_run_prints_its_address_in_the_ui_when_one_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let flows = write_flows(dir.path());
    let output = crate::command::weir_command(
        dir.path(),
        &["run", &flows.join("quick.toml").display().to_string()],
    )
    .env("WEIR_UI_URL", "http://127.0.0.1:4200/")
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr
        .lines()
        .find(|line| line.contains("View at"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        line.contains("| Flow run '")
            && line.contains(" - View at http://127.0.0.1:4200/runs/frun_"),
        "{line}"
    );
}

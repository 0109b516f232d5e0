//! `weir worker` processes sharing one store (PostgreSQL, and the embedded SQLite store,
//! whose single writer stands in for `SKIP LOCKED`): a map spread over three workers, a
//! worker killed mid-attempt, a worker paused past its lease that comes back, the death
//! of the worker driving a flow run, a tag limit across workers, and plugins fetched by
//! digest (a damaged one refused).

use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_core::{FlowRunId, State};
use weir_store::{FlowRunRecord, Store, TaskRunFilter, TaskRunRecord};
use weir_tests::{Backend, plugin_path, postgres};

use crate::command::text;

on_both_backends!(
    three_workers_share_a_map_of_a_thousand,
    a_killed_workers_attempts_crash_and_run_elsewhere,
    a_paused_worker_cannot_overwrite_what_its_successor_finished,
    the_death_of_a_flow_runs_driver_is_a_resume,
    a_tag_limit_holds_across_workers,
    plugins_travel_by_digest_and_a_damaged_one_is_refused,
    a_run_no_live_worker_can_take_says_why,
    logs_follow_a_run_from_another_process,
    cancelling_a_submitted_run_stops_it_on_every_worker,
);

/// A store, a directory for flow files and logs, and the worker processes on them.
pub(crate) struct Cluster {
    backend: Backend,
    dir: tempfile::TempDir,
    pub(crate) store: String,
    workers: HashMap<String, Child>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.workers.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Cluster {
    pub(crate) async fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = match backend {
            Backend::Sqlite => dir.path().join("store").display().to_string(),
            Backend::Postgres => postgres::fresh_database().await,
        };
        Cluster {
            backend,
            dir,
            store,
            workers: HashMap::new(),
        }
    }

    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_weir-under-test"));
        command
            .current_dir(self.dir.path())
            .args(["--store", &self.store])
            .args(args)
            .env_remove("WEIR_STORE")
            .env("WEIR_LOCAL_DIR", self.dir.path().join("local"));
        command
    }

    /// Writes a flow file, with `{plugin}` replaced by the built plugin's path.
    pub(crate) fn write(&self, name: &str, body: &str) {
        let mut body = body.to_owned();
        for plugin in ["arith", "misbehave", "hello"] {
            body = body.replace(
                &format!("{{{plugin}}}"),
                &plugin_path(plugin).display().to_string(),
            );
        }
        std::fs::write(self.dir.path().join(name), body).unwrap();
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts `weir worker --name NAME` with a 1 s lease; its lines go to NAME.log.
    pub(crate) fn start_worker(&mut self, name: &str, extra: &[&str]) -> u32 {
        let log = std::fs::File::create(self.path(&format!("{name}.log"))).unwrap();
        let mut args = vec!["worker", "--name", name];
        if !extra.contains(&"--lease") {
            args.extend(["--lease", "1s"]);
        }
        if !extra.contains(&"--grace") {
            args.extend(["--grace", "3s"]);
        }
        args.extend_from_slice(extra);
        let child = self
            .command(&args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let pid = child.id();
        self.workers.insert(name.to_owned(), child);
        pid
    }

    pub(crate) fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(&format!("{name}.log"))).unwrap_or_default()
    }

    fn signal(&self, name: &str, signal: &str) {
        let pid = self.workers[name].id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn kill(&mut self, name: &str) {
        let mut child = self.workers.remove(name).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Stops a worker with SIGTERM and waits for it: a clean stop exits 0.
    pub(crate) fn stop(&mut self, name: &str) {
        self.signal(name, "TERM");
        let mut child = self.workers.remove(name).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "{name}: {}", self.log(name));
    }

    /// `weir run FLOW --submit`: the run's id.
    pub(crate) fn submit(&self, flow: &str, params: &[&str]) -> FlowRunId {
        let mut args = vec!["run", flow, "--submit"];
        for param in params {
            args.extend(["-p", param]);
        }
        let output = self.command(&args).output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
        FlowRunId::from_string(text(&output.stdout).trim().to_owned())
    }

    /// `weir run FLOW --submit --wait --json`: the report, and the lines it printed.
    fn submit_and_wait(&self, flow: &str, params: &[&str]) -> (serde_json::Value, String) {
        let mut args = vec!["run", flow, "--submit", "--wait", "--json"];
        for param in params {
            args.extend(["-p", param]);
        }
        let output = self.command(&args).output().unwrap();
        let report = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|_| panic!("no report: {}", text(&output.stderr)));
        (report, text(&output.stderr))
    }

    pub(crate) async fn open(&self) -> Arc<dyn Store> {
        match self.backend {
            Backend::Sqlite => Arc::new(
                weir_store_sqlite::SqliteStore::open(std::path::Path::new(&self.store)).unwrap(),
            ),
            Backend::Postgres => Arc::new(
                weir_store_postgres::PostgresStore::connect(&self.store)
                    .await
                    .unwrap(),
            ),
        }
    }
}

/// Polls `check` until it gives a value, failing after `limit`.
pub(crate) async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn task_runs(store: &dyn Store, flow_run: &FlowRunId) -> Vec<TaskRunRecord> {
    store
        .task_runs(&TaskRunFilter {
            flow_run_id: Some(flow_run.clone()),
            ..Default::default()
        })
        .await
        .unwrap()
}

/// Waits until `count` task runs of the flow run are Running.
async fn running(store: &dyn Store, id: &FlowRunId, count: usize) {
    eventually(Duration::from_secs(30), "the attempts to start", || async {
        let running = task_runs(store, id)
            .await
            .into_iter()
            .filter(|run| run.state == State::Running)
            .count();
        (running >= count).then_some(())
    })
    .await;
}

async fn ended(store: &dyn Store, id: &FlowRunId, limit: Duration) -> FlowRunRecord {
    eventually(limit, "the flow run to end", || async {
        store
            .flow_run(id)
            .await
            .unwrap()
            .filter(|run| run.state.is_final())
    })
    .await
}

/// The owner id of each worker process, by pid.
async fn owners_by_pid(store: &dyn Store) -> HashMap<u32, String> {
    store
        .owners()
        .await
        .unwrap()
        .into_iter()
        .map(|owner| (owner.pid, owner.id))
        .collect()
}

async fn states(store: &dyn Store, run: &TaskRunRecord) -> Vec<(State, Option<String>)> {
    store
        .state_history(&run.id)
        .await
        .unwrap()
        .into_iter()
        .map(|change| (change.state, change.message))
        .collect()
}

async fn attempts(store: &dyn Store, run: &TaskRunRecord) -> Vec<(State, u32, i64)> {
    store
        .state_history(&run.id)
        .await
        .unwrap()
        .into_iter()
        .map(|change| (change.state, change.attempt, change.at.0))
        .collect()
}

const MAP: &str = r#"
format = 1
name = "adds"
output = "add"

[parameters.values]
type = "array"

[plugins]
arith = "{arith}"

[nodes.add]
task = "arith.add"
input = { a = "${params.values}", b = 1 }
map = ["a"]
"#;

async fn three_workers_share_a_map_of_a_thousand(backend: Backend) {
    let mut cluster = Cluster::new(backend).await;
    cluster.write("adds.toml", MAP);
    // A short lease: the busy driver must keep its flow run's lease while its own writes
    // lock the row (a renewal that skipped locked rows lost it, and the flow run was
    // taken over mid-map).
    let pids: Vec<u32> = ["one", "two", "three"]
        .iter()
        .map(|name| cluster.start_worker(name, &["--concurrency", "8", "--lease", "1s"]))
        .collect();
    let values: Vec<u32> = (0..1000).collect();
    let (report, lines) = cluster.submit_and_wait(
        "adds.toml",
        &[&format!(
            "values={}",
            serde_json::to_string(&values).unwrap()
        )],
    );
    assert_eq!(report["state"], "Completed", "{report}\n{lines}");
    let expected: Vec<u32> = values.iter().map(|value| value + 1).collect();
    assert_eq!(report["output"], json!(expected));
    assert!(
        lines.contains("Task run 'add-999' - Finished in state Completed()"),
        "--wait shows the remote runs' lines: {lines}"
    );

    let store = cluster.open().await;
    let id = FlowRunId::from_string(report["id"].as_str().unwrap().to_owned());
    let runs = task_runs(store.as_ref(), &id).await;
    assert_eq!(runs.len(), 1000, "every element once");
    let mut indexes: Vec<u32> = runs.iter().map(|run| run.map_index.unwrap()).collect();
    indexes.sort();
    assert_eq!(indexes, (0..1000).collect::<Vec<u32>>());
    assert!(
        runs.iter()
            .all(|run| run.state == State::Completed && run.attempts == 1)
    );
    let owners = owners_by_pid(store.as_ref()).await;
    let worker_ids: Vec<&String> = pids.iter().filter_map(|pid| owners.get(pid)).collect();
    let mut per_worker: BTreeMap<&str, usize> = BTreeMap::new();
    for run in &runs {
        *per_worker
            .entry(run.owner.as_deref().unwrap_or("none"))
            .or_default() += 1;
    }
    assert!(
        per_worker
            .keys()
            .all(|owner| worker_ids.iter().any(|id| id == owner)),
        "{per_worker:?}"
    );
    assert!(
        per_worker.len() >= 2,
        "at least two workers ran elements: {per_worker:?}"
    );
    for run in runs.iter().step_by(97) {
        let history: Vec<State> = states(store.as_ref(), run)
            .await
            .into_iter()
            .map(|(state, _)| state)
            .collect();
        assert_eq!(history, [State::Pending, State::Running, State::Completed]);
    }
    assert!(
        store.work(10).await.unwrap().is_empty(),
        "the queue is empty"
    );
    let mut flow_claims = 0;
    for name in ["one", "two", "three"] {
        cluster.stop(name);
        let log = cluster.log(name);
        assert!(log.contains(" 0 leases lost"), "{name}: {log}");
        flow_claims += log
            .split(" flow-run claims")
            .next()
            .and_then(|before| before.rsplit(' ').next())
            .and_then(|count| count.parse::<u32>().ok())
            .unwrap_or_else(|| panic!("{name} says how many flow runs it claimed: {log}"));
    }
    assert_eq!(
        flow_claims, 1,
        "one worker drove the flow run, start to end"
    );
}

fn sleepers(count: usize, ms: u64, retries: u32, tags: &str) -> String {
    let delays = vec![ms.to_string(); count].join(", ");
    format!(
        r#"
format = 1
name = "sleepers"
output = "sleep"

[plugins]
misbehave = "{{misbehave}}"

[nodes.sleep]
task = "misbehave.sleepy"
input = {{ ms = [{delays}] }}
map = ["ms"]
retries = {retries}
tags = [{tags}]
"#
    )
}

async fn a_killed_workers_attempts_crash_and_run_elsewhere(backend: Backend) {
    let mut cluster = Cluster::new(backend).await;
    cluster.write("sleepers.toml", &sleepers(12, 1500, 2, ""));
    let victim = cluster.start_worker("victim", &["--concurrency", "2"]);
    let id = cluster.submit("sleepers.toml", &[]);
    let store = cluster.open().await;
    // Once the victim runs attempts, the others start and it is killed.
    let victim_owner = eventually(Duration::from_secs(30), "the victim to run", || async {
        let owner = owners_by_pid(store.as_ref()).await.get(&victim).cloned()?;
        let running = task_runs(store.as_ref(), &id)
            .await
            .into_iter()
            .filter(|run| run.state == State::Running && run.owner.as_deref() == Some(&owner))
            .count();
        (running > 0).then_some(owner)
    })
    .await;
    cluster.start_worker("one", &["--concurrency", "4"]);
    cluster.start_worker("two", &["--concurrency", "4"]);
    let lost: Vec<String> = task_runs(store.as_ref(), &id)
        .await
        .into_iter()
        .filter(|run| run.state == State::Running && run.owner.as_deref() == Some(&victim_owner))
        .map(|run| run.id.to_string())
        .collect();
    cluster.kill("victim");

    let run = ended(store.as_ref(), &id, Duration::from_secs(60)).await;
    assert_eq!(run.state, State::Completed, "{:?}", run.state_message);
    let runs = task_runs(store.as_ref(), &id).await;
    assert_eq!(runs.len(), 12, "each element once");
    assert!(runs.iter().all(|run| run.state == State::Completed));
    for run in &runs {
        let history = states(store.as_ref(), run).await;
        let finals = history.iter().filter(|(state, _)| state.is_final()).count();
        assert_eq!(finals, 1, "recorded once: {history:?}");
        if lost.contains(&run.id.to_string()) {
            assert!(run.attempts >= 2, "{history:?}");
            assert!(
                history
                    .iter()
                    .any(|(state, message)| *state == State::AwaitingRetry
                        && message.as_deref().is_some_and(|message| message
                            .contains("ended Crashed: worker victim stopped heartbeating"))),
                "{history:?} {:?} {run:?}",
                attempts(store.as_ref(), run).await
            );
            assert_ne!(run.owner.as_deref(), Some(victim_owner.as_str()));
        }
    }
    assert!(!lost.is_empty());
    cluster.stop("one");
    cluster.stop("two");
}

const ONE_SLEEP: &str = r#"
format = 1
name = "one-sleep"
output = "sleep"

[plugins]
misbehave = "{misbehave}"

[nodes.sleep]
task = "misbehave.sleepy"
input = { ms = 2500 }
retries = 1
"#;

async fn a_paused_worker_cannot_overwrite_what_its_successor_finished(backend: Backend) {
    let mut cluster = Cluster::new(backend).await;
    cluster.write("one-sleep.toml", ONE_SLEEP);
    cluster.start_worker("paused", &[]);
    let id = cluster.submit("one-sleep.toml", &[]);
    let store = cluster.open().await;
    running(store.as_ref(), &id, 1).await;
    cluster.signal("paused", "STOP");
    cluster.start_worker("successor", &[]);
    let run = ended(store.as_ref(), &id, Duration::from_secs(30)).await;
    assert_eq!(run.state, State::Completed, "{:?}", run.state_message);
    cluster.signal("paused", "CONT");
    // The paused worker's attempt had finished its sleep: it tries to record it now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let runs = task_runs(store.as_ref(), &id).await;
    assert_eq!(runs.len(), 1);
    let history = states(store.as_ref(), &runs[0]).await;
    let states_only: Vec<State> = history.iter().map(|(state, _)| *state).collect();
    assert_eq!(
        states_only,
        [
            State::Pending,
            State::Running,
            State::AwaitingRetry,
            State::Running,
            State::Completed
        ],
        "{history:?}"
    );
    assert!(
        history[2]
            .1
            .as_deref()
            .unwrap()
            .contains("worker paused stopped heartbeating"),
        "{history:?}"
    );
    assert_eq!(runs[0].attempts, 2);
    let flow_history: Vec<String> = store
        .flow_run_history(&id)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|change| change.message)
        .collect();
    assert!(
        flow_history
            .iter()
            .any(|message| message.contains("taken over from worker paused")),
        "{flow_history:?}"
    );
    let paused = cluster.log("paused");
    assert!(paused.contains("lost the lease"), "{paused}");
    cluster.stop("paused");
    cluster.stop("successor");
}

const CHAIN: &str = r#"
format = 1
name = "chain"
output = "fourth"

[plugins]
misbehave = "{misbehave}"

[nodes.first]
task = "misbehave.sleepy"
input = { ms = 600 }
retries = 1

[nodes.second]
task = "misbehave.sleepy"
input = { ms = "${first}" }
retries = 1

[nodes.third]
task = "misbehave.sleepy"
input = { ms = "${second}" }
retries = 1

[nodes.fourth]
task = "misbehave.sleepy"
input = { ms = "${third}" }
retries = 1
"#;

async fn the_death_of_a_flow_runs_driver_is_a_resume(backend: Backend) {
    let mut cluster = Cluster::new(backend).await;
    cluster.write("chain.toml", CHAIN);
    let driver = cluster.start_worker("driver", &[]);
    cluster.start_worker("runner", &["--no-flows"]);
    let id = cluster.submit("chain.toml", &[]);
    let store = cluster.open().await;
    eventually(
        Duration::from_secs(30),
        "the second node to start",
        || async {
            let owners = owners_by_pid(store.as_ref()).await;
            let run = store.flow_run(&id).await.unwrap()?;
            let driven = run.owner.is_some() && run.owner.as_ref() == owners.get(&driver);
            let started = task_runs(store.as_ref(), &id)
                .await
                .into_iter()
                .any(|run| run.node.as_deref() == Some("second"));
            (driven && started).then_some(())
        },
    )
    .await;
    cluster.kill("driver");
    cluster.start_worker("heir", &[]);
    let run = ended(store.as_ref(), &id, Duration::from_secs(30)).await;
    assert_eq!(run.state, State::Completed, "{:?}", run.state_message);
    let report = store
        .result(run.result_digest.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(report, json!(600));
    let runs = task_runs(store.as_ref(), &id).await;
    let mut nodes: Vec<&str> = runs.iter().filter_map(|run| run.node.as_deref()).collect();
    nodes.sort();
    assert_eq!(
        nodes,
        ["first", "fourth", "second", "third"],
        "each node once"
    );
    assert!(runs.iter().all(|run| run.state == State::Completed));
    let history: Vec<String> = store
        .flow_run_history(&id)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|change| change.message)
        .collect();
    assert!(
        history
            .iter()
            .any(|message| message.contains("taken over from worker driver")),
        "{history:?}"
    );
    cluster.stop("runner");
    cluster.stop("heir");
}

async fn a_tag_limit_holds_across_workers(backend: Backend) {
    let mut cluster = Cluster::new(backend).await;
    cluster.write("sleepers.toml", &sleepers(9, 400, 0, r#""db""#));
    let limit = cluster
        .command(&["concurrency-limit", "create", "db", "2"])
        .output()
        .unwrap();
    assert_eq!(limit.status.code(), Some(0), "{}", text(&limit.stderr));
    for name in ["one", "two", "three"] {
        cluster.start_worker(name, &["--concurrency", "4"]);
    }
    let (report, lines) = cluster.submit_and_wait("sleepers.toml", &[]);
    assert_eq!(report["state"], "Completed", "{report}\n{lines}");
    let store = cluster.open().await;
    let id = FlowRunId::from_string(report["id"].as_str().unwrap().to_owned());
    let mut edges = Vec::new();
    let mut owners = std::collections::HashSet::new();
    for run in task_runs(store.as_ref(), &id).await {
        owners.insert(run.owner.clone());
        let history = store.state_history(&run.id).await.unwrap();
        let start = history
            .iter()
            .find(|change| change.state == State::Running)
            .unwrap()
            .at;
        let end = history.last().unwrap().at;
        edges.push((start.0, 1));
        edges.push((end.0, -1));
    }
    // Ends before starts at the same instant: a slot is freed before it is taken.
    edges.sort();
    let mut running = 0;
    let mut most = 0;
    for (_, step) in edges {
        running += step;
        most = most.max(running);
    }
    assert!(most <= 2, "{most} ran at once under a limit of 2");
    assert_eq!(most, 2, "the limit is used");
    for name in ["one", "two", "three"] {
        cluster.stop(name);
    }
}

const GREETING: &str = r#"
format = 1
name = "greeting"
output = "greet"

[plugins]
hello = "plugins/hello.wasm"

[nodes.greet]
task = "hello.hello"
input = { name = "worker" }
"#;

async fn plugins_travel_by_digest_and_a_damaged_one_is_refused(backend: Backend) {
    let mut cluster = Cluster::new(backend).await;
    // The plugin exists only where the run is submitted, and only until then.
    std::fs::create_dir_all(cluster.path("plugins")).unwrap();
    let copy = cluster.path("plugins/hello.wasm");
    std::fs::copy(plugin_path("hello"), &copy).unwrap();
    cluster.write("greeting.toml", GREETING);
    let id = cluster.submit("greeting.toml", &[]);
    std::fs::remove_file(&copy).unwrap();
    cluster.start_worker("fresh", &[]);
    let store = cluster.open().await;
    let run = ended(store.as_ref(), &id, Duration::from_secs(60)).await;
    assert_eq!(run.state, State::Completed, "{:?}", run.state_message);

    // Another plugin, damaged in the store before a worker fetches it: refused, and
    // the run says why.
    cluster.stop("fresh");
    std::fs::copy(plugin_path("arith"), &copy).unwrap();
    cluster.write(
        "damaged.toml",
        &GREETING
            .replace("hello.hello", "hello.add")
            .replace(r#"{ name = "worker" }"#, "{ a = 1, b = 2 }"),
    );
    let digest = weir_store::blob_digest(&std::fs::read(&copy).unwrap());
    let damaged = cluster.submit("damaged.toml", &[]);
    match backend {
        Backend::Sqlite => {
            let blob = PathBuf::from(&cluster.store)
                .join("blobs")
                .join(&digest[..2])
                .join(&digest);
            let mut bytes = std::fs::read(&blob).unwrap();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0xff;
            std::fs::write(&blob, bytes).unwrap();
        }
        Backend::Postgres => {
            let (client, connection) =
                tokio_postgres::connect(&cluster.store, tokio_postgres::NoTls)
                    .await
                    .unwrap();
            tokio::spawn(connection);
            let changed = client
                .execute(
                    "UPDATE blobs SET bytes = overlay(bytes placing '\\xff'::bytea from 100) WHERE digest = $1",
                    &[&digest],
                )
                .await
                .unwrap();
            assert_eq!(changed, 1);
        }
    }
    cluster.start_worker("second", &[]);
    let run = ended(store.as_ref(), &damaged, Duration::from_secs(60)).await;
    assert_eq!(run.state, State::Failed);
    let message = run.state_message.unwrap_or_default();
    assert!(
        message.contains(&digest) && message.contains("damaged"),
        "{message}"
    );
    cluster.stop("second");
}

const GUARDED: &str = r#"
format = 1
name = "guarded"
output = "add"

[plugins]
arith = "{arith}"

[nodes.add]
task = "arith.add"
input = { a = 1, b = 2 }
tags = ["db"]
env = ["DB_TOKEN"]
"#;

async fn a_run_no_live_worker_can_take_says_why(backend: Backend) {
    let mut cluster = Cluster::new(backend).await;
    cluster.write("guarded.toml", GUARDED);
    let follower = cluster
        .command(&["run", "guarded.toml", "--submit", "--wait", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let store = cluster.open().await;
    let message_of = |id: FlowRunId| {
        let store = store.clone();
        async move {
            store
                .flow_run(&id)
                .await
                .unwrap()
                .and_then(|run| run.state_message)
        }
    };
    let flow_run = eventually(Duration::from_secs(30), "the run to be queued", || async {
        store
            .flow_runs(&Default::default())
            .await
            .unwrap()
            .into_iter()
            .next()
    })
    .await;
    let no_worker = eventually(Duration::from_secs(30), "a reason", || async {
        message_of(flow_run.id.clone()).await
    })
    .await;
    assert!(no_worker.contains("no worker is running"), "{no_worker}");

    // A worker for other tags drives the flow run; its task run waits for a `db` worker.
    cluster.start_worker("gpu", &["--tags", "gpu"]);
    let task_message = |wanted: &'static str| {
        let store = store.clone();
        let id = flow_run.id.clone();
        async move {
            task_runs(store.as_ref(), &id)
                .await
                .into_iter()
                .find_map(|run| run.state_message.filter(|message| message.contains(wanted)))
        }
    };
    let tags = eventually(Duration::from_secs(30), "the tags reason", || {
        task_message("serves its tags")
    })
    .await;
    assert!(
        tags.contains("(db)") && tags.contains("gpu serves gpu"),
        "{tags}"
    );
    // A worker for every tag, without the variable the run is granted.
    cluster.start_worker("plain", &[]);
    let grants = eventually(Duration::from_secs(30), "the grants reason", || {
        task_message("may grant")
    })
    .await;
    assert!(grants.contains("variable DB_TOKEN"), "{grants}");
    // The follower polls: give it time to show the reason before it goes away.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // One that grants it runs it.
    let log = std::fs::File::create(cluster.path("granting.log")).unwrap();
    let granting = cluster
        .command(&[
            "worker",
            "--name",
            "granting",
            "--lease",
            "1s",
            "--allow-env",
            "DB_TOKEN",
        ])
        .env("DB_TOKEN", "secret")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    cluster.workers.insert("granting".into(), granting);
    let output = follower.wait_with_output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("{}", text(&output.stderr)));
    assert_eq!(report["state"], "Completed", "{report}");
    assert_eq!(report["output"], 3);
    let lines = text(&output.stderr);
    for reason in ["no worker is running", "serves its tags", "may grant"] {
        assert!(lines.contains(reason), "--wait says why it waits: {lines}");
    }
    for name in ["gpu", "plain", "granting"] {
        cluster.stop(name);
    }
}

const TALKING: &str = r#"
format = 1
name = "talking"
output = "talk"

[plugins]
misbehave = "{misbehave}"

[nodes.pause]
task = "misbehave.sleepy"
input = { ms = 1500 }

[nodes.talk]
task = "misbehave.chatty"
input = { lines = 3 }
wait_for = ["pause"]
"#;

async fn logs_follow_a_run_from_another_process(backend: Backend) {
    let mut cluster = Cluster::new(backend).await;
    cluster.write("talking.toml", TALKING);
    cluster.start_worker("one", &[]);
    let id = cluster.submit("talking.toml", &[]);
    let store = cluster.open().await;
    eventually(Duration::from_secs(30), "the run to start", || async {
        store
            .flow_run(&id)
            .await
            .unwrap()
            .filter(|run| run.state == State::Running)
    })
    .await;
    let started = Instant::now();
    let output = cluster
        .command(&["runs", "logs", id.as_str(), "--follow"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let lines = text(&output.stdout);
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "it followed: {lines}"
    );
    let run = store.flow_run(&id).await.unwrap().unwrap();
    assert_eq!(run.state, State::Completed, "it ends with the run");
    for expected in [
        "Task run 'chatty-0' - line 2",
        "Task run 'chatty-0' - Finished in state Completed()",
        "Flow run",
    ] {
        assert!(lines.contains(expected), "{expected}: {lines}");
    }
    assert_eq!(lines.matches("line 2").count(), 1, "{lines}");
    cluster.stop("one");
}

async fn cancelling_a_submitted_run_stops_it_on_every_worker(backend: Backend) {
    let mut cluster = Cluster::new(backend).await;
    cluster.write("sleepers.toml", &sleepers(8, 20_000, 0, ""));
    // Queued with no worker: cancelled in place.
    let queued = cluster.submit("sleepers.toml", &[]);
    let cancel = cluster
        .command(&["runs", "cancel", queued.as_str()])
        .output()
        .unwrap();
    assert_eq!(cancel.status.code(), Some(0), "{}", text(&cancel.stderr));
    let store = cluster.open().await;
    let run = store.flow_run(&queued).await.unwrap().unwrap();
    assert_eq!(run.state, State::Cancelled);
    assert!(store.work(10).await.unwrap().is_empty(), "off the queue");

    // Running on two workers: the driver cancels it, and every attempt stops.
    cluster.start_worker("one", &["--concurrency", "4"]);
    cluster.start_worker("two", &["--concurrency", "4"]);
    let id = cluster.submit("sleepers.toml", &[]);
    running(store.as_ref(), &id, 8).await;
    let started = Instant::now();
    let cancel = cluster
        .command(&["runs", "cancel", id.as_str()])
        .output()
        .unwrap();
    assert_eq!(cancel.status.code(), Some(0), "{}", text(&cancel.stderr));
    let run = ended(store.as_ref(), &id, Duration::from_secs(20)).await;
    assert_eq!(run.state, State::Cancelled, "{:?}", run.state_message);
    let runs = eventually(Duration::from_secs(10), "every task run to end", || async {
        let runs = task_runs(store.as_ref(), &id).await;
        runs.iter().all(|run| run.state.is_final()).then_some(runs)
    })
    .await;
    assert!(
        runs.iter().all(|run| run.state == State::Cancelled),
        "{runs:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "long before the sleeps end"
    );
    eventually(Duration::from_secs(10), "the queue to empty", || async {
        store.work(10).await.unwrap().is_empty().then_some(())
    })
    .await;
    // The workers are free again: a new run completes.
    cluster.write("adds.toml", MAP);
    let (report, lines) = cluster.submit_and_wait("adds.toml", &["values=[1, 2]"]);
    assert_eq!(report["state"], "Completed", "{report}\n{lines}");
    cluster.stop("one");
    cluster.stop("two");
}

/// PostgreSQL only: every connection of the workers (their writers, pools and leases)
/// is cut, twice, while their attempts run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_ride_out_lost_connections_to_postgres() {
    let mut cluster = Cluster::new(Backend::Postgres).await;
    cluster.write("sleepers.toml", &sleepers(8, 2000, 2, ""));
    cluster.start_worker("one", &["--concurrency", "4"]);
    cluster.start_worker("two", &["--concurrency", "4"]);
    let id = cluster.submit("sleepers.toml", &[]);
    let store = cluster.open().await;
    running(store.as_ref(), &id, 8).await;
    let (client, connection) = tokio_postgres::connect(&cluster.store, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    for _ in 0..2 {
        let cut = client
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap();
        assert!(!cut.is_empty());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // This test's own store lost its connections too: a new one reads the outcome.
    let store = cluster.open().await;
    let run = ended(store.as_ref(), &id, Duration::from_secs(60)).await;
    assert_eq!(run.state, State::Completed, "{:?}", run.state_message);
    let runs = task_runs(store.as_ref(), &id).await;
    assert_eq!(runs.len(), 8);
    for run in &runs {
        assert_eq!(run.state, State::Completed);
        let history = states(store.as_ref(), run).await;
        let finals = history.iter().filter(|(state, _)| state.is_final()).count();
        assert_eq!(finals, 1, "{history:?}");
    }
    for name in ["one", "two"] {
        let alive = cluster.workers.get_mut(name).unwrap().try_wait().unwrap();
        assert!(alive.is_none(), "{name} exited: {}", cluster.log(name));
    }
    let logs = cluster.log("one") + &cluster.log("two");
    assert!(
        logs.contains("connecting again"),
        "the cut was noticed: {logs}"
    );
    cluster.stop("one");
    cluster.stop("two");
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

/// PostgreSQL: a worker's memory after 100,000 task runs is what it was after its first
/// 20,000 (its pools, caches and compiled plugin warm by then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_memory_stays_flat_over_a_hundred_thousand_task_runs() {
    const RUNS: usize = 100_000;
    let mut cluster = Cluster::new(Backend::Postgres).await;
    let values: Vec<String> = (0..RUNS).map(|value| value.to_string()).collect();
    cluster.write(
        "wide.toml",
        &MAP.replace("\"${params.values}\"", &format!("[{}]", values.join(", ")))
            .replace("[parameters.values]\ntype = \"array\"\n", ""),
    );
    // The flow run's driver holds the map's outputs: it is not the worker measured.
    // Leases of 10 s, the default: a machine this loaded can miss a 1 s lease.
    cluster.start_worker("driver", &["--concurrency", "1", "--lease", "10s"]);
    let measured = cluster.start_worker("measured", &["--no-flows", "--lease", "10s"]);
    let id = cluster.submit("wide.toml", &[]);
    let store = cluster.open().await;
    let mut warm = None;
    let started = Instant::now();
    loop {
        let run = store.flow_run(&id).await.unwrap().unwrap();
        let done = store
            .task_run_counts(std::slice::from_ref(&id))
            .await
            .unwrap()
            .get(&id)
            .and_then(|counts| counts.get(&State::Completed).copied())
            .unwrap_or(0);
        if warm.is_none() && done >= RUNS / 5 {
            warm = Some(rss_kib(measured));
        }
        if run.state.is_final() {
            assert_eq!(run.state, State::Completed, "{:?}", run.state_message);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "too slow: {done} done"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (warm, end) = (warm.unwrap(), rss_kib(measured));
    eprintln!(
        "worker memory: {} MiB after {} task runs, {} MiB after {RUNS}, in {:?}",
        warm / 1024,
        RUNS / 5,
        end / 1024,
        started.elapsed()
    );
    assert!(
        end <= warm + warm / 5 + 8 * 1024,
        "grew from {warm} KiB to {end} KiB"
    );
    cluster.stop("measured");
    cluster.stop("driver");
}

on_both_backends!(a_stopped_worker_gives_back_what_it_could_not_finish);

async fn a_stopped_worker_gives_back_what_it_could_not_finish(backend: Backend) {
    let mut cluster = Cluster::new(backend).await;
    cluster.write("one-sleep.toml", ONE_SLEEP);
    cluster.start_worker("leaving", &["--grace", "500ms"]);
    let id = cluster.submit("one-sleep.toml", &[]);
    let store = cluster.open().await;
    running(store.as_ref(), &id, 1).await;
    // SIGTERM: the 2.5 s attempt cannot finish within the grace; it goes back.
    let stopping = Instant::now();
    cluster.stop("leaving");
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "it left within its grace"
    );
    let log = cluster.log("leaving");
    assert!(
        log.contains("1 given back") || log.contains("2 given back"),
        "{log}"
    );
    let runs = task_runs(store.as_ref(), &id).await;
    assert_eq!(runs[0].state, State::Pending, "{runs:?}");
    cluster.start_worker("staying", &[]);
    let run = ended(store.as_ref(), &id, Duration::from_secs(30)).await;
    assert_eq!(run.state, State::Completed, "{:?}", run.state_message);
    let history = states(store.as_ref(), &task_runs(store.as_ref(), &id).await[0]).await;
    assert!(
        history
            .iter()
            .any(|(state, message)| *state == State::Pending
                && message
                    .as_deref()
                    .is_some_and(|message| message.contains("given back to the queue"))),
        "{history:?}"
    );
    cluster.stop("staying");
}

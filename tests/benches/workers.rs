//! The work queue and `weir worker` processes, measured in one run on this machine
//! (PostgreSQL, the workers and the submitter all share its cores):
//! - a map of 10,000 trivial tasks (arith add), and a map of 10,000 tasks that each spend
//!   about a millisecond of CPU (arith burn, a fixed count of steps): one `weir run`
//!   process on SQLite and on PostgreSQL, then submitted to 1, 2 and 4 worker processes
//!   on PostgreSQL (and to one worker on SQLite); task runs per second, and the ratio to
//!   the single-process SQLite run. The trivial map measures the queue's own cost; the
//!   working one whether the queue keeps the machine's cores busy with the tasks' work;
//! - the queue's latency: a flow of one task submitted to an idle worker, from the task
//!   run's creation (queued) to its Running state, median and 90th percentile;
//! - a worker's death: kill -9 of the worker running a long task, to the task running
//!   again on the other worker (target: the lease length + 1 s);
//! - tenants (`fairness`): tenant B's one-task flow runs, from submission to their task
//!   running, p50 and p99, on an idle worker and while tenant A floods it with a map of
//!   20,000 slow tasks (target: at most twice the idle latency plus a lease);
//! - the scheduler (`claims`): the cost of a claim of 16 rows with 1, 10 and 1,000 tenants
//!   holding the same 10,000 queued task runs.
//!
//! It needs a PostgreSQL server whose user may create databases, named in
//! `WEIR_TEST_POSTGRES` (`scripts/postgres start --durable`). Run with
//! `cargo bench -p weir-tests --bench workers` (`-- --quick` for a smoke run).
//! Figures are recorded in BENCHMARKS.md.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_core::{FlowRunId, State, Timestamp};
use weir_store::{Store, TaskRunFilter};
use weir_tests::{plugin_path, postgres};

const LEASE: &str = "2s";

struct Bench {
    dir: tempfile::TempDir,
}

impl Bench {
    fn weir(&self, store: &str, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_weir-under-test"));
        command
            .current_dir(self.dir.path())
            .args(["--store", store])
            .args(args)
            .env_remove("WEIR_STORE")
            .env("WEIR_LOCAL_DIR", self.dir.path().join("local"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        command
    }

    fn workers(&self, store: &str, count: usize) -> Vec<Child> {
        (0..count)
            .map(|index| {
                self.weir(
                    store,
                    &["worker", "--name", &format!("w{index}"), "--lease", LEASE],
                )
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
            })
            .collect()
    }

    fn flow(&self, name: &str, body: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        path
    }

    fn submit(&self, store: &str, flow: &Path) -> FlowRunId {
        self.submit_as(store, weir_core::TenantId::DEFAULT, flow)
    }

    /// `weir --tenant TENANT run FLOW --submit`: the run's id.
    fn submit_as(&self, store: &str, tenant: &str, flow: &Path) -> FlowRunId {
        let flow = flow.display().to_string();
        let output = self
            .weir(store, &["--tenant", tenant, "run", &flow, "--submit"])
            .output()
            .unwrap();
        assert!(output.status.success());
        FlowRunId::from_string(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }
}

fn stop(workers: Vec<Child>) {
    for mut child in workers {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
    }
}

async fn open(store: &str) -> Arc<dyn Store> {
    if store.starts_with("postgres") {
        Arc::new(
            weir_store_postgres::PostgresStore::connect(store)
                .await
                .unwrap(),
        )
    } else {
        Arc::new(weir_store_sqlite::SqliteStore::open(Path::new(store)).unwrap())
    }
}

async fn ended(store: &dyn Store, id: &FlowRunId) {
    loop {
        if let Some(run) = store.flow_run(id).await.unwrap()
            && run.state.is_final()
        {
            assert_eq!(run.state, State::Completed, "{:?}", run.state_message);
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A map of `count` tasks of `rounds` steps of work each.
fn burn_flow(count: usize, rounds: u64) -> String {
    let values: Vec<String> = (0..count).map(|_| rounds.to_string()).collect();
    format!(
        "format = 1\nname = \"busy\"\noutput = \"burn\"\n[plugins]\narith = \"{}\"\n[nodes.burn]\ntask = \"arith.burn\"\ninput = {{ rounds = [{}] }}\nmap = [\"rounds\"]\n",
        plugin_path("arith").display(),
        values.join(", ")
    )
}

fn map_flow(count: usize) -> String {
    let values: Vec<String> = (0..count).map(|value| value.to_string()).collect();
    format!(
        "format = 1\nname = \"wide\"\noutput = \"add\"\n[plugins]\narith = \"{}\"\n[nodes.add]\ntask = \"arith.add\"\ninput = {{ a = [{}], b = 1 }}\nmap = [\"a\"]\n",
        plugin_path("arith").display(),
        values.join(", ")
    )
}

async fn store_url(bench: &Bench, postgres: bool, name: &str) -> String {
    match postgres {
        true => postgres::fresh_database().await,
        false => bench.dir.path().join(name).display().to_string(),
    }
}

/// Task runs per second of a map run in one process (`weir run`).
async fn in_one_process(bench: &Bench, flow: &Path, count: usize, postgres: bool) -> f64 {
    let store = store_url(bench, postgres, "single").await;
    let started = Instant::now();
    let output = bench
        .weir(&store, &["run", &flow.display().to_string()])
        .output()
        .unwrap();
    assert!(output.status.success());
    count as f64 / started.elapsed().as_secs_f64()
}

/// Task runs per second of a map submitted to `workers` worker processes.
async fn on_workers(
    bench: &Bench,
    flow: &Path,
    count: usize,
    workers: usize,
    postgres: bool,
) -> f64 {
    let store = store_url(bench, postgres, &format!("queued-{workers}")).await;
    let children = bench.workers(&store, workers);
    let reader = open(&store).await;
    // The workers are up (registered) before the clock starts.
    while reader.workers().await.unwrap().len() < workers {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let id = bench.submit(&store, flow);
    ended(reader.as_ref(), &id).await;
    let per_second = count as f64 / started.elapsed().as_secs_f64();
    stop(children);
    per_second
}

/// A flow of a short sleep, then one task: the second task run is queued by the flow's
/// driver on the worker once the first ended, long after `weir run --submit` exited, so
/// that its latency is the queue's alone (not the submitting process's start and end,
/// which share the machine's two cores).
fn latency_flow() -> String {
    format!(
        "format = 1\nname = \"two\"\noutput = \"add\"\n[plugins]\narith = \"{}\"\nmisbehave = \"{}\"\n[nodes.sleep]\ntask = \"misbehave.sleepy\"\ninput = {{ ms = 200 }}\n[nodes.add]\ntask = \"arith.add\"\ninput = {{ a = 1, b = 2 }}\nwait_for = [\"sleep\"]\n",
        plugin_path("arith").display(),
        plugin_path("misbehave").display()
    )
}

/// Queued to Running of a lone task run on an idle worker: median and 90th percentile.
async fn queue_latency(bench: &Bench, samples: usize, postgres: bool) -> (f64, f64) {
    let store = store_url(bench, postgres, "latency").await;
    let children = bench.workers(&store, 1);
    let reader = open(&store).await;
    while reader.workers().await.unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let flow = bench.flow("two.toml", &latency_flow());
    let mut latencies = Vec::new();
    for _ in 0..samples {
        let id = bench.submit(&store, &flow);
        ended(reader.as_ref(), &id).await;
        // Let the worker go idle between samples.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let runs = reader
            .task_runs(&TaskRunFilter {
                flow_run_id: Some(id),
                ..Default::default()
            })
            .await
            .unwrap();
        let added = runs.iter().find(|run| run.task == "add").unwrap();
        let history = reader.state_history(&added.id).await.unwrap();
        let queued = history[0].at;
        let running = history
            .iter()
            .find(|change| change.state == State::Running)
            .unwrap()
            .at;
        latencies.push(running.since(queued).as_secs_f64() * 1e3);
    }
    stop(children);
    latencies.sort_by(f64::total_cmp);
    let at = |quantile: f64| latencies[((latencies.len() - 1) as f64 * quantile).round() as usize];
    (at(0.5), at(0.9))
}

/// From kill -9 of the worker running a task to the task running on the other worker.
async fn takeover(bench: &Bench, postgres: bool) -> f64 {
    let store = store_url(bench, postgres, "takeover").await;
    let flow = bench.flow(
        "long.toml",
        &format!(
            "format = 1\nname = \"long\"\noutput = \"sleep\"\n[plugins]\nmisbehave = \"{}\"\n[nodes.sleep]\ntask = \"misbehave.sleepy\"\ninput = {{ ms = 3000 }}\nretries = 1\n",
            plugin_path("misbehave").display()
        ),
    );
    let mut first = bench.workers(&store, 1);
    let reader = open(&store).await;
    let id = bench.submit(&store, &flow);
    let run = loop {
        let runs = reader
            .task_runs(&TaskRunFilter {
                flow_run_id: Some(id.clone()),
                ..Default::default()
            })
            .await
            .unwrap();
        if let Some(run) = runs.into_iter().find(|run| run.state == State::Running) {
            break run;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let second = bench.workers(&store, 1);
    while reader.workers().await.unwrap().len() < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut victim = first.remove(0);
    victim.kill().unwrap();
    let killed = Timestamp::from_system_time(std::time::SystemTime::now());
    victim.wait().unwrap();
    let again = loop {
        let history = reader.state_history(&run.id).await.unwrap();
        if let Some(change) = history
            .iter()
            .find(|change| change.state == State::Running && change.attempt == 2)
        {
            break change.at;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    ended(reader.as_ref(), &id).await;
    stop(second);
    again.since(killed).as_secs_f64()
}

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    // Parts by name (`throughput`, `busy`, `latency`, `takeover`); all of them when none is
    // named.
    let named: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    let part = |name: &str| named.is_empty() || named.iter().any(|arg| arg == name);
    let (count, samples) = if quick { (200, 3) } else { (10_000, 20) };
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let bench = Bench {
        dir: tempfile::tempdir().unwrap(),
    };
    let flow = bench.flow("wide.toml", &map_flow(count));
    let busy_count = if quick { 100 } else { 10_000 };
    let busy = bench.flow("busy.toml", &burn_flow(busy_count, 1_000_000));
    tokio.block_on(async {
        // Compiled once before any clock starts.
        let warm = bench
            .weir(
                &bench.dir.path().join("warm").display().to_string(),
                &["inspect", &plugin_path("arith").display().to_string()],
            )
            .output()
            .unwrap();
        assert!(warm.status.success());
        if part("throughput") {
            throughput(&bench, &flow, count, quick, "trivial tasks (arith.add)").await;
        }
        if part("busy") {
            throughput(
                &bench,
                &busy,
                busy_count,
                quick,
                "tasks of about 1 ms of CPU each (arith.burn)",
            )
            .await;
        }
        if part("latency") {
            for (name, postgres) in [("PostgreSQL", true), ("SQLite", false)] {
                let (median, p90) = queue_latency(&bench, samples, postgres).await;
                println!(
                    "queued to Running on an idle worker, {name}: median {median:.1} ms, p90 {p90:.1} ms (target ≤ 2 ms)"
                );
            }
        }
        if part("fairness") {
            for (name, postgres) in [("PostgreSQL", true), ("SQLite", false)] {
                fairness(&bench, name, postgres, quick).await;
            }
        }
        if part("claims") {
            for (name, postgres) in [("PostgreSQL", true), ("SQLite", false)] {
                for tenants in [1, 10, 1000] {
                    let total = if quick { 1_000 } else { 10_000 };
                    let (per_claim, rows) =
                        claim_cost(&bench, postgres, tenants, total, quick).await;
                    println!(
                        "a claim of 16 rows among {total} queued, {tenants} tenant(s), {name}: {per_claim:.2} ms ({rows} rows claimed)"
                    );
                }
            }
        }
        if part("takeover") {
            let seconds = takeover(&bench, true).await;
            println!(
                "kill -9 of a worker to its task running elsewhere, PostgreSQL, lease {LEASE}: {seconds:.2} s (target ≤ lease + 1 s)"
            );
        }
    });
}

/// Task runs per second of the map, in one process and on workers.
async fn throughput(bench: &Bench, flow: &Path, count: usize, quick: bool, tasks: &str) {
    let sqlite = in_one_process(bench, flow, count, false).await;
    let postgres = in_one_process(bench, flow, count, true).await;
    println!("workers: a map of {count} {tasks}, task runs per second, in one run");
    println!("{:<52} {:>10} {:>16}", "how", "runs/s", "vs one SQLite");
    let row = |how: &str, per_second: f64| {
        println!(
            "{how:<52} {per_second:>10.0} {:>15.2}x",
            per_second / sqlite
        );
    };
    row("one `weir run` process, SQLite", sqlite);
    row("one `weir run` process, PostgreSQL", postgres);
    let worker_counts: &[usize] = if quick { &[1, 2] } else { &[1, 2, 4] };
    for &workers in worker_counts {
        let per_second = on_workers(bench, flow, count, workers, true).await;
        row(
            &format!("submitted to {workers} worker(s), PostgreSQL"),
            per_second,
        );
    }
    let per_second = on_workers(bench, flow, count, 1, false).await;
    row("submitted to 1 worker, SQLite", per_second);
}

/// A one-task flow, and a map of `count` tasks that sleep 100 ms each.
fn tenant_flows(bench: &Bench, count: usize) -> (PathBuf, PathBuf) {
    let one = bench.flow(
        "one.toml",
        &format!(
            "format = 1\nname = \"one\"\n[plugins]\narith = \"{}\"\n[nodes.add]\ntask = \"arith.add\"\ninput = {{ a = 1, b = 2 }}\n",
            plugin_path("arith").display()
        ),
    );
    let values = vec!["100"; count].join(", ");
    let flood = bench.flow(
        "flood.toml",
        &format!(
            "format = 1\nname = \"flood\"\n[plugins]\nmisbehave = \"{}\"\n[nodes.nap]\ntask = \"misbehave.sleepy\"\ninput = {{ ms = [{values}] }}\nmap = [\"ms\"]\n",
            plugin_path("misbehave").display()
        ),
    );
    (one, flood)
}

/// Submitted to the task running, for `samples` one-task flow runs of `tenant`, one after
/// the other: sorted, in milliseconds.
async fn tenant_latencies(
    bench: &Bench,
    store: &str,
    reader: &dyn Store,
    tenant: &str,
    flow: &Path,
    samples: usize,
) -> Vec<f64> {
    let mut latencies = Vec::new();
    for _ in 0..samples {
        let id = bench.submit_as(store, tenant, flow);
        ended(reader, &id).await;
        let flow_run = reader.flow_run(&id).await.unwrap().unwrap();
        let runs = reader
            .task_runs(&TaskRunFilter {
                flow_run_id: Some(id),
                ..Default::default()
            })
            .await
            .unwrap();
        let started = runs[0].started.unwrap();
        latencies.push(started.since(flow_run.created).as_secs_f64() * 1e3);
    }
    latencies.sort_by(f64::total_cmp);
    latencies
}

fn quantile(sorted: &[f64], at: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * at).round() as usize]
}

/// Tenant B's latency idle and under tenant A's flood, on one worker of 8 task runs.
async fn fairness(bench: &Bench, name: &str, postgres: bool, quick: bool) {
    let store = store_url(bench, postgres, "fairness").await;
    for tenant in ["flooder", "bystander"] {
        let output = bench
            .weir(&store, &["tenant", "create", tenant])
            .output()
            .unwrap();
        assert!(output.status.success());
    }
    let (samples, count) = if quick { (3, 2_000) } else { (50, 20_000) };
    let (one, flood) = tenant_flows(bench, count);
    let children: Vec<Child> = vec![
        bench
            .weir(
                &store,
                &[
                    "worker",
                    "--name",
                    "w",
                    "--lease",
                    LEASE,
                    "--concurrency",
                    "8",
                ],
            )
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    ];
    let reader = open(&store).await;
    while reader.workers().await.unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bystander = reader.for_tenant(&weir_core::TenantId::parse("bystander").unwrap());
    let idle = tenant_latencies(
        bench,
        &store,
        bystander.as_ref(),
        "bystander",
        &one,
        samples,
    )
    .await;
    let flood_id = bench.submit_as(&store, "flooder", &flood).to_string();
    let flooder = reader.for_tenant(&weir_core::TenantId::parse("flooder").unwrap());
    // The flood flows: the worker's slots are full of its tasks.
    loop {
        let running = flooder
            .task_runs(&TaskRunFilter {
                flow_run_id: Some(FlowRunId::from_string(flood_id.clone())),
                state: Some(State::Running),
                limit: Some(8),
                ..Default::default()
            })
            .await
            .unwrap();
        if running.len() >= 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let flooded = tenant_latencies(
        bench,
        &store,
        bystander.as_ref(),
        "bystander",
        &one,
        samples,
    )
    .await;
    let cancel = bench
        .weir(
            &store,
            &["--tenant", "flooder", "runs", "cancel", &flood_id],
        )
        .output()
        .unwrap();
    assert!(cancel.status.success());
    stop(children);
    println!(
        "tenant B's flow run, submitted to its task running, {name}: idle p50 {:.1} ms, p99 {:.1} ms; under tenant A's flood of {count} tasks of 100 ms on the same worker p50 {:.1} ms, p99 {:.1} ms (target ≤ 2 × idle p50 + the {LEASE} lease)",
        quantile(&idle, 0.5),
        quantile(&idle, 0.99),
        quantile(&flooded, 0.5),
        quantile(&flooded, 0.99),
    );
}

/// The mean cost of a claim of 16 rows, with 10,000 task runs queued by `tenants` tenants.
async fn claim_cost(
    bench: &Bench,
    postgres: bool,
    tenants: usize,
    total: usize,
    quick: bool,
) -> (f64, usize) {
    use weir_store::{ClaimTimes, NewTaskRun, NewWork, NewWorkRun, Room, StateChange, WorkerOffer};
    let store = store_url(bench, postgres, &format!("claims-{tenants}")).await;
    let store = open(&store).await;
    for index in 0..tenants {
        let name = weir_core::TenantId::parse(&format!("t{index}")).unwrap();
        store
            .create_tenant(&weir_store::TenantRecord {
                name: name.clone(),
                weight: 1,
                created: Timestamp(1),
                quotas: Default::default(),
                ceilings: None,
            })
            .await
            .unwrap();
        let tenant = store.for_tenant(&name);
        for _ in 0..total / tenants {
            let work = NewWork {
                run: NewWorkRun::Task {
                    run: NewTaskRun {
                        id: weir_core::TaskRunId::generate(),
                        name: "work".into(),
                        task: "add".into(),
                        plugin_name: "arith".into(),
                        plugin_digest: weir_core::ComponentDigest::of_bytes(b"arith"),
                        flow_run_id: None,
                        node: None,
                        map_index: None,
                        input: serde_json::json!({}),
                        tags: Vec::new(),
                        created: Timestamp(1),
                        owner: None,
                    },
                    states: vec![StateChange {
                        state: State::Pending,
                        message: None,
                        attempt: 0,
                        at: Timestamp(1),
                    }],
                },
                spec: "{}".into(),
                tags: Vec::new(),
                requirements: Default::default(),
                ready_at: Timestamp(0),
                priority: 0,
                memory_bytes: None,
            };
            tenant.enqueue(&work, None).unwrap();
        }
    }
    store.flush().await.unwrap();
    let claims = if quick { 5 } else { 50 };
    let offer = WorkerOffer {
        worker: "own_bench".into(),
        name: "bench".into(),
        ..Default::default()
    };
    let times = ClaimTimes {
        now: Timestamp(10),
        lease_until: Timestamp(i64::MAX / 2),
    };
    let started = Instant::now();
    let mut rows = 0;
    for _ in 0..claims {
        rows += store
            .claim(
                &offer,
                times,
                Room {
                    tasks: 16,
                    flows: 0,
                },
            )
            .await
            .unwrap()
            .len();
    }
    (started.elapsed().as_secs_f64() * 1e3 / claims as f64, rows)
}

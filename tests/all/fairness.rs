//! Fair claims across tenants, and the quotas a claim keeps: a tenant's flood (of slow
//! tasks, of tasks that spin to their timeout, of tasks that allocate to their limit)
//! does not hold back another tenant's runs, with real worker processes; in the store, a
//! claim serves a tenant with one queued run beside one with twenty thousand, and keeps
//! a tenant's task runs and memory in flight within its quotas.

use serde_json::json;
use std::time::{Duration, Instant};
use weir_core::{ComponentDigest, FlowRunId, State, TaskRunId, TenantId, Timestamp};
use weir_store::{
    ClaimTimes, NewTaskRun, NewWork, NewWorkRun, Quotas, Room, StateChange, Store, TenantRecord,
    WorkerOffer,
};
use weir_tests::Backend;

use crate::command::text;
use crate::store::Location;
use crate::workers::{Cluster, eventually, task_runs};

on_both_backends!(
    a_tenants_grant_ceiling_holds_on_the_worker,
    a_claim_serves_a_tenant_with_one_run_beside_one_with_thousands,
    a_claim_keeps_a_tenant_within_its_quotas,
    a_flood_from_one_tenant_does_not_hold_back_anothers_runs,
);

fn queued(id: TaskRunId, memory: Option<u64>) -> NewWork {
    NewWork {
        run: NewWorkRun::Task {
            run: NewTaskRun {
                id,
                name: "work-0".into(),
                task: "add".into(),
                plugin_name: "arith".into(),
                plugin_digest: ComponentDigest::of_bytes(b"arith"),
                flow_run_id: None,
                node: None,
                map_index: None,
                input: json!({}),
                tags: Vec::new(),
                created: Timestamp(1_000),
                owner: None,
            },
            states: vec![StateChange {
                state: State::Pending,
                message: None,
                attempt: 0,
                at: Timestamp(1_000),
            }],
        },
        spec: "{}".into(),
        tags: Vec::new(),
        requirements: Default::default(),
        ready_at: Timestamp(0),
        priority: 0,
        memory_bytes: memory,
    }
}

async fn tenant(store: &dyn Store, name: &str, quotas: Quotas) -> TenantId {
    let tenant = TenantId::parse(name).unwrap();
    store
        .create_tenant(&TenantRecord {
            name: tenant.clone(),
            weight: 1,
            created: Timestamp(1),
            quotas,
            ceilings: None,
        })
        .await
        .unwrap();
    tenant
}

async fn claim(store: &dyn Store, worker: &str, room: usize) -> Vec<weir_store::Claim> {
    store
        .claim(
            &WorkerOffer {
                worker: worker.into(),
                name: worker.into(),
                ..Default::default()
            },
            ClaimTimes {
                now: Timestamp(10_000),
                lease_until: Timestamp(i64::MAX / 2),
            },
            Room {
                tasks: room,
                flows: 0,
            },
        )
        .await
        .unwrap()
}

async fn a_claim_serves_a_tenant_with_one_run_beside_one_with_thousands(backend: Backend) {
    let location = Location::new(backend).await;
    let store = location.open().await;
    let flood = store.for_tenant(&tenant(store.as_ref(), "flood", Quotas::default()).await);
    let single = store.for_tenant(&tenant(store.as_ref(), "single", Quotas::default()).await);
    for _ in 0..20_000 {
        flood
            .enqueue(&queued(TaskRunId::generate(), None), None)
            .unwrap();
    }
    flood.flush().await.unwrap();
    // The flood's tenant alone for a few claims: it gets every row.
    for _ in 0..3 {
        let claims = claim(store.as_ref(), "own_w", 4).await;
        assert_eq!(claims.len(), 4);
        assert!(claims.iter().all(|claim| claim.tenant.as_str() == "flood"));
    }
    let lone = TaskRunId::generate();
    single.enqueue(&queued(lone.clone(), None), None).unwrap();
    single.flush().await.unwrap();
    // The next claim, of a single row, is the lone run's: not after twenty thousand.
    let started = Instant::now();
    let claims = claim(store.as_ref(), "own_w", 1).await;
    let took = started.elapsed();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].run_id, lone.as_str(), "{:?}", claims[0].tenant);
    assert_eq!(claims[0].tenant.as_str(), "single");
    // A claim beside 20,000 queued rows stays cheap (generous: the machine is shared).
    assert!(took < Duration::from_secs(2), "a claim took {took:?}");
    // With two tenants waiting, claims alternate between them.
    for _ in 0..3 {
        single
            .enqueue(&queued(TaskRunId::generate(), None), None)
            .unwrap();
    }
    single.flush().await.unwrap();
    let claims = claim(store.as_ref(), "own_w", 4).await;
    let singles = claims
        .iter()
        .filter(|claim| claim.tenant.as_str() == "single")
        .count();
    assert_eq!((claims.len(), singles), (4, 2));
}

async fn a_claim_keeps_a_tenant_within_its_quotas(backend: Backend) {
    let location = Location::new(backend).await;
    let store = location.open().await;
    let counted = tenant(
        store.as_ref(),
        "counted",
        Quotas {
            task_runs_in_progress: Some(3),
            ..Default::default()
        },
    )
    .await;
    let weighed = tenant(
        store.as_ref(),
        "weighed",
        Quotas {
            memory_in_flight_bytes: Some(100 << 20),
            ..Default::default()
        },
    )
    .await;
    let counted_store = store.for_tenant(&counted);
    let weighed_store = store.for_tenant(&weighed);
    for _ in 0..10 {
        counted_store
            .enqueue(&queued(TaskRunId::generate(), Some(1 << 20)), None)
            .unwrap();
        weighed_store
            .enqueue(&queued(TaskRunId::generate(), Some(40 << 20)), None)
            .unwrap();
    }
    store.flush().await.unwrap();
    // Two workers claim as much as they can.
    let mut by_tenant = std::collections::HashMap::<String, usize>::new();
    for worker in ["own_a", "own_b"] {
        for claim in claim(store.as_ref(), worker, 16).await {
            *by_tenant.entry(claim.tenant.to_string()).or_default() += 1;
        }
    }
    // Three task runs at once; 40 MiB runs within 100 MiB: two.
    assert_eq!(by_tenant.get("counted"), Some(&3), "{by_tenant:?}");
    assert_eq!(by_tenant.get("weighed"), Some(&2), "{by_tenant:?}");
    let usage = store
        .tenant_usage(&weighed, Timestamp(10_000))
        .await
        .unwrap();
    assert_eq!(
        (
            usage.task_runs_in_progress,
            usage.memory_in_flight_bytes,
            usage.queued
        ),
        (2, 80 << 20, 8)
    );
    // The claim says what bounds the run.
    let claims = claim(store.as_ref(), "own_c", 16).await;
    assert!(claims.is_empty(), "{claims:?}");
}

/// One task of arith: what tenant B submits, again and again.
const ONE: &str = r#"
format = 1
name = "one"

[plugins]
arith = "{arith}"

[nodes.add]
task = "arith.add"
input = { a = 1, b = 2 }
"#;

/// Tenant A's floods: twenty thousand elements of slow tasks, of tasks that spin to their
/// timeout, of tasks that allocate to their memory limit.
fn flood(task: &str, element: &str, value: &str, extra: &str) -> String {
    let items = vec![value; 20_000].join(", ");
    format!(
        r#"
format = 1
name = "flood"

[parameters.items]
type = "array"
default = [{items}]

[plugins]
misbehave = "{{misbehave}}"
arith = "{{arith}}"

[nodes.flood]
task = "{task}"
input = {{ {element} = "${{params.items}}" }}
map = ["{element}"]
{extra}
"#
    )
}

/// How long each of `runs` (flow runs of tenant B) took from its submission to the start
/// of its task run, once all of them completed.
async fn latencies(store: &dyn Store, runs: &[FlowRunId]) -> Vec<Duration> {
    let mut latencies = Vec::new();
    for id in runs {
        let flow = eventually(Duration::from_secs(60), "tenant B's run to end", || async {
            store
                .flow_run(id)
                .await
                .unwrap()
                .filter(|run| run.state.is_final())
        })
        .await;
        assert_eq!(flow.state, State::Completed, "{flow:?}");
        let task = &task_runs(store, id).await[0];
        let started = task.started.expect("a completed task run started");
        latencies.push(Duration::from_micros(
            (started.0 - flow.created.0).max(0) as u64
        ));
    }
    latencies
}

async fn a_flood_from_one_tenant_does_not_hold_back_anothers_runs(backend: Backend) {
    let mut cluster = Cluster::new(backend).await;
    for name in ["flooder", "bystander"] {
        let output = cluster
            .command(&["tenant", "create", name])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output.stderr));
    }
    cluster.write("one.toml", ONE);
    cluster.write("slow.toml", &flood("misbehave.sleepy", "ms", "100", ""));
    cluster.write(
        "spin.toml",
        &flood(
            "arith.burn",
            "rounds",
            "100000000000",
            "timeout = \"300ms\"",
        ),
    );
    cluster.write(
        "hog.toml",
        &flood("misbehave.hog-each", "element", "1", "memory = \"32MiB\""),
    );
    let lease = Duration::from_secs(2);
    cluster.start_worker("w", &["--concurrency", "8", "--lease", "2s"]);
    let store = cluster.open().await;
    let bystander = store.for_tenant(&TenantId::parse("bystander").unwrap());
    let flooder = store.for_tenant(&TenantId::parse("flooder").unwrap());
    let submit = |tenant: &str, flow: &str, params: &[&str]| {
        let mut args = vec!["--tenant", tenant, "run", flow, "--submit"];
        for param in params {
            args.extend(["-p", param]);
        }
        let output = cluster.command(&args).output().unwrap();
        assert!(output.status.success(), "{}", text(&output.stderr));
        FlowRunId::from_string(text(&output.stdout).trim().to_owned())
    };

    // B alone: its latency on an idle system.
    let mut idle_runs = Vec::new();
    for _ in 0..5 {
        let run = submit("bystander", "one.toml", &[]);
        latencies(bystander.as_ref(), std::slice::from_ref(&run)).await;
        idle_runs.push(run);
    }
    let mut idle = latencies(bystander.as_ref(), &idle_runs).await;
    idle.sort();
    let idle = idle[idle.len() / 2];
    let bound = idle * 2 + lease;

    // The floods: slow tasks (100 ms each: the 8 slots are always full), tasks that spin
    // to their 300 ms timeout, tasks that allocate to their 32 MiB limit.
    for flow in ["slow.toml", "spin.toml", "hog.toml"] {
        let flood = submit("flooder", flow, &[]);
        let flowing = |at_least: usize| {
            let flooder = flooder.clone();
            let flood = flood.clone();
            async move {
                let ended = task_runs(flooder.as_ref(), &flood)
                    .await
                    .iter()
                    .filter(|run| run.state.is_final())
                    .count();
                (ended >= at_least).then_some(ended)
            }
        };
        let before = eventually(Duration::from_secs(60), "the flood to flow", || flowing(16)).await;
        let runs: Vec<FlowRunId> = (0..20)
            .map(|_| submit("bystander", "one.toml", &[]))
            .collect();
        let latencies = latencies(bystander.as_ref(), &runs).await;
        let worst = latencies.iter().max().copied().unwrap_or_default();
        eprintln!("{flow}: tenant B's worst latency {worst:?} (idle median {idle:?})");
        assert!(
            worst <= bound,
            "{flow}: tenant B's runs waited up to {worst:?} (idle {idle:?}, bound {bound:?}): {latencies:?}"
        );
        // A's flood goes on meanwhile.
        eventually(Duration::from_secs(60), "the flood to go on", || {
            flowing(before + 8)
        })
        .await;
        let cancelled = cluster
            .command(&["--tenant", "flooder", "runs", "cancel", flood.as_str()])
            .output()
            .unwrap();
        assert!(cancelled.status.success(), "{}", text(&cancelled.stderr));
        eventually(Duration::from_secs(60), "the flood to end", || async {
            flooder
                .flow_run(&flood)
                .await
                .unwrap()
                .filter(|run| run.state.is_final())
        })
        .await;
    }
    cluster.stop("w");
}

/// A flow whose node is granted an HTTP host the worker allows.
const GRANTED: &str = r#"
format = 1
name = "granted"

[plugins]
hello = "{hello}"

[nodes.greet]
task = "hello.hello"
input = { name = "granted" }
http = ["api.example.com"]
"#;

async fn a_tenants_grant_ceiling_holds_on_the_worker(backend: Backend) {
    let mut cluster = Cluster::new(backend).await;
    for args in [
        &["tenant", "create", "acme"][..],
        &["tenant", "set", "acme", "--grant-nothing"],
    ] {
        let output = cluster.command(args).output().unwrap();
        assert!(output.status.success(), "{}", text(&output.stderr));
    }
    cluster.write("granted.toml", GRANTED);
    cluster.start_worker("w", &["--allow-http", "api.example.com"]);
    // Submitted by the operator (whose submissions are not checked): the worker holds
    // the tenant's ceiling.
    let output = cluster
        .command(&["--tenant", "acme", "run", "granted.toml", "--submit"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let id = FlowRunId::from_string(text(&output.stdout).trim().to_owned());
    let store = cluster.open().await;
    let acme = store.for_tenant(&TenantId::parse("acme").unwrap());
    let run = eventually(Duration::from_secs(60), "the run to end", || async {
        acme.flow_run(&id)
            .await
            .unwrap()
            .filter(|run| run.state.is_final())
    })
    .await;
    assert_eq!(run.state, State::Failed, "{run:?}");
    let task = &task_runs(acme.as_ref(), &id).await[0];
    assert_eq!(task.state, State::Failed);
    assert_eq!(
        task.state_message.as_deref(),
        Some(
            "it is granted http api.example.com, beyond what tenant `acme` may grant (its ceilings are set with `weir tenant set`)"
        )
    );
    cluster.stop("w");
}

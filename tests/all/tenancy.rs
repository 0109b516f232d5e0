//! Tenants: what each owns is out of every other's reach, in the store (both backends),
//! the command line and the API (every endpoint, asked with another tenant's ids).

use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use weir_core::{
    CacheKey, ComponentDigest, FlowRunId, State, TaskRunId, TenantId, Timestamp, TokenScope,
};
use weir_store::{
    CacheEntryDraft, Ending, FlowRunFilter, LogRecord, NewFlowRun, NewTaskRun, NewToken, NewWork,
    NewWorkRun, PluginRecord, Room, StateChange, Store, StoreError, TaskRunFilter, TenantDeletion,
    TenantRecord, WorkerOffer,
};
use weir_tests::server::{Api, ServerProcess};
use weir_tests::{Backend, plugin_path, postgres};

use crate::command::{text, weir};
use crate::store::Location;

on_both_backends!(
    a_tenant_sees_only_what_it_owns,
    a_tenant_is_deleted_with_what_it_owns,
    tokens_are_kept_hashed_and_stop_when_revoked,
    every_api_call_sees_only_the_callers_tenant,
);

fn change(state: State, attempt: u32, at: i64) -> StateChange {
    StateChange {
        state,
        message: None,
        attempt,
        at: Timestamp(at),
    }
}

fn task_run(flow_run: Option<&FlowRunId>) -> NewTaskRun {
    NewTaskRun {
        id: TaskRunId::generate(),
        name: "add-0".into(),
        task: "add".into(),
        plugin_name: "arith".into(),
        plugin_digest: ComponentDigest::of_bytes(b"arith"),
        flow_run_id: flow_run.cloned(),
        node: Some("add".into()),
        map_index: None,
        input: json!({"a": 1, "b": 2}),
        tags: vec!["db".into()],
        created: Timestamp(1_000),
        owner: None,
    }
}

fn flow_run() -> NewFlowRun {
    NewFlowRun {
        id: FlowRunId::generate(),
        name: "secret-otter".into(),
        flow: "squares".into(),
        source: None,
        parameters: json!({}),
        parent: None,
        created: Timestamp(1_000),
        owner: None,
        graph: Some(weir_store::FlowGraph::default()),
        tags: vec!["private".into()],
    }
}

async fn new_tenant(store: &dyn Store, name: &str) -> TenantId {
    let tenant = TenantId::parse(name).unwrap();
    let created = store
        .create_tenant(&TenantRecord {
            name: tenant.clone(),
            weight: 1,
            created: Timestamp(1),
            quotas: Default::default(),
            ceilings: None,
        })
        .await
        .unwrap();
    assert!(created);
    tenant
}

/// What one tenant records: a flow run with a task run (logs, a result, a cache entry,
/// a node output), a plugin, a limit, a queued task run.
struct Recorded {
    flow: NewFlowRun,
    task: NewTaskRun,
    key: CacheKey,
    plugin: ComponentDigest,
    queued: TaskRunId,
}

async fn record_everything(store: &dyn Store) -> Recorded {
    let flow = flow_run();
    store
        .create_flow_run(&flow, &[change(State::Running, 1, 1_000)])
        .unwrap();
    let task = task_run(Some(&flow.id));
    store
        .create_task_run(&task, &[change(State::Running, 1, 1_001)], None)
        .unwrap();
    store
        .append_logs(
            &task.id,
            &[LogRecord {
                at: Timestamp(1_002),
                level: weir_core::LogLevel::Info,
                message: "a private line".into(),
            }],
        )
        .unwrap();
    let key = CacheKey::from_hex("ab".repeat(32));
    store
        .finish_task_run(
            &task.id,
            &change(State::Completed, 1, 1_003),
            Some(&json!(store.tenant_id().as_str())),
            Some(&CacheEntryDraft {
                key: key.clone(),
                task: "add".into(),
                plugin_digest: task.plugin_digest.clone(),
                expires: None,
            }),
        )
        .unwrap();
    store
        .record_node_output(&flow.id, "add", &json!(3))
        .unwrap();
    let plugin = ComponentDigest::of_bytes(store.tenant_id().as_str().as_bytes());
    store
        .record_plugin(&PluginRecord {
            digest: plugin.clone(),
            name: "arith".into(),
            size_bytes: 10,
            tasks: Vec::new(),
            first_seen: Timestamp(1_000),
        })
        .unwrap();
    store
        .set_concurrency_limit("db", 1, Timestamp(1_000))
        .await
        .unwrap();
    let queued = task_run(Some(&flow.id));
    store
        .enqueue(
            &NewWork {
                run: NewWorkRun::Task {
                    run: queued.clone(),
                    states: vec![change(State::Pending, 0, 1_000)],
                },
                spec: "{}".into(),
                tags: Vec::new(),
                requirements: Default::default(),
                ready_at: Timestamp(0),
                priority: 0,
                memory_bytes: None,
            },
            None,
        )
        .unwrap();
    store.flush().await.unwrap();
    Recorded {
        flow,
        task,
        key,
        plugin,
        queued: queued.id,
    }
}

async fn a_tenant_sees_only_what_it_owns(backend: Backend) {
    let location = Location::new(backend).await;
    let operator = location.open().await;
    assert!(operator.tenant_id().is_default());
    let acme = operator.for_tenant(&new_tenant(operator.as_ref(), "acme").await);
    let before = operator.changes_now().await.unwrap();
    let mine = record_everything(acme.as_ref()).await;
    let (flow, task) = (&mine.flow.id, &mine.task.id);

    // The owner sees all of it.
    assert!(acme.flow_run(flow).await.unwrap().is_some());
    assert_eq!(
        acme.task_runs(&TaskRunFilter::default())
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(acme.logs(task).await.unwrap().len(), 1);
    assert!(
        acme.cached_result(&mine.key, Timestamp(5_000))
            .await
            .unwrap()
            .is_some()
    );
    assert!(acme.plugin(&mine.plugin).await.unwrap().is_some());

    // Another tenant (the default) sees none of it.
    let other = operator.as_ref();
    assert!(other.flow_run(flow).await.unwrap().is_none());
    assert!(
        other
            .flow_runs(&FlowRunFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
    let by_name = FlowRunFilter {
        name: Some("secret-otter".into()),
        ..Default::default()
    };
    assert!(other.flow_runs(&by_name).await.unwrap().is_empty());
    assert!(other.flow_run_history(flow).await.unwrap().is_empty());
    assert!(other.node_outputs(flow).await.unwrap().is_empty());
    assert!(other.flow_graph(flow).await.unwrap().is_none());
    assert!(other.task_run(task).await.unwrap().is_none());
    assert!(
        other
            .task_runs(&TaskRunFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(other.state_history(task).await.unwrap().is_empty());
    assert!(other.logs(task).await.unwrap().is_empty());
    let counts = other
        .task_run_counts(std::slice::from_ref(flow))
        .await
        .unwrap();
    assert!(
        counts.get(flow).is_none_or(|states| states.is_empty()),
        "{counts:?}"
    );
    assert!(
        other
            .cached_result(&mine.key, Timestamp(5_000))
            .await
            .unwrap()
            .is_none()
    );
    assert!(other.cache_entries().await.unwrap().is_empty());
    assert!(other.plugin(&mine.plugin).await.unwrap().is_none());
    assert!(other.plugins().await.unwrap().is_empty());
    assert!(
        other
            .concurrency_limits(Timestamp(5_000))
            .await
            .unwrap()
            .is_empty()
    );
    let changes = other.changes(&before, 1000).await.unwrap();
    assert!(
        changes.flow_runs.is_empty() && changes.task_runs.is_empty(),
        "another tenant's changes leaked: {changes:?}"
    );
    assert!(matches!(
        other
            .request_cancel(task.as_str(), "no", Timestamp(6_000))
            .await,
        Err(StoreError::UnknownTaskRun(_))
    ));
    assert!(matches!(
        other
            .request_cancel(flow.as_str(), "no", Timestamp(6_000))
            .await,
        Err(StoreError::UnknownFlowRun(_))
    ));
    assert!(matches!(
        other.set_flow_run_owner(flow, "own_x").await,
        Err(StoreError::UnknownFlowRun(_))
    ));
    let ending = Ending {
        state: State::Cancelled,
        message: "not yours".into(),
        at: Timestamp(6_000),
    };
    assert!(
        other
            .end_flow_run_tree(flow, &ending)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        acme.flow_run(flow).await.unwrap().unwrap().state,
        State::Running
    );
    assert_eq!(other.clear_cache().await.unwrap(), 0);
    assert!(
        acme.cached_result(&mine.key, Timestamp(5_000))
            .await
            .unwrap()
            .is_some()
    );

    // The same names and keys in two tenants are two things.
    let theirs = record_everything(other).await;
    let (_, from_acme) = acme
        .cached_result(&mine.key, Timestamp(5_000))
        .await
        .unwrap()
        .unwrap();
    let (_, from_other) = other
        .cached_result(&theirs.key, Timestamp(5_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((from_acme, from_other), (json!("acme"), json!("default")));
    assert_eq!(
        acme.concurrency_limits(Timestamp(5_000))
            .await
            .unwrap()
            .len(),
        1
    );
    // A slot of acme's `db` does not count against the default tenant's `db`.
    let granted = |store: std::sync::Arc<dyn Store>, holder: &'static str| async move {
        store
            .acquire_slots(
                &["db".to_owned()],
                holder,
                Timestamp(5_000),
                Timestamp(9_000),
            )
            .await
            .unwrap()
    };
    assert_eq!(
        granted(acme.clone(), "trun_a").await,
        weir_store::SlotRequest::Granted
    );
    assert_eq!(
        granted(operator.clone(), "trun_b").await,
        weir_store::SlotRequest::Granted
    );
    assert!(matches!(
        granted(acme.clone(), "trun_c").await,
        weir_store::SlotRequest::Full { .. }
    ));

    // Workers claim across tenants, and each claim says whose run it is.
    let claims = operator
        .claim(
            &WorkerOffer {
                worker: "own_w".into(),
                name: "w".into(),
                ..Default::default()
            },
            weir_store::ClaimTimes {
                now: Timestamp(5_000),
                lease_until: Timestamp(60_000_000),
            },
            Room::of_each(10),
        )
        .await
        .unwrap();
    let owners: Vec<(String, String)> = claims
        .iter()
        .map(|claim| (claim.run_id.clone(), claim.tenant.to_string()))
        .collect();
    assert!(
        owners.contains(&(mine.queued.to_string(), "acme".into()))
            && owners.contains(&(theirs.queued.to_string(), "default".into())),
        "{owners:?}"
    );
    let queue = operator.work(10).await.unwrap();
    assert!(
        queue.iter().any(|row| row.tenant.as_str() == "acme"),
        "{queue:?}"
    );
}

async fn a_tenant_is_deleted_with_what_it_owns(backend: Backend) {
    let location = Location::new(backend).await;
    let operator = location.open().await;
    assert!(
        !operator
            .create_tenant(&TenantRecord {
                name: TenantId::default_tenant(),
                weight: 1,
                created: Timestamp(1),
                quotas: Default::default(),
                ceilings: None,
            })
            .await
            .unwrap(),
        "the default tenant exists from the start"
    );
    let name = new_tenant(operator.as_ref(), "acme").await;
    let names: Vec<String> = operator
        .tenants()
        .await
        .unwrap()
        .into_iter()
        .map(|tenant| tenant.name.to_string())
        .collect();
    assert_eq!(names, ["acme", "default"]);
    let acme = operator.for_tenant(&name);
    let kept = record_everything(operator.as_ref()).await;
    let gone = record_everything(acme.as_ref()).await;
    let (_, token) = NewToken::generate(&name, TokenScope::Run, Timestamp(1), None).unwrap();
    operator.create_token(&token).await.unwrap();
    // Its queued run has not ended.
    assert!(matches!(
        operator.delete_tenant(&name).await.unwrap(),
        TenantDeletion::Busy { .. }
    ));
    acme.finish_task_run(
        &gone.queued,
        &change(State::Cancelled, 0, 2_000),
        None,
        None,
    )
    .unwrap();
    acme.set_flow_run_state(&gone.flow.id, &change(State::Completed, 1, 2_000), None)
        .unwrap();
    acme.flush().await.unwrap();
    let TenantDeletion::Deleted(deleted) = operator.delete_tenant(&name).await.unwrap() else {
        panic!("the tenant was not deleted");
    };
    assert_eq!(
        (deleted.flow_runs, deleted.task_runs, deleted.tokens),
        (1, 2, 1)
    );
    assert!(operator.tenant_record(&name).await.unwrap().is_none());
    assert_eq!(
        operator.delete_tenant(&name).await.unwrap(),
        TenantDeletion::NotFound
    );
    assert_eq!(
        operator
            .delete_tenant(&TenantId::default_tenant())
            .await
            .unwrap(),
        TenantDeletion::Default
    );
    assert!(operator.token_by_hash(&token.hash).await.unwrap().is_none());
    assert!(acme.flow_run(&gone.flow.id).await.unwrap().is_none());
    assert!(
        acme.task_runs(&TaskRunFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(acme.logs(&gone.task.id).await.unwrap().is_empty());
    assert!(acme.plugins().await.unwrap().is_empty());
    assert!(acme.cache_entries().await.unwrap().is_empty());
    assert!(
        acme.concurrency_limits(Timestamp(5_000))
            .await
            .unwrap()
            .is_empty()
    );
    // The default tenant's records stay, the result both cached included.
    assert!(operator.flow_run(&kept.flow.id).await.unwrap().is_some());
    assert_eq!(operator.logs(&kept.task.id).await.unwrap().len(), 1);
    assert!(
        operator
            .cached_result(&kept.key, Timestamp(5_000))
            .await
            .unwrap()
            .is_some()
    );
    // A token of a tenant that is not there is refused.
    let (_, orphan) = NewToken::generate(&name, TokenScope::Read, Timestamp(1), None).unwrap();
    assert!(matches!(
        operator.create_token(&orphan).await,
        Err(StoreError::UnknownTenant(_))
    ));
}

async fn tokens_are_kept_hashed_and_stop_when_revoked(backend: Backend) {
    let location = Location::new(backend).await;
    let store = location.open().await;
    let acme = new_tenant(store.as_ref(), "acme").await;
    let (text, token) = NewToken::generate(
        &acme,
        TokenScope::Read,
        Timestamp(1_000),
        Some(Timestamp(9_000)),
    )
    .unwrap();
    assert!(text.starts_with("weir_") && text.len() == 5 + 64, "{text}");
    assert_ne!(token.hash, text);
    store.create_token(&token).await.unwrap();
    // Another process finds it by the hash of the text, and only so.
    let other = location.open().await;
    let found = other
        .token_by_hash(&weir_store::token_hash(&text))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (found.tenant.as_str(), found.scope),
        ("acme", TokenScope::Read)
    );
    assert!(found.is_live(Timestamp(8_999)) && !found.is_live(Timestamp(9_000)));
    assert!(other.token_by_hash(&text).await.unwrap().is_none());
    let (second, _) = NewToken::generate(&acme, TokenScope::Read, Timestamp(1_000), None).unwrap();
    assert_ne!(second, text, "every token is new");
    assert_eq!(other.tokens(Some(&acme)).await.unwrap().len(), 1);
    assert!(
        other
            .revoke_token(&found.id, Timestamp(2_000))
            .await
            .unwrap()
    );
    assert!(
        !other
            .revoke_token(&found.id, Timestamp(2_001))
            .await
            .unwrap()
    );
    let revoked = store.token_by_hash(&token.hash).await.unwrap().unwrap();
    assert_eq!(revoked.revoked, Some(Timestamp(2_000)));
    assert!(!revoked.is_live(Timestamp(2_500)));
}

/// Runs `weir ARGS` on the store at `store` in `dir`; its stdout, or a panic with its
/// output.
fn operator(dir: &Path, store: &str, args: &[&str]) -> String {
    let mut all = vec!["--store", store];
    all.extend_from_slice(args);
    let output = weir(dir, &all);
    assert!(
        output.status.success(),
        "weir {args:?}: {}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// The flow only tenant acme has.
const ACME_FLOW: &str = r#"
format = 1
name = "acme-only"

[plugins]
arith = "{arith}"

[nodes.add]
task = "arith.add"
input = { a = 2, b = 3 }
tags = ["acme-db"]
"#;

/// A flow whose node is granted an HTTP host (which it never uses).
const GRANTED_FLOW: &str = r#"
format = 1
name = "granted"

[parameters.api]
type = "string"
default = "api.example.com"

[plugins]
hello = "{hello}"

[nodes.greet]
task = "hello.hello"
input = { name = "granted" }
http = ["${params.api}"]
"#;

/// A call and what a caller of another tenant must get for it.
async fn assert_not_found(api: &Api, method: reqwest::Method, path: &str) {
    let request = api.request(method.clone(), path);
    let request = match method {
        reqwest::Method::POST => request.json(&json!({})),
        _ => request,
    };
    let (status, body) = api.send(request).await;
    assert_eq!(status, 404, "{method} {path} by another tenant: {body}");
}

async fn every_api_call_sees_only_the_callers_tenant(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = match backend {
        Backend::Sqlite => dir.path().join("store").display().to_string(),
        Backend::Postgres => postgres::fresh_database().await,
    };
    let tenant_flows = dir.path().join("tenants");
    std::fs::create_dir_all(tenant_flows.join("acme")).unwrap();
    std::fs::write(
        tenant_flows.join("acme/acme-only.toml"),
        ACME_FLOW.replace("{arith}", &plugin_path("arith").display().to_string()),
    )
    .unwrap();
    std::fs::create_dir_all(tenant_flows.join("globex")).unwrap();
    std::fs::write(
        tenant_flows.join("globex/granted.toml"),
        GRANTED_FLOW.replace("{hello}", &plugin_path("hello").display().to_string()),
    )
    .unwrap();
    let flows = crate::server::write_flows(dir.path());
    let server = ServerProcess::start(
        Path::new(env!("CARGO_BIN_EXE_weir-under-test")),
        dir.path(),
        &store,
        &[
            "--flows",
            &flows.display().to_string(),
            "--tenant-flows",
            &tenant_flows.display().to_string(),
            "--lease",
            "2s",
            // What globex's `granted` flow grants (and never uses).
            "--allow-http",
            "api.example.com",
        ],
    );
    let anonymous = Api::new(&server.url);
    // One tenant: no token needed on loopback.
    let (status, _) = anonymous.get("/flow-runs").await;
    assert_eq!(status, 200);

    for tenant in ["acme", "globex"] {
        operator(dir.path(), &store, &["tenant", "create", tenant]);
    }
    let token = |tenant: &str, scope: &str| {
        operator(
            dir.path(),
            &store,
            &["token", "create", "--tenant", tenant, "--scope", scope],
        )
        .trim()
        .to_owned()
    };
    let acme = Api::new(&server.url).with_token(&token("acme", "admin"));
    let acme_reader_token = token("acme", "read");
    let acme_reader = Api::new(&server.url).with_token(&acme_reader_token);
    let globex = Api::new(&server.url).with_token(&token("globex", "admin"));

    // Now every call needs a token, on loopback too (the server notices within a second).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = anonymous.get("/flow-runs").await;
        if status == 401 {
            assert!(
                body["error"].as_str().unwrap().contains("API token"),
                "{body}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "still answered without a token");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = Api::new(&server.url)
        .with_token("weir_nonsense")
        .get("/flow-runs")
        .await;
    assert_eq!(status, 401);
    let (_, me) = acme.get("/whoami").await;
    assert_eq!(
        (me["tenant"].as_str(), me["scope"].as_str()),
        (Some("acme"), Some("admin"))
    );

    // Each tenant lists only its own flows.
    let names = |flows: &Value| -> Vec<String> {
        flows
            .as_array()
            .unwrap()
            .iter()
            .map(|flow| flow["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&acme.get("/flows").await.1), ["acme-only"]);
    assert_eq!(names(&globex.get("/flows").await.1), ["granted"]);

    // A flow that grants more than its tenant may is refused before it runs, naming the
    // grant (the one written with a parameter too, with its default).
    operator(
        dir.path(),
        &store,
        &["tenant", "set", "globex", "--grant-nothing"],
    );
    let (status, body) = globex.post("/flows/granted/runs", json!({})).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["error"],
        "flow `granted`, node `greet`: it grants http api.example.com, beyond what tenant `globex` may grant",
        "{body}"
    );
    operator(
        dir.path(),
        &store,
        &["tenant", "set", "globex", "--allow-http", "api.example.com"],
    );
    let (status, body) = globex
        .post(
            "/flows/granted/runs",
            json!({"parameters": {"api": "other.example.com"}}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = globex.post("/flows/granted/runs", json!({})).await;
    assert_eq!(status, 201, "{body}");
    let granted = body["id"].as_str().unwrap().to_owned();
    let ended = globex.wait_for_end(&granted, Duration::from_secs(60)).await;
    assert_eq!(ended["flow_run"]["state"], "Completed", "{ended}");

    // Acme runs a flow (the server's worker runs it as acme), uploads a plugin, sets a
    // limit.
    let (status, submitted) = acme.post("/flows/acme-only/runs", json!({})).await;
    assert_eq!(status, 201, "{submitted}");
    let flow_run = submitted["id"].as_str().unwrap().to_owned();
    let ended = acme.wait_for_end(&flow_run, Duration::from_secs(60)).await;
    assert_eq!(ended["flow_run"]["state"], "Completed", "{ended}");
    let flow_name = ended["flow_run"]["name"].as_str().unwrap().to_owned();
    let (_, tasks) = acme.get(&format!("/task-runs?flow_run={flow_run}")).await;
    let task_run = tasks["items"][0]["id"].as_str().unwrap().to_owned();
    let bytes = std::fs::read(plugin_path("arith")).unwrap();
    let (status, plugin) = acme
        .send(
            acme.request(reqwest::Method::POST, "/plugins?name=arith")
                .header("content-type", "application/wasm")
                .body(bytes),
        )
        .await;
    assert!(status == 201 || status == 200, "{plugin}");
    let digest = plugin["digest"].as_str().unwrap().to_owned();
    let (status, _) = acme
        .put("/concurrency-limits/acme-db", json!({"limit": 3}))
        .await;
    assert!(status == 200 || status == 201, "{status}");
    // A read token reads, and changes nothing.
    let (status, _) = acme_reader.get(&format!("/flow-runs/{flow_run}")).await;
    assert_eq!(status, 200);
    let (status, body) = acme_reader.post("/flows/acme-only/runs", json!({})).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("needs `run`"),
        "{body}"
    );
    let (status, _) = acme_reader.delete("/cache").await;
    assert_eq!(status, 403);

    // Every route of the API document that names something, asked by globex with acme's
    // names and ids: not found.
    let (_, document) = acme.get("/openapi.json").await;
    let substitute = |path: &str| -> String {
        path.replace("{id}", &flow_run)
            .replace("{digest}", &digest)
            .replace("{tag}", "acme-db")
            .replace("{name}", "acme-only")
    };
    let mut asked = 0;
    for (path, operations) in document["paths"].as_object().unwrap() {
        if !path.contains('{') {
            continue;
        }
        for method in operations.as_object().unwrap().keys() {
            let method: reqwest::Method = method.to_uppercase().parse().unwrap();
            // Setting a limit makes one of the caller's own (checked below).
            if method == reqwest::Method::PUT {
                continue;
            }
            let mut concrete = substitute(path);
            if path.starts_with("/task-runs/") {
                concrete = path.replace("{id}", &task_run);
            }
            assert_not_found(&globex, method.clone(), &concrete).await;
            asked += 1;
        }
    }
    // Every route that names something but PUT /concurrency-limits/{tag}: a new one
    // changes the count, and is asked here like the others.
    assert_eq!(asked, 16, "routes with parameters asked");
    // Globex's limit of the same tag is its own.
    let (status, _) = globex
        .put("/concurrency-limits/acme-db", json!({"limit": 1}))
        .await;
    assert!(status == 200 || status == 201, "{status}");
    let (_, limit) = acme.get("/concurrency-limits/acme-db").await;
    assert_eq!(limit["limit"], 3, "{limit}");
    let (status, _) = globex.delete("/concurrency-limits/acme-db").await;
    assert_eq!(status, 204);
    // By name too, and through the query parameters that name runs.
    assert_not_found(
        &globex,
        reqwest::Method::GET,
        &format!("/flow-runs/{flow_name}"),
    )
    .await;
    assert_not_found(
        &globex,
        reqwest::Method::GET,
        &format!("/logs?run={task_run}"),
    )
    .await;
    // Listings hold none of acme's.
    for list in [
        "/flow-runs",
        "/task-runs",
        "/plugins",
        "/cache",
        "/concurrency-limits",
    ] {
        // Globex's own run is there, none of acme's.
        let (status, body) = globex.get(list).await;
        assert_eq!(status, 200, "{list}: {body}");
        let text = body.to_string();
        for acmes in [
            flow_run.as_str(),
            task_run.as_str(),
            digest.as_str(),
            "acme-db",
        ] {
            assert!(
                !text.contains(acmes),
                "{list} as globex shows {acmes}: {body}"
            );
        }
    }
    let (_, listed) = globex.get(&format!("/task-runs?flow_run={flow_run}")).await;
    assert!(listed["items"].as_array().unwrap().is_empty(), "{listed}");
    // Acme's own are all still there.
    let (status, _) = acme.get(&format!("/task-runs/{task_run}/result")).await;
    assert_eq!(status, 200);
    let (_, limits) = acme.get("/concurrency-limits").await;
    assert_eq!(limits.as_array().unwrap().len(), 1, "{limits}");

    // Acme's quotas: two submissions at once, then one a minute; plugins of 1 KiB at most.
    operator(
        dir.path(),
        &store,
        &[
            "tenant",
            "set",
            "acme",
            "--runs-per-minute",
            "1",
            "--runs-burst",
            "2",
            "--plugin-size",
            "1KiB",
        ],
    );
    for _ in 0..2 {
        let (status, body) = acme.post("/flows/acme-only/runs", json!({})).await;
        assert_eq!(status, 201, "{body}");
    }
    let refused = acme
        .request(reqwest::Method::POST, "/flows/acme-only/runs")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 429);
    let wait: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("quota of 1 runs submitted per minute"),
        "{body}"
    );
    // Globex's bucket is its own.
    let (status, body) = globex.post("/flows/acme-only/runs", json!({})).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = acme
        .send(
            acme.request(reqwest::Method::POST, "/plugins?name=arith")
                .header("content-type", "application/wasm")
                .body(vec![0u8; 4096]),
        )
        .await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("plugin-size quota of"),
        "{body}"
    );
    let usage = operator(dir.path(), &store, &["tenant", "usage", "acme", "--json"]);
    let usage: Value = serde_json::from_str(&usage).unwrap();
    assert_eq!(usage["quotas"]["runs_per_minute"], 1, "{usage}");
    assert_eq!(usage["quotas"]["plugin_bytes"], 1024, "{usage}");

    // A revoked token stops working within the time the server trusts a lookup.
    let id = operator(
        dir.path(),
        &store,
        &["token", "ls", "--tenant", "acme", "--json"],
    );
    let tokens: Value = serde_json::from_str(&id).unwrap();
    let reader_id = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|token| token["scope"] == "read")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    operator(dir.path(), &store, &["token", "revoke", &reader_id]);
    // The server trusts a token it looked up for 2 s (weir_server::TOKEN_RECHECK).
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let (status, _) = acme_reader.get("/flow-runs").await;
    assert_eq!(status, 401);
    drop(server);
    let _ = acme_reader_token;
}

#[test]
fn the_command_line_acts_as_the_tenant_it_names_and_caches_per_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let arith = plugin_path("arith").display().to_string();
    let run = |tenant: &str| {
        let output = weir(
            dir.path(),
            &[
                "--tenant",
                tenant,
                "task",
                "run",
                &arith,
                "--task",
                "cached-add",
                "--input",
                r#"{"a": 20, "b": 22}"#,
                "--json",
            ],
        );
        assert!(output.status.success(), "{}", text(&output.stderr));
        let report: Value = serde_json::from_str(&text(&output.stdout)).unwrap();
        report["state"].as_str().unwrap().to_owned()
    };
    let bad = weir(dir.path(), &["tenant", "create", "Not A Name"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("is not a tenant name"),
        "{}",
        text(&bad.stderr)
    );
    for tenant in ["acme", "globex"] {
        let created = weir(dir.path(), &["tenant", "create", tenant]);
        assert!(created.status.success(), "{}", text(&created.stderr));
    }
    // A tenant must exist before a command acts as it.
    let unknown = weir(dir.path(), &["--tenant", "nobody", "runs", "ls"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        text(&unknown.stderr).contains("no tenant named `nobody`"),
        "{}",
        text(&unknown.stderr)
    );
    assert_eq!(run("acme"), "Completed");
    assert_eq!(run("acme"), "Cached");
    // The same plugin and input in another tenant do not share the result.
    assert_eq!(run("globex"), "Completed");
    assert_eq!(run("default"), "Completed");
    let listed = |tenant: &str| {
        let output = weir(
            dir.path(),
            &["--tenant", tenant, "runs", "ls", "--tasks", "--json"],
        );
        assert!(output.status.success(), "{}", text(&output.stderr));
        let runs: Value = serde_json::from_str(&text(&output.stdout)).unwrap();
        runs.as_array().unwrap().len()
    };
    assert_eq!(
        (listed("acme"), listed("globex"), listed("default")),
        (2, 1, 1)
    );
    let listed_tenants = weir(dir.path(), &["tenant", "ls"]);
    let listed_tenants = text(&listed_tenants.stdout);
    for tenant in ["acme", "default", "globex"] {
        assert!(listed_tenants.contains(tenant), "{listed_tenants}");
    }
    // A worker serves every tenant: --tenant makes no sense there.
    let worker = weir(dir.path(), &["--tenant", "acme", "worker"]);
    assert_eq!(worker.status.code(), Some(2));
    assert!(text(&worker.stderr).contains("serves every tenant"));
    // Deleting asks to be sure, and takes the tenant's runs with it.
    let unsure = weir(dir.path(), &["tenant", "delete", "acme"]);
    assert_eq!(unsure.status.code(), Some(2));
    assert!(text(&unsure.stderr).contains("--yes"));
    let deleted = weir(dir.path(), &["tenant", "delete", "acme", "--yes"]);
    assert!(deleted.status.success(), "{}", text(&deleted.stderr));
    assert!(
        text(&deleted.stdout).contains("2 task runs"),
        "{}",
        text(&deleted.stdout)
    );
    assert_eq!(listed("globex"), 1);
    let no_default = weir(dir.path(), &["tenant", "delete", "default", "--yes"]);
    assert_eq!(no_default.status.code(), Some(2));
    let orphan = weir(
        dir.path(),
        &["token", "create", "--tenant", "acme", "--scope", "read"],
    );
    assert_eq!(orphan.status.code(), Some(2));
    assert!(text(&orphan.stderr).contains("no tenant named `acme`"));
}

//! The store's contract, run against both backends (SQLite in a temporary directory, a
//! database of its own on the test PostgreSQL server): every test here runs twice, as
//! `store::NAME::sqlite` and `store::NAME::postgres`.
//!
//! "Another process" is a second store value opened on the same location: its own
//! connections, its own writer and its own memory, as a second `weir` would have.

use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use weir_core::{CacheKey, ComponentDigest, FlowRunId, State, TaskRunId, Timestamp};
use weir_store::{
    CacheEntryDraft, ChangeCursor, Ending, FlowRunFilter, LogRecord, NewFlowRun, NewTaskRun,
    OwnerRecord, PluginRecord, SlotRequest, StateChange, Store, StoreError, TaskRunFilter,
};
use weir_tests::{Backend, postgres};

/// Where a test's store lives, so that it can be opened again.
pub(crate) enum Location {
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

impl Location {
    pub(crate) async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => Location::Sqlite(tempfile::tempdir().unwrap()),
            Backend::Postgres => Location::Postgres(postgres::fresh_database().await),
        }
    }

    /// Opens the store (again): a new process's view of it.
    pub(crate) async fn open(&self) -> Arc<dyn Store> {
        match self {
            Location::Sqlite(dir) => {
                Arc::new(weir_store_sqlite::SqliteStore::open(dir.path()).unwrap())
            }
            Location::Postgres(url) => Arc::new(
                weir_store_postgres::PostgresStore::connect(url)
                    .await
                    .unwrap(),
            ),
        }
    }
}

on_both_backends!(
    reads_see_every_earlier_write,
    writes_survive_the_store_and_another_process_sees_them,
    a_failed_write_is_reported_by_flush_and_the_others_commit,
    a_failed_operation_leaves_nothing_of_itself,
    the_cache_stays_correct_when_another_process_clears_it,
    large_results_and_blobs_are_content_addressed,
    many_writers_share_commits,
    lists_filter_and_page_by_cursor,
    the_change_feed_returns_every_change_once,
    slots_hold_across_processes,
    a_retired_owner_leaves_crashed_runs_and_free_slots,
    ending_a_flow_run_tree_ends_everything_under_it,
    cancellation_requests_reach_the_owner,
    processes_opening_a_new_store_at_once_all_succeed,
    a_store_of_a_newer_schema_is_a_clear_error,
    plugins_are_recorded_once_by_digest,
    text_from_a_plugin_with_a_nul_is_recorded,
    a_flow_runs_graph_is_recorded_with_it,
);

fn new_run(name: &str) -> NewTaskRun {
    NewTaskRun {
        id: TaskRunId::generate(),
        name: name.into(),
        task: "add".into(),
        plugin_name: "arith".into(),
        plugin_digest: ComponentDigest::of_bytes(b"arith"),
        flow_run_id: None,
        node: None,
        map_index: None,
        input: json!({"b": 1, "a": 2}),
        tags: vec!["math".into()],
        created: Timestamp(1_000),
        owner: None,
    }
}

fn change(state: State, attempt: u32, at: i64) -> StateChange {
    StateChange {
        state,
        message: None,
        attempt,
        at: Timestamp(at),
    }
}

fn start(store: &dyn Store, run: &NewTaskRun) {
    store
        .create_task_run(
            run,
            &[
                change(State::Pending, 0, 1_000),
                change(State::Running, 1, 1_001),
            ],
            None,
        )
        .unwrap();
}

fn complete(store: &dyn Store, run: &NewTaskRun, result: serde_json::Value) {
    store
        .finish_task_run(
            &run.id,
            &change(State::Completed, 1, 2_000),
            Some(&result),
            None,
        )
        .unwrap();
}

fn new_flow_run(name: &str, parent: Option<&FlowRunId>, owner: Option<&str>) -> NewFlowRun {
    NewFlowRun {
        id: FlowRunId::generate(),
        name: name.into(),
        flow: "squares".into(),
        source: None,
        parameters: json!({"values": [1, 2]}),
        parent: parent.map(|parent| (parent.clone(), "total".to_owned())),
        created: Timestamp(1_000),
        owner: owner.map(str::to_owned),
        graph: None,
        tags: Vec::new(),
    }
}

fn running_flow(store: &dyn Store, run: &NewFlowRun) {
    store
        .create_flow_run(
            run,
            &[
                change(State::Pending, 0, 1_000),
                change(State::Running, 1, 1_001),
            ],
        )
        .unwrap();
}

fn owner(id: &str) -> OwnerRecord {
    OwnerRecord {
        id: id.into(),
        host: "elsewhere".into(),
        pid: 1,
        machine: "another-machine".into(),
        pid_started: 0,
        started: Timestamp(1_000),
        heartbeat: Timestamp(1_000),
    }
}

async fn reads_see_every_earlier_write(backend: Backend) {
    let location = Location::new(backend).await;
    let store = location.open().await;
    let run = new_run("add-0");
    start(store.as_ref(), &run);
    store
        .set_task_run_state(&run.id, &change(State::AwaitingRetry, 1, 1_002))
        .unwrap();
    store
        .set_task_run_state(&run.id, &change(State::Running, 2, 1_003))
        .unwrap();
    store
        .append_logs(
            &run.id,
            &[
                LogRecord {
                    at: Timestamp(1_003),
                    level: weir_core::LogLevel::Info,
                    message: "one".into(),
                },
                LogRecord {
                    at: Timestamp(1_003),
                    level: weir_core::LogLevel::Warning,
                    message: "two".into(),
                },
            ],
        )
        .unwrap();
    store
        .append_logs(
            &run.id,
            &[LogRecord {
                at: Timestamp(1_004),
                level: weir_core::LogLevel::Error,
                message: "three".into(),
            }],
        )
        .unwrap();
    store
        .finish_task_run(
            &run.id,
            &change(State::Completed, 2, 1_004),
            Some(&json!({"z": 1, "a": [1.5, "two"]})),
            None,
        )
        .unwrap();
    let record = store.task_run(&run.id).await.unwrap().unwrap();
    assert_eq!(record.state, State::Completed);
    assert_eq!(record.attempts, 2);
    assert_eq!(record.started, Some(Timestamp(1_001)));
    assert_eq!(record.ended, Some(Timestamp(1_004)));
    assert_eq!(record.tags, ["math"]);
    // JSON reads back as written, key order included.
    assert_eq!(record.input.to_string(), r#"{"b":1,"a":2}"#);
    let states: Vec<State> = store
        .state_history(&run.id)
        .await
        .unwrap()
        .iter()
        .map(|c| c.state)
        .collect();
    assert_eq!(
        states,
        [
            State::Pending,
            State::Running,
            State::AwaitingRetry,
            State::Running,
            State::Completed
        ]
    );
    let logs: Vec<String> = store
        .logs(&run.id)
        .await
        .unwrap()
        .into_iter()
        .map(|line| line.message)
        .collect();
    assert_eq!(logs, ["one", "two", "three"]);
    let result = store
        .result(record.result_digest.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(result.to_string(), r#"{"z":1,"a":[1.5,"two"]}"#);
}

async fn writes_survive_the_store_and_another_process_sees_them(backend: Backend) {
    let location = Location::new(backend).await;
    let runs: Vec<NewTaskRun> = (0..500)
        .map(|index| new_run(&format!("add-{index}")))
        .collect();
    {
        let store = location.open().await;
        for run in &runs {
            start(store.as_ref(), run);
            complete(store.as_ref(), run, json!(run.name));
        }
        // Dropped without a flush: dropping commits what is queued.
    }
    let reopened = location.open().await;
    let listed = reopened.task_runs(&TaskRunFilter::default()).await.unwrap();
    assert_eq!(listed.len(), 500);
    assert!(listed.iter().all(|run| run.state == State::Completed));
    // Newest first, by id.
    assert_eq!(listed[0].name, "add-499");
    assert_eq!(listed[499].name, "add-0");
}

async fn a_failed_write_is_reported_by_flush_and_the_others_commit(backend: Backend) {
    let location = Location::new(backend).await;
    let store = location.open().await;
    let known = new_run("known-0");
    let unknown = TaskRunId::generate();
    start(store.as_ref(), &known);
    store
        .set_task_run_state(&unknown, &change(State::Running, 1, 5))
        .unwrap();
    complete(store.as_ref(), &known, json!(1));
    // A read in between waits for the writes but leaves the failure to the flush.
    assert_eq!(
        store
            .task_runs(&TaskRunFilter::default())
            .await
            .unwrap()
            .len(),
        1
    );
    let error = store.flush().await.unwrap_err();
    assert!(
        matches!(error, StoreError::UnknownTaskRun(ref id) if *id == unknown.to_string()),
        "{error}"
    );
    assert_eq!(
        store.task_run(&known.id).await.unwrap().unwrap().state,
        State::Completed
    );
    // The error is reported once.
    store.flush().await.unwrap();
    // An unknown flow run is its own error too.
    let missing = FlowRunId::generate();
    store
        .set_flow_run_state(&missing, &change(State::Completed, 1, 7), None)
        .unwrap();
    let error = store.flush().await.unwrap_err();
    assert!(matches!(error, StoreError::UnknownFlowRun(_)), "{error}");
}

async fn a_failed_operation_leaves_nothing_of_itself(backend: Backend) {
    let location = Location::new(backend).await;
    let store = location.open().await;
    let result = json!({"orphan": true});
    let digest = weir_store::blob_digest(result.to_string().as_bytes());
    // Finishing an unknown run stores its result first, then finds no run to update:
    // the result must not stay behind. The writes around it commit.
    let before = new_run("before");
    start(store.as_ref(), &before);
    store
        .finish_task_run(
            &TaskRunId::generate(),
            &change(State::Completed, 1, 6),
            Some(&result),
            None,
        )
        .unwrap();
    let after = new_run("after");
    start(store.as_ref(), &after);
    assert!(matches!(
        store.flush().await.unwrap_err(),
        StoreError::UnknownTaskRun(_)
    ));
    let error = store.result(&digest).await.unwrap_err();
    assert!(matches!(error, StoreError::BrokenResult { .. }), "{error}");
    for run in [&before, &after] {
        assert!(store.task_run(&run.id).await.unwrap().is_some());
    }
}

async fn the_cache_stays_correct_when_another_process_clears_it(backend: Backend) {
    let location = Location::new(backend).await;
    let store = location.open().await;
    let digest = ComponentDigest::of_bytes(b"arith");
    let key = CacheKey::for_input(&digest, "add", None, &json!({"a": 1}));
    let draft = CacheEntryDraft {
        key: key.clone(),
        task: "add".into(),
        plugin_digest: digest,
        expires: Some(Timestamp(10_000)),
    };
    let run = new_run("add-0");
    start(store.as_ref(), &run);
    store
        .finish_task_run(
            &run.id,
            &change(State::Completed, 1, 2_000),
            Some(&json!(42)),
            Some(&draft),
        )
        .unwrap();
    // Found at once (before the write commits), and expired at its expiry.
    let (entry, result) = store
        .cached_result(&key, Timestamp(9_999))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((entry.task_run_id, result), (run.id.clone(), json!(42)));
    assert!(
        store
            .cached_result(&key, Timestamp(10_000))
            .await
            .unwrap()
            .is_none()
    );
    store.flush().await.unwrap();

    // Another process finds it, clears the cache, and this one no longer serves it.
    let other = location.open().await;
    assert!(
        other
            .cached_result(&key, Timestamp(9_999))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(other.cache_entries().await.unwrap().len(), 1);
    assert_eq!(other.clear_cache().await.unwrap(), 1);
    assert!(
        store
            .cached_result(&key, Timestamp(9_999))
            .await
            .unwrap()
            .is_none(),
        "an entry another process cleared is not served from memory"
    );

    // The other process writes a new result for the key: this one serves the new one.
    let second = new_run("add-1");
    start(other.as_ref(), &second);
    other
        .finish_task_run(
            &second.id,
            &change(State::Completed, 1, 3_000),
            Some(&json!(43)),
            Some(&draft),
        )
        .unwrap();
    other.flush().await.unwrap();
    let (entry, result) = store
        .cached_result(&key, Timestamp(9_999))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((entry.task_run_id, result), (second.id, json!(43)));
}

async fn large_results_and_blobs_are_content_addressed(backend: Backend) {
    let location = Location::new(backend).await;
    let store = location.open().await;
    let run = new_run("big-0");
    start(store.as_ref(), &run);
    let big = json!("x".repeat(200_000));
    complete(store.as_ref(), &run, big.clone());
    let digest = store
        .task_run(&run.id)
        .await
        .unwrap()
        .unwrap()
        .result_digest
        .unwrap();
    assert_eq!(digest, weir_store::blob_digest(big.to_string().as_bytes()));
    // Any process reads it by digest.
    let other = location.open().await;
    assert_eq!(other.result(&digest).await.unwrap(), big);

    let bytes = vec![7u8; 300_000];
    let blob = store.put_blob(&bytes).await.unwrap();
    assert_eq!(blob, weir_store::blob_digest(&bytes));
    assert_eq!(store.put_blob(&bytes).await.unwrap(), blob, "idempotent");
    assert_eq!(other.blob(&blob).await.unwrap(), Some(bytes));
    assert_eq!(other.blob(&"0".repeat(64)).await.unwrap(), None);
}

async fn many_writers_share_commits(backend: Backend) {
    let location = Location::new(backend).await;
    let store = location.open().await;
    let started = std::time::Instant::now();
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let store = store.clone();
            tokio::spawn(async move {
                for index in 0..1000 {
                    let run = new_run(&format!("t{writer}-{index}"));
                    start(store.as_ref(), &run);
                    complete(store.as_ref(), &run, json!(index));
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    store.flush().await.unwrap();
    assert_eq!(
        store
            .task_runs(&TaskRunFilter::default())
            .await
            .unwrap()
            .len(),
        4000
    );
    // Generous: group commit records thousands of runs per second even on a slow disk.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}

async fn lists_filter_and_page_by_cursor(backend: Backend) {
    let location = Location::new(backend).await;
    let store = location.open().await;
    let parent = new_flow_run("parent-run", None, None);
    running_flow(store.as_ref(), &parent);
    let mut children = Vec::new();
    for index in 0..24 {
        let child = new_flow_run(&format!("child-{index}"), Some(&parent.id), None);
        running_flow(store.as_ref(), &child);
        children.push(child.id);
    }
    store
        .set_flow_run_state(&parent.id, &change(State::Failed, 1, 3_000), None)
        .unwrap();
    // Pages of 10, newest first, each starting where the last ended.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .flow_runs(&FlowRunFilter {
                parent: Some(parent.id.clone()),
                before: before.clone(),
                limit: Some(10),
                ..Default::default()
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        before = page.last().map(|run| run.id.clone());
        seen.extend(page.into_iter().map(|run| run.id));
    }
    children.reverse();
    assert_eq!(seen, children);
    let failed = store
        .flow_runs(&FlowRunFilter {
            state: Some(State::Failed),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].id, parent.id);
    assert_eq!(failed[0].ended, Some(Timestamp(3_000)));
    let named = store
        .flow_runs(&FlowRunFilter {
            name: Some("child-3".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(named.len(), 1);
    // By tag.
    let mut tagged = new_flow_run("tagged-run", None, None);
    tagged.tags = vec!["etl".into(), "nightly".into()];
    running_flow(store.as_ref(), &tagged);
    for (tag, expected) in [("nightly", 1), ("etl", 1), ("night", 0)] {
        let found = store
            .flow_runs(&FlowRunFilter {
                tag: Some(tag.into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(found.len(), expected, "tag {tag}");
        if expected == 1 {
            assert_eq!(found[0].tags, ["etl", "nightly"]);
        }
    }
    let top = store
        .flow_runs(&FlowRunFilter {
            top_level: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let names: Vec<&str> = top.iter().map(|run| run.name.as_str()).collect();
    assert_eq!(names, ["tagged-run", "parent-run"]);
    // A search by part of the name ignores case; `%` and `_` in it are plain text.
    let searched = store
        .flow_runs(&FlowRunFilter {
            name_contains: Some("HILD-1".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut found: Vec<&str> = searched.iter().map(|run| run.name.as_str()).collect();
    found.sort();
    assert_eq!(
        found,
        [
            "child-1", "child-10", "child-11", "child-12", "child-13", "child-14", "child-15",
            "child-16", "child-17", "child-18", "child-19"
        ]
    );
    for wildcard in ["child%", "child_1"] {
        let none = store
            .flow_runs(&FlowRunFilter {
                name_contains: Some(wildcard.into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(none.is_empty(), "`{wildcard}` matched {none:?}");
    }

    // Task runs of a flow run, paged, and counted by state.
    let mut runs = Vec::new();
    for index in 0..5 {
        let mut run = new_run(&format!("add-{index}"));
        run.flow_run_id = Some(parent.id.clone());
        start(store.as_ref(), &run);
        if index % 2 == 0 {
            complete(store.as_ref(), &run, json!(index));
        }
        runs.push(run);
    }
    let page = store
        .task_runs(&TaskRunFilter {
            flow_run_id: Some(parent.id.clone()),
            before: Some(runs[3].id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let names: Vec<&str> = page.iter().map(|run| run.name.as_str()).collect();
    assert_eq!(names, ["add-2", "add-1", "add-0"]);
    let counts = store
        .task_run_counts(&[parent.id.clone(), children[0].clone()])
        .await
        .unwrap();
    assert_eq!(counts[&parent.id][&State::Completed], 3);
    assert_eq!(counts[&parent.id][&State::Running], 2);
    assert!(counts[&children[0]].is_empty());
}

/// Polls the feed from `cursor` in pages of `page` until `expected` runs came and a
/// poll returns nothing more. A change shows up once every transaction older than it
/// has ended (PostgreSQL: on the whole server, other tests' included), so this waits.
async fn drain(
    store: &dyn Store,
    cursor: &mut ChangeCursor,
    page: usize,
    expected: usize,
) -> (Vec<FlowRunId>, Vec<(TaskRunId, State)>) {
    let (mut flows, mut tasks) = (Vec::new(), Vec::new());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let changes = store.changes(cursor, page).await.unwrap();
        if changes.flow_runs.is_empty() && changes.task_runs.is_empty() {
            if flows.len() + tasks.len() >= expected {
                return (flows, tasks);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the feed returned {} of {expected} changes",
                flows.len() + tasks.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        assert!(changes.flow_runs.len() + changes.task_runs.len() <= page);
        flows.extend(changes.flow_runs.into_iter().map(|run| run.id));
        tasks.extend(changes.task_runs.into_iter().map(|run| (run.id, run.state)));
        *cursor = changes.next;
    }
}

async fn the_change_feed_returns_every_change_once(backend: Backend) {
    let location = Location::new(backend).await;
    let store = location.open().await;
    let flow = new_flow_run("fed", None, None);
    running_flow(store.as_ref(), &flow);
    let runs: Vec<NewTaskRun> = (0..30).map(|i| new_run(&format!("add-{i}"))).collect();
    for run in &runs {
        start(store.as_ref(), run);
    }
    store.flush().await.unwrap();
    let mut cursor = ChangeCursor::default();
    let (flows, tasks) = drain(store.as_ref(), &mut cursor, 7, 31).await;
    assert_eq!(flows, std::slice::from_ref(&flow.id));
    let mut ids: Vec<TaskRunId> = tasks.iter().map(|(id, _)| id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 30, "each run once");
    assert_eq!(tasks.len(), 30);

    // Nothing new: nothing returned.
    assert_eq!(drain(store.as_ref(), &mut cursor, 7, 0).await.1.len(), 0);

    // Changes by another process show up, as the runs are now.
    let other = location.open().await;
    for run in &runs[..5] {
        complete(other.as_ref(), run, json!(1));
    }
    other.flush().await.unwrap();
    let (flows, tasks) = drain(store.as_ref(), &mut cursor, 100, 5).await;
    assert!(flows.is_empty());
    assert_eq!(tasks.len(), 5);
    assert!(tasks.iter().all(|(_, state)| *state == State::Completed));

    // Runs ended in bulk (a cancelled tree) and a flow run given to a new owner are
    // changes too.
    let ending = Ending {
        state: State::Cancelled,
        message: "cancelled".into(),
        at: Timestamp(9_000),
    };
    let ended = other.end_flow_run_tree(&flow.id, &ending).await.unwrap();
    assert_eq!(ended.flow_runs.len(), 1);
    let (flows, tasks) = drain(store.as_ref(), &mut cursor, 100, 1).await;
    assert_eq!(flows, std::slice::from_ref(&flow.id));
    assert!(tasks.is_empty(), "the task runs have no flow run");
    other.set_flow_run_owner(&flow.id, "own_new").await.unwrap();
    let (flows, _) = drain(store.as_ref(), &mut cursor, 100, 1).await;
    assert_eq!(flows, std::slice::from_ref(&flow.id));
}

async fn slots_hold_across_processes(backend: Backend) {
    let location = Location::new(backend).await;
    let first = location.open().await;
    let second = location.open().await;
    let tags = ["db".to_owned(), "unlimited".to_owned()];
    let now = Timestamp(1_000_000);
    let lease = Timestamp(1_000_000 + 30_000_000);
    first.set_concurrency_limit("db", 1, now).await.unwrap();
    assert_eq!(
        first
            .acquire_slots(&tags, "trun_a", now, lease)
            .await
            .unwrap(),
        SlotRequest::Granted
    );
    assert_eq!(
        second
            .acquire_slots(&tags, "trun_b", now, lease)
            .await
            .unwrap(),
        SlotRequest::Full {
            tag: "db".into(),
            limit: 1
        }
    );
    let limit = second.concurrency_limit("db", now).await.unwrap().unwrap();
    assert_eq!(limit.holders, ["trun_a"]);
    first.release_slots("trun_a").unwrap();
    first.flush().await.unwrap();
    assert_eq!(
        second
            .acquire_slots(&tags, "trun_b", now, lease)
            .await
            .unwrap(),
        SlotRequest::Granted
    );
    // A lease that expired frees its slot.
    let later = Timestamp(lease.0 + 1);
    assert_eq!(
        first
            .acquire_slots(&tags, "trun_c", later, Timestamp(later.0 + 1))
            .await
            .unwrap(),
        SlotRequest::Granted
    );
    // Two processes racing for the last slot: exactly one gets it.
    first.set_concurrency_limit("race", 1, now).await.unwrap();
    let race = ["race".to_owned()];
    let (a, b) = tokio::join!(
        first.acquire_slots(&race, "trun_x", now, lease),
        second.acquire_slots(&race, "trun_y", now, lease)
    );
    let granted = [a.unwrap(), b.unwrap()]
        .iter()
        .filter(|answer| **answer == SlotRequest::Granted)
        .count();
    assert_eq!(granted, 1);
    first.set_concurrency_limit("off", 0, now).await.unwrap();
    assert_eq!(
        first
            .acquire_slots(&["off".to_owned()], "trun_z", now, lease)
            .await
            .unwrap(),
        SlotRequest::Zero { tag: "off".into() }
    );
    assert_eq!(first.reset_concurrency_limit("race").await.unwrap(), 1);
    assert!(first.delete_concurrency_limit("race").await.unwrap());
    assert!(!first.delete_concurrency_limit("race").await.unwrap());
    let tags: Vec<String> = second
        .concurrency_limits(now)
        .await
        .unwrap()
        .into_iter()
        .map(|limit| limit.tag)
        .collect();
    assert_eq!(tags, ["db", "off"]);
}

async fn a_retired_owner_leaves_crashed_runs_and_free_slots(backend: Backend) {
    let location = Location::new(backend).await;
    let store = location.open().await;
    let now = Timestamp(5_000);
    store.register_owner(&owner("own_dead")).await.unwrap();
    store.register_owner(&owner("own_alive")).await.unwrap();
    store
        .heartbeat_owner("own_alive", Timestamp(9_000))
        .unwrap();
    let flow = new_flow_run("orphan", None, Some("own_dead"));
    running_flow(store.as_ref(), &flow);
    let mut running = new_run("running");
    running.owner = Some("own_dead".into());
    start(store.as_ref(), &running);
    let mut finished = new_run("finished");
    finished.owner = Some("own_dead".into());
    start(store.as_ref(), &finished);
    complete(store.as_ref(), &finished, json!(1));
    let mut elsewhere = new_run("elsewhere");
    elsewhere.owner = Some("own_alive".into());
    start(store.as_ref(), &elsewhere);
    store.set_concurrency_limit("db", 5, now).await.unwrap();
    for holder in [&running.id, &finished.id, &elsewhere.id] {
        store
            .acquire_slots(&["db".into()], holder.as_str(), now, Timestamp(i64::MAX))
            .await
            .unwrap();
    }
    let ending = Ending {
        state: State::Crashed,
        message: "the process stopped".into(),
        at: Timestamp(6_000),
    };
    // Retired by another process, as a reaper does.
    let reaper = location.open().await;
    let ended = reaper.retire_owner("own_dead", &ending).await.unwrap();
    assert_eq!(ended.flow_runs, std::slice::from_ref(&flow.id));
    assert_eq!(ended.task_runs, [running.id.clone()]);
    let record = reaper.task_run(&running.id).await.unwrap().unwrap();
    assert_eq!(record.state, State::Crashed);
    assert_eq!(record.state_message.as_deref(), Some("the process stopped"));
    assert_eq!(record.ended, Some(Timestamp(6_000)));
    let history = reaper.state_history(&running.id).await.unwrap();
    assert_eq!(history.last().unwrap().state, State::Crashed);
    assert_eq!(history.last().unwrap().attempt, 1);
    assert_eq!(
        reaper.flow_run(&flow.id).await.unwrap().unwrap().state,
        State::Crashed
    );
    assert_eq!(
        reaper.task_run(&finished.id).await.unwrap().unwrap().state,
        State::Completed,
        "a finished run stays as it was"
    );
    let limit = reaper.concurrency_limit("db", now).await.unwrap().unwrap();
    assert_eq!(limit.holders, [elsewhere.id.to_string()]);
    let owners: Vec<String> = reaper
        .owners()
        .await
        .unwrap()
        .into_iter()
        .map(|owner| owner.id)
        .collect();
    assert_eq!(owners, ["own_alive"]);
    let alive = reaper.owners().await.unwrap().remove(0);
    assert_eq!(alive.heartbeat, Timestamp(9_000));
    // Giving a flow run to a new owner (a resume); an unknown one is its own error.
    reaper
        .set_flow_run_owner(&flow.id, "own_alive")
        .await
        .unwrap();
    assert!(matches!(
        reaper
            .set_flow_run_owner(&FlowRunId::generate(), "own_alive")
            .await
            .unwrap_err(),
        StoreError::UnknownFlowRun(_)
    ));
}

async fn ending_a_flow_run_tree_ends_everything_under_it(backend: Backend) {
    let location = Location::new(backend).await;
    let store = location.open().await;
    let root = new_flow_run("root", None, None);
    running_flow(store.as_ref(), &root);
    let child = new_flow_run("child", Some(&root.id), None);
    running_flow(store.as_ref(), &child);
    let grandchild = new_flow_run("grandchild", Some(&child.id), None);
    running_flow(store.as_ref(), &grandchild);
    let unrelated = new_flow_run("unrelated", None, None);
    running_flow(store.as_ref(), &unrelated);
    let mut deep = new_run("deep");
    deep.flow_run_id = Some(grandchild.id.clone());
    start(store.as_ref(), &deep);
    let ending = Ending {
        state: State::Cancelled,
        message: "cancelled: requested".into(),
        at: Timestamp(7_000),
    };
    let ended = store.end_flow_run_tree(&root.id, &ending).await.unwrap();
    let mut flows = ended.flow_runs.clone();
    flows.sort();
    let mut expected = vec![root.id.clone(), child.id.clone(), grandchild.id.clone()];
    expected.sort();
    assert_eq!(flows, expected);
    assert_eq!(ended.task_runs, [deep.id.clone()]);
    assert_eq!(
        store.task_run(&deep.id).await.unwrap().unwrap().state,
        State::Cancelled
    );
    assert_eq!(
        store.flow_run(&unrelated.id).await.unwrap().unwrap().state,
        State::Running
    );
    // Ending it again ends nothing.
    assert!(
        store
            .end_flow_run_tree(&root.id, &ending)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn cancellation_requests_reach_the_owner(backend: Backend) {
    let location = Location::new(backend).await;
    let store = location.open().await;
    let flow = new_flow_run("wanted", None, Some("own_1"));
    running_flow(store.as_ref(), &flow);
    let mut task = new_run("task");
    task.owner = Some("own_1".into());
    start(store.as_ref(), &task);
    let other = location.open().await;
    other
        .request_cancel(flow.id.as_str(), "requested", Timestamp(8_000))
        .await
        .unwrap();
    other
        .request_cancel(task.id.as_str(), "requested", Timestamp(8_001))
        .await
        .unwrap();
    // Asked twice: one request.
    other
        .request_cancel(task.id.as_str(), "again", Timestamp(8_002))
        .await
        .unwrap();
    let mut requests: Vec<String> = store
        .cancel_requests("own_1")
        .await
        .unwrap()
        .into_iter()
        .map(|request| request.run_id)
        .collect();
    requests.sort();
    let mut expected = vec![flow.id.to_string(), task.id.to_string()];
    expected.sort();
    assert_eq!(requests, expected);
    assert!(store.cancel_requests("own_2").await.unwrap().is_empty());
    // A finished run has no pending request.
    complete(store.as_ref(), &task, json!(1));
    assert_eq!(store.cancel_requests("own_1").await.unwrap().len(), 1);
}

async fn processes_opening_a_new_store_at_once_all_succeed(backend: Backend) {
    let location = Arc::new(Location::new(backend).await);
    let openers: Vec<_> = (0..8)
        .map(|index| {
            let location = location.clone();
            tokio::spawn(async move {
                let store = location.open().await;
                let run = new_run(&format!("opener-{index}"));
                start(store.as_ref(), &run);
                store.flush().await.unwrap();
            })
        })
        .collect();
    for opener in openers {
        opener.await.unwrap();
    }
    let store = location.open().await;
    assert_eq!(
        store
            .task_runs(&TaskRunFilter::default())
            .await
            .unwrap()
            .len(),
        8
    );
}

async fn a_store_of_a_newer_schema_is_a_clear_error(backend: Backend) {
    let location = Location::new(backend).await;
    drop(location.open().await);
    match &location {
        Location::Sqlite(dir) => {
            let connection = rusqlite::Connection::open(dir.path().join("weir.db")).unwrap();
            connection.pragma_update(None, "user_version", 999).unwrap();
        }
        Location::Postgres(url) => {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .unwrap();
            let driver = tokio::spawn(connection);
            client
                .execute("UPDATE weir_schema SET version = 999", &[])
                .await
                .unwrap();
            drop(client);
            let _ = driver.await;
        }
    }
    let error = match &location {
        Location::Sqlite(dir) => weir_store_sqlite::SqliteStore::open(dir.path())
            .err()
            .unwrap(),
        Location::Postgres(url) => weir_store_postgres::PostgresStore::connect(url)
            .await
            .err()
            .unwrap(),
    };
    assert!(
        matches!(error, StoreError::NewerSchema { found: 999, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("upgrade weir"), "{error}");
}

async fn plugins_are_recorded_once_by_digest(backend: Backend) {
    let location = Location::new(backend).await;
    let store = location.open().await;
    let plugin = PluginRecord {
        digest: ComponentDigest::of_bytes(b"arith"),
        name: "arith".into(),
        size_bytes: 1234,
        tasks: Vec::new(),
        first_seen: Timestamp(1_000),
    };
    store.record_plugin(&plugin).unwrap();
    store
        .record_plugin(&PluginRecord {
            first_seen: Timestamp(2_000),
            ..plugin.clone()
        })
        .unwrap();
    let found = store.plugin(&plugin.digest).await.unwrap().unwrap();
    assert_eq!(found.first_seen, Timestamp(1_000));
    assert_eq!(found.size_bytes, 1234);
    assert_eq!(store.plugins().await.unwrap().len(), 1);
    assert!(
        store
            .plugin(&ComponentDigest::of_bytes(b"other"))
            .await
            .unwrap()
            .is_none()
    );
}

/// A plugin's log line, error message or run name may hold NUL, which PostgreSQL refuses
/// in text: it is recorded (there as U+FFFD), not a failed write.
async fn text_from_a_plugin_with_a_nul_is_recorded(backend: Backend) {
    let location = Location::new(backend).await;
    let store = location.open().await;
    let run = new_run("name\0with-nul");
    start(store.as_ref(), &run);
    store
        .append_logs(
            &run.id,
            &[LogRecord {
                at: Timestamp(1_002),
                level: weir_core::LogLevel::Info,
                message: "before\0after".into(),
            }],
        )
        .unwrap();
    let failed = StateChange {
        message: Some("bad\0output".into()),
        ..change(State::Crashed, 1, 1_003)
    };
    store.finish_task_run(&run.id, &failed, None, None).unwrap();
    store.flush().await.unwrap();
    let record = store.task_run(&run.id).await.unwrap().unwrap();
    let message = record.state_message.unwrap();
    assert!(
        message.starts_with("bad") && message.ends_with("output"),
        "{message:?}"
    );
    assert!(record.name.starts_with("name"), "{:?}", record.name);
    let logs = store.logs(&run.id).await.unwrap();
    assert!(logs[0].message.starts_with("before") && logs[0].message.ends_with("after"));
}

/// A PostgreSQL store that cannot be reached says why, and what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_postgres_database_is_a_clear_error() {
    let url = postgres::database_url("weir_no_such_database");
    let error = weir_store_postgres::PostgresStore::connect(&url)
        .await
        .err()
        .unwrap()
        .describe();
    assert!(error.contains("does not exist"), "{error}");
    assert!(error.contains("create it first"), "{error}");
    let error = weir_store_postgres::PostgresStore::connect("postgres://weir@127.0.0.1:1/weir")
        .await
        .err()
        .unwrap()
        .describe();
    assert!(error.contains("connecting to the store"), "{error}");
}

async fn a_flow_runs_graph_is_recorded_with_it(backend: Backend) {
    let location = Location::new(backend).await;
    let store = location.open().await;
    let graph = weir_store::FlowGraph {
        nodes: vec![
            weir_store::GraphNode {
                id: "square".into(),
                kind: weir_store::GraphNodeKind::Task,
                runs: "arith.square".into(),
                mapped: true,
                inputs_from: Vec::new(),
                wait_for: Vec::new(),
                grants: vec!["env TOKEN".into()],
            },
            weir_store::GraphNode {
                id: "total".into(),
                kind: weir_store::GraphNodeKind::Subflow,
                runs: "sum.toml".into(),
                mapped: false,
                inputs_from: vec!["square".into()],
                wait_for: vec!["square".into()],
                grants: Vec::new(),
            },
        ],
    };
    let mut drawn = new_flow_run("drawn-run", None, None);
    drawn.graph = Some(graph.clone());
    running_flow(store.as_ref(), &drawn);
    let plain = new_flow_run("plain-run", None, None);
    running_flow(store.as_ref(), &plain);
    assert_eq!(store.flow_graph(&drawn.id).await.unwrap(), Some(graph));
    assert_eq!(store.flow_graph(&plain.id).await.unwrap(), None);
    assert_eq!(
        store.flow_graph(&FlowRunId::generate()).await.unwrap(),
        None
    );
}

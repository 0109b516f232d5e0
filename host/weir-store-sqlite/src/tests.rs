//! The store's own guarantees: reads see earlier writes, writes commit in order and
//! survive the store, failed writes are reported by flush, the cache index agrees with
//! the database.

use serde_json::json;
use std::time::Duration;
use weir_core::{CacheKey, ComponentDigest, State, TaskRunId, Timestamp};
use weir_store::{
    Cache, CacheEntryDraft, History, Leases, NewTaskRun, Recorder, StateChange, StoreError,
    TaskRunFilter,
};

use crate::SqliteStore;
use crate::writer::WriteOp;

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
        input: json!({"a": 1}),
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

fn start(store: &SqliteStore, run: &NewTaskRun) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_see_every_earlier_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let run = new_run("add-0");
    start(&store, &run);
    store
        .set_task_run_state(&run.id, &change(State::AwaitingRetry, 1, 1_002))
        .unwrap();
    store
        .set_task_run_state(&run.id, &change(State::Running, 2, 1_003))
        .unwrap();
    store
        .finish_task_run(
            &run.id,
            &change(State::Completed, 2, 1_004),
            Some(&json!(2)),
            None,
        )
        .unwrap();
    let record = store.task_run(&run.id).await.unwrap().unwrap();
    assert_eq!(record.state, State::Completed);
    assert_eq!(record.attempts, 2);
    assert_eq!(record.started, Some(Timestamp(1_001)));
    assert_eq!(record.ended, Some(Timestamp(1_004)));
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
    assert_eq!(
        store
            .result(record.result_digest.as_deref().unwrap())
            .await
            .unwrap(),
        json!(2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_written_survives_the_store_and_a_second_process_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let runs: Vec<NewTaskRun> = (0..500)
        .map(|index| new_run(&format!("add-{index}")))
        .collect();
    {
        let store = SqliteStore::open(dir.path()).unwrap();
        for run in &runs {
            start(&store, run);
            store
                .finish_task_run(
                    &run.id,
                    &change(State::Completed, 1, 2_000),
                    Some(&json!(run.name)),
                    None,
                )
                .unwrap();
        }
        // Dropped without a flush: dropping commits what is queued.
    }
    let reopened = SqliteStore::open(dir.path()).unwrap();
    let listed = reopened.task_runs(&TaskRunFilter::default()).await.unwrap();
    assert_eq!(listed.len(), 500);
    assert!(listed.iter().all(|run| run.state == State::Completed));
    // Newest first, by id.
    assert_eq!(listed[0].name, "add-499");
    assert_eq!(listed[499].name, "add-0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_is_reported_by_flush_and_the_others_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let known = new_run("known-0");
    let unknown = TaskRunId::generate();
    start(&store, &known);
    store
        .set_task_run_state(&unknown, &change(State::Running, 1, 5))
        .unwrap();
    store
        .finish_task_run(
            &known.id,
            &change(State::Completed, 1, 6),
            Some(&json!(1)),
            None,
        )
        .unwrap();
    // A read in between (another thread polling, say) waits for the writes but leaves
    // the failure to the flush.
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_entries_expire_are_shared_and_clear() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let digest = ComponentDigest::of_bytes(b"arith");
    let key = CacheKey::for_input(&digest, "add", None, &json!({"a": 1}));
    let run = new_run("add-0");
    start(&store, &run);
    let draft = CacheEntryDraft {
        key: key.clone(),
        task: "add".into(),
        plugin_digest: digest,
        expires: Some(Timestamp(10_000)),
    };
    store
        .finish_task_run(
            &run.id,
            &change(State::Completed, 1, 2_000),
            Some(&json!(42)),
            Some(&draft),
        )
        .unwrap();
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
            .is_none(),
        "expired"
    );

    // Another process sharing the directory finds the entry in the database.
    let other = SqliteStore::open(dir.path()).unwrap();
    assert!(
        other
            .cached_result(&key, Timestamp(5_000))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(store.clear_cache().await.unwrap(), 1);
    assert!(
        store
            .cached_result(&key, Timestamp(5_000))
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.cache_entries().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_results_are_files_addressed_by_digest() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let run = new_run("big-0");
    start(&store, &run);
    let big = json!("x".repeat(100_000));
    store
        .finish_task_run(&run.id, &change(State::Completed, 1, 2), Some(&big), None)
        .unwrap();
    let digest = store
        .task_run(&run.id)
        .await
        .unwrap()
        .unwrap()
        .result_digest
        .unwrap();
    let file = dir.path().join("blobs").join(&digest[..2]).join(&digest);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), big.to_string());
    assert_eq!(store.result(&digest).await.unwrap(), big);

    // A store written before blobs kept large results as `results/ab/abcd….json`.
    let legacy = dir.path().join("results").join(&digest[..2]);
    std::fs::create_dir_all(&legacy).unwrap();
    std::fs::rename(&file, legacy.join(format!("{digest}.json"))).unwrap();
    assert_eq!(store.result(&digest).await.unwrap(), big);

    // A damaged blob is an error naming the result, not a wrong value.
    std::fs::write(legacy.join(format!("{digest}.json")), "\"y\"").unwrap();
    let error = store.result(&digest).await.unwrap_err();
    assert!(matches!(error, StoreError::BrokenResult { .. }), "{error}");
    assert!(error.describe().contains("damaged"), "{}", error.describe());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_writers_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(SqliteStore::open(dir.path()).unwrap());
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..4 {
            let store = store.clone();
            scope.spawn(move || {
                for index in 0..1000 {
                    let run = new_run(&format!("t{thread}-{index}"));
                    start(&store, &run);
                    store
                        .finish_task_run(
                            &run.id,
                            &change(State::Completed, 1, 3),
                            Some(&json!(index)),
                            None,
                        )
                        .unwrap();
                }
            });
        }
    });
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
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_operation_leaves_nothing_of_itself() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    // Finishing an unknown run stores its result first, then finds no run to update:
    // the result must not stay behind.
    store
        .finish_task_run(
            &TaskRunId::generate(),
            &change(State::Completed, 1, 6),
            Some(&json!({"orphan": true})),
            None,
        )
        .unwrap();
    assert!(matches!(
        store.flush().await.unwrap_err(),
        StoreError::UnknownTaskRun(_)
    ));
    let connection = rusqlite::Connection::open(store.database_path()).unwrap();
    let results: i64 = connection
        .query_row("SELECT count(*) FROM results", [], |row| row.get(0))
        .unwrap();
    assert_eq!(
        results, 0,
        "the failed operation's result row was rolled back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_waits_for_the_commit_and_a_failed_commit_is_not_granted() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    store
        .set_concurrency_limit("db", 1, Timestamp(0))
        .await
        .unwrap();
    // A write that breaks a foreign key checked only at COMMIT, queued in the same batch
    // as a request for a slot: the batch cannot commit, so the slot was never taken.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (busy, writer_is_busy) = std::sync::mpsc::channel::<()>();
    // Keep the writer busy so that the bad write and the request share the next batch.
    store
        .writer
        .send(WriteOp::Call(Box::new(move |_| {
            let _ = busy.send(());
            let _ = released.recv_timeout(std::time::Duration::from_secs(5));
        })))
        .unwrap();
    writer_is_busy.recv().unwrap();
    store
        .writer
        .send(WriteOp::Call(Box::new(|connection| {
            connection
                .execute_batch("PRAGMA defer_foreign_keys = ON")
                .unwrap();
            connection
                .execute(
                    "INSERT INTO cache_entries (key, task, plugin_digest, result_digest, task_run_id, created)
                     VALUES ('k', 't', 'p', 'no-such-result', 'trun_x', 0)",
                    [],
                )
                .unwrap();
        })))
        .unwrap();
    let store = std::sync::Arc::new(store);
    let asking = tokio::spawn({
        let asked = store.clone();
        async move {
            asked
                .acquire_slots(
                    &["db".to_owned()],
                    "trun_waiting",
                    Timestamp(0),
                    Timestamp(i64::MAX),
                )
                .await
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    release.send(()).unwrap();
    let answer = asking.await.unwrap();
    let error = answer.expect_err("a slot from a batch that did not commit is not granted");
    assert!(error.to_string().contains("committing writes"), "{error}");
    let limit = store
        .concurrency_limit("db", Timestamp(1))
        .await
        .unwrap()
        .unwrap();
    assert!(limit.holders.is_empty());
}

//! What is particular to the SQLite store: where large results live, that a failed
//! operation leaves no row behind, that an answer waits for its batch's commit. The
//! contract every backend keeps is tested on both in `tests/all/store.rs`.

use serde_json::json;
use weir_core::{ComponentDigest, State, TaskRunId, Timestamp};
use weir_store::{History, Leases, NewTaskRun, Recorder, StateChange, StoreError};

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
        .shared
        .writer
        .send(WriteOp::Call(Box::new(move |_| {
            let _ = busy.send(());
            let _ = released.recv_timeout(std::time::Duration::from_secs(5));
        })))
        .unwrap();
    writer_is_busy.recv().unwrap();
    store
        .shared
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

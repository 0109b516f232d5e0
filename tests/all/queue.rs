//! The work queue's contract, on both backends: claims, leases and their generations,
//! fencing, slots taken by the claim, requeues, collection by the waiting flow run, and
//! what a dead worker leaves. "Another worker" is a second store value on the same
//! location, as a `weir worker` on another machine would have.

use serde_json::json;
use weir_core::{ComponentDigest, FlowRunId, State, TaskRunId, Timestamp};
use weir_store::{
    Claim, ClaimTimes, Ending, NewFlowRun, NewTaskRun, NewWork, NewWorkRun, OwnerRecord,
    Requirements, Room, StateChange, StoreError, WorkKind, WorkerOffer,
};
use weir_tests::Backend;

use crate::store::Location;

on_both_backends!(
    a_claim_takes_a_run_once_and_a_lapsed_lease_is_taken_over,
    a_worker_that_lost_its_lease_cannot_overwrite_the_run,
    writes_sent_together_keep_the_held_runs_and_refuse_a_lost_one,
    finished_runs_wait_for_their_flow_run_to_collect_them,
    claims_take_tag_slots_or_leave_the_run_queued,
    offers_filter_by_tags_and_requirements,
    a_requeued_run_waits_for_its_time,
    a_dead_workers_runs_go_back_to_the_queue,
);

fn change(state: State, attempt: u32, at: i64) -> StateChange {
    StateChange {
        state,
        message: None,
        attempt,
        at: Timestamp(at),
    }
}

fn task_work(flow_run: Option<&FlowRunId>, tags: &[&str]) -> NewWork {
    let run = NewTaskRun {
        id: TaskRunId::generate(),
        name: "add-0".into(),
        task: "add".into(),
        plugin_name: "arith".into(),
        plugin_digest: ComponentDigest::of_bytes(b"arith"),
        flow_run_id: flow_run.cloned(),
        node: Some("add".into()),
        map_index: None,
        input: json!({"a": 1, "b": 2}),
        tags: tags.iter().map(|tag| tag.to_string()).collect(),
        created: Timestamp(1_000),
        owner: None,
    };
    NewWork {
        run: NewWorkRun::Task {
            run,
            states: vec![change(State::Pending, 0, 1_000)],
        },
        spec: r#"{"task": "add"}"#.into(),
        tags: tags.iter().map(|tag| tag.to_string()).collect(),
        requirements: Requirements::default(),
        ready_at: Timestamp(1_000),
        priority: 0,
        memory_bytes: None,
    }
}

fn flow_work() -> NewWork {
    NewWork {
        run: NewWorkRun::Flow {
            run: NewFlowRun {
                id: FlowRunId::generate(),
                name: "quiet-otter".into(),
                flow: "squares".into(),
                source: None,
                parameters: json!({}),
                parent: None,
                created: Timestamp(1_000),
                owner: None,
                graph: None,
                tags: Vec::new(),
            },
            states: vec![change(State::Pending, 0, 1_000)],
        },
        spec: "{}".into(),
        tags: Vec::new(),
        requirements: Requirements::default(),
        ready_at: Timestamp(1_000),
        priority: 0,
        memory_bytes: None,
    }
}

fn offer(worker: &str) -> WorkerOffer {
    WorkerOffer {
        worker: worker.into(),
        name: format!("w-{worker}"),
        ..Default::default()
    }
}

fn at(now: i64, lease: i64) -> ClaimTimes {
    ClaimTimes {
        now: Timestamp(now),
        lease_until: Timestamp(now + lease),
    }
}

/// A task run's states, in order.
async fn states_of(store: &dyn weir_store::Store, id: &TaskRunId) -> Vec<State> {
    store
        .state_history(id)
        .await
        .unwrap()
        .iter()
        .map(|change| change.state)
        .collect()
}

async fn claim_one(store: &dyn weir_store::Store, worker: &str, now: i64) -> Option<Claim> {
    // A task run first, else a flow run.
    for room in [Room { tasks: 1, flows: 0 }, Room { tasks: 0, flows: 1 }] {
        let mut claims = store
            .claim(&offer(worker), at(now, 10_000), room)
            .await
            .unwrap();
        assert!(claims.len() <= 1);
        if let Some(claim) = claims.pop() {
            return Some(claim);
        }
    }
    None
}

async fn a_claim_takes_a_run_once_and_a_lapsed_lease_is_taken_over(backend: Backend) {
    let location = Location::new(backend).await;
    let (one, two) = (location.open().await, location.open().await);
    let work = task_work(None, &[]);
    one.enqueue(&work, None).unwrap();
    one.flush().await.unwrap();

    assert!(
        claim_one(two.as_ref(), "w2", 500).await.is_none(),
        "not ready yet"
    );
    let first = claim_one(two.as_ref(), "w2", 2_000).await.expect("claimed");
    assert_eq!(first.run_id, work.run_id());
    assert_eq!(first.kind, WorkKind::Task);
    assert_eq!(first.spec, r#"{"task": "add"}"#);
    assert_eq!(first.fence.generation, 1);
    assert_eq!(first.lost_from, None);
    assert_eq!(
        first.task_run.as_ref().unwrap().owner.as_deref(),
        Some("w2"),
        "the claimer owns the run"
    );
    // Recorded with the first state written under the claim.
    let id = TaskRunId::from_string(work.run_id().to_owned());
    two.clone()
        .fenced(first.fence.clone())
        .set_task_run_state(&id, &change(State::Running, 1, 2_001))
        .unwrap();
    two.flush().await.unwrap();
    let run = one.task_run(&id).await.unwrap().unwrap();
    assert_eq!(run.owner.as_deref(), Some("w2"));

    // Held: nobody else gets it, and renewing keeps it.
    assert!(claim_one(one.as_ref(), "w1", 3_000).await.is_none());
    let held = two.renew_leases("w2", Timestamp(20_000)).await.unwrap();
    assert_eq!(held, vec![first.fence.clone()]);
    assert!(
        claim_one(one.as_ref(), "w1", 15_000).await.is_none(),
        "renewed"
    );

    // Its lease lapses: another worker takes it over, at the next generation, and hears
    // who lost it.
    let second = claim_one(one.as_ref(), "w1", 20_001)
        .await
        .expect("taken over");
    assert_eq!(second.fence.generation, 2);
    assert_eq!(second.lost_from, Some(("w-w2".into(), "w2".into())));
    assert!(
        two.renew_leases("w2", Timestamp(30_000))
            .await
            .unwrap()
            .is_empty(),
        "the first worker no longer holds it"
    );
    let queued = one.work(10).await.unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].worker.as_deref(), Some("w1"));
    assert_eq!(queued[0].generation, 2);
}

async fn a_worker_that_lost_its_lease_cannot_overwrite_the_run(backend: Backend) {
    let location = Location::new(backend).await;
    let (paused, successor) = (location.open().await, location.open().await);
    let work = task_work(None, &[]);
    let id = TaskRunId::from_string(work.run_id().to_owned());
    successor.enqueue(&work, None).unwrap();
    successor.flush().await.unwrap();
    let stale = claim_one(paused.as_ref(), "paused", 2_000).await.unwrap();
    let stale_writes = paused.clone().fenced(stale.fence.clone());
    stale_writes
        .set_task_run_state(&id, &change(State::Running, 1, 2_001))
        .unwrap();
    stale_writes.flush().await.unwrap();

    // The lease lapses while the first worker is stopped; the successor runs and finishes it.
    let fresh = claim_one(successor.as_ref(), "successor", 13_000)
        .await
        .unwrap();
    let writes = successor.clone().fenced(fresh.fence.clone());
    writes
        .set_task_run_state(&id, &change(State::Running, 2, 13_001))
        .unwrap();
    writes
        .finish_task_run(
            &id,
            &change(State::Completed, 2, 13_002),
            Some(&json!(3)),
            None,
        )
        .unwrap();
    writes.flush().await.unwrap();

    // The first worker comes back and finishes its attempt: refused, and nothing of it stays.
    stale_writes
        .finish_task_run(
            &id,
            &change(State::Failed, 1, 14_000),
            Some(&json!("stale")),
            None,
        )
        .unwrap();
    match stale_writes.flush().await {
        Err(StoreError::LeaseLost { run_id, generation }) => {
            assert_eq!(run_id, id.as_str());
            assert_eq!(generation, 1);
        }
        other => panic!("expected LeaseLost, got {other:?}"),
    }
    assert!(paused.requeue(&stale.fence, Timestamp(14_000)).is_ok());
    assert!(matches!(
        paused.flush().await,
        Err(StoreError::LeaseLost { .. })
    ));
    let run = paused.task_run(&id).await.unwrap().unwrap();
    assert_eq!(run.state, State::Completed);
    assert_eq!(run.attempts, 2);
    assert_eq!(
        paused
            .result(run.result_digest.as_deref().unwrap())
            .await
            .unwrap(),
        json!(3)
    );
    let states: Vec<State> = states_of(paused.as_ref(), &id).await;
    assert_eq!(
        states,
        vec![
            State::Pending,
            State::Running,
            State::Running,
            State::Completed
        ]
    );
    // Finished, and nothing waits for it: gone from the queue.
    assert!(paused.work(10).await.unwrap().is_empty());
}

async fn finished_runs_wait_for_their_flow_run_to_collect_them(backend: Backend) {
    let location = Location::new(backend).await;
    let (driver, worker) = (location.open().await, location.open().await);
    let flow = flow_work();
    driver.enqueue(&flow, None).unwrap();
    let driving = claim_one(driver.as_ref(), "driver", 2_000).await.unwrap();
    assert_eq!(driving.kind, WorkKind::Flow);
    let flow_id = FlowRunId::from_string(flow.run_id().to_owned());
    // The driver queues a task run of its flow run, under its own fence.
    let work = task_work(Some(&flow_id), &[]);
    let id = TaskRunId::from_string(work.run_id().to_owned());
    driver.enqueue(&work, Some(&driving.fence)).unwrap();
    driver.flush().await.unwrap();
    let task = claim_one(worker.as_ref(), "worker", 2_100).await.unwrap();
    assert_eq!(task.run_id, id.as_str());
    assert_eq!(task.parent.as_ref(), Some(&flow_id));
    assert!(
        driver
            .collect(&flow_id, Some(&driving.fence))
            .await
            .unwrap()
            .is_empty()
    );
    worker
        .clone()
        .fenced(task.fence.clone())
        .finish_task_run(
            &id,
            &change(State::Completed, 1, 2_200),
            Some(&json!(3)),
            None,
        )
        .unwrap();
    worker.flush().await.unwrap();
    let finished = driver
        .collect(&flow_id, Some(&driving.fence))
        .await
        .unwrap();
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0].run_id, id.as_str());
    assert_eq!(finished[0].state, State::Completed);
    assert_eq!(finished[0].attempts, 1);
    let digest = finished[0].result_digest.clone().unwrap();
    assert_eq!(driver.result(&digest).await.unwrap(), json!(3));
    assert!(
        driver
            .collect(&flow_id, Some(&driving.fence))
            .await
            .unwrap()
            .is_empty(),
        "collected once"
    );

    // A driver whose lease was taken over can neither collect nor queue.
    let successor = claim_one(worker.as_ref(), "worker", 20_000).await.unwrap();
    assert_eq!(successor.kind, WorkKind::Flow);
    assert!(matches!(
        driver.collect(&flow_id, Some(&driving.fence)).await,
        Err(StoreError::LeaseLost { .. })
    ));
    driver
        .enqueue(&task_work(Some(&flow_id), &[]), Some(&driving.fence))
        .unwrap();
    assert!(matches!(
        driver.flush().await,
        Err(StoreError::LeaseLost { .. })
    ));
    let queued = worker.work(10).await.unwrap();
    assert_eq!(queued.len(), 1, "only the flow run: {queued:?}");
    // The successor ends the flow run; nothing waits for it, so its row goes.
    worker
        .clone()
        .fenced(successor.fence.clone())
        .set_flow_run_state(&flow_id, &change(State::Completed, 1, 20_100), None)
        .unwrap();
    worker.flush().await.unwrap();
    assert!(worker.work(10).await.unwrap().is_empty());
    assert_eq!(
        worker.flow_run(&flow_id).await.unwrap().unwrap().state,
        State::Completed
    );
}

async fn claims_take_tag_slots_or_leave_the_run_queued(backend: Backend) {
    let location = Location::new(backend).await;
    let (one, two) = (location.open().await, location.open().await);
    one.set_concurrency_limit("db", 1, Timestamp(0))
        .await
        .unwrap();
    let (first, second) = (task_work(None, &["db"]), task_work(None, &["db"]));
    one.enqueue(&first, None).unwrap();
    one.enqueue(&second, None).unwrap();
    one.flush().await.unwrap();
    let claims = one
        .claim(&offer("w1"), at(2_000, 10_000), Room::of_each(8))
        .await
        .unwrap();
    assert_eq!(claims.len(), 1, "one slot, one claim");
    assert_eq!(claims[0].run_id, first.run_id());
    let limit = one
        .concurrency_limit("db", Timestamp(2_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(limit.holders, vec![first.run_id().to_owned()]);
    assert!(
        two.claim(&offer("w2"), at(2_001, 10_000), Room::of_each(8))
            .await
            .unwrap()
            .is_empty(),
        "the second waits in the queue, not in a worker"
    );
    // Finishing the first frees its slot with its lease.
    let id = TaskRunId::from_string(first.run_id().to_owned());
    one.clone()
        .fenced(claims[0].fence.clone())
        .finish_task_run(&id, &change(State::Completed, 1, 2_500), None, None)
        .unwrap();
    one.flush().await.unwrap();
    let next = two
        .claim(&offer("w2"), at(2_600, 10_000), Room::of_each(8))
        .await
        .unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].run_id, second.run_id());
    // A renewal extends the slot with the lease.
    two.renew_leases("w2", Timestamp(50_000)).await.unwrap();
    let limit = two
        .concurrency_limit("db", Timestamp(40_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(limit.holders, vec![second.run_id().to_owned()]);
}

async fn offers_filter_by_tags_and_requirements(backend: Backend) {
    let location = Location::new(backend).await;
    let store = location.open().await;
    let gpu = task_work(None, &["gpu"]);
    let plain = task_work(None, &[]);
    let mut needs_dir = task_work(None, &[]);
    needs_dir.requirements.dirs.push("/data".into());
    let flow = flow_work();
    for work in [&gpu, &plain, &needs_dir, &flow] {
        store.enqueue(work, None).unwrap();
    }
    store.flush().await.unwrap();
    let gpu_offer = WorkerOffer {
        tags: vec!["gpu".into(), "100%_odd".into()],
        ..offer("gpu")
    };
    let claims = store
        .claim(&gpu_offer, at(2_000, 10_000), Room::of_each(8))
        .await
        .unwrap();
    let mut ids: Vec<&str> = claims.iter().map(|claim| claim.run_id.as_str()).collect();
    ids.sort();
    let mut expected = vec![gpu.run_id(), flow.run_id()];
    expected.sort();
    assert_eq!(
        ids, expected,
        "a worker with tags takes only task runs with them, and drives any flow run"
    );
    let tasks_only = WorkerOffer {
        unservable: vec![needs_dir.requirements.key()],
        ..offer("tasks")
    };
    let claims = store
        .claim(&tasks_only, at(2_000, 10_000), Room { tasks: 8, flows: 0 })
        .await
        .unwrap();
    let ids: Vec<&str> = claims.iter().map(|claim| claim.run_id.as_str()).collect();
    assert_eq!(ids, vec![plain.run_id()]);
    let claims = store
        .claim(&offer("any"), at(2_000, 10_000), Room::of_each(8))
        .await
        .unwrap();
    let ids: Vec<&str> = claims.iter().map(|claim| claim.run_id.as_str()).collect();
    assert_eq!(ids, vec![needs_dir.run_id()]);
    let dir_claim = claims
        .iter()
        .find(|claim| claim.run_id == needs_dir.run_id())
        .unwrap();
    assert_eq!(dir_claim.requirements.dirs, vec!["/data".to_owned()]);
}

async fn writes_sent_together_keep_the_held_runs_and_refuse_a_lost_one(backend: Backend) {
    let location = Location::new(backend).await;
    let (paused, successor) = (location.open().await, location.open().await);
    let lost = task_work(None, &[]);
    successor.enqueue(&lost, None).unwrap();
    successor.flush().await.unwrap();
    let stale = claim_one(paused.as_ref(), "paused", 2_000).await.unwrap();
    // Its lease lapses; the successor takes it over. Two more runs are queued, and the
    // first worker, back, claims them.
    let taken = claim_one(successor.as_ref(), "successor", 13_000)
        .await
        .unwrap();
    assert_eq!(taken.fence.generation, 2);
    let held = [task_work(None, &[]), task_work(None, &[])];
    for work in &held {
        successor.enqueue(work, None).unwrap();
    }
    successor.flush().await.unwrap();
    let claims = paused
        .claim(&offer("paused"), at(13_001, 10_000), Room::of_each(8))
        .await
        .unwrap();
    assert_eq!(claims.len(), 2);
    // Every run set Running then finished, without waiting in between: the writes of the
    // lost run are refused, the others' are kept whole.
    let mut fences = vec![(lost.run_id().to_owned(), stale.fence.clone())];
    fences.extend(
        claims
            .iter()
            .map(|claim| (claim.run_id.clone(), claim.fence.clone())),
    );
    for (run, fence) in &fences {
        let id = TaskRunId::from_string(run.clone());
        let writes = paused.clone().fenced(fence.clone());
        writes
            .set_task_run_state(&id, &change(State::Running, 1, 13_002))
            .unwrap();
        writes
            .finish_task_run(
                &id,
                &change(State::Completed, 1, 13_003),
                Some(&json!(run)),
                None,
            )
            .unwrap();
    }
    match paused.flush().await {
        Err(StoreError::LeaseLost { run_id, .. }) => assert_eq!(run_id, lost.run_id()),
        other => panic!("expected LeaseLost, got {other:?}"),
    }
    for work in &held {
        let id = TaskRunId::from_string(work.run_id().to_owned());
        let run = paused.task_run(&id).await.unwrap().unwrap();
        assert_eq!(run.state, State::Completed);
        assert_eq!(run.started, Some(Timestamp(13_002)));
        assert_eq!(run.ended, Some(Timestamp(13_003)));
        assert_eq!(
            paused
                .result(run.result_digest.as_deref().unwrap())
                .await
                .unwrap(),
            json!(work.run_id())
        );
        let history: Vec<State> = states_of(paused.as_ref(), &id).await;
        assert_eq!(
            history,
            vec![State::Pending, State::Running, State::Completed]
        );
    }
    let id = TaskRunId::from_string(lost.run_id().to_owned());
    let run = paused.task_run(&id).await.unwrap().unwrap();
    assert_eq!(
        run.state,
        State::Pending,
        "nothing of the lost run's writes stays"
    );
    assert_eq!(paused.state_history(&id).await.unwrap().len(), 1);
    // The held runs' rows are released; the lost one is still the successor's.
    let queued = paused.work(10).await.unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].run_id, lost.run_id());
    assert_eq!(queued[0].worker.as_deref(), Some("successor"));
}

async fn a_requeued_run_waits_for_its_time(backend: Backend) {
    let location = Location::new(backend).await;
    let store = location.open().await;
    let work = task_work(None, &[]);
    store.enqueue(&work, None).unwrap();
    store.flush().await.unwrap();
    let claim = claim_one(store.as_ref(), "w1", 2_000).await.unwrap();
    store.requeue(&claim.fence, Timestamp(5_000)).unwrap();
    store.flush().await.unwrap();
    assert!(claim_one(store.as_ref(), "w1", 4_999).await.is_none());
    let again = claim_one(store.as_ref(), "w1", 5_000).await.unwrap();
    assert_eq!(again.fence.generation, 2);
    assert_eq!(again.lost_from, None, "given back, not lost");
    // A worker does not claim again what it is running.
    store.requeue(&again.fence, Timestamp(5_000)).unwrap();
    store.flush().await.unwrap();
    let holding = WorkerOffer {
        holding: vec![work.run_id().to_owned()],
        ..offer("w1")
    };
    assert!(
        store
            .claim(&holding, at(6_000, 10_000), Room::of_each(8))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn a_dead_workers_runs_go_back_to_the_queue(backend: Backend) {
    let location = Location::new(backend).await;
    let store = location.open().await;
    let owner = OwnerRecord {
        id: "own_dead".into(),
        host: "elsewhere".into(),
        pid: 1,
        machine: "another-machine".into(),
        pid_started: 1,
        started: Timestamp(0),
        heartbeat: Timestamp(0),
    };
    store.register_owner(&owner).await.unwrap();
    let work = task_work(None, &[]);
    let id = TaskRunId::from_string(work.run_id().to_owned());
    store.enqueue(&work, None).unwrap();
    store.flush().await.unwrap();
    let claim = claim_one(store.as_ref(), "own_dead", 2_000).await.unwrap();
    store
        .clone()
        .fenced(claim.fence.clone())
        .set_task_run_state(&id, &change(State::Running, 1, 2_001))
        .unwrap();
    let ending = Ending {
        state: State::Crashed,
        message: "it stopped".into(),
        at: Timestamp(3_000),
    };
    let ended = store.retire_owner("own_dead", &ending).await.unwrap();
    assert!(
        ended.task_runs.is_empty(),
        "a queued run is not ended: {ended:?}"
    );
    assert_eq!(
        store.task_run(&id).await.unwrap().unwrap().state,
        State::Running
    );
    // Its lease ran out at once: the next claim takes it over, long before the lease's end.
    let taken = claim_one(store.as_ref(), "own_alive", 3_001).await.unwrap();
    assert_eq!(
        taken.lost_from,
        Some(("w-own_dead".into(), "own_dead".into()))
    );
    // A worker that cannot serve it gives it back as it was: still lost by the dead one.
    store.unclaim(&taken).unwrap();
    let again = claim_one(store.as_ref(), "own_third", 3_002).await.unwrap();
    assert_eq!(again.lost_from, taken.lost_from);
    assert_eq!(again.fence.generation, taken.fence.generation + 1);
}

/// PostgreSQL: a worker waiting for work is woken by another process's enqueue at once
/// (LISTEN/NOTIFY), not at the end of its wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_is_woken_by_another_process_queueing_work() {
    let location = Location::new(Backend::Postgres).await;
    let (waiting, queueing) = (location.open().await, location.open().await);
    // The first wait starts listening; later ones are woken.
    waiting
        .wait_for_work(std::time::Duration::from_millis(100))
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut slowest = std::time::Duration::ZERO;
    for _ in 0..5 {
        let waiter = {
            let waiting = waiting.clone();
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                waiting
                    .wait_for_work(std::time::Duration::from_secs(5))
                    .await;
                started.elapsed()
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        queueing.enqueue(&task_work(None, &[]), None).unwrap();
        queueing.flush().await.unwrap();
        slowest = slowest.max(waiter.await.unwrap());
    }
    assert!(
        slowest < std::time::Duration::from_millis(240),
        "woken after {slowest:?}: the notification did not arrive"
    );
}

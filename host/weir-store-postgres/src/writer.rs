//! The writer thread: it owns one connection and commits queued writes in order, as
//! many as are waiting in one transaction (group commit), like the SQLite store's.
//!
//! A batch is sent pipelined: every statement goes out before the first answer is read,
//! so a batch of thousands of writes costs one round trip, not thousands. When a
//! statement fails (or an update finds no row), the batch is rolled back and applied
//! again one operation at a time, each in a savepoint: the failed operation leaves
//! nothing behind and is reported, the others commit.
//!
//! The thread has a runtime of its own, so that callers on any runtime (or none) can
//! wait for it, and so that a full queue blocking a caller cannot starve the writer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use tokio::sync::oneshot;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};
use weir_core::{FlowRunId, TaskRunId, TenantId, Timestamp};
use weir_store::{
    CacheEntryDraft, EndedRuns, Ending, Fence, LogRecord, NewFlowRun, NewTaskRun, PluginRecord,
    StateChange, StoreError, StoreResult,
};

use crate::results::PreparedResult;

mod bulk;

/// Writes waiting beyond this make callers wait: back-pressure, not unbounded memory.
const QUEUE_CAPACITY: usize = 8192;
/// The most writes committed in one transaction.
const MAX_BATCH: usize = 2048;
/// How long writes nobody waits for wait for more before they are committed.
const LINGER: std::time::Duration = std::time::Duration::from_millis(2);

pub(crate) enum WriteOp {
    RecordPlugin {
        tenant: TenantId,
        plugin: PluginRecord,
        tasks_json: String,
    },
    CreateTaskRun {
        tenant: TenantId,
        run: NewTaskRun,
        input_json: String,
        tags_json: String,
        states: Vec<StateChange>,
        result: Option<PreparedResult>,
    },
    SetState {
        id: TaskRunId,
        change: StateChange,
    },
    FinishTaskRun {
        id: TaskRunId,
        change: StateChange,
        result: Option<PreparedResult>,
        cache: Option<CacheEntryDraft>,
    },
    AppendLogs {
        id: TaskRunId,
        lines: Vec<LogRecord>,
    },
    CreateFlowRun {
        tenant: TenantId,
        run: NewFlowRun,
        parameters_json: String,
        states: Vec<StateChange>,
    },
    SetFlowRunState {
        id: FlowRunId,
        change: StateChange,
        result: Option<PreparedResult>,
    },
    RecordNodeOutput {
        id: FlowRunId,
        node: String,
        result: PreparedResult,
    },
    /// A write about a queued run, applied only while its fence holds; the write that
    /// ends the fenced run also releases its row of the queue.
    Fenced {
        fence: Fence,
        op: Box<WriteOp>,
    },
    /// Records a run (`create`, a `CreateTaskRun` or `CreateFlowRun`) and queues it.
    Enqueue {
        create: Box<WriteOp>,
        row: crate::queue::QueueRow,
        fence: Option<Fence>,
    },
    /// Sets the state message of a queued run while it is unclaimed.
    ExplainWaiting {
        run_id: String,
        kind: weir_store::WorkKind,
        message: String,
    },
    /// Gives a claimed row back to the queue, ready at a time; marked as lost by a
    /// worker (name, id) when an unclaimed takeover.
    Requeue {
        fence: Fence,
        ready_at: Timestamp,
        lost_from: Option<(String, String)>,
    },
    /// Extends the leases a worker holds, their task runs' slots, and its heartbeat. In
    /// order with the worker's own writes, which lock the rows they fence: a renewal on
    /// another connection would wait for them (or, skipping them, let a busy driver's lease
    /// run out).
    RenewLeases {
        worker: String,
        until: Timestamp,
        now: Timestamp,
    },
    /// Writes whose failure is only logged.
    Heartbeat {
        owner: String,
        at: Timestamp,
    },
    RenewSlots {
        holder: String,
        expires: Timestamp,
    },
    ReleaseSlots {
        holder: String,
    },
    /// Ends the unfinished runs of a selection in a transaction of its own, after what
    /// is queued before it; answered once committed.
    EndRuns {
        selection: crate::leases::Selection,
        ending: Ending,
        reply: oneshot::Sender<StoreResult<EndedRuns>>,
    },
    /// Answered once everything before it committed; `report` takes the failure since the
    /// last reporting flush.
    Flush {
        reply: oneshot::Sender<StoreResult<()>>,
        report: bool,
    },
}

impl WriteOp {
    /// Whether this write may wait a moment for others while many runs are changing:
    /// task runs created, set, finished, their log lines, heartbeats. Not queued work
    /// (an idle worker waits for it), a flow run's state, nor anything a caller waits for.
    fn can_wait(&self) -> bool {
        match self {
            WriteOp::Fenced { op, .. } => op.can_wait(),
            WriteOp::CreateTaskRun { .. }
            | WriteOp::SetState { .. }
            | WriteOp::FinishTaskRun { .. }
            | WriteOp::AppendLogs { .. }
            | WriteOp::Heartbeat { .. }
            | WriteOp::RenewSlots { .. }
            | WriteOp::ExplainWaiting { .. } => true,
            _ => false,
        }
    }

    /// The task run whose state this write changes, if any.
    fn changed_task_run(&self) -> Option<&str> {
        match self {
            WriteOp::Fenced { op, .. } => op.changed_task_run(),
            WriteOp::CreateTaskRun { run, .. } => Some(run.id.as_str()),
            WriteOp::SetState { id, .. } | WriteOp::FinishTaskRun { id, .. } => Some(id.as_str()),
            _ => None,
        }
    }
}

/// Whether a batch changed several task runs: then many are changing (a map's elements,
/// parallel branches), and the next writes wait a moment for company. A lone chain of
/// tasks changes one at a time, and its writes go out at once.
fn many_changing(batch: &[(u64, WriteOp)]) -> bool {
    let mut changed = batch.iter().filter_map(|(_, op)| op.changed_task_run());
    let first = changed.next();
    changed.any(|id| Some(id) != first)
}

pub(crate) struct Writer {
    sender: Mutex<Option<SyncSender<(u64, WriteOp)>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    enqueued: AtomicU64,
    /// The sequence of the last write that made rows claimable (queued, given back).
    last_claimable: AtomicU64,
    committed: Arc<AtomicU64>,
}

/// How the writer reaches the database, again after a lost connection.
pub(crate) type Connect = Box<
    dyn Fn() -> futures::future::BoxFuture<'static, Result<Client, tokio_postgres::Error>> + Send,
>;

/// What the writer runs on its first connection before anything else (the migration).
pub(crate) type Prepare = Box<
    dyn for<'a> FnOnce(&'a mut Client) -> futures::future::BoxFuture<'a, StoreResult<()>> + Send,
>;

impl Writer {
    /// Starts the thread, which connects with `connect` (again whenever the connection
    /// is lost) and first runs `prepare` on its connection (the schema's migration);
    /// returns once that is done, or with its error.
    pub(crate) async fn start(
        runtime: tokio::runtime::Runtime,
        connect: Connect,
        prepare: Prepare,
    ) -> StoreResult<Self> {
        let (sender, receiver) = sync_channel(QUEUE_CAPACITY);
        let (ready, started) = oneshot::channel();
        let committed = Arc::new(AtomicU64::new(0));
        let thread_committed = committed.clone();
        let thread = std::thread::Builder::new()
            .name("weir-postgres-writer".into())
            .spawn(move || {
                let first = runtime.block_on(async {
                    let mut client = connect().await.map_err(|error| {
                        StoreError::backend("connecting to the store", crate::describe(&error))
                    })?;
                    prepare(&mut client).await?;
                    let statements = Statements::prepare(&client)
                        .await
                        .map_err(crate::backend("preparing the store's statements"))?;
                    Ok::<_, StoreError>(Connection { client, statements })
                });
                match first {
                    Ok(connection) => {
                        let _ = ready.send(Ok(()));
                        write_loop(runtime, connection, connect, receiver, &thread_committed);
                    }
                    Err(error) => {
                        let _ = ready.send(Err(error));
                    }
                }
            })
            .map_err(|error| StoreError::backend("starting the store's writer thread", error))?;
        started.await.map_err(|_| {
            StoreError::backend("connecting to the store", "the writer thread stopped")
        })??;
        Ok(Writer {
            sender: Mutex::new(Some(sender)),
            thread: Mutex::new(Some(thread)),
            enqueued: AtomicU64::new(0),
            last_claimable: AtomicU64::new(0),
            committed,
        })
    }

    /// Queues a write; returns its sequence number. Waits while the queue is full.
    pub(crate) fn send(&self, op: WriteOp) -> StoreResult<u64> {
        let sender = self
            .sender
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let sender = sender.as_ref().ok_or_else(writer_gone)?;
        let sequence = self.enqueued.fetch_add(1, Ordering::SeqCst) + 1;
        let claimable = matches!(op, WriteOp::Enqueue { .. } | WriteOp::Requeue { .. });
        sender.send((sequence, op)).map_err(|_| writer_gone())?;
        if claimable {
            self.last_claimable.fetch_max(sequence, Ordering::SeqCst);
        }
        Ok(sequence)
    }

    /// Waits until the writes that made rows claimable are committed (not the others:
    /// a claim after them sees what this store queued or gave back, without making every
    /// small write commit at once).
    pub(crate) async fn wait_for_claimable(&self) -> StoreResult<()> {
        if self.committed.load(Ordering::SeqCst) >= self.last_claimable.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.flush_reporting(false).await
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.committed.load(Ordering::SeqCst) >= self.enqueued.load(Ordering::SeqCst)
    }

    pub(crate) fn committed(&self) -> u64 {
        self.committed.load(Ordering::SeqCst)
    }

    pub(crate) async fn flush(&self) -> StoreResult<()> {
        self.flush_reporting(true).await
    }

    /// Waits until everything queued before is committed, leaving a failed write to be
    /// reported by the next [`flush`](Self::flush).
    pub(crate) async fn wait(&self) -> StoreResult<()> {
        if self.is_idle() {
            return Ok(());
        }
        self.flush_reporting(false).await
    }

    async fn flush_reporting(&self, report: bool) -> StoreResult<()> {
        let (reply, answer) = oneshot::channel();
        self.send(WriteOp::Flush { reply, report })?;
        answer.await.map_err(|_| writer_gone())?
    }

    /// Commits what is queued and stops the thread.
    pub(crate) fn shut_down(&self) {
        drop(
            self.sender
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take(),
        );
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("the store's writer thread panicked");
        }
    }
}

fn writer_gone() -> StoreError {
    StoreError::backend("queueing a write", "the store's writer thread has stopped")
}

/// The writer's prepared statements.
struct Statements {
    insert_plugin: Statement,
    insert_blob: Statement,
    insert_result: Statement,
    insert_task_run: Statement,
    insert_task_runs: Statement,
    insert_results: Statement,
    change_task_runs: Statement,
    insert_works: Statement,
    set_task_state: Statement,
    finish_task_run: Statement,
    upsert_cache_entry: Statement,
    insert_logs: Statement,
    insert_flow_run: Statement,
    insert_flow_state: Statement,
    set_flow_state: Statement,
    upsert_node_output: Statement,
    heartbeat: Statement,
    renew_leases: Statement,
    renew_held_slots: Statement,
    worker_heartbeat: Statement,
    renew_slots: Statement,
    release_slots: Statement,
    log_changes: Statement,
    log_changes_and_notify: Statement,
    /// Locks a queue row at a generation (none when the lease was lost).
    check_fence: Statement,
    release_unawaited: Statement,
    take_ownership: Statement,
    release_awaited: Statement,
    insert_work: Statement,
    requeue: Statement,
    explain_waiting_task: Statement,
    explain_waiting_flow: Statement,
    notify: Statement,
}

impl Statements {
    async fn prepare(client: &Client) -> Result<Self, tokio_postgres::Error> {
        Ok(Statements {
            insert_plugin: client
                .prepare(
                    "INSERT INTO plugins (digest, name, size, tasks_json, first_seen, tenant) VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT DO NOTHING",
                )
                .await?,
            insert_blob: client
                .prepare("INSERT INTO blobs (digest, bytes) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .await?,
            insert_result: client
                .prepare(
                    "INSERT INTO results (digest, size, inline_json) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                )
                .await?,
            // A run and its first states in one statement: the writer's cost is mostly
            // per statement, and a task run is three (created, result, finished).
            insert_task_run: client
                .prepare(
                    "WITH run AS (
                         INSERT INTO task_runs (id, name, task, plugin_name, plugin_digest, flow_run_id, state,
                             state_message, attempts, input_json, tags_json, result_digest, created, started, ended,
                             node, map_index, owner, tenant)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $23)
                         RETURNING id)
                     INSERT INTO task_run_states (task_run_id, seq, state, message, attempt, at)
                     SELECT run.id, state.n, state.state, state.message, state.attempt, state.at
                     FROM run, unnest($19::text[], $20::text[], $21::integer[], $22::bigint[])
                          WITH ORDINALITY AS state(state, message, attempt, at, n)",
                )
                .await?,
            // The update and the history entry in one statement; no row inserted means
            // no such run. Histories are numbered in SQL: one process writes a run's
            // history at a time, and the statements of a batch run in order, each seeing
            // the ones before.
            // Every new task run of a batch (and their first states) in one statement:
            // a map's creations cost one statement per batch.
            insert_task_runs: client
                .prepare(
                    "WITH runs AS (
                         INSERT INTO task_runs (id, name, task, plugin_name, plugin_digest, flow_run_id, state,
                             state_message, attempts, input_json, tags_json, created, started, ended, node,
                             map_index, owner, tenant)
                         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                             $6::text[], $7::text[], $8::text[], $9::integer[], $10::text[], $11::text[],
                             $12::bigint[], $13::bigint[], $14::bigint[], $15::text[], $16::integer[], $17::text[],
                             $24::text[])
                         RETURNING id)
                     INSERT INTO task_run_states (task_run_id, seq, state, message, attempt, at)
                     SELECT * FROM unnest($18::text[], $19::integer[], $20::text[], $21::text[], $22::integer[],
                         $23::bigint[])",
                )
                .await?,
            insert_results: client
                .prepare(
                    "INSERT INTO results (digest, size, inline_json)
                     SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[]) ORDER BY 1
                     ON CONFLICT DO NOTHING",
                )
                .await?,
            // State changes of many task runs, several per run in order (`n`): the run
            // takes its last state, the history all of them. A change with a generation
            // is fenced: it applies only while the run's queue row is at that generation,
            // locked here as `check_fence` does; a run ending under a fence releases its
            // row (deleted, or done for the flow run waiting for it) and its slots.
            change_task_runs: client
                .prepare(
                    "WITH changes AS (
                         SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::integer[],
                             $6::bigint[], $7::boolean[], $8::text[], $9::text[], $10::integer[])
                             AS c(id, generation, state, message, attempt, at, finishing, result_digest, cache_key, n)),
                     locked AS (
                         SELECT q.run_id, q.worker FROM work_queue q
                         JOIN (SELECT DISTINCT id, generation FROM changes WHERE generation IS NOT NULL) f
                             ON q.run_id = f.id AND q.generation = f.generation
                         WHERE NOT q.done
                         FOR NO KEY UPDATE OF q),
                     allowed AS (
                         SELECT c.*, k.worker FROM changes c LEFT JOIN locked k ON k.run_id = c.id
                         WHERE c.generation IS NULL OR k.run_id IS NOT NULL),
                     latest AS (
                         SELECT DISTINCT ON (id) id, generation, worker, state, message, at, finishing,
                             result_digest, cache_key, max(attempt) OVER (PARTITION BY id) AS attempt,
                             min(at) FILTER (WHERE state = 'Running') OVER (PARTITION BY id) AS running_at
                         FROM allowed ORDER BY id, n DESC),
                     updated AS (
                         UPDATE task_runs t SET state = l.state, state_message = l.message,
                             attempts = greatest(t.attempts, l.attempt),
                             owner = coalesce(l.worker, t.owner),
                             started = coalesce(t.started, l.running_at),
                             ended = CASE WHEN l.finishing THEN l.at ELSE t.ended END,
                             result_digest = CASE WHEN l.finishing THEN l.result_digest ELSE t.result_digest END,
                             cache_key = CASE WHEN l.finishing THEN l.cache_key ELSE t.cache_key END
                         FROM latest l WHERE t.id = l.id RETURNING t.id),
                     unawaited AS (
                         DELETE FROM work_queue q USING latest l
                         WHERE q.run_id = l.id AND l.finishing AND l.generation IS NOT NULL
                             AND q.parent_flow_run_id IS NULL),
                     awaited AS (
                         UPDATE work_queue q SET done = true, worker = NULL, worker_name = NULL, lease_expires = NULL
                         FROM latest l
                         WHERE q.run_id = l.id AND l.finishing AND l.generation IS NOT NULL
                             AND q.parent_flow_run_id IS NOT NULL),
                     slots AS (
                         DELETE FROM concurrency_slots s USING latest l
                         WHERE s.holder = l.id AND l.finishing AND l.generation IS NOT NULL)
                     INSERT INTO task_run_states (task_run_id, seq, state, message, attempt, at)
                     SELECT a.id, (SELECT coalesce(max(s.seq), 0) FROM task_run_states s WHERE s.task_run_id = a.id) + a.n,
                            a.state, a.message, a.attempt, a.at
                     FROM allowed a JOIN updated u ON u.id = a.id",
                )
                .await?,
            insert_works: client
                .prepare(
                    "INSERT INTO work_queue (run_id, kind, parent_flow_run_id, spec, tags, requirements, ready_at, created,
                         tenant, priority, memory_bytes)
                     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::bigint[], $8::bigint[], $9::text[], $10::integer[], $11::bigint[])",
                )
                .await?,
            set_task_state: client
                .prepare(
                    "WITH updated AS (
                         UPDATE task_runs SET state = $2, state_message = $3, attempts = greatest(attempts, $4),
                             started = CASE WHEN $2 = 'Running' THEN coalesce(started, $5) ELSE started END
                         WHERE id = $1 RETURNING id)
                     INSERT INTO task_run_states (task_run_id, seq, state, message, attempt, at)
                     SELECT id, (SELECT coalesce(max(seq), 0) + 1 FROM task_run_states WHERE task_run_id = $1),
                            $2, $3, $4, $5
                     FROM updated",
                )
                .await?,
            finish_task_run: client
                .prepare(
                    "WITH finished AS (
                         UPDATE task_runs SET state = $2, state_message = $3, attempts = greatest(attempts, $4),
                             ended = $5, result_digest = $6, cache_key = $7
                         WHERE id = $1 RETURNING id)
                     INSERT INTO task_run_states (task_run_id, seq, state, message, attempt, at)
                     SELECT id, (SELECT coalesce(max(seq), 0) + 1 FROM task_run_states WHERE task_run_id = $1),
                            $2, $3, $4, $5
                     FROM finished",
                )
                .await?,
            upsert_cache_entry: client
                .prepare(
                                        // The entry is the run's tenant's.
                    "INSERT INTO cache_entries (tenant, key, task, plugin_digest, result_digest, task_run_id, created,
                         expires)
                     SELECT tenant, $1, $2, $3, $4, $5, $6, $7 FROM task_runs WHERE id = $5
                     ON CONFLICT (tenant, key) DO UPDATE SET task = excluded.task, plugin_digest = excluded.plugin_digest,
                         result_digest = excluded.result_digest, task_run_id = excluded.task_run_id,
                         created = excluded.created, expires = excluded.expires",
                )
                .await?,
            insert_logs: client
                .prepare(
                    "INSERT INTO logs (task_run_id, seq, at, level, message)
                     SELECT $1, base.seq + line.n, line.at, line.level, line.message
                     FROM (SELECT coalesce(max(seq), 0) AS seq FROM logs WHERE task_run_id = $1) base,
                          unnest($2::bigint[], $3::text[], $4::text[]) WITH ORDINALITY AS line(at, level, message, n)",
                )
                .await?,
            insert_flow_run: client
                .prepare(
                    "INSERT INTO flow_runs (id, name, flow, source, parameters_json, parent_flow_run_id, parent_node,
                         state, state_message, attempts, created, started, owner, graph_json, tags_json, tenant)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
                )
                .await?,
            insert_flow_state: client
                .prepare(
                    "INSERT INTO flow_run_states (flow_run_id, seq, state, message, attempt, at)
                     SELECT $1, coalesce(max(seq), 0) + 1, $2, $3, $4, $5 FROM flow_run_states WHERE flow_run_id = $1",
                )
                .await?,
            set_flow_state: client
                .prepare(
                    "UPDATE flow_runs SET state = $2, state_message = $3, attempts = greatest(attempts, $4),
                         started = CASE WHEN $2 = 'Running' THEN coalesce(started, $5) ELSE started END,
                         ended = CASE WHEN $6 THEN $5 ELSE NULL END,
                         result_digest = coalesce($7, result_digest)
                     WHERE id = $1",
                )
                .await?,
            upsert_node_output: client
                .prepare(
                    "INSERT INTO flow_run_nodes (flow_run_id, node, result_digest) VALUES ($1, $2, $3)
                     ON CONFLICT (flow_run_id, node) DO UPDATE SET result_digest = excluded.result_digest",
                )
                .await?,
            heartbeat: client
                .prepare("UPDATE owners SET heartbeat = greatest(heartbeat, $2) WHERE id = $1")
                .await?,
            renew_leases: client
                .prepare("UPDATE work_queue SET lease_expires = $2 WHERE worker = $1 AND NOT done")
                .await?,
            renew_held_slots: client
                .prepare(
                    "UPDATE concurrency_slots SET expires = $2 WHERE holder IN
                       (SELECT run_id FROM work_queue WHERE worker = $1 AND NOT done)",
                )
                .await?,
            worker_heartbeat: client
                .prepare("UPDATE workers SET heartbeat = $2 WHERE owner = $1")
                .await?,
            renew_slots: client
                .prepare("UPDATE concurrency_slots SET expires = $2 WHERE holder = $1")
                .await?,
            release_slots: client
                .prepare("DELETE FROM concurrency_slots WHERE holder = $1")
                .await?,
            log_changes: client
                .prepare("INSERT INTO run_changes (run_ids) VALUES ($1)")
                .await?,
            // A batch's change log row and its notifications, most batches' tail, in one.
            log_changes_and_notify: client
                .prepare(
                    "WITH logged AS (INSERT INTO run_changes (run_ids) VALUES ($1))
                     SELECT pg_notify(channel, '') FROM unnest($2::text[]) AS channel",
                )
                .await?,
            // A claim (FOR UPDATE SKIP LOCKED) passes the row by until this commits; a
            // collection of the same driver (FOR KEY SHARE) does not wait for it.
            check_fence: client
                .prepare(
                    "SELECT 1 FROM work_queue WHERE run_id = $1 AND generation = $2 AND NOT done
                     FOR NO KEY UPDATE",
                )
                .await?,
            take_ownership: client
                .prepare(
                    "UPDATE task_runs t SET owner = q.worker FROM work_queue q
                     WHERE t.id = $1 AND q.run_id = $1 AND t.owner IS DISTINCT FROM q.worker",
                )
                .await?,
            release_unawaited: client
                .prepare("DELETE FROM work_queue WHERE run_id = $1 AND parent_flow_run_id IS NULL")
                .await?,
            release_awaited: client
                .prepare(
                    "UPDATE work_queue SET done = true, worker = NULL, worker_name = NULL, lease_expires = NULL
                     WHERE run_id = $1",
                )
                .await?,
            insert_work: client
                .prepare(
                    "INSERT INTO work_queue (run_id, kind, parent_flow_run_id, spec, tags, requirements, ready_at, created,
                         tenant, priority, memory_bytes)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .await?,
            notify: client.prepare("SELECT pg_notify($1, '')").await?,
            explain_waiting_task: client
                .prepare(
                    "UPDATE task_runs SET state_message = $2 WHERE id = $1 AND state = 'Pending'
                       AND EXISTS (SELECT 1 FROM work_queue WHERE run_id = $1 AND worker IS NULL AND NOT done)
                       AND state_message IS DISTINCT FROM $2",
                )
                .await?,
            explain_waiting_flow: client
                .prepare(
                    "UPDATE flow_runs SET state_message = $2 WHERE id = $1 AND state = 'Pending'
                       AND EXISTS (SELECT 1 FROM work_queue WHERE run_id = $1 AND worker IS NULL AND NOT done)
                       AND state_message IS DISTINCT FROM $2",
                )
                .await?,
            requeue: client
                .prepare(
                    "UPDATE work_queue SET worker = $3, worker_name = $4,
                         lease_expires = CASE WHEN $3::text IS NULL THEN NULL ELSE 0 END, ready_at = $2
                     WHERE run_id = $1",
                )
                .await?,
        })
    }
}

pub(crate) type Param = Box<dyn ToSql + Sync + Send>;

/// One statement of an operation, and what it must have done.
struct Step {
    statement: Statement,
    params: Vec<Param>,
    /// The error when the statement touched fewer rows than `expected` (an update of an
    /// unknown run).
    unless_touched: Option<StoreError>,
    expected: u64,
    /// Where it goes in a pipelined batch.
    place: Place,
}

/// Rows other processes write too (the same result, the same cache key) are written in
/// one order by every process: first the results and blobs by digest, last the cache
/// entries by key. Two transactions inserting the same keys in different orders wait for
/// each other, and PostgreSQL ends one of them ("deadlock detected").
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Place {
    /// A blob, by its digest (written once per batch).
    Blob(String),
    /// A result row, by its digest (written once per batch); or all of them, sorted.
    Result(String),
    /// The batch's new task runs, in one statement.
    Created,
    /// In the order of its operation.
    InOrder,
    /// The batch's state changes of task runs, in one statement.
    Bulked,
    /// A cache entry, by its key.
    Last(String),
}

/// An operation, planned as statements.
struct Planned {
    action: &'static str,
    steps: Vec<Step>,
    /// A heartbeat or lease renewal: its failure is logged, not reported.
    logged_only: bool,
    /// The run it writes, for the change log.
    changed: Option<String>,
}

fn step(statement: &Statement, params: Vec<Param>) -> Step {
    Step {
        statement: statement.clone(),
        params,
        unless_touched: None,
        expected: 1,
        place: Place::InOrder,
    }
}

/// Text as PostgreSQL takes it: it refuses the NUL character, which a plugin's log line
/// or error message may hold, so NUL is stored as U+FFFD (SQLite keeps it).
fn storable(value: &str) -> String {
    if value.contains('\0') {
        value.replace('\0', "\u{FFFD}")
    } else {
        value.to_owned()
    }
}

pub(crate) fn text(value: &str) -> Param {
    Box::new(storable(value))
}

fn optional_text(value: Option<&str>) -> Param {
    Box::new(value.map(storable))
}

fn attempt(value: u32) -> Param {
    Box::new(i32::try_from(value).unwrap_or(i32::MAX))
}

/// The blob a result too large to keep inline is stored in, if it is one.
fn blob_step(statements: &Statements, result: &PreparedResult) -> Option<Step> {
    let blob = result.blob.as_ref()?;
    let mut blob = step(
        &statements.insert_blob,
        vec![text(&result.digest), Box::new(blob.clone())],
    );
    blob.place = Place::Blob(result.digest.clone());
    Some(blob)
}

fn result_steps(statements: &Statements, result: &PreparedResult, steps: &mut Vec<Step>) {
    steps.extend(blob_step(statements, result));
    let mut row = step(
        &statements.insert_result,
        vec![
            text(&result.digest),
            Box::new(result.size as i64),
            Box::new(result.inline.clone()),
        ],
    );
    row.place = Place::Result(result.digest.clone());
    steps.push(row);
}

/// The cache entry a finished task run's result makes.
fn cache_step(
    statements: &Statements,
    cache: &CacheEntryDraft,
    result_digest: &str,
    task_run: &str,
    at: Timestamp,
) -> Step {
    let mut entry = step(
        &statements.upsert_cache_entry,
        vec![
            text(cache.key.as_str()),
            text(&cache.task),
            text(cache.plugin_digest.as_str()),
            text(result_digest),
            text(task_run),
            Box::new(at.0),
            Box::new(cache.expires.map(|expires| expires.0)),
        ],
    );
    entry.place = Place::Last(cache.key.as_str().to_owned());
    entry
}

fn state_step(statement: &Statement, id: &str, change: &StateChange) -> Step {
    step(
        statement,
        vec![
            text(id),
            text(change.state.as_str()),
            optional_text(change.message.as_deref()),
            attempt(change.attempt),
            Box::new(change.at.0),
        ],
    )
}

/// The step that holds an operation to its fence.
fn fence_step(statements: &Statements, fence: &Fence) -> Step {
    let mut check = step(
        &statements.check_fence,
        vec![text(&fence.run_id), Box::new(fence.generation)],
    );
    check.unless_touched = Some(StoreError::LeaseLost {
        run_id: fence.run_id.clone(),
        generation: fence.generation,
    });
    check
}

/// Whether `op` ends the run `fence` is about.
fn ends_fenced_run(op: &WriteOp, fence: &Fence) -> bool {
    match op {
        WriteOp::FinishTaskRun { id, .. } => id.as_str() == fence.run_id,
        WriteOp::SetFlowRunState { id, change, .. } => {
            id.as_str() == fence.run_id && change.state.is_final()
        }
        _ => false,
    }
}

/// Plans the queue's operations, which wrap others; None for the rest.
fn plan_queued(statements: &Statements, op: &WriteOp) -> Option<Planned> {
    let planned = match op {
        WriteOp::Fenced { fence, op: inner } => {
            let mut planned = plan(statements, inner);
            planned.steps.insert(0, fence_step(statements, fence));
            // The claimer owns the task run from its first state on (as `change_task_runs`).
            if let WriteOp::SetState { id, .. } | WriteOp::FinishTaskRun { id, .. } = inner.as_ref()
                && id.as_str() == fence.run_id
            {
                planned.steps.insert(
                    1,
                    step(&statements.take_ownership, vec![text(&fence.run_id)]),
                );
            }
            if ends_fenced_run(inner, fence) {
                for statement in [
                    &statements.release_unawaited,
                    &statements.release_awaited,
                    &statements.release_slots,
                ] {
                    planned
                        .steps
                        .push(step(statement, vec![text(&fence.run_id)]));
                }
            }
            planned
        }
        WriteOp::Enqueue { create, row, fence } => {
            let mut planned = plan(statements, create);
            if let Some(fence) = fence {
                planned.steps.insert(0, fence_step(statements, fence));
            }
            planned
                .steps
                .push(step(&statements.insert_work, row.params()));
            planned.action = "queueing a run";
            planned
        }
        WriteOp::Requeue {
            fence,
            ready_at,
            lost_from,
        } => Planned {
            action: "giving a run back to the queue",
            steps: vec![
                fence_step(statements, fence),
                step(
                    &statements.requeue,
                    vec![
                        text(&fence.run_id),
                        Box::new(ready_at.0),
                        Box::new(lost_from.as_ref().map(|(_, worker)| worker.clone())),
                        Box::new(lost_from.as_ref().map(|(name, _)| name.clone())),
                    ],
                ),
                step(&statements.release_slots, vec![text(&fence.run_id)]),
            ],
            logged_only: false,
            changed: None,
        },
        _ => return None,
    };
    Some(planned)
}

fn plan(statements: &Statements, op: &WriteOp) -> Planned {
    if let Some(planned) = plan_queued(statements, op) {
        return planned;
    }
    let mut steps = Vec::new();
    let (action, logged_only) = match op {
        WriteOp::RecordPlugin {
            tenant,
            plugin,
            tasks_json,
        } => {
            steps.push(step(
                &statements.insert_plugin,
                vec![
                    text(plugin.digest.as_str()),
                    text(&plugin.name),
                    Box::new(plugin.size_bytes as i64),
                    text(tasks_json),
                    Box::new(plugin.first_seen.0),
                    text(tenant.as_str()),
                ],
            ));
            ("recording a plugin", false)
        }
        WriteOp::CreateTaskRun {
            tenant,
            run,
            input_json,
            tags_json,
            states,
            result,
        } => {
            if let Some(result) = result {
                result_steps(statements, result, &mut steps);
            }
            let last = states.last();
            let started = states
                .iter()
                .find(|change| change.state == weir_core::State::Running)
                .map(|change| change.at.0);
            let ended = last
                .filter(|change| change.state.is_final())
                .map(|change| change.at.0);
            steps.push(step(
                &statements.insert_task_run,
                vec![
                    text(run.id.as_str()),
                    text(&run.name),
                    text(&run.task),
                    text(&run.plugin_name),
                    text(run.plugin_digest.as_str()),
                    optional_text(run.flow_run_id.as_ref().map(FlowRunId::as_str)),
                    text(last.map_or("Pending", |change| change.state.as_str())),
                    optional_text(last.and_then(|change| change.message.as_deref())),
                    attempt(last.map_or(0, |change| change.attempt)),
                    text(input_json),
                    text(tags_json),
                    optional_text(result.as_ref().map(|result| result.digest.as_str())),
                    Box::new(run.created.0),
                    Box::new(started),
                    Box::new(ended),
                    Box::new(run.node.clone()),
                    Box::new(
                        run.map_index
                            .map(|index| i32::try_from(index).unwrap_or(i32::MAX)),
                    ),
                    Box::new(run.owner.clone()),
                    Box::new(
                        states
                            .iter()
                            .map(|change| change.state.as_str().to_owned())
                            .collect::<Vec<String>>(),
                    ),
                    Box::new(
                        states
                            .iter()
                            .map(|change| change.message.as_deref().map(storable))
                            .collect::<Vec<Option<String>>>(),
                    ),
                    Box::new(
                        states
                            .iter()
                            .map(|change| i32::try_from(change.attempt).unwrap_or(i32::MAX))
                            .collect::<Vec<i32>>(),
                    ),
                    Box::new(
                        states
                            .iter()
                            .map(|change| change.at.0)
                            .collect::<Vec<i64>>(),
                    ),
                    text(tenant.as_str()),
                ],
            ));
            ("creating a task run", false)
        }
        WriteOp::SetState { id, change } => {
            let mut update = state_step(&statements.set_task_state, id.as_str(), change);
            update.unless_touched = Some(StoreError::UnknownTaskRun(id.to_string()));
            steps.push(update);
            ("updating a task run's state", false)
        }
        WriteOp::FinishTaskRun {
            id,
            change,
            result,
            cache,
        } => {
            if let Some(result) = result {
                result_steps(statements, result, &mut steps);
            }
            steps.push(Step {
                statement: statements.finish_task_run.clone(),
                params: vec![
                    text(id.as_str()),
                    text(change.state.as_str()),
                    optional_text(change.message.as_deref()),
                    attempt(change.attempt),
                    Box::new(change.at.0),
                    optional_text(result.as_ref().map(|result| result.digest.as_str())),
                    optional_text(cache.as_ref().map(|cache| cache.key.as_str())),
                ],
                unless_touched: Some(StoreError::UnknownTaskRun(id.to_string())),
                expected: 1,
                place: Place::InOrder,
            });
            if let (Some(cache), Some(result)) = (cache, result) {
                steps.push(cache_step(
                    statements,
                    cache,
                    &result.digest,
                    id.as_str(),
                    change.at,
                ));
            }
            ("finishing a task run", false)
        }
        WriteOp::AppendLogs { id, lines } => {
            steps.push(step(
                &statements.insert_logs,
                vec![
                    text(id.as_str()),
                    Box::new(lines.iter().map(|line| line.at.0).collect::<Vec<i64>>()),
                    Box::new(
                        lines
                            .iter()
                            .map(|line| line.level.as_str().to_owned())
                            .collect::<Vec<String>>(),
                    ),
                    Box::new(
                        lines
                            .iter()
                            .map(|line| storable(&line.message))
                            .collect::<Vec<String>>(),
                    ),
                ],
            ));
            ("writing log lines", false)
        }
        WriteOp::CreateFlowRun {
            tenant,
            run,
            parameters_json,
            states,
        } => {
            let last = states.last();
            let started = states
                .iter()
                .find(|change| change.state == weir_core::State::Running)
                .map(|change| change.at.0);
            steps.push(step(
                &statements.insert_flow_run,
                vec![
                    text(run.id.as_str()),
                    text(&run.name),
                    text(&run.flow),
                    Box::new(run.source.clone()),
                    text(parameters_json),
                    optional_text(run.parent.as_ref().map(|(parent, _)| parent.as_str())),
                    optional_text(run.parent.as_ref().map(|(_, node)| node.as_str())),
                    text(last.map_or("Pending", |change| change.state.as_str())),
                    optional_text(last.and_then(|change| change.message.as_deref())),
                    attempt(last.map_or(0, |change| change.attempt)),
                    Box::new(run.created.0),
                    Box::new(started),
                    Box::new(run.owner.clone()),
                    Box::new(weir_store::graph_json(run.graph.as_ref())),
                    text(&weir_store::tags_json(&run.tags)),
                    text(tenant.as_str()),
                ],
            ));
            for change in states {
                steps.push(state_step(
                    &statements.insert_flow_state,
                    run.id.as_str(),
                    change,
                ));
            }
            ("creating a flow run", false)
        }
        WriteOp::SetFlowRunState { id, change, result } => {
            if let Some(result) = result {
                result_steps(statements, result, &mut steps);
            }
            steps.push(Step {
                statement: statements.set_flow_state.clone(),
                params: vec![
                    text(id.as_str()),
                    text(change.state.as_str()),
                    optional_text(change.message.as_deref()),
                    attempt(change.attempt),
                    Box::new(change.at.0),
                    Box::new(change.state.is_final()),
                    optional_text(result.as_ref().map(|result| result.digest.as_str())),
                ],
                unless_touched: Some(StoreError::UnknownFlowRun(id.to_string())),
                expected: 1,
                place: Place::InOrder,
            });
            steps.push(state_step(
                &statements.insert_flow_state,
                id.as_str(),
                change,
            ));
            ("updating a flow run's state", false)
        }
        WriteOp::RecordNodeOutput { id, node, result } => {
            result_steps(statements, result, &mut steps);
            steps.push(step(
                &statements.upsert_node_output,
                vec![text(id.as_str()), text(node), text(&result.digest)],
            ));
            ("recording a node's output", false)
        }
        WriteOp::Heartbeat { owner, at } => {
            steps.push(step(
                &statements.heartbeat,
                vec![text(owner), Box::new(at.0)],
            ));
            ("recording a heartbeat", true)
        }
        WriteOp::RenewLeases { worker, until, now } => {
            for (statement, at) in [
                (&statements.renew_leases, until),
                (&statements.renew_held_slots, until),
                (&statements.worker_heartbeat, now),
            ] {
                steps.push(step(statement, vec![text(worker), Box::new(at.0)]));
            }
            ("renewing leases", true)
        }
        WriteOp::RenewSlots { holder, expires } => {
            steps.push(step(
                &statements.renew_slots,
                vec![text(holder), Box::new(expires.0)],
            ));
            ("renewing concurrency slots", true)
        }
        WriteOp::ReleaseSlots { holder } => {
            steps.push(step(&statements.release_slots, vec![text(holder)]));
            ("releasing concurrency slots", true)
        }
        WriteOp::Flush { .. } | WriteOp::EndRuns { .. } => ("answering", true),
        WriteOp::ExplainWaiting {
            run_id,
            kind,
            message,
        } => {
            let statement = match kind {
                weir_store::WorkKind::Task => &statements.explain_waiting_task,
                weir_store::WorkKind::Flow => &statements.explain_waiting_flow,
            };
            steps.push(step(statement, vec![text(run_id), text(message)]));
            ("saying why a run waits", true)
        }
        WriteOp::Fenced { .. } | WriteOp::Enqueue { .. } | WriteOp::Requeue { .. } => {
            unreachable!("planned by plan_queued")
        }
    };
    Planned {
        action,
        steps,
        logged_only,
        changed: changed_run(op),
    }
}

/// An operation planned with no statements: the batch's shared statements stand for it.
fn plan_without_steps(op: &WriteOp) -> Planned {
    Planned {
        action: "writing runs",
        steps: Vec::new(),
        logged_only: false,
        changed: changed_run(op),
    }
}

/// The run an operation writes, for the change log.
fn changed_run(op: &WriteOp) -> Option<String> {
    match op {
        WriteOp::CreateTaskRun { run, .. } => Some(run.id.to_string()),
        WriteOp::SetState { id, .. }
        | WriteOp::FinishTaskRun { id, .. }
        | WriteOp::AppendLogs { id, .. } => Some(id.to_string()),
        WriteOp::CreateFlowRun { run, .. } => Some(run.id.to_string()),
        WriteOp::SetFlowRunState { id, .. } => Some(id.to_string()),
        WriteOp::Fenced { op, .. } | WriteOp::Enqueue { create: op, .. } => changed_run(op),
        WriteOp::ExplainWaiting { run_id, .. } => Some(run_id.clone()),
        _ => None,
    }
}

/// What ends every batch: its change log row, and its notifications.
fn tail_steps(statements: &Statements, planned: &[Planned], ops: &[WriteOp]) -> Vec<Step> {
    let channels = notified_channels(ops);
    match log_step(statements, planned) {
        Some(log) if !channels.is_empty() => {
            let mut params = log.params;
            params.push(Box::new(
                channels
                    .iter()
                    .map(|channel| (*channel).to_owned())
                    .collect::<Vec<String>>(),
            ));
            vec![step(&statements.log_changes_and_notify, params)]
        }
        log => log
            .into_iter()
            .chain(
                channels
                    .into_iter()
                    .map(|channel| step(&statements.notify, vec![text(channel)])),
            )
            .collect(),
    }
}

/// Notifications sent when the batch commits: work queued or given back (idle workers
/// wake), queued runs ended (the drivers waiting for them wake).
fn notified_channels(ops: &[WriteOp]) -> Vec<&'static str> {
    let work = ops
        .iter()
        .any(|op| matches!(op, WriteOp::Enqueue { .. } | WriteOp::Requeue { .. }));
    let done = ops.iter().any(|op| match op {
        WriteOp::Fenced { fence, op } => ends_fenced_run(op, fence),
        _ => false,
    });
    [
        (work, crate::queue::WORK_CHANNEL),
        (done, crate::queue::DONE_CHANNEL),
    ]
    .into_iter()
    .filter(|(send, _)| *send)
    .map(|(_, channel)| channel)
    .collect()
}

/// The change log's row for a transaction applying `planned`, if it writes runs.
fn log_step(statements: &Statements, planned: &[Planned]) -> Option<Step> {
    let ids: std::collections::BTreeSet<&str> = planned
        .iter()
        .filter_map(|op| op.changed.as_deref())
        .collect();
    (!ids.is_empty()).then(|| {
        step(
            &statements.log_changes,
            vec![Box::new(weir_store::change_log::entry(ids))],
        )
    })
}

fn params(step: &Step) -> Vec<&(dyn ToSql + Sync)> {
    step.params
        .iter()
        .map(|param| param.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// How a batch went wrong: operations failed (the rest committed), or nothing did.
enum BatchError {
    Operation(StoreError),
    Commit(StoreError),
}

/// The connection and its statements, made again when the connection is lost.
struct Connection {
    client: Client,
    statements: Statements,
}

fn write_loop(
    runtime: tokio::runtime::Runtime,
    connection: Connection,
    connect: Connect,
    receiver: Receiver<(u64, WriteOp)>,
    committed: &AtomicU64,
) {
    let mut connection = Some(connection);
    let mut pending_error: Option<StoreError> = None;
    let mut lingering = false;
    while let Ok(first) = receiver.recv() {
        let mut batch = vec![first];
        let drain = |batch: &mut Vec<(u64, WriteOp)>| {
            while batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
        };
        drain(&mut batch);
        // While many runs change, writes nobody waits for wait a moment for company: a
        // batch's cost to the server is mostly per transaction and statement, whatever
        // its size, and the machine's cores are better spent on the tasks.
        let linger_until = std::time::Instant::now() + LINGER;
        while lingering && batch.len() < MAX_BATCH && batch.iter().all(|(_, op)| op.can_wait()) {
            let left = linger_until.saturating_duration_since(std::time::Instant::now());
            match receiver.recv_timeout(left) {
                Ok(next) => {
                    batch.push(next);
                    drain(&mut batch);
                }
                Err(_) => break,
            }
        }
        lingering = many_changing(&batch);
        let last_sequence = batch.last().map_or(0, |(sequence, _)| *sequence);
        let mut flushes = Vec::new();
        let mut ops = Vec::with_capacity(batch.len());
        for (_, op) in batch {
            match op {
                WriteOp::Flush { reply, report } => flushes.push((reply, report)),
                op => ops.push(op),
            }
        }
        if !ops.is_empty() {
            let failures = runtime.block_on(apply(&mut connection, &connect, ops));
            for failure in failures {
                let (BatchError::Operation(error) | BatchError::Commit(error)) = failure;
                error.log_failed_write();
                pending_error.get_or_insert(error);
            }
        }
        committed.store(last_sequence, Ordering::SeqCst);
        for (reply, report) in flushes {
            let answer = match report {
                true => pending_error.take().map_or(Ok(()), Err),
                false => Ok(()),
            };
            let _ = reply.send(answer);
        }
    }
}

/// Applies a batch: its plain writes in transactions, split where a request to end runs
/// takes its own (in order). Returns what failed.
async fn apply(
    connection: &mut Option<Connection>,
    connect: &Connect,
    ops: Vec<WriteOp>,
) -> Vec<BatchError> {
    let mut failures = Vec::new();
    let mut live = match connection.take() {
        Some(live) if !live.client.is_closed() => live,
        _ => match reconnect_patiently(connect).await {
            Ok(live) => live,
            Err(BatchError::Commit(error) | BatchError::Operation(error)) => {
                let message = error.describe();
                for op in ops {
                    if let WriteOp::EndRuns { reply, .. } = op {
                        let _ =
                            reply.send(Err(StoreError::backend("ending runs", message.clone())));
                    }
                }
                failures.push(BatchError::Commit(error));
                return failures;
            }
        },
    };
    let mut segment = Vec::new();
    for op in ops {
        match op {
            WriteOp::EndRuns {
                selection,
                ending,
                reply,
            } => {
                if !segment.is_empty()
                    && let Err(error) =
                        commit_through_outages(&mut live, connect, &std::mem::take(&mut segment))
                            .await
                {
                    failures.push(error);
                }
                let answer = crate::leases::end_runs(&mut live.client, &selection, &ending).await;
                let _ = reply.send(answer);
            }
            op => segment.push(op),
        }
    }
    if !segment.is_empty()
        && let Err(error) = commit_through_outages(&mut live, connect, &segment).await
    {
        failures.push(error);
    }
    *connection = Some(live);
    failures
}

/// How long the writer keeps trying to reach the server before it gives up on a batch
/// (reporting it failed): a restart or a network blip is waited out, writes queue up
/// (callers wait once the queue is full), nothing is lost.
const OUTAGE_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);
/// The longest wait between two tries.
const MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(5);

/// Connects again, trying with backoff for up to [`OUTAGE_LIMIT`].
async fn reconnect_patiently(connect: &Connect) -> Result<Connection, BatchError> {
    let started = std::time::Instant::now();
    let mut backoff = std::time::Duration::from_millis(100);
    loop {
        match reconnect(connect).await {
            Ok(live) => return Ok(live),
            Err(failure) if started.elapsed() >= OUTAGE_LIMIT => return Err(failure),
            Err(BatchError::Commit(error) | BatchError::Operation(error)) => {
                tracing::warn!(
                    "the store cannot be reached ({}); trying again in {} ms",
                    error.describe(),
                    backoff.as_millis()
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Commits a batch; when the connection is lost on the way, connects again and sends the
/// batch again, for up to [`OUTAGE_LIMIT`]. (Lost after the server committed but before
/// it answered, a batch is sent twice: its new runs then collide with themselves and are
/// reported, which is the rare price of not losing every batch of an outage.)
async fn commit_through_outages(
    live: &mut Connection,
    connect: &Connect,
    ops: &[WriteOp],
) -> Result<(), BatchError> {
    let started = std::time::Instant::now();
    loop {
        match commit_batch(live, ops).await {
            Err(BatchError::Commit(error)) if started.elapsed() < OUTAGE_LIMIT => {
                // Give the connection's task a moment to notice that it is gone.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                if !live.client.is_closed() {
                    return Err(BatchError::Commit(error));
                }
                tracing::warn!(
                    "the store's connection was lost while writing ({}); connecting again",
                    error.describe()
                );
                *live = reconnect_patiently(connect).await?;
            }
            other => return other,
        }
    }
}

async fn reconnect(connect: &Connect) -> Result<Connection, BatchError> {
    let lost = |error: tokio_postgres::Error| {
        BatchError::Commit(StoreError::backend("connecting to the store again", error))
    };
    let client = connect().await.map_err(lost)?;
    let statements = Statements::prepare(&client).await.map_err(lost)?;
    Ok(Connection { client, statements })
}

/// Commits plain writes: pipelined, or operation by operation when something fails.
async fn commit_batch(live: &mut Connection, ops: &[WriteOp]) -> Result<(), BatchError> {
    let bulk = bulk::plan(&live.statements, ops);
    // What the shared statements stand for needs no statements of its own, unless the
    // batch is taken apart (below).
    let planned: Vec<Planned> = ops
        .iter()
        .zip(&bulk.covered)
        .map(|(op, covered)| match covered {
            true => plan_without_steps(op),
            false => {
                let mut planned = plan(&live.statements, op);
                if bulk.results {
                    planned
                        .steps
                        .retain(|step| !matches!(step.place, Place::Result(_)));
                }
                planned
            }
        })
        .collect();
    let tail = tail_steps(&live.statements, &planned, ops);
    // A deadlock or serialization failure with another process's transaction is not the
    // batch's fault: it is sent again, a few times, before being taken apart.
    for retry in 0..TRANSIENT_RETRIES {
        let sent = pipelined(&mut live.client, &planned, &tail, &bulk.steps);
        match sent.await {
            Ok(Pipelined::Committed) => return Ok(()),
            Ok(Pipelined::Failed) => break,
            Ok(Pipelined::Transient) => {
                tokio::time::sleep(std::time::Duration::from_millis(5 << retry)).await;
            }
            Err(error) => return Err(BatchError::Commit(error)),
        }
    }
    let planned: Vec<Planned> = ops.iter().map(|op| plan(&live.statements, op)).collect();
    one_by_one(&mut live.client, &planned, &tail).await
}

/// How many times a batch that lost a deadlock is sent again.
const TRANSIENT_RETRIES: u32 = 5;

/// How a pipelined batch went.
enum Pipelined {
    Committed,
    /// A statement failed or an update found no row (rolled back).
    Failed,
    /// It collided with another transaction (rolled back); sending it again may succeed.
    Transient,
}

fn transient(error: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    matches!(
        error.code(),
        Some(&SqlState::T_R_DEADLOCK_DETECTED) | Some(&SqlState::T_R_SERIALIZATION_FAILURE)
    )
}

/// Sends every statement of the batch before reading an answer.
async fn pipelined(
    client: &mut Client,
    planned: &[Planned],
    tail: &[Step],
    bulk: &[Step],
) -> StoreResult<Pipelined> {
    let transaction = client
        .transaction()
        .await
        .map_err(|error| StoreError::backend("starting a transaction", error))?;
    let mut steps: Vec<&Step> = planned
        .iter()
        .flat_map(|op| &op.steps)
        .chain(bulk)
        .collect();
    // Stable: the steps of one place keep their operations' order.
    steps.sort_by(|a, b| a.place.cmp(&b.place));
    steps.dedup_by(|later, earlier| {
        matches!(&later.place, Place::Blob(_) | Place::Result(_)) && later.place == earlier.place
    });
    steps.extend(tail);
    let all_params: Vec<Vec<&(dyn ToSql + Sync)>> = steps.iter().map(|step| params(step)).collect();
    let answers = futures::future::join_all(
        steps
            .iter()
            .zip(&all_params)
            .map(|(step, params)| transaction.execute(&step.statement, params)),
    )
    .await;
    let whole = steps
        .iter()
        .zip(&answers)
        .all(|(step, answer)| match answer {
            Ok(touched) => step.unless_touched.is_none() || *touched >= step.expected,
            Err(_) => false,
        });
    if !whole {
        let collided = answers
            .iter()
            .any(|answer| answer.as_ref().is_err_and(transient));
        transaction
            .rollback()
            .await
            .map_err(|error| StoreError::backend("rolling back a batch", error))?;
        return Ok(match collided {
            true => Pipelined::Transient,
            false => Pipelined::Failed,
        });
    }
    match transaction.commit().await {
        Ok(()) => Ok(Pipelined::Committed),
        Err(error) if transient(&error) => Ok(Pipelined::Transient),
        Err(error) => Err(StoreError::backend("committing writes", error)),
    }
}

/// Applies the batch one operation at a time, each in a savepoint of its own.
async fn one_by_one(
    client: &mut Client,
    planned: &[Planned],
    tail: &[Step],
) -> Result<(), BatchError> {
    let mut transaction = client.transaction().await.map_err(|error| {
        BatchError::Commit(StoreError::backend("starting a transaction", error))
    })?;
    let mut first_error = None;
    for op in planned {
        let savepoint = transaction.savepoint("operation").await.map_err(|error| {
            BatchError::Commit(StoreError::backend("keeping an operation whole", error))
        })?;
        let mut failure = None;
        for step in &op.steps {
            match savepoint.execute(&step.statement, &params(step)).await {
                Ok(0) if step.unless_touched.is_some() => {
                    failure = step.unless_touched.as_ref().map(copy_error);
                    break;
                }
                Ok(_) => {}
                Err(error) => {
                    failure = Some(StoreError::backend(op.action, error));
                    break;
                }
            }
        }
        let closed = match failure {
            None => savepoint.commit().await,
            Some(error) => {
                if op.logged_only {
                    tracing::error!("{}", error.describe());
                } else {
                    first_error.get_or_insert(error);
                }
                savepoint.rollback().await
            }
        };
        closed.map_err(|error| {
            BatchError::Commit(StoreError::backend("keeping an operation whole", error))
        })?;
    }
    // Without its log row the transaction would be missing from the feed: all or nothing.
    for step in tail {
        transaction
            .execute(&step.statement, &params(step))
            .await
            .map_err(|error| {
                BatchError::Commit(StoreError::backend("logging the batch's changes", error))
            })?;
    }
    transaction
        .commit()
        .await
        .map_err(|error| BatchError::Commit(StoreError::backend("committing writes", error)))?;
    first_error.map_or(Ok(()), |error| Err(BatchError::Operation(error)))
}

/// The unknown-run errors a step carries, made again for each report.
fn copy_error(error: &StoreError) -> StoreError {
    match error {
        StoreError::UnknownTaskRun(id) => StoreError::UnknownTaskRun(id.clone()),
        StoreError::UnknownFlowRun(id) => StoreError::UnknownFlowRun(id.clone()),
        StoreError::LeaseLost { run_id, generation } => StoreError::LeaseLost {
            run_id: run_id.clone(),
            generation: *generation,
        },
        other => StoreError::backend("writing", other.describe()),
    }
}

//! The writer thread: it owns the only writing connection and commits queued writes
//! in order, as many as are waiting in one transaction (group commit).
//!
//! Callers enqueue and go on; [`Writer::flush`] waits until everything queued before it
//! is committed. Because one thread applies writes in queue order, the database always
//! holds a prefix of what was written: a crash loses at most the last few
//! milliseconds of writes, never an earlier write while keeping a later one.

use rusqlite::{Connection, params};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use tokio::sync::oneshot;
use weir_core::{FlowRunId, State, TaskRunId, TenantId, Timestamp};
use weir_store::{
    CacheEntryDraft, EndedRuns, Ending, Fence, LogRecord, NewFlowRun, NewTaskRun, PluginRecord,
    StateChange, StoreError, StoreResult,
};

use crate::results::PreparedResult;

/// Writes waiting beyond this make callers wait: back-pressure, not unbounded memory.
const QUEUE_CAPACITY: usize = 8192;
/// The most writes committed in one transaction.
const MAX_BATCH: usize = 2048;

pub(crate) enum WriteOp {
    RecordPlugin {
        tenant: TenantId,
        plugin: PluginRecord,
        tasks_json: String,
    },
    CreateTaskRun {
        tenant: TenantId,
        run: NewTaskRun,
        /// The input and tags as JSON text, serialized by the caller to spare this thread.
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
    /// Ends every unfinished run of a selection; answered once the batch committed.
    EndRuns {
        selection: RunSelection,
        ending: Ending,
        reply: oneshot::Sender<StoreResult<EndedRuns>>,
    },
    /// Work that needs an answer (a count, a slot), given once the batch committed.
    Ask(Box<dyn Question>),
    /// Work whose failure is only logged (a heartbeat, a lease renewal).
    Call(Box<dyn FnOnce(&Connection) + Send>),
    /// Answered once everything before it committed; `report` takes the failure since the
    /// last reporting flush (a read waits without taking it, so the caller of `flush`
    /// still hears of it).
    Flush {
        reply: oneshot::Sender<StoreResult<()>>,
        report: bool,
    },
}

/// Which runs an [`WriteOp::EndRuns`] ends.
pub(crate) enum RunSelection {
    /// Every unfinished run of a process (and the process's record).
    Owner(String),
    /// A flow run of the tenant, its subflow runs, and the task runs of all of them.
    FlowRunTree(FlowRunId, TenantId),
}

/// Work whose answer waits for the commit: a caller must not hear "granted" for a slot
/// that a failed commit then lost.
pub(crate) trait Question: Send {
    /// Does the work inside the batch's transaction; false when it failed (its
    /// savepoint is then rolled back).
    fn ask(&mut self, connection: &Connection) -> bool;
    /// Sends the answer; `failed` when the batch did not commit (or never began).
    fn answer(self: Box<Self>, failed: Option<&str>);
}

struct PendingAnswer<T, F> {
    work: Option<F>,
    answer: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> Question for PendingAnswer<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> StoreResult<T> + Send,
{
    fn ask(&mut self, connection: &Connection) -> bool {
        let answer = self.work.take().map(|work| work(connection));
        let succeeded = matches!(answer, Some(Ok(_)));
        self.answer = answer;
        succeeded
    }

    fn answer(self: Box<Self>, failed: Option<&str>) {
        let answer = match (failed, self.answer) {
            (Some(message), _) => Err(not_committed(message)),
            (None, Some(answer)) => answer,
            (None, None) => Err(StoreError::backend(
                "answering a store request",
                "the request was never run",
            )),
        };
        // The caller waits on the other end; if it is gone, nobody needs the answer.
        let _ = self.reply.send(answer);
    }
}

/// The answer to a request whose batch did not commit (or never began).
fn not_committed(message: &str) -> StoreError {
    StoreError::backend("committing writes", message.to_owned())
}

/// An answer to send once the batch's fate is known.
type Deferred = Box<dyn FnOnce(Option<&str>) + Send>;

pub(crate) struct Writer {
    /// Woken after a commit that queued work or ended queued runs (this process's idle
    /// workers and drivers; other processes poll).
    pub(crate) queue_changed: Arc<tokio::sync::Notify>,
    sender: Mutex<Option<SyncSender<(u64, WriteOp)>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    enqueued: AtomicU64,
    committed: Arc<AtomicU64>,
}

impl Writer {
    pub(crate) fn start(connection: Connection) -> StoreResult<Self> {
        let (sender, receiver) = sync_channel(QUEUE_CAPACITY);
        let committed = Arc::new(AtomicU64::new(0));
        let thread_committed = committed.clone();
        let queue_changed = Arc::new(tokio::sync::Notify::new());
        let thread_queue_changed = queue_changed.clone();
        let thread = std::thread::Builder::new()
            .name("weir-store-writer".into())
            .spawn(move || {
                write_loop(
                    connection,
                    receiver,
                    &thread_committed,
                    &thread_queue_changed,
                )
            })
            .map_err(|error| StoreError::backend("starting the store's writer thread", error))?;
        Ok(Writer {
            queue_changed,
            sender: Mutex::new(Some(sender)),
            thread: Mutex::new(Some(thread)),
            enqueued: AtomicU64::new(0),
            committed,
        })
    }

    /// Queues a write; returns its sequence number (it is committed once
    /// [`committed`](Self::committed) reaches it). Waits while the queue is full.
    pub(crate) fn send(&self, op: WriteOp) -> StoreResult<u64> {
        // Numbered and sent under the lock, so numbers follow the queue's order.
        let sender = self
            .sender
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let sender = sender.as_ref().ok_or_else(writer_gone)?;
        let sequence = self.enqueued.fetch_add(1, Ordering::SeqCst) + 1;
        sender.send((sequence, op)).map_err(|_| writer_gone())?;
        Ok(sequence)
    }

    /// True when every write enqueued so far has been committed.
    pub(crate) fn is_idle(&self) -> bool {
        self.committed.load(Ordering::SeqCst) >= self.enqueued.load(Ordering::SeqCst)
    }

    /// Waits until everything enqueued before this call is committed; reports a write
    /// that failed since the last flush.
    pub(crate) async fn flush(&self) -> StoreResult<()> {
        self.flush_reporting(true).await
    }

    /// Waits until everything enqueued before this call is committed, leaving a failed
    /// write to be reported by the next [`flush`](Self::flush).
    pub(crate) async fn wait(&self) -> StoreResult<()> {
        self.flush_reporting(false).await
    }

    async fn flush_reporting(&self, report: bool) -> StoreResult<()> {
        let (reply, answer) = oneshot::channel();
        self.send(WriteOp::Flush { reply, report })?;
        answer.await.map_err(|_| writer_gone())?
    }

    /// Runs `work` on the writer's connection, in order with the queued writes, inside
    /// the batch's transaction, and returns its answer.
    pub(crate) async fn call<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (reply, answer) = oneshot::channel();
        self.send(WriteOp::Ask(Box::new(PendingAnswer {
            work: Some(work),
            answer: None,
            reply,
        })))?;
        answer.await.map_err(|_| writer_gone())?
    }

    /// Ends the unfinished runs of a selection, answered once the batch committed.
    pub(crate) async fn end_runs(
        &self,
        selection: RunSelection,
        ending: Ending,
    ) -> StoreResult<EndedRuns> {
        let (reply, answer) = oneshot::channel();
        self.send(WriteOp::EndRuns {
            selection,
            ending,
            reply,
        })?;
        answer.await.map_err(|_| writer_gone())?
    }

    /// The sequence number of the last committed write.
    pub(crate) fn committed(&self) -> u64 {
        self.committed.load(Ordering::SeqCst)
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

/// Next sequence numbers of the state history and log lines of runs this writer has
/// seen, so a write does not have to look them up. Forgotten when a run finishes.
#[derive(Default)]
pub(crate) struct Sequences {
    states: HashMap<TaskRunId, i64>,
    logs: HashMap<TaskRunId, i64>,
    /// The runs this batch inserted or updated, logged in one row when it commits (see
    /// `migrations/0006_change_feed.sql`).
    changed: std::collections::BTreeSet<String>,
}

impl Sequences {
    fn next(
        map: &mut HashMap<TaskRunId, i64>,
        connection: &Connection,
        id: &TaskRunId,
        lookup: &str,
        count: i64,
    ) -> StoreResult<i64> {
        let first = match map.get(id) {
            Some(next) => *next,
            // A run from before this writer started (another process, or a resume).
            None => connection
                .prepare_cached(lookup)
                .and_then(|mut statement| statement.query_row([id.as_str()], |row| row.get(0)))
                .map_err(backend("numbering a run's records"))?,
        };
        map.insert(id.clone(), first + count);
        Ok(first)
    }

    fn next_state(
        &mut self,
        connection: &Connection,
        id: &TaskRunId,
        count: i64,
    ) -> StoreResult<i64> {
        Self::next(
            &mut self.states,
            connection,
            id,
            "SELECT coalesce(max(seq), 0) + 1 FROM task_run_states WHERE task_run_id = ?1",
            count,
        )
    }

    fn next_log(
        &mut self,
        connection: &Connection,
        id: &TaskRunId,
        count: i64,
    ) -> StoreResult<i64> {
        Self::next(
            &mut self.logs,
            connection,
            id,
            "SELECT coalesce(max(seq), 0) + 1 FROM logs WHERE task_run_id = ?1",
            count,
        )
    }

    pub(crate) fn forget(&mut self, id: &TaskRunId) {
        self.states.remove(id);
        self.logs.remove(id);
    }
}

fn write_loop(
    mut connection: Connection,
    receiver: Receiver<(u64, WriteOp)>,
    committed: &AtomicU64,
    queue_changed: &tokio::sync::Notify,
) {
    let mut sequences = Sequences::default();
    // The first failure since the last flush, reported to the next flush.
    let mut pending_error: Option<StoreError> = None;
    while let Ok(first) = receiver.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let last_sequence = batch.last().map_or(0, |(sequence, _)| *sequence);
        let queue_ops = batch.iter().any(|(_, op)| {
            matches!(
                op,
                WriteOp::Enqueue { .. } | WriteOp::Requeue { .. } | WriteOp::Fenced { .. }
            )
        });
        let mut flushes = Vec::new();
        let mut answers = Vec::new();
        let outcome = commit_batch(
            &mut connection,
            &mut sequences,
            batch,
            &mut flushes,
            &mut answers,
        );
        let failed = match outcome {
            Ok(()) => None,
            Err(BatchError::Operation(error)) => {
                error.log_failed_write();
                pending_error.get_or_insert(error);
                None
            }
            Err(BatchError::Commit(error)) => {
                let message = error.describe();
                tracing::error!("{message}");
                pending_error.get_or_insert(error);
                Some(message)
            }
        };
        // Answers wait for the commit: an operation the commit lost was not done.
        for answer in answers {
            answer(failed.as_deref());
        }
        committed.store(last_sequence, Ordering::SeqCst);
        if queue_ops {
            // Every waiter now, and a permit for the next (see the PostgreSQL listener).
            queue_changed.notify_waiters();
            queue_changed.notify_one();
        }
        // A failure is reported to the first flush after it, once.
        for (reply, report) in flushes {
            let answer = match report {
                true => pending_error.take().map_or(Ok(()), Err),
                false => Ok(()),
            };
            let _ = reply.send(answer);
        }
    }
}

/// How a batch went wrong: one operation failed (the rest committed), or nothing did.
enum BatchError {
    Operation(StoreError),
    Commit(StoreError),
}

/// Applies a batch in one transaction, each operation in a savepoint of its own: an
/// operation that fails (say, a state change for an unknown run) leaves nothing of itself
/// behind, is reported, and the others still commit.
fn commit_batch(
    connection: &mut Connection,
    sequences: &mut Sequences,
    batch: Vec<(u64, WriteOp)>,
    flushes: &mut Vec<(oneshot::Sender<StoreResult<()>>, bool)>,
    answers: &mut Vec<Deferred>,
) -> Result<(), BatchError> {
    // IMMEDIATE takes the write lock up front, so a read-then-write (a slot count, then
    // the slot) cannot interleave with another process's.
    let transaction =
        match connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
            Ok(transaction) => transaction,
            Err(error) => {
                let error = backend("starting a transaction")(error);
                return Err(unbegun(batch, error, flushes));
            }
        };
    sequences.changed.clear();
    let mut first_error = None;
    for (_, op) in batch {
        if let WriteOp::Flush { reply, report } = op {
            flushes.push((reply, report));
            continue;
        }
        if let Err(error) = savepoint(&transaction, Savepoint::Open) {
            first_error.get_or_insert(error);
            continue;
        }
        let succeeded = match op {
            WriteOp::Flush { .. } => unreachable!("handled above"),
            WriteOp::Call(work) => {
                work(&transaction);
                true
            }
            WriteOp::Ask(mut question) => {
                let succeeded = question.ask(&transaction);
                answers.push(Box::new(move |failed| question.answer(failed)));
                succeeded
            }
            WriteOp::EndRuns {
                selection,
                ending,
                reply,
            } => {
                let answer = end_runs(&transaction, sequences, &selection, &ending);
                let succeeded = answer.is_ok();
                answers.push(Box::new(move |failed| {
                    let answer = match failed {
                        Some(message) => Err(not_committed(message)),
                        None => answer,
                    };
                    let _ = reply.send(answer);
                }));
                succeeded
            }
            op => match apply(&transaction, sequences, op) {
                Ok(()) => true,
                Err(error) => {
                    first_error.get_or_insert(error);
                    false
                }
            },
        };
        let closing = if succeeded {
            Savepoint::Release
        } else {
            Savepoint::RollBack
        };
        if let Err(error) = savepoint(&transaction, closing) {
            first_error.get_or_insert(error);
        }
    }
    // Without its log row the batch would be missing from the feed: all or nothing.
    log_changes(&transaction, sequences).map_err(BatchError::Commit)?;
    transaction
        .commit()
        .map_err(|error| BatchError::Commit(backend("committing writes")(error)))?;
    first_error.map_or(Ok(()), |error| Err(BatchError::Operation(error)))
}

/// Answers every question of a batch that never began with why, and keeps its flushes
/// to be answered after it.
fn unbegun(
    batch: Vec<(u64, WriteOp)>,
    error: StoreError,
    flushes: &mut Vec<(oneshot::Sender<StoreResult<()>>, bool)>,
) -> BatchError {
    let message = error.describe();
    for (_, op) in batch {
        match op {
            WriteOp::Flush { reply, report } => flushes.push((reply, report)),
            WriteOp::Ask(question) => question.answer(Some(&message)),
            WriteOp::EndRuns { reply, .. } => {
                let _ = reply.send(Err(not_committed(&message)));
            }
            _ => {}
        }
    }
    BatchError::Commit(error)
}

/// The steps of one operation's savepoint.
#[derive(Clone, Copy, PartialEq)]
enum Savepoint {
    Open,
    Release,
    RollBack,
}

fn savepoint(transaction: &Connection, step: Savepoint) -> StoreResult<()> {
    let sql = match step {
        Savepoint::Open => "SAVEPOINT operation",
        Savepoint::Release => "RELEASE operation",
        Savepoint::RollBack => "ROLLBACK TO operation",
    };
    transaction
        .prepare_cached(sql)
        .and_then(|mut statement| statement.execute([]))
        .map_err(backend("keeping an operation whole"))?;
    if step == Savepoint::RollBack {
        // ROLLBACK TO keeps the savepoint open; it still has to be released.
        transaction
            .prepare_cached("RELEASE operation")
            .and_then(|mut statement| statement.execute([]))
            .map_err(backend("keeping an operation whole"))?;
    }
    Ok(())
}

/// Notes a run as changed by this batch; the batch logs them all in one row before it
/// commits. (A run of an operation that is then rolled back may be noted too: the feed
/// then returns it unchanged, which is harmless.)
fn log_change(sequences: &mut Sequences, id: &str) {
    if !sequences.changed.contains(id) {
        sequences.changed.insert(id.to_owned());
    }
}

/// The one row of the change log for a batch: its runs' ids, sorted, one per line. One
/// insert per batch costs the writer nothing per run; an index of runs by their last
/// change (or a log row per run) cost a large map ~25 % of its time per task run.
fn log_changes(transaction: &Connection, sequences: &Sequences) -> StoreResult<()> {
    if sequences.changed.is_empty() {
        return Ok(());
    }
    let entry = weir_store::change_log::entry(sequences.changed.iter().map(String::as_str));
    transaction
        .prepare_cached("INSERT INTO run_changes (run_ids) VALUES (?1)")
        .and_then(|mut statement| statement.execute([entry]))
        .map_err(backend("logging the batch's changes"))?;
    Ok(())
}

/// Ends the unfinished runs of a selection, each at its own attempt, and frees the slots
/// their task runs hold (all or nothing: the operation's savepoint).
fn end_runs(
    transaction: &Connection,
    sequences: &mut Sequences,
    selection: &RunSelection,
    ending: &Ending,
) -> StoreResult<EndedRuns> {
    let ids = |sql: &str, key: &str| -> StoreResult<Vec<(String, u32)>> {
        transaction
            .prepare_cached(sql)
            .and_then(|mut statement| {
                statement
                    .query_map([key], |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect::<Result<_, _>>()
            })
            .map_err(backend("finding the runs to end"))
    };
    let (flow_runs, task_runs) = match selection {
        RunSelection::Owner(owner) => {
            // Runs it held from the queue are not ended: their leases run out at once,
            // and the next worker to claim one records the lost attempt and retries it.
            transaction
                .prepare_cached(
                    "UPDATE work_queue SET lease_expires = 0 WHERE worker = ?1 AND done = 0",
                )
                .and_then(|mut statement| statement.execute([owner]))
                .map_err(backend("giving a stopped worker's runs back to the queue"))?;
            (
                ids(
                    "SELECT id, attempts FROM flow_runs WHERE owner = ?1 AND ended IS NULL
                       AND id NOT IN (SELECT run_id FROM work_queue)",
                    owner,
                )?,
                ids(
                    "SELECT id, attempts FROM task_runs WHERE owner = ?1 AND ended IS NULL
                       AND id NOT IN (SELECT run_id FROM work_queue)",
                    owner,
                )?,
            )
        }
        RunSelection::FlowRunTree(root, tenant) => {
            let owned = transaction
                .prepare_cached("SELECT 1 FROM flow_runs WHERE id = ?1 AND tenant = ?2")
                .and_then(|mut statement| statement.exists([root.as_str(), tenant.as_str()]))
                .map_err(backend("finding the runs to end"))?;
            // Another tenant's run is not there to end (its tree is all of one tenant).
            let mut tree = if owned {
                vec![root.to_string()]
            } else {
                Vec::new()
            };
            // The tree's flow runs, breadth first (subflows record their parent).
            let mut next = 0;
            while next < tree.len() {
                let children = ids(
                    "SELECT id, attempts FROM flow_runs WHERE parent_flow_run_id = ?1",
                    &tree[next].clone(),
                )?;
                tree.extend(children.into_iter().map(|(id, _)| id));
                next += 1;
            }
            let mut flow_runs = Vec::new();
            let mut task_runs = Vec::new();
            for id in &tree {
                flow_runs.extend(ids(
                    "SELECT id, attempts FROM flow_runs WHERE id = ?1 AND ended IS NULL",
                    id,
                )?);
                task_runs.extend(ids(
                    "SELECT id, attempts FROM task_runs WHERE flow_run_id = ?1 AND ended IS NULL",
                    id,
                )?);
            }
            (flow_runs, task_runs)
        }
    };
    if let RunSelection::FlowRunTree(..) = selection {
        // Ended runs are no longer waiting for a worker.
        for (id, _) in flow_runs.iter().chain(&task_runs) {
            transaction
                .prepare_cached("DELETE FROM work_queue WHERE run_id = ?1")
                .and_then(|mut statement| statement.execute([id]))
                .map_err(backend("taking ended runs off the queue"))?;
        }
    }
    let mut ended = EndedRuns::default();
    for (id, attempt) in task_runs {
        let id = TaskRunId::from_string(id);
        let change = ending.change(attempt);
        let seq = sequences.next_state(transaction, &id, 1)?;
        sequences.forget(&id);
        finish_task_run(transaction, (&id, seq), &change, None, None)?;
        log_change(sequences, id.as_str());
        transaction
            .prepare_cached("DELETE FROM concurrency_slots WHERE holder = ?1")
            .and_then(|mut statement| statement.execute([id.as_str()]))
            .map_err(backend("freeing the slots of an ended run"))?;
        ended.task_runs.push(id);
    }
    for (id, attempt) in flow_runs {
        let id = FlowRunId::from_string(id);
        let change = ending.change(attempt);
        apply(
            transaction,
            sequences,
            WriteOp::SetFlowRunState {
                id: id.clone(),
                change,
                result: None,
            },
        )?;
        ended.flow_runs.push(id);
    }
    if let RunSelection::Owner(owner) = selection {
        // Its finished runs too: a process killed between finishing a run and
        // releasing its slot leaves the slot behind.
        transaction
            .prepare_cached(
                "DELETE FROM concurrency_slots WHERE holder IN
                   (SELECT t.id FROM concurrency_slots s JOIN task_runs t ON t.id = s.holder WHERE t.owner = ?1)",
            )
            .and_then(|mut statement| statement.execute([owner]))
            .map_err(backend("freeing the slots of a stopped process"))?;
        transaction
            .prepare_cached("DELETE FROM owners WHERE id = ?1")
            .and_then(|mut statement| statement.execute([owner]))
            .and_then(|_| {
                transaction
                    .prepare_cached("DELETE FROM workers WHERE owner = ?1")?
                    .execute([owner])
            })
            .map_err(backend("forgetting a run owner"))?;
    }
    Ok(ended)
}

fn backend(action: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |error| StoreError::backend(action, error)
}

pub(crate) fn apply(
    transaction: &Connection,
    sequences: &mut Sequences,
    op: WriteOp,
) -> StoreResult<()> {
    let changed = match &op {
        WriteOp::CreateTaskRun { run, .. } => Some(run.id.to_string()),
        WriteOp::SetState { id, .. }
        | WriteOp::FinishTaskRun { id, .. }
        | WriteOp::AppendLogs { id, .. } => Some(id.to_string()),
        WriteOp::CreateFlowRun { run, .. } => Some(run.id.to_string()),
        WriteOp::SetFlowRunState { id, .. } => Some(id.to_string()),
        WriteOp::ExplainWaiting { run_id, .. } => Some(run_id.clone()),
        _ => None,
    };
    apply_op(transaction, sequences, op)?;
    if let Some(id) = changed {
        log_change(sequences, &id);
    }
    Ok(())
}

fn apply_op(transaction: &Connection, sequences: &mut Sequences, op: WriteOp) -> StoreResult<()> {
    match op {
        WriteOp::RecordPlugin {
            tenant,
            plugin,
            tasks_json,
        } => {
            transaction
                .prepare_cached(
                    "INSERT OR IGNORE INTO plugins (tenant, digest, name, size, tasks_json, first_seen) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .and_then(|mut statement| {
                    statement.execute(params![
                        tenant.as_str(),
                        plugin.digest.as_str(),
                        plugin.name,
                        plugin.size_bytes as i64,
                        tasks_json,
                        plugin.first_seen.0
                    ])
                })
                .map_err(backend("recording a plugin"))?;
            Ok(())
        }
        WriteOp::CreateTaskRun {
            tenant,
            run,
            input_json,
            tags_json,
            states,
            result,
        } => create_task_run(
            transaction,
            sequences,
            (&tenant, &run),
            (&input_json, &tags_json),
            &states,
            result.as_ref(),
        ),
        WriteOp::SetState { id, change } => {
            let updated = transaction
                .prepare_cached(
                    "UPDATE task_runs SET state = ?2, state_message = ?3, attempts = max(attempts, ?4),
                         started = CASE WHEN ?2 = 'Running' THEN coalesce(started, ?5) ELSE started END
                     WHERE id = ?1",
                )
                .and_then(|mut statement| {
                    statement.execute(params![
                        id.as_str(),
                        change.state.as_str(),
                        change.message,
                        change.attempt,
                        change.at.0
                    ])
                })
                .map_err(backend("updating a task run's state"))?;
            if updated == 0 {
                return Err(StoreError::UnknownTaskRun(id.to_string()));
            }
            let seq = sequences.next_state(transaction, &id, 1)?;
            insert_state(transaction, TASK_RUN_STATE, id.as_str(), Some(seq), &change)
        }
        WriteOp::FinishTaskRun {
            id,
            change,
            result,
            cache,
        } => {
            let seq = sequences.next_state(transaction, &id, 1)?;
            sequences.forget(&id);
            finish_task_run(
                transaction,
                (&id, seq),
                &change,
                result.as_ref(),
                cache.as_ref(),
            )
        }
        WriteOp::AppendLogs { id, lines } => {
            let first_seq = sequences.next_log(transaction, &id, lines.len() as i64)?;
            append_logs(transaction, &id, first_seq, &lines)
        }
        WriteOp::CreateFlowRun {
            tenant,
            run,
            parameters_json,
            states,
        } => {
            let last = states.last().ok_or_else(|| {
                StoreError::backend("creating a flow run", "a flow run needs at least one state")
            })?;
            let started = states
                .iter()
                .find(|change| change.state == State::Running)
                .map(|change| change.at.0);
            transaction
                .prepare_cached(
                    "INSERT INTO flow_runs (id, name, flow, source, parameters_json, parent_flow_run_id, parent_node,
                         state, state_message, attempts, created, started, owner, graph_json, tags_json, tenant)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
                )
                .and_then(|mut statement| {
                    statement.execute(params![
                        run.id.as_str(),
                        run.name,
                        run.flow,
                        run.source,
                        parameters_json,
                        run.parent.as_ref().map(|(parent, _)| parent.as_str()),
                        run.parent.as_ref().map(|(_, node)| node.as_str()),
                        last.state.as_str(),
                        last.message,
                        last.attempt,
                        run.created.0,
                        started,
                        run.owner,
                        weir_store::graph_json(run.graph.as_ref()),
                        weir_store::tags_json(&run.tags),
                        tenant.as_str()
                    ])
                })
                .map_err(backend("creating a flow run"))?;
            for change in &states {
                insert_state(transaction, FLOW_RUN_STATE, run.id.as_str(), None, change)?;
            }
            Ok(())
        }
        WriteOp::SetFlowRunState { id, change, result } => {
            if let Some(result) = &result {
                put_result(transaction, result)?;
            }
            let updated = transaction
                .prepare_cached(
                    "UPDATE flow_runs SET state = ?2, state_message = ?3, attempts = max(attempts, ?4),
                         started = CASE WHEN ?2 = 'Running' THEN coalesce(started, ?5) ELSE started END,
                         ended = CASE WHEN ?6 THEN ?5 ELSE NULL END,
                         result_digest = coalesce(?7, result_digest)
                     WHERE id = ?1",
                )
                .and_then(|mut statement| {
                    statement.execute(params![
                        id.as_str(),
                        change.state.as_str(),
                        change.message,
                        change.attempt,
                        change.at.0,
                        change.state.is_final(),
                        result.as_ref().map(|result| result.digest.as_str())
                    ])
                })
                .map_err(backend("updating a flow run's state"))?;
            if updated == 0 {
                return Err(StoreError::UnknownFlowRun(id.to_string()));
            }
            insert_state(transaction, FLOW_RUN_STATE, id.as_str(), None, &change)
        }
        WriteOp::RecordNodeOutput { id, node, result } => {
            put_result(transaction, &result)?;
            transaction
                .prepare_cached(
                    "INSERT OR REPLACE INTO flow_run_nodes (flow_run_id, node, result_digest) VALUES (?1, ?2, ?3)",
                )
                .and_then(|mut statement| statement.execute(params![id.as_str(), node, result.digest]))
                .map_err(backend("recording a node's output"))?;
            Ok(())
        }
        WriteOp::Fenced { fence, op } => {
            crate::queue::apply_fenced(transaction, sequences, &fence, *op)
        }
        WriteOp::Enqueue { create, row, fence } => {
            crate::queue::apply_enqueue(transaction, sequences, *create, &row, fence.as_ref())
        }
        WriteOp::Requeue {
            fence,
            ready_at,
            lost_from,
        } => crate::queue::apply_requeue(transaction, &fence, ready_at, lost_from.as_ref()),
        WriteOp::ExplainWaiting {
            run_id,
            kind,
            message,
        } => crate::queue::apply_explain_waiting(transaction, &run_id, kind, &message),
        WriteOp::Call(_) | WriteOp::Ask(_) | WriteOp::Flush { .. } | WriteOp::EndRuns { .. } => {
            unreachable!("handled by commit_batch")
        }
    }
}

fn put_result(transaction: &Connection, result: &PreparedResult) -> StoreResult<()> {
    transaction
        .prepare_cached(
            "INSERT OR IGNORE INTO results (digest, size, inline_json) VALUES (?1, ?2, ?3)",
        )
        .and_then(|mut statement| {
            statement.execute(params![result.digest, result.size as i64, result.inline])
        })
        .map_err(backend("storing a result"))?;
    Ok(())
}

const TASK_RUN_STATE: &str =
    "INSERT INTO task_run_states (task_run_id, seq, state, message, attempt, at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
/// Flow runs change state rarely, so their sequence numbers are looked up (`?2` is NULL).
const FLOW_RUN_STATE: &str = "INSERT INTO flow_run_states (flow_run_id, seq, state, message, attempt, at)
     VALUES (?1, coalesce(?2, (SELECT coalesce(max(seq), 0) + 1 FROM flow_run_states WHERE flow_run_id = ?1)), ?3, ?4, ?5, ?6)";

/// Appends a state change to a history table (`TASK_RUN_STATE` or `FLOW_RUN_STATE`).
fn insert_state(
    transaction: &Connection,
    sql: &str,
    id: &str,
    seq: Option<i64>,
    change: &StateChange,
) -> StoreResult<()> {
    transaction
        .prepare_cached(sql)
        .and_then(|mut statement| {
            statement.execute(params![
                id,
                seq,
                change.state.as_str(),
                change.message,
                change.attempt,
                change.at.0
            ])
        })
        .map_err(backend("recording a state change"))?;
    Ok(())
}

fn create_task_run(
    transaction: &Connection,
    sequences: &mut Sequences,
    (tenant, run): (&TenantId, &NewTaskRun),
    (input_json, tags_json): (&str, &str),
    states: &[StateChange],
    result: Option<&PreparedResult>,
) -> StoreResult<()> {
    let last = states.last().ok_or_else(|| {
        StoreError::backend("creating a task run", "a task run needs at least one state")
    })?;
    let started = states
        .iter()
        .find(|change| change.state == State::Running)
        .map(|change| change.at.0);
    let ended = last.state.is_final().then_some(last.at.0);
    if let Some(result) = result {
        put_result(transaction, result)?;
    }
    transaction
        .prepare_cached(
            "INSERT INTO task_runs (id, name, task, plugin_name, plugin_digest, flow_run_id, state, state_message,
                 attempts, input_json, tags_json, result_digest, created, started, ended, node, map_index, owner, tenant)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                run.id.as_str(),
                run.name,
                run.task,
                run.plugin_name,
                run.plugin_digest.as_str(),
                run.flow_run_id.as_ref().map(FlowRunId::as_str),
                last.state.as_str(),
                last.message,
                last.attempt,
                input_json,
                tags_json,
                result.map(|result| result.digest.as_str()),
                run.created.0,
                started,
                ended,
                run.node,
                run.map_index,
                run.owner,
                tenant.as_str()
            ])
        })
        .map_err(backend("creating a task run"))?;
    let first_seq = sequences.next_state(transaction, &run.id, states.len() as i64)?;
    for (seq, change) in (first_seq..).zip(states) {
        insert_state(
            transaction,
            TASK_RUN_STATE,
            run.id.as_str(),
            Some(seq),
            change,
        )?;
    }
    if ended.is_some() {
        sequences.forget(&run.id);
    }
    Ok(())
}

/// `(id, seq)`: the run and its state's sequence number.
fn finish_task_run(
    transaction: &Connection,
    (id, seq): (&TaskRunId, i64),
    change: &StateChange,
    result: Option<&PreparedResult>,
    cache: Option<&CacheEntryDraft>,
) -> StoreResult<()> {
    if let Some(result) = result {
        put_result(transaction, result)?;
    }
    let updated = transaction
        .prepare_cached(
            "UPDATE task_runs SET state = ?2, state_message = ?3, attempts = max(attempts, ?4), ended = ?5,
                 result_digest = ?6, cache_key = ?7
             WHERE id = ?1",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                id.as_str(),
                change.state.as_str(),
                change.message,
                change.attempt,
                change.at.0,
                result.map(|result| result.digest.as_str()),
                cache.map(|cache| cache.key.as_str())
            ])
        })
        .map_err(backend("finishing a task run"))?;
    if updated == 0 {
        return Err(StoreError::UnknownTaskRun(id.to_string()));
    }
    insert_state(transaction, TASK_RUN_STATE, id.as_str(), Some(seq), change)?;
    if let (Some(cache), Some(result)) = (cache, result) {
        transaction
            .prepare_cached(
                // The entry is the run's tenant's.
                "INSERT OR REPLACE INTO cache_entries (tenant, key, task, plugin_digest, result_digest, task_run_id, created, expires)
                 SELECT tenant, ?1, ?2, ?3, ?4, ?5, ?6, ?7 FROM task_runs WHERE id = ?5",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    cache.key.as_str(),
                    cache.task,
                    cache.plugin_digest.as_str(),
                    result.digest,
                    id.as_str(),
                    change.at.0,
                    cache.expires.map(|expires| expires.0)
                ])
            })
            .map_err(backend("writing a cache entry"))?;
    }
    Ok(())
}

fn append_logs(
    transaction: &Connection,
    id: &TaskRunId,
    first_seq: i64,
    lines: &[LogRecord],
) -> StoreResult<()> {
    let mut statement = transaction
        .prepare_cached(
            "INSERT INTO logs (task_run_id, seq, at, level, message) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(backend("preparing a log insert"))?;
    for (seq, line) in (first_seq..).zip(lines) {
        statement
            .execute(params![
                id.as_str(),
                seq,
                line.at.0,
                line.level.as_str(),
                line.message
            ])
            .map_err(backend("writing a log line"))?;
    }
    Ok(())
}

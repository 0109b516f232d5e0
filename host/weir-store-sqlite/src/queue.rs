//! The work queue on SQLite: the writer thread is the only writer of every process's
//! store (SQLite's write lock), so a claim is a read-then-update in one IMMEDIATE
//! transaction, which is what `FOR UPDATE SKIP LOCKED` gives on PostgreSQL.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use std::sync::Arc;
use weir_core::{FlowRunId, State, TenantId, Timestamp};
use weir_store::queue_columns::{tag_pattern, tags_column, tags_from_column};
use weir_store::{
    Claim, ClaimTimes, Fence, Finished, NewWork, NewWorkRun, Queue, Recorder, Requirements, Room,
    SlotRequest, StoreError, StoreResult, TenantSettings, Waiting, WorkKind, WorkRecord,
    WorkerOffer, WorkerRecord,
};

use crate::recorder::FencedRecorder;
use crate::rows::{TASK_RUN_COLUMNS, task_run_from_row};
use crate::writer::{Sequences, WriteOp, apply};
use crate::{SqliteStore, backend};

/// A queue row as the writer inserts it.
pub(crate) struct QueueRow {
    run_id: String,
    tenant: weir_core::TenantId,
    priority: i32,
    memory_bytes: Option<u64>,
    kind: WorkKind,
    parent: Option<String>,
    spec: String,
    tags: String,
    requirements: String,
    ready_at: Timestamp,
    created: Timestamp,
}

/// Refuses a write whose fence no longer holds: the row is gone, finished, or claimed
/// again since (a newer generation).
pub(crate) fn check_fence(transaction: &Connection, fence: &Fence) -> StoreResult<()> {
    let row: Option<(i64, bool)> = transaction
        .prepare_cached("SELECT generation, done FROM work_queue WHERE run_id = ?1")
        .and_then(|mut statement| {
            statement
                .query_row([&fence.run_id], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()
        })
        .map_err(backend("checking a lease"))?;
    match row {
        Some((generation, false)) if generation == fence.generation => Ok(()),
        _ => Err(StoreError::LeaseLost {
            run_id: fence.run_id.clone(),
            generation: fence.generation,
        }),
    }
}

/// Ends a row's lease once its run ended: done (for the flow run that waits for it to
/// collect) or, when nothing waits, gone; and the slots its task run held are freed.
fn release(transaction: &Connection, run_id: &str) -> StoreResult<()> {
    transaction
        .prepare_cached("DELETE FROM work_queue WHERE run_id = ?1 AND parent_flow_run_id IS NULL")
        .and_then(|mut statement| statement.execute([run_id]))
        .and_then(|_| {
            transaction
                .prepare_cached(
                    "UPDATE work_queue SET done = 1, worker = NULL, worker_name = NULL, lease_expires = NULL
                     WHERE run_id = ?1",
                )?
                .execute([run_id])
        })
        .and_then(|_| {
            transaction
                .prepare_cached("DELETE FROM concurrency_slots WHERE holder = ?1")?
                .execute([run_id])
        })
        .map_err(backend("releasing a finished run's lease"))?;
    Ok(())
}

/// The task run an operation writes, whose numbering this writer must not remember: the
/// run's history is written by whichever worker holds it, process after process.
fn task_run_of(op: &WriteOp) -> Option<&weir_core::TaskRunId> {
    match op {
        WriteOp::SetState { id, .. }
        | WriteOp::FinishTaskRun { id, .. }
        | WriteOp::AppendLogs { id, .. } => Some(id),
        WriteOp::CreateTaskRun { run, .. } => Some(&run.id),
        _ => None,
    }
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

pub(crate) fn apply_fenced(
    transaction: &Connection,
    sequences: &mut Sequences,
    fence: &Fence,
    op: WriteOp,
) -> StoreResult<()> {
    check_fence(transaction, fence)?;
    let run = task_run_of(&op).cloned();
    if let Some(run) = &run {
        sequences.forget(run);
    }
    let ends = ends_fenced_run(&op, fence);
    apply(transaction, sequences, op)?;
    if let Some(run) = &run {
        sequences.forget(run);
    }
    if ends {
        release(transaction, &fence.run_id)?;
    }
    Ok(())
}

pub(crate) fn apply_enqueue(
    transaction: &Connection,
    sequences: &mut Sequences,
    create: WriteOp,
    row: &QueueRow,
    fence: Option<&Fence>,
) -> StoreResult<()> {
    if let Some(fence) = fence {
        check_fence(transaction, fence)?;
    }
    let run = task_run_of(&create).cloned();
    apply(transaction, sequences, create)?;
    if let Some(run) = &run {
        sequences.forget(run);
    }
    transaction
        .prepare_cached(
            "INSERT INTO work_queue (run_id, kind, parent_flow_run_id, spec, tags, requirements, ready_at, created, tenant,
                 priority, memory_bytes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                row.run_id,
                row.kind.as_str(),
                row.parent,
                row.spec,
                row.tags,
                row.requirements,
                row.ready_at.0,
                row.created.0,
                row.tenant.as_str(),
                row.priority,
                row.memory_bytes.map(|memory| memory as i64)
            ])
        })
        .map_err(backend("queueing a run"))?;
    Ok(())
}

pub(crate) fn apply_requeue(
    transaction: &Connection,
    fence: &Fence,
    ready_at: Timestamp,
    lost_from: Option<&(String, String)>,
) -> StoreResult<()> {
    check_fence(transaction, fence)?;
    let (name, worker) = lost_from.cloned().unzip();
    transaction
        .prepare_cached(
            "UPDATE work_queue SET worker = ?3, worker_name = ?4,
                 lease_expires = CASE WHEN ?3 IS NULL THEN NULL ELSE 0 END, ready_at = ?2
             WHERE run_id = ?1",
        )
        .and_then(|mut statement| {
            statement.execute(params![fence.run_id, ready_at.0, worker, name])
        })
        .and_then(|_| {
            transaction
                .prepare_cached("DELETE FROM concurrency_slots WHERE holder = ?1")?
                .execute([&fence.run_id])
        })
        .map_err(backend("giving a run back to the queue"))?;
    Ok(())
}

pub(crate) fn apply_explain_waiting(
    transaction: &Connection,
    run_id: &str,
    kind: WorkKind,
    message: &str,
) -> StoreResult<()> {
    let sql = match kind {
        WorkKind::Task => {
            "UPDATE task_runs SET state_message = ?2 WHERE id = ?1 AND state = 'Pending'
               AND EXISTS (SELECT 1 FROM work_queue WHERE run_id = ?1 AND worker IS NULL AND done = 0)
               AND state_message IS NOT ?2"
        }
        WorkKind::Flow => {
            "UPDATE flow_runs SET state_message = ?2 WHERE id = ?1 AND state = 'Pending'
               AND EXISTS (SELECT 1 FROM work_queue WHERE run_id = ?1 AND worker IS NULL AND done = 0)
               AND state_message IS NOT ?2"
        }
    };
    transaction
        .prepare_cached(sql)
        .and_then(|mut statement| statement.execute(params![run_id, message]))
        .map_err(backend("saying why a run waits"))?;
    Ok(())
}

/// The columns [`work_record`] reads.
const WORK_COLUMNS: &str =
    "run_id, kind, parent_flow_run_id, tags, requirements, ready_at, created, generation,
     worker, worker_name, lease_expires, done, tenant";

fn work_record(row: &rusqlite::Row) -> rusqlite::Result<WorkRecord> {
    let kind: String = row.get(1)?;
    let tags: String = row.get(3)?;
    let requirements: String = row.get(4)?;
    Ok(WorkRecord {
        run_id: row.get(0)?,
        kind: WorkKind::parse(&kind).unwrap_or(WorkKind::Task),
        parent: row.get::<_, Option<String>>(2)?.map(FlowRunId::from_string),
        tags: tags_from_column(&tags),
        requirements: Requirements::from_key(&requirements),
        ready_at: Timestamp(row.get(5)?),
        created: Timestamp(row.get(6)?),
        generation: row.get(7)?,
        worker: row.get(8)?,
        worker_name: row.get(9)?,
        lease_expires: row.get::<_, Option<i64>>(10)?.map(Timestamp),
        done: row.get(11)?,
        tenant: weir_core::TenantId::from_stored(row.get::<_, String>(12)?),
    })
}

/// The conditions a claim puts on rows of one kind and one tenant, with their values
/// (`?1` is now).
fn claimable(
    offer: &WorkerOffer,
    times: ClaimTimes,
    kind: WorkKind,
    tenant: &TenantId,
) -> (String, Vec<rusqlite::types::Value>) {
    let mut sql = String::from(
        "done = 0 AND kind = ?2 AND tenant = ?3 AND ready_at <= ?1
         AND (worker IS NULL OR lease_expires <= ?1)",
    );
    let mut values: Vec<rusqlite::types::Value> = vec![
        times.now.0.into(),
        kind.as_str().to_owned().into(),
        tenant.as_str().to_owned().into(),
    ];
    let placeholder = |values: &mut Vec<rusqlite::types::Value>, value: String| {
        values.push(value.into());
        format!("?{}", values.len())
    };
    // Tags route task runs; any worker that drives flows drives any flow run.
    if kind == WorkKind::Task && !offer.tags.is_empty() {
        let patterns: Vec<String> = offer
            .tags
            .iter()
            .map(|tag| {
                let slot = placeholder(&mut values, tag_pattern(tag));
                format!("tags LIKE {slot} ESCAPE '\\'")
            })
            .collect();
        sql.push_str(&format!(" AND ({})", patterns.join(" OR ")));
    }
    for key in &offer.unservable {
        let slot = placeholder(&mut values, key.clone());
        sql.push_str(&format!(" AND requirements != {slot}"));
    }
    for run in &offer.holding {
        let slot = placeholder(&mut values, run.clone());
        sql.push_str(&format!(" AND run_id != {slot}"));
    }
    (sql, values)
}

/// A tenant with rows of `kind` a claim could take, and how its quotas bound the claim.
struct TenantWaiting {
    waiting: Waiting,
    settings: TenantSettings,
    /// Memory its claimed task runs may still add (None: no bound).
    memory_room: Option<u64>,
}

/// The tenants with unfinished rows of `kind` (each found with one step of the index),
/// how many rows each has ready (up to `room`), and how much of that their quotas let a
/// claim take.
fn waiting_tenants(
    connection: &Connection,
    offer: &WorkerOffer,
    times: ClaimTimes,
    kind: WorkKind,
    room: usize,
) -> rusqlite::Result<Vec<TenantWaiting>> {
    let mut found = Vec::new();
    let mut after = String::new();
    loop {
        let next: Option<String> = connection
            .prepare_cached(
                "SELECT tenant FROM work_queue WHERE done = 0 AND kind = ?1 AND tenant > ?2
                 ORDER BY tenant LIMIT 1",
            )?
            .query_row(params![kind.as_str(), after], |row| row.get(0))
            .optional()?;
        let Some(name) = next else { break };
        after.clone_from(&name);
        let tenant = TenantId::from_stored(name);
        let (weight, settings) = connection
            .prepare_cached("SELECT weight, settings_json FROM tenants WHERE name = ?1")?
            .query_row([tenant.as_str()], |row| {
                Ok((
                    row.get::<_, u32>(0)?,
                    TenantSettings::from_json(&row.get::<_, String>(1)?),
                ))
            })
            .optional()?
            .unwrap_or((1, TenantSettings::default()));
        let quotas = &settings.quotas;
        let (conditions, values) = claimable(offer, times, kind, &tenant);
        let mut ready: usize = connection
            .prepare(&format!(
                "SELECT count(*) FROM (SELECT 1 FROM work_queue WHERE {conditions} LIMIT {room})"
            ))?
            .query_row(params_from_iter(values), |row| row.get::<_, i64>(0))?
            as usize;
        let mut memory_room = None;
        let bounded =
            quotas.task_runs_in_progress.is_some() || quotas.memory_in_flight_bytes.is_some();
        if kind == WorkKind::Task && bounded {
            let (held, memory): (i64, i64) = connection
                .prepare_cached(
                    "SELECT count(*), coalesce(sum(memory_bytes), 0) FROM work_queue
                     WHERE tenant = ?1 AND worker IS NOT NULL AND done = 0 AND kind = 'task'
                       AND lease_expires > ?2",
                )?
                .query_row(params![tenant.as_str(), times.now.0], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })?;
            if let Some(limit) = quotas.task_runs_in_progress {
                ready = ready.min((limit as usize).saturating_sub(held as usize));
            }
            memory_room = quotas
                .memory_in_flight_bytes
                .map(|limit| limit.saturating_sub(memory as u64));
        }
        found.push(TenantWaiting {
            waiting: Waiting {
                tenant,
                weight,
                ready,
            },
            settings: settings.clone(),
            memory_room,
        });
    }
    Ok(found)
}

/// Claims up to `limit` rows of one kind of one tenant on the writer's connection (see
/// [`Queue::claim`]), its priority first, then oldest first; a task run whose memory
/// would pass `memory_room` is passed by.
fn claim_rows(
    connection: &Connection,
    offer: &WorkerOffer,
    times: ClaimTimes,
    kind: WorkKind,
    tenant: &TenantWaiting,
    limit: usize,
) -> rusqlite::Result<Vec<Claim>> {
    let (conditions, values) = claimable(offer, times, kind, &tenant.waiting.tenant);
    // Some rows may be skipped for full tag limits or memory: look a little further.
    let sql = format!(
        "SELECT run_id, kind, parent_flow_run_id, spec, tags, requirements, generation, worker,
                worker_name, created, tenant, memory_bytes
         FROM work_queue WHERE {conditions}
         ORDER BY priority DESC, ready_at, created LIMIT {}",
        limit.saturating_mul(4).max(16)
    );
    let mut memory_room = tenant.memory_room;
    let candidates: Vec<(Option<u64>, Claim)> = {
        let mut statement = connection.prepare(&sql)?;
        let rows = statement.query_map(params_from_iter(values), |row| {
            let kind: String = row.get(1)?;
            let tags: String = row.get(4)?;
            let requirements: String = row.get(5)?;
            let worker: Option<String> = row.get(7)?;
            let worker_name: Option<String> = row.get(8)?;
            let memory: Option<i64> = row.get(11)?;
            Ok((
                memory.map(|memory| memory as u64),
                Claim {
                    run_id: row.get(0)?,
                    tenant: TenantId::from_stored(row.get::<_, String>(10)?),
                    settings: tenant.settings.clone(),
                    kind: WorkKind::parse(&kind).unwrap_or(WorkKind::Task),
                    parent: row.get::<_, Option<String>>(2)?.map(FlowRunId::from_string),
                    spec: row.get(3)?,
                    tags: tags_from_column(&tags),
                    requirements: Requirements::from_key(&requirements),
                    fence: Fence {
                        run_id: String::new(),
                        generation: row.get(6)?,
                    },
                    lost_from: worker.map(|worker| (worker_name.unwrap_or_default(), worker)),
                    created: Timestamp(row.get(9)?),
                    task_run: None,
                },
            ))
        })?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut claimed = Vec::new();
    for (memory, mut claim) in candidates {
        if claimed.len() >= limit {
            break;
        }
        if let (Some(room), Some(memory)) = (memory_room, memory) {
            if memory > room {
                continue;
            }
            memory_room = Some(room - memory);
        }
        if claim.kind == WorkKind::Task && !claim.tags.is_empty() {
            let slots = crate::leases::take_slots(
                connection,
                (&claim.tenant, &claim.tags),
                &claim.run_id,
                times.now,
                times.lease_until,
            )?;
            if slots != SlotRequest::Granted {
                continue;
            }
        }
        claim.fence = Fence {
            run_id: claim.run_id.clone(),
            generation: claim.fence.generation + 1,
        };
        connection
            .prepare_cached(
                "UPDATE work_queue SET generation = ?2, worker = ?3, worker_name = ?4, lease_expires = ?5
                 WHERE run_id = ?1",
            )?
            .execute(params![
                claim.run_id,
                claim.fence.generation,
                offer.worker,
                offer.name,
                times.lease_until.0
            ])?;
        let owner_update = match claim.kind {
            WorkKind::Task => "UPDATE task_runs SET owner = ?2 WHERE id = ?1",
            WorkKind::Flow => "UPDATE flow_runs SET owner = ?2 WHERE id = ?1",
        };
        connection
            .prepare_cached(owner_update)?
            .execute(params![claim.run_id, offer.worker])?;
        if claim.kind == WorkKind::Task {
            claim.task_run = connection
                .prepare_cached(&format!(
                    "SELECT {TASK_RUN_COLUMNS} FROM task_runs WHERE id = ?1"
                ))?
                .query_row([&claim.run_id], task_run_from_row)
                .optional()?;
        }
        claimed.push(claim);
    }
    Ok(claimed)
}

fn collect_rows(connection: &Connection, parent: &str) -> rusqlite::Result<Vec<Finished>> {
    let finished: Vec<Finished> = {
        let mut statement = connection.prepare_cached(
            "SELECT q.run_id, q.kind, coalesce(t.name, f.name), coalesce(t.state, f.state),
                    coalesce(t.state_message, f.state_message), coalesce(t.result_digest, f.result_digest),
                    coalesce(t.attempts, f.attempts), r.inline_json
             FROM work_queue q
             LEFT JOIN task_runs t ON q.kind = 'task' AND t.id = q.run_id
             LEFT JOIN flow_runs f ON q.kind = 'flow' AND f.id = q.run_id
             LEFT JOIN results r ON r.digest = coalesce(t.result_digest, f.result_digest)
             WHERE q.parent_flow_run_id = ?1 AND q.done = 1",
        )?;
        let rows = statement.query_map([parent], |row| {
            let kind: String = row.get(1)?;
            let state: Option<String> = row.get(3)?;
            Ok(Finished {
                run_id: row.get(0)?,
                kind: WorkKind::parse(&kind).unwrap_or(WorkKind::Task),
                name: row.get::<_, Option<String>>(2)?.unwrap_or_default(),
                // A run whose record is missing cannot have ended well.
                state: state
                    .and_then(|state| state.parse().ok())
                    .unwrap_or(State::Crashed),
                message: row.get(4)?,
                result_digest: row.get(5)?,
                attempts: row.get::<_, Option<u32>>(6)?.unwrap_or(0),
                inline_result: row.get(7)?,
            })
        })?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    if !finished.is_empty() {
        connection
            .prepare_cached("DELETE FROM work_queue WHERE parent_flow_run_id = ?1 AND done = 1")?
            .execute([parent])?;
    }
    Ok(finished)
}

/// Other processes sharing the file cannot wake this one: waits are short polls, cut
/// short by this process's own commits that change the queue.
const POLL: std::time::Duration = std::time::Duration::from_millis(20);

impl SqliteStore {
    async fn wait_for_queue(&self, timeout: std::time::Duration) {
        tokio::select! {
            _ = self.shared.writer.queue_changed.notified() => {}
            _ = tokio::time::sleep(timeout.min(POLL)) => {}
        }
    }

    fn queue_row(&self, work: &NewWork) -> QueueRow {
        let created = match &work.run {
            NewWorkRun::Task { run, .. } => run.created,
            NewWorkRun::Flow { run, .. } => run.created,
        };
        QueueRow {
            run_id: work.run_id().to_owned(),
            tenant: self.tenant.clone(),
            priority: work.priority,
            memory_bytes: work.memory_bytes,
            kind: work.kind(),
            parent: work.parent().map(|parent| parent.to_string()),
            spec: work.spec.clone(),
            tags: tags_column(&work.tags),
            requirements: work.requirements.key(),
            ready_at: work.ready_at,
            created,
        }
    }
}

#[async_trait]
impl Queue for SqliteStore {
    fn enqueue(&self, work: &NewWork, fence: Option<&Fence>) -> StoreResult<()> {
        let create = match &work.run {
            NewWorkRun::Task { run, states } => WriteOp::CreateTaskRun {
                tenant: self.tenant.clone(),
                run: run.clone(),
                input_json: run.input.to_string(),
                tags_json: serde_json::Value::from(run.tags.clone()).to_string(),
                states: states.clone(),
                result: None,
            },
            NewWorkRun::Flow { run, states } => WriteOp::CreateFlowRun {
                tenant: self.tenant.clone(),
                run: run.clone(),
                parameters_json: run.parameters.to_string(),
                states: states.clone(),
            },
        };
        self.shared.writer.send(WriteOp::Enqueue {
            create: Box::new(create),
            row: self.queue_row(work),
            fence: fence.cloned(),
        })?;
        Ok(())
    }

    async fn claim(
        &self,
        offer: &WorkerOffer,
        times: ClaimTimes,
        room: Room,
    ) -> StoreResult<Vec<Claim>> {
        if room.is_empty() {
            return Ok(Vec::new());
        }
        let offer = offer.clone();
        let fair = self.shared.fair.clone();
        self.shared
            .writer
            .call(move |connection| {
                let mut claimed = Vec::new();
                for kind in [WorkKind::Task, WorkKind::Flow] {
                    let room = room.of(kind);
                    if room == 0 {
                        continue;
                    }
                    let claim_kind = || -> rusqlite::Result<Vec<Claim>> {
                        let waiting = waiting_tenants(connection, &offer, times, kind, room)?;
                        let list: Vec<Waiting> = waiting
                            .iter()
                            .map(|tenant| tenant.waiting.clone())
                            .collect();
                        let mut claimed = Vec::new();
                        for (name, count) in fair.shares(kind, &list, room) {
                            let Some(tenant) =
                                waiting.iter().find(|tenant| tenant.waiting.tenant == name)
                            else {
                                continue;
                            };
                            let rows = claim_rows(connection, &offer, times, kind, tenant, count)?;
                            fair.claimed(kind, &name, tenant.waiting.weight, rows.len());
                            claimed.extend(rows);
                        }
                        Ok(claimed)
                    };
                    claimed.extend(claim_kind().map_err(backend("claiming queued runs"))?);
                }
                Ok(claimed)
            })
            .await
    }

    async fn renew_leases(&self, worker: &str, until: Timestamp) -> StoreResult<Vec<Fence>> {
        let worker = worker.to_owned();
        let now = Timestamp::from_system_time(std::time::SystemTime::now());
        self.shared
            .writer
            .call(move |connection| {
                let renew = || -> rusqlite::Result<Vec<Fence>> {
                    connection
                        .prepare_cached(
                            "UPDATE concurrency_slots SET expires = ?2 WHERE holder IN
                               (SELECT run_id FROM work_queue WHERE worker = ?1 AND done = 0)",
                        )?
                        .execute(params![worker, until.0])?;
                    connection
                        .prepare_cached("UPDATE workers SET heartbeat = ?2 WHERE owner = ?1")?
                        .execute(params![worker, now.0])?;
                    let mut statement = connection.prepare_cached(
                        "UPDATE work_queue SET lease_expires = ?2 WHERE worker = ?1 AND done = 0
                         RETURNING run_id, generation",
                    )?;
                    let rows = statement.query_map(params![worker, until.0], |row| {
                        Ok(Fence {
                            run_id: row.get(0)?,
                            generation: row.get(1)?,
                        })
                    })?;
                    rows.collect()
                };
                renew().map_err(backend("renewing leases"))
            })
            .await
    }

    fn requeue(&self, fence: &Fence, ready_at: Timestamp) -> StoreResult<()> {
        self.shared.writer.send(WriteOp::Requeue {
            fence: fence.clone(),
            ready_at,
            lost_from: None,
        })?;
        Ok(())
    }

    fn unclaim(&self, claim: &Claim) -> StoreResult<()> {
        self.shared.writer.send(WriteOp::Requeue {
            fence: claim.fence.clone(),
            ready_at: Timestamp(0),
            lost_from: claim.lost_from.clone(),
        })?;
        Ok(())
    }

    async fn collect(
        &self,
        parent: &FlowRunId,
        fence: Option<&Fence>,
    ) -> StoreResult<Vec<Finished>> {
        let parent = parent.to_string();
        let fence = fence.cloned();
        self.shared
            .writer
            .call(move |connection| {
                if let Some(fence) = &fence {
                    check_fence(connection, fence)?;
                }
                collect_rows(connection, &parent).map_err(backend("collecting finished runs"))
            })
            .await
    }

    async fn work(&self, limit: usize) -> StoreResult<Vec<WorkRecord>> {
        let connection = self.read().await?;
        let mut statement = connection
            .prepare_cached(&format!(
                "SELECT {WORK_COLUMNS} FROM work_queue ORDER BY created, run_id LIMIT ?1"
            ))
            .map_err(backend("listing the queue"))?;
        let rows = statement
            .query_map([limit as i64], work_record)
            .map_err(backend("listing the queue"))?;
        rows.collect::<Result<_, _>>()
            .map_err(backend("listing the queue"))
    }

    async fn register_worker(&self, worker: &WorkerRecord) -> StoreResult<()> {
        let worker = worker.clone();
        let offer = serde_json::to_string(&worker.offer)
            .map_err(|error| StoreError::backend("recording a worker", error))?;
        self.shared.writer
            .call(move |connection| {
                connection
                    .execute(
                        "INSERT OR REPLACE INTO workers (owner, name, offer_json, started, heartbeat)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![
                            worker.owner,
                            worker.name,
                            offer,
                            worker.started.0,
                            worker.heartbeat.0
                        ],
                    )
                    .map_err(backend("recording a worker"))?;
                Ok(())
            })
            .await
    }

    async fn workers(&self) -> StoreResult<Vec<WorkerRecord>> {
        let connection = self.read().await?;
        let mut statement = connection
            .prepare_cached(
                "SELECT owner, name, offer_json, started, heartbeat FROM workers ORDER BY started",
            )
            .map_err(backend("listing workers"))?;
        let rows = statement
            .query_map([], |row| {
                let offer: String = row.get(2)?;
                Ok(WorkerRecord {
                    owner: row.get(0)?,
                    name: row.get(1)?,
                    offer: serde_json::from_str(&offer).unwrap_or_default(),
                    started: Timestamp(row.get(3)?),
                    heartbeat: Timestamp(row.get(4)?),
                })
            })
            .map_err(backend("listing workers"))?;
        rows.collect::<Result<_, _>>()
            .map_err(backend("listing workers"))
    }

    fn explain_waiting(&self, run_id: &str, kind: WorkKind, message: &str) -> StoreResult<()> {
        self.shared.writer.send(WriteOp::ExplainWaiting {
            run_id: run_id.to_owned(),
            kind,
            message: message.to_owned(),
        })?;
        Ok(())
    }

    async fn wait_for_work(&self, timeout: std::time::Duration) {
        self.wait_for_queue(timeout).await;
    }

    async fn wait_for_done(&self, _parent: &FlowRunId, timeout: std::time::Duration) {
        self.wait_for_queue(timeout).await;
    }

    fn fenced(self: Arc<Self>, fence: Fence) -> Arc<dyn Recorder> {
        Arc::new(FencedRecorder { store: self, fence })
    }
}

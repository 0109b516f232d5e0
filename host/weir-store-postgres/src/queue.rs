//! The work queue on PostgreSQL: workers claim rows with `FOR UPDATE SKIP LOCKED`, so
//! any number of them claim at once without waiting for each other or taking a row
//! twice; a fenced write locks its row (`FOR NO KEY UPDATE`), so a claim passes it by
//! until the write commits.

use async_trait::async_trait;
use std::sync::Arc;
use weir_core::{FlowRunId, State, TenantId, Timestamp};
use weir_store::queue_columns::{tag_pattern, tags_column, tags_from_column};
use weir_store::{
    Claim, ClaimTimes, Fence, Finished, NewWork, NewWorkRun, Queue, Recorder, Requirements, Room,
    SlotRequest, StoreError, StoreResult, TenantSettings, Waiting, WorkKind, WorkRecord,
    WorkerOffer, WorkerRecord,
};

use crate::recorder::FencedRecorder;
use crate::rows::TASK_RUN_COLUMNS;
use crate::writer::{Param, WriteOp, text};
use crate::{PostgresStore, backend};

/// The channel a commit that queues work (or gives it back) notifies.
pub(crate) const WORK_CHANNEL: &str = "weir_work";
/// The channel a commit that ends queued runs notifies.
pub(crate) const DONE_CHANNEL: &str = "weir_done";
/// Waits are short polls while the listening connection is not up.
const POLL: std::time::Duration = std::time::Duration::from_millis(20);
/// The longest a wait lasts even with notifications: one missed between a claim and the
/// wait that follows costs at most this.
const MAX_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// Notifications from the server (LISTEN on a connection of their own), turned into
/// wake-ups of this process's idle workers and waiting drivers.
pub(crate) struct Wakeups {
    config: tokio_postgres::Config,
    shared: Arc<Wake>,
    listener: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[derive(Default)]
struct Wake {
    work: tokio::sync::Notify,
    done: tokio::sync::Notify,
    listening: std::sync::atomic::AtomicBool,
}

impl Wakeups {
    pub(crate) fn new(config: tokio_postgres::Config) -> Self {
        Wakeups {
            config,
            shared: Arc::new(Wake::default()),
            listener: std::sync::Mutex::new(None),
        }
    }

    fn start(&self) {
        let mut listener = self
            .listener
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if listener.is_none() {
            *listener = Some(tokio::spawn(listen(
                self.config.clone(),
                self.shared.clone(),
            )));
        }
    }

    pub(crate) fn stop(&self) {
        if let Some(listener) = self
            .listener
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
        {
            listener.abort();
        }
    }

    async fn wait(&self, done: bool, timeout: std::time::Duration) {
        self.start();
        let listening = self
            .shared
            .listening
            .load(std::sync::atomic::Ordering::SeqCst);
        let limit = match listening {
            true => timeout.min(MAX_WAIT),
            false => timeout.min(POLL),
        };
        let woken = match done {
            true => self.shared.done.notified(),
            false => self.shared.work.notified(),
        };
        tokio::select! {
            _ = woken => {}
            _ = tokio::time::sleep(limit) => {}
        }
    }
}

/// Listens for the queue's notifications, connecting again (with backoff) when the
/// connection is lost; waits poll meanwhile.
async fn listen(config: tokio_postgres::Config, wake: Arc<Wake>) {
    use futures::StreamExt as _;
    let mut backoff = std::time::Duration::from_millis(100);
    loop {
        if let Ok((client, mut connection)) = config.connect(tokio_postgres::NoTls).await {
            let (sender, mut received) = tokio::sync::mpsc::unbounded_channel();
            let driver = tokio::spawn(async move {
                let mut messages =
                    futures::stream::poll_fn(move |context| connection.poll_message(context));
                while let Some(Ok(message)) = messages.next().await {
                    if let tokio_postgres::AsyncMessage::Notification(notification) = message
                        && sender.send(notification.channel().to_owned()).is_err()
                    {
                        break;
                    }
                }
            });
            let listening = client
                .batch_execute(&format!("LISTEN {WORK_CHANNEL}; LISTEN {DONE_CHANNEL}"))
                .await;
            if listening.is_ok() {
                backoff = std::time::Duration::from_millis(100);
                wake.listening
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                while let Some(channel) = received.recv().await {
                    let notify = match channel.as_str() {
                        WORK_CHANNEL => &wake.work,
                        _ => &wake.done,
                    };
                    // Every waiter now, and a permit for the next: a notification that
                    // arrives between a claim and the wait after it is not lost.
                    notify.notify_waiters();
                    notify.notify_one();
                }
                wake.listening
                    .store(false, std::sync::atomic::Ordering::SeqCst);
            }
            driver.abort();
            drop(client);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
    }
}

/// A queue row as the writer inserts it.
pub(crate) struct QueueRow {
    pub(crate) run_id: String,
    pub(crate) tenant: weir_core::TenantId,
    pub(crate) priority: i32,
    pub(crate) memory_bytes: Option<u64>,
    pub(crate) kind: WorkKind,
    pub(crate) parent: Option<String>,
    pub(crate) spec: String,
    pub(crate) tags: String,
    pub(crate) requirements: String,
    pub(crate) ready_at: Timestamp,
    pub(crate) created: Timestamp,
}

impl QueueRow {
    /// The parameters of the writer's `insert_work`.
    pub(crate) fn params(&self) -> Vec<Param> {
        vec![
            text(&self.run_id),
            text(self.kind.as_str()),
            Box::new(self.parent.clone()),
            text(&self.spec),
            text(&self.tags),
            text(&self.requirements),
            Box::new(self.ready_at.0),
            Box::new(self.created.0),
            text(self.tenant.as_str()),
            Box::new(self.priority),
            Box::new(self.memory_bytes.map(|memory| memory as i64)),
        ]
    }
}

const WORK_COLUMNS: &str =
    "run_id, kind, parent_flow_run_id, tags, requirements, ready_at, created, generation,
     worker, worker_name, lease_expires, done, tenant";

fn work_record(row: &tokio_postgres::Row) -> WorkRecord {
    WorkRecord {
        run_id: row.get(0),
        kind: WorkKind::parse(row.get(1)).unwrap_or(WorkKind::Task),
        parent: row.get::<_, Option<String>>(2).map(FlowRunId::from_string),
        tags: tags_from_column(row.get(3)),
        requirements: Requirements::from_key(row.get(4)),
        ready_at: Timestamp(row.get(5)),
        created: Timestamp(row.get(6)),
        generation: row.get(7),
        worker: row.get(8),
        worker_name: row.get(9),
        lease_expires: row.get::<_, Option<i64>>(10).map(Timestamp),
        done: row.get(11),
        tenant: weir_core::TenantId::from_stored(row.get::<_, String>(12)),
    }
}

/// Locks the fence's row at its generation, or says the lease was lost. `FOR KEY SHARE`:
/// a claim (which wants `FOR UPDATE`) passes the row by meanwhile, but the driver's own
/// writes (`FOR NO KEY UPDATE`) do not wait for its collection, nor it for them.
async fn check_fence(
    transaction: &tokio_postgres::Transaction<'_>,
    fence: &Fence,
) -> StoreResult<()> {
    let held = transaction
        .query_opt(
            "SELECT 1 FROM work_queue WHERE run_id = $1 AND generation = $2 AND NOT done FOR KEY SHARE",
            &[&fence.run_id, &fence.generation],
        )
        .await
        .map_err(backend("checking a lease"))?;
    match held {
        Some(_) => Ok(()),
        None => Err(StoreError::LeaseLost {
            run_id: fence.run_id.clone(),
            generation: fence.generation,
        }),
    }
}

/// The conditions every claim puts on a row: ready, not held by a live lease, a
/// requirement the worker can serve, not a run it already holds ($1 now, $2 the
/// unservable requirement keys, $3 the runs held).
const CLAIMABLE: &str = "NOT done AND ready_at <= $1 AND (worker IS NULL OR lease_expires <= $1)
     AND requirements <> ALL($2) AND run_id <> ALL($3)";

/// A claim's row limit as written in its statement: `room` itself up to 16 (a worker's
/// usual room, which a smaller claim would leave unfilled), else the largest power of two
/// up to it (at most 64), so that a connection prepares a handful of variants. A limit in
/// the text, not a parameter, lets the server plan the statement once for all and still
/// stop its index scan after that many rows (with a parameter, the one plan for any limit
/// sorted every queued row).
fn limit_bucket(room: usize) -> usize {
    match room {
        0..=16 => room,
        room => 1 << room.min(64).ilog2(),
    }
}

/// The columns a claim reads of a queue row, in the order [`claimed_row`] takes them.
const CLAIMED_COLUMNS: &str = "run_id, kind, parent_flow_run_id, spec, tags, requirements, generation, worker, worker_name, created, tenant";

/// A claim from the [`CLAIMED_COLUMNS`] of a row, from column `at` on, at `generation`
/// (the row's worker and its name, if any, are the worker that lost it).
fn claimed_row(row: &tokio_postgres::Row, at: usize, generation: i64) -> Claim {
    let run_id: String = row.get(at);
    let worker: Option<String> = row.get(at + 7);
    let worker_name: Option<String> = row.get(at + 8);
    Claim {
        fence: Fence {
            run_id: run_id.clone(),
            generation,
        },
        run_id,
        tenant: TenantId::from_stored(row.get::<_, String>(at + 10)),
        settings: TenantSettings::default(),
        kind: WorkKind::parse(row.get(at + 1)).unwrap_or(WorkKind::Task),
        parent: row
            .get::<_, Option<String>>(at + 2)
            .map(FlowRunId::from_string),
        spec: row.get(at + 3),
        tags: tags_from_column(row.get(at + 4)),
        requirements: Requirements::from_key(row.get(at + 5)),
        lost_from: worker.map(|worker| (worker_name.unwrap_or_default(), worker)),
        created: Timestamp(row.get(at + 9)),
        task_run: None,
    }
}

/// Which queued rows a claim path looks at: each has an index of its own (see the
/// migrations), led by the tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    /// Task runs without tags: claimed by one statement.
    Untagged,
    /// Task runs with tags, which take concurrency slots: one by one, in a transaction.
    Tagged,
    Flows,
}

impl Lane {
    fn kind(self) -> WorkKind {
        match self {
            Lane::Untagged | Lane::Tagged => WorkKind::Task,
            Lane::Flows => WorkKind::Flow,
        }
    }

    /// The rows of the lane (`patterns`: the parameter holding the worker's tag patterns).
    fn condition(self, patterns: &str) -> String {
        match self {
            Lane::Untagged => "kind = 'task' AND tags = ''".to_owned(),
            Lane::Tagged => format!(
                "kind = 'task' AND tags <> '' AND (cardinality({patterns}::text[]) = 0 OR tags LIKE ANY({patterns}))"
            ),
            Lane::Flows => "kind = 'flow'".to_owned(),
        }
    }
}

/// A tenant with rows in a lane, what its quotas let a claim take, and the quotas.
struct TenantWaiting {
    waiting: Waiting,
    settings: TenantSettings,
}

impl TenantWaiting {
    /// Whether a claim of its task runs must count what the tenant holds, under a lock.
    fn bounded(&self, lane: Lane) -> bool {
        lane != Lane::Flows
            && (self.settings.quotas.task_runs_in_progress.is_some()
                || self.settings.quotas.memory_in_flight_bytes.is_some())
    }
}

/// The tenants with unfinished rows in `lane` (found one index step each, by a recursive
/// skip over the lane's index), how many rows each has ready (up to `room`), bounded by
/// its quota of task runs in progress.
async fn waiting_tenants(
    client: &deadpool_postgres::Object,
    offer: &WorkerOffer,
    times: ClaimTimes,
    lane: Lane,
    room: usize,
) -> StoreResult<Vec<TenantWaiting>> {
    let condition = lane.condition("$4");
    let sql = format!(
        "WITH RECURSIVE present (tenant) AS (
             (SELECT tenant FROM work_queue WHERE NOT done AND {condition} ORDER BY tenant LIMIT 1)
             UNION ALL
             SELECT (SELECT tenant FROM work_queue
                     WHERE NOT done AND {condition} AND tenant > p.tenant ORDER BY tenant LIMIT 1)
             FROM present p WHERE p.tenant IS NOT NULL)
         SELECT p.tenant, coalesce(t.weight, 1), coalesce(t.settings_json, '{{}}'),
             (SELECT count(*) FROM (
                 SELECT 1 FROM work_queue
                 WHERE tenant = p.tenant AND {condition} AND {CLAIMABLE} LIMIT {room}) r),
             held.runs
         FROM present p
         LEFT JOIN tenants t ON t.name = p.tenant
         CROSS JOIN LATERAL (
             SELECT count(*) AS runs FROM work_queue h
             WHERE h.tenant = p.tenant AND h.worker IS NOT NULL AND NOT h.done AND h.kind = 'task'
                 AND h.lease_expires > $1) held
         WHERE p.tenant IS NOT NULL",
        room = room.max(1),
    );
    let statement = client
        .prepare_cached(&sql)
        .await
        .map_err(backend("finding the tenants with queued runs"))?;
    let patterns: Vec<String> = offer.tags.iter().map(|tag| tag_pattern(tag)).collect();
    let rows = match lane {
        Lane::Tagged => {
            client
                .query(
                    &statement,
                    &[&times.now.0, &offer.unservable, &offer.holding, &patterns],
                )
                .await
        }
        _ => {
            client
                .query(
                    &statement,
                    &[&times.now.0, &offer.unservable, &offer.holding],
                )
                .await
        }
    }
    .map_err(backend("finding the tenants with queued runs"))?;
    Ok(rows
        .iter()
        .map(|row| {
            let settings = TenantSettings::from_json(row.get(2));
            let mut ready = usize::try_from(row.get::<_, i64>(3)).unwrap_or(0);
            if let (Some(limit), true) =
                (settings.quotas.task_runs_in_progress, lane != Lane::Flows)
            {
                let held = usize::try_from(row.get::<_, i64>(4)).unwrap_or(0);
                ready = ready.min((limit as usize).saturating_sub(held));
            }
            TenantWaiting {
                waiting: Waiting {
                    tenant: TenantId::from_stored(row.get::<_, String>(0)),
                    weight: u32::try_from(row.get::<_, i32>(1)).unwrap_or(1),
                    ready,
                },
                settings,
            }
        })
        .collect())
}

/// Claims untagged task runs and flow runs of tenants without quotas in one statement (no
/// transaction around it: one statement is atomic), `shares` rows of each tenant: rows
/// picked `FOR UPDATE SKIP LOCKED`, moved to a new generation under this worker, the flow
/// runs' owner set, the task runs' records returned (a task run's owner is set by its
/// first state written under the claim: one update of its row fewer).
async fn claim_shares(
    client: &deadpool_postgres::Object,
    offer: &WorkerOffer,
    times: ClaimTimes,
    tasks: &[(TenantId, usize)],
    flows: &[(TenantId, usize)],
) -> StoreResult<Vec<Claim>> {
    let owned_columns: Vec<String> = TASK_RUN_COLUMNS
        .split(", ")
        .map(|column| format!("o.{column}"))
        .collect();
    let pick = |lane: Lane, tenants: &str, counts: &str| {
        format!(
            "SELECT p.* FROM unnest({tenants}::text[], {counts}::integer[]) AS s(tenant, n)
             CROSS JOIN LATERAL (
                 SELECT run_id, worker AS lost_worker, worker_name AS lost_name FROM work_queue
                 WHERE tenant = s.tenant AND {condition} AND {CLAIMABLE}
                 ORDER BY priority DESC, ready_at, created LIMIT s.n FOR UPDATE SKIP LOCKED) p",
            condition = lane.condition("")
        )
    };
    let sql = format!(
        "WITH picked_tasks AS ({tasks}),
         picked_flows AS ({flows}),
         picked AS (SELECT * FROM picked_tasks UNION ALL SELECT * FROM picked_flows),
         claimed AS (
             UPDATE work_queue q SET generation = q.generation + 1, worker = $4, worker_name = $5,
                 lease_expires = $6
             FROM picked p WHERE q.run_id = p.run_id
             RETURNING q.run_id, q.kind, q.parent_flow_run_id, q.spec, q.tags, q.requirements,
                 q.generation, p.lost_worker AS worker, p.lost_name AS worker_name, q.created, q.tenant),
         owned_flows AS (
             UPDATE flow_runs f SET owner = $4 FROM claimed c
             WHERE c.kind = 'flow' AND f.id = c.run_id RETURNING f.id)
         SELECT {owned}, {claimed}
         FROM claimed c
         LEFT JOIN LATERAL (SELECT * FROM task_runs t WHERE c.kind = 'task' AND t.id = c.run_id) o
             ON true
         ORDER BY c.created, c.run_id",
        tasks = pick(Lane::Untagged, "$7", "$8"),
        flows = pick(Lane::Flows, "$9", "$10"),
        owned = owned_columns.join(", "),
        claimed = CLAIMED_COLUMNS
            .split(", ")
            .map(|column| format!("c.{column}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    let statement = client
        .prepare_cached(&sql)
        .await
        .map_err(backend("claiming queued runs"))?;
    let split = |shares: &[(TenantId, usize)]| -> (Vec<String>, Vec<i32>) {
        shares
            .iter()
            .map(|(tenant, count)| {
                (
                    tenant.to_string(),
                    i32::try_from(*count).unwrap_or(i32::MAX),
                )
            })
            .unzip()
    };
    let (task_tenants, task_counts) = split(tasks);
    let (flow_tenants, flow_counts) = split(flows);
    let rows = client
        .query(
            &statement,
            &[
                &times.now.0,
                &offer.unservable,
                &offer.holding,
                &offer.worker,
                &offer.name,
                &times.lease_until.0,
                &task_tenants,
                &task_counts,
                &flow_tenants,
                &flow_counts,
            ],
        )
        .await
        .map_err(backend("claiming queued runs"))?;
    let claimed_at = owned_columns.len();
    let mut claimed = Vec::new();
    for row in &rows {
        // Its owner becomes the worker with its first state written under the claim.
        let task_run = match row.get::<_, Option<String>>(0) {
            Some(_) => Some(weir_store::TaskRunRecord {
                owner: Some(offer.worker.clone()),
                ..crate::rows::task_run(row)?
            }),
            None => None,
        };
        claimed.push(Claim {
            task_run,
            // RETURNING gives the generation the claim moved the row to.
            ..claimed_row(row, claimed_at, row.get(claimed_at + 6))
        });
    }
    Ok(claimed)
}

/// Claims up to `limit` task runs of one tenant in `lane`, one by one in a transaction:
/// a tagged run takes a slot of each of its limited tags in the same transaction, or is
/// passed by; a tenant with quotas is counted under a lock of its own (two workers do not
/// both take its last place), and a run whose memory would pass the tenant's memory in
/// flight is passed by.
async fn claim_one_by_one(
    client: &mut deadpool_postgres::Object,
    offer: &WorkerOffer,
    times: ClaimTimes,
    lane: Lane,
    tenant: &TenantWaiting,
    limit: usize,
) -> StoreResult<Vec<Claim>> {
    let transaction = client
        .transaction()
        .await
        .map_err(backend("starting a transaction"))?;
    let name = tenant.waiting.tenant.as_str();
    let mut limit = limit;
    let mut memory_room = None;
    if tenant.bounded(lane) {
        transaction
            .execute(
                "SELECT pg_advisory_xact_lock(hashtext('weir-claim:' || $1))",
                &[&name],
            )
            .await
            .map_err(backend("locking a tenant's quota"))?;
        let held = transaction
            .query_one(
                "SELECT count(*), coalesce(sum(memory_bytes), 0)::bigint FROM work_queue
                 WHERE tenant = $1 AND worker IS NOT NULL AND NOT done AND kind = 'task'
                     AND lease_expires > $2",
                &[&name, &times.now.0],
            )
            .await
            .map_err(backend("counting a tenant's claimed runs"))?;
        let (runs, memory) = (held.get::<_, i64>(0), held.get::<_, i64>(1));
        if let Some(quota) = tenant.settings.quotas.task_runs_in_progress {
            limit = limit.min((quota as usize).saturating_sub(runs as usize));
        }
        memory_room = tenant
            .settings
            .quotas
            .memory_in_flight_bytes
            .map(|quota| quota.saturating_sub(memory as u64));
    }
    if limit == 0 {
        return Ok(Vec::new());
    }
    let patterns: Vec<String> = offer.tags.iter().map(|tag| tag_pattern(tag)).collect();
    // Some rows may be passed by for full tag limits or memory: look a little further.
    let sql = format!(
        "SELECT {CLAIMED_COLUMNS}, memory_bytes
         FROM work_queue
         WHERE tenant = $4 AND {condition} AND {CLAIMABLE}
         ORDER BY priority DESC, ready_at, created LIMIT {look_at} FOR UPDATE SKIP LOCKED",
        condition = lane.condition("$5"),
        look_at = limit_bucket(limit.saturating_mul(4).max(16))
    );
    let rows = match lane {
        Lane::Tagged => {
            transaction
                .query(
                    &sql,
                    &[
                        &times.now.0,
                        &offer.unservable,
                        &offer.holding,
                        &name,
                        &patterns,
                    ],
                )
                .await
        }
        _ => {
            transaction
                .query(
                    &sql,
                    &[&times.now.0, &offer.unservable, &offer.holding, &name],
                )
                .await
        }
    }
    .map_err(backend("claiming queued runs"))?;
    let mut claimed = Vec::new();
    for row in rows {
        if claimed.len() >= limit {
            break;
        }
        if let (Some(room), Some(memory)) = (memory_room, row.get::<_, Option<i64>>(11)) {
            let memory = memory as u64;
            if memory > room {
                continue;
            }
            memory_room = Some(room - memory);
        }
        // The generation the update below moves the row to.
        let claim = claimed_row(&row, 0, row.get::<_, i64>(6) + 1);
        if !claim.tags.is_empty() {
            let slots = crate::leases::take_slots(
                &transaction,
                (&claim.tenant, &claim.tags),
                &claim.run_id,
                times.now,
                times.lease_until,
            )
            .await
            .map_err(backend("taking the concurrency slots of a claimed run"))?;
            if slots != SlotRequest::Granted {
                continue;
            }
        }
        claimed.push(Claim {
            settings: tenant.settings.clone(),
            ..claim
        });
    }
    if claimed.is_empty() {
        return Ok(claimed);
    }
    let ids: Vec<&str> = claimed.iter().map(|claim| claim.run_id.as_str()).collect();
    transaction
        .execute(
            "UPDATE work_queue SET generation = generation + 1, worker = $2, worker_name = $3, lease_expires = $4
             WHERE run_id = ANY($1)",
            &[&ids, &offer.worker, &offer.name, &times.lease_until.0],
        )
        .await
        .map_err(backend("claiming queued runs"))?;
    let records = transaction
        .query(
            &format!(
                "UPDATE task_runs SET owner = $2 WHERE id = ANY($1) RETURNING {TASK_RUN_COLUMNS}"
            ),
            &[&ids, &offer.worker],
        )
        .await
        .map_err(backend("claiming queued runs"))?;
    let mut records: std::collections::HashMap<String, weir_store::TaskRunRecord> = records
        .iter()
        .map(|row| crate::rows::task_run(row).map(|run| (run.id.to_string(), run)))
        .collect::<StoreResult<_>>()?;
    for claim in &mut claimed {
        claim.task_run = records.remove(&claim.run_id);
    }
    transaction
        .commit()
        .await
        .map_err(backend("committing a claim"))?;
    Ok(claimed)
}

#[async_trait]
impl Queue for PostgresStore {
    fn enqueue(&self, work: &NewWork, fence: Option<&Fence>) -> StoreResult<()> {
        let (create, created) = match &work.run {
            NewWorkRun::Task { run, states } => (
                WriteOp::CreateTaskRun {
                    tenant: self.tenant.clone(),
                    run: run.clone(),
                    input_json: run.input.to_string(),
                    tags_json: serde_json::Value::from(run.tags.clone()).to_string(),
                    states: states.clone(),
                    result: None,
                },
                run.created,
            ),
            NewWorkRun::Flow { run, states } => (
                WriteOp::CreateFlowRun {
                    tenant: self.tenant.clone(),
                    run: run.clone(),
                    parameters_json: run.parameters.to_string(),
                    states: states.clone(),
                },
                run.created,
            ),
        };
        let row = QueueRow {
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
        };
        self.shared.writer.send(WriteOp::Enqueue {
            create: Box::new(create),
            row,
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
        // After this store's own writes that queued runs or gave them back, as on SQLite;
        // not after the others, which make no row claimable (a claim that waited for
        // every write would commit each small batch at once).
        self.shared.writer.wait_for_claimable().await?;
        let mut client = self.connection().await?;
        let fair = &self.shared.fair;
        // A worker with tags serves tagged task runs only.
        let mut lanes = vec![(Lane::Flows, room.flows), (Lane::Tagged, room.tasks)];
        if offer.tags.is_empty() {
            lanes.insert(0, (Lane::Untagged, room.tasks));
        }
        let mut claimed = Vec::new();
        let mut fast: [Vec<(TenantId, usize)>; 2] = Default::default();
        let mut settings: std::collections::HashMap<TenantId, (u32, TenantSettings)> =
            Default::default();
        let mut tasks_left = room.tasks;
        for (lane, lane_room) in lanes {
            let lane_room = match lane {
                Lane::Flows => lane_room,
                _ => tasks_left,
            };
            if lane_room == 0 {
                continue;
            }
            let waiting = waiting_tenants(&client, offer, times, lane, lane_room).await?;
            let list: Vec<Waiting> = waiting
                .iter()
                .map(|tenant| tenant.waiting.clone())
                .collect();
            for (name, count) in fair.shares(lane.kind(), &list, lane_room) {
                let Some(tenant) = waiting.iter().find(|tenant| tenant.waiting.tenant == name)
                else {
                    continue;
                };
                settings.insert(
                    name.clone(),
                    (tenant.waiting.weight, tenant.settings.clone()),
                );
                if lane == Lane::Tagged || tenant.bounded(lane) {
                    let rows =
                        claim_one_by_one(&mut client, offer, times, lane, tenant, count).await?;
                    fair.claimed(lane.kind(), &name, tenant.waiting.weight, rows.len());
                    tasks_left = tasks_left.saturating_sub(rows.len());
                    claimed.extend(rows);
                } else {
                    let slot = usize::from(lane == Lane::Flows);
                    fast[slot].push((name, count));
                    if lane == Lane::Untagged {
                        tasks_left = tasks_left.saturating_sub(count);
                    }
                }
            }
        }
        if !fast[0].is_empty() || !fast[1].is_empty() {
            let rows = claim_shares(&client, offer, times, &fast[0], &fast[1]).await?;
            let mut counts: std::collections::HashMap<(WorkKind, TenantId), usize> =
                Default::default();
            for mut claim in rows {
                *counts
                    .entry((claim.kind, claim.tenant.clone()))
                    .or_default() += 1;
                if let Some((_, found)) = settings.get(&claim.tenant) {
                    claim.settings = found.clone();
                }
                claimed.push(claim);
            }
            for ((kind, tenant), count) in counts {
                let weight = settings.get(&tenant).map_or(1, |(weight, _)| *weight);
                fair.claimed(kind, &tenant, weight, count);
            }
        }
        Ok(claimed)
    }

    async fn renew_leases(&self, worker: &str, until: Timestamp) -> StoreResult<Vec<Fence>> {
        // Through the writer, in order with this worker's writes (see `RenewLeases`);
        // once committed, the leases still held are read.
        self.shared.writer.send(WriteOp::RenewLeases {
            worker: worker.to_owned(),
            until,
            now: Timestamp::from_system_time(std::time::SystemTime::now()),
        })?;
        let client = self.read().await?;
        let held = client
            .query(
                "SELECT run_id, generation FROM work_queue WHERE worker = $1 AND NOT done",
                &[&worker],
            )
            .await
            .map_err(backend("renewing leases"))?;
        Ok(held
            .iter()
            .map(|row| Fence {
                run_id: row.get(0),
                generation: row.get(1),
            })
            .collect())
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
        // The rows collected are finished by workers, not by this store's own writes: no
        // need to wait for them (which would commit every write at once).
        let mut client = self.connection().await?;
        let transaction = client
            .transaction()
            .await
            .map_err(backend("starting a transaction"))?;
        if let Some(fence) = fence {
            check_fence(&transaction, fence).await?;
        }
        let rows = transaction
            .query(
                "WITH done AS (
                     DELETE FROM work_queue WHERE parent_flow_run_id = $1 AND done RETURNING run_id, kind)
                 SELECT d.run_id, d.kind, x.name, x.state, x.state_message, x.result_digest, x.attempts,
                        (SELECT r.inline_json FROM results r WHERE r.digest = x.result_digest)
                 FROM done d
                 -- Lookups by key, row by row: one plan serves every collection, and a
                 -- join would scan whole tables of runs and results.
                 LEFT JOIN LATERAL (
                     SELECT name, state, state_message, result_digest, attempts FROM task_runs
                     WHERE d.kind = 'task' AND id = d.run_id
                     UNION ALL
                     SELECT name, state, state_message, result_digest, attempts FROM flow_runs
                     WHERE d.kind = 'flow' AND id = d.run_id) x ON true",
                &[&parent.as_str()],
            )
            .await
            .map_err(backend("collecting finished runs"))?;
        transaction
            .commit()
            .await
            .map_err(backend("committing collected runs"))?;
        Ok(rows
            .iter()
            .map(|row| Finished {
                run_id: row.get(0),
                kind: WorkKind::parse(row.get(1)).unwrap_or(WorkKind::Task),
                name: row.get::<_, Option<String>>(2).unwrap_or_default(),
                // A run whose record is missing cannot have ended well.
                state: row
                    .get::<_, Option<String>>(3)
                    .and_then(|state| state.parse().ok())
                    .unwrap_or(State::Crashed),
                message: row.get(4),
                result_digest: row.get(5),
                attempts: row
                    .get::<_, Option<i32>>(6)
                    .map_or(0, |attempts| u32::try_from(attempts).unwrap_or(0)),
                inline_result: row.get(7),
            })
            .collect())
    }

    async fn work(&self, limit: usize) -> StoreResult<Vec<WorkRecord>> {
        let client = self.read().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {WORK_COLUMNS} FROM work_queue ORDER BY created, run_id LIMIT {limit}"
                ),
                &[],
            )
            .await
            .map_err(backend("listing the queue"))?;
        Ok(rows.iter().map(work_record).collect())
    }

    async fn register_worker(&self, worker: &WorkerRecord) -> StoreResult<()> {
        let offer = serde_json::to_string(&worker.offer)
            .map_err(|error| StoreError::backend("recording a worker", error))?;
        let client = self.connection().await?;
        client
            .execute(
                "INSERT INTO workers (owner, name, offer_json, started, heartbeat) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (owner) DO UPDATE SET name = excluded.name, offer_json = excluded.offer_json,
                     started = excluded.started, heartbeat = excluded.heartbeat",
                &[
                    &worker.owner,
                    &worker.name,
                    &offer,
                    &worker.started.0,
                    &worker.heartbeat.0,
                ],
            )
            .await
            .map_err(backend("recording a worker"))?;
        Ok(())
    }

    async fn workers(&self) -> StoreResult<Vec<WorkerRecord>> {
        let client = self.read().await?;
        let rows = client
            .query(
                "SELECT owner, name, offer_json, started, heartbeat FROM workers ORDER BY started",
                &[],
            )
            .await
            .map_err(backend("listing workers"))?;
        Ok(rows
            .iter()
            .map(|row| WorkerRecord {
                owner: row.get(0),
                name: row.get(1),
                offer: serde_json::from_str(row.get(2)).unwrap_or_default(),
                started: Timestamp(row.get(3)),
                heartbeat: Timestamp(row.get(4)),
            })
            .collect())
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
        self.shared.wakeups.wait(false, timeout).await;
    }

    async fn wait_for_done(&self, _parent: &FlowRunId, timeout: std::time::Duration) {
        self.shared.wakeups.wait(true, timeout).await;
    }

    fn fenced(self: Arc<Self>, fence: Fence) -> Arc<dyn Recorder> {
        Arc::new(FencedRecorder { store: self, fence })
    }
}

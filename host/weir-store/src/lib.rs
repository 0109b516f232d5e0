//! The storage interface of weir: what is recorded about runs, and the role traits
//! every backend implements (`weir-store-sqlite`, the embedded default, and
//! `weir-store-postgres`, the shared one). [`Store`] is all of them together.
//!
//! The roles follow who uses them:
//! - [`Recorder`]: what a runner writes as runs happen (runs, states, logs, results,
//!   node outputs), and [`Recorder::flush`];
//! - [`History`]: what readers query (filters, cursors, subflow runs, the feed of
//!   changed runs that a UI or a follower polls);
//! - [`Leases`]: tag concurrency limits and the slots held under them;
//! - [`Owners`]: the processes that run work, their heartbeats, orphans and
//!   cancellation requests;
//! - [`Cache`]: reusable results by cache key;
//! - [`Plugins`]: plugin metadata by digest;
//! - [`Blobs`]: content-addressed bytes (large results, and plugins), readable by digest
//!   from any machine that shares the store;
//! - [`Queue`]: runs waiting for workers, the leases workers hold on them, and the
//!   fences that keep a worker whose lease ran out from overwriting its successor;
//! - [`Tenants`]: the tenants and their tokens.
//!
//! **Tenants.** A store value acts as one tenant ([`Store::tenant_id`]; the default
//! tenant when opened), and [`Store::for_tenant`] gives the same store as another. What
//! a handle creates (runs, plugins, cache entries, limits, queued work) is the handle's
//! tenant's, and what it reads is only its tenant's: another tenant's run is not found.
//! Writes that name a run by its id (its next state, its logs) are not checked again:
//! a runner writes only about runs it created or claimed, and ids are unguessable.
//! What works across tenants: claims and leases (a worker serves every tenant, and a
//! [`Claim`] says whose run it is), owners, blobs (content-addressed and read only by
//! weir itself), and [`Tenants`].
//!
//! The contract of every backend:
//! - A recorder's writes are plain `fn`s: they enqueue and return (waiting only when the
//!   queue is full), and the backend applies them in the order they were made, in the
//!   background. After a crash the store holds a consistent prefix of the history.
//!   [`Recorder::flush`] waits until every write made before it is durable, and reports
//!   a write that failed since the last flush.
//! - Every other call is `async` and answers only once its work is committed: a slot,
//!   a limit or an ended run that a failed commit lost is reported as an error, never
//!   as done.
//! - Reads see every write made before them by the same store value.
//! - An operation is all or nothing: one that fails halfway leaves nothing behind.
//!
//! The traits use `async_trait` (boxed futures) rather than native `async fn`, so that
//! `Arc<dyn Store>` works: the runner, the CLI and the server pick a backend at run time
//! from a URL. A boxed future costs tens of nanoseconds, against microseconds for the
//! cheapest store call.

mod fair;
mod pending;
mod queue;
mod records;
mod tenants;

pub use fair::{FairShare, Waiting};
pub use pending::PendingEntries;
pub use queue::*;

pub use records::*;
pub use tenants::*;

use async_trait::async_trait;
use weir_core::{CacheKey, ComponentDigest, FlowRunId, State, TaskRunId, TenantId, Timestamp};

/// The cause of a backend failure, kept as the error's source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A storage failure, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store error while {action}")]
    Backend {
        action: String,
        #[source]
        source: BoxError,
    },
    #[error("no task run with id `{0}`")]
    UnknownTaskRun(String),
    #[error("no flow run with id `{0}`")]
    UnknownFlowRun(String),
    #[error("no tenant named `{0}`: `weir tenant ls` lists them, `weir tenant create` makes one")]
    UnknownTenant(String),
    #[error(
        "the store {path} was written by a newer weir (schema version {found}; this weir knows versions up to {known}): upgrade weir, or use another --store"
    )]
    NewerSchema {
        path: String,
        found: i64,
        known: i64,
    },
    /// A write about a queued run whose lease this worker no longer holds: another
    /// worker claimed the run since (or it was finished), and its writes stand.
    #[error(
        "the lease on run `{run_id}` (generation {generation}) was lost: another worker took the run over"
    )]
    LeaseLost { run_id: String, generation: i64 },
    #[error("the stored result {digest} is missing or unreadable")]
    BrokenResult {
        digest: String,
        #[source]
        source: BoxError,
    },
}

impl StoreError {
    /// A backend failure while doing `action`, caused by `source`.
    pub fn backend(action: impl Into<String>, source: impl Into<BoxError>) -> Self {
        StoreError::Backend {
            action: action.into(),
            source: source.into(),
        }
    }

    /// The error and its causes on one line (`what: why: why`), for logs and for
    /// answers that carry an error as text.
    pub fn describe(&self) -> String {
        weir_core::describe_error(self)
    }

    /// Logs a write the writer could not apply: a refused write of a lost lease is what
    /// fencing is for (a warning), anything else an error.
    pub fn log_failed_write(&self) {
        match self {
            StoreError::LeaseLost { .. } => {
                tracing::warn!("a write was refused: {}", self.describe())
            }
            _ => tracing::error!("{}", self.describe()),
        }
    }

    /// A stored result that cannot be read, and why.
    pub fn broken_result(digest: impl Into<String>, source: impl Into<BoxError>) -> Self {
        StoreError::BrokenResult {
            digest: digest.into(),
            source: source.into(),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What a runner records as its runs happen.
#[async_trait]
pub trait Recorder: Send + Sync {
    /// Inserts the run with its first states (Pending, then e.g. Running or Cached), in
    /// one operation. When the last state is final, the run is finished with `result`.
    fn create_task_run(
        &self,
        run: &NewTaskRun,
        states: &[StateChange],
        result: Option<&serde_json::Value>,
    ) -> StoreResult<()>;
    /// Moves a run to a non-final state (Running, AwaitingRetry, Pending) and records it.
    fn set_task_run_state(&self, id: &TaskRunId, change: &StateChange) -> StoreResult<()>;
    /// Moves a run to its final state, storing its result (if any) and cache key in the
    /// same operation, and the cache entry when one is given.
    fn finish_task_run(
        &self,
        id: &TaskRunId,
        change: &StateChange,
        result: Option<&serde_json::Value>,
        cache: Option<&CacheEntryDraft>,
    ) -> StoreResult<()>;
    fn append_logs(&self, id: &TaskRunId, lines: &[LogRecord]) -> StoreResult<()>;
    /// Inserts a flow run with its first states.
    fn create_flow_run(&self, run: &NewFlowRun, states: &[StateChange]) -> StoreResult<()>;
    /// Records a flow run's state; a final state ends it, with its result.
    fn set_flow_run_state(
        &self,
        id: &FlowRunId,
        change: &StateChange,
        result: Option<&serde_json::Value>,
    ) -> StoreResult<()>;
    /// Records the output of a flow run's node once it completed (what a resume reuses).
    fn record_node_output(
        &self,
        id: &FlowRunId,
        node: &str,
        output: &serde_json::Value,
    ) -> StoreResult<()>;
    /// Waits until every write made so far is durable, and reports a write that failed
    /// since the last flush.
    async fn flush(&self) -> StoreResult<()>;
}

/// What readers of the run history query.
#[async_trait]
pub trait History: Send + Sync {
    async fn flow_run(&self, id: &FlowRunId) -> StoreResult<Option<FlowRunRecord>>;
    /// Newest first.
    async fn flow_runs(&self, filter: &FlowRunFilter) -> StoreResult<Vec<FlowRunRecord>>;
    async fn flow_run_history(&self, id: &FlowRunId) -> StoreResult<Vec<StateChange>>;
    /// The outputs of the flow run's completed nodes.
    async fn node_outputs(&self, id: &FlowRunId) -> StoreResult<Vec<(String, serde_json::Value)>>;
    /// The graph recorded with a flow run (None for a run recorded without one, or an
    /// unknown run).
    async fn flow_graph(&self, id: &FlowRunId) -> StoreResult<Option<FlowGraph>>;
    async fn task_run(&self, id: &TaskRunId) -> StoreResult<Option<TaskRunRecord>>;
    /// Newest first.
    async fn task_runs(&self, filter: &TaskRunFilter) -> StoreResult<Vec<TaskRunRecord>>;
    async fn state_history(&self, id: &TaskRunId) -> StoreResult<Vec<StateChange>>;
    /// How many task runs of each of these flow runs are in each state (one query, for
    /// a page of flow runs).
    async fn task_run_counts(
        &self,
        flow_runs: &[FlowRunId],
    ) -> StoreResult<std::collections::HashMap<FlowRunId, std::collections::BTreeMap<State, usize>>>;
    async fn logs(&self, id: &TaskRunId) -> StoreResult<Vec<LogRecord>>;
    /// A run's result by its digest.
    async fn result(&self, digest: &str) -> StoreResult<serde_json::Value>;
    /// Flow and task runs changed since `since`, oldest change first, at most `limit`
    /// of them. A change committed by any process sharing the store shows up exactly
    /// once in the polls that follow it (as the run is then), never before it commits.
    async fn changes(&self, since: &ChangeCursor, limit: usize) -> StoreResult<Changes>;
    /// A cursor at the feed's end now: polls from it return only later changes (a
    /// follower starts here rather than reading the whole history).
    async fn changes_now(&self) -> StoreResult<ChangeCursor>;
}

/// Tag concurrency limits, and the slots task runs hold under them: leases that hold
/// across every process (and machine) sharing the store.
#[async_trait]
pub trait Leases: Send + Sync {
    /// Creates or changes a tag's limit.
    async fn set_concurrency_limit(&self, tag: &str, limit: u32, now: Timestamp)
    -> StoreResult<()>;
    async fn concurrency_limit(
        &self,
        tag: &str,
        now: Timestamp,
    ) -> StoreResult<Option<ConcurrencyLimit>>;
    async fn concurrency_limits(&self, now: Timestamp) -> StoreResult<Vec<ConcurrencyLimit>>;
    /// Removes a limit; returns whether there was one.
    async fn delete_concurrency_limit(&self, tag: &str) -> StoreResult<bool>;
    /// Frees every slot of a tag; returns how many were held.
    async fn reset_concurrency_limit(&self, tag: &str) -> StoreResult<usize>;
    /// Atomically takes one slot of each limited tag among `tags` for `holder` until
    /// `expires`, or nothing.
    async fn acquire_slots(
        &self,
        tags: &[String],
        holder: &str,
        now: Timestamp,
        expires: Timestamp,
    ) -> StoreResult<SlotRequest>;
    /// Extends the holder's leases (a heartbeat while it runs); in order with the writes.
    fn renew_slots(&self, holder: &str, expires: Timestamp) -> StoreResult<()>;
    /// Gives the holder's slots back; in order with the writes.
    fn release_slots(&self, holder: &str) -> StoreResult<()>;
}

/// The processes that run work: a run whose process stopped is an orphan, told from a
/// run still going on by its owner's heartbeat.
#[async_trait]
pub trait Owners: Send + Sync {
    /// Records a process that runs work (see [`OwnerRecord`]); replaces one of that id.
    async fn register_owner(&self, owner: &OwnerRecord) -> StoreResult<()>;
    /// The owner is alive at `now`; in order with the writes.
    fn heartbeat_owner(&self, owner: &str, now: Timestamp) -> StoreResult<()>;
    async fn owners(&self) -> StoreResult<Vec<OwnerRecord>>;
    /// Ends every unfinished flow and task run of `owner` in `ending.state` (each at its
    /// own attempt), frees the concurrency slots its task runs hold, and forgets the
    /// owner, in one operation. What a process does when it exits, and what another
    /// does for a process that died.
    async fn retire_owner(&self, owner: &str, ending: &Ending) -> StoreResult<EndedRuns>;
    /// Gives a flow run (and, from now on, its new task runs) to `owner`: a resume.
    async fn set_flow_run_owner(&self, id: &FlowRunId, owner: &str) -> StoreResult<()>;
    /// Ends a flow run and everything under it that has not ended (its subflow runs and
    /// the task runs of all of them), in one operation, and frees their slots.
    async fn end_flow_run_tree(&self, id: &FlowRunId, ending: &Ending) -> StoreResult<EndedRuns>;
    /// Asks the owner of a run (a flow run or task run id) to cancel it.
    async fn request_cancel(&self, run_id: &str, reason: &str, at: Timestamp) -> StoreResult<()>;
    /// The cancellation requests for unfinished runs of `owner`.
    async fn cancel_requests(&self, owner: &str) -> StoreResult<Vec<CancelRequest>>;
}

/// Reusable results by cache key. Entries are written with the run that produced them
/// ([`Recorder::finish_task_run`]).
#[async_trait]
pub trait Cache: Send + Sync {
    /// The unexpired entry for `key` at `now`, with its result. Correct when other
    /// processes write or clear the cache: an entry cleared before this call began is
    /// never returned.
    async fn cached_result(
        &self,
        key: &CacheKey,
        now: Timestamp,
    ) -> StoreResult<Option<(CacheEntry, serde_json::Value)>>;
    /// Newest first.
    async fn cache_entries(&self) -> StoreResult<Vec<CacheEntry>>;
    /// Removes every cache entry (results stay with their runs); returns how many.
    async fn clear_cache(&self) -> StoreResult<usize>;
}

/// Plugin metadata by digest.
#[async_trait]
pub trait Plugins: Send + Sync {
    /// Records a plugin's metadata under its digest (idempotent); in order with the writes.
    fn record_plugin(&self, plugin: &PluginRecord) -> StoreResult<()>;
    async fn plugin(&self, digest: &ComponentDigest) -> StoreResult<Option<PluginRecord>>;
    /// Every plugin, first seen first.
    async fn plugins(&self) -> StoreResult<Vec<PluginRecord>>;
}

/// Content-addressed bytes: stored once under the blake3 digest of their content (hex),
/// readable by that digest from any process sharing the store.
#[async_trait]
pub trait Blobs: Send + Sync {
    /// Stores `bytes` (idempotent) and returns their digest, once durable.
    async fn put_blob(&self, bytes: &[u8]) -> StoreResult<String>;
    /// The bytes stored under `digest`, checked against it.
    async fn blob(&self, digest: &str) -> StoreResult<Option<Vec<u8>>>;
}

/// The work queue (see the [`queue`](crate::queue) module's documentation).
#[async_trait]
pub trait Queue: Send + Sync {
    /// Records the run (its first states) and queues it, in one operation; in order with
    /// the writes. With a fence (a flow run's driver queueing its task runs), refused
    /// unless the fence holds.
    fn enqueue(&self, work: &NewWork, fence: Option<&Fence>) -> StoreResult<()>;
    /// Claims rows that are ready and not held by a live lease (or whose lease ran out),
    /// up to `room` of each kind, oldest first, skipping rows another worker is claiming,
    /// rows the offer does not serve, and task runs whose tags' concurrency limits are
    /// full (their slots are taken by the claim). Each claimed row moves to a new
    /// generation, held by `offer.worker` until `times.lease_until`, and the run's owner
    /// becomes the worker.
    async fn claim(
        &self,
        offer: &WorkerOffer,
        times: ClaimTimes,
        room: Room,
    ) -> StoreResult<Vec<Claim>>;
    /// Extends the leases `worker` holds (and the slots of their task runs) to `until`;
    /// returns the fences it still holds, so that the worker can drop what it lost.
    async fn renew_leases(&self, worker: &str, until: Timestamp) -> StoreResult<Vec<Fence>>;
    /// Gives a claimed row back to the queue: claimable again from `ready_at` (a retry's
    /// delay, or at once when a worker shuts down), its slots freed; in order with the
    /// writes, refused unless the fence holds.
    fn requeue(&self, fence: &Fence, ready_at: Timestamp) -> StoreResult<()>;
    /// Gives a claimed row back untouched (a worker claimed what it cannot serve): ready
    /// at once, and, when the claim took it over from a worker that lost it, still marked
    /// as lost by that worker, so that the next claimer records the lost attempt.
    fn unclaim(&self, claim: &Claim) -> StoreResult<()>;
    /// The finished rows waiting for `parent`, with how their runs ended, removed from
    /// the queue in the same operation. With a fence (the parent's driver's), refused
    /// unless it holds.
    async fn collect(
        &self,
        parent: &FlowRunId,
        fence: Option<&Fence>,
    ) -> StoreResult<Vec<Finished>>;
    /// Every row of the queue (done rows too), oldest first, at most `limit`.
    async fn work(&self, limit: usize) -> StoreResult<Vec<WorkRecord>>;
    /// Records a worker and what it offers (replacing one of that owner); its heartbeat
    /// moves with each [`renew_leases`](Self::renew_leases), and it is forgotten with its
    /// owner ([`Owners::retire_owner`]).
    async fn register_worker(&self, worker: &WorkerRecord) -> StoreResult<()>;
    async fn workers(&self) -> StoreResult<Vec<WorkerRecord>>;
    /// Says why a queued run waits (no worker serves it, say), as its state message,
    /// while it is still unclaimed; in order with the writes.
    fn explain_waiting(&self, run_id: &str, kind: WorkKind, message: &str) -> StoreResult<()>;
    /// Waits until queued work may be there for a claim (a run was queued or given back),
    /// or at most `timeout`: how an idle worker waits without polling. A backend without
    /// notifications between processes returns after a short poll interval.
    async fn wait_for_work(&self, timeout: std::time::Duration);
    /// Waits until a run `parent` waits for may have finished, or at most `timeout`.
    async fn wait_for_done(&self, parent: &FlowRunId, timeout: std::time::Duration);
    /// A recorder whose writes are fenced: each is applied only while `fence` holds, and
    /// the one that ends the fenced run (its final state) also releases its row.
    fn fenced(self: std::sync::Arc<Self>, fence: Fence) -> std::sync::Arc<dyn Recorder>;
}

/// The tenants and their tokens: what an operator manages, across tenants.
#[async_trait]
pub trait Tenants: Send + Sync {
    /// Records a new tenant; false when one of that name exists (left as it was).
    async fn create_tenant(&self, tenant: &TenantRecord) -> StoreResult<bool>;
    /// The tenant of that name (the default tenant always exists).
    async fn tenant_record(&self, name: &TenantId) -> StoreResult<Option<TenantRecord>>;
    /// Every tenant, by name.
    async fn tenants(&self) -> StoreResult<Vec<TenantRecord>>;
    /// What a tenant uses now (claimed and queued runs of the queue).
    async fn tenant_usage(&self, name: &TenantId, now: Timestamp) -> StoreResult<TenantUsage>;
    /// Takes one run from the tenant's bucket of submissions (`per_minute` refilling it,
    /// `burst` its size) at `now`: `Ok` when there was one, else how long until there is.
    /// In one operation, so that servers sharing the store share the bucket.
    async fn take_submission(
        &self,
        name: &TenantId,
        now: Timestamp,
        per_minute: u32,
        burst: u32,
    ) -> StoreResult<Result<(), std::time::Duration>>;
    /// Sets a tenant's weight, quotas and ceilings; false when there is no such tenant.
    async fn update_tenant(
        &self,
        name: &TenantId,
        weight: u32,
        settings: &TenantSettings,
    ) -> StoreResult<bool>;
    /// Deletes a tenant with everything it owns (runs, their histories and logs,
    /// plugins, cache entries, limits, tokens), in one operation, unless it has runs
    /// that have not ended. Results stay: they are stored once by content, and may be
    /// another tenant's too.
    async fn delete_tenant(&self, name: &TenantId) -> StoreResult<TenantDeletion>;
    /// Stores a token of an existing tenant (`UnknownTenant` otherwise).
    async fn create_token(&self, token: &NewToken) -> StoreResult<()>;
    /// The token stored under `hash` ([`token_hash`]), live or not.
    async fn token_by_hash(&self, hash: &str) -> StoreResult<Option<TokenRecord>>;
    /// The tokens of a tenant (of every tenant for `None`), newest first.
    async fn tokens(&self, tenant: Option<&TenantId>) -> StoreResult<Vec<TokenRecord>>;
    /// Revokes a token at `at`; false when there is no such token (or it was revoked).
    async fn revoke_token(&self, id: &str, at: Timestamp) -> StoreResult<bool>;
}

/// A token bucket of submissions: `tokens` (fractional) at `at`, refilled at
/// `per_minute`, at most `burst`; `None` at first (a full bucket). Returns the bucket after
/// taking one at `now`, or how long until one is there.
pub fn take_from_bucket(
    bucket: Option<(f64, Timestamp)>,
    now: Timestamp,
    per_minute: u32,
    burst: u32,
) -> Result<(f64, Timestamp), std::time::Duration> {
    let burst = f64::from(burst.max(1));
    let per_second = f64::from(per_minute.max(1)) / 60.0;
    let tokens = match bucket {
        None => burst,
        Some((tokens, at)) => {
            let elapsed = (now.0 - at.0).max(0) as f64 / 1e6;
            (tokens + elapsed * per_second).min(burst)
        }
    };
    if tokens >= 1.0 {
        Ok((tokens - 1.0, now))
    } else {
        Err(std::time::Duration::from_secs_f64(
            (1.0 - tokens) / per_second,
        ))
    }
}

/// Every role: what a backend implements, and what the runner and the CLI hold.
pub trait Store:
    Recorder + History + Leases + Owners + Cache + Plugins + Blobs + Queue + Tenants
{
    /// Where the store is, for messages (a directory, or a URL without its password).
    fn location(&self) -> String;
    /// The tenant this handle reads and writes as.
    fn tenant_id(&self) -> &TenantId;
    /// The same store (its connections, writer and pending writes shared) acting as
    /// `tenant`. Cheap: a worker takes one for each run it claims.
    fn for_tenant(&self, tenant: &TenantId) -> std::sync::Arc<dyn Store>;
}

/// A change log as both backends keep one: one entry per committed transaction that
/// wrote runs, at a position that grows in commit order, listing the ids of the runs it
/// wrote (sorted, one per line: [`entry`]).
pub mod change_log {
    use crate::{ChangeCursor, StoreResult};

    /// The entry for a transaction's runs.
    pub fn entry<'a>(ids: impl IntoIterator<Item = &'a str>) -> String {
        ids.into_iter().collect::<Vec<_>>().join("\n")
    }

    /// The first position to read from `since`: its own entry again when the last page
    /// ended inside it.
    pub fn first_position(since: &ChangeCursor) -> i64 {
        match since.after {
            Some(_) => since.seq,
            None => since.seq.saturating_add(1),
        }
    }

    /// Reads up to `limit` run ids from `entries` (position and entry, in position order,
    /// from [`first_position`] on), after the cursor; returns them in order and the cursor
    /// to continue from. An id may come twice (a run changed in two transactions).
    pub fn read(
        since: &ChangeCursor,
        limit: usize,
        entries: impl IntoIterator<Item = StoreResult<(i64, String)>>,
    ) -> StoreResult<(Vec<String>, ChangeCursor)> {
        let mut ids = Vec::new();
        let mut next = since.clone();
        for entry in entries {
            if ids.len() >= limit {
                break;
            }
            let (position, entry) = entry?;
            let after = (position == since.seq)
                .then_some(since.after.as_deref())
                .flatten();
            let mut whole = true;
            for id in entry.split('\n') {
                if after.is_some_and(|after| id <= after) {
                    continue;
                }
                if ids.len() == limit {
                    whole = false;
                    break;
                }
                ids.push(id.to_owned());
                next = ChangeCursor {
                    seq: position,
                    after: Some(id.to_owned()),
                };
            }
            if whole {
                next = ChangeCursor {
                    seq: position,
                    after: None,
                };
            }
        }
        Ok((ids, next))
    }
}

/// The hex blake3 digest of `bytes`: the address of a blob.
pub fn blob_digest(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// Checks bytes read back against the digest they were stored under.
pub fn check_blob(digest: &str, bytes: Vec<u8>) -> StoreResult<Vec<u8>> {
    let found = blob_digest(&bytes);
    if found != digest {
        return Err(StoreError::broken_result(
            digest,
            format!("its content has the digest {found}: the stored copy is damaged"),
        ));
    }
    Ok(bytes)
}

/// Implements [`Recorder`] for `$type` by handing each call to `$target` (an expression
/// of `$self`), which has inherent methods of the same names and signatures: how a
/// backend shares one body between its store and its [fenced](Queue::fenced) recorders.
#[macro_export]
macro_rules! delegate_recorder {
    ($type:ty, $self:ident => $target:expr) => {
        #[async_trait::async_trait]
        impl $crate::Recorder for $type {
            fn create_task_run(
                &$self,
                run: &$crate::NewTaskRun,
                states: &[$crate::StateChange],
                result: Option<&serde_json::Value>,
            ) -> $crate::StoreResult<()> {
                $target.create_task_run(run, states, result)
            }
            fn set_task_run_state(
                &$self,
                id: &weir_core::TaskRunId,
                change: &$crate::StateChange,
            ) -> $crate::StoreResult<()> {
                $target.set_task_run_state(id, change)
            }
            fn finish_task_run(
                &$self,
                id: &weir_core::TaskRunId,
                change: &$crate::StateChange,
                result: Option<&serde_json::Value>,
                cache: Option<&$crate::CacheEntryDraft>,
            ) -> $crate::StoreResult<()> {
                $target.finish_task_run(id, change, result, cache)
            }
            fn append_logs(
                &$self,
                id: &weir_core::TaskRunId,
                lines: &[$crate::LogRecord],
            ) -> $crate::StoreResult<()> {
                $target.append_logs(id, lines)
            }
            fn create_flow_run(
                &$self,
                run: &$crate::NewFlowRun,
                states: &[$crate::StateChange],
            ) -> $crate::StoreResult<()> {
                $target.create_flow_run(run, states)
            }
            fn set_flow_run_state(
                &$self,
                id: &weir_core::FlowRunId,
                change: &$crate::StateChange,
                result: Option<&serde_json::Value>,
            ) -> $crate::StoreResult<()> {
                $target.set_flow_run_state(id, change, result)
            }
            fn record_node_output(
                &$self,
                id: &weir_core::FlowRunId,
                node: &str,
                output: &serde_json::Value,
            ) -> $crate::StoreResult<()> {
                $target.record_node_output(id, node, output)
            }
            async fn flush(&$self) -> $crate::StoreResult<()> {
                $target.flush().await
            }
        }
    };
}

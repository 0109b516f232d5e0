//! The work queue: runs waiting for a worker (task runs, and flow runs to drive), the
//! leases workers hold on them, and the fences that keep a worker whose lease was taken
//! over from writing over the worker that took it.
//!
//! A queued run is a row beside the run's record, created with it in one operation. A
//! worker claims rows (`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite's single writer
//! does the same in order), which gives it a lease until a time it moves on by renewing,
//! and a new *generation* of the row. Every write the worker then makes about the run
//! carries a [`Fence`] (the row and the generation it claimed): the store applies the
//! write only while the row is still at that generation, so a worker that was paused past
//! its lease and comes back finds its writes refused ([`StoreError::LeaseLost`]).
//! Finishing the run releases the row: it is then *done*, until the flow run that waits
//! for it collects it ([`Queue::collect`]), or gone when nothing waits for it.
//!
//! The queue is shared by the tenants: a row is queued as the enqueuing handle's tenant,
//! and everything else (claims, leases, the rows listed by [`Queue::work`]) works across
//! tenants, because a worker serves all of them.

use serde::{Deserialize, Serialize};
use weir_core::{FlowRunId, State, Timestamp};

use crate::{NewFlowRun, NewTaskRun, StateChange};

/// What a queued row runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkKind {
    /// A task run: one attempt per claim.
    Task,
    /// A flow run to drive (its graph), until it ends.
    Flow,
}

impl WorkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkKind::Task => "task",
            WorkKind::Flow => "flow",
        }
    }

    pub fn parse(text: &str) -> Option<WorkKind> {
        match text {
            "task" => Some(WorkKind::Task),
            "flow" => Some(WorkKind::Flow),
            _ => None,
        }
    }
}

/// The right to write about one queued run: its id and the generation a claim gave.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fence {
    pub run_id: String,
    pub generation: i64,
}

/// What a run needs of a worker before the worker may claim it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirements {
    /// Host directories the run is granted (`/host/path`, `:rw` when writable).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dirs: Vec<String>,
    /// Environment variables it is granted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// HTTP hosts it is granted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<String>,
}

impl Requirements {
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty() && self.env.is_empty() && self.http.is_empty()
    }

    /// One text per distinct set of requirements (empty for none), stored with the row:
    /// a worker that cannot serve one set skips every row with it in the same query.
    pub fn key(&self) -> String {
        if self.is_empty() {
            return String::new();
        }
        let mut sorted = self.clone();
        sorted.dirs.sort();
        sorted.env.sort();
        sorted.http.sort();
        serde_json::to_string(&sorted).unwrap_or_default()
    }

    /// Parses a [`key`](Self::key) back.
    pub fn from_key(key: &str) -> Requirements {
        if key.is_empty() {
            return Requirements::default();
        }
        serde_json::from_str(key).unwrap_or_default()
    }
}

/// A run to queue, created with its record in one operation.
#[derive(Debug, Clone)]
pub enum NewWorkRun {
    Task {
        run: NewTaskRun,
        /// Its first states (Pending, with why it waits).
        states: Vec<StateChange>,
    },
    Flow {
        run: NewFlowRun,
        states: Vec<StateChange>,
    },
}

/// A row of the queue, as queued.
#[derive(Debug, Clone)]
pub struct NewWork {
    pub run: NewWorkRun,
    /// What a worker needs to run it (JSON the runner writes and reads; opaque here).
    pub spec: String,
    /// The run's tags: a worker started with tags claims only runs with one of them, and
    /// a tag's concurrency limit is taken when the run is claimed.
    pub tags: Vec<String>,
    pub requirements: Requirements,
    /// Not claimed before this time.
    pub ready_at: Timestamp,
    /// Claimed before the tenant's rows of lower priority (its other tenants' rows are
    /// shared out fairly whatever their priority).
    pub priority: i32,
    /// The most linear memory its attempts may use (a task run's limit), counted
    /// against its tenant's memory in flight while it is claimed.
    pub memory_bytes: Option<u64>,
}

impl NewWork {
    pub fn run_id(&self) -> &str {
        match &self.run {
            NewWorkRun::Task { run, .. } => run.id.as_str(),
            NewWorkRun::Flow { run, .. } => run.id.as_str(),
        }
    }

    pub fn kind(&self) -> WorkKind {
        match &self.run {
            NewWorkRun::Task { .. } => WorkKind::Task,
            NewWorkRun::Flow { .. } => WorkKind::Flow,
        }
    }

    /// The flow run that waits for this one, if any: a task run's flow run, a subflow
    /// run's parent.
    pub fn parent(&self) -> Option<&FlowRunId> {
        match &self.run {
            NewWorkRun::Task { run, .. } => run.flow_run_id.as_ref(),
            NewWorkRun::Flow { run, .. } => run.parent.as_ref().map(|(parent, _)| parent),
        }
    }
}

/// What a worker offers when it claims.
#[derive(Debug, Clone, Default)]
pub struct WorkerOffer {
    /// Its owner id (`own_…`), which becomes the owner of what it claims.
    pub worker: String,
    /// Its name, for messages (`w-host-1234`).
    pub name: String,
    /// When given, only task runs with one of these tags.
    pub tags: Vec<String>,
    /// Requirement keys ([`Requirements::key`]) it cannot serve: skipped in the query.
    pub unservable: Vec<String>,
    /// The runs it is running now: never claimed again by it, even when their leases ran
    /// out while it could not renew them.
    pub holding: Vec<String>,
}

/// A row a worker claimed.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub run_id: String,
    /// Whose run it is: the worker runs it through the store as this tenant.
    pub tenant: weir_core::TenantId,
    /// The tenant's quotas and ceilings as the claim found them (what bounds the run).
    pub settings: crate::TenantSettings,
    pub kind: WorkKind,
    pub parent: Option<FlowRunId>,
    pub spec: String,
    pub tags: Vec<String>,
    pub requirements: Requirements,
    pub fence: Fence,
    /// The worker whose lease on the row ran out (or who was found dead) while it held
    /// it: its attempt was lost. Its name and id.
    pub lost_from: Option<(String, String)>,
    pub created: Timestamp,
    /// For a task run, its record as the claim left it (read in the claim's transaction,
    /// which spares the worker a read per run).
    pub task_run: Option<crate::TaskRunRecord>,
}

/// A row as it stands, for a person (and the tests): what waits, for how long, held by whom.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkRecord {
    pub run_id: String,
    pub tenant: weir_core::TenantId,
    pub kind: WorkKind,
    pub parent: Option<FlowRunId>,
    pub tags: Vec<String>,
    pub requirements: Requirements,
    pub ready_at: Timestamp,
    pub created: Timestamp,
    pub generation: i64,
    /// The worker holding it (or that last held it) and its name.
    pub worker: Option<String>,
    pub worker_name: Option<String>,
    pub lease_expires: Option<Timestamp>,
    /// Finished, waiting to be collected by its parent.
    pub done: bool,
}

/// A finished queued run, collected by the flow run that waited for it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finished {
    pub run_id: String,
    pub kind: WorkKind,
    pub name: String,
    pub state: State,
    pub message: Option<String>,
    pub result_digest: Option<String>,
    pub attempts: u32,
    /// The result's JSON text when it is stored inline (a large one is a blob: read it by
    /// its digest), so that collecting a map's elements reads no result one by one.
    pub inline_result: Option<String>,
}

/// How many runs of each kind a claim takes at most: a worker's free room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Room {
    pub tasks: usize,
    pub flows: usize,
}

impl Room {
    /// Up to `count` of each kind.
    pub fn of_each(count: usize) -> Self {
        Room {
            tasks: count,
            flows: count,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tasks == 0 && self.flows == 0
    }

    pub fn of(&self, kind: WorkKind) -> usize {
        match kind {
            WorkKind::Task => self.tasks,
            WorkKind::Flow => self.flows,
        }
    }
}

/// How a claim takes tag concurrency slots: the claim takes one slot of each limited tag
/// of a task run in the same transaction, or skips the run (it is never claimed to wait).
#[derive(Debug, Clone, Copy)]
pub struct ClaimTimes {
    pub now: Timestamp,
    /// The lease (and the slots taken) last until then, unless renewed.
    pub lease_until: Timestamp,
}

/// The queue's columns as both backends store them.
pub mod queue_columns {
    /// Tags as stored: each between newlines, so that one is found with `LIKE '%\ntag\n%'`
    /// on either engine without JSON functions.
    pub fn tags_column(tags: &[String]) -> String {
        if tags.is_empty() {
            return String::new();
        }
        format!("\n{}\n", tags.join("\n"))
    }

    pub fn tags_from_column(column: &str) -> Vec<String> {
        column
            .split('\n')
            .filter(|tag| !tag.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// `LIKE` pattern of one tag, with the pattern's own characters escaped (`\`).
    pub fn tag_pattern(tag: &str) -> String {
        let escaped = tag
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        format!("%\n{escaped}\n%")
    }
}

/// A worker as the queue knows it: what it offers and when it was last heard of (each
/// lease renewal), so that a run no live worker can take can say why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// Its owner id (`own_…`).
    pub owner: String,
    pub name: String,
    pub offer: WorkerCapabilities,
    pub started: Timestamp,
    pub heartbeat: Timestamp,
}

/// What a worker takes: tags, kinds, grant ceilings, its lease.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerCapabilities {
    /// Empty: every run; else only runs with one of these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    pub drives_flows: bool,
    pub concurrency: usize,
    /// The most it grants.
    #[serde(default)]
    pub ceilings: weir_core::Grants,
    pub lease_ms: u64,
}

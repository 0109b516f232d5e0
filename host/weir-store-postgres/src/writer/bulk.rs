//! The statements one batch's operations share: what would be a statement per operation
//! (a task run created, queued, set Running, finished; a result stored) becomes one
//! statement per kind for the whole batch, its rows passed as arrays. The server's cost
//! is mostly per statement, so a batch of a thousand task runs ending costs a handful of
//! statements, not thousands.
//!
//! A fenced write checks its lease inside the shared statement (its queue row is locked
//! `FOR NO KEY UPDATE` at the claimed generation, or the run is left alone). A shared
//! statement that did less than all its operations ask (a lease lost, a run unknown)
//! fails the batch as a whole; the writer then applies it one operation at a time, which
//! says which operation failed and commits the others.

use std::collections::{BTreeMap, HashMap};
use weir_core::FlowRunId;
use weir_store::{Fence, NewTaskRun, StateChange, StoreError};

use super::{Param, Place, Statements, Step, WriteOp, blob_step, fence_step, step, storable};
use crate::queue::QueueRow;
use crate::results::PreparedResult;

/// The shared statements of a batch, and which operations they stand for wholly.
pub(super) struct Bulk {
    pub(super) steps: Vec<Step>,
    pub(super) covered: Vec<bool>,
    /// Whether every result row of the batch is in `steps`: the operations' own result
    /// steps are then left out.
    pub(super) results: bool,
}

/// Plans the shared statements of `ops`.
pub(super) fn plan(statements: &Statements, ops: &[WriteOp]) -> Bulk {
    let mut covered = vec![false; ops.len()];
    let mut steps = Vec::new();
    creations(statements, ops, &mut covered, &mut steps);
    state_changes(statements, ops, &mut covered, &mut steps);
    let results = results_step(statements, ops);
    // Blobs of the operations it stands for; the others plan their own.
    for (op, covered) in ops.iter().zip(&covered) {
        if let (true, Some(result)) = (*covered, result_of(op)) {
            steps.extend(blob_step(statements, result));
        }
    }
    let bulked_results = results.is_some();
    steps.extend(results);
    Bulk {
        steps,
        covered,
        results: bulked_results,
    }
}

/// New task runs without a result (created, or created and queued): one statement for
/// the runs and their first states, one for their queue rows, and one lease check per
/// driver queueing them. Taking them to the front of the batch is safe: nothing before
/// them in the batch refers to a run that did not exist yet.
fn creations(
    statements: &Statements,
    ops: &[WriteOp],
    covered: &mut [bool],
    steps: &mut Vec<Step>,
) {
    let mut runs = BulkRuns::default();
    let mut work = BulkWork::default();
    let mut fences: BTreeMap<(&str, i64), &Fence> = BTreeMap::new();
    let mut created = Vec::new();
    for (index, op) in ops.iter().enumerate() {
        let (create, row, fence) = match op {
            WriteOp::Enqueue { create, row, fence } => (create.as_ref(), Some(row), fence.as_ref()),
            op => (op, None, None),
        };
        if let WriteOp::CreateTaskRun {
            tenant,
            run,
            input_json,
            tags_json,
            states,
            result: None,
        } = create
        {
            created.push(index);
            runs.push((tenant, run), input_json, tags_json, states);
            if let Some(row) = row {
                work.push(row);
            }
            if let Some(fence) = fence {
                fences.insert((fence.run_id.as_str(), fence.generation), fence);
            }
        }
    }
    // One creation alone is as cheap as its own statements.
    if created.len() < 2 {
        return;
    }
    for index in created {
        covered[index] = true;
    }
    let mut creation = step(&statements.insert_task_runs, runs.into_params());
    creation.place = Place::Created;
    steps.push(creation);
    if !work.is_empty() {
        let mut queued = step(&statements.insert_works, work.into_params());
        queued.place = Place::Created;
        steps.push(queued);
    }
    steps.extend(fences.values().map(|fence| fence_step(statements, fence)));
}

/// The task run a state-changing operation changes, and the fence it is under.
fn state_target(op: &WriteOp) -> Option<(&str, Option<&Fence>, &WriteOp)> {
    match op {
        WriteOp::SetState { id, .. } | WriteOp::FinishTaskRun { id, .. } => {
            Some((id.as_str(), None, op))
        }
        WriteOp::Fenced { fence, op: inner } => match inner.as_ref() {
            WriteOp::SetState { id, .. } | WriteOp::FinishTaskRun { id, .. } => {
                Some((id.as_str(), Some(fence), inner))
            }
            _ => None,
        },
        _ => None,
    }
}

/// A state-changing operation of a batch: its index, its fence, the change.
type StateOp<'a> = (usize, Option<&'a Fence>, &'a WriteOp);

/// State changes of task runs (Running, awaiting a retry, finished), several of one run
/// included (a fast task's Running and Completed often share a batch), in one statement.
/// A run is left to its operations' own statements when one of them is under another
/// run's fence (a driver writing its task run), or when its changes go on after it ended.
fn state_changes(
    statements: &Statements,
    ops: &[WriteOp],
    covered: &mut [bool],
    steps: &mut Vec<Step>,
) {
    let mut per_run: HashMap<&str, Vec<StateOp>> = HashMap::new();
    let mut order = Vec::new();
    for (index, op) in ops.iter().enumerate() {
        if let Some((id, fence, inner)) = state_target(op) {
            let changes = per_run.entry(id).or_default();
            if changes.is_empty() {
                order.push(id);
            }
            changes.push((index, fence, inner));
        }
    }
    let mut columns = BulkChanges::default();
    for id in order {
        let changes = &per_run[id];
        let generation = changes[0].1.map(|fence| fence.generation);
        let alone = changes
            .iter()
            .enumerate()
            .any(|(position, (_, fence, inner))| {
                fence.is_some_and(|fence| fence.run_id != id)
                    || fence.map(|fence| fence.generation) != generation
                    || (matches!(inner, WriteOp::FinishTaskRun { .. })
                        && position + 1 < changes.len())
            });
        if alone {
            continue;
        }
        for (n, (index, _, inner)) in (1..).zip(changes) {
            match inner {
                WriteOp::SetState { change, .. } => {
                    columns.push(id, generation, change, None, n);
                }
                WriteOp::FinishTaskRun {
                    change,
                    result,
                    cache,
                    ..
                } => {
                    let digest = result.as_ref().map(|result| result.digest.as_str());
                    let key = cache.as_ref().map(|cache| cache.key.as_str());
                    columns.push(id, generation, change, Some((digest, key)), n);
                    if let (Some(cache), Some(digest)) = (cache, digest) {
                        steps.push(super::cache_step(statements, cache, digest, id, change.at));
                    }
                }
                _ => unreachable!("a state change"),
            }
            covered[*index] = true;
        }
    }
    if columns.ids.is_empty() {
        return;
    }
    let count = columns.ids.len() as u64;
    let mut shared = step(&statements.change_task_runs, columns.into_params());
    shared.place = Place::Bulked;
    // Every change adds a row to the history; fewer: a run was unknown or its lease lost,
    // which the batch applied one operation at a time says.
    shared.expected = count;
    shared.unless_touched = Some(StoreError::backend(
        "changing the states of task runs",
        "a run is unknown or its lease was lost",
    ));
    steps.push(shared);
}

/// The result an operation stores, if any.
fn result_of(op: &WriteOp) -> Option<&PreparedResult> {
    match op {
        WriteOp::CreateTaskRun { result, .. }
        | WriteOp::FinishTaskRun { result, .. }
        | WriteOp::SetFlowRunState { result, .. } => result.as_ref(),
        WriteOp::RecordNodeOutput { result, .. } => Some(result),
        WriteOp::Fenced { op, .. } | WriteOp::Enqueue { create: op, .. } => result_of(op),
        _ => None,
    }
}

/// Every result row of the batch in one statement, in the order of their digests: two
/// processes storing the same new results lock them in one order, never waiting for
/// each other in a cycle.
fn results_step(statements: &Statements, ops: &[WriteOp]) -> Option<Step> {
    let results: BTreeMap<&str, &PreparedResult> = ops
        .iter()
        .filter_map(result_of)
        .map(|result| (result.digest.as_str(), result))
        .collect();
    if results.is_empty() {
        return None;
    }
    let digests: Vec<String> = results.keys().map(|digest| (*digest).to_owned()).collect();
    let sizes: Vec<i64> = results.values().map(|result| result.size as i64).collect();
    let inline: Vec<Option<String>> = results
        .values()
        .map(|result| result.inline.clone())
        .collect();
    let mut rows = step(
        &statements.insert_results,
        vec![Box::new(digests), Box::new(sizes), Box::new(inline)],
    );
    rows.place = Place::Result(String::new());
    Some(rows)
}

/// The columns of state changes, for `change_task_runs`.
#[derive(Default)]
struct BulkChanges {
    ids: Vec<String>,
    generations: Vec<Option<i64>>,
    states: Vec<String>,
    messages: Vec<Option<String>>,
    attempts: Vec<i32>,
    at: Vec<i64>,
    finishing: Vec<bool>,
    result_digests: Vec<Option<String>>,
    cache_keys: Vec<Option<String>>,
    ordinals: Vec<i32>,
}

impl BulkChanges {
    /// A change; `finish` has the result digest and cache key of a run's last change.
    fn push(
        &mut self,
        id: &str,
        generation: Option<i64>,
        change: &StateChange,
        finish: Option<(Option<&str>, Option<&str>)>,
        ordinal: i32,
    ) {
        self.ids.push(storable(id));
        self.generations.push(generation);
        self.states.push(change.state.as_str().to_owned());
        self.messages.push(change.message.as_deref().map(storable));
        self.attempts
            .push(i32::try_from(change.attempt).unwrap_or(i32::MAX));
        self.at.push(change.at.0);
        self.finishing.push(finish.is_some());
        let (digest, key) = finish.unwrap_or_default();
        self.result_digests.push(digest.map(str::to_owned));
        self.cache_keys.push(key.map(str::to_owned));
        self.ordinals.push(ordinal);
    }

    fn into_params(self) -> Vec<Param> {
        vec![
            Box::new(self.ids),
            Box::new(self.generations),
            Box::new(self.states),
            Box::new(self.messages),
            Box::new(self.attempts),
            Box::new(self.at),
            Box::new(self.finishing),
            Box::new(self.result_digests),
            Box::new(self.cache_keys),
            Box::new(self.ordinals),
        ]
    }
}

/// The columns of queue rows, for `insert_works`.
#[derive(Default)]
struct BulkWork {
    run_ids: Vec<String>,
    kinds: Vec<String>,
    parents: Vec<Option<String>>,
    specs: Vec<String>,
    tags: Vec<String>,
    requirements: Vec<String>,
    ready_at: Vec<i64>,
    created: Vec<i64>,
    tenants: Vec<String>,
    priorities: Vec<i32>,
    memory: Vec<Option<i64>>,
}

impl BulkWork {
    fn is_empty(&self) -> bool {
        self.run_ids.is_empty()
    }

    fn push(&mut self, row: &QueueRow) {
        self.run_ids.push(storable(&row.run_id));
        self.kinds.push(row.kind.as_str().to_owned());
        self.parents.push(row.parent.as_deref().map(storable));
        self.specs.push(storable(&row.spec));
        self.tags.push(storable(&row.tags));
        self.requirements.push(storable(&row.requirements));
        self.ready_at.push(row.ready_at.0);
        self.created.push(row.created.0);
        self.tenants.push(row.tenant.to_string());
        self.priorities.push(row.priority);
        self.memory
            .push(row.memory_bytes.map(|memory| memory as i64));
    }

    fn into_params(self) -> Vec<Param> {
        vec![
            Box::new(self.run_ids),
            Box::new(self.kinds),
            Box::new(self.parents),
            Box::new(self.specs),
            Box::new(self.tags),
            Box::new(self.requirements),
            Box::new(self.ready_at),
            Box::new(self.created),
            Box::new(self.tenants),
            Box::new(self.priorities),
            Box::new(self.memory),
        ]
    }
}

/// The columns of new task runs and of their first states, for `insert_task_runs`.
#[derive(Default)]
struct BulkRuns {
    ids: Vec<String>,
    names: Vec<String>,
    tasks: Vec<String>,
    plugin_names: Vec<String>,
    plugin_digests: Vec<String>,
    flow_runs: Vec<Option<String>>,
    states: Vec<String>,
    messages: Vec<Option<String>>,
    attempts: Vec<i32>,
    inputs: Vec<String>,
    tags: Vec<String>,
    created: Vec<i64>,
    started: Vec<Option<i64>>,
    ended: Vec<Option<i64>>,
    nodes: Vec<Option<String>>,
    map_indexes: Vec<Option<i32>>,
    owners: Vec<Option<String>>,
    history_runs: Vec<String>,
    history_seqs: Vec<i32>,
    history_states: Vec<String>,
    history_messages: Vec<Option<String>>,
    history_attempts: Vec<i32>,
    history_at: Vec<i64>,
    tenants: Vec<String>,
}

impl BulkRuns {
    fn push(
        &mut self,
        (tenant, run): (&weir_core::TenantId, &NewTaskRun),
        input_json: &str,
        tags_json: &str,
        states: &[StateChange],
    ) {
        let last = states.last();
        self.ids.push(storable(run.id.as_str()));
        self.names.push(storable(&run.name));
        self.tasks.push(storable(&run.task));
        self.plugin_names.push(storable(&run.plugin_name));
        self.plugin_digests
            .push(run.plugin_digest.as_str().to_owned());
        self.flow_runs
            .push(run.flow_run_id.as_ref().map(FlowRunId::to_string));
        self.states.push(
            last.map_or("Pending", |change| change.state.as_str())
                .to_owned(),
        );
        self.messages.push(
            last.and_then(|change| change.message.as_deref())
                .map(storable),
        );
        self.attempts.push(last.map_or(0, |change| {
            i32::try_from(change.attempt).unwrap_or(i32::MAX)
        }));
        self.inputs.push(input_json.to_owned());
        self.tags.push(tags_json.to_owned());
        self.created.push(run.created.0);
        self.started.push(
            states
                .iter()
                .find(|change| change.state == weir_core::State::Running)
                .map(|change| change.at.0),
        );
        self.ended.push(
            last.filter(|change| change.state.is_final())
                .map(|change| change.at.0),
        );
        self.nodes.push(run.node.as_deref().map(storable));
        self.map_indexes.push(
            run.map_index
                .map(|index| i32::try_from(index).unwrap_or(i32::MAX)),
        );
        self.owners.push(run.owner.clone());
        self.tenants.push(tenant.to_string());
        for (seq, change) in (1..).zip(states) {
            self.history_runs.push(run.id.to_string());
            self.history_seqs.push(seq);
            self.history_states.push(change.state.as_str().to_owned());
            self.history_messages
                .push(change.message.as_deref().map(storable));
            self.history_attempts
                .push(i32::try_from(change.attempt).unwrap_or(i32::MAX));
            self.history_at.push(change.at.0);
        }
    }

    fn into_params(self) -> Vec<Param> {
        vec![
            Box::new(self.ids),
            Box::new(self.names),
            Box::new(self.tasks),
            Box::new(self.plugin_names),
            Box::new(self.plugin_digests),
            Box::new(self.flow_runs),
            Box::new(self.states),
            Box::new(self.messages),
            Box::new(self.attempts),
            Box::new(self.inputs),
            Box::new(self.tags),
            Box::new(self.created),
            Box::new(self.started),
            Box::new(self.ended),
            Box::new(self.nodes),
            Box::new(self.map_indexes),
            Box::new(self.owners),
            Box::new(self.history_runs),
            Box::new(self.history_seqs),
            Box::new(self.history_states),
            Box::new(self.history_messages),
            Box::new(self.history_attempts),
            Box::new(self.history_at),
            Box::new(self.tenants),
        ]
    }
}

//! Why a queued run waits: when no live worker can take it (none running, none serving
//! its tags, none granting what it is granted, a tag limit of 0), the run says so in its
//! state message instead of waiting silently. Workers look every few seconds; `weir run
//! --submit` looks when it queues a run, and `--wait` while it follows one.

use std::time::Duration;
use weir_core::{Clock, Timestamp};
use weir_store::{Requirements, Store, StoreResult, WorkKind, WorkRecord, WorkerRecord};

use crate::worker::grants_cover;

/// The queued runs looked at per sweep, oldest first.
const SWEEP_ROWS: usize = 500;

/// Whether a worker is alive at `now`: heard of within two leases (it renews every third).
pub fn is_live(worker: &WorkerRecord, now: Timestamp) -> bool {
    let lease = Duration::from_millis(worker.offer.lease_ms.max(1));
    now.since(worker.heartbeat) <= lease * 2 + Duration::from_secs(2)
}

fn describe(requirements: &Requirements) -> String {
    let mut parts = Vec::new();
    parts.extend(
        requirements
            .dirs
            .iter()
            .map(|dir| format!("directory {dir}")),
    );
    parts.extend(
        requirements
            .env
            .iter()
            .map(|name| format!("variable {name}")),
    );
    parts.extend(
        requirements
            .http
            .iter()
            .map(|host| format!("HTTP to {host}")),
    );
    parts.join(", ")
}

/// Why no worker among `live` can take `work`, or None when one can (it waits its turn).
/// `zero_limits`: tags whose concurrency limit is 0.
pub fn why_waiting(
    work: &WorkRecord,
    live: &[&WorkerRecord],
    zero_limits: &[String],
) -> Option<String> {
    if work.kind == WorkKind::Task
        && let Some(tag) = work.tags.iter().find(|tag| zero_limits.contains(tag))
    {
        return Some(format!(
            "waiting: tag `{tag}` has a concurrency limit of 0, so its runs do not start \
             (`weir concurrency-limit create {tag} N` lets them)"
        ));
    }
    if live.is_empty() {
        return Some(
            "waiting: no worker is running on this store (start one with `weir worker`)".into(),
        );
    }
    let by_kind: Vec<&&WorkerRecord> = live
        .iter()
        .filter(|worker| work.kind == WorkKind::Task || worker.offer.drives_flows)
        .collect();
    if by_kind.is_empty() {
        return Some(
            "waiting: no live worker drives flow runs (each was started with --no-flows)".into(),
        );
    }
    let by_tags: Vec<&&&WorkerRecord> = by_kind
        .iter()
        .filter(|worker| {
            work.kind == WorkKind::Flow
                || worker.offer.tags.is_empty()
                || work.tags.iter().any(|tag| worker.offer.tags.contains(tag))
        })
        .collect();
    if by_tags.is_empty() {
        let serving: Vec<String> = by_kind
            .iter()
            .map(|worker| format!("{} serves {}", worker.name, worker.offer.tags.join(", ")))
            .collect();
        return Some(format!(
            "waiting: no live worker serves its tags ({}); {}",
            work.tags.join(", "),
            serving.join("; ")
        ));
    }
    if !by_tags
        .iter()
        .any(|worker| grants_cover(&worker.offer.ceilings, &work.requirements))
    {
        return Some(format!(
            "waiting: no live worker may grant what it is granted ({}); a worker offers it with \
             --allow-dir, --allow-env or --allow-http",
            describe(&work.requirements)
        ));
    }
    None
}

/// Looks at the oldest unclaimed runs of the queue and records, as its state message, why
/// each that no live worker can take waits. Returns those runs and why.
pub async fn explain_waiting_runs(
    store: &dyn Store,
    clock: &dyn Clock,
) -> StoreResult<Vec<(String, String)>> {
    let now = clock.now();
    let workers = store.workers().await?;
    let live: Vec<&WorkerRecord> = workers
        .iter()
        .filter(|worker| is_live(worker, now))
        .collect();
    let zero_limits: Vec<String> = store
        .concurrency_limits(now)
        .await?
        .into_iter()
        .filter(|limit| limit.limit == 0)
        .map(|limit| limit.tag)
        .collect();
    let mut explained = Vec::new();
    for work in store.work(SWEEP_ROWS).await? {
        if work.done || work.worker.is_some() || work.ready_at > now {
            continue;
        }
        if let Some(message) = why_waiting(&work, &live, &zero_limits) {
            store.explain_waiting(&work.run_id, work.kind, &message)?;
            explained.push((work.run_id, message));
        }
    }
    Ok(explained)
}

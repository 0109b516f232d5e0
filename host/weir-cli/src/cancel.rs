//! `weir runs cancel RUN`: a run owned by a live process is cancelled by that process
//! (it reads the request within a fraction of a second, drops the attempts in flight
//! and records everything `Cancelled`); a run no live process owns is ended here.

use serde_json::json;
use std::time::{Duration, Instant};
use weir_core::{Clock, State, SystemClock};
use weir_store::{Ending, OwnerRecord, StateChange, Store};

use crate::Failure;
use crate::runs::view_failure;
use weir_runner::views::{FoundRun as Found, find_run};

const REASON: &str = "requested by `weir runs cancel`";
/// How long to wait for the owning process to record the cancellation.
const OWNER_GRACE: Duration = Duration::from_secs(10);

struct Target {
    kind: &'static str,
    id: String,
    name: String,
    state: State,
    owner: Option<String>,
}

fn target(found: &Found) -> Target {
    match found {
        Found::Flow(run) => Target {
            kind: "flow run",
            id: run.id.to_string(),
            name: run.name.clone(),
            state: run.state,
            owner: run.owner.clone(),
        },
        Found::Task(run) => Target {
            kind: "task run",
            id: run.id.to_string(),
            name: run.name.clone(),
            state: run.state,
            owner: run.owner.clone(),
        },
    }
}

async fn live_owner(
    store: &dyn Store,
    owner: Option<&str>,
) -> Result<Option<OwnerRecord>, Failure> {
    let Some(owner) = owner else {
        return Ok(None);
    };
    weir_runner::live_owner(store, owner, SystemClock.now())
        .await
        .map_err(Failure::internal)
}

pub(crate) async fn cancel(store: &dyn Store, run: &str, json: bool) -> Result<u8, Failure> {
    let found = find_run(store, run).await.map_err(view_failure)?;
    let run = target(&found);
    let report = |state: State, message: &str| {
        if json {
            println!(
                "{}",
                json!({"id": run.id, "name": run.name, "state": state, "message": message})
            );
        } else {
            println!("{message}");
        }
    };
    if run.state.is_final() {
        report(
            run.state,
            &format!(
                "{} '{}' ({}) already ended {}: there is nothing to cancel",
                run.kind, run.name, run.id, run.state
            ),
        );
        return Ok(0);
    }
    let now = SystemClock.now();
    if let Some(owner) = live_owner(store, run.owner.as_deref()).await? {
        store
            .request_cancel(&run.id, REASON, now)
            .await
            .map_err(Failure::internal)?;
        let deadline = Instant::now() + OWNER_GRACE;
        loop {
            let found = find_run(store, &run.id).await.map_err(view_failure)?;
            let state = target(&found).state;
            if state.is_final() {
                report(
                    state,
                    &format!(
                        "{} '{}' ({}) ended {state} (cancelled by process {} on {})",
                        run.kind, run.name, run.id, owner.pid, owner.host
                    ),
                );
                return Ok(0);
            }
            if Instant::now() >= deadline {
                report(
                    state,
                    &format!(
                        "asked process {} on {} to cancel {} '{}' ({}); it has not stopped it within {}s",
                        owner.pid,
                        owner.host,
                        run.kind,
                        run.name,
                        run.id,
                        OWNER_GRACE.as_secs()
                    ),
                );
                return Ok(crate::exit::FAILED);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // No live process runs it (it waits, or predates owners): end it here.
    let message = format!("cancelled: {REASON}");
    match &found {
        Found::Flow(record) => {
            let ending = Ending {
                state: State::Cancelled,
                message: message.clone(),
                at: now,
            };
            store
                .end_flow_run_tree(&record.id, &ending)
                .await
                .map_err(Failure::internal)?;
        }
        Found::Task(record) => {
            let change = StateChange {
                state: State::Cancelled,
                message: Some(message.clone()),
                attempt: record.attempts,
                at: now,
            };
            store
                .finish_task_run(&record.id, &change, None, None)
                .and_then(|()| store.release_slots(record.id.as_str()))
                .map_err(Failure::internal)?;
            store.flush().await.map_err(Failure::internal)?;
        }
    }
    report(
        State::Cancelled,
        &format!("{} '{}' ({}) ended Cancelled", run.kind, run.name, run.id),
    );
    Ok(0)
}

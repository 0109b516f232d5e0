//! Cancelling a run from outside the process that runs it (`weir runs cancel`, the
//! server's API): a run owned by a live process is cancelled by that process (it reads
//! the request within a fraction of a second, drops the attempts in flight and records
//! everything `Cancelled`); a run no live process owns is ended here.

use std::time::{Duration, Instant};
use weir_core::{Clock, State};
use weir_store::{Ending, OwnerRecord, StateChange, Store, StoreError};

use crate::owner::live_owner;
use crate::views::FoundRun;

/// How a request to cancel a run ended.
#[derive(Debug, Clone)]
pub enum CancelOutcome {
    /// The run had already ended, in this state: nothing was done.
    AlreadyEnded(State),
    /// The live process running it recorded its end, in this state.
    EndedBy { owner: OwnerRecord, state: State },
    /// No live process ran it: it was ended `Cancelled` here.
    EndedHere,
    /// The process running it was asked and has not recorded the end within the grace
    /// period; it is still in this state.
    Asked { owner: OwnerRecord, state: State },
}

fn state_of(found: &FoundRun) -> State {
    match found {
        FoundRun::Flow(run) => run.state,
        FoundRun::Task(run) => run.state,
    }
}

fn owner_of(found: &FoundRun) -> Option<&str> {
    match found {
        FoundRun::Flow(run) => run.owner.as_deref(),
        FoundRun::Task(run) => run.owner.as_deref(),
    }
}

async fn reread(store: &dyn Store, found: &FoundRun) -> Result<Option<State>, StoreError> {
    Ok(match found {
        FoundRun::Flow(run) => store.flow_run(&run.id).await?.map(|run| run.state),
        FoundRun::Task(run) => store.task_run(&run.id).await?.map(|run| run.state),
    })
}

/// Cancels `found` for `reason` (recorded in the run's message), waiting up to `grace`
/// for a live owner to record it.
pub async fn cancel_run(
    store: &dyn Store,
    clock: &dyn Clock,
    found: &FoundRun,
    reason: &str,
    grace: Duration,
) -> Result<CancelOutcome, StoreError> {
    let state = state_of(found);
    if state.is_final() {
        return Ok(CancelOutcome::AlreadyEnded(state));
    }
    let now = clock.now();
    let id = match found {
        FoundRun::Flow(run) => run.id.to_string(),
        FoundRun::Task(run) => run.id.to_string(),
    };
    let owner = match owner_of(found) {
        Some(owner) => live_owner(store, owner, now).await?,
        None => None,
    };
    if let Some(owner) = owner {
        store.request_cancel(&id, reason, now).await?;
        let deadline = Instant::now() + grace;
        loop {
            let state = reread(store, found).await?.unwrap_or(State::Cancelled);
            if state.is_final() {
                return Ok(CancelOutcome::EndedBy { owner, state });
            }
            if Instant::now() >= deadline {
                return Ok(CancelOutcome::Asked { owner, state });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // No live process runs it (it waits, or predates owners): end it here.
    let message = format!("cancelled: {reason}");
    match found {
        FoundRun::Flow(record) => {
            let ending = Ending {
                state: State::Cancelled,
                message,
                at: now,
            };
            store.end_flow_run_tree(&record.id, &ending).await?;
        }
        FoundRun::Task(record) => {
            let change = StateChange {
                state: State::Cancelled,
                message: Some(message),
                attempt: record.attempts,
                at: now,
            };
            store.finish_task_run(&record.id, &change, None, None)?;
            store.release_slots(record.id.as_str())?;
            store.flush().await?;
        }
    }
    Ok(CancelOutcome::EndedHere)
}

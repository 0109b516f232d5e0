//! `weir runs cancel RUN`: asks the live process running the run to cancel it, or ends
//! it here when no live process runs it (see [`weir_runner::cancel_run`]).

use serde_json::json;
use std::time::Duration;
use weir_core::{State, SystemClock};
use weir_runner::CancelOutcome;
use weir_store::Store;

use crate::Failure;
use crate::runs::view_failure;
use weir_runner::views::{FoundRun, find_run};

const REASON: &str = "requested by `weir runs cancel`";
/// How long to wait for the owning process to record the cancellation.
const OWNER_GRACE: Duration = Duration::from_secs(10);

pub(crate) async fn cancel(store: &dyn Store, run: &str, json: bool) -> Result<u8, Failure> {
    let found = find_run(store, run).await.map_err(view_failure)?;
    let (kind, id, name) = match &found {
        FoundRun::Flow(run) => ("flow run", run.id.to_string(), run.name.clone()),
        FoundRun::Task(run) => ("task run", run.id.to_string(), run.name.clone()),
    };
    let report = |state: State, message: &str| {
        if json {
            println!(
                "{}",
                json!({"id": id, "name": name, "state": state, "message": message})
            );
        } else {
            println!("{message}");
        }
    };
    let outcome = weir_runner::cancel_run(store, &SystemClock, &found, REASON, OWNER_GRACE)
        .await
        .map_err(Failure::internal)?;
    match outcome {
        CancelOutcome::AlreadyEnded(state) => report(
            state,
            &format!("{kind} '{name}' ({id}) already ended {state}: there is nothing to cancel"),
        ),
        CancelOutcome::EndedBy { owner, state } => report(
            state,
            &format!(
                "{kind} '{name}' ({id}) ended {state} (cancelled by process {} on {})",
                owner.pid, owner.host
            ),
        ),
        CancelOutcome::EndedHere => report(
            State::Cancelled,
            &format!("{kind} '{name}' ({id}) ended Cancelled"),
        ),
        CancelOutcome::Asked { owner, state } => {
            report(
                state,
                &format!(
                    "asked process {} on {} to cancel {kind} '{name}' ({id}); it has not stopped it within {}s",
                    owner.pid,
                    owner.host,
                    OWNER_GRACE.as_secs()
                ),
            );
            return Ok(crate::exit::FAILED);
        }
    }
    Ok(0)
}

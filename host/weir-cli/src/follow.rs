//! Following runs from the store, wherever they run: the lines a run in this process
//! would print (task runs created, their states, their logs), read from the change feed.

use std::collections::{HashMap, HashSet};
use std::time::Duration;
use weir_core::SystemClock;
use weir_core::{FlowRunId, State, TaskRunId};
use weir_runner::{FlowRunLabel, RunLabel, RunObserver};
use weir_store::{ChangeCursor, FlowRunRecord, Store, StoreResult, TaskRunRecord};

use crate::terminal::TerminalObserver;

/// How often the feed is read when nothing changed.
const POLL: Duration = Duration::from_millis(100);
/// Changes read per poll.
const PAGE: usize = 1000;
/// How long the feed may lag behind a run's end before the follower stops waiting.
const FEED_GRACE: Duration = Duration::from_secs(10);
/// How often the follower says why runs that no live worker can take wait (nobody
/// else does when no worker runs).
const EXPLAIN_EVERY: Duration = Duration::from_secs(2);

/// What has been shown of a run so far.
struct Shown {
    state: State,
    logs: usize,
    /// The last reason shown for waiting.
    waiting: Option<String>,
}

/// Follows a flow run and its subflow runs until the flow run ends, printing what
/// happens to `observer`; returns the flow run as it ended. `cursor` is where the feed
/// is read from (taken before anything of the run was shown, so nothing is missed).
pub(crate) async fn follow_flow_run(
    store: &dyn Store,
    id: &FlowRunId,
    mut cursor: ChangeCursor,
    observer: &TerminalObserver,
    logs_shown: HashMap<TaskRunId, usize>,
) -> StoreResult<FlowRunRecord> {
    let mut tree: HashSet<FlowRunId> = HashSet::from([id.clone()]);
    let mut flows: HashMap<FlowRunId, Shown> = HashMap::new();
    // Runs whose lines were printed before: from their next line on.
    let mut tasks: HashMap<TaskRunId, Shown> = HashMap::new();
    for (run, logs) in logs_shown {
        tasks.insert(
            run,
            Shown {
                state: State::Pending,
                logs,
                waiting: None,
            },
        );
    }
    let mut explained = std::time::Instant::now() - EXPLAIN_EVERY;
    // The run ends when the feed shows its end: every change of its runs came before.
    // (The feed may lag behind a direct read: PostgreSQL's waits for older transactions.)
    let mut ended: Option<FlowRunRecord> = None;
    let mut seen_ended_directly: Option<std::time::Instant> = None;
    loop {
        if explained.elapsed() >= EXPLAIN_EVERY {
            explained = std::time::Instant::now();
            weir_runner::waiting::explain_waiting_runs(store, &SystemClock).await?;
        }
        loop {
            let changes = store.changes(&cursor, PAGE).await?;
            cursor = changes.next.clone();
            let full = changes.flow_runs.len() + changes.task_runs.len() >= PAGE;
            // Flow runs first (their task runs are shown under them), their ends last.
            let mut ends = Vec::new();
            for flow in changes.flow_runs {
                let in_tree = tree.contains(&flow.id)
                    || flow
                        .parent_flow_run_id
                        .as_ref()
                        .is_some_and(|parent| tree.contains(parent));
                if !in_tree {
                    continue;
                }
                tree.insert(flow.id.clone());
                if flow.id == *id && flow.state.is_final() {
                    ended = Some(flow.clone());
                }
                if flow.state.is_final() {
                    ends.push(flow);
                } else {
                    show_flow_run(observer, &mut flows, &flow);
                }
            }
            for task in changes.task_runs {
                if task
                    .flow_run_id
                    .as_ref()
                    .is_some_and(|flow| tree.contains(flow))
                {
                    show_task_run(store, observer, &mut tasks, &task).await?;
                }
            }
            for flow in ends {
                show_flow_run(observer, &mut flows, &flow);
            }
            if !full {
                break;
            }
        }
        if let Some(record) = ended {
            return Ok(record);
        }
        // A feed that never shows the end (its log damaged, say) does not hang the
        // follower: the run's own record ends it after a while.
        if let Some(record) = store.flow_run(id).await?.filter(|run| run.state.is_final()) {
            let since = *seen_ended_directly.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() > FEED_GRACE {
                return Ok(record);
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

fn show_flow_run(
    observer: &TerminalObserver,
    flows: &mut HashMap<FlowRunId, Shown>,
    flow: &FlowRunRecord,
) {
    let label = FlowRunLabel {
        id: flow.id.clone(),
        name: flow.name.clone(),
        flow: flow.flow.clone(),
    };
    let shown = flows.entry(flow.id.clone()).or_insert_with(|| {
        observer.flow_run_created(&label);
        Shown {
            state: State::Pending,
            logs: 0,
            waiting: None,
        }
    });
    if shown.state != flow.state {
        shown.state = flow.state;
        observer.flow_run_state(&label, flow.state, flow.state_message.as_deref());
    }
    show_waiting(
        observer,
        &format!("Flow run '{}'", flow.name),
        shown,
        flow.state,
        flow.state_message.as_deref(),
    );
}

/// A Pending run's reason for waiting, once per reason.
fn show_waiting(
    observer: &TerminalObserver,
    label: &str,
    shown: &mut Shown,
    state: State,
    message: Option<&str>,
) {
    if state != State::Pending {
        return;
    }
    if let Some(message) = message.filter(|message| message.starts_with("waiting:"))
        && shown.waiting.as_deref() != Some(message)
    {
        shown.waiting = Some(message.to_owned());
        observer.note(label, message);
    }
}

async fn show_task_run(
    store: &dyn Store,
    observer: &TerminalObserver,
    tasks: &mut HashMap<TaskRunId, Shown>,
    task: &TaskRunRecord,
) -> StoreResult<()> {
    let label = RunLabel {
        id: task.id.clone(),
        name: task.name.clone(),
        task: task.task.clone(),
        flow_run_id: task.flow_run_id.clone(),
        node: task.node.clone(),
        map_index: task.map_index,
    };
    let shown = tasks.entry(task.id.clone()).or_insert_with(|| {
        observer.task_run_created(&label);
        Shown {
            state: State::Pending,
            logs: 0,
            waiting: None,
        }
    });
    let logs = store.logs(&task.id).await?;
    for line in logs.iter().skip(shown.logs) {
        observer.task_run_log(&label, line.level, &line.message);
    }
    shown.logs = shown.logs.max(logs.len());
    if shown.state != task.state {
        shown.state = task.state;
        observer.task_run_state(&label, task.state, task.state_message.as_deref());
    }
    show_waiting(
        observer,
        &format!("Task run '{}'", task.name),
        shown,
        task.state,
        task.state_message.as_deref(),
    );
    Ok(())
}

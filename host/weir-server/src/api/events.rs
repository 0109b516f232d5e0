//! A flow run's live events over Server-Sent Events: its state, its task runs' states,
//! its subflow runs and the log lines of all of them, until it ends. Each follower reads
//! the server's one change feed (see `feed`), so a hundred followers cost one poll.

use crate::tenancy::Shared;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use utoipa::{IntoParams, ToSchema};
use weir_core::{FlowRunId, LogLevel, State, TaskRunId};
use weir_runner::views::LogLine;
use weir_store::{FlowRunFilter, FlowRunRecord, LogRecord, StoreResult, TaskRunRecord};

use super::flow_runs::{TaskRunBrief, find_flow_run};
use super::task_runs::level_param;
use crate::AppState;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::Query;
use crate::feed::FeedPage;

/// The most earlier log lines a new follower is sent (the newest ones); older ones are
/// read with GET /logs.
pub const MAX_BACKLOG_LINES: usize = 5_000;
/// Events waiting for a slow client before the follower waits for it.
const BUFFER: usize = 256;
/// How often the run's own row is read, in case the feed lags behind its end.
const RECHECK: Duration = Duration::from_secs(2);

/// One event of a flow run's stream; the SSE event's name is `type`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum RunEvent {
    /// The flow run, or one of its subflow runs, as it is now.
    FlowRun { flow_run: Box<FlowRunRecord> },
    /// A task run of the tree, when it is created or changes state.
    TaskRun { task_run: TaskRunBrief },
    /// A log line of a task run of the tree.
    Log { line: LogLine },
    /// The follower fell behind and skipped changes: read the run anew.
    Resync,
    /// The flow run ended; the stream closes.
    End { state: State },
}

impl RunEvent {
    fn name(&self) -> &'static str {
        match self {
            RunEvent::FlowRun { .. } => "flow-run",
            RunEvent::TaskRun { .. } => "task-run",
            RunEvent::Log { .. } => "log",
            RunEvent::Resync => "resync",
            RunEvent::End { .. } => "end",
        }
    }
}

/// What a follower wants.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FollowRun {
    /// Send log lines (default true).
    pub logs: Option<bool>,
    /// Only log lines at this level or above.
    pub level: Option<String>,
    /// Start with the lines written so far, up to the newest 5,000 (default true).
    pub backlog: Option<bool>,
    /// The API token, for clients that cannot send headers (a browser's EventSource);
    /// checked by the server's token guard.
    #[allow(dead_code)]
    pub access_token: Option<String>,
}

#[utoipa::path(get, path = "/flow-runs/{id}/events", tag = "flow runs",
    params(("id" = String, Path, description = "A flow run's id or name"), FollowRun),
    responses(
        (status = 200, content_type = "text/event-stream", body = RunEvent,
         description = "Events until the run ends: `flow-run`, `task-run`, `log`, `resync`, `end`"),
        (status = 404, body = ErrorBody)))]
pub(super) async fn flow_run_events(
    Shared(app): Shared<Arc<AppState>>,
    crate::extract::Path(id): crate::extract::Path<String>,
    Query(query): Query<FollowRun>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let run = find_flow_run(&app, &id).await?;
    let wants = Wants {
        logs: query.logs.unwrap_or(true),
        level: level_param(query.level.as_deref())?,
        backlog: query.backlog.unwrap_or(true),
    };
    // Subscribed before anything is read: nothing committed from here on is missed.
    let changes = app.feed.subscribe().await?;
    let (sender, receiver) = mpsc::channel(BUFFER);
    let closing = app.feed.closed();
    let follower = Follower {
        app: app.clone(),
        root: run.id.clone(),
        wants,
        tree: HashSet::from([run.id.clone()]),
        tasks: HashMap::new(),
        sender,
    };
    tokio::spawn(async move {
        tokio::select! {
            result = follower.follow(run, changes) => {
                if let Err(error) = result {
                    tracing::warn!("following a flow run: {error}");
                }
            }
            () = closing.wait() => {}
        }
    });
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        let event: RunEvent = receiver.recv().await?;
        let data = serde_json::to_string(&event).unwrap_or_else(|_| "{}".into());
        Some((
            Ok(Event::default().event(event.name()).data(data)),
            receiver,
        ))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

struct Wants {
    logs: bool,
    level: Option<LogLevel>,
    backlog: bool,
}

/// What a follower has sent of a task run.
struct Sent {
    state: State,
    attempts: u32,
    logs: usize,
}

struct Follower {
    app: Arc<AppState>,
    root: FlowRunId,
    wants: Wants,
    /// The flow run and its subflow runs, at any depth.
    tree: HashSet<FlowRunId>,
    tasks: HashMap<TaskRunId, Sent>,
    sender: mpsc::Sender<RunEvent>,
}

/// The client went away.
struct Gone;

impl Follower {
    async fn send(&self, event: RunEvent) -> Result<(), Gone> {
        self.sender.send(event).await.map_err(|_| Gone)
    }

    async fn follow(
        mut self,
        root: FlowRunRecord,
        mut changes: broadcast::Receiver<Arc<FeedPage>>,
    ) -> StoreResult<()> {
        if self.snapshot(root, true).await?.is_err() {
            return Ok(());
        }
        let mut recheck = tokio::time::interval(RECHECK);
        recheck.tick().await;
        loop {
            let step = tokio::select! {
                received = changes.recv() => match received {
                    Ok(page) => self.apply(&page).await?,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if self.send(RunEvent::Resync).await.is_err() {
                            return Ok(());
                        }
                        match self.app.store.flow_run(&self.root).await? {
                            Some(root) => self.snapshot(root, false).await?,
                            None => return Ok(()),
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                },
                _ = recheck.tick() => match self.app.store.flow_run(&self.root).await? {
                    // The feed shows the end soon after; this covers a feed that lags.
                    Some(root) if root.state.is_final() => {
                        tokio::time::sleep(RECHECK).await;
                        self.snapshot(root, false).await?
                    }
                    _ => Ok(Some(())),
                },
            };
            match step {
                Ok(Some(())) => {}
                Ok(None) | Err(Gone) => return Ok(()),
            }
        }
    }

    /// Sends the tree as it is now (what was sent already is not sent again); returns
    /// `Ok(None)` once the root has ended.
    async fn snapshot(
        &mut self,
        root: FlowRunRecord,
        first: bool,
    ) -> StoreResult<Result<Option<()>, Gone>> {
        let store = self.app.store.clone();
        let mut pending = vec![root.id.clone()];
        let mut runs = vec![root.clone()];
        while let Some(parent) = pending.pop() {
            let children = store
                .flow_runs(&FlowRunFilter {
                    parent: Some(parent),
                    ..Default::default()
                })
                .await?;
            for child in children {
                pending.push(child.id.clone());
                runs.push(child);
            }
        }
        let mut backlog: Vec<LogLine> = Vec::new();
        for run in runs {
            self.tree.insert(run.id.clone());
            let task_runs = weir_runner::views::task_runs_of(store.as_ref(), &run.id).await?;
            if self
                .send(RunEvent::FlowRun {
                    flow_run: Box::new(run),
                })
                .await
                .is_err()
            {
                return Ok(Err(Gone));
            }
            for task in task_runs {
                if self.task_changed(&task) && self.send(task_event(&task)).await.is_err() {
                    return Ok(Err(Gone));
                }
                if self.wants.logs {
                    let lines = store.logs(&task.id).await?;
                    // A first look sends what was written before only when asked to; a
                    // look after falling behind sends every line not sent yet.
                    backlog.extend(self.unsent(&task, &lines, !first || self.wants.backlog));
                }
            }
        }
        backlog.sort_by_key(|line| line.at);
        let skip = backlog.len().saturating_sub(MAX_BACKLOG_LINES);
        for line in backlog.into_iter().skip(skip) {
            if self.send(RunEvent::Log { line }).await.is_err() {
                return Ok(Err(Gone));
            }
        }
        if root.state.is_final() {
            let _ = self.send(RunEvent::End { state: root.state }).await;
            return Ok(Ok(None));
        }
        Ok(Ok(Some(())))
    }

    async fn apply(&mut self, page: &FeedPage) -> StoreResult<Result<Option<()>, Gone>> {
        let mut ended = None;
        for run in &page.changes.flow_runs {
            let in_tree = self.tree.contains(&run.id)
                || run
                    .parent_flow_run_id
                    .as_ref()
                    .is_some_and(|parent| self.tree.contains(parent));
            if !in_tree {
                continue;
            }
            self.tree.insert(run.id.clone());
            if run.id == self.root && run.state.is_final() {
                ended = Some(run.state);
            }
            if self
                .send(RunEvent::FlowRun {
                    flow_run: Box::new(run.clone()),
                })
                .await
                .is_err()
            {
                return Ok(Err(Gone));
            }
        }
        for task in &page.changes.task_runs {
            let in_tree = task
                .flow_run_id
                .as_ref()
                .is_some_and(|flow_run| self.tree.contains(flow_run));
            if !in_tree {
                continue;
            }
            if self.task_changed(task) && self.send(task_event(task)).await.is_err() {
                return Ok(Err(Gone));
            }
            if self.wants.logs {
                let lines = page.logs(self.app.store.as_ref(), &task.id).await?;
                for line in self.unsent(task, &lines, true) {
                    if self.send(RunEvent::Log { line }).await.is_err() {
                        return Ok(Err(Gone));
                    }
                }
            }
        }
        if let Some(state) = ended {
            let _ = self.send(RunEvent::End { state }).await;
            return Ok(Ok(None));
        }
        Ok(Ok(Some(())))
    }

    /// Records the task run's state; whether it is new or changed since last sent.
    fn task_changed(&mut self, task: &TaskRunRecord) -> bool {
        match self.tasks.entry(task.id.clone()) {
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(Sent {
                    state: task.state,
                    attempts: task.attempts,
                    logs: 0,
                });
                true
            }
            std::collections::hash_map::Entry::Occupied(mut entry) => {
                let sent = entry.get_mut();
                let changed = sent.state != task.state || sent.attempts != task.attempts;
                sent.state = task.state;
                sent.attempts = task.attempts;
                changed
            }
        }
    }

    /// The task run's lines (`lines`, all it has) not sent yet; all of them count as
    /// sent from now on, and they are returned only when `keep`.
    fn unsent(&mut self, task: &TaskRunRecord, lines: &[LogRecord], keep: bool) -> Vec<LogLine> {
        let Some(sent) = self.tasks.get_mut(&task.id) else {
            return Vec::new();
        };
        let from = sent.logs.min(lines.len());
        sent.logs = sent.logs.max(lines.len());
        if !keep {
            return Vec::new();
        }
        lines[from..]
            .iter()
            .filter(|line| self.wants.level.is_none_or(|level| line.level >= level))
            .map(|line| LogLine {
                task_run: task.name.clone(),
                task_run_id: task.id.clone(),
                at: line.at,
                level: line.level,
                message: line.message.clone(),
            })
            .collect()
    }
}

fn task_event(task: &TaskRunRecord) -> RunEvent {
    RunEvent::TaskRun {
        task_run: TaskRunBrief::from(task),
    }
}

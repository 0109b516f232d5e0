//! One reader of the store's change feed for the whole server, whatever the number of
//! live followers: it polls while anyone listens and hands each page of changes to every
//! follower (each keeps what concerns it). A follower that falls behind is told so and
//! reads the state of its runs anew.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::sync::broadcast;
use weir_core::TaskRunId;
use weir_store::{ChangeCursor, Changes, LogRecord, Store, StoreResult};

/// How often the feed is read when nothing changed.
const POLL: Duration = Duration::from_millis(100);
/// Changes read per poll.
const PAGE: usize = 1000;
/// Pages kept for a slow follower before it is told it fell behind.
const BACKLOG: usize = 256;

#[derive(Clone)]
pub(crate) struct Feed {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    sender: broadcast::Sender<Arc<FeedPage>>,
    poller: Mutex<Option<tokio::task::JoinHandle<()>>>,
    closed: Closing,
}

impl Feed {
    pub fn new(store: Arc<dyn Store>) -> Self {
        let (sender, _) = broadcast::channel(BACKLOG);
        Feed {
            inner: Arc::new(Inner {
                store,
                sender,
                poller: Mutex::new(None),
                closed: Default::default(),
            }),
        }
    }

    /// Starts listening: every change committed after this call reaches the receiver.
    pub async fn subscribe(&self) -> StoreResult<broadcast::Receiver<Arc<FeedPage>>> {
        let receiver = self.inner.sender.subscribe();
        let cursor = {
            let running = self
                .inner
                .poller
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .as_ref()
                .is_some_and(|poller| !poller.is_finished());
            if running {
                return Ok(receiver);
            }
            // Taken before the poller starts, so nothing committed from now on is missed.
            self.inner.store.changes_now().await?
        };
        let mut poller = self
            .inner
            .poller
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if poller.as_ref().is_none_or(|poller| poller.is_finished()) {
            *poller = Some(tokio::spawn(poll(self.inner.clone(), cursor)));
        }
        Ok(receiver)
    }

    /// Whether the server is stopping: followers end.
    pub fn closed(&self) -> Closing {
        self.inner.closed.clone()
    }

    pub fn close(&self) {
        self.inner.closed.close();
    }
}

/// A page of the change feed, and the log lines of its task runs, each read once for
/// every follower that asks (a hundred followers of one run cost one read).
pub(crate) struct FeedPage {
    pub changes: Changes,
    logs: Mutex<HashMap<TaskRunId, Arc<LogsOnce>>>,
}

/// A task run's log lines, read by the first follower that asks.
type LogsOnce = tokio::sync::OnceCell<Arc<Vec<LogRecord>>>;

impl FeedPage {
    /// The task run's log lines, as read when a follower first asked.
    pub async fn logs(
        &self,
        store: &dyn Store,
        id: &TaskRunId,
    ) -> StoreResult<Arc<Vec<LogRecord>>> {
        let cell = self
            .logs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(id.clone())
            .or_default()
            .clone();
        cell.get_or_try_init(|| async { store.logs(id).await.map(Arc::new) })
            .await
            .cloned()
    }
}

async fn poll(inner: Arc<Inner>, mut cursor: ChangeCursor) {
    loop {
        if inner.sender.receiver_count() == 0 || inner.closed.is_closed() {
            return;
        }
        match inner.store.changes(&cursor, PAGE).await {
            Ok(changes) => {
                let full = changes.flow_runs.len() + changes.task_runs.len() >= PAGE;
                let empty = changes.flow_runs.is_empty() && changes.task_runs.is_empty();
                cursor = changes.next.clone();
                if !empty {
                    // No receiver left is checked at the top of the loop.
                    let _ = inner.sender.send(Arc::new(FeedPage {
                        changes,
                        logs: Mutex::default(),
                    }));
                }
                if !full {
                    tokio::time::sleep(POLL).await;
                }
            }
            Err(error) => {
                tracing::warn!("reading the store's change feed: {error}");
                tokio::time::sleep(POLL * 10).await;
            }
        }
    }
}

/// A flag that followers wait on: the server is stopping.
#[derive(Clone, Default)]
pub(crate) struct Closing {
    inner: Arc<(AtomicBool, Notify)>,
}

impl Closing {
    pub fn close(&self) {
        self.inner.0.store(true, Ordering::SeqCst);
        self.inner.1.notify_waiters();
    }

    pub fn is_closed(&self) -> bool {
        self.inner.0.load(Ordering::SeqCst)
    }

    pub async fn wait(&self) {
        loop {
            // Created before the check: a close in between still wakes it.
            let notified = self.inner.1.notified();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }
}

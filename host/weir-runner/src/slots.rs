//! Tag concurrency limits as the runner sees them: wait for a slot of every limited tag
//! of a task run, hold it while an attempt runs (renewing its lease), give it back
//! however the attempt ends.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use weir_store::{SlotRequest, Store};

use crate::runner::TaskRunner;

/// How long a slot stays held without a heartbeat: a killed process's slots free after this.
pub(crate) const LEASE: Duration = Duration::from_secs(30);
/// How often a waiting run checks for slots freed by other processes; slots freed in this
/// process wake waiters at once.
const OTHER_PROCESS_POLL: Duration = Duration::from_millis(25);
/// How often a runner whose runs wait for slots looks for dead owners holding them: a
/// process killed while holding a slot frees it within this, not a lease length.
const DEAD_OWNER_CHECK: Duration = Duration::from_millis(250);

/// Held slots; dropping it gives them back and wakes waiting runs.
pub(crate) struct SlotGuard {
    store: Arc<dyn Store>,
    holder: String,
    freed: Arc<Notify>,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.heartbeat.abort();
        if let Err(error) = self.store.release_slots(&self.holder) {
            tracing::error!(
                "could not release the slots of {}: {}",
                self.holder,
                error.describe()
            );
        }
        self.freed.notify_waiters();
    }
}

impl TaskRunner {
    /// Waits until `holder` holds a slot of every limited tag among `tags`. An error
    /// says which tag's limit is 0 (such runs are aborted).
    pub(crate) async fn acquire_slots(
        &self,
        tags: &[String],
        holder: &str,
    ) -> Result<SlotGuard, String> {
        loop {
            let freed = self.slots_freed.notified();
            tokio::pin!(freed);
            // Registered before asking, so a release in between is not missed.
            freed.as_mut().enable();
            let now = self.clock.now();
            let store = self.store.clone();
            let (asked_tags, asked_holder) = (tags.to_vec(), holder.to_owned());
            // If this waiter is dropped (its run cancelled) while the store answers,
            // nobody would release what it granted: the request is a task of its own,
            // which finishes either way and gives back a grant nobody took.
            let (granted, waiter) = tokio::sync::oneshot::channel::<()>();
            let request = tokio::spawn(async move {
                let request = store
                    .acquire_slots(&asked_tags, &asked_holder, now, now.saturating_add(LEASE))
                    .await;
                if matches!(request, Ok(SlotRequest::Granted)) && granted.send(()).is_err() {
                    let _ = store.release_slots(&asked_holder);
                }
                request
            })
            .await
            .unwrap_or_else(|panic| {
                Err(weir_store::StoreError::backend(
                    "acquiring concurrency slots",
                    panic.to_string(),
                ))
            });
            drop(waiter);
            match request {
                Ok(SlotRequest::Granted) => return Ok(self.hold(holder)),
                Ok(SlotRequest::Zero { tag }) => {
                    return Err(format!(
                        "tag `{tag}` has a concurrency limit of 0: its task runs are aborted"
                    ));
                }
                Ok(SlotRequest::Full { .. }) => {
                    if self.reap_dead_owners().await {
                        continue;
                    }
                }
                Err(error) => {
                    tracing::error!("could not ask for concurrency slots: {}", error.describe())
                }
            }
            tokio::select! {
                _ = &mut freed => {}
                _ = tokio::time::sleep(OTHER_PROCESS_POLL) => {}
            }
        }
    }

    /// Records the runs of dead owners Crashed, which frees their slots (at most every
    /// [`DEAD_OWNER_CHECK`] per runner). Returns whether any run was ended.
    async fn reap_dead_owners(&self) -> bool {
        {
            let mut last = self
                .last_reap
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let now = std::time::Instant::now();
            if last.is_some_and(|last| now.duration_since(last) < DEAD_OWNER_CHECK) {
                return false;
            }
            *last = Some(now);
        }
        let (store, clock) = (self.store.clone(), self.clock.clone());
        match crate::owner::reap_orphans(store.as_ref(), clock.as_ref()).await {
            Ok(reaped) => reaped.iter().any(|(_, ended)| !ended.is_empty()),
            Err(error) => {
                tracing::error!("could not look for dead run owners: {}", error.describe());
                false
            }
        }
    }

    fn hold(&self, holder: &str) -> SlotGuard {
        let store = self.store.clone();
        let clock = self.clock.clone();
        let renewed = holder.to_owned();
        let heartbeat = tokio::spawn(async move {
            loop {
                tokio::time::sleep(LEASE / 3).await;
                if let Err(error) = store.renew_slots(&renewed, clock.now().saturating_add(LEASE)) {
                    tracing::error!(
                        "could not renew the slots of {renewed}: {}",
                        error.describe()
                    );
                }
            }
        });
        SlotGuard {
            store: self.store.clone(),
            holder: holder.to_owned(),
            freed: self.slots_freed.clone(),
            heartbeat,
        }
    }
}

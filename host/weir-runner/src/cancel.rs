//! Cancellation: a token per run, children cancelled with their parent, carrying the
//! reason a person will read ("interrupted (SIGINT)", "requested by `weir runs cancel`").

use std::sync::{Arc, Mutex, Weak};
use tokio::sync::Notify;

/// A run's cancellation. Cancelling it cancels every token made with [`child`]
/// (a flow run's task runs and subflow runs), now or later; the first reason wins.
///
/// [`child`]: CancelToken::child
#[derive(Clone, Default)]
pub struct CancelToken(Arc<TokenNode>);

#[derive(Default)]
struct TokenNode {
    state: Mutex<TokenState>,
    cancelled: Notify,
}

#[derive(Default)]
struct TokenState {
    reason: Option<String>,
    children: Vec<Weak<TokenNode>>,
}

impl std::fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CancelToken").field(&self.reason()).finish()
    }
}

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(node: &TokenNode) -> std::sync::MutexGuard<'_, TokenState> {
        node.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A token cancelled when this one is (at once, if this one already is).
    pub fn child(&self) -> CancelToken {
        let child = CancelToken::new();
        let mut state = Self::lock(&self.0);
        match &state.reason {
            Some(reason) => {
                let reason = reason.clone();
                drop(state);
                child.cancel(&reason);
            }
            None => {
                // Children of long flow runs come and go by the thousand: drop the dead
                // ones whenever the list doubles, so it stays proportional to the live.
                if state.children.len() >= 64 && state.children.len().is_power_of_two() {
                    state.children.retain(|child| child.strong_count() > 0);
                }
                state.children.push(Arc::downgrade(&child.0));
            }
        }
        child
    }

    /// Cancels this token and its children; a token already cancelled keeps its reason.
    pub fn cancel(&self, reason: &str) {
        let children = {
            let mut state = Self::lock(&self.0);
            if state.reason.is_some() {
                return;
            }
            state.reason = Some(reason.to_owned());
            std::mem::take(&mut state.children)
        };
        self.0.cancelled.notify_waiters();
        for child in children.iter().filter_map(Weak::upgrade) {
            CancelToken(child).cancel(reason);
        }
    }

    /// Why it was cancelled, if it was.
    pub fn reason(&self) -> Option<String> {
        Self::lock(&self.0).reason.clone()
    }

    pub fn is_cancelled(&self) -> bool {
        Self::lock(&self.0).reason.is_some()
    }

    /// Waits until it is cancelled; returns the reason.
    pub async fn cancelled(&self) -> String {
        loop {
            let notified = self.0.cancelled.notified();
            tokio::pin!(notified);
            // Registered before the check, so a cancel in between is not missed.
            notified.as_mut().enable();
            if let Some(reason) = self.reason() {
                return reason;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cancelling_a_parent_cancels_its_children_with_the_first_reason() {
        let root = CancelToken::new();
        let flow = root.child();
        let task = flow.child();
        let waiting = tokio::spawn({
            let task = task.clone();
            async move { task.cancelled().await }
        });
        flow.cancel("interrupted (SIGINT)");
        flow.cancel("a later reason");
        assert_eq!(waiting.await.unwrap(), "interrupted (SIGINT)");
        assert!(!root.is_cancelled());
        // A child made after the cancel starts cancelled.
        assert_eq!(
            flow.child().reason().as_deref(),
            Some("interrupted (SIGINT)")
        );
    }

    #[test]
    fn dropped_children_do_not_accumulate() {
        let root = CancelToken::new();
        for _ in 0..10_000 {
            drop(root.child());
        }
        assert!(CancelToken::lock(&root.0).children.len() <= 128);
    }
}

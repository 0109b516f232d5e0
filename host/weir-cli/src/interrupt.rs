//! Ctrl-C and SIGTERM while a run goes on: the first cancels every run of the process
//! (each ends `Cancelled`, its slots released, the store flushed before the exit), a
//! second exits at once.

use std::sync::{Arc, OnceLock};
use tokio::signal::unix::{SignalKind, signal};
use weir_runner::TaskRunner;

/// Watches for SIGINT and SIGTERM until dropped.
pub(crate) struct Interrupts {
    received: Arc<OnceLock<Received>>,
    watcher: tokio::task::JoinHandle<()>,
}

#[derive(Clone, Copy)]
struct Received {
    name: &'static str,
    exit_code: u8,
}

impl Interrupts {
    /// Starts watching; a signal cancels `runner`'s runs.
    pub(crate) fn watch(runner: Arc<TaskRunner>) -> Self {
        Self::watch_with("cancelling the run", move |reason| {
            runner.cancel_all(reason)
        })
    }

    /// Starts watching; the first signal calls `on_signal` with a reason (`interrupted
    /// (SIGTERM)`), saying it is `doing` that.
    pub(crate) fn watch_with(
        doing: &'static str,
        on_signal: impl Fn(&str) + Send + 'static,
    ) -> Self {
        let received = Arc::new(OnceLock::new());
        let seen = received.clone();
        // Installed before returning, so a signal from now on is caught, not fatal.
        let handlers = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        );
        let watcher = tokio::spawn(async move {
            let (Ok(mut interrupt), Ok(mut terminate)) = handlers else {
                eprintln!("warning: could not watch for SIGINT and SIGTERM");
                return;
            };
            loop {
                let signal = tokio::select! {
                    _ = interrupt.recv() => Received { name: "SIGINT", exit_code: 130 },
                    _ = terminate.recv() => Received { name: "SIGTERM", exit_code: 143 },
                };
                if let Some(first) = seen.get() {
                    let first: &Received = first;
                    eprintln!("{}: exiting at once", signal.name);
                    std::process::exit(i32::from(first.exit_code));
                }
                let _ = seen.set(signal);
                eprintln!(
                    "{}: {doing} (press Ctrl-C again to exit at once)",
                    signal.name
                );
                on_signal(&format!("interrupted ({})", signal.name));
            }
        });
        Interrupts { received, watcher }
    }

    /// The exit code for the signal that interrupted the run (130 for SIGINT, 143 for
    /// SIGTERM), if one did.
    pub(crate) fn exit_code(&self) -> Option<u8> {
        self.received.get().map(|received| received.exit_code)
    }
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

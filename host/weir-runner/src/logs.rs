//! The log sink of one task run: shown at once, recorded in the store in batches.

use std::sync::{Arc, Mutex};
use weir_core::{Clock, LogLevel};
use weir_runtime::LogSink;
use weir_store::{LogRecord, Recorder};

use crate::observer::{RunLabel, RunObserver};

/// Lines are written to the store whenever the run changes state, and when this many
/// are waiting, so a chatty task costs one transaction per batch, not per line.
const FLUSH_EVERY_LINES: usize = 256;

pub(crate) struct RunLog {
    label: RunLabel,
    store: Arc<dyn Recorder>,
    clock: Arc<dyn Clock>,
    observer: Arc<dyn RunObserver>,
    pending: Mutex<Vec<LogRecord>>,
}

impl RunLog {
    pub(crate) fn new(
        label: RunLabel,
        store: Arc<dyn Recorder>,
        clock: Arc<dyn Clock>,
        observer: Arc<dyn RunObserver>,
    ) -> Self {
        RunLog {
            label,
            store,
            clock,
            observer,
            pending: Mutex::new(Vec::new()),
        }
    }

    /// Writes waiting lines to the store. A store failure is reported, not fatal: the
    /// run's state and result matter more than its log.
    pub(crate) fn flush(&self) {
        let lines = std::mem::take(&mut *self.lock());
        if let Err(error) = self.store.append_logs(&self.label.id, &lines) {
            tracing::error!(
                "could not record {} log lines of {}: {}",
                lines.len(),
                self.label.id,
                error.describe()
            );
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<LogRecord>> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl LogSink for RunLog {
    fn log(&self, level: LogLevel, message: &str) {
        self.observer.task_run_log(&self.label, level, message);
        let full = {
            let mut pending = self.lock();
            pending.push(LogRecord {
                at: self.clock.now(),
                level,
                message: message.to_owned(),
            });
            pending.len() >= FLUSH_EVERY_LINES
        };
        if full {
            self.flush();
        }
    }
}

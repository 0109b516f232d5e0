//! Prefect-style lines on stderr: `11:22:01.123 | INFO    | Task run 'add-0' - message`.
//! On a terminal, a long map shows one progress line instead of three lines per element.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use weir_core::{Clock, FlowRunId, LogLevel, State, SystemClock};
use weir_runner::{FlowRunLabel, RunLabel, RunObserver};

/// A map with at least this many elements gets a progress line on a terminal.
const LONG_MAP: usize = 50;
const BAR_WIDTH: usize = 30;

pub(crate) struct TerminalObserver {
    /// Redraws a progress line in place; off when stderr is a file or a pipe.
    interactive: bool,
    state: Mutex<Screen>,
    /// The UI of a weir server over the same store (`WEIR_UI_URL`): each flow run's
    /// address there is printed when it is created, as Prefect does.
    ui_url: Option<String>,
}

struct Screen {
    out: Box<dyn Write + Send>,
    /// Long maps in progress, by flow run and node: the percentage last drawn.
    long_maps: HashMap<(FlowRunId, String), usize>,
    /// The progress line last drawn, if it is on screen.
    progress: Option<String>,
}

/// `WEIR_UI_URL`, without a trailing `/`; empty is none.
fn ui_url() -> Option<String> {
    std::env::var("WEIR_UI_URL")
        .ok()
        .map(|url| url.trim().trim_end_matches('/').to_owned())
        .filter(|url| !url.is_empty())
}

impl TerminalObserver {
    /// A flow run's address in the UI, when one is configured.
    pub(crate) fn run_address(&self, id: &FlowRunId) -> Option<String> {
        self.ui_url.as_ref().map(|url| format!("{url}/runs/{id}"))
    }

    pub(crate) fn stderr() -> Self {
        use std::io::IsTerminal;
        Self::new(Box::new(std::io::stderr()), std::io::stderr().is_terminal())
    }

    pub(crate) fn new(out: Box<dyn Write + Send>, interactive: bool) -> Self {
        TerminalObserver {
            interactive,
            ui_url: ui_url(),
            state: Mutex::new(Screen {
                out,
                long_maps: HashMap::new(),
                progress: None,
            }),
        }
    }

    fn screen(&self) -> std::sync::MutexGuard<'_, Screen> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A line of its own, as the runs' lines are printed.
    pub(crate) fn note(&self, label: &str, message: &str) {
        self.print(LogLevel::Info, label, message);
    }

    fn print(&self, level: LogLevel, label: &str, message: &str) {
        let now = SystemClock.now().time_of_day();
        let mut screen = self.screen();
        let line = format!("{now} | {:<7} | {label} - {message}", level.as_str());
        // A closed stderr must not stop the run; every line is in the store anyway.
        if screen.progress.is_some() {
            let _ = write!(screen.out, "\r\x1b[2K");
        }
        let _ = writeln!(screen.out, "{line}");
        if let Some(progress) = screen.progress.clone() {
            let _ = write!(screen.out, "{progress}");
        }
        let _ = screen.out.flush();
    }

    /// Whether a routine line about this task run is replaced by its map's progress line.
    fn folded(&self, run: &RunLabel) -> bool {
        if !self.interactive || run.map_index.is_none() {
            return false;
        }
        match (&run.flow_run_id, &run.node) {
            (Some(flow_run), Some(node)) => self
                .screen()
                .long_maps
                .contains_key(&(flow_run.clone(), node.clone())),
            _ => false,
        }
    }
}

fn task_label(run: &RunLabel) -> String {
    format!("Task run '{}'", run.name)
}

impl RunObserver for TerminalObserver {
    fn flow_run_created(&self, run: &FlowRunLabel) {
        self.print(
            LogLevel::Info,
            &format!("Flow run '{}'", run.name),
            &format!("Created flow run '{}' for flow '{}'", run.name, run.flow),
        );
        if let Some(address) = self.run_address(&run.id) {
            self.print(
                LogLevel::Info,
                &format!("Flow run '{}'", run.name),
                &format!("View at {address}"),
            );
        }
    }

    fn flow_run_state(&self, run: &FlowRunLabel, state: State, message: Option<&str>) {
        let label = format!("Flow run '{}'", run.name);
        match state {
            State::Pending | State::Running => {}
            State::AwaitingRetry => {
                self.print(
                    LogLevel::Warning,
                    &label,
                    message.unwrap_or("awaiting retry"),
                );
            }
            State::Completed => self.print(LogLevel::Info, &label, "Finished in state Completed()"),
            _ => self.print(
                LogLevel::Error,
                &label,
                &format!(
                    "Finished in state {state}('{}')",
                    message.unwrap_or_default()
                ),
            ),
        }
    }

    fn worker(&self, worker: &str, message: &str) {
        self.print(LogLevel::Info, &format!("Worker '{worker}'"), message);
    }

    fn map_progress(&self, run: &FlowRunLabel, node: &str, finished: usize, total: usize) {
        if !self.interactive || total < LONG_MAP {
            return;
        }
        let key = (run.id.clone(), node.to_owned());
        let mut screen = self.screen();
        // Redraw at most once per percent: a map of 100,000 makes 100 redraws, not 100,000.
        let percent = finished * 100 / total;
        if finished > 0 && finished < total && screen.long_maps.get(&key) == Some(&percent) {
            return;
        }
        let filled = BAR_WIDTH * finished / total.max(1);
        let line = format!(
            "{} | INFO    | Flow run '{}' - node '{node}': {finished}/{total} task runs finished [{}{}]",
            SystemClock.now().time_of_day(),
            run.name,
            "#".repeat(filled),
            ".".repeat(BAR_WIDTH - filled)
        );
        let _ = write!(screen.out, "\r\x1b[2K{line}");
        if finished >= total {
            let _ = writeln!(screen.out);
            screen.long_maps.remove(&key);
            screen.progress = None;
        } else {
            screen.long_maps.insert(key, percent);
            screen.progress = Some(line);
        }
        let _ = screen.out.flush();
    }

    fn task_run_created(&self, run: &RunLabel) {
        if self.folded(run) {
            return;
        }
        self.print(
            LogLevel::Info,
            &task_label(run),
            &format!("Created task run '{}' for task '{}'", run.name, run.task),
        );
    }

    fn task_run_log(&self, run: &RunLabel, level: LogLevel, message: &str) {
        if level <= LogLevel::Info && self.folded(run) {
            return;
        }
        self.print(level, &task_label(run), message);
    }

    fn task_run_state(&self, run: &RunLabel, state: State, message: Option<&str>) {
        match state {
            State::Pending | State::Running => {}
            State::AwaitingRetry => {
                self.print(
                    LogLevel::Warning,
                    &task_label(run),
                    message.unwrap_or("awaiting retry"),
                );
            }
            State::Completed | State::Cached => {
                if !self.folded(run) {
                    self.print(
                        LogLevel::Info,
                        &task_label(run),
                        &format!("Finished in state {state}()"),
                    );
                }
            }
            _ => self.print(
                LogLevel::Error,
                &task_label(run),
                &format!(
                    "Finished in state {state}('{}')",
                    message.unwrap_or_default()
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use weir_core::TaskRunId;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn element(flow: &FlowRunLabel, index: u32) -> RunLabel {
        RunLabel {
            id: TaskRunId::generate(),
            name: format!("add-{index}"),
            task: "add".into(),
            flow_run_id: Some(flow.id.clone()),
            node: Some("sum".into()),
            map_index: Some(index),
        }
    }

    fn run_map(interactive: bool, total: usize) -> String {
        let captured = Captured::default();
        let observer = TerminalObserver::new(Box::new(captured.clone()), interactive);
        let flow = FlowRunLabel {
            id: FlowRunId::generate(),
            name: "great-ammonite".into(),
            flow: "demo".into(),
        };
        observer.map_progress(&flow, "sum", 0, total);
        for index in 0..total {
            let run = element(&flow, index as u32);
            observer.task_run_created(&run);
            observer.task_run_log(&run, LogLevel::Info, "adding");
            if index == 3 {
                observer.task_run_state(&run, State::Failed, Some("boom"));
            } else {
                observer.task_run_state(&run, State::Completed, None);
            }
            observer.map_progress(&flow, "sum", index + 1, total);
        }
        String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn a_long_map_shows_progress_instead_of_every_run_on_a_terminal() {
        let screen = run_map(true, 100);
        assert!(
            !screen.contains("Created task run"),
            "routine lines are folded"
        );
        assert!(
            screen.contains(
                "node 'sum': 100/100 task runs finished [##############################]\n"
            )
        );
        assert!(
            screen
                .contains("node 'sum': 50/100 task runs finished [###############...............]")
        );
        // Failures are never folded.
        assert!(screen.contains("Task run 'add-3' - Finished in state Failed('boom')"));
    }

    #[test]
    fn short_maps_and_pipes_get_every_line() {
        let short = run_map(true, 10);
        assert_eq!(short.matches("Created task run").count(), 10);
        assert!(!short.contains("task runs finished"));
        let piped = run_map(false, 100);
        assert_eq!(piped.matches("Created task run").count(), 100);
        assert!(!piped.contains('\r'));
    }
}

//! Prefect-style lines on stderr: `11:22:01.123 | INFO    | Task run 'add-0' - message`.

use std::io::Write;
use weir_core::{Clock, LogLevel, State, SystemClock};
use weir_runner::{FlowRunLabel, RunLabel, RunObserver};

pub(crate) struct TerminalObserver;

fn print_line(level: LogLevel, run: &RunLabel, message: &str) {
    print_labelled(level, &format!("Task run '{}'", run.name), message);
}

fn print_labelled(level: LogLevel, label: &str, message: &str) {
    let now = SystemClock.now().time_of_day();
    let mut stderr = std::io::stderr().lock();
    // A closed stderr must not stop the run; the line is in the store anyway.
    let _ = writeln!(
        stderr,
        "{now} | {:<7} | {label} - {message}",
        level.as_str()
    );
}

impl RunObserver for TerminalObserver {
    fn flow_run_created(&self, run: &FlowRunLabel) {
        print_labelled(
            LogLevel::Info,
            &format!("Flow run '{}'", run.name),
            &format!("Created flow run '{}' for flow '{}'", run.name, run.flow),
        );
    }

    fn flow_run_state(&self, run: &FlowRunLabel, state: State, message: Option<&str>) {
        let label = format!("Flow run '{}'", run.name);
        match state {
            State::Pending | State::Running => {}
            State::AwaitingRetry => {
                print_labelled(
                    LogLevel::Warning,
                    &label,
                    message.unwrap_or("awaiting retry"),
                );
            }
            State::Completed => {
                print_labelled(LogLevel::Info, &label, "Finished in state Completed()");
            }
            _ => print_labelled(
                LogLevel::Error,
                &label,
                &format!(
                    "Finished in state {state}('{}')",
                    message.unwrap_or_default()
                ),
            ),
        }
    }

    fn task_run_created(&self, run: &RunLabel) {
        print_line(
            LogLevel::Info,
            run,
            &format!("Created task run '{}' for task '{}'", run.name, run.task),
        );
    }

    fn task_run_log(&self, run: &RunLabel, level: LogLevel, message: &str) {
        print_line(level, run, message);
    }

    fn task_run_state(&self, run: &RunLabel, state: State, message: Option<&str>) {
        match state {
            State::Pending | State::Running => {}
            State::AwaitingRetry => {
                print_line(LogLevel::Warning, run, message.unwrap_or("awaiting retry"));
            }
            State::Completed | State::Cached => {
                print_line(LogLevel::Info, run, &format!("Finished in state {state}()"));
            }
            _ => print_line(
                LogLevel::Error,
                run,
                &format!(
                    "Finished in state {state}('{}')",
                    message.unwrap_or_default()
                ),
            ),
        }
    }
}

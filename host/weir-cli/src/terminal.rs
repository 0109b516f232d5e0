//! Prefect-style lines on stderr: `11:22:01.123 | INFO    | Task run 'add-0' - message`.

use std::io::Write;
use weir_core::{Clock, LogLevel, State, SystemClock};
use weir_runner::{RunLabel, RunObserver};

pub(crate) struct TerminalObserver;

fn print_line(level: LogLevel, run: &RunLabel, message: &str) {
    let now = SystemClock.now().time_of_day();
    let mut stderr = std::io::stderr().lock();
    // A closed stderr must not stop the run; the line is in the store anyway.
    let _ = writeln!(
        stderr,
        "{now} | {:<7} | Task run '{}' - {message}",
        level.as_str(),
        run.name
    );
}

impl RunObserver for TerminalObserver {
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

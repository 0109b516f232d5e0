use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The state of a task run (and later, a flow run), named as in Prefect where the meaning is the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum State {
    /// Created, not started (waiting for a slot, an upstream, or a retry delay's start).
    Pending,
    /// An attempt is executing.
    Running,
    /// An attempt failed and another will start after the retry delay.
    AwaitingRetry,
    /// The task returned an output.
    Completed,
    /// The output came from the cache; nothing was run.
    Cached,
    /// The task returned an error (fatal, or retriable with no retries left).
    Failed,
    /// The attempt exceeded its timeout and was stopped.
    TimedOut,
    /// The attempt died: a trap, a panic, a limit (memory, fuel, stack) or an output that is not JSON.
    Crashed,
    /// Stopped on request before it finished.
    Cancelled,
    /// Never started because something it needs failed.
    NotReady,
}

impl State {
    pub const ALL: [State; 10] = [
        State::Pending,
        State::Running,
        State::AwaitingRetry,
        State::Completed,
        State::Cached,
        State::Failed,
        State::TimedOut,
        State::Crashed,
        State::Cancelled,
        State::NotReady,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "Pending",
            State::Running => "Running",
            State::AwaitingRetry => "AwaitingRetry",
            State::Completed => "Completed",
            State::Cached => "Cached",
            State::Failed => "Failed",
            State::TimedOut => "TimedOut",
            State::Crashed => "Crashed",
            State::Cancelled => "Cancelled",
            State::NotReady => "NotReady",
        }
    }

    /// A final state never changes again.
    pub fn is_final(self) -> bool {
        !matches!(self, State::Pending | State::Running | State::AwaitingRetry)
    }

    /// The run produced an output (run or cached).
    pub fn is_success(self) -> bool {
        matches!(self, State::Completed | State::Cached)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad` honours width and alignment, for tables.
        f.pad(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "unknown state `{0}`; expected one of Pending, Running, AwaitingRetry, Completed, Cached, Failed, TimedOut, Crashed, Cancelled, NotReady"
)]
pub struct StateParseError(String);

impl FromStr for State {
    type Err = StateParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        State::ALL
            .into_iter()
            .find(|state| state.as_str().eq_ignore_ascii_case(text))
            .ok_or_else(|| StateParseError(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for state in State::ALL {
            assert_eq!(state.as_str().parse::<State>().unwrap(), state);
        }
        assert!("Done".parse::<State>().is_err());
    }
}

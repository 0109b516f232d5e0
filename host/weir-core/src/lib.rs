//! weir's domain types, shared by every other crate: ids, states, task metadata,
//! retry and cache policies, cache keys, limits and the clock.
//!
//! This crate has no I/O and no runtime: the sandbox (`weir-runtime`), the store
//! (`weir-store`) and the task runner (`weir-runner`) all speak in these types, so
//! none of them depends on another's internals.
//!
//! ```
//! use weir_core::{RetryPolicy, RetryDelays, State};
//! use std::time::Duration;
//!
//! let policy = RetryPolicy {
//!     retries: 3,
//!     delays: RetryDelays::PerRetry(vec![Duration::from_secs(1), Duration::from_secs(5)]),
//!     jitter_factor: None,
//! };
//! // The last delay repeats for later retries.
//! assert_eq!(policy.delay_before_retry(2, 0.5), Duration::from_secs(5));
//! assert!(State::Cached.is_final() && State::Cached.is_success());
//! ```

mod cache;
mod clock;
mod duration;
mod grants;
mod ids;
mod json;
mod limits;
mod size;
mod state;
mod task;
mod tenant;

#[cfg(test)]
mod properties;

pub use cache::{CacheKey, CachePolicy, ComponentDigest};
pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use duration::{DurationParseError, format_duration, parse_duration};
pub use grants::{DirGrant, Grants, HttpGrant, Need};
pub use ids::{FlowRunId, OwnerId, TaskRunId, TokenId};
pub use json::canonical_json;
pub use limits::{Limits, declared};
pub use size::{format_size, parse_size};
pub use state::{State, StateParseError};
pub use task::{LogLevel, RetryDelays, RetryPolicy, RunContext, TaskInfo, TaskOverrides};
pub use tenant::{TenantId, TenantNameError, TokenScope};

/// An error and its causes on one line (`what: why: why`): what a state message or a log
/// line shows, where `{error}` alone would drop the causes.
pub fn describe_error(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        text.push_str(": ");
        text.push_str(&error.to_string());
        cause = error.source();
    }
    text
}

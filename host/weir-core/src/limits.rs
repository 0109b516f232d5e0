use serde::{Deserialize, Serialize};

/// Resource bounds of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Linear memory the task may grow to, in bytes, summed over its memories.
    pub memory_bytes: u64,
    /// Instructions-worth of fuel; none means CPU is bounded by the timeout only.
    pub fuel: Option<u64>,
}

impl Limits {
    /// 256 MiB: enough for Python or JavaScript interpreters, small enough to run many side by side.
    pub const DEFAULT_MEMORY_BYTES: u64 = 256 << 20;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: Self::DEFAULT_MEMORY_BYTES,
            fuel: None,
        }
    }
}

/// The most a plugin may declare in its task metadata (`info()`): a plugin is untrusted
/// input, and a value past these is refused when the plugin loads, with the task and
/// field named. They are far above any sensible setting.
pub mod declared {
    use std::time::Duration;

    /// Tasks in one plugin.
    pub const MAX_TASKS: usize = 1_000;
    /// Retries of one task.
    pub const MAX_RETRIES: u32 = 1_000;
    /// Entries of a per-retry delay list.
    pub const MAX_RETRY_DELAYS: usize = 1_000;
    /// One retry delay, an exponential backoff's base or its cap: a day.
    pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(24 * 3600);
    /// The retry jitter factor (a delay is spread within ±factor of itself).
    pub const MAX_JITTER_FACTOR: f64 = 10.0;
    /// A task's timeout: a week.
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
    /// How long a cached result stays valid: ten years.
    pub const MAX_CACHE_EXPIRATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
    /// Bytes of a task name, a tag, a version or a need.
    pub const MAX_NAME_BYTES: usize = 256;
    /// Bytes of a description or a run-name template.
    pub const MAX_TEXT_BYTES: usize = 16 << 10;
    /// Tags or needs of one task.
    pub const MAX_TAGS: usize = 64;
    /// Bytes of an input or output JSON Schema.
    pub const MAX_SCHEMA_BYTES: usize = 1 << 20;
}

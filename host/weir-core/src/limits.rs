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

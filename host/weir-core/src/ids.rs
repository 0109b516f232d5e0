use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// 26 characters: 48 bits of milliseconds then 80 random bits, in Crockford base32,
/// so ids sort by creation time (as ULIDs do). Within one millisecond the random part
/// counts up, so ids made by one process are strictly increasing.
fn sortable_unique() -> String {
    static LAST: Mutex<(u128, u128)> = Mutex::new((0, 0));
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis())
        .unwrap_or(0);
    let (stamp, random) = {
        let mut last = LAST.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // A clock that steps back keeps the last stamp, so order still holds.
        *last = if millis <= last.0 {
            (last.0, last.1 + 1)
        } else {
            // 79 random bits leave room to count up within the millisecond.
            (millis, fastrand::u128(..) >> 49)
        };
        *last
    };
    let value = ((stamp & ((1 << 48) - 1)) << 80) | (random & ((1 << 80) - 1));
    (0..26)
        .rev()
        .map(|index| CROCKFORD[((value >> (index * 5)) & 0x1f) as usize] as char)
        .collect()
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, sortable_unique()))
            }

            /// Wraps an id read back from the store or typed by a user.
            pub fn from_string(id: impl Into<String>) -> Self {
                Self(id.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(&self.0)
            }
        }
    };
}

prefixed_id!(
    /// A task run's id, e.g. `trun_01JD3Q…`.
    TaskRunId,
    "trun_"
);
prefixed_id!(
    /// A flow run's id, e.g. `frun_01JD3Q…`.
    FlowRunId,
    "frun_"
);
prefixed_id!(
    /// A process that runs work, as the store knows it, e.g. `own_01JD3Q…`.
    OwnerId,
    "own_"
);
prefixed_id!(
    /// An API token, as `weir token ls` shows it and `weir token revoke` takes it, e.g.
    /// `tok_01JD3Q…` (never the token's secret text).
    TokenId,
    "tok_"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_prefix_and_are_unique() {
        let first = TaskRunId::generate();
        let second = TaskRunId::generate();
        assert!(first.as_str().starts_with("trun_"));
        assert_eq!(first.as_str().len(), 5 + 26);
        assert_ne!(first, second);
    }

    #[test]
    fn ids_made_in_a_row_increase() {
        let ids: Vec<TaskRunId> = (0..1000).map(|_| TaskRunId::generate()).collect();
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
    }
}

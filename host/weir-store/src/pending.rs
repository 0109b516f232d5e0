//! Cache entries this process wrote that a backend's writer has not committed yet: a
//! helper for backends that write in the background.
//!
//! A cache lookup reads the committed store without waiting for the writer (a hit must
//! not wait for a commit), so an entry written a moment ago by this process would be
//! missed; this holds those until they are committed. The database stays the truth:
//! once an entry's write is committed it is forgotten here, so an entry that another
//! process cleared or replaced is never served from memory.

use crate::CacheEntry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use weir_core::{CacheKey, TenantId, Timestamp};

/// An entry and the writer sequence number of the write that records it.
type Pending = (CacheEntry, Arc<serde_json::Value>, u64);

/// Entries are per tenant, as the cache is.
#[derive(Default)]
pub struct PendingEntries {
    entries: Mutex<HashMap<(TenantId, CacheKey), Pending>>,
}

impl PendingEntries {
    fn lock(&self) -> MutexGuard<'_, HashMap<(TenantId, CacheKey), Pending>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The entry for `key` if its write is still uncommitted (call it after reading the
    /// committed store, with `committed` read before that) (`committed` is the
    /// writer's last committed sequence number) and it has not expired at `now`.
    pub fn get(
        &self,
        tenant: &TenantId,
        key: &CacheKey,
        now: Timestamp,
        committed: u64,
    ) -> Option<(CacheEntry, Arc<serde_json::Value>)> {
        let mut entries = self.lock();
        let slot = (tenant.clone(), key.clone());
        let (entry, result, sequence) = entries.get(&slot)?;
        if *sequence <= committed {
            entries.remove(&slot);
            return None;
        }
        match entry.expires {
            Some(expires) if expires <= now => None,
            _ => Some((entry.clone(), result.clone())),
        }
    }

    /// Remembers an entry written by the write numbered `sequence`; forgets entries
    /// committed since (the map holds only what is in the writer's queue).
    pub fn insert(
        &self,
        tenant: &TenantId,
        entry: CacheEntry,
        result: Arc<serde_json::Value>,
        sequence: u64,
        committed: u64,
    ) {
        let mut entries = self.lock();
        // Swept at each power of two, so a long queue costs amortized O(1) per insert.
        if entries.len() >= 1024 && entries.len().is_power_of_two() {
            entries.retain(|_, (_, _, pending)| *pending > committed);
        }
        entries.insert(
            (tenant.clone(), entry.key.clone()),
            (entry, result, sequence),
        );
    }

    /// Forgets a tenant's entries (its cache was cleared).
    pub fn clear(&self, tenant: &TenantId) {
        self.lock().retain(|(owner, _), _| owner != tenant);
    }
}

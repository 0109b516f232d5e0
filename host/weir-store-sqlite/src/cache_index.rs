//! An in-memory index of the cache entries this process wrote or read, so a cache hit
//! costs a hash-map lookup instead of a database round trip. The database stays the
//! truth: a miss here falls back to it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use weir_core::{CacheKey, Timestamp};
use weir_store::CacheEntry;

/// Entries kept in memory; beyond this the oldest half is dropped.
const CAPACITY: usize = 16 * 1024;

#[derive(Default)]
pub(crate) struct CacheIndex {
    entries: Mutex<HashMap<CacheKey, (CacheEntry, Arc<serde_json::Value>)>>,
}

impl CacheIndex {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<CacheKey, (CacheEntry, Arc<serde_json::Value>)>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn get(
        &self,
        key: &CacheKey,
        now: Timestamp,
    ) -> Option<(CacheEntry, Arc<serde_json::Value>)> {
        let entries = self.lock();
        let (entry, result) = entries.get(key)?;
        match entry.expires {
            Some(expires) if expires <= now => None,
            _ => Some((entry.clone(), result.clone())),
        }
    }

    pub(crate) fn insert(&self, entry: CacheEntry, result: Arc<serde_json::Value>) {
        let mut entries = self.lock();
        if entries.len() >= CAPACITY {
            let mut by_age: Vec<(Timestamp, CacheKey)> = entries
                .iter()
                .map(|(key, (entry, _))| (entry.created, key.clone()))
                .collect();
            by_age.sort_unstable_by_key(|(created, _)| *created);
            for (_, key) in by_age.into_iter().take(CAPACITY / 2) {
                entries.remove(&key);
            }
        }
        entries.insert(entry.key.clone(), (entry, result));
    }

    pub(crate) fn clear(&self) {
        self.lock().clear();
    }
}

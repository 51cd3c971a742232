//! Open connections counted per key (a client address, a user), up to a
//! maximum that a reload may change (0: no limit). Without a limit nothing
//! is counted (a lock per handshake for nothing); a limit set by a reload
//! counts the connections opened from then on.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

pub mod peers;

pub struct KeyedLimit<K> {
    max: AtomicUsize,
    counts: Mutex<HashMap<K, usize>>,
}

/// The key already has its most connections.
#[derive(Debug)]
pub struct Full;

impl<K: Hash + Eq + Clone> KeyedLimit<K> {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(KeyedLimit { max: AtomicUsize::new(max), counts: Mutex::new(HashMap::new()) })
    }

    pub fn set(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
    }

    fn counts(&self) -> MutexGuard<'_, HashMap<K, usize>> {
        self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A slot for one more connection of `key` (none when there is no
    /// limit), or `Full`.
    pub fn admit(self: &Arc<Self>, key: K) -> Result<Option<Slot<K>>, Full> {
        let max = self.max.load(Ordering::Relaxed);
        if max == 0 {
            return Ok(None);
        }
        let mut counts = self.counts();
        let count = counts.entry(key.clone()).or_insert(0);
        if *count >= max {
            return Err(Full);
        }
        *count += 1;
        Ok(Some(Slot { limit: self.clone(), key }))
    }

    /// Keys with at least one counted connection.
    pub fn keys(&self) -> usize {
        self.counts().len()
    }
}

/// One counted connection, until dropped.
pub struct Slot<K: Hash + Eq + Clone> {
    limit: Arc<KeyedLimit<K>>,
    key: K,
}

impl<K: Hash + Eq + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut counts = self.limit.counts();
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_up_to_the_limit_and_forgets_keys_at_zero() {
        let limit = KeyedLimit::new(2);
        let a = limit.admit("ann").unwrap();
        let _b = limit.admit("ann").unwrap();
        assert!(limit.admit("ann").is_err());
        assert!(limit.admit("bob").is_ok(), "another key");
        drop(a);
        let c = limit.admit("ann").unwrap();
        assert_eq!(limit.keys(), 1, "bob's slot was dropped at once");
        drop((c, _b));
        assert_eq!(limit.keys(), 0);
    }

    #[test]
    fn no_limit_counts_nothing_and_a_new_limit_applies_at_once() {
        let limit = KeyedLimit::new(0);
        assert!(limit.admit("ann").unwrap().is_none());
        limit.set(1);
        let _a = limit.admit("ann").unwrap();
        assert!(limit.admit("ann").is_err());
        limit.set(0);
        assert!(limit.admit("ann").is_ok());
    }
}

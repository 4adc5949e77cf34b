//! Store reads on the visitor path, kept in memory for at most one revocation poll.
//!
//! Every WebSocket (a visitor's first one and every reconnect) and every exchange read
//! the link, and every console of a registered target reads the target: a trip to the
//! store each (for SQLite, a hand-off to the blocking pool). [`ReadCache`] keeps these
//! rows, and the revocation poll (`background`) empties it at every tick, before it
//! checks the live sessions' links in the store itself. So:
//!
//! * a revoke or a target change made in this process takes effect at once (the entry is
//!   dropped: `App::revoke_link`, `put_target`, `delete_target`);
//! * one made elsewhere (CLI, another gateway on the same store) is seen by new sessions
//!   after the next tick, like the sessions already open: a session opened from an entry
//!   read before the revoke is live at that tick, and ended by it;
//! * what must be exact is decided by the store anyway: a use is counted by the
//!   redemption's conditional UPDATE (never from a cached row), expiry against the clock.
//!
//! A read that started before a clear does not put its (possibly older) row back after
//! it: inserts are checked against a generation that every clear bumps.

use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

/// Rows read from the store, bounded (a full cache is emptied first), emptied at every
/// revocation poll.
#[derive(Debug)]
pub(crate) struct ReadCache<K: Eq + Hash, V> {
    map: DashMap<K, V>,
    generation: AtomicU64,
    max: usize,
}

impl<K: Eq + Hash + Clone, V: Clone> ReadCache<K, V> {
    pub(crate) fn new(max: usize) -> Self {
        ReadCache {
            map: DashMap::new(),
            generation: AtomicU64::new(0),
            max: max.max(1),
        }
    }

    pub(crate) fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.map.get(key).map(|v| v.clone())
    }

    /// The generation to pass to [`ReadCache::insert`]: take it BEFORE reading the store.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Caches a row read from the store after [`ReadCache::generation`] returned `gen`,
    /// unless the cache was cleared (or the key invalidated) since.
    pub(crate) fn insert(&self, gen: u64, key: K, value: V) {
        if self.generation() != gen {
            return;
        }
        if self.map.len() >= self.max && !self.map.contains_key(&key) {
            self.map.clear();
        }
        self.map.insert(key.clone(), value);
        // A clear that ran between the check above and the insert must win.
        if self.generation() != gen {
            self.map.remove(&key);
        }
    }

    /// Drops one key (a change made in this process).
    pub(crate) fn invalidate<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.map.remove(key);
    }

    /// Drops everything (at every revocation poll). The map keeps its capacity.
    pub(crate) fn clear(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.map.clear();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_from_before_a_clear_or_an_invalidation_is_not_cached() {
        let c: ReadCache<String, u32> = ReadCache::new(16);
        let gen = c.generation();
        c.clear();
        c.insert(gen, "a".into(), 1);
        assert_eq!(c.get("a"), None);
        let gen = c.generation();
        c.invalidate("b");
        c.insert(gen, "a".into(), 1);
        assert_eq!(c.get("a"), None);
        let gen = c.generation();
        c.insert(gen, "a".into(), 2);
        assert_eq!(c.get("a"), Some(2));
        c.invalidate("a");
        assert_eq!(c.get("a"), None);
        c.insert(c.generation(), "a".into(), 3);
        c.clear();
        assert_eq!(c.get("a"), None);
    }

    #[test]
    fn the_cache_stays_bounded() {
        let c: ReadCache<u32, u32> = ReadCache::new(8);
        for i in 0..100 {
            c.insert(c.generation(), i, i);
            assert!(c.len() <= 8);
            assert_eq!(c.get(&i), Some(i));
        }
    }
}

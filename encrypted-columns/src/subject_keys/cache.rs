//! Unwrapped subject keys kept in memory: a bounded number, each for a bounded time.
//!
//! The cache is what keeps reads working while the KEK provider is down (a KMS outage must not
//! break reads the cache can serve), and what makes a listing of many subjects cost one
//! batch of unwraps instead of one per row per request. Its bound and time-to-live are the
//! operator's trade-off: a longer TTL survives longer outages but keeps a subject whose key
//! was destroyed by *another* process readable here until the entry expires (destroying
//! through this `SubjectKeys` evicts at once).
//!
//! Eviction is least-recently-used; keys are `Zeroizing` and wiped when evicted, expired,
//! replaced or dropped.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use crate::kek::WRAPPED_KEY_LEN;

/// How many keys to cache and for how long.
///
/// ```
/// use std::time::Duration;
/// use encrypted_columns::subject_keys::CacheConfig;
///
/// let config = CacheConfig::new(10_000, Some(Duration::from_secs(15 * 60)));
/// assert_eq!(config.capacity(), 10_000);
/// assert!(CacheConfig::disabled().capacity() == 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    capacity: usize,
    ttl: Option<Duration>,
}

impl Default for CacheConfig {
    /// 10,000 keys for 10 minutes.
    fn default() -> Self {
        CacheConfig {
            capacity: 10_000,
            ttl: Some(Duration::from_secs(600)),
        }
    }
}

impl CacheConfig {
    /// At most `capacity` keys, each served for `ttl` after it was unwrapped (`None`: until
    /// evicted).
    pub fn new(capacity: usize, ttl: Option<Duration>) -> Self {
        CacheConfig { capacity, ttl }
    }

    /// No caching: every open asks the provider.
    pub fn disabled() -> Self {
        CacheConfig {
            capacity: 0,
            ttl: None,
        }
    }

    /// The bound on cached keys.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The time-to-live, if any.
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl
    }
}

struct Entry {
    key: Zeroizing<[u8; WRAPPED_KEY_LEN]>,
    unwrapped_at: Instant,
    /// Position in `Lru::order`.
    tick: u64,
}

#[derive(Default)]
struct Lru {
    entries: HashMap<i64, Entry>,
    /// Use tick → row, oldest first.
    order: BTreeMap<u64, i64>,
    next_tick: u64,
}

/// The cache itself (see the [module docs](self)).
pub(super) struct KeyCache {
    config: CacheConfig,
    inner: Mutex<Lru>,
}

impl KeyCache {
    pub(super) fn new(config: CacheConfig) -> Self {
        KeyCache {
            config,
            inner: Mutex::default(),
        }
    }

    pub(super) fn config(&self) -> CacheConfig {
        self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        // Holds keys and bookkeeping only; a panic elsewhere cannot leave it inconsistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn expired(&self, entry: &Entry, now: Instant) -> bool {
        self.config
            .ttl
            .is_some_and(|ttl| now.duration_since(entry.unwrapped_at) >= ttl)
    }

    /// The cached key of `row`, unless absent or expired (an expired one is wiped here).
    pub(super) fn get(&self, row: i64) -> Option<Zeroizing<[u8; WRAPPED_KEY_LEN]>> {
        let now = Instant::now();
        let mut lru = self.lock();
        let lru = &mut *lru;
        let entry = lru.entries.get_mut(&row)?;
        if self.expired(entry, now) {
            let tick = entry.tick;
            lru.order.remove(&tick);
            lru.entries.remove(&row);
            return None;
        }
        lru.order.remove(&entry.tick);
        entry.tick = lru.next_tick;
        lru.order.insert(entry.tick, row);
        lru.next_tick += 1;
        Some(entry.key.clone())
    }

    /// Caches `key` for `row`, evicting the least recently used keys beyond the bound.
    pub(super) fn insert(&self, row: i64, key: &Zeroizing<[u8; WRAPPED_KEY_LEN]>) {
        if self.config.capacity == 0 {
            return;
        }
        let mut lru = self.lock();
        let lru = &mut *lru;
        let tick = lru.next_tick;
        lru.next_tick += 1;
        if let Some(old) = lru.entries.insert(
            row,
            Entry {
                key: key.clone(),
                unwrapped_at: Instant::now(),
                tick,
            },
        ) {
            lru.order.remove(&old.tick);
        }
        lru.order.insert(tick, row);
        while lru.entries.len() > self.config.capacity {
            let Some((_, oldest)) = lru.order.pop_first() else {
                break;
            };
            lru.entries.remove(&oldest);
        }
    }

    /// Forgets `row`'s key (wiping it).
    pub(super) fn evict(&self, row: i64) {
        let mut lru = self.lock();
        if let Some(entry) = lru.entries.remove(&row) {
            lru.order.remove(&entry.tick);
        }
    }

    /// How many keys are cached (expired ones included until touched).
    pub(super) fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> Zeroizing<[u8; 32]> {
        Zeroizing::new([b; 32])
    }

    #[test]
    fn subject_cache_is_bounded_least_recently_used() {
        let cache = KeyCache::new(CacheConfig::new(2, None));
        cache.insert(1, &key(1));
        cache.insert(2, &key(2));
        assert_eq!(*cache.get(1).unwrap(), [1; 32]); // 1 is now the most recent
        cache.insert(3, &key(3));
        assert_eq!(cache.len(), 2);
        assert!(cache.get(2).is_none(), "least recently used evicted");
        assert!(cache.get(1).is_some() && cache.get(3).is_some());
        cache.insert(3, &key(4));
        assert_eq!(*cache.get(3).unwrap(), [4; 32]);
        assert_eq!(cache.len(), 2);
        cache.evict(3);
        assert!(cache.get(3).is_none());
        let off = KeyCache::new(CacheConfig::disabled());
        off.insert(1, &key(1));
        assert!(off.get(1).is_none());
    }

    #[test]
    fn subject_cache_entries_expire_after_their_ttl() {
        let cache = KeyCache::new(CacheConfig::new(10, Some(Duration::ZERO)));
        cache.insert(1, &key(1));
        assert!(cache.get(1).is_none(), "a zero TTL serves nothing");
        assert_eq!(cache.len(), 0, "the expired key is dropped when met");
        let cache = KeyCache::new(CacheConfig::new(10, Some(Duration::from_secs(3600))));
        cache.insert(1, &key(1));
        assert!(cache.get(1).is_some());
    }
}

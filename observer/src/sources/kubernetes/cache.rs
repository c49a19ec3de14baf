//! A small cache of objects fetched from the API, bounded in entries and
//! age: a burst of `Pulling` events for one pod (one per container, and
//! repeats) costs one GET, and nothing stays long enough to go stale.
//!
//! Pure: the caller passes the time.

use std::{
    collections::{HashMap, VecDeque},
    hash::Hash,
    time::{Duration, Instant},
};

pub struct TtlCache<K, V> {
    entries: HashMap<K, (Instant, V)>,
    /// Insertion order, oldest first, for eviction at capacity.
    order: VecDeque<K>,
    capacity: usize,
    ttl: Duration,
}

impl<K: Clone + Eq + Hash, V: Clone> TtlCache<K, V> {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        TtlCache {
            entries: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            ttl,
        }
    }

    /// The value stored for `key` if it is younger than the TTL at `now`.
    pub fn get(&self, key: &K, now: Instant) -> Option<V> {
        self.entries
            .get(key)
            .filter(|(stored, _)| now.saturating_duration_since(*stored) < self.ttl)
            .map(|(_, value)| value.clone())
    }

    pub fn insert(&mut self, key: K, value: V, now: Instant) {
        if self.entries.insert(key.clone(), (now, value)).is_some() {
            self.order.retain(|k| k != &key);
        }
        self.order.push_back(key);
        while self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.entries.remove(&oldest);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_the_oldest_go_first_at_capacity() {
        let start = Instant::now();
        let mut cache = TtlCache::new(2, Duration::from_secs(5));
        cache.insert("a", 1, start);
        cache.insert("b", 2, start + Duration::from_secs(1));
        assert_eq!(cache.get(&"a", start + Duration::from_secs(4)), Some(1));
        assert_eq!(cache.get(&"a", start + Duration::from_secs(5)), None);
        // Re-inserting refreshes both the value and its place.
        cache.insert("a", 3, start + Duration::from_secs(2));
        cache.insert("c", 4, start + Duration::from_secs(3));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&"b", start + Duration::from_secs(3)), None);
        assert_eq!(cache.get(&"a", start + Duration::from_secs(3)), Some(3));
        assert_eq!(cache.get(&"c", start + Duration::from_secs(3)), Some(4));
    }
}

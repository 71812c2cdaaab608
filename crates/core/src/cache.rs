//! Bounded in-memory caches (quick_cache: concurrent, evicts the least useful entries).
//! Every cache has an explicit bound, by count or by estimated bytes: memory is what
//! matters on a small box.

use std::hash::Hash;

use quick_cache::{sync::Cache, OptionsBuilder, Weighter};

/// Shards of a byte-bounded cache. quick_cache splits the budget between shards and
/// refuses an entry heavier than 97% of its shard's part, so large entries (a 50,000-member
/// room's state) need one; on a small box contention is no concern.
const BYTE_CACHE_SHARDS: usize = 1;

/// An entry's estimated size; `Count` weighs every entry 1.
#[derive(Clone)]
pub enum Weigh<V> {
    Count,
    Bytes(fn(&V) -> u64),
}

impl<K, V> Weighter<K, V> for Weigh<V> {
    fn weight(&self, _key: &K, value: &V) -> u64 {
        match self {
            Weigh::Count => 1,
            Weigh::Bytes(f) => f(value).max(1),
        }
    }
}

pub struct BoundedCache<K, V>(Cache<K, V, Weigh<V>>);

impl<K: Eq + Hash + Clone, V: Clone> BoundedCache<K, V> {
    /// At most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        Self(Cache::with_weighter(
            capacity,
            capacity as u64,
            Weigh::Count,
        ))
    }

    /// At most `bytes` by `weigh`'s estimate; `typical` sizes the table. One entry may
    /// take up to 97% of the budget.
    pub fn by_bytes(bytes: u64, typical: u64, weigh: fn(&V) -> u64) -> Self {
        let items = (bytes / typical.max(1)).max(1) as usize;
        let options = OptionsBuilder::new()
            .estimated_items_capacity(items)
            .weight_capacity(bytes)
            .shards(BYTE_CACHE_SHARDS)
            .build();
        Self(match options {
            Ok(options) => Cache::with_options(
                options,
                Weigh::Bytes(weigh),
                Default::default(),
                Default::default(),
            ),
            Err(_) => Cache::with_weighter(items, bytes, Weigh::Bytes(weigh)),
        })
    }

    pub fn get(&self, key: &K) -> Option<V> {
        self.0.get(key)
    }

    pub fn put(&self, key: K, value: V) {
        self.0.insert(key, value);
    }

    pub fn remove(&self, key: &K) {
        self.0.remove(key);
    }

    /// Keeps only the entries `keep` accepts (a walk over the whole cache).
    pub fn retain(&self, keep: impl Fn(&K, &V) -> bool) {
        self.0.retain(keep);
    }
}

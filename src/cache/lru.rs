//! A map that keeps its most recently used entries within a budget of
//! what they cost (bytes held), dropping the least recently used first.
//! The chunks kept in memory (`memcache.rs`) and the playlists
//! (`playlists.rs`) are kept in one; the order is the `lru` crate's, in
//! O(1) per use.

use std::borrow::Borrow;
use std::hash::Hash;

/// Entries with their cost, the least recently used going first past the
/// budget.
pub(crate) struct Lru<K: Hash + Eq, V> {
    map: lru::LruCache<K, (V, u64)>,
    cost: u64,
    budget: u64,
}

impl<K: Hash + Eq + Clone, V> Lru<K, V> {
    pub fn new(budget: u64) -> Lru<K, V> {
        Lru {
            map: lru::LruCache::unbounded(),
            cost: 0,
            budget,
        }
    }

    /// Keeps `value` at `key`, costing `cost`, as the most recently used.
    /// Returns the value it replaced, and what had to go to stay within
    /// the budget: never the new entry itself, which is kept alone when it
    /// costs more than the budget (callers refuse such ones first).
    pub fn insert(&mut self, key: K, value: V, cost: u64) -> (Option<V>, Vec<(K, V)>) {
        self.cost += cost;
        let old = self.map.put(key, (value, cost)).map(|(v, c)| {
            self.cost -= c;
            v
        });
        let mut gone = Vec::new();
        while self.cost > self.budget && self.map.len() > 1 {
            let Some((k, (v, c))) = self.map.pop_lru() else {
                break;
            };
            self.cost -= c;
            gone.push((k, v));
        }
        (old, gone)
    }

    /// The value at `key`, marked as just used.
    pub fn get<Q>(&mut self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get(key).map(|(v, _)| v)
    }

    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (v, c) = self.map.pop(key)?;
        self.cost -= c;
        Some(v)
    }

    /// Takes out every entry `take` says so of.
    pub fn remove_where(&mut self, mut take: impl FnMut(&K, &V) -> bool) -> Vec<(K, V)> {
        let keys: Vec<K> = self
            .map
            .iter()
            .filter(|(k, (v, _))| take(k, v))
            .map(|(k, _)| k.clone())
            .collect();
        keys.into_iter()
            .filter_map(|k| self.remove(&k).map(|v| (k, v)))
            .collect()
    }

    /// What the entries cost together.
    pub fn cost(&self) -> u64 {
        self.cost
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_recently_used_go_first_past_the_budget() {
        let mut lru = Lru::new(10);
        assert!(lru.insert("a", 1, 4).1.is_empty());
        assert!(lru.insert("b", 2, 4).1.is_empty());
        assert_eq!(lru.get(&"a"), Some(&1));
        // "b" is the least recently used now.
        assert_eq!(lru.insert("c", 3, 4).1, vec![("b", 2)]);
        assert_eq!(lru.cost(), 8);
        // Replacing counts the new cost only.
        let (old, gone) = lru.insert("a", 10, 6);
        assert_eq!((old, gone), (Some(1), vec![]));
        assert_eq!(lru.cost(), 10);
        assert_eq!(lru.remove(&"c"), Some(3));
        assert_eq!(lru.cost(), 6);
        // One entry costing more than all is kept alone.
        assert_eq!(lru.insert("big", 0, 50).1, vec![("a", 10)]);
        assert_eq!((lru.len(), lru.cost()), (1, 50));
        assert_eq!(lru.remove_where(|k, _| *k == "big"), vec![("big", 0)]);
        assert_eq!((lru.len(), lru.cost()), (0, 0));
    }
}

//! The small collections of a process entry: its links and its monitors.
//! Most processes (thousands of held ports) have one link and no monitor,
//! so each is as small as it can be while it holds little: a monitor table
//! is a null pointer until it holds something, and a link set is a vector
//! (one allocation the size of its pids) until it holds many.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

/// Links kept in a vector up to this many, in a hash set beyond.
const FEW: usize = 16;

/// A set, in a vector while small.
pub(super) enum Set<T> {
    Few(Vec<T>),
    Many(Box<HashSet<T>>),
}

impl<T> Default for Set<T> {
    fn default() -> Self {
        Set::Few(Vec::new())
    }
}

impl<T: Eq + Hash> Set<T> {
    /// Adds `value`; false if it was there.
    pub(super) fn insert(&mut self, value: T) -> bool {
        match self {
            Set::Few(v) if v.contains(&value) => false,
            Set::Few(v) if v.len() < FEW => {
                // One at a time: most hold one pid (40 bytes), not four.
                v.reserve_exact(1);
                v.push(value);
                true
            }
            Set::Few(v) => {
                let mut set: HashSet<T> = v.drain(..).collect();
                set.insert(value);
                *self = Set::Many(Box::new(set));
                true
            }
            Set::Many(s) => s.insert(value),
        }
    }

    /// Removes `value`; false if it was not there.
    pub(super) fn remove(&mut self, value: &T) -> bool {
        match self {
            Set::Few(v) => match v.iter().position(|x| x == value) {
                Some(i) => {
                    v.swap_remove(i);
                    if v.is_empty() {
                        *v = Vec::new();
                    }
                    true
                }
                None => false,
            },
            Set::Many(s) => s.remove(value),
        }
    }

    pub(super) fn retain(&mut self, keep: impl FnMut(&T) -> bool) {
        match self {
            Set::Few(v) => v.retain(keep),
            Set::Many(s) => s.retain(keep),
        }
    }

    pub(super) fn iter(&self) -> Box<dyn Iterator<Item = &T> + '_> {
        match self {
            Set::Few(v) => Box::new(v.iter()),
            Set::Many(s) => Box::new(s.iter()),
        }
    }
}

/// A map that allocates nothing, not even its empty table, until it holds something.
pub(super) struct Map<K, V>(Option<Box<HashMap<K, V>>>);

impl<K, V> Default for Map<K, V> {
    fn default() -> Self {
        Map(None)
    }
}

impl<K: Eq + Hash, V> Map<K, V> {
    pub(super) fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.0.get_or_insert_with(Default::default).insert(key, value)
    }

    pub(super) fn remove(&mut self, key: &K) -> Option<V> {
        let map = self.0.as_mut()?;
        let value = map.remove(key);
        if map.is_empty() {
            self.0 = None;
        }
        value
    }

    pub(super) fn retain(&mut self, keep: impl FnMut(&K, &mut V) -> bool) {
        if let Some(map) = self.0.as_mut() {
            map.retain(keep);
            if map.is_empty() {
                self.0 = None;
            }
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.0.iter().flat_map(|m| m.iter())
    }
}

impl<K, V> IntoIterator for Map<K, V> {
    type Item = (K, V);
    type IntoIter = std::iter::Flatten<std::option::IntoIter<HashMap<K, V>>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.map(|m| *m).into_iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_holds_each_value_once_small_or_large() {
        let mut set = Set::default();
        for round in 0..2 {
            for i in 0..40 {
                assert_eq!(set.insert(i), round == 0, "insert {i}");
            }
        }
        assert!(matches!(set, Set::Many(_)));
        assert_eq!(set.iter().count(), 40);
        assert!(set.remove(&7));
        assert!(!set.remove(&7));
        set.retain(|&i| i % 2 == 0);
        let mut left: Vec<i32> = set.iter().copied().collect();
        left.sort();
        assert_eq!(left, (0..40).filter(|i| i % 2 == 0).collect::<Vec<_>>());

        let mut few = Set::default();
        assert!(few.insert(1) && few.insert(2) && !few.insert(1));
        assert!(few.remove(&1) && few.remove(&2) && !few.remove(&2));
        assert!(matches!(&few, Set::Few(v) if v.capacity() == 0));
    }

    #[test]
    fn a_map_gives_its_table_back_once_empty() {
        let mut map = Map::default();
        assert_eq!(map.insert(1, "a"), None);
        assert_eq!(map.insert(1, "b"), Some("a"));
        map.insert(2, "c");
        assert_eq!(map.iter().count(), 2);
        assert_eq!(map.remove(&1), Some("b"));
        map.retain(|_, _| false);
        assert!(map.0.is_none());
        map.insert(3, "d");
        assert_eq!(map.into_iter().collect::<Vec<_>>(), vec![(3, "d")]);
    }
}

//! A token's `instance_map`: the writers strictly ahead of the token's minimum and their
//! positions, as a small sorted vector.
//!
//! Synapse keeps an `immutabledict`; a token rarely has more than a few writers, and tokens
//! are made, merged and recorded on every notifier poke and /sync page, so a `BTreeMap` (a
//! 370-byte node per token) made them two thirds of an hour-long run's memory. The vector
//! keeps `BTreeMap`'s observable behaviour: name order, one entry per name (the last one
//! collected wins), and the same serde form (a JSON object in name order).

use std::collections::BTreeMap;

use super::StreamId;

/// Writer name -> position, sorted by name, no duplicate names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct InstanceMap(Vec<(String, StreamId)>);

impl InstanceMap {
    fn index_of(&self, instance: &str) -> Result<usize, usize> {
        self.0
            .binary_search_by(|(name, _)| name.as_str().cmp(instance))
    }

    /// The position of `instance`, if it is in the map.
    pub fn get(&self, instance: &str) -> Option<&StreamId> {
        self.index_of(instance).ok().map(|index| &self.0[index].1)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Entries in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &StreamId)> + '_ {
        self.0.iter().map(|(name, position)| (name, position))
    }

    /// Names in order.
    pub fn keys(&self) -> impl Iterator<Item = &String> + '_ {
        self.0.iter().map(|(name, _)| name)
    }

    /// Positions in name order.
    pub fn values(&self) -> impl Iterator<Item = &StreamId> + '_ {
        self.0.iter().map(|(_, position)| position)
    }
}

impl FromIterator<(String, StreamId)> for InstanceMap {
    fn from_iter<I: IntoIterator<Item = (String, StreamId)>>(entries: I) -> Self {
        let mut entries: Vec<(String, StreamId)> = entries.into_iter().collect();
        // Stable, so equal names keep their order and the last one collected is kept, as
        // `BTreeMap::from_iter` keeps it.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut map: Vec<(String, StreamId)> = Vec::with_capacity(entries.len());
        for (name, position) in entries {
            match map.last_mut() {
                Some(last) if last.0 == name => last.1 = position,
                _ => map.push((name, position)),
            }
        }
        debug_assert!(map.windows(2).all(|pair| pair[0].0 < pair[1].0));
        InstanceMap(map)
    }
}

impl From<BTreeMap<String, StreamId>> for InstanceMap {
    fn from(map: BTreeMap<String, StreamId>) -> Self {
        InstanceMap(map.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a InstanceMap {
    type Item = (&'a String, &'a StreamId);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, StreamId)>,
        fn(&'a (String, StreamId)) -> (&'a String, &'a StreamId),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(name, position)| (name, position))
    }
}

impl serde::Serialize for InstanceMap {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> serde::Deserialize<'de> for InstanceMap {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        BTreeMap::<String, StreamId>::deserialize(deserializer).map(InstanceMap::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_like_a_btree_map() {
        let entries = vec![
            ("w2".to_owned(), 5),
            ("w1".to_owned(), 3),
            ("w2".to_owned(), 9),
        ];
        let map: InstanceMap = entries.clone().into_iter().collect();
        let tree: BTreeMap<String, StreamId> = entries.into_iter().collect();
        assert_eq!(
            map.iter().collect::<Vec<_>>(),
            tree.iter().collect::<Vec<_>>()
        );
        assert_eq!((map.get("w2"), map.get("w3")), (Some(&9), None));
    }

    #[test]
    fn serializes_as_the_map_did() {
        let map: InstanceMap = [("w2".to_owned(), 4), ("w1".to_owned(), 3)]
            .into_iter()
            .collect();
        let tree: BTreeMap<String, StreamId> = map.iter().map(|(w, p)| (w.clone(), *p)).collect();
        let text = serde_json::to_string(&map).unwrap();
        assert_eq!(text, serde_json::to_string(&tree).unwrap());
        assert_eq!(serde_json::from_str::<InstanceMap>(&text).unwrap(), map);
    }
}

//! Synapse's `StreamChangeCache` (synapse/util/caches/stream_change_cache.py, 1.163.2) as the
//! per-room `_events_stream_cache` uses it: which rooms may have new events after a stream
//! position, so that an incremental /sync only reads the rooms that changed.
//!
//! Where Synapse feeds it (each a citation of 1.163.2):
//! - start-up (`StreamWorkerStore.__init__`, synapse/storage/databases/main/stream.py):
//!   `db_pool.get_cache_dict(db_conn, "events", entity_column="room_id",
//!   stream_column="stream_ordering", max_value=get_room_max_stream_ordering())`
//!   (synapse/storage/database.py): every room's highest `stream_ordering` in the events
//!   table (all rows, whatever the id generator's position), and as earliest known position
//!   the lowest of those plus one, or `max_value` when the table is empty; see
//!   [`StreamChangeCache::prefilled`];
//! - a process persisting an event: `txn.call_after(_events_stream_cache.entity_has_changed,
//!   room_id, stream_ordering)` in `_update_metadata_tables_txn` / the room's forward
//!   extremities update (synapse/storage/databases/main/events.py), i.e. at commit;
//! - replication: `process_replication_rows` → `_process_event_stream_row` →
//!   `_invalidate_caches_for_event(token, ...)` calls `entity_has_changed(room_id, token)` for
//!   every events-stream row it processes (synapse/storage/databases/main/cache.py), from RDATA
//!   or from a POSITION's catch-up; RDATA the handler discards never gets there.
//!
//! The size limit (10 000 entries by default) never binds in the simulations and is left out.

use std::collections::{BTreeMap, BTreeSet};

use crate::token::StreamId;

/// A room id, or any entity.
pub type Entity = String;

/// `StreamChangeCache` of one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamChangeCache {
    /// `_earliest_known_stream_pos`: nothing is known about changes at or before it.
    earliest_known: StreamId,
    /// `_cache`: stream position → entities whose latest change is there.
    by_position: BTreeMap<StreamId, BTreeSet<Entity>>,
    /// `_entity_to_key`: entity → its latest known change.
    latest: BTreeMap<Entity, StreamId>,
}

impl StreamChangeCache {
    /// `StreamChangeCache(current_stream_pos=...)` without a prefill.
    pub fn new(current_stream_pos: StreamId) -> Self {
        StreamChangeCache {
            earliest_known: current_stream_pos,
            by_position: BTreeMap::new(),
            latest: BTreeMap::new(),
        }
    }

    /// The cache as `StreamWorkerStore.__init__` builds `_events_stream_cache`: `rows` are the
    /// events table's `(room_id, stream_ordering)`; `max_value` is the id generator's current
    /// token (`get_room_max_stream_ordering()`), the earliest known position of an empty table.
    ///
    /// `get_cache_dict` keeps each room's highest position and takes the lowest of those plus
    /// one as the earliest known position ("we don't know if we have all rows for the minimum
    /// stream ID"); the constructor then replays the map through `entity_has_changed`, which
    /// ignores positions at or before the earliest known one.
    pub fn prefilled<'a>(
        rows: impl IntoIterator<Item = (&'a str, StreamId)>,
        max_value: StreamId,
    ) -> Self {
        let mut highest: BTreeMap<Entity, StreamId> = BTreeMap::new();
        for (room, position) in rows {
            let entry = highest.entry(room.to_owned()).or_insert(position);
            *entry = (*entry).max(position);
        }
        let earliest = highest
            .values()
            .copied()
            .min()
            .map_or(max_value, |lowest| lowest + 1);
        let mut cache = StreamChangeCache::new(earliest);
        for (room, position) in highest {
            cache.entity_has_changed(&room, position);
        }
        cache
    }

    /// `get_earliest_known_position()`.
    pub fn earliest_known_position(&self) -> StreamId {
        self.earliest_known
    }

    /// `get_max_pos_of_last_change(entity)`.
    pub fn max_pos_of_last_change(&self, entity: &str) -> Option<StreamId> {
        self.latest.get(entity).copied()
    }

    /// `entity_has_changed(entity, stream_pos)`: ignored at or before the earliest known
    /// position and when the entity's known change is already at or after it.
    pub fn entity_has_changed(&mut self, entity: &str, stream_pos: StreamId) {
        if stream_pos <= self.earliest_known {
            return;
        }
        if let Some(old) = self.latest.get(entity).copied() {
            if old >= stream_pos {
                return;
            }
            if let Some(entities) = self.by_position.get_mut(&old) {
                entities.remove(entity);
                if entities.is_empty() {
                    self.by_position.remove(&old);
                }
            }
        }
        self.by_position
            .entry(stream_pos)
            .or_default()
            .insert(entity.to_owned());
        self.latest.insert(entity.to_owned(), stream_pos);
    }

    /// `has_entity_changed(entity, stream_pos)`: true if `stream_pos` is before the earliest
    /// known position, or before the entity's latest change; an unknown entity has not changed.
    pub fn has_entity_changed(&self, entity: &str, stream_pos: StreamId) -> bool {
        if stream_pos < self.earliest_known {
            return true;
        }
        self.latest
            .get(entity)
            .is_some_and(|latest| stream_pos < *latest)
    }

    /// `get_entities_changed(entities, stream_pos)`: every entity if the cache is empty or
    /// `stream_pos` is before the earliest known position; otherwise those whose latest change
    /// is after `stream_pos` (both of Synapse's code paths give this set).
    pub fn entities_changed<'a>(
        &self,
        entities: impl IntoIterator<Item = &'a str>,
        stream_pos: StreamId,
    ) -> BTreeSet<Entity> {
        let all = self.by_position.is_empty() || stream_pos < self.earliest_known;
        entities
            .into_iter()
            .filter(|entity| all || self.latest.get(*entity).is_some_and(|l| *l > stream_pos))
            .map(str::to_owned)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefill_keeps_each_rooms_highest_and_starts_after_the_lowest() {
        let rows = [("!a", 3), ("!b", 7), ("!a", 5), ("!c", 9)];
        let cache = StreamChangeCache::prefilled(rows.iter().map(|(r, p)| (*r, *p)), 9);
        // min(5, 7, 9) + 1: the room whose last change is the minimum is not recorded.
        assert_eq!(cache.earliest_known_position(), 6);
        assert_eq!(cache.max_pos_of_last_change("!a"), None);
        assert_eq!(cache.max_pos_of_last_change("!b"), Some(7));
        assert_eq!(cache.max_pos_of_last_change("!c"), Some(9));
        // Before the earliest known position everything may have changed.
        assert!(cache.has_entity_changed("!a", 5));
        assert!(!cache.has_entity_changed("!a", 6));
        assert!(cache.has_entity_changed("!b", 6));
        assert!(!cache.has_entity_changed("!b", 7));
    }

    #[test]
    fn an_empty_table_starts_at_max_value() {
        let cache = StreamChangeCache::prefilled(std::iter::empty(), 12);
        assert_eq!(cache.earliest_known_position(), 12);
        // An empty cache answers "all" to get_entities_changed but "no" per entity.
        assert_eq!(
            cache.entities_changed(["!a", "!b"], 12),
            BTreeSet::from(["!a".to_owned(), "!b".to_owned()])
        );
        assert!(!cache.has_entity_changed("!a", 12));
    }

    #[test]
    fn changes_move_forward_only_and_not_at_or_before_the_earliest() {
        let mut cache = StreamChangeCache::new(10);
        cache.entity_has_changed("!a", 10);
        assert_eq!(cache.max_pos_of_last_change("!a"), None);
        cache.entity_has_changed("!a", 12);
        cache.entity_has_changed("!a", 11);
        assert_eq!(cache.max_pos_of_last_change("!a"), Some(12));
        cache.entity_has_changed("!b", 13);
        assert_eq!(
            cache.entities_changed(["!a", "!b", "!c"], 12),
            BTreeSet::from(["!b".to_owned()])
        );
        assert_eq!(
            cache.entities_changed(["!a", "!b", "!c"], 11),
            BTreeSet::from(["!a".to_owned(), "!b".to_owned()])
        );
        assert_eq!(cache.entities_changed(["!a", "!b", "!c"], 9).len(), 3);
    }
}

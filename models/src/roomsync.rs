//! The room timelines of a /sync answer (synapse/handlers/sync.py and
//! synapse/storage/databases/main/stream.py, 1.163.2), for one user joined to every room, with
//! a filter's timeline limit (the default filter's is [`TIMELINE_LIMIT`]) and only message
//! events.
//!
//! - Initial sync (no `since`): `_get_room_changes_for_initial_sync` builds every joined
//!   room's entry and `_load_filtered_recents` pages backwards from `now_token` with
//!   `paginate_room_events_by_topological_ordering`, keeping the latest `timeline_limit`
//!   events at or before `now_token` (per writer: `stream_ordering <=
//!   now.pos_for(instance_name)`). Each room is persisted by one writer through its per-room
//!   persistence queue, so a room's topological order is its stream order.
//! - Incremental sync: `_get_room_changes_for_incremental_sync` calls
//!   `get_room_events_stream_for_rooms(room_ids=joined, from_key=now, to_key=since,
//!   direction=BACKWARDS, limit=timeline_limit + 1)`, which keeps the rooms
//!   `_events_stream_cache.get_entities_changed(rooms, since.stream)` names, and for each
//!   `paginate_room_events_by_stream_ordering` first asks `has_entity_changed(room,
//!   since.stream)` and then reads the rows with `since < (instance, stream_ordering) <= now`
//!   (`generate_pagination_where_clause` with both tokens' instance maps: the multi-writer
//!   row-in-range rule). More than `timeline_limit` events make the room `limited`, and
//!   `_load_filtered_recents` keeps the latest `timeline_limit` of them.
//!
//! Events come back in stream order (ascending `stream_ordering`).

use std::collections::{BTreeMap, BTreeSet};

use crate::changecache::StreamChangeCache;
use crate::token::{MultiWriterToken, StreamId};

/// The default filter's `timeline_limit()` (`filter_json.get("limit", 10)` in
/// synapse/api/filtering.py).
pub const TIMELINE_LIMIT: usize = 10;

/// One committed row of the events table, as a timeline query reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRow {
    pub instance: String,
    pub stream_id: StreamId,
    pub room: String,
    pub event_id: String,
}

/// Room → its timeline's event ids, rooms without events left out.
pub type Timelines = BTreeMap<String, Vec<String>>;

/// The latest `limit` events of each room in `(low, high]` by the row-in-range rule.
fn timelines_between<'a>(
    limit: usize,
    rooms: impl IntoIterator<Item = &'a str>,
    low: &MultiWriterToken,
    high: &MultiWriterToken,
    rows: &[EventRow],
) -> Timelines {
    let mut timelines = Timelines::new();
    for room in rooms {
        let mut events: Vec<&EventRow> = rows
            .iter()
            .filter(|row| {
                row.room == room
                    && MultiWriterToken::row_in_range(low, high, Some(&row.instance), row.stream_id)
            })
            .collect();
        events.sort_by(|a, b| (a.stream_id, &a.instance).cmp(&(b.stream_id, &b.instance)));
        let skip = events.len().saturating_sub(limit);
        let timeline: Vec<String> = events[skip..]
            .iter()
            .map(|row| row.event_id.clone())
            .collect();
        if !timeline.is_empty() {
            timelines.insert(room.to_owned(), timeline);
        }
    }
    timelines
}

/// An initial sync's timelines: every joined room's latest `limit` events at or before `now`.
pub fn initial_sync<'a>(
    limit: usize,
    joined: impl IntoIterator<Item = &'a str>,
    now: &MultiWriterToken,
    rows: &[EventRow],
) -> Timelines {
    timelines_between(limit, joined, &MultiWriterToken::at(0), now, rows)
}

/// The rooms an incremental sync since `since` reads: those
/// `_events_stream_cache.get_entities_changed(room_ids, from_key.stream)` names in
/// `get_room_events_stream_for_rooms`, then those `has_entity_changed(room, from_id)` keeps in
/// `paginate_room_events_by_stream_ordering` (synapse/storage/databases/main/stream.py).
/// Every other joined room is not read at all, whatever the events table holds.
pub fn changed_rooms<'a>(
    joined: impl IntoIterator<Item = &'a str>,
    since: &MultiWriterToken,
    cache: &StreamChangeCache,
) -> BTreeSet<String> {
    let mut changed = cache.entities_changed(joined, since.stream());
    changed.retain(|room| cache.has_entity_changed(room, since.stream()));
    changed
}

/// An incremental sync's timelines: the rooms the change cache names, their events in
/// `(since, now]`.
pub fn incremental_sync<'a>(
    limit: usize,
    joined: impl IntoIterator<Item = &'a str>,
    since: &MultiWriterToken,
    now: &MultiWriterToken,
    cache: &StreamChangeCache,
    rows: &[EventRow],
) -> Timelines {
    let changed = changed_rooms(joined, since, cache);
    timelines_between(limit, changed.iter().map(String::as_str), since, now, rows)
}

/// The separator of a stream row's payload that names its room: event ids and room ids
/// never hold a space.
const PAYLOAD_SEPARATOR: char = ' ';

/// A stream row's payload naming its event and its room (`event_id room_id`), as Synapse's
/// events-stream rows and `events` table carry both (`EventsStreamEventRow.event_id`,
/// `.room_id`). Models that only pass payloads through (persister, announcer, follower)
/// never look inside.
pub fn row_payload(event_id: &str, room: &str) -> String {
    debug_assert!(!event_id.contains(PAYLOAD_SEPARATOR) && !room.contains(PAYLOAD_SEPARATOR));
    format!("{event_id}{PAYLOAD_SEPARATOR}{room}")
}

/// A payload's event id and room (`None` for a bare event id).
pub fn split_row_payload(payload: &str) -> (&str, Option<&str>) {
    match payload.split_once(PAYLOAD_SEPARATOR) {
        Some((event_id, room)) => (event_id, Some(room)),
        None => (payload, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(instance: &str, stream_id: StreamId, room: &str, event_id: &str) -> EventRow {
        EventRow {
            instance: instance.into(),
            stream_id,
            room: room.into(),
            event_id: event_id.into(),
        }
    }

    fn token(stream: StreamId, ahead: &[(&str, StreamId)]) -> MultiWriterToken {
        MultiWriterToken::new(
            stream,
            ahead.iter().map(|(w, p)| ((*w).to_owned(), *p)).collect(),
        )
        .unwrap()
    }

    #[test]
    fn initial_sync_keeps_the_latest_ten_up_to_each_writers_position() {
        let mut rows: Vec<EventRow> = (2..=20)
            .map(|id| row("w1", id, "!a", &format!("$e{id}")))
            .collect();
        rows.push(row("w2", 21, "!b", "$x"));
        rows.push(row("w1", 22, "!a", "$late"));
        let now = token(20, &[("w2", 21)]);
        let timelines = initial_sync(TIMELINE_LIMIT, ["!a", "!b", "!c"], &now, &rows);
        let a: Vec<String> = (11..=20).map(|id| format!("$e{id}")).collect();
        assert_eq!(timelines["!a"], a);
        assert_eq!(timelines["!b"], vec!["$x".to_owned()]);
        assert!(!timelines.contains_key("!c"));
    }

    #[test]
    fn incremental_sync_reads_only_rooms_the_cache_names() {
        let rows = vec![
            row("w1", 41, "!a", "$a"),
            row("w2", 42, "!b", "$b"),
            row("w1", 43, "!a", "$c"),
        ];
        let since = token(40, &[]);
        let now = token(41, &[("w2", 42)]);
        let mut cache = StreamChangeCache::new(40);
        cache.entity_has_changed("!a", 41);
        cache.entity_has_changed("!b", 42);
        let timelines = incremental_sync(TIMELINE_LIMIT, ["!a", "!b"], &since, &now, &cache, &rows);
        assert_eq!(timelines["!a"], vec!["$a".to_owned()], "43 is beyond now");
        assert_eq!(timelines["!b"], vec!["$b".to_owned()]);
        // A room the cache does not know changed is not read, whatever the table holds.
        let mut stale = StreamChangeCache::new(40);
        stale.entity_has_changed("!a", 41);
        let timelines = incremental_sync(TIMELINE_LIMIT, ["!a", "!b"], &since, &now, &stale, &rows);
        assert!(!timelines.contains_key("!b"));
        // A since token before the earliest known position reads every room.
        let fresh = StreamChangeCache::new(45);
        let timelines = incremental_sync(TIMELINE_LIMIT, ["!a", "!b"], &since, &now, &fresh, &rows);
        assert_eq!(timelines.len(), 2);
    }

    #[test]
    fn changed_rooms_are_those_changed_after_the_minimum_of_since() {
        let mut cache = StreamChangeCache::new(40);
        cache.entity_has_changed("!a", 41);
        cache.entity_has_changed("!b", 44);
        // The room of an event whose row was never processed (RDATA discarded) is not there.
        let since = token(41, &[("w2", 43)]);
        assert_eq!(
            changed_rooms(["!a", "!b", "!c"], &since, &cache),
            BTreeSet::from(["!b".to_owned()])
        );
        // Before the earliest known position, every room.
        assert_eq!(
            changed_rooms(["!a", "!c"], &token(39, &[]), &cache).len(),
            2
        );
    }

    #[test]
    fn payloads_carry_the_room_and_rdata_sends_it() {
        let payload = row_payload("$e", "!r1");
        assert_eq!(split_row_payload(&payload), ("$e", Some("!r1")));
        assert_eq!(split_row_payload("$bare"), ("$bare", None));
        let line = crate::replication::rdata("events", "w1", Some(5), &payload)
            .to_line()
            .unwrap();
        assert_eq!(line.to_utf8().unwrap(), r#"events w1 5 ["$e","!r1"]"#);
        let bare = crate::replication::rdata("events", "w1", Some(5), "$bare")
            .to_line()
            .unwrap();
        assert_eq!(bare.to_utf8().unwrap(), r#"events w1 5 ["$bare"]"#);
    }

    #[test]
    fn incremental_sync_uses_the_writers_positions_of_since() {
        let rows = vec![row("w2", 42, "!b", "$b"), row("w1", 41, "!a", "$a")];
        // The client already saw w2's 42 but not w1's 41.
        let since = token(40, &[("w2", 42)]);
        let now = token(42, &[]);
        // A cache that knows nothing before 45 reads every room.
        let cache = StreamChangeCache::new(45);
        let timelines = incremental_sync(TIMELINE_LIMIT, ["!a", "!b"], &since, &now, &cache, &rows);
        assert_eq!(timelines.len(), 1);
        assert_eq!(timelines["!a"], vec!["$a".to_owned()]);
    }
}

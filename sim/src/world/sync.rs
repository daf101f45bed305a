//! The /sync server every process runs (readers, and writers that serve clients too): pages
//! of a client's rooms between its `since` token and the process's current token, read from
//! the database as `_events_stream_cache` allows, waiting in the notifier for newer events as
//! a long-poll does.

use std::rc::Rc;

use serde::{Deserialize, Serialize};
use streamsim_models::notifier::{RoomEvent, SyncOptions, SyncPoll, SyncRequest};
use streamsim_models::roomsync::{changed_rooms, split_row_payload};
use streamsim_models::token::MultiWriterToken;

use super::process::{retry_db, room_token, Process};
use crate::net::{now, sleep_until, SYNC_PORT};

/// A /sync request: the client's name (for the history) and its `since` token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SyncQuery {
    pub client: String,
    pub since: Option<MultiWriterToken>,
}

/// A /sync answer: the events in `(since, next_batch]` as (writer, stream id, event id).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SyncAnswer {
    pub events: Vec<(String, i64, String)>,
    pub next_batch: MultiWriterToken,
    pub limited: bool,
    pub timed_out: bool,
}

/// Serves /sync on a process (readers, and writers that serve clients too).
pub async fn serve_sync(process: Rc<Process>) {
    let Err(error) = crate::net::accept_each(SYNC_PORT, |stream, _| {
        let process = process.clone();
        crate::net::answer_each(
            stream,
            process.shared.cuts.clone(),
            move |query: SyncQuery| {
                let process = process.clone();
                async move { sync(&process, query).await }
            },
        )
    })
    .await;
    panic!("the sync port is taken: {error}");
}

/// One /sync: bound a token from the future, wait for this process to catch up with it (or
/// give up), then read the events in range from the database: an initial sync every room's,
/// an incremental one only the rooms the process's `_events_stream_cache` says changed after
/// `since` (`roomsync::changed_rooms`), as `get_room_events_stream_for_rooms` reads them.
/// Every sync client is joined to every room.
async fn sync(process: &Rc<Process>, query: SyncQuery) -> SyncAnswer {
    let max_allocated = retry_db(|| process.db.max_allocated()).await;
    let mut request = {
        let state = process.state.borrow();
        let options = SyncOptions {
            timeline_limit: process
                .shared
                .scenario
                .workload
                .sync_timeline_limit
                .map(|limit| limit as usize),
            bugs: process.shared.bugs,
        };
        SyncRequest::with_options(
            query.since,
            &room_token(&state.generator),
            max_allocated,
            now(),
            options,
        )
    };
    let joined = process.shared.scenario.rooms();
    loop {
        // The token and the rooms to read are taken together, before the database read.
        let (current, rooms) = {
            let state = process.state.borrow();
            let rooms = request.since().map(|since| {
                changed_rooms(
                    joined.iter().map(String::as_str),
                    since,
                    &state.events_stream_cache,
                )
            });
            (room_token(&state.generator), rooms)
        };
        let caught_up = request
            .since()
            .is_none_or(|since| since.is_before_or_eq(&current));
        let events: Vec<RoomEvent> = if caught_up {
            let from = request.since().map_or(0, MultiWriterToken::stream);
            retry_db(|| process.db.rows_in_range(from, current.max_pos()))
                .await
                .into_iter()
                .filter_map(|(writer, id, payload)| {
                    let (event_id, room) = split_row_payload(&payload);
                    let read = match (&rooms, room) {
                        (Some(rooms), Some(room)) => rooms.contains(room),
                        _ => true,
                    };
                    read.then(|| RoomEvent::new(&writer, id, event_id))
                })
                .collect()
        } else {
            Vec::new()
        };
        let poll = {
            let state = &mut *process.state.borrow_mut();
            match state.notifier.as_mut() {
                Some(notifier) => notifier.poll_sync(&mut request, now(), &current, &events),
                // A writer serving clients: the same request, no give-up counter to keep.
                None => request.poll(now(), &current, &events),
            }
        };
        match poll {
            SyncPoll::Pending { next_poll_at } => sleep_until(next_poll_at).await,
            SyncPoll::Ready(response) => {
                return SyncAnswer {
                    events: response
                        .events
                        .into_iter()
                        .map(|e| (e.instance, e.stream_id, e.event_id))
                        .collect(),
                    next_batch: response.next_batch,
                    limited: response.limited,
                    timed_out: response.timed_out,
                }
            }
        }
    }
}

//! The federation sender's event loop, a background consumer of the events stream that
//! follows the minimum persisted position (Synapse 1.163.2, synapse/federation/sender/
//! __init__.py: `FederationSender.notify_new_events` lines 506-524 and
//! `_process_event_queue_loop` lines 526-790).
//!
//! The notifier pokes it with the room token it releases events at
//! (`Notifier._on_updated_room_token`, notifier.py lines 500-510), whose `stream` part is the
//! position below which every event is persisted. The loop reads its stored position
//! (`federation_stream_position`), reads the events in `(position, last_poked]` a hundred at a
//! time (`get_all_new_event_ids_stream`, storage/databases/main/stream.py lines 2080-2132),
//! sends them, and stores the position it reached. It never looks below its stored position
//! again, so an event committed below a position it stored is never sent: the loop must only
//! be poked with a token below which nothing is still in flight.
//!
//! Sans-IO: reads and writes of the database are [`FederationAction`]s the host carries out
//! and answers.

use crate::replication::Row;

/// Events read per turn of the loop (`limit=100` in `_process_event_queue_loop`).
pub const EVENTS_PER_READ: usize = 100;

/// The stored position before the sender has stored any (`federation_stream_position` is
/// created holding `('events', -1)`).
pub const INITIAL_OUT_POS: i64 = -1;

/// What the loop wants done next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FederationAction {
    /// `get_federation_out_pos("events")`; answer with [`FederationSender::handle_out_pos`].
    ReadOutPos,
    /// `get_all_new_event_ids_stream(from, upto, limit)`: the events with
    /// `from < stream_ordering <= upto`, at most `limit`, in stream order; answer with
    /// [`FederationSender::handle_events`].
    ReadEvents { from: i64, upto: i64, limit: usize },
    /// Send `events`, read from `(from, position]`, to their destinations, then
    /// `update_federation_out_pos("events", position)`; answer with
    /// [`FederationSender::handle_stored`].
    SendAndStore {
        from: i64,
        events: Vec<Row>,
        position: i64,
    },
    /// "All events processed": the loop's background process ends.
    Idle,
}

/// The federation sender of one process.
#[derive(Clone, Debug)]
pub struct FederationSender {
    /// `_last_poked_id`: the highest token the notifier poked with.
    last_poked_id: i64,
    /// `_is_processing`: the loop is running.
    processing: bool,
    /// The read in flight, `(from, upto)`.
    reading: Option<(i64, i64)>,
}

impl Default for FederationSender {
    fn default() -> Self {
        Self::new()
    }
}

impl FederationSender {
    pub fn new() -> Self {
        FederationSender {
            last_poked_id: INITIAL_OUT_POS,
            processing: false,
            reading: None,
        }
    }

    /// The highest token the sender was poked with.
    pub fn last_poked_id(&self) -> i64 {
        self.last_poked_id
    }

    pub fn is_processing(&self) -> bool {
        self.processing
    }

    /// `notify_new_events(max_token)` with `max_token.stream` = `token`: remembers the
    /// highest token, and starts the loop (returning its first action) unless it runs.
    pub fn notify_new_events(&mut self, token: i64) -> Option<FederationAction> {
        self.last_poked_id = self.last_poked_id.max(token);
        if self.processing {
            return None;
        }
        self.processing = true;
        Some(FederationAction::ReadOutPos)
    }

    /// The stored position was read.
    pub fn handle_out_pos(&mut self, position: i64) -> FederationAction {
        assert!(self.processing, "only a running loop reads its position");
        assert!(self.reading.is_none(), "one read at a time");
        self.reading = Some((position, self.last_poked_id));
        FederationAction::ReadEvents {
            from: position,
            upto: self.last_poked_id,
            limit: EVENTS_PER_READ,
        }
    }

    /// The events of the read, in stream order. `next_token` is the last event's id when
    /// the read was full, else its `upto`; the loop ends when nothing was read and
    /// `next_token` reached the highest poke.
    pub fn handle_events(&mut self, events: Vec<Row>) -> FederationAction {
        let (from, upto) = self.reading.take().expect("events answer a read");
        assert!(
            events.iter().all(|(id, _)| from < *id && *id <= upto),
            "events outside ({from}, {upto}]"
        );
        let next_token = match events.last() {
            Some((id, _)) if events.len() >= EVENTS_PER_READ => *id,
            _ => upto,
        };
        if events.is_empty() && next_token >= self.last_poked_id {
            self.processing = false;
            return FederationAction::Idle;
        }
        FederationAction::SendAndStore {
            from,
            events,
            position: next_token,
        }
    }

    /// The events were sent and the position stored: the loop turns again.
    pub fn handle_stored(&mut self) -> FederationAction {
        assert!(self.processing, "only a running loop stores");
        FederationAction::ReadOutPos
    }

    /// The loop failed (its `try` block raised): it stops until the next poke.
    pub fn handle_failure(&mut self) {
        self.processing = false;
        self.reading = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(ids: &[i64]) -> Vec<Row> {
        ids.iter().map(|id| (*id, format!("$e{id}"))).collect()
    }

    #[test]
    fn a_poke_runs_the_loop_over_what_is_below_the_token_then_it_idles() {
        let mut sender = FederationSender::new();
        assert_eq!(
            sender.notify_new_events(5),
            Some(FederationAction::ReadOutPos)
        );
        // Poked again while running: only the token is remembered.
        assert_eq!(sender.notify_new_events(7), None);
        assert_eq!(
            sender.handle_out_pos(INITIAL_OUT_POS),
            FederationAction::ReadEvents {
                from: -1,
                upto: 7,
                limit: EVENTS_PER_READ
            }
        );
        assert_eq!(
            sender.handle_events(rows(&[1, 3, 7])),
            FederationAction::SendAndStore {
                from: -1,
                events: rows(&[1, 3, 7]),
                position: 7
            }
        );
        assert_eq!(sender.handle_stored(), FederationAction::ReadOutPos);
        sender.handle_out_pos(7);
        assert_eq!(sender.handle_events(Vec::new()), FederationAction::Idle);
        assert!(!sender.is_processing());
        assert_eq!(
            sender.notify_new_events(9),
            Some(FederationAction::ReadOutPos)
        );
    }

    #[test]
    fn a_full_read_resumes_from_its_last_event() {
        let mut sender = FederationSender::new();
        sender.notify_new_events(500);
        sender.handle_out_pos(0);
        let full: Vec<i64> = (1..=EVENTS_PER_READ as i64).collect();
        assert_eq!(
            sender.handle_events(rows(&full)),
            FederationAction::SendAndStore {
                from: 0,
                events: rows(&full),
                position: EVENTS_PER_READ as i64
            }
        );
        sender.handle_stored();
        assert_eq!(
            sender.handle_out_pos(EVENTS_PER_READ as i64),
            FederationAction::ReadEvents {
                from: EVENTS_PER_READ as i64,
                upto: 500,
                limit: EVENTS_PER_READ
            }
        );
    }

    #[test]
    fn an_empty_read_below_a_newer_poke_turns_again_and_a_failure_waits_for_a_poke() {
        let mut sender = FederationSender::new();
        sender.notify_new_events(4);
        sender.handle_out_pos(4);
        sender.notify_new_events(6);
        // Read (4, 4]: nothing, but the last poke is higher, so the loop stores 4 and turns.
        assert_eq!(
            sender.handle_events(Vec::new()),
            FederationAction::SendAndStore {
                from: 4,
                events: Vec::new(),
                position: 4
            }
        );
        sender.handle_stored();
        sender.handle_out_pos(4);
        sender.handle_failure();
        assert!(!sender.is_processing());
        assert_eq!(
            sender.notify_new_events(6),
            Some(FederationAction::ReadOutPos)
        );
    }
}

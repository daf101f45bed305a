//! Both ends of one replicated stream, as Synapse 1.163.2 runs them (synapse-model.md §3.4–3.5).
//!
//! - [`StreamAnnouncer`] is the writer side (`ReplicationStreamer` in resource.py): poked after
//!   every id-generator exit and by a 1 s timer, it announces what its instance wrote since the
//!   last announcement as RDATA rows, and otherwise a `POSITION prev new` whose contract is "I
//!   wrote nothing in (prev, new]". That is how an idle writer keeps the minimum moving.
//! - [`StreamFollower`] is the reader side (`ReplicationCommandHandler` and
//!   `ReplicationDataHandler`): one FIFO per stream, RDATA batches, discarding what it has
//!   already seen, and on POSITION a catch-up that fetches missed rows from the database when
//!   `prev` is ahead of what it has (`get_updates_since`), then advances its ID generator.
//!
//! Rows are event ids; tokens are stream ids. Database reads are actions the host carries
//! out and answers (sans-IO); wire commands are [`Command`] values.

use std::collections::{BTreeSet, VecDeque};

use crate::bugs::{Bug, Bugs};
use crate::fixes::{Fix, Fixes};
use crate::idgen::MultiWriterIdGenerator;
use crate::token::MultiWriterToken;
use crate::wire::pyjson::PyValue;
use crate::wire::Command;

/// A row of the stream: (stream id, event id).
pub type Row = (i64, String);

/// What the writer side wants done.
#[derive(Clone, Debug, PartialEq)]
pub enum AnnouncerAction {
    /// Send this command to every connection (or publish it on the bus).
    Send(Command),
    /// Read this instance's rows with `from < id <= upto` (at most
    /// [`crate::limits::UPDATES_FETCH_ROWS_MAX`]); answer with `handle_updates`.
    FetchOwnUpdates { from: i64, upto: i64 },
}

/// The writer side of one stream on one instance.
#[derive(Clone, Debug)]
pub struct StreamAnnouncer {
    stream_name: String,
    instance: String,
    /// `last_token`: what was last announced.
    last_token: i64,
    /// Set by a REPLICATE or a new connection: announce `POSITION last last` on the next poke.
    announce_position: bool,
    /// A fetch of our own rows is outstanding, for `(last, upto]`.
    fetching: Option<(i64, i64)>,
    /// A poke arrived while fetching; run the loop again afterwards (`pending_updates`).
    poked_while_fetching: bool,
    /// Historical-bug switches (all off: Synapse 1.163.2).
    bugs: Bugs,
}

/// The RDATA command for a row. A payload naming its room ([`crate::roomsync::row_payload`])
/// goes out as `[event_id, room_id]`, the first two fields of Synapse's
/// `EventsStreamEventRow` (synapse/replication/tcp/streams/events.py); a bare event id as
/// `[event_id]`.
pub fn rdata(stream_name: &str, instance: &str, token: Option<i64>, payload: &str) -> Command {
    let (event_id, room) = crate::roomsync::split_row_payload(payload);
    let mut row = vec![PyValue::str(event_id)];
    row.extend(room.map(PyValue::str));
    Command::rdata(stream_name, instance, token, PyValue::List(row))
}

impl StreamAnnouncer {
    /// `last_token` starts at the writer's current token.
    pub fn new(stream_name: &str, generator: &MultiWriterIdGenerator) -> Self {
        StreamAnnouncer {
            stream_name: stream_name.to_owned(),
            instance: generator.instance_name().to_owned(),
            last_token: generator.current_token_for_writer(generator.instance_name()),
            announce_position: false,
            fetching: None,
            poked_while_fetching: false,
            bugs: Bugs::NONE,
        }
    }

    /// The announcer with historical-bug switches on.
    pub fn with_bugs(mut self, bugs: Bugs) -> Self {
        self.bugs = bugs;
        self
    }

    pub fn last_token(&self) -> i64 {
        self.last_token
    }

    /// A REPLICATE arrived on a connection (or the process subscribed to the bus):
    /// `send_positions_to_connection` (handler.py). It marks our position to be announced
    /// by the send loop's next turn, in order with the RDATA still to go (PR #16639);
    /// returns a command to send to that connection at once only under bug B16.
    pub fn handle_replicate(&mut self, generator: &MultiWriterIdGenerator) -> Option<Command> {
        if self.bugs.on(Bug::PositionBeforeBacklog) {
            // Bug B16 (PR #16639): `conn.send_command(PositionCommand(name, instance,
            // current, current))` at once, ahead of the RDATA of `(last_token, current]` the
            // loop had still to send: readers behind `current` read those rows from the
            // database, then got them again as RDATA.
            let current = generator.current_token_for_writer(&self.instance);
            return Some(Command::position(
                &self.stream_name,
                &self.instance,
                current,
                current,
            ));
        }
        self.announce_position = true;
        None
    }

    /// `on_notifier_poke` plus one turn of the send loop.
    pub fn poke(
        &mut self,
        generator: &MultiWriterIdGenerator,
        has_connections: bool,
    ) -> Vec<AnnouncerAction> {
        let current = generator.current_token_for_writer(&self.instance);
        let mut actions = Vec::new();
        if self.fetching.is_some() {
            self.poked_while_fetching = true;
            return actions;
        }
        if !has_connections {
            // Nobody to tell: skip ahead so a later connection does not get a backlog.
            self.last_token = current;
            return actions;
        }
        if self.announce_position {
            self.announce_position = false;
            actions.push(self.position(self.last_token, self.last_token));
        }
        if self.last_token == current {
            return actions;
        }
        let last = self.last_token;
        if last >= generator.minimal_local_current_token() {
            if self.bugs.on(Bug::IdleWriterNeverAnnounces) {
                // Bug B4 (PR #8499): the position of an idle writer is never announced.
                return actions;
            }
            // Nothing new written by us: only our idle position moved.
            self.last_token = current;
            actions.push(self.position(last, current));
        } else {
            self.fetching = Some((last, current));
            actions.push(AnnouncerAction::FetchOwnUpdates {
                from: last,
                upto: current,
            });
        }
        actions
    }

    /// The database returned our rows of `(from, upto]` in id order; `limited` when it stopped
    /// early (then the announced range ends at the last row).
    pub fn handle_updates(
        &mut self,
        generator: &MultiWriterIdGenerator,
        rows: Vec<Row>,
        limited: bool,
    ) -> Vec<AnnouncerAction> {
        let (last, upto) = self.fetching.take().expect("updates answer a fetch");
        let upto = match (limited, rows.last()) {
            (true, Some((id, _))) => *id,
            _ => upto,
        };
        let mut actions: Vec<AnnouncerAction> = Vec::new();
        for (index, (id, event_id)) in rows.iter().enumerate() {
            assert!(
                *id > last && *id <= upto,
                "row {id} outside ({last}, {upto}]"
            );
            // A row gets `batch` iff the next row has the same token.
            let token = match rows.get(index + 1) {
                Some((next, _)) if next == id => None,
                _ => Some(*id),
            };
            actions.push(AnnouncerAction::Send(rdata(
                &self.stream_name,
                &self.instance,
                token,
                event_id,
            )));
        }
        match rows.last() {
            None => actions.push(self.position(last, upto)),
            Some((id, _)) if *id < upto => actions.push(self.position(*id, upto)),
            Some(_) => {}
        }
        self.last_token = upto;
        if limited || std::mem::take(&mut self.poked_while_fetching) {
            actions.extend(self.poke(generator, true));
        }
        actions
    }

    fn position(&self, prev: i64, new: i64) -> AnnouncerAction {
        AnnouncerAction::Send(Command::position(
            &self.stream_name,
            &self.instance,
            prev,
            new,
        ))
    }
}

/// The room token a process reads (`get_room_max_token()`).
pub fn room_token(generator: &MultiWriterIdGenerator) -> MultiWriterToken {
    MultiWriterToken::from_positions(generator.current_token(), generator.positions())
}

/// What the reader side reports or wants done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FollowerAction {
    /// `on_rdata`: rows of `instance` up to `token` are new; the generator has been advanced.
    /// The host hands them to its notifier.
    Rows {
        instance: String,
        token: i64,
        rows: Vec<Row>,
        /// The room token right after this advance (`get_room_max_token()` as `on_rdata` reads
        /// it): what the notifier announces these rows with. A catch-up advances group by
        /// group, so each group has its own, not the token at the end of the catch-up.
        room_token: MultiWriterToken,
        /// Read from the database by a POSITION's catch-up, not carried by RDATA.
        caught_up: bool,
    },
    /// A POSITION's `prev` was ahead of what we had: read `instance`'s rows with
    /// `from < id <= upto` from the writer or the database; answer with `handle_updates`.
    FetchMissing {
        instance: String,
        from: i64,
        upto: i64,
        /// The POSITION's `prev` (or `new`) was at or below what we had, so by its contract
        /// ("nothing written in (prev, new]") there is nothing to read: a needless query, made
        /// only under bugs B23 and B24 (a cost, which `metrics_cost_justified` counts).
        needless: bool,
    },
    /// `on_position`: the generator advanced `instance` to `token` without new rows; `prev`
    /// is the processed POSITION's.
    Advanced {
        instance: String,
        prev: i64,
        token: i64,
        /// This was the first POSITION processed on the connection: it connected the stream
        /// (`_process_position` adds it to `_streams_by_connection[conn]`), so RDATA is
        /// applied from now on instead of discarded as "stream not connected".
        connected_stream: bool,
    },
    /// An inbound command was discarded, and why (for the history). `prev` is a dropped
    /// POSITION's (`None` for RDATA).
    Discarded {
        instance: String,
        prev: Option<i64>,
        token: Option<i64>,
        reason: &'static str,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Inbound {
    Rdata {
        instance: String,
        token: Option<i64>,
        row: Row,
    },
    Position {
        instance: String,
        prev: i64,
        new: i64,
    },
}

#[derive(Clone, Debug)]
struct CatchUp {
    instance: String,
    prev: i64,
    new: i64,
    /// Started by a POSITION whose `prev` (or `new`) we had already reached (bugs B23, B24
    /// only).
    needless: bool,
}

/// The reader side of one stream on one instance.
#[derive(Clone, Debug)]
pub struct StreamFollower {
    me: String,
    /// The stream is "connected": a POSITION has been processed since the last loss.
    connected: bool,
    /// A POSITION has been processed on this connection: `connected` is cleared by every
    /// POSITION while it catches up, this only by the loss of the connection.
    connected_on_this_connection: bool,
    /// RDATA rows with `batch` tokens waiting for their numeric one (keyed by stream only).
    pending_batch: Vec<Row>,
    /// One FIFO per stream: commands wait while a catch-up runs.
    queue: VecDeque<Inbound>,
    catching_up: Option<CatchUp>,
    /// Fix F4: the writers whose RDATA may be applied on this connection (a POSITION of
    /// theirs was handled here since the connection began or their last catch-up started).
    connected_writers: BTreeSet<String>,
    /// Historical-bug switches (all off: Synapse 1.163.2).
    bugs: Bugs,
    /// Proposed fixes (all off: Synapse 1.163.2); F2 and F4 act here.
    fixes: Fixes,
}

impl StreamFollower {
    pub fn new(me: &str) -> Self {
        StreamFollower {
            me: me.to_owned(),
            connected: false,
            connected_on_this_connection: false,
            pending_batch: Vec::new(),
            queue: VecDeque::new(),
            catching_up: None,
            connected_writers: BTreeSet::new(),
            bugs: Bugs::NONE,
            fixes: Fixes::NONE,
        }
    }

    /// The follower with historical-bug switches on.
    pub fn with_bugs(mut self, bugs: Bugs) -> Self {
        self.bugs = bugs;
        self
    }

    /// The follower with proposed fixes on.
    pub fn with_fixes(mut self, fixes: Fixes) -> Self {
        self.fixes = fixes;
        self
    }

    /// Fix F4: whether `instance`'s RDATA would be applied (always `connected` without it).
    fn writer_connected(&self, instance: &str) -> bool {
        self.connected && (!self.fixes.on(Fix::F4) || self.connected_writers.contains(instance))
    }

    /// A redundant POSITION of `instance` on a connected stream was dropped: under fix F4 it
    /// connects its writer (we already have all its rows up to the token).
    fn drop_redundant_position(
        &mut self,
        instance: String,
        prev: i64,
        new: i64,
    ) -> Vec<FollowerAction> {
        if self.fixes.on(Fix::F4) {
            self.connected_writers.insert(instance.clone());
        }
        vec![FollowerAction::Discarded {
            instance,
            prev: Some(prev),
            token: Some(new),
            reason: "position already reached",
        }]
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    pub fn is_catching_up(&self) -> bool {
        self.catching_up.is_some()
    }

    /// Commands received but not yet done with: those queued behind a catch-up, and the one
    /// whose catch-up is in flight.
    pub fn backlog(&self) -> usize {
        self.queue.len() + usize::from(self.catching_up.is_some())
    }

    /// An RDATA command arrived. Our own rows are dropped on receipt.
    pub fn handle_rdata(
        &mut self,
        generator: &mut MultiWriterIdGenerator,
        instance: &str,
        token: Option<i64>,
        row: Row,
    ) -> Vec<FollowerAction> {
        if instance == self.me {
            return Vec::new();
        }
        if self.catching_up.is_some() && self.bugs.on(Bug::UpdatesDuringCatchUp) {
            // Bug B14 (PRs #7185, #7226): RDATA was handled concurrently with a POSITION's
            // catch-up instead of queueing behind it; the stream is not connected until the
            // catch-up ends, so the row is dropped, and the catch-up stops below it.
            return self
                .process_rdata(generator, instance.to_owned(), token, row)
                .into_iter()
                .collect();
        }
        self.queue.push_back(Inbound::Rdata {
            instance: instance.to_owned(),
            token,
            row,
        });
        self.drain(generator)
    }

    /// A POSITION command arrived. Own positions, and stale ones on a connected stream, are
    /// dropped on receipt (and checked again when dequeued).
    pub fn handle_position(
        &mut self,
        generator: &mut MultiWriterIdGenerator,
        instance: &str,
        prev: i64,
        new: i64,
    ) -> Vec<FollowerAction> {
        if instance == self.me {
            return Vec::new();
        }
        if self.connected && new <= generator.current_token_for_writer(instance) {
            return self.drop_redundant_position(instance.to_owned(), prev, new);
        }
        self.queue.push_back(Inbound::Position {
            instance: instance.to_owned(),
            prev,
            new,
        });
        self.drain(generator)
    }

    /// The connection was lost: the stream is disconnected until the next POSITION.
    pub fn handle_connection_lost(&mut self) {
        // Bug B13 (PR #7427): the stream stayed connected, so RDATA on the next connection was
        // applied before the POSITION that would have caught up on what was missed meanwhile.
        // With F4's fix on too, the bug keeps its writers connected as well: the historical
        // rule kept every bit of "connected" across the loss, whatever its granularity.
        if !self.bugs.on(Bug::LostEventsOnReconnect) {
            self.connected = false;
            self.connected_on_this_connection = false;
            // Fix F4: the lost connection's connected writers are forgotten.
            self.connected_writers.clear();
        }
        self.pending_batch.clear();
    }

    /// The missing rows of a catch-up, in id order; `limited` if the read stopped early.
    pub fn handle_updates(
        &mut self,
        generator: &mut MultiWriterIdGenerator,
        rows: Vec<Row>,
        limited: bool,
    ) -> Vec<FollowerAction> {
        let catch_up = self.catching_up.clone().expect("updates answer a catch-up");
        let mut actions = Vec::new();
        let mut reached = None;
        let mut index = 0;
        while index < rows.len() {
            let token = rows[index].0;
            let group: Vec<Row> = rows[index..]
                .iter()
                .take_while(|(id, _)| *id == token)
                .cloned()
                .collect();
            index += group.len();
            generator.advance(&catch_up.instance, token);
            actions.push(FollowerAction::Rows {
                instance: catch_up.instance.clone(),
                token,
                rows: group,
                room_token: room_token(generator),
                caught_up: true,
            });
            reached = Some(token);
        }
        if limited {
            let from = reached.expect("a limited read returned rows");
            actions.push(FollowerAction::FetchMissing {
                instance: catch_up.instance,
                from,
                upto: catch_up.new,
                needless: catch_up.needless,
            });
            return actions;
        }
        self.catching_up = None;
        actions.extend(self.finish_position(
            generator,
            &catch_up.instance,
            catch_up.prev,
            catch_up.new,
        ));
        actions.extend(self.drain(generator));
        actions
    }

    fn drain(&mut self, generator: &mut MultiWriterIdGenerator) -> Vec<FollowerAction> {
        let mut actions = Vec::new();
        while self.catching_up.is_none() {
            let Some(inbound) = self.queue.pop_front() else {
                break;
            };
            match inbound {
                Inbound::Rdata {
                    instance,
                    token,
                    row,
                } => actions.extend(self.process_rdata(generator, instance, token, row)),
                Inbound::Position {
                    instance,
                    prev,
                    new,
                } => actions.extend(self.process_position(generator, instance, prev, new)),
            }
        }
        actions
    }

    fn process_rdata(
        &mut self,
        generator: &mut MultiWriterIdGenerator,
        instance: String,
        token: Option<i64>,
        row: Row,
    ) -> Option<FollowerAction> {
        if !self.writer_connected(&instance) {
            // The following POSITION will fill the gap from the database (fix of B14; under
            // fix F4, that writer's POSITION).
            return Some(FollowerAction::Discarded {
                instance,
                prev: None,
                token,
                reason: "stream not connected",
            });
        }
        let Some(token) = token else {
            self.pending_batch.push(row);
            return None;
        };
        // The rows of a batch only learn their stream id from the row that closes it.
        let mut rows: Vec<Row> = std::mem::take(&mut self.pending_batch)
            .into_iter()
            .map(|(_, event)| (token, event))
            .collect();
        rows.push((token, row.1));
        if token <= generator.current_token_for_writer(&instance)
            && !self.bugs.on(Bug::ReprocessingOldRdata)
        {
            // Already seen, e.g. fetched during a catch-up (fix of B15).
            return Some(FollowerAction::Discarded {
                instance,
                prev: None,
                token: Some(token),
                reason: "already seen",
            });
        }
        generator.advance(&instance, token);
        Some(FollowerAction::Rows {
            instance,
            token,
            rows,
            room_token: room_token(generator),
            caught_up: false,
        })
    }

    fn process_position(
        &mut self,
        generator: &mut MultiWriterIdGenerator,
        instance: String,
        prev: i64,
        new: i64,
    ) -> Vec<FollowerAction> {
        if self.connected && new <= generator.current_token_for_writer(&instance) {
            return self.drop_redundant_position(instance, prev, new);
        }
        self.connected = false;
        // Fix F4: the writer is caught up afresh; its RDATA waits for the end of it.
        self.connected_writers.remove(&instance);
        self.pending_batch.clear();
        let current = generator.current_token_for_writer(&instance);
        // `missing_updates = not (prev_token <= current_token <= new_token)` (handler.py line
        // 707). Bug B23 (PR #16555): `prev_token != current_token`, so a reader already past
        // `prev` read the writer's rows in (current, new], where the POSITION says there are
        // none.
        let missing = if self.bugs.on(Bug::CatchUpOnAnyPrevMismatch) {
            prev != current
        } else {
            !(prev <= current && current <= new)
        };
        // A POSITION at or below what we have reads nothing: `get_updates_since` returns at
        // once when `from == upto` (streams/_base.py), and `EventsStream._update_function`
        // when `from_token >= current_token` (streams/events.py, PR #16580). Bug B24: before
        // that fix a POSITION below us queried the database for the empty range.
        let empty_range_read = current > new && self.bugs.on(Bug::CatchUpReadsEmptyRange);
        if missing && (current < new || empty_range_read) {
            // Needless by the POSITION's contract: we already had everything up to `prev`
            // (bug B23), or up to `new` (bug B24).
            let needless = prev <= current || current >= new;
            self.catching_up = Some(CatchUp {
                instance: instance.clone(),
                prev,
                new,
                needless,
            });
            return vec![FollowerAction::FetchMissing {
                instance,
                from: current,
                upto: new,
                needless,
            }];
        }
        // A POSITION behind us also "fetches", but the update function returns nothing.
        self.finish_position(generator, &instance, prev, new)
    }

    fn finish_position(
        &mut self,
        generator: &mut MultiWriterIdGenerator,
        instance: &str,
        prev: i64,
        new: i64,
    ) -> Vec<FollowerAction> {
        if self.fixes.position_is_not_persisted() {
            // Fix F2: the POSITION's token bounds its writer; it is not a persisted id.
            generator.advance_from_position(instance, new);
        } else {
            generator.advance(instance, new);
        }
        self.connected = true;
        let connected_stream = !std::mem::replace(&mut self.connected_on_this_connection, true);
        if self.fixes.on(Fix::F4) {
            self.connected_writers.insert(instance.to_owned());
        }
        vec![FollowerAction::Advanced {
            instance: instance.to_owned(),
            prev,
            token: new,
            connected_stream,
        }]
    }
}

#[cfg(test)]
mod tests;

//! Synapse's notifier and the waits around it (synapse/notifier.py, synapse/handlers/sync.py,
//! synapse/streams/events.py, synapse/replication/tcp/client.py, 1.163.2), as three sans-IO
//! state machines:
//!
//! - [`Notifier`]: the pending list of room events held back until the room token covers
//!   them, and the listeners of a user stream that a release wakes;
//! - [`PositionWaiters`]: `wait_for_stream_position`, a reader waiting for a writer's position
//!   to reach it over replication;
//! - [`SyncRequest`]: one /sync request with a `since` token: bound a token from the future,
//!   wait (by polling) for this process to catch up with it, answer with the events in
//!   `(since, current]`.
//!
//! Nothing here awaits or reads a clock. Every wait is registered with the time it starts;
//! the host asks `poll_timeout()` when the next deadline is, arms a timer, and calls
//! `handle_timeout(now)` when it fires. Every wake-up comes back as a value naming the
//! listener or waiter it is for, in a deterministic order. Each rule cites the Synapse
//! behaviour it copies (research/synapse-model.md §2–§4 give them in prose).

use std::collections::BTreeMap;

use crate::bugs::{Bug, Bugs};
use crate::limits::{
    SYNC_TOKEN_POLL_INTERVAL_MS, SYNC_TOKEN_WAIT_MAX_MS, WAIT_FOR_STREAM_POSITION_TIMEOUT_MS,
};
use crate::time::SimInstant;
use crate::token::{MultiWriterToken, StreamId};

/// Names a listener of the user stream; chosen by the host, unique among waiting listeners.
pub type ListenerId = u64;

/// Names a `wait_for_stream_position` waiter; chosen by the host, unique among waiting ones.
pub type WaiterId = u64;

/// Bad input from the host.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotifierError {
    #[error("listener {0} is already waiting")]
    ListenerInUse(ListenerId),
    #[error("waiter {0} is already waiting")]
    WaiterInUse(WaiterId),
    /// Bug B12: inserting a second waiter on one position compared two deferreds.
    #[error(
        "TypeError: '<' not supported between instances of 'Deferred' and 'Deferred' (waiter {0})"
    )]
    WaitersCompared(WaiterId),
}

/// A persisted room event as the notifier knows it: `PersistedEventPosition` (writer and
/// stream id) plus the event id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct RoomEvent {
    pub instance: String,
    pub stream_id: StreamId,
    pub event_id: String,
}

impl RoomEvent {
    pub fn new(instance: &str, stream_id: StreamId, event_id: &str) -> Self {
        RoomEvent {
            instance: instance.to_owned(),
            stream_id,
            event_id: event_id.to_owned(),
        }
    }

    /// `PersistedEventPosition.persisted_after(token)`: `token.pos_for(instance) < stream_id`.
    pub fn persisted_after(&self, token: &MultiWriterToken) -> bool {
        token.pos_for(&self.instance) < self.stream_id
    }
}

/// Events released from the pending list together, and the token they are announced with:
/// what `on_new_event(ROOM, token, ...)`, app services, pushers and the federation sender
/// receive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    /// In pending-list order (the order `on_new_room_events` received them).
    pub events: Vec<RoomEvent>,
    pub token: MultiWriterToken,
}

/// How a listener of the user stream ended. Either way Synapse then runs the request's
/// callback with `(from_token, token)`; only a woken listener may loop and wait again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenerWakeup {
    /// Resolved with the stream's current token: at once because `from_token` differed from
    /// it, or later by a notification.
    Woken {
        listener: ListenerId,
        token: MultiWriterToken,
    },
    /// The timeout passed (or was zero); `token` is the stream's current token then.
    TimedOut {
        listener: ListenerId,
        token: MultiWriterToken,
    },
}

impl ListenerWakeup {
    pub fn listener(&self) -> ListenerId {
        match self {
            ListenerWakeup::Woken { listener, .. } | ListenerWakeup::TimedOut { listener, .. } => {
                *listener
            }
        }
    }
}

/// What `on_new_room_events` did: the events it released (if any) and the listeners it woke.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoomEventsOutcome {
    pub announcement: Option<Announcement>,
    /// Listener id order.
    pub woken: Vec<ListenerWakeup>,
}

#[derive(Clone, Debug)]
struct Listener {
    deadline: SimInstant,
}

/// The notifier of one process: the pending room events and one user stream.
///
/// Simplifications: every simulated user is in the one room, so every release wakes every
/// user stream, and they would all hold the same token; one stream stands for all of them.
/// It is created with the process (Synapse creates a user's stream at its first
/// `wait_for_events` with `get_current_token()` and expires it after ten idle minutes).
///
/// Drive contract:
/// - after a batch of events is persisted (writer path) or per event row of an RDATA after the
///   id generator's `advance` (reader path), call [`Notifier::on_new_room_events`] with the
///   room token read *after* that (`get_room_max_token()`); forward the announcement;
/// - a request that long-polls calls [`Notifier::wait_for_events`]; a `Some` answer is final
///   at once, otherwise the answer comes from a later `on_new_room_events` or
///   [`Notifier::handle_timeout`]. Arm a timer for [`Notifier::poll_timeout`];
/// - a /sync request with `since` is driven through [`Notifier::poll_sync`] so that its
///   give-ups are counted.
#[derive(Clone, Debug)]
pub struct Notifier {
    /// `pending_new_room_events`, in arrival order.
    pending: Vec<RoomEvent>,
    /// `_NotifierUserStream.current_token` (its room part).
    current_token: MultiWriterToken,
    /// `_NotifierUserStream.listeners`, by id so that wake-ups come out in id order.
    listeners: BTreeMap<ListenerId, Listener>,
    /// `synapse_notifier_wait_for_stream_token_timeouts{stream_key="room"}`.
    wait_for_stream_token_timeouts: u64,
    /// Historical-bug switches (all off: Synapse 1.163.2).
    bugs: Bugs,
}

impl Notifier {
    /// A notifier whose user stream starts at `current_token` (`get_current_token()`).
    pub fn new(current_token: MultiWriterToken) -> Self {
        Notifier {
            pending: Vec::new(),
            current_token,
            listeners: BTreeMap::new(),
            wait_for_stream_token_timeouts: 0,
            bugs: Bugs::NONE,
        }
    }

    /// The notifier with historical-bug switches on.
    pub fn with_bugs(mut self, bugs: Bugs) -> Self {
        self.bugs = bugs;
        self
    }

    /// The user stream's current token: the token of the last release.
    pub fn current_token(&self) -> &MultiWriterToken {
        &self.current_token
    }

    /// Events still held back, in arrival order.
    pub fn pending(&self) -> &[RoomEvent] {
        &self.pending
    }

    pub fn listener_count(&self) -> usize {
        self.listeners.len()
    }

    /// The counter `synapse_notifier_wait_for_stream_token_timeouts` (room stream).
    pub fn wait_for_stream_token_timeouts(&self) -> u64 {
        self.wait_for_stream_token_timeouts
    }

    /// `notify_new_room_events` + `_notify_pending_new_room_events`: append every event to the
    /// pending list, then release, together and in list order, every pending entry that is not
    /// `persisted_after(max_token)`; the rest stay pending in order. If anything was released,
    /// `on_new_event(ROOM, ...)` sets the user stream's token and wakes all its listeners.
    ///
    /// An event persisted out of order (W2's 12 while W1's 11 is in flight) is therefore
    /// announced only once the token covers it, and always with the max token (see
    /// `Notifier::announcement_token`).
    pub fn on_new_room_events(
        &mut self,
        events: Vec<RoomEvent>,
        max_token: MultiWriterToken,
    ) -> RoomEventsOutcome {
        self.pending.extend(events);
        let (held, released): (Vec<RoomEvent>, Vec<RoomEvent>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|event| event.persisted_after(&max_token));
        self.pending = held;
        if released.is_empty() {
            // Synapse calls `on_new_event` only `if users or rooms`.
            return RoomEventsOutcome::default();
        }
        let token = self.announcement_token(&released, &max_token);
        // `on_new_event` reads `event_sources.get_current_token()`; nothing runs between the
        // caller reading `get_room_max_token()` and this, so it is the same token.
        let woken = self.notify(max_token);
        RoomEventsOutcome {
            announcement: Some(Announcement {
                events: released,
                token,
            }),
            woken,
        }
    }

    /// The token released events are announced with: the max token, whatever the events' own
    /// ids (the fix of bug B20, where the pusher took the min/max of the events' ids). A
    /// historic-bug switch would change only this function.
    fn announcement_token(
        &self,
        released: &[RoomEvent],
        max_token: &MultiWriterToken,
    ) -> MultiWriterToken {
        if self.bugs.on(Bug::NotifierGivenPerEventIds) {
            let highest = released.iter().map(|e| e.stream_id).max();
            return MultiWriterToken::at(highest.expect("released events are not empty"));
        }
        max_token.clone()
    }

    /// `_NotifierUserStream.update_and_fetch_deferreds` + callbacks: set the current token and
    /// wake every listener with it, each once.
    fn notify(&mut self, current_token: MultiWriterToken) -> Vec<ListenerWakeup> {
        self.current_token = current_token;
        std::mem::take(&mut self.listeners)
            .into_keys()
            .map(|listener| ListenerWakeup::Woken {
                listener,
                token: self.current_token.clone(),
            })
            .collect()
    }

    /// One listener of `wait_for_events(from_token, timeout)`.
    ///
    /// - `timeout_ms == 0`: Synapse skips the wait and runs the callback once with the current
    ///   token, so this answers `TimedOut` at once;
    /// - `new_listener(token)`: if `from_token != current_token` (plain inequality, not the
    ///   partial order) it resolves at once with the current token;
    /// - otherwise it waits until a notification (`Woken`, together with every other listener)
    ///   or until `now + timeout_ms` (`TimedOut`).
    ///
    /// Synapse's loop (run the callback on wake; if it is empty, wait again from the token it
    /// got, with what is left of the timeout) is the host's: call this again with the token and
    /// the remaining time.
    pub fn wait_for_events(
        &mut self,
        listener: ListenerId,
        from_token: &MultiWriterToken,
        now: SimInstant,
        timeout_ms: u64,
    ) -> Result<Option<ListenerWakeup>, NotifierError> {
        if self.listeners.contains_key(&listener) {
            return Err(NotifierError::ListenerInUse(listener));
        }
        if timeout_ms == 0 {
            return Ok(Some(ListenerWakeup::TimedOut {
                listener,
                token: self.current_token.clone(),
            }));
        }
        if *from_token != self.current_token {
            return Ok(Some(ListenerWakeup::Woken {
                listener,
                token: self.current_token.clone(),
            }));
        }
        self.listeners.insert(
            listener,
            Listener {
                deadline: now + timeout_ms,
            },
        );
        Ok(None)
    }

    /// A request went away (client disconnect): its listener is dropped without an answer,
    /// as the deferred's canceller does. Returns whether it was waiting.
    pub fn cancel_listener(&mut self, listener: ListenerId) -> bool {
        self.listeners.remove(&listener).is_some()
    }

    /// The earliest deadline of a waiting listener.
    pub fn poll_timeout(&self) -> Option<SimInstant> {
        self.listeners.values().map(|l| l.deadline).min()
    }

    /// `timeout_deferred`: every listener whose deadline is at or before `now` times out, in
    /// (deadline, id) order, with the current token.
    pub fn handle_timeout(&mut self, now: SimInstant) -> Vec<ListenerWakeup> {
        let mut expired: Vec<(SimInstant, ListenerId)> = self
            .listeners
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, l)| (l.deadline, *id))
            .collect();
        expired.sort_unstable();
        expired
            .into_iter()
            .map(|(_, listener)| {
                self.listeners.remove(&listener);
                ListenerWakeup::TimedOut {
                    listener,
                    token: self.current_token.clone(),
                }
            })
            .collect()
    }

    /// [`SyncRequest::poll`], counting a give-up in
    /// `synapse_notifier_wait_for_stream_token_timeouts` as `wait_for_stream_token` does.
    pub fn poll_sync(
        &mut self,
        request: &mut SyncRequest,
        now: SimInstant,
        current: &MultiWriterToken,
        events: &[RoomEvent],
    ) -> SyncPoll {
        let poll = request.poll(now, current, events);
        if let SyncPoll::Ready(response) = &poll {
            if response.timed_out {
                self.wait_for_stream_token_timeouts += 1;
            }
        }
        poll
    }
}

/// How a `wait_for_stream_position` waiter ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PositionWakeup {
    /// The writer's position reached the one waited for (or it was already there, or the
    /// writer is this process).
    Reached { waiter: WaiterId },
    /// Five seconds passed; Synapse logs a warning and returns as if it had been reached.
    TimedOut { waiter: WaiterId },
}

impl PositionWakeup {
    pub fn waiter(&self) -> WaiterId {
        match self {
            PositionWakeup::Reached { waiter } | PositionWakeup::TimedOut { waiter } => *waiter,
        }
    }
}

#[derive(Clone, Debug)]
struct PositionWaiter {
    position: StreamId,
    waiter: WaiterId,
    deadline: SimInstant,
}

/// `ReplicationDataHandler._streams_to_waiters` of one replication stream on one process:
/// per writer, the waiters sorted by position only.
///
/// Drive contract: a request that must read a writer's write calls
/// [`PositionWaiters::wait_for_stream_position`] (`Some` = return at once); the replication
/// client calls [`PositionWaiters::on_rdata`] (or `on_position`) after advancing the id
/// generator; a timer armed for [`PositionWaiters::poll_timeout`] calls
/// [`PositionWaiters::handle_timeout`].
#[derive(Clone, Debug)]
pub struct PositionWaiters {
    local_instance: String,
    /// Writer → waiters, sorted by position; equal positions in arrival order (`SortedList`
    /// with `key=lambda t: t[0]` inserts after equal keys).
    waiting: BTreeMap<String, Vec<PositionWaiter>>,
    /// Historical-bug switches (all off: Synapse 1.163.2).
    bugs: Bugs,
}

impl PositionWaiters {
    /// The waiters of a process named `local_instance`.
    pub fn new(local_instance: &str) -> Self {
        PositionWaiters {
            local_instance: local_instance.to_owned(),
            waiting: BTreeMap::new(),
            bugs: Bugs::NONE,
        }
    }

    /// The waiters with historical-bug switches on.
    pub fn with_bugs(mut self, bugs: Bugs) -> Self {
        self.bugs = bugs;
        self
    }

    pub fn waiting_count(&self) -> usize {
        self.waiting.values().map(Vec::len).sum()
    }

    /// `wait_for_stream_position(instance, stream, position)`: returns at once (`Some`) if
    /// `instance` is this process (it is not told about its own writes) or if
    /// `position <= current_token_for(instance)`, the *writer's* position on this process (the
    /// fix of bug B17, which compared the local instance's). Otherwise the waiter joins the
    /// writer's list, sorted by position only, so any number may wait on one position (the fix
    /// of bug B12, which also compared the deferreds), and times out after
    /// [`WAIT_FOR_STREAM_POSITION_TIMEOUT_MS`].
    ///
    /// `current_token_for` is the stream's `current_token(instance)`, e.g.
    /// `MultiWriterIdGenerator::current_token_for_writer`.
    pub fn wait_for_stream_position(
        &mut self,
        waiter: WaiterId,
        instance: &str,
        position: StreamId,
        current_token_for: impl Fn(&str) -> StreamId,
        now: SimInstant,
    ) -> Result<Option<PositionWakeup>, NotifierError> {
        if self.waiting.values().flatten().any(|w| w.waiter == waiter) {
            return Err(NotifierError::WaiterInUse(waiter));
        }
        // Bug B17 (PR #14856): the position was compared with the local instance's token.
        let compared_with = if self.bugs.on(Bug::WaitChecksLocalToken) {
            &self.local_instance
        } else {
            instance
        };
        if instance == self.local_instance || position <= current_token_for(compared_with) {
            return Ok(Some(PositionWakeup::Reached { waiter }));
        }
        let tie = self
            .waiting
            .get(instance)
            .is_some_and(|list| list.iter().any(|w| w.position == position));
        if tie && self.bugs.on(Bug::WaitersCompareDeferreds) {
            // Bug B12: sorting `(position, deferred)` tuples compares the deferreds on a tie.
            return Err(NotifierError::WaitersCompared(waiter));
        }
        let list = self.waiting.entry(instance.to_owned()).or_default();
        let at = list.partition_point(|w| w.position <= position);
        list.insert(
            at,
            PositionWaiter {
                position,
                waiter,
                deadline: now + WAIT_FOR_STREAM_POSITION_TIMEOUT_MS,
            },
        );
        Ok(None)
    }

    /// The waiter part of `on_rdata(stream, instance, token, rows)`: wake, in list order, every
    /// waiter of `instance` with `position <= token`. Other writers' waiters are untouched.
    pub fn on_rdata(&mut self, instance: &str, token: StreamId) -> Vec<PositionWakeup> {
        let Some(list) = self.waiting.get_mut(instance) else {
            return Vec::new();
        };
        let reached = list.partition_point(|w| w.position <= token);
        let woken = list
            .drain(..reached)
            .map(|w| PositionWakeup::Reached { waiter: w.waiter })
            .collect();
        if list.is_empty() {
            self.waiting.remove(instance);
        }
        woken
    }

    /// `on_position` = `on_rdata` with no rows.
    pub fn on_position(&mut self, instance: &str, token: StreamId) -> Vec<PositionWakeup> {
        self.on_rdata(instance, token)
    }

    /// The earliest deadline of a waiter.
    pub fn poll_timeout(&self) -> Option<SimInstant> {
        self.waiting.values().flatten().map(|w| w.deadline).min()
    }

    /// `timeout_deferred`: every waiter whose deadline is at or before `now` gives up, in
    /// (deadline, id) order. (Synapse leaves the timed-out deferred in the list until a later
    /// `on_rdata` pops it; nothing can observe that.)
    pub fn handle_timeout(&mut self, now: SimInstant) -> Vec<PositionWakeup> {
        let mut expired: Vec<(SimInstant, WaiterId)> = Vec::new();
        for list in self.waiting.values_mut() {
            list.retain(|w| {
                let keep = w.deadline > now;
                if !keep {
                    expired.push((w.deadline, w.waiter));
                }
                keep
            });
        }
        self.waiting.retain(|_, list| !list.is_empty());
        expired.sort_unstable();
        expired
            .into_iter()
            .map(|(_, waiter)| PositionWakeup::TimedOut { waiter })
            .collect()
    }
}

/// A /sync answer (its room timeline part).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncResponse {
    /// The events in `(since, next_batch]`, in stream order (`ORDER BY stream_ordering`),
    /// ties by writer name.
    pub events: Vec<RoomEvent>,
    pub next_batch: MultiWriterToken,
    /// More events were in range than the timeline limit: `next_batch` is where the read
    /// stopped (`advance_multiwriter_sharded_token_after_partial_read`), not `current`.
    pub limited: bool,
    /// `wait_for_stream_token` gave up: the answer is empty and `next_batch` is the (bounded)
    /// `since` token (`SyncResult.empty(since_token)`, not cached).
    pub timed_out: bool,
}

/// What polling a [`SyncRequest`] gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncPoll {
    /// Still waiting for this process to catch up with `since`; poll again at `next_poll_at`.
    Pending {
        next_poll_at: SimInstant,
    },
    Ready(SyncResponse),
}

/// One /sync request without long-polling (`timeout=0`), from its start to its answer.
///
/// Drive contract: create it with [`SyncRequest::new`] when the request arrives, then call
/// [`SyncRequest::poll`] (through [`Notifier::poll_sync`] to count give-ups) at once and again
/// at each `next_poll_at` it names, with the process's current room token
/// (`get_room_max_token()`) and the persisted events this process can read, until it is
/// `Ready`. A long-poll is the host's composition: on an empty answer, wait on
/// [`Notifier::wait_for_events`] from `since` and poll a new request on wake.
#[derive(Clone, Debug)]
pub struct SyncRequest {
    /// After `bound_future_token`; `None` for an initial sync.
    since: Option<MultiWriterToken>,
    started: SimInstant,
    next_poll_at: SimInstant,
    done: bool,
    options: SyncOptions,
}

/// How a [`SyncRequest`] reads: its timeline limit and the historical-bug switches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncOptions {
    /// At most this many events per answer, the earliest first; the rest come on the next
    /// request from a partial-read token. `None`: unlimited.
    pub timeline_limit: Option<usize>,
    pub bugs: Bugs,
}

impl SyncRequest {
    /// `_wait_for_sync_for_user` up to the wait: with a `since` token,
    /// `bound_future_token(since)`: if `since` is not `<=` the current token, it is clamped with
    /// `bound_stream_token(max_allocated)` (the fix of bug B8, where a token from the future
    /// made every /sync wait and come back empty forever). `bounded` leaves a token whose
    /// `max_pos()` is not above `max_allocated` unchanged, as Synapse only bounds
    /// `if max_token < token.get_max_stream_pos()`.
    ///
    /// `max_allocated` is the id generator's `get_max_allocated_token()` (the sequence's
    /// `last_value`, minus one when not called).
    pub fn new(
        since: Option<MultiWriterToken>,
        current: &MultiWriterToken,
        max_allocated: StreamId,
        now: SimInstant,
    ) -> Self {
        Self::with_options(since, current, max_allocated, now, SyncOptions::default())
    }

    /// [`SyncRequest::new`] with a timeline limit or historical-bug switches.
    pub fn with_options(
        since: Option<MultiWriterToken>,
        current: &MultiWriterToken,
        max_allocated: StreamId,
        now: SimInstant,
        options: SyncOptions,
    ) -> Self {
        let since = since.map(|since| {
            // Bug B8 (PR #17386): before the bound, a token from the future was waited on.
            if since.is_before_or_eq(current) || options.bugs.on(Bug::SyncWaitsOnFutureToken) {
                since
            } else {
                since.bounded(max_allocated)
            }
        });
        SyncRequest {
            since,
            started: now,
            next_poll_at: now,
            done: false,
            options,
        }
    }

    /// The `since` token after bounding.
    pub fn since(&self) -> Option<&MultiWriterToken> {
        self.since.as_ref()
    }

    /// When the request next wants [`SyncRequest::poll`]; `None` once it has answered.
    pub fn poll_timeout(&self) -> Option<SimInstant> {
        (!self.done).then_some(self.next_poll_at)
    }

    /// `wait_for_stream_token(since)` then the answer.
    ///
    /// - Initial sync (no `since`): answered at once with every event at or before `current`
    ///   and `next_batch = current`. Synapse sends only the latest `timeline_limit` events per
    ///   room, flagged `limited`; the model's timeline is unlimited so a client's pages cover
    ///   the stream from its start.
    /// - `since <= current`: answered with the events in `(since, current]`
    ///   (`is_stream_position_in_range` per event) and `next_batch = current`, so successive
    ///   pages never repeat an event.
    /// - otherwise Synapse sleeps 500 ms and checks again, and gives up at the first check
    ///   *more than* 10 s after it started (`now - start > 10_000`): with exact sleeps that is
    ///   at 10.5 s. It then answers empty with `next_batch = since` and `timed_out`.
    ///
    /// Synapse only looks at the token when its sleep ends, so a poll before `next_poll_at`
    /// answers `Pending` without looking. Polling after the answer is a host bug.
    pub fn poll(
        &mut self,
        now: SimInstant,
        current: &MultiWriterToken,
        events: &[RoomEvent],
    ) -> SyncPoll {
        assert!(!self.done, "a sync request polled after it answered");
        if now < self.next_poll_at {
            return SyncPoll::Pending {
                next_poll_at: self.next_poll_at,
            };
        }
        let caught_up = match &self.since {
            None => true,
            Some(since) => since.is_before_or_eq(current),
        };
        if caught_up {
            self.done = true;
            let low = self
                .since
                .clone()
                .unwrap_or_else(|| MultiWriterToken::at(0));
            let mut page: Vec<RoomEvent> = events
                .iter()
                .filter(|e| {
                    MultiWriterToken::row_in_range(&low, current, Some(&e.instance), e.stream_id)
                })
                .cloned()
                .collect();
            page.sort_by(|a, b| (a.stream_id, &a.instance).cmp(&(b.stream_id, &b.instance)));
            let mut next_batch = current.clone();
            let limit = self.options.timeline_limit.unwrap_or(usize::MAX).max(1);
            let limited = page.len() > limit;
            if limited {
                page.truncate(limit);
                let last_read = page.last().expect("a limit of at least one").stream_id;
                next_batch = if self.options.bugs.on(Bug::PartialReadTokenGoesBackwards) {
                    MultiWriterToken::after_partial_read_unfloored(&low, current, last_read)
                } else {
                    MultiWriterToken::after_partial_read(&low, current, last_read)
                };
            }
            return SyncPoll::Ready(SyncResponse {
                events: page,
                next_batch,
                limited,
                timed_out: false,
            });
        }
        if now.ms_since(self.started) > SYNC_TOKEN_WAIT_MAX_MS {
            self.done = true;
            let since = self.since.clone().expect("only a request with since waits");
            return SyncPoll::Ready(SyncResponse {
                events: Vec::new(),
                next_batch: since,
                limited: false,
                timed_out: true,
            });
        }
        self.next_poll_at = now + SYNC_TOKEN_POLL_INTERVAL_MS;
        SyncPoll::Pending {
            next_poll_at: self.next_poll_at,
        }
    }
}

#[cfg(test)]
mod tests;

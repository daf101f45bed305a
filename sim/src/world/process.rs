//! One simulated Synapse process (a writer or a reader of the events stream): its id
//! generator, its followers of the other writers, and for a writer its persister and
//! announcer, for a reader its notifier. This is the state a crash loses.
//!
//! Commands come in (`on_command`, from `redis`, `follow` or `writer`'s replication server)
//! and the models' actions go out; the few tasks it starts itself wait on the database for
//! it: the backlog drain of a busy CPU, a POSITION's catch-up (`fetch_missing`) and the
//! announcer's own-update reads. The host roles (`writer`, `reader`) and the services they
//! run (`sync`, `send`, `persist`) drive it. Borrows of the state never live across an
//! `await`.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use streamsim_models::bugs::Bug;
use streamsim_models::changecache::StreamChangeCache;
use streamsim_models::db::STREAM_NAME;
use streamsim_models::idgen::{IdGenConfig, MultiWriterIdGenerator};
use streamsim_models::limits::UPDATES_FETCH_ROWS_MAX;
use streamsim_models::notifier::{Notifier, PositionWaiters, PositionWakeup, RoomEvent, WaiterId};
use streamsim_models::persister::Persister;
use streamsim_models::replication::{AnnouncerAction, FollowerAction, StreamAnnouncer};
use streamsim_models::roomsync::{row_payload, split_row_payload};
use streamsim_models::token::MultiWriterToken;
use streamsim_models::wire::pyjson::PyValue;
use streamsim_models::wire::Command;
use tokio::sync::{mpsc, oneshot, Notify};

use streamsim_models::metrics::bgproc::Usage;

use super::bus::BusPublisher;
use super::db::DbClient;
use super::observer::Positioned;
use super::process_metrics::{names, Incarnation, ProcessMetrics, CPU_US_PER_COMMAND};
use super::shared::Shared;
use crate::history::Event;

/// How long a process waits before retrying a database read it needs (start-up, a catch-up),
/// in milliseconds.
pub const DB_RETRY_DELAY_MS: u64 = 1_000;

/// Server-side replication connections hand their commands in as `client/<number>`.
const SERVER_LINK_PREFIX: &str = "client/";

/// Retries a database call until it answers, `DB_RETRY_DELAY_MS` apart: a process (its
/// /sync, its federation sender) outlives a partition from the database.
pub async fn retry_db<T, F, Fut>(mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, super::db::DbCallError>>,
{
    loop {
        match call().await {
            Ok(value) => return value,
            Err(error) => {
                tracing::debug!(%error, "database call failed; retrying");
                tokio::time::sleep(Duration::from_millis(DB_RETRY_DELAY_MS)).await;
            }
        }
    }
}

/// What a replication command means to a process.
pub enum Inbound {
    Rdata {
        instance: String,
        token: Option<i64>,
        event_id: String,
    },
    Position {
        instance: String,
        prev: i64,
        new: i64,
    },
    Replicate,
    /// Anything else valid (USER_SYNC, ...): no stream consequence here.
    Other,
}

impl Inbound {
    pub fn from_command(command: &Command) -> Inbound {
        let text = |s: &streamsim_models::wire::pytext::PyStr| s.to_utf8().unwrap_or_default();
        match command {
            Command::Rdata {
                stream_name,
                instance_name,
                token,
                row,
            } if stream_name.eq_str(STREAM_NAME) => {
                // `[event_id, room_id, ...]`: the payload the models pass through names both.
                let event_id = match row.iterate().as_deref() {
                    Some([PyValue::Str(event_id), PyValue::Str(room), ..]) => {
                        row_payload(&text(event_id), &text(room))
                    }
                    Some([PyValue::Str(event_id), ..]) => text(event_id),
                    _ => String::new(),
                };
                Inbound::Rdata {
                    instance: text(instance_name),
                    token: token.as_ref().and_then(|t| t.to_i64()),
                    event_id,
                }
            }
            Command::Position {
                stream_name,
                instance_name,
                prev_token,
                new_token,
            } if stream_name.eq_str(STREAM_NAME) => match (prev_token.to_i64(), new_token.to_i64())
            {
                (Some(prev), Some(new)) => Inbound::Position {
                    instance: text(instance_name),
                    prev,
                    new,
                },
                _ => Inbound::Other,
            },
            Command::Replicate => Inbound::Replicate,
            _ => Inbound::Other,
        }
    }
}

/// The writer half of a process.
pub struct WriterPart {
    pub persister: Persister,
    pub announcer: StreamAnnouncer,
}

/// A process's memory.
pub struct ProcessState {
    pub generator: MultiWriterIdGenerator,
    /// `_events_stream_cache`: which rooms changed after a stream position; what an
    /// incremental /sync reads (see [`Process::rooms_changed`]).
    pub events_stream_cache: StreamChangeCache,
    /// One follower per replication link (a writer's name over TCP, `bus` over Redis).
    pub followers: BTreeMap<String, streamsim_models::replication::StreamFollower>,
    pub notifier: Option<Notifier>,
    /// A reader that sends federation: its federation sender (`world::federation`).
    pub federation: Option<streamsim_models::fedsender::FederationSender>,
    pub writer: Option<WriterPart>,
    /// Server-side replication connections (TCP transport), by connection number.
    pub links: BTreeMap<u64, mpsc::UnboundedSender<Command>>,
    pub next_link: u64,
    /// The Redis publisher, once subscribed (Redis transport).
    pub bus: Option<BusPublisher>,
    /// Sends waiting for the persister's next batch (the room's persister only).
    pub send_queue: Vec<QueuedSend>,
    /// `wait_for_stream_position` waiters of client sends, and how to wake each.
    pub waiters: PositionWaiters,
    pub waiter_wakeups: BTreeMap<WaiterId, oneshot::Sender<PositionWakeup>>,
    pub next_waiter: WaiterId,
    /// Stream commands waiting while the process is busy, per link.
    pub inbound_backlog: BTreeMap<String, VecDeque<Command>>,
    /// Links whose backlog a drain task is working through.
    pub draining: std::collections::BTreeSet<String>,
}

/// A running process.
pub struct Process {
    pub shared: Rc<Shared>,
    pub name: String,
    pub incarnation: u32,
    /// The writers config (`stream_writers.events`) this process read when it started: who
    /// persists which room.
    pub writers: Vec<String>,
    pub db: DbClient,
    pub state: RefCell<ProcessState>,
    /// Wakes the persistence queue when a send is queued.
    pub send_queued: Notify,
    /// Draws which batch requests are cancelled (`workload.cancel_rate`).
    cancel_rng: RefCell<rand_chacha::ChaCha8Rng>,
    /// When the process's CPU is next free, while it is busy (see `drain_backlog`).
    cpu_free_at: std::cell::Cell<streamsim_models::time::SimInstant>,
    /// The process's metrics (lost with it on a crash, but what was flushed).
    pub metrics: Rc<RefCell<ProcessMetrics>>,
}

/// A client send waiting in a persister's queue for the next batch (`send` fills the queue
/// and drains it).
pub struct QueuedSend {
    /// The event's row payload (event id and room).
    pub payload: String,
    /// Where the batch's outcome goes: its highest id, or why it was not persisted.
    pub answer: tokio::sync::oneshot::Sender<Result<i64, String>>,
}

/// A command's wire line without the newline (`NAME␠args`), or `None` if it cannot be sent.
pub fn command_line(command: &Command) -> Option<String> {
    let args = command.to_line().ok()?.to_utf8().ok()?;
    Some(format!("{} {args}", command.name().as_str()))
}

pub use streamsim_models::replication::room_token;

impl Positioned for Process {
    fn room_token(&self) -> MultiWriterToken {
        room_token(&self.state.borrow().generator)
    }
}

impl Process {
    /// Starts a process from the database (retrying until the database answers), as
    /// Synapse's constructors do, and records the start. The caller (the host role) spawns
    /// its tasks, the metrics flush loop first.
    pub async fn start(shared: Rc<Shared>, name: &str, is_writer: bool) -> Rc<Process> {
        let incarnation = shared.begin_incarnation(name);
        let writers = shared.writers();
        let db = DbClient::new(name, incarnation, &shared.cuts);
        let (startup, latest_by_room) = loop {
            match db.startup(&writers).await {
                Ok(answer) => break answer,
                Err(error) => {
                    tracing::debug!(host = name, %error, "start-up read failed; retrying");
                    tokio::time::sleep(Duration::from_millis(DB_RETRY_DELAY_MS)).await;
                }
            }
        };
        let writer_names: Vec<&str> = writers.iter().map(String::as_str).collect();
        let generator = MultiWriterIdGenerator::from_startup_state(
            IdGenConfig::new(name, &writer_names)
                .with_bugs(shared.bugs)
                .with_fixes(shared.fixes),
            startup,
        );
        let token = room_token(&generator);
        // `StreamWorkerStore.__init__` (synapse/storage/databases/main/stream.py):
        // `get_cache_dict(..., max_value=get_room_max_stream_ordering())`, then
        // `StreamChangeCache(min_event_val, prefilled_cache=...)`.
        let events_stream_cache = StreamChangeCache::prefilled(
            latest_by_room
                .iter()
                .map(|(room, position)| (room.as_str(), *position)),
            generator.current_token(),
        );
        if incarnation > 1 {
            shared.observer.record(Event::Restarted {
                host: name.to_owned(),
                ids_in_flight: shared.observer.take_unfinished(name),
            });
        }
        shared.observer.record(Event::Started {
            host: name.to_owned(),
            token: token.clone(),
        });
        let writer = is_writer.then(|| WriterPart {
            persister: Persister::new(),
            announcer: StreamAnnouncer::new(STREAM_NAME, &generator).with_bugs(shared.bugs),
        });
        let notifier = (!is_writer).then(|| Notifier::new(token).with_bugs(shared.bugs));
        let federation = (!is_writer
            && shared
                .scenario
                .federation_sender_names()
                .iter()
                .any(|sender| sender == name))
        .then(streamsim_models::fedsender::FederationSender::new);
        let shared_bugs = shared.bugs;
        let shared_for_rng = shared.clone();
        let metrics = Rc::new(RefCell::new(ProcessMetrics::new(name, incarnation)));
        shared.observer.watch_metrics(Incarnation {
            node: name.to_owned(),
            incarnation,
            started_at: crate::net::now(),
            metrics: metrics.clone(),
        });
        let process = Rc::new(Process {
            shared,
            name: name.to_owned(),
            incarnation,
            db,
            writers: writers.clone(),
            state: RefCell::new(ProcessState {
                generator,
                events_stream_cache,
                followers: BTreeMap::new(),
                notifier,
                federation,
                writer,
                links: BTreeMap::new(),
                next_link: 0,
                bus: None,
                send_queue: Vec::new(),
                waiters: PositionWaiters::new(name).with_bugs(shared_bugs),
                waiter_wakeups: BTreeMap::new(),
                next_waiter: 0,
                inbound_backlog: BTreeMap::new(),
                draining: std::collections::BTreeSet::new(),
            }),
            send_queued: Notify::new(),
            cancel_rng: RefCell::new(
                shared_for_rng.rng_for(&format!("{name}/cancel"), incarnation),
            ),
            cpu_free_at: std::cell::Cell::new(streamsim_models::time::SimInstant::ZERO),
            metrics,
        });
        if !is_writer {
            let weak = Rc::downgrade(&process);
            let watched: std::rc::Weak<dyn Positioned> = weak;
            process.shared.observer.watch_reader(name, watched);
        }
        process
    }

    /// A replication command arrived on `link`.
    pub fn on_command(self: &Rc<Self>, link: &str, command: &Command) {
        tracing::trace!(at = %crate::net::now(), host = %self.name, link, ?command, "inbound command");
        let inbound = Inbound::from_command(command);
        // `on_RDATA` / `on_POSITION` ignore the process's own echoes (the Redis bus sends
        // every line to its sender too) before anything is queued.
        let own_echo = matches!(&inbound,
            Inbound::Rdata { instance, .. } | Inbound::Position { instance, .. } if *instance == self.name);
        if !own_echo && matches!(inbound, Inbound::Rdata { .. } | Inbound::Position { .. }) {
            let worker = self.replication_item_arrived(link, command);
            self.bg_charge(
                worker,
                Usage {
                    cpu_us: CPU_US_PER_COMMAND,
                    ..Usage::default()
                },
            );
            // A busy process handles stream commands one at a time, each taking its cost;
            // what arrives meanwhile queues behind them, in order.
            let queued = {
                let state = &mut *self.state.borrow_mut();
                let backlog = state.inbound_backlog.entry(link.to_owned()).or_default();
                let busy = self.shared.busy_cost_ms(&self.name).is_some();
                if busy || !backlog.is_empty() {
                    backlog.push_back(command.clone());
                    // One drain task per link, even when a lost connection emptied the
                    // backlog under a running one.
                    Some(state.draining.insert(link.to_owned()))
                } else {
                    None
                }
            };
            match queued {
                Some(first) => {
                    if first {
                        crate::engine::spawn_local(self.clone().drain_backlog(link.to_owned()));
                    }
                    self.replication_settled(link);
                }
                None => self.handle_command(link, inbound),
            }
            return;
        }
        self.handle_command(link, inbound);
    }

    /// Handles the commands queued while the process was busy, oldest first, each after its
    /// cost in simulated time (charged to the background process doing it).
    async fn drain_backlog(self: Rc<Self>, link: String) {
        self.drain_backlog_until_empty(&link).await;
        self.state.borrow_mut().draining.remove(&link);
    }

    async fn drain_backlog_until_empty(self: &Rc<Self>, link: &str) {
        let link = link.to_owned();
        loop {
            if let Some(cost_ms) = self.shared.busy_cost_ms(&self.name) {
                if let Some(worker) = self.replication_worker(&link) {
                    self.bg_charge(
                        worker,
                        Usage {
                            cpu_us: i64::try_from(cost_ms).unwrap_or(i64::MAX / 1_000) * 1_000,
                            ..Usage::default()
                        },
                    );
                }
                // One Python process, one CPU: the links' queues take turns on it.
                let start = self.cpu_free_at.get().max(crate::net::now());
                self.cpu_free_at.set(start + cost_ms);
                crate::net::sleep_until(start + cost_ms).await;
            }
            let Some(command) = self
                .state
                .borrow_mut()
                .inbound_backlog
                .get_mut(&link)
                .and_then(VecDeque::pop_front)
            else {
                return;
            };
            self.handle_command(&link, Inbound::from_command(&command));
            if self
                .state
                .borrow()
                .inbound_backlog
                .get(&link)
                .is_none_or(VecDeque::is_empty)
            {
                return;
            }
        }
    }

    fn handle_command(self: &Rc<Self>, link: &str, inbound: Inbound) {
        let replicate = matches!(inbound, Inbound::Replicate);
        let mut reply = None;
        let actions = {
            let state = &mut *self.state.borrow_mut();
            let follower = state.followers.entry(link.to_owned()).or_insert_with(|| {
                streamsim_models::replication::StreamFollower::new(&self.name)
                    .with_bugs(self.shared.bugs)
                    .with_fixes(self.shared.fixes)
            });
            match inbound {
                Inbound::Rdata {
                    instance,
                    token,
                    event_id,
                } => follower.handle_rdata(
                    &mut state.generator,
                    &instance,
                    token,
                    (token.unwrap_or_default(), event_id),
                ),
                Inbound::Position {
                    instance,
                    prev,
                    new,
                } => follower.handle_position(&mut state.generator, &instance, prev, new),
                Inbound::Replicate => {
                    if let Some(writer) = &mut state.writer {
                        reply = writer.announcer.handle_replicate(&state.generator);
                    }
                    Vec::new()
                }
                Inbound::Other => Vec::new(),
            }
        };
        self.apply_follower(link, actions);
        self.replication_settled(link);
        if let Some(command) = reply {
            self.reply(link, command);
        }
        if replicate {
            self.poke();
        }
    }

    /// The name under which the replication server's connection `id` hands commands in.
    pub fn server_link(id: u64) -> String {
        format!("{SERVER_LINK_PREFIX}{id}")
    }

    /// Sends `command` on the connection a command came in on: one server-side connection
    /// (direct TCP), or the bus.
    fn reply(&self, link: &str, command: Command) {
        let Some(id) = link
            .strip_prefix(SERVER_LINK_PREFIX)
            .and_then(|id| id.parse::<u64>().ok())
        else {
            self.broadcast(command);
            return;
        };
        let Some(line) = command_line(&command) else {
            return;
        };
        self.shared.observer.record(Event::Announced {
            host: self.name.clone(),
            line,
        });
        if let Some(sender) = self.state.borrow().links.get(&id) {
            let _ = sender.send(command);
        }
    }

    /// The link's connection is gone: its stream is disconnected until the next POSITION.
    pub fn on_link_lost(&self, link: &str) {
        {
            let state = &mut *self.state.borrow_mut();
            if let Some(follower) = state.followers.get_mut(link) {
                follower.handle_connection_lost();
            }
            // Commands of the lost connection still waiting behind a busy CPU are dropped:
            // Synapse ignores RDATA and POSITION of a stream its connection no longer has,
            // and the new connection's POSITION catches up over them.
            if let Some(backlog) = state.inbound_backlog.get_mut(link) {
                backlog.clear();
            }
        }
        self.replication_settled(link);
    }

    fn apply_follower(self: &Rc<Self>, link: &str, actions: Vec<FollowerAction>) {
        for action in actions {
            match action {
                FollowerAction::Rows {
                    instance,
                    token,
                    rows,
                    room_token,
                    caught_up,
                } => {
                    // `process_replication_rows` → `_process_event_stream_row` →
                    // `_invalidate_caches_for_event(token, ...)` (storage/databases/main/
                    // cache.py) marks each row's room changed at the command's token, for
                    // RDATA processed and rows a POSITION's catch-up fetched alike (never
                    // for RDATA discarded as already seen: no Rows action then).
                    self.rooms_changed(rows.iter().map(|(_, payload)| (payload.as_str(), token)));
                    let rows = rows
                        .into_iter()
                        .map(|(id, payload)| (id, split_row_payload(&payload).0.to_owned()))
                        .collect();
                    self.notify_rows(&instance, rows, room_token, caught_up);
                    self.federation_replication_arrived(token);
                    self.wake_waiters(&instance, token);
                }
                FollowerAction::FetchMissing {
                    instance,
                    from,
                    upto,
                    needless,
                } => {
                    let process = self.clone();
                    let link = link.to_owned();
                    crate::engine::spawn_local(async move {
                        process
                            .fetch_missing(&link, &instance, from, upto, needless)
                            .await;
                    });
                }
                FollowerAction::Advanced {
                    instance,
                    prev,
                    token,
                    connected_stream,
                } => {
                    // `on_position` calls `on_rdata(stream, instance, token, [])`: under bug
                    // B22 that poked the federation sender with the POSITION's token too.
                    self.federation_replication_arrived(token);
                    if connected_stream {
                        self.shared.observer.record(Event::StreamConnected {
                            reader: self.name.clone(),
                            writer: instance.clone(),
                            prev,
                            new: token,
                        });
                    }
                    self.wake_waiters(&instance, token);
                }
                FollowerAction::Discarded {
                    instance,
                    prev,
                    token,
                    reason,
                } => {
                    tracing::trace!(at = %crate::net::now(), host = %self.name, %instance, ?token, reason, "discarded");
                    let not_connected = match reason {
                        "already seen" => false,
                        "stream not connected" => true,
                        _ => continue,
                    };
                    if let (Some(token), None) = (token, prev) {
                        self.shared.observer.record(Event::RdataDiscarded {
                            reader: self.name.clone(),
                            writer: instance,
                            token,
                            not_connected,
                        });
                    }
                }
            }
        }
    }

    /// `_events_stream_cache.entity_has_changed(room_id, stream_ordering)` for each row
    /// (payload, position).
    pub fn rooms_changed<'p>(&self, rows: impl IntoIterator<Item = (&'p str, i64)>) {
        let cache = &mut self.state.borrow_mut().events_stream_cache;
        for (payload, position) in rows {
            if let (_, Some(room)) = split_row_payload(payload) {
                cache.entity_has_changed(room, position);
            }
        }
    }

    /// A uniform draw in `[0, 1)` for whether the next batch request is cancelled.
    pub fn cancel_draw(&self) -> f64 {
        rand::Rng::random(&mut *self.cancel_rng.borrow_mut())
    }

    /// `on_rdata`'s last step: waiters of `instance` at or below `token` go on.
    fn wake_waiters(&self, instance: &str, token: i64) {
        let state = &mut *self.state.borrow_mut();
        for wakeup in state.waiters.on_rdata(instance, token) {
            if let Some(sender) = state.waiter_wakeups.remove(&wakeup.waiter()) {
                let _ = sender.send(wakeup);
            }
        }
    }

    /// Waiters whose five seconds are up give up.
    pub fn expire_waiters(&self) {
        let state = &mut *self.state.borrow_mut();
        for wakeup in state.waiters.handle_timeout(crate::net::now()) {
            if let Some(sender) = state.waiter_wakeups.remove(&wakeup.waiter()) {
                let _ = sender.send(wakeup);
            }
        }
    }

    /// A POSITION's catch-up read of `instance`'s rows in `(from, upto]`, retried until the
    /// database answers; each attempt is a database transaction of the link's
    /// `process-replication-data` process, and is booked as justified or `needless` (see
    /// `FollowerAction::FetchMissing`) for the metrics check on catch-up reads.
    async fn fetch_missing(
        self: Rc<Self>,
        link: &str,
        instance: &str,
        from: i64,
        upto: i64,
        needless: bool,
    ) {
        let (rows, limited) = loop {
            let started = crate::net::now();
            let answer = self
                .db
                .rows_between(instance, from, upto, UPDATES_FETCH_ROWS_MAX)
                .await;
            if let Some(worker) = self.replication_worker(link) {
                self.bg_db_txn(worker, started);
                if let Some(process) = self.bg_name(worker) {
                    self.shared.observer.cost(
                        (&self.name, self.incarnation),
                        crate::aggregation::Cost::CatchUpRead,
                        &process,
                        needless,
                        || format!("{instance}'s rows in ({from}, {upto}] at {started}"),
                    );
                }
            }
            match answer {
                Ok(answer) => break answer,
                Err(error) => {
                    tracing::debug!(host = %self.name, %error, "catch-up read failed; retrying");
                    tokio::time::sleep(Duration::from_millis(DB_RETRY_DELAY_MS)).await;
                }
            }
        };
        if !rows.is_empty() {
            self.shared.observer.record(Event::GapFilled {
                reader: self.name.clone(),
                writer: instance.to_owned(),
                from,
                upto: rows.last().map_or(upto, |(id, _)| *id),
            });
        }
        let actions = {
            let state = &mut *self.state.borrow_mut();
            let follower = state
                .followers
                .get_mut(link)
                .expect("a catch-up belongs to a follower");
            follower.handle_updates(&mut state.generator, rows, limited)
        };
        self.apply_follower(link, actions);
        self.replication_settled(link);
    }

    /// New rows of `instance` reached this process: a reader's notifier announces them.
    fn notify_rows(
        self: &Rc<Self>,
        instance: &str,
        rows: Vec<(i64, String)>,
        max_token: MultiWriterToken,
        caught_up: bool,
    ) {
        let released_upto = self.announce_rows(instance, rows, max_token, caught_up);
        // `_notify_pending_new_room_events` → `_on_updated_room_token(max_room_stream_token)`
        // (notifier.py lines 493-510): background consumers follow the released token.
        if let Some(token) = released_upto {
            self.poke_federation(token);
        }
    }

    /// The notifier's part of [`Process::notify_rows`]: the released token's stream part, if
    /// it released anything.
    fn announce_rows(
        &self,
        instance: &str,
        rows: Vec<(i64, String)>,
        max_token: MultiWriterToken,
        caught_up: bool,
    ) -> Option<i64> {
        let state = &mut *self.state.borrow_mut();
        let notifier = state.notifier.as_mut()?;
        let events = rows
            .iter()
            .map(|(id, event_id)| RoomEvent::new(instance, *id, event_id))
            .collect();
        let outcome = notifier.on_new_room_events(events, max_token);
        if let Some(announcement) = outcome.announcement {
            self.observe_deliveries_of(&announcement.events);
            for event in &announcement.events {
                self.shared.observer.record(Event::Delivered {
                    reader: self.name.clone(),
                    writer: event.instance.clone(),
                    stream_id: event.stream_id,
                    event_id: event.event_id.clone(),
                    caught_up,
                });
            }
            let released_upto = announcement.token.stream();
            self.shared.observer.record(Event::TokenHandedOut {
                reader: self.name.clone(),
                to: "notifier".to_owned(),
                token: announcement.token,
            });
            return Some(released_upto);
        }
        None
    }

    /// `on_notifier_poke`: one turn of the writer's announcer.
    pub fn poke(self: &Rc<Self>) {
        let (actions, has_connections) = {
            let state = &mut *self.state.borrow_mut();
            let has_connections = !state.links.is_empty() || state.bus.is_some();
            match &mut state.writer {
                Some(writer) => (
                    writer.announcer.poke(&state.generator, has_connections),
                    has_connections,
                ),
                None => return,
            }
        };
        if !has_connections {
            // `on_notifier_poke` returns before starting its loop when nothing is connected.
            self.apply_announcer(actions);
            return;
        }
        // `on_notifier_poke` checks up front whether anything changed (resource.py lines
        // 138-144, PR #8670): with nothing to announce it starts no loop. Bug B25: before that
        // fix, every poke started one (unless one was running).
        let needless = actions.is_empty();
        if needless && !self.shared.bugs.on(Bug::NotifierLoopOnEveryPoke) {
            return;
        }
        if !self.notifier_running() {
            self.shared.observer.cost(
                (&self.name, self.incarnation),
                crate::aggregation::Cost::NotifierLoop,
                super::process_metrics::names::REPLICATION_NOTIFIER,
                needless,
                || format!("a poke at {} with nothing to send", crate::net::now()),
            );
        }
        self.notifier_poked();
        // The loop's own turn holds it open while it reads its updates.
        self.notifier_fetches(1);
        self.apply_announcer(actions);
        self.notifier_fetches(-1);
    }

    fn apply_announcer(self: &Rc<Self>, actions: Vec<AnnouncerAction>) {
        for action in actions {
            match action {
                AnnouncerAction::Send(command) => self.broadcast(command),
                AnnouncerAction::FetchOwnUpdates { from, upto } => {
                    let process = self.clone();
                    self.notifier_fetches(1);
                    crate::engine::spawn_local(async move {
                        process.clone().fetch_own_updates(from, upto).await;
                        process.notifier_fetches(-1);
                    });
                }
            }
        }
    }

    async fn fetch_own_updates(self: Rc<Self>, from: i64, upto: i64) {
        let (rows, limited) = loop {
            let started = crate::net::now();
            let answer = self
                .db
                .rows_between(&self.name, from, upto, UPDATES_FETCH_ROWS_MAX)
                .await;
            if let Some(notifier) = self.notifier_process() {
                self.bg_db_txn(notifier, started);
            }
            match answer {
                Ok(answer) => break answer,
                Err(error) => {
                    tracing::debug!(host = %self.name, %error, "own-updates read failed; retrying");
                    tokio::time::sleep(Duration::from_millis(DB_RETRY_DELAY_MS)).await;
                }
            }
        };
        let actions = {
            let state = &mut *self.state.borrow_mut();
            let writer = state
                .writer
                .as_mut()
                .expect("only writers fetch own updates");
            writer
                .announcer
                .handle_updates(&state.generator, rows, limited)
        };
        self.apply_announcer(actions);
    }

    /// Sends a command to every connection (TCP) or publishes it (Redis).
    pub fn broadcast(&self, command: Command) {
        let Some(line) = command_line(&command) else {
            tracing::warn!(host = %self.name, ?command, "unencodable command not sent");
            return;
        };
        self.shared.observer.record(Event::Announced {
            host: self.name.clone(),
            line: line.clone(),
        });
        let state = self.state.borrow();
        for link in state.links.values() {
            let _ = link.send(command.clone());
        }
        if let Some(bus) = &state.bus {
            // `RedisSubscriber.send_command`: each command is its own background process.
            let sender = self.bg_start(names::SEND_CMD);
            self.count_outbound("redis", line.as_bytes());
            bus.publish(&line);
            self.bg_finish(sender);
        }
    }

    /// Registers a server-side connection's sender; returns its number.
    pub fn add_link(&self, sender: mpsc::UnboundedSender<Command>) -> u64 {
        let state = &mut *self.state.borrow_mut();
        let id = state.next_link;
        state.next_link += 1;
        state.links.insert(id, sender);
        id
    }

    pub fn remove_link(&self, id: u64) {
        self.state.borrow_mut().links.remove(&id);
    }
}

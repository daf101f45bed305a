//! One deterministic, step-driven composition of the sans-IO models: one database, the
//! processes `main`, the readers and the writers, and a Redis bus, all with zero latency.
//!
//! Every process has its own `MultiWriterIdGenerator`, started from the database with
//! `read_startup_state` / `from_startup_state` as a (re)start does, a `StreamFollower` for the
//! bus and a `StreamChangeCache` of rooms (`_events_stream_cache`). Writers add a `Persister`
//! and a `StreamAnnouncer` (with its 1 s timer, `clock.looping_call(on_notifier_poke, 1 s)` in
//! synapse/replication/tcp/resource.py, started with the process); `main` and the readers add
//! a `Notifier` and serve /sync.
//!
//! The bus delivers every publish to every subscriber, the publisher included (whose own
//! RDATA and POSITION its handler ignores, as `on_RDATA` / `on_POSITION` do), in publish
//! order. Database actions are answered at once. After each step everything that is due runs
//! until nothing is left; `advance` moves the clock from one due timer to the next.
//!
//! The glue copies sim/src/world (process.rs, persist.rs, sync.rs, redis.rs, bus.rs): the same
//! order of `__aexit__` (ids finished, `notify_replication`, position upsert), the same
//! `_send_subscribe` (REPLICATE, then our positions), the same follower and announcer drive.

use std::collections::{BTreeMap, VecDeque};

use serde_json::{json, Map, Value};
use streamsim_models::changecache::StreamChangeCache;
use streamsim_models::db::{Database, StreamRow, STREAM_NAME};
use streamsim_models::fixes::Fixes;
use streamsim_models::idgen::{read_startup_state, IdGenConfig, MultiWriterIdGenerator};
use streamsim_models::limits::{STREAMER_IDLE_POKE_INTERVAL_MS, UPDATES_FETCH_ROWS_MAX};
use streamsim_models::notifier::{
    Notifier, PositionWaiters, PositionWakeup, RoomEvent, SyncPoll, SyncRequest, WaiterId,
};
use streamsim_models::persister::{Action, BatchId, Persister};
use streamsim_models::replication::{
    room_token, AnnouncerAction, FollowerAction, StreamAnnouncer, StreamFollower,
};
use streamsim_models::roomsync::{self, EventRow, Timelines};
use streamsim_models::time::SimInstant;
use streamsim_models::token::MultiWriterToken;
use streamsim_models::wire::Command;

use super::parse::{FetchHold, Step};

/// The main process's name.
pub const MAIN: &str = "main";

/// The /sync filter's timeline limit: the system oracle asks
/// `filter={"room":{"timeline":{"limit":100}}}` (tools/synapse/system_oracle.py, SYNC_FILTER).
pub const SYNC_TIMELINE_LIMIT: usize = 100;

/// How long set-up lets pass after the padding so that every process settles.
pub const SETUP_SETTLE_MS: u64 = 5_000;

/// A command on the bus, as the processes read it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Msg {
    Rdata {
        instance: String,
        token: i64,
        event_id: String,
    },
    Position {
        instance: String,
        prev: i64,
        new: i64,
    },
    Replicate,
}

impl Msg {
    /// What the announcer's command says, for the events stream: the world's reading of
    /// a command ([`crate::world::process::Inbound`]), with RDATA's `batch` token left out
    /// (every event is its own batch here).
    fn from_command(command: &Command) -> Option<Msg> {
        use crate::world::process::Inbound;
        match Inbound::from_command(command) {
            Inbound::Rdata {
                instance,
                token,
                event_id,
            } => Some(Msg::Rdata {
                instance,
                token: token?,
                event_id,
            }),
            Inbound::Position {
                instance,
                prev,
                new,
            } => Some(Msg::Position {
                instance,
                prev,
                new,
            }),
            Inbound::Replicate => Some(Msg::Replicate),
            Inbound::Other => None,
        }
    }
}

/// Something due now. Database reads are answered in turn, not at once: in Synapse they are
/// round trips (the harness runs them on the next reactor tick), so what was already
/// delivered goes first.
#[derive(Clone, Debug)]
enum Work {
    /// A publish reaches one subscriber.
    Deliver { to: String, msg: Msg },
    /// A follower's catch-up read (`get_updates_since`) returns.
    CatchUp {
        process: String,
        incarnation: u32,
        instance: String,
        from: i64,
        upto: i64,
    },
    /// A writer's read of its own updates returns.
    OwnUpdates {
        process: String,
        incarnation: u32,
        from: i64,
        upto: i64,
    },
    /// `_send_subscribe` after its REPLICATE was published: `send_positions_to_connection`.
    Announce { process: String, incarnation: u32 },
}

/// Where a send is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum SendStage {
    /// Behind an earlier send of its room in the writer's per-room persistence queue.
    Queued,
    /// The fetch's guard is in flight; `nextval` not yet run.
    FetchHeldBefore,
    /// `nextval` drew `ids`; they are not yet unfinished.
    FetchHeldAfter(Vec<i64>),
    /// Ids allocated, rows not yet written.
    PersistHeld(Vec<(i64, String)>),
    Done,
}

#[derive(Clone, Debug)]
struct SendState {
    room: String,
    writer: String,
    batch: Option<BatchId>,
    id: Option<i64>,
    stage: SendStage,
}

/// What is known of an event.
#[derive(Clone, Debug)]
struct EventMeta {
    label: Option<String>,
    room: String,
}

/// One process's memory: what a restart loses.
struct Proc {
    is_writer: bool,
    generator: MultiWriterIdGenerator,
    follower: StreamFollower,
    cache: StreamChangeCache,
    notifier: Option<Notifier>,
    writer: Option<WriterPart>,
    /// `_NotifierUserStream.current_token` of the one user (room part), once a long-poll
    /// created it (`wait_for_events`).
    user_stream: Option<MultiWriterToken>,
    /// Subscribed to the bus.
    subscribed: bool,
}

struct WriterPart {
    persister: Persister,
    announcer: StreamAnnouncer,
    /// When the streamer's 1 s looping call next fires.
    loop_due: SimInstant,
}

/// A /sync request still open.
struct OpenSync {
    label: String,
    process: String,
    /// The process's start count when the request came in (a restart drops it).
    incarnation: u32,
    timeout_ms: u64,
    /// When the request came in (`start` of `_wait_for_sync_for_user`).
    started: SimInstant,
    stage: SyncStage,
}

enum SyncStage {
    /// `wait_for_stream_token`: polling every 500 ms until the process caught up with `since`.
    WaitingToken(SyncRequest),
    /// `wait_for_events`: a listener of the user stream.
    Listening {
        since: MultiWriterToken,
        prev: MultiWriterToken,
        end: SimInstant,
        woken: bool,
    },
}

/// A /sync answer, or (with `waited_ms`) a `wait`'s.
#[derive(Clone, Debug, Default)]
struct SyncResult {
    timelines: Timelines,
    next_batch: MultiWriterToken,
    waited_ms: Option<u64>,
}

/// Why a step cannot act.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("the first step must be setup")]
    NoSetup,
    #[error("setup comes once, first")]
    SetupTwice,
    #[error("no process {0}")]
    UnknownProcess(String),
    #[error("{0} is not a writer")]
    NotAWriter(String),
    #[error("/sync is served by main and the readers, not {0}")]
    NoSync(String),
    #[error("no room {0}")]
    UnknownRoom(String),
    #[error("event {0} was already sent")]
    EventExists(String),
    #[error("event {0} is not held")]
    UnknownEvent(String),
    #[error("event {0} is not held")]
    NotHeld(String),
    #[error("main cannot be restarted")]
    RestartMain,
    #[error("{0} is already holding persists")]
    AlreadyHoldingPersists(String),
    #[error("{0} is not holding persists")]
    NotHoldingPersists(String),
    #[error("{0} already has a fetch hold waiting")]
    FetchHoldWaiting(String),
    #[error("{0} holds an event")]
    HoldsAnEvent(String),
    #[error("{0} is already disconnected")]
    AlreadyDisconnected(String),
    #[error("{0} is not disconnected")]
    AlreadyConnected(String),
    #[error("{0} publishes are already held")]
    AlreadyHoldingPublishes(String),
    #[error("{0} publishes are not held")]
    NotHoldingPublishes(String),
    #[error("{0} deliveries are already held")]
    AlreadyHoldingDeliveries(String),
    #[error("{0} deliveries are not held")]
    NotHoldingDeliveries(String),
    #[error("label {0} is already used")]
    LabelExists(String),
    #[error("event {0} has no stream id yet")]
    NoId(String),
    #[error("no sync labelled {0}")]
    UnknownLabel(String),
}

/// The deployment and everything in it.
#[derive(Default)]
pub struct Driver {
    now: SimInstant,
    db: Database,
    writers: Vec<String>,
    /// `main`, the writers, the readers: the order processes start in.
    order: Vec<String>,
    /// Subscribed processes in subscription order: the bus delivers in this order (the
    /// oracle's fake Redis keeps subscribers so; a re-subscription goes to the end).
    subscribers: Vec<String>,
    rooms: BTreeMap<String, String>,
    procs: BTreeMap<String, Proc>,
    incarnations: BTreeMap<String, u32>,
    /// What is due now, in order: deliveries and database answers.
    work: VecDeque<Work>,
    /// Processes whose publishes the bus keeps, and what it keeps.
    held_publishes: BTreeMap<String, Vec<Msg>>,
    /// Processes the bus delivers nothing to for now, and what it keeps for each (lost if
    /// the process's subscription is cut meanwhile, as the connection it was for is gone).
    held_deliveries: BTreeMap<String, Vec<Msg>>,
    hold_persist: BTreeMap<String, bool>,
    hold_fetch: BTreeMap<String, FetchHold>,
    events: BTreeMap<String, EventMeta>,
    /// Stream id → event id, for every id allocated.
    by_id: BTreeMap<i64, String>,
    sends: BTreeMap<String, SendState>,
    /// Room → event ids in its persistence queue (the head is the one persisting).
    room_queues: BTreeMap<String, VecDeque<String>>,
    next_setup_event: u64,
    open_syncs: Vec<OpenSync>,
    next_batches: BTreeMap<String, MultiWriterToken>,
    handled: BTreeMap<String, Vec<String>>,
    /// Where in `handled` a process's POSITION catch-up began.
    catch_up_marks: BTreeMap<String, usize>,
    /// `wait_for_stream_position` waiters per process, and each one's label and start.
    waiters: BTreeMap<String, PositionWaiters>,
    waits: BTreeMap<WaiterId, (String, String, SimInstant)>,
    next_waiter: WaiterId,
    used_wait_labels: Vec<String>,
    announced: BTreeMap<String, Vec<String>>,
    /// Syncs that answered since the step began: label → result.
    completed: Vec<(String, SyncResult)>,
    /// Proposed fixes of F1-F5 applied in every process (none: Synapse 1.163.2).
    fixes: Fixes,
}

impl Driver {
    pub fn new() -> Self {
        Self::default()
    }

    /// A driver whose processes all run with the proposed fixes `fixes` (the oracle's
    /// `--fix`, applied in every process).
    pub fn with_fixes(fixes: Fixes) -> Self {
        Driver {
            fixes,
            ..Self::default()
        }
    }

    /// Runs one step; its output line's keys (without `step` and `op`), or why it cannot act.
    pub fn run(&mut self, step: &Step) -> Result<Map<String, Value>, StepError> {
        if self.procs.is_empty() && !matches!(step, Step::Setup { .. }) {
            return Err(StepError::NoSetup);
        }
        self.completed.clear();
        let mut own = Map::new();
        let mut own_label = None;
        match step {
            Step::Setup {
                writers,
                readers,
                rooms,
                base,
            } => {
                if !self.procs.is_empty() {
                    return Err(StepError::SetupTwice);
                }
                self.setup(writers, readers, rooms, *base);
                let processes: Map<String, Value> = self
                    .order
                    .clone()
                    .iter()
                    .map(|name| (name.clone(), Value::Object(self.observe(name))))
                    .collect();
                own.insert("processes".into(), Value::Object(processes));
                // What set-up itself did is not reported: the oracle builds it differently.
                self.handled.clear();
                self.announced.clear();
                self.completed.clear();
            }
            Step::Send { event, room } => {
                let writer = self
                    .rooms
                    .get(room)
                    .cloned()
                    .ok_or_else(|| StepError::UnknownRoom(room.clone()))?;
                let event_id = labelled_id(event);
                if self.events.contains_key(&event_id) {
                    return Err(StepError::EventExists(event.clone()));
                }
                self.events.insert(
                    event_id.clone(),
                    EventMeta {
                        label: Some(event.clone()),
                        room: room.clone(),
                    },
                );
                self.send(&event_id, room, &writer);
                self.settle();
                self.send_status(&event_id, &mut own);
            }
            Step::HoldPersist { writer } => {
                self.writer_named(writer)?;
                if self.hold_persist.get(writer).copied().unwrap_or(false) {
                    return Err(StepError::AlreadyHoldingPersists(writer.clone()));
                }
                self.hold_persist.insert(writer.clone(), true);
            }
            Step::UnholdPersist { writer } => {
                self.writer_named(writer)?;
                if !self.hold_persist.get(writer).copied().unwrap_or(false) {
                    return Err(StepError::NotHoldingPersists(writer.clone()));
                }
                self.hold_persist.insert(writer.clone(), false);
            }
            Step::HoldFetch { writer, at } => {
                self.writer_named(writer)?;
                if self.hold_fetch.contains_key(writer) {
                    return Err(StepError::FetchHoldWaiting(writer.clone()));
                }
                self.hold_fetch.insert(writer.clone(), *at);
            }
            Step::Release { event } => {
                let event_id = labelled_id(event);
                let stage = self
                    .sends
                    .get(&event_id)
                    .map(|s| s.stage.clone())
                    .ok_or_else(|| StepError::UnknownEvent(event.clone()))?;
                match stage {
                    SendStage::FetchHeldBefore | SendStage::FetchHeldAfter(_) => {
                        self.continue_fetch(&event_id)
                    }
                    SendStage::PersistHeld(rows) => self.commit(&event_id, rows),
                    SendStage::Queued | SendStage::Done => {
                        return Err(StepError::NotHeld(event.clone()))
                    }
                }
                self.settle();
                self.send_status(&event_id, &mut own);
            }
            Step::Restart { process } => {
                self.process_named(process)?;
                if process == MAIN {
                    return Err(StepError::RestartMain);
                }
                if self
                    .sends
                    .values()
                    .any(|s| s.writer == *process && s.stage != SendStage::Done)
                {
                    return Err(StepError::HoldsAnEvent(process.clone()));
                }
                self.procs.remove(process);
                self.subscribers.retain(|s| s != process);
                if let Some(held) = self.held_deliveries.get_mut(process) {
                    held.clear();
                }
                // A hold on publishes is the bus's, on the process's name: it outlives the
                // incarnation, and what the old one published stays held (as the oracle's
                // fake Redis server keeps it).
                self.start(process);
                self.settle();
            }
            Step::Disconnect { process } => {
                let proc = self.process_named(process)?;
                if !proc.subscribed {
                    return Err(StepError::AlreadyDisconnected(process.clone()));
                }
                proc.subscribed = false;
                proc.follower.handle_connection_lost();
                self.subscribers.retain(|s| s != process);
                if let Some(held) = self.held_deliveries.get_mut(process) {
                    held.clear();
                }
                self.work
                    .retain(|w| !matches!(w, Work::Deliver { to, .. } if to == process));
                self.settle();
            }
            Step::Reconnect { process } => {
                if self.process_named(process)?.subscribed {
                    return Err(StepError::AlreadyConnected(process.clone()));
                }
                self.subscribe(process);
                self.settle();
            }
            Step::HoldPublishes { process } => {
                self.process_named(process)?;
                if self.held_publishes.contains_key(process) {
                    return Err(StepError::AlreadyHoldingPublishes(process.clone()));
                }
                self.held_publishes.insert(process.clone(), Vec::new());
            }
            Step::ReleasePublishes { process } => {
                self.process_named(process)?;
                let held = self
                    .held_publishes
                    .remove(process)
                    .ok_or_else(|| StepError::NotHoldingPublishes(process.clone()))?;
                for msg in held {
                    self.deliver_to_all(msg);
                }
                self.settle();
            }
            Step::HoldDeliveries { process } => {
                self.process_named(process)?;
                if self.held_deliveries.contains_key(process) {
                    return Err(StepError::AlreadyHoldingDeliveries(process.clone()));
                }
                self.held_deliveries.insert(process.clone(), Vec::new());
            }
            Step::ReleaseDeliveries { process } => {
                self.process_named(process)?;
                let held = self
                    .held_deliveries
                    .remove(process)
                    .ok_or_else(|| StepError::NotHoldingDeliveries(process.clone()))?;
                for msg in held {
                    self.work.push_back(Work::Deliver {
                        to: process.clone(),
                        msg,
                    });
                }
                self.settle();
            }
            Step::Advance { ms } => self.advance(*ms),
            Step::ForgetPositions => self.db.prune_stream_positions(&[]),
            Step::Sync {
                process,
                label,
                since,
                timeout_ms,
            } => {
                let proc = self.process_named(process)?;
                if proc.notifier.is_none() {
                    return Err(StepError::NoSync(process.clone()));
                }
                if self.label_used(label) {
                    return Err(StepError::LabelExists(label.clone()));
                }
                let since = match since {
                    None => None,
                    Some(since) => Some(
                        self.next_batches
                            .get(since)
                            .cloned()
                            .ok_or_else(|| StepError::UnknownLabel(since.clone()))?,
                    ),
                };
                self.sync(process, label, since, *timeout_ms);
                self.settle();
                own_label = Some(label.clone());
                own.insert("pending".into(), Value::Bool(true));
            }
            Step::Observe { process } => {
                self.process_named(process)?;
                own = self.observe(process);
            }
            Step::Wait {
                process,
                writer,
                event,
                label,
            } => {
                self.process_named(process)?;
                if !self.writers.contains(writer) {
                    return Err(StepError::NotAWriter(writer.clone()));
                }
                if self.label_used(label) {
                    return Err(StepError::LabelExists(label.clone()));
                }
                let position = self
                    .sends
                    .get(&labelled_id(event))
                    .and_then(|s| s.id)
                    .ok_or_else(|| StepError::NoId(event.clone()))?;
                self.wait(process, writer, position, label);
                self.settle();
                own_label = Some(label.clone());
                own.insert("pending".into(), Value::Bool(true));
            }
        }
        let mut line = Map::new();
        let mut completed = Map::new();
        for (label, result) in std::mem::take(&mut self.completed) {
            if result.waited_ms.is_none() {
                self.next_batches
                    .insert(label.clone(), result.next_batch.clone());
            }
            let rendered = self.render_result(&result);
            if Some(&label) == own_label.as_ref() {
                own.remove("pending");
                own.extend(rendered);
            } else {
                completed.insert(label, Value::Object(rendered));
            }
        }
        line.extend(own);
        if !completed.is_empty() {
            line.insert("completed".into(), Value::Object(completed));
        }
        line.insert("handled".into(), lists(std::mem::take(&mut self.handled)));
        line.insert(
            "announced".into(),
            lists(std::mem::take(&mut self.announced)),
        );
        Ok(line)
    }

    fn label_used(&self, label: &str) -> bool {
        self.next_batches.contains_key(label)
            || self.open_syncs.iter().any(|s| s.label == label)
            || self.waits.values().any(|(l, _, _)| l == label)
            || self.used_wait_labels.iter().any(|l| l == label)
    }

    /// `wait_for_stream_position(writer, "events", position)` on `process`.
    fn wait(&mut self, process: &str, writer: &str, position: i64, label: &str) {
        let waiter = self.next_waiter;
        self.next_waiter += 1;
        self.used_wait_labels.push(label.to_owned());
        let generator = &self.procs[process].generator;
        let waiters = self
            .waiters
            .entry(process.to_owned())
            .or_insert_with(|| PositionWaiters::new(process));
        let at_once = waiters
            .wait_for_stream_position(
                waiter,
                writer,
                position,
                |w| generator.current_token_for_writer(w),
                self.now,
            )
            .expect("fresh waiter ids");
        self.waits
            .insert(waiter, (label.to_owned(), process.to_owned(), self.now));
        if let Some(wakeup) = at_once {
            self.waiter_done(wakeup);
        }
    }

    fn waiter_done(&mut self, wakeup: PositionWakeup) {
        if let Some((label, _, started)) = self.waits.remove(&wakeup.waiter()) {
            self.completed.push((
                label,
                SyncResult {
                    waited_ms: Some(self.now.ms_since(started)),
                    ..SyncResult::default()
                },
            ));
        }
    }

    /// `on_rdata`'s last step: waiters of `instance` at or below `token` return.
    fn wake_waiters(&mut self, process: &str, instance: &str, token: i64) {
        let Some(waiters) = self.waiters.get_mut(process) else {
            return;
        };
        for wakeup in waiters.on_rdata(instance, token) {
            self.waiter_done(wakeup);
        }
    }

    fn process_named(&mut self, name: &str) -> Result<&mut Proc, StepError> {
        self.procs
            .get_mut(name)
            .ok_or_else(|| StepError::UnknownProcess(name.to_owned()))
    }

    fn writer_named(&mut self, name: &str) -> Result<(), StepError> {
        if !self.process_named(name)?.is_writer {
            return Err(StepError::NotAWriter(name.to_owned()));
        }
        Ok(())
    }

    // ----- set-up and (re)starts -----

    /// The database at `base - n` (rooms created, padding written, every writer's
    /// `stream_positions` row and the sequence there), every process started from it at time
    /// 0, then the writers, in order, write `base-n+1 .. base` in their first rooms, and
    /// [`SETUP_SETTLE_MS`] pass.
    fn setup(
        &mut self,
        writers: &[String],
        readers: &[String],
        rooms: &[(String, String)],
        base: i64,
    ) {
        self.writers = writers.to_vec();
        self.order = std::iter::once(MAIN.to_owned())
            .chain(writers.iter().cloned())
            .chain(readers.iter().cloned())
            .collect();
        self.rooms = rooms.iter().cloned().collect();
        let first_room = |writer: &String| {
            rooms
                .iter()
                .find(|(_, w)| w == writer)
                .map(|(room, _)| room.clone())
                .expect("every writer has a room (checked by the parser)")
        };
        let n = writers.len() as i64;
        let padded_upto = base - n;
        // The sequence's first value is 1, which counts as persisted (the id 1 quirk).
        let drawn = self
            .db
            .nextval_many(u64::try_from(padded_upto).expect("base is at least 30"))
            .expect("a fresh sequence");
        let mut rows = Vec::new();
        // Room creation first, one row each, then padding in each writer's first room in turn.
        let mut owners: Vec<(String, String)> = rooms
            .iter()
            .map(|(room, writer)| (room.clone(), writer.clone()))
            .collect();
        let padding: Vec<(String, String)> = writers
            .iter()
            .map(|writer| (first_room(writer), writer.clone()))
            .collect();
        let mut turn = 0;
        for id in drawn.into_iter().filter(|id| *id >= 2) {
            let (room, writer) = if owners.is_empty() {
                turn += 1;
                padding[(turn - 1) % padding.len()].clone()
            } else {
                owners.remove(0)
            };
            let event_id = self.setup_event_id();
            self.events
                .insert(event_id.clone(), EventMeta { label: None, room });
            self.by_id.insert(id, event_id.clone());
            rows.push(StreamRow {
                stream_id: id,
                instance_name: writer,
                payload: Some(event_id),
            });
        }
        self.db
            .insert_rows_autocommit("setup", rows)
            .expect("set-up rows");
        for writer in writers {
            self.db
                .upsert_position_if_greater_autocommit("setup", writer, padded_upto)
                .expect("set-up positions");
        }
        for name in self.order.clone() {
            self.start(&name);
        }
        self.settle();
        for writer in writers {
            let event_id = self.setup_event_id();
            let room = first_room(writer);
            self.events.insert(
                event_id.clone(),
                EventMeta {
                    label: None,
                    room: room.clone(),
                },
            );
            self.send(&event_id, &room, writer);
            self.settle();
        }
        self.advance(SETUP_SETTLE_MS);
    }

    fn setup_event_id(&mut self) -> String {
        self.next_setup_event += 1;
        format!("#setup{}", self.next_setup_event)
    }

    /// Starts a process from the database, as Synapse's constructors do, and subscribes it.
    fn start(&mut self, name: &str) {
        *self.incarnations.entry(name.to_owned()).or_insert(0) += 1;
        let is_writer = self.writers.iter().any(|w| w == name);
        let writer_names: Vec<&str> = self.writers.iter().map(String::as_str).collect();
        let config = IdGenConfig::new(name, &writer_names).with_fixes(self.fixes);
        let state = read_startup_state(&mut self.db, &config).expect("a consistent database");
        let generator = MultiWriterIdGenerator::from_startup_state(config, state);
        // `get_cache_dict(db_conn, "events", ...)` over every row of the table.
        let rows: Vec<(String, i64)> = self
            .db
            .rows()
            .iter()
            .map(|row| (self.room_of_row(row), row.stream_id))
            .collect();
        let cache = StreamChangeCache::prefilled(
            rows.iter().map(|(room, id)| (room.as_str(), *id)),
            generator.current_token(),
        );
        let notifier = (!is_writer).then(|| Notifier::new(room_token(&generator)));
        let writer = is_writer.then(|| WriterPart {
            persister: Persister::new(),
            announcer: StreamAnnouncer::new(STREAM_NAME, &generator),
            loop_due: self.now + STREAMER_IDLE_POKE_INTERVAL_MS,
        });
        self.procs.insert(
            name.to_owned(),
            Proc {
                is_writer,
                generator,
                follower: StreamFollower::new(name).with_fixes(self.fixes),
                cache,
                notifier,
                writer,
                user_stream: None,
                subscribed: false,
            },
        );
        // A restart drops the process's open requests.
        self.waiters.remove(name);
        self.waits.retain(|_, (_, process, _)| process != name);
        let incarnation = self.incarnations[name];
        self.open_syncs
            .retain(|s| s.process != name || s.incarnation == incarnation);
        self.subscribe(name);
    }

    fn room_of_row(&self, row: &StreamRow) -> String {
        row.payload
            .as_ref()
            .and_then(|event_id| self.events.get(event_id))
            .map(|meta| meta.room.clone())
            .unwrap_or_default()
    }

    /// `_send_subscribe`: subscribed (`new_connection`), publish `REPLICATE`, then
    /// `send_positions_to_connection` (announce our positions on the next poke, and poke).
    ///
    /// `_async_send_command(REPLICATE)` is awaited (the PUBLISH reply) before the positions go
    /// out, so the other writers' answers to the REPLICATE come first.
    fn subscribe(&mut self, name: &str) {
        self.procs.get_mut(name).expect("a process").subscribed = true;
        self.subscribers.retain(|s| s != name);
        self.subscribers.push(name.to_owned());
        self.publish(name, Msg::Replicate);
        self.work.push_back(Work::Announce {
            process: name.to_owned(),
            incarnation: self.incarnations[name],
        });
    }

    fn is_live(&self, process: &str, incarnation: u32) -> bool {
        self.procs.contains_key(process) && self.incarnations.get(process) == Some(&incarnation)
    }

    // ----- the bus -----

    fn publish(&mut self, from: &str, msg: Msg) {
        if !self.procs.get(from).is_some_and(|p| p.subscribed) {
            // At most once: nothing reaches the bus from a process off it.
            return;
        }
        if let Some(held) = self.held_publishes.get_mut(from) {
            held.push(msg);
            return;
        }
        self.deliver_to_all(msg);
    }

    fn deliver_to_all(&mut self, msg: Msg) {
        for name in &self.subscribers {
            if let Some(held) = self.held_deliveries.get_mut(name) {
                held.push(msg.clone());
                continue;
            }
            self.work.push_back(Work::Deliver {
                to: name.clone(),
                msg: msg.clone(),
            });
        }
    }

    fn deliver(&mut self, to: &str, msg: Msg) {
        let Some(proc) = self.procs.get_mut(to) else {
            return;
        };
        if !proc.subscribed {
            return;
        }
        let actions = match msg {
            Msg::Rdata {
                instance,
                token,
                event_id,
            } => {
                if instance == to {
                    return;
                }
                proc.follower.handle_rdata(
                    &mut proc.generator,
                    &instance,
                    Some(token),
                    (token, event_id),
                )
            }
            Msg::Position {
                instance,
                prev,
                new,
            } => {
                if instance == to {
                    return;
                }
                proc.follower
                    .handle_position(&mut proc.generator, &instance, prev, new)
            }
            Msg::Replicate => {
                // `on_REPLICATE` (own echoes included): announce our positions (at once,
                // on the bus, under bug B16).
                let reply = proc
                    .writer
                    .as_mut()
                    .and_then(|writer| writer.announcer.handle_replicate(&proc.generator));
                if let Some(command) = reply {
                    self.apply_announcer(to, vec![AnnouncerAction::Send(command)]);
                }
                self.poke(to);
                return;
            }
        };
        self.apply_follower(to, actions);
    }

    /// Runs everything due now until nothing is left. A long-poll woken by a delivery runs
    /// its callback before the next delivery (the listener's deferred fires inside
    /// `notify_new_room_events`).
    fn settle(&mut self) {
        self.run_woken_syncs();
        while let Some(work) = self.work.pop_front() {
            match work {
                Work::Deliver { to, msg } => self.deliver(&to, msg),
                Work::CatchUp {
                    process,
                    incarnation,
                    instance,
                    from,
                    upto,
                } if self.is_live(&process, incarnation) => {
                    let (rows, limited) = self.rows_between(&instance, from, upto);
                    let proc = self.procs.get_mut(&process).expect("a live process");
                    let more = proc
                        .follower
                        .handle_updates(&mut proc.generator, rows, limited);
                    self.apply_follower(&process, more);
                }
                Work::OwnUpdates {
                    process,
                    incarnation,
                    from,
                    upto,
                } if self.is_live(&process, incarnation) => {
                    let (rows, limited) = self.rows_between(&process, from, upto);
                    let proc = self.procs.get_mut(&process).expect("a live process");
                    let writer = proc.writer.as_mut().expect("a writer");
                    let more = writer
                        .announcer
                        .handle_updates(&proc.generator, rows, limited);
                    self.apply_announcer(&process, more);
                }
                Work::Announce {
                    process,
                    incarnation,
                } if self.is_live(&process, incarnation) => {
                    let proc = self.procs.get_mut(&process).expect("a live process");
                    let reply = proc
                        .writer
                        .as_mut()
                        .and_then(|writer| writer.announcer.handle_replicate(&proc.generator));
                    if let Some(command) = reply {
                        self.apply_announcer(&process, vec![AnnouncerAction::Send(command)]);
                    }
                    self.poke(&process);
                }
                _ => {}
            }
            self.run_woken_syncs();
        }
    }

    // ----- the follower side -----

    fn label_of(&self, event_id: &str) -> String {
        self.events
            .get(event_id)
            .and_then(|meta| meta.label.clone())
            .unwrap_or_else(|| "-".to_owned())
    }

    fn log(&mut self, process: &str, line: String) {
        self.handled
            .entry(process.to_owned())
            .or_default()
            .push(line);
    }

    fn apply_follower(&mut self, name: &str, actions: Vec<FollowerAction>) {
        for action in actions {
            match action {
                FollowerAction::Rows {
                    instance,
                    token,
                    rows,
                    room_token,
                    caught_up,
                } => {
                    let mut events = Vec::new();
                    for (id, event_id) in rows {
                        let label = self.label_of(&event_id);
                        let kind = if caught_up { "fetched" } else { "RDATA" };
                        self.log(name, format!("{kind} {instance} {id} {label}"));
                        // `_invalidate_caches_for_event(token, ...)`.
                        let room = self.events.get(&event_id).map(|m| m.room.clone());
                        let proc = self.procs.get_mut(name).expect("a process");
                        if let Some(room) = room {
                            proc.cache.entity_has_changed(&room, token);
                        }
                        events.push(RoomEvent::new(&instance, id, &event_id));
                    }
                    self.notify(name, events, room_token);
                    self.wake_waiters(name, &instance, token);
                    // `notify_new_room_events` ends with `notify_replication()`: an idle
                    // writer announces the position it now follows.
                    self.poke(name);
                }
                FollowerAction::FetchMissing {
                    instance,
                    from,
                    upto,
                    ..
                } => {
                    // `_process_position` is under way: its line goes before the rows it fetches.
                    let at = self.handled.get(name).map_or(0, Vec::len);
                    self.catch_up_marks.entry(name.to_owned()).or_insert(at);
                    self.work.push_back(Work::CatchUp {
                        process: name.to_owned(),
                        incarnation: self.incarnations[name],
                        instance,
                        from,
                        upto,
                    });
                }
                FollowerAction::Advanced {
                    instance,
                    prev,
                    token,
                    ..
                } => {
                    let line = format!("POSITION {instance} {prev} {token}");
                    match self.catch_up_marks.remove(name) {
                        Some(at) => self
                            .handled
                            .entry(name.to_owned())
                            .or_default()
                            .insert(at, line),
                        None => self.log(name, line),
                    }
                    self.wake_waiters(name, &instance, token);
                    // `on_position` pokes the replication notifier too.
                    self.poke(name);
                }
                FollowerAction::Discarded {
                    instance,
                    prev: Some(prev),
                    token: Some(token),
                    ..
                } => self.log(name, format!("POSITION {instance} {prev} {token} dropped")),
                FollowerAction::Discarded {
                    instance,
                    token,
                    reason,
                    ..
                } => {
                    let suffix = if reason == "stream not connected" {
                        "unconnected"
                    } else {
                        "discarded"
                    };
                    let (token, label) = match token {
                        Some(token) => (
                            token.to_string(),
                            self.by_id
                                .get(&token)
                                .map_or_else(|| "-".to_owned(), |e| self.label_of(e)),
                        ),
                        None => ("batch".to_owned(), "-".to_owned()),
                    };
                    self.log(name, format!("RDATA {instance} {token} {label} {suffix}"));
                }
            }
        }
    }

    /// A stream's `get_updates_since` for one writer: its rows in `(from, upto]`.
    fn rows_between(&self, writer: &str, from: i64, upto: i64) -> (Vec<(i64, String)>, bool) {
        let rows: Vec<(i64, String)> = self
            .db
            .rows_between(writer, from, upto, UPDATES_FETCH_ROWS_MAX)
            .into_iter()
            .map(|row| (row.stream_id, row.payload.unwrap_or_default()))
            .collect();
        let limited = rows.len() >= UPDATES_FETCH_ROWS_MAX;
        (rows, limited)
    }

    /// `notify_new_room_events` on a process with a notifier; a release wakes the user's
    /// stream (the one user is in every room).
    fn notify(&mut self, name: &str, events: Vec<RoomEvent>, max_token: MultiWriterToken) {
        let proc = self.procs.get_mut(name).expect("a process");
        let Some(notifier) = &mut proc.notifier else {
            return;
        };
        let outcome = notifier.on_new_room_events(events, max_token);
        let Some(announcement) = outcome.announcement else {
            return;
        };
        if proc.user_stream.is_some() {
            proc.user_stream = Some(announcement.token.clone());
        }
        let labels: Vec<String> = announcement
            .events
            .iter()
            .filter_map(|e| self.events.get(&e.event_id).and_then(|m| m.label.clone()))
            .collect();
        if !labels.is_empty() {
            self.announced
                .entry(name.to_owned())
                .or_default()
                .extend(labels);
        }
        for open in &mut self.open_syncs {
            if open.process == name {
                if let SyncStage::Listening { woken, .. } = &mut open.stage {
                    *woken = true;
                }
            }
        }
    }

    // ----- the writer side -----

    /// `on_notifier_poke`: one turn of the writer's announcer.
    fn poke(&mut self, name: &str) {
        let proc = self.procs.get_mut(name).expect("a process");
        let has_connections = proc.subscribed;
        let Some(writer) = &mut proc.writer else {
            return;
        };
        let actions = writer.announcer.poke(&proc.generator, has_connections);
        self.apply_announcer(name, actions);
    }

    fn apply_announcer(&mut self, name: &str, actions: Vec<AnnouncerAction>) {
        for action in actions {
            match action {
                AnnouncerAction::Send(command) => {
                    if let Some(msg) = Msg::from_command(&command) {
                        self.publish(name, msg);
                    }
                }
                AnnouncerAction::FetchOwnUpdates { from, upto } => {
                    self.work.push_back(Work::OwnUpdates {
                        process: name.to_owned(),
                        incarnation: self.incarnations[name],
                        from,
                        upto,
                    });
                }
            }
        }
    }

    /// A client's send through the room's writer: into the room's persistence queue
    /// (`_EventPeristenceQueue`, one persist at a time per room), started if first.
    fn send(&mut self, event_id: &str, room: &str, writer: &str) {
        self.sends.insert(
            event_id.to_owned(),
            SendState {
                room: room.to_owned(),
                writer: writer.to_owned(),
                batch: None,
                id: None,
                stage: SendStage::Queued,
            },
        );
        let queue = self.room_queues.entry(room.to_owned()).or_default();
        queue.push_back(event_id.to_owned());
        if queue.len() == 1 {
            self.start_persist(event_id);
        }
    }

    /// `get_next_mult(1)`: the fetch begins; a held fetch stops before or after `nextval`.
    fn start_persist(&mut self, event_id: &str) {
        let writer = self.sends[event_id].writer.clone();
        let proc = self.procs.get_mut(&writer).expect("a writer");
        let part = proc.writer.as_mut().expect("a writer");
        let (batch, _) = part
            .persister
            .submit(&mut proc.generator, vec![event_id.to_owned()])
            .expect("a configured writer persists");
        let send = self.sends.get_mut(event_id).expect("a send");
        send.batch = Some(batch);
        match self.hold_fetch.remove(&writer) {
            Some(FetchHold::BeforeNextval) => send.stage = SendStage::FetchHeldBefore,
            Some(FetchHold::AfterNextval) => {
                let ids = self.db.nextval_many(1).expect("the sequence");
                for id in &ids {
                    self.by_id.insert(*id, event_id.to_owned());
                }
                let send = self.sends.get_mut(event_id).expect("a send");
                send.id = ids.first().copied();
                send.stage = SendStage::FetchHeldAfter(ids);
            }
            None => self.continue_fetch(event_id),
        }
    }

    /// The fetch goes on: `nextval` if not yet run, the ids become unfinished, and the rows
    /// go to the database unless the writer holds its persists.
    fn continue_fetch(&mut self, event_id: &str) {
        let send = self.sends[event_id].clone();
        let ids = match send.stage {
            SendStage::FetchHeldAfter(ids) => ids,
            _ => {
                let ids = self.db.nextval_many(1).expect("the sequence");
                for id in &ids {
                    self.by_id.insert(*id, event_id.to_owned());
                }
                ids
            }
        };
        let proc = self.procs.get_mut(&send.writer).expect("a writer");
        let part = proc.writer.as_mut().expect("a writer");
        let batch = send.batch.expect("a submitted batch");
        let Action::CommitRows { rows, .. } =
            part.persister
                .handle_ids(&mut proc.generator, batch, ids.clone())
        else {
            unreachable!("ids answer CommitRows");
        };
        let entry = self.sends.get_mut(event_id).expect("a send");
        entry.id = ids.first().copied();
        if self
            .hold_persist
            .get(&send.writer)
            .copied()
            .unwrap_or(false)
        {
            entry.stage = SendStage::PersistHeld(rows);
        } else {
            self.commit(event_id, rows);
        }
    }

    /// The rows' transaction commits; the context exits: ids finished, `notify_replication`,
    /// then the `stream_positions` upsert (as sim/src/world/persist.rs does it).
    fn commit(&mut self, event_id: &str, rows: Vec<(i64, String)>) {
        let send = self.sends[event_id].clone();
        let writer = send.writer.clone();
        self.db
            .insert_rows_autocommit(
                &writer,
                rows.iter()
                    .map(|(id, event)| StreamRow {
                        stream_id: *id,
                        instance_name: writer.clone(),
                        payload: Some(event.clone()),
                    })
                    .collect(),
            )
            .expect("the rows commit");
        let proc = self.procs.get_mut(&writer).expect("a writer");
        // `txn.call_after(_events_stream_cache.entity_has_changed, room_id, stream_ordering)`.
        for (id, _) in &rows {
            proc.cache.entity_has_changed(&send.room, *id);
        }
        let part = proc.writer.as_mut().expect("a writer");
        let actions = part
            .persister
            .handle_committed(&mut proc.generator, send.batch.expect("a batch"));
        self.poke(&writer);
        for action in actions {
            if let Action::UpsertPosition { position } = action {
                self.db
                    .upsert_position_if_greater_autocommit(&writer, &writer, position)
                    .expect("the upsert");
            }
        }
        self.sends.get_mut(event_id).expect("a send").stage = SendStage::Done;
        let queue = self
            .room_queues
            .get_mut(&send.room)
            .expect("the room's queue");
        queue.pop_front();
        if let Some(next) = queue.front().cloned() {
            self.start_persist(&next);
        }
    }

    fn send_status(&self, event_id: &str, own: &mut Map<String, Value>) {
        let send = &self.sends[event_id];
        if let Some(id) = send.id {
            own.insert("id".into(), json!(id));
        }
        own.insert("done".into(), json!(send.stage == SendStage::Done));
    }

    // ----- time -----

    /// Simulated time passes: each due timer fires in time order (the writers' 1 s loops,
    /// token polls of waiting syncs, long-poll timeouts), everything settling after each.
    fn advance(&mut self, ms: u64) {
        let target = self.now + ms;
        while let Some(due) = self.next_due().filter(|due| *due <= target) {
            self.now = due;
            for name in self.writers.clone() {
                let fire = self
                    .procs
                    .get(&name)
                    .and_then(|p| p.writer.as_ref())
                    .is_some_and(|w| w.loop_due == due);
                if fire {
                    let writer = self
                        .procs
                        .get_mut(&name)
                        .and_then(|p| p.writer.as_mut())
                        .expect("a writer");
                    writer.loop_due = due + STREAMER_IDLE_POKE_INTERVAL_MS;
                    self.poke(&name);
                    self.settle();
                }
            }
            self.run_due_syncs();
            for process in self.waiters.keys().cloned().collect::<Vec<_>>() {
                let expired = self
                    .waiters
                    .get_mut(&process)
                    .expect("listed")
                    .handle_timeout(due);
                for wakeup in expired {
                    self.waiter_done(wakeup);
                }
            }
            self.settle();
        }
        self.now = target;
    }

    fn next_due(&self) -> Option<SimInstant> {
        let loops = self
            .procs
            .values()
            .filter_map(|p| p.writer.as_ref().map(|w| w.loop_due));
        let syncs = self.open_syncs.iter().filter_map(|open| match &open.stage {
            SyncStage::WaitingToken(request) => request.poll_timeout(),
            SyncStage::Listening { end, .. } => Some(*end),
        });
        let waits = self
            .waiters
            .values()
            .filter_map(PositionWaiters::poll_timeout);
        loops.chain(syncs).chain(waits).min()
    }

    // ----- /sync -----

    fn sync(
        &mut self,
        process: &str,
        label: &str,
        since: Option<MultiWriterToken>,
        timeout_ms: u64,
    ) {
        let incarnation = self.incarnations[process];
        let open = OpenSync {
            label: label.to_owned(),
            process: process.to_owned(),
            incarnation,
            timeout_ms,
            started: self.now,
            stage: SyncStage::WaitingToken(SyncRequest::new(
                since,
                &room_token(&self.procs[process].generator),
                self.db.sequence().max_allocated(),
                self.now,
            )),
        };
        self.open_syncs.push(open);
        let index = self.open_syncs.len() - 1;
        self.poll_token(index);
    }

    /// `wait_for_stream_token(since)` (bounded by `bound_future_token`), then the answer or
    /// `wait_for_events`.
    fn poll_token(&mut self, index: usize) {
        let process = self.open_syncs[index].process.clone();
        let current = room_token(&self.procs[&process].generator);
        let SyncStage::WaitingToken(request) = &mut self.open_syncs[index].stage else {
            return;
        };
        let poll = request.poll(self.now, &current, &[]);
        let since = request.since().cloned();
        let SyncPoll::Ready(response) = poll else {
            return;
        };
        if response.timed_out {
            // `SyncResult.empty(since_token)`.
            let open = self.open_syncs.remove(index);
            self.completed.push((
                open.label,
                SyncResult {
                    timelines: Timelines::new(),
                    next_batch: response.next_batch,
                    waited_ms: None,
                },
            ));
            return;
        }
        // "If we've spent significant time waiting to catch up, take it off the timeout."
        let waited = self.now.ms_since(self.open_syncs[index].started);
        let mut timeout_ms = self.open_syncs[index].timeout_ms;
        if waited > 1_000 {
            timeout_ms = timeout_ms.saturating_sub(waited);
        }
        let Some(since) = since.filter(|_| timeout_ms > 0) else {
            // Initial sync, or `timeout == 0`: `current_sync_for_user` at once.
            let open = self.open_syncs.remove(index);
            let result = self.evaluate(&process, open_since(&open));
            self.completed.push((open.label, result));
            return;
        };
        // `wait_for_events`: the user's stream exists from now on.
        let proc = self.procs.get_mut(&process).expect("a process");
        let user_token = proc
            .user_stream
            .get_or_insert_with(|| room_token(&proc.generator))
            .clone();
        let end = self.now + timeout_ms;
        // `new_listener(prev_token)` resolves at once when the token differs.
        let woken = since != user_token;
        self.open_syncs[index].stage = SyncStage::Listening {
            since: since.clone(),
            prev: since,
            end,
            woken,
        };
    }

    /// Token polls whose 500 ms are up, and long-polls whose time is up.
    fn run_due_syncs(&mut self) {
        let mut index = 0;
        while index < self.open_syncs.len() {
            let len = self.open_syncs.len();
            match &self.open_syncs[index].stage {
                SyncStage::WaitingToken(request)
                    if request.poll_timeout().is_some_and(|at| at <= self.now) =>
                {
                    self.poll_token(index)
                }
                SyncStage::Listening { end, .. } if *end <= self.now => {
                    // Timed out: `callback(prev_token, current_token)` once more.
                    let open = self.open_syncs.remove(index);
                    let result = self.evaluate(&open.process, open_since(&open));
                    self.completed.push((open.label, result));
                }
                _ => {}
            }
            if self.open_syncs.len() == len {
                index += 1;
            }
        }
    }

    /// Woken listeners run their callback; a non-empty answer returns, an empty one waits
    /// again from the user stream's current token. Returns whether any ran.
    fn run_woken_syncs(&mut self) -> bool {
        let mut ran = false;
        let mut index = 0;
        while index < self.open_syncs.len() {
            let woken = matches!(
                self.open_syncs[index].stage,
                SyncStage::Listening { woken: true, .. }
            );
            if !woken {
                index += 1;
                continue;
            }
            ran = true;
            let process = self.open_syncs[index].process.clone();
            let result = self.evaluate(&process, open_since(&self.open_syncs[index]));
            if !result.timelines.is_empty() {
                let open = self.open_syncs.remove(index);
                self.completed.push((open.label, result));
                continue;
            }
            let current = self.procs[&process]
                .user_stream
                .clone()
                .expect("a listener's user stream");
            if let SyncStage::Listening { prev, woken, .. } = &mut self.open_syncs[index].stage {
                *prev = current;
                *woken = false;
            }
            index += 1;
        }
        ran
    }

    /// `current_sync_for_user`: the room timelines and `next_batch` on `process` now.
    fn evaluate(&self, process: &str, since: Option<MultiWriterToken>) -> SyncResult {
        let proc = &self.procs[process];
        let now = room_token(&proc.generator);
        let rows: Vec<EventRow> = self
            .db
            .rows()
            .iter()
            .map(|row| EventRow {
                instance: row.instance_name.clone(),
                stream_id: row.stream_id,
                room: self.room_of_row(row),
                event_id: row.payload.clone().unwrap_or_default(),
            })
            .collect();
        let joined = self.all_rooms();
        let joined = joined.iter().map(String::as_str);
        let timelines = match &since {
            None => roomsync::initial_sync(SYNC_TIMELINE_LIMIT, joined, &now, &rows),
            Some(since) => roomsync::incremental_sync(
                SYNC_TIMELINE_LIMIT,
                joined,
                since,
                &now,
                &proc.cache,
                &rows,
            ),
        };
        SyncResult {
            timelines,
            next_batch: now,
            waited_ms: None,
        }
    }

    /// Every room the one user is joined to: the choreography's.
    fn all_rooms(&self) -> Vec<String> {
        self.rooms.keys().cloned().collect()
    }

    fn render_result(&mut self, result: &SyncResult) -> Map<String, Value> {
        if let Some(waited_ms) = result.waited_ms {
            let mut rendered = Map::new();
            rendered.insert("waited_ms".into(), json!(waited_ms));
            return rendered;
        }
        let mut rooms = Map::new();
        for (room, events) in &result.timelines {
            let labels: Vec<Value> = events
                .iter()
                .filter_map(|e| self.events.get(e).and_then(|m| m.label.clone()))
                .map(Value::String)
                .collect();
            if !labels.is_empty() {
                rooms.insert(room.clone(), Value::Array(labels));
            }
        }
        let mut rendered = Map::new();
        rendered.insert("rooms".into(), Value::Object(rooms));
        rendered.insert(
            "next_batch".into(),
            Value::String(token_text(&result.next_batch)),
        );
        rendered
    }

    // ----- observe -----

    fn observe(&self, name: &str) -> Map<String, Value> {
        let proc = &self.procs[name];
        let generator = &proc.generator;
        let mut out = Map::new();
        let positions: Map<String, Value> = generator
            .positions()
            .iter()
            .map(|(w, p)| (w.clone(), json!(p)))
            .collect();
        out.insert("positions".into(), Value::Object(positions));
        out.insert("persisted_upto".into(), json!(generator.persisted_upto()));
        out.insert(
            "room_max".into(),
            Value::String(token_text(&room_token(generator))),
        );
        if proc.is_writer {
            out.insert(
                "own".into(),
                json!(generator.current_token_for_writer(name)),
            );
            out.insert(
                "minimal_local".into(),
                json!(generator.minimal_local_current_token()),
            );
        }
        out
    }
}

fn open_since(open: &OpenSync) -> Option<MultiWriterToken> {
    match &open.stage {
        SyncStage::WaitingToken(request) => request.since().cloned(),
        SyncStage::Listening { since, .. } => Some(since.clone()),
    }
}

fn labelled_id(label: &str) -> String {
    format!("${label}")
}

fn lists(map: BTreeMap<String, Vec<String>>) -> Value {
    Value::Object(
        map.into_iter()
            .filter(|(_, items)| !items.is_empty())
            .map(|(key, items)| {
                (
                    key,
                    Value::Array(items.into_iter().map(Value::String).collect()),
                )
            })
            .collect(),
    )
}

/// The room-token text with instance names for ids: `s41`, `m40~worker1.42` (entries in name
/// order).
pub fn token_text(token: &MultiWriterToken) -> String {
    if token.instance_map().is_empty() {
        return format!("s{}", token.stream());
    }
    let mut text = format!("m{}", token.stream());
    for (name, pos) in token.instance_map() {
        text.push_str(&format!("~{name}.{pos}"));
    }
    text
}

//! Judging a run as it goes, in memory that does not grow with the run's length.
//!
//! The whole-history checks ([`super::check_all`]) keep every record until the run ends: an
//! hour's soak holds a gigabyte. [`OnlineChecker`] sees each record once, as it is recorded,
//! and keeps only what a later record or the end of the run could still need. The key is
//! *settlement*: an event every consumer (each reader's notifier, each sync client) has
//! received and every consumer's last token covers is forgotten, in each writer's id order;
//! on a run without faults that last, the live set is the events in flight.
//!
//! The online checker is a *detector*, not a judge: it answers "clean" or "suspect", never
//! a verdict with a diagnosis. It is built to over-approximate: everything any whole-history
//! check would report makes it suspect (each rule below says which check it stands in for),
//! and so does anything that would need what it forgot (an event delivered after it was
//! settled, a token left behind a forgotten event). A suspect run is then replayed from its
//! seed with the whole history (the simulation is deterministic) and judged by the
//! whole-history checks, whose verdict and diagnoses are the run's. So a clean verdict costs
//! bounded memory, and a red one costs a second simulation. `tests::online_*` hold the
//! soundness test: over generated seeds, bug switches and scenarios, every history the
//! whole-history checks fault makes the online checker suspect.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::Serialize;
use streamsim_models::time::SimInstant;
use streamsim_models::token::MultiWriterToken;

use super::federation::FEDERATION_READ_GRACE_MS;
use super::{CheckContext, NOTIFIER, SOMETIMES};
use crate::history::{Event, Record};
use crate::scenario::FaultKind;

/// Consumers are tracked as bits of a `u64`: a scenario with more readers plus clients is
/// judged on the whole history.
pub const MAX_CONSUMERS: usize = 64;

/// Settled events are kept at least this long before they are forgotten.
const KEEP_SETTLED_AT_LEAST_MS: u64 = 10_000;

/// Why the online checker suspects a run: the first record that would need the
/// whole-history checks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Suspicion {
    pub at: SimInstant,
    /// The whole-history check this rule stands in for.
    pub invariant: &'static str,
    pub reason: String,
}

/// A committed event not yet settled.
#[derive(Clone, Debug)]
struct LiveCommit {
    writer: String,
    stream_id: i64,
    at: SimInstant,
    /// Consumers (bits) that ever received it (across a reader's restarts).
    received: u64,
    /// Consumers (bits) that received it in their current incarnation (`no_duplicate`).
    received_now: u64,
    /// Sends answered as readable and not yet judged that wait on it (`read_your_writes`):
    /// it is not forgotten while one does.
    pins: u32,
    /// Federation senders (bits of [`OnlineChecker::senders`]) that sent it, in any
    /// incarnation: it is not forgotten before every one has.
    sent: u64,
}

/// A federation sender, as its invariants see it (`checks::federation`).
#[derive(Clone, Debug, Default)]
struct Sender {
    name: String,
    /// The highest end of any read it sent (across its incarnations): an event committing at
    /// or below it may never be sent (`federation_never_passes_uncommitted`).
    read_upto: Option<i64>,
    /// Its notifier's releases (time, stream) in its current incarnation from the last one
    /// more than [`FEDERATION_READ_GRACE_MS`] before the newest record on.
    releases: VecDeque<(SimInstant, i64)>,
}

/// A reader's notifier or a sync client, as settlement sees it.
#[derive(Clone, Debug)]
struct Consumer {
    name: String,
    /// For a client, the reader it pages through; for a notifier, its reader.
    reader: String,
    notifier: bool,
    /// The last token it was handed (a notifier's start token after a restart).
    last: Option<MultiWriterToken>,
    /// A notifier's current incarnation started here: rows committed by then are not its own
    /// to announce (`missed_events`'s `started_at`).
    started_at: Option<SimInstant>,
}

/// A timed-out /sync, judged at the end, when the convergence cutoff is known.
#[derive(Clone, Debug)]
struct TimedOut {
    at: SimInstant,
    reader: String,
    requested_at: SimInstant,
    due_ms: u64,
    lasting_active: bool,
}

/// A send answered as readable, waiting for the client's next page (`read_your_writes`).
#[derive(Clone, Debug)]
struct PendingSend {
    answered_at: SimInstant,
    host: String,
    event_id: String,
    writer: String,
    stream_id: i64,
}

/// The online detector of one run. Feed it every record with [`OnlineChecker::observe`], in
/// history order, then call [`OnlineChecker::finish`].
#[derive(Debug)]
pub struct OnlineChecker {
    consumers: Vec<Consumer>,
    /// The federation senders, each a bit of `LiveCommit::sent`.
    senders: Vec<Sender>,
    /// Consumer index by name (a reader's name stands for its notifier).
    consumer_of: BTreeMap<String, usize>,
    converge_within_ms: u64,
    live: BTreeMap<String, LiveCommit>,
    live_by_writer: BTreeMap<String, BTreeMap<i64, String>>,
    /// Per writer: every commit of it at or below this id was settled and forgotten.
    forgotten_upto: BTreeMap<String, i64>,
    /// Per writer: every commit at or below this id is settled, and forgotten once it has
    /// been so for `keep_settled_ms` (a restarted reader's new notifier may announce
    /// again, soon after, what the old one had).
    settled_upto: BTreeMap<String, i64>,
    /// Settled commits waiting to be forgotten: (when settled, writer, stream id).
    to_forget: VecDeque<(SimInstant, String, i64)>,
    keep_settled_ms: u64,
    /// Per writer, the highest position any notifier token or page handed out covered: a
    /// commit at or below it committed after a token covering it (`no_missed_event`).
    covered_max: BTreeMap<String, i64>,
    /// The highest minimum (`stream`) any such token had: it covers every writer, those not
    /// in `covered_max` yet too (a writer whose first rows commit below an earlier token's
    /// minimum: generated seed 328 with bug B6).
    covered_floor: i64,
    /// `missed_events`'s per (reader, writer) cursor.
    checked_upto: BTreeMap<(usize, String), i64>,
    /// (consumer, event): covered and committed, not yet received.
    owed: BTreeSet<(usize, String)>,
    aborted: BTreeSet<(String, i64)>,
    /// Every allocated stream id, as disjoint inclusive ranges `start -> end`.
    allocated: BTreeMap<i64, i64>,
    /// `tokens_never_regress`: the join of the tokens handed to each (reader, recipient).
    handed_out: BTreeMap<(String, String), MultiWriterToken>,
    /// `notifier_in_order`: each notifier's announced join, per incarnation.
    announced: BTreeMap<String, MultiWriterToken>,
    pending_sends: BTreeMap<String, Vec<PendingSend>>,
    from_the_future: BTreeSet<String>,
    skipped_by_future: BTreeMap<String, MultiWriterToken>,
    settled_ms: u64,
    lasting_active: bool,
    held_since: BTreeMap<String, (MultiWriterToken, SimInstant)>,
    timed_out: Vec<TimedOut>,
    /// Commits of the last `converge_within` (time, id); older ones folded into `old_highest`.
    recent_commits: VecDeque<(SimInstant, i64)>,
    old_highest: Option<i64>,
    last_heal: Option<SimInstant>,
    /// Per writer, the highest position it put on a wire (`announced_upto`).
    announced_upto: BTreeMap<String, i64>,
    /// Per writer, the highest `new` of a POSITION it announced in its current incarnation
    /// (`rdata_never_behind_position`).
    position_covers: BTreeMap<String, i64>,
    /// Per writer, its highest committed id (an out-of-order commit is below it).
    highest_committed: BTreeMap<String, i64>,
    /// Live events committed out of order, not yet delivered.
    late: BTreeSet<String>,
    reached: BTreeMap<&'static str, bool>,
    events: u64,
    /// The most events live at once.
    peak_live: usize,
    /// When each host last started.
    last_started: BTreeMap<String, SimInstant>,
    last_at: SimInstant,
    suspicion: Option<Suspicion>,
}

/// What the online checker found once the run is over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnlineVerdict {
    /// `None`: every check would pass; the run's verdict is clean.
    pub suspicion: Option<Suspicion>,
    /// Which sometimes-targets the run reached (exactly as [`super::sometimes_reached`]).
    pub reached: BTreeMap<&'static str, bool>,
    /// Events committed.
    pub events: u64,
    /// The most events live at once: what the checker's memory followed.
    pub peak_live: usize,
}

impl OnlineChecker {
    /// A checker for a run with these readers and `(client, reader)` pairs. `network_loss`:
    /// the scenario's own network drops messages until the end-of-run heal. Errors: more than
    /// [`MAX_CONSUMERS`] readers and clients (`None`).
    pub fn new(
        readers: &[String],
        clients: &[(String, String)],
        federation_senders: &[String],
        converge_within_ms: u64,
        network_loss: bool,
    ) -> Option<Self> {
        let consumers: Vec<Consumer> = readers
            .iter()
            .map(|reader| Consumer {
                name: reader.clone(),
                reader: reader.clone(),
                notifier: true,
                last: None,
                started_at: None,
            })
            .chain(clients.iter().map(|(client, reader)| Consumer {
                name: client.clone(),
                reader: reader.clone(),
                notifier: false,
                last: None,
                started_at: None,
            }))
            .collect();
        if consumers.len() > MAX_CONSUMERS || federation_senders.len() > MAX_CONSUMERS {
            return None;
        }
        let senders = federation_senders
            .iter()
            .map(|name| Sender {
                name: name.clone(),
                ..Sender::default()
            })
            .collect();
        let consumer_of = consumers
            .iter()
            .enumerate()
            .map(|(index, c)| (c.name.clone(), index))
            .collect();
        Some(Self {
            consumers,
            senders,
            consumer_of,
            converge_within_ms,
            live: BTreeMap::new(),
            live_by_writer: BTreeMap::new(),
            forgotten_upto: BTreeMap::new(),
            settled_upto: BTreeMap::new(),
            to_forget: VecDeque::new(),
            keep_settled_ms: converge_within_ms.max(KEEP_SETTLED_AT_LEAST_MS),
            covered_max: BTreeMap::new(),
            covered_floor: i64::MIN,
            checked_upto: BTreeMap::new(),
            owed: BTreeSet::new(),
            aborted: BTreeSet::new(),
            allocated: BTreeMap::new(),
            handed_out: BTreeMap::new(),
            announced: BTreeMap::new(),
            pending_sends: BTreeMap::new(),
            from_the_future: BTreeSet::new(),
            skipped_by_future: BTreeMap::new(),
            settled_ms: 0,
            lasting_active: network_loss,
            held_since: BTreeMap::new(),
            timed_out: Vec::new(),
            recent_commits: VecDeque::new(),
            old_highest: None,
            last_heal: None,
            announced_upto: BTreeMap::new(),
            position_covers: BTreeMap::new(),
            highest_committed: BTreeMap::new(),
            late: BTreeSet::new(),
            reached: SOMETIMES.iter().map(|t| (t.name, false)).collect(),
            events: 0,
            peak_live: 0,
            last_started: BTreeMap::new(),
            last_at: SimInstant::ZERO,
            suspicion: None,
        })
    }

    /// Whether the checker already suspects the run (nothing after can clear it).
    pub fn suspected(&self) -> bool {
        self.suspicion.is_some()
    }

    /// How many committed events are live (not yet settled).
    pub fn live_events(&self) -> usize {
        self.live.len()
    }

    fn suspect(&mut self, at: SimInstant, invariant: &'static str, reason: String) {
        if self.suspicion.is_none() {
            self.suspicion = Some(Suspicion {
                at,
                invariant,
                reason,
            });
        }
    }

    fn reach(&mut self, name: &'static str) {
        if let Some(hit) = self.reached.get_mut(name) {
            *hit = true;
        }
    }

    /// Judges one record, in history order.
    pub fn observe(&mut self, record: &Record) {
        debug_assert!(record.at >= self.last_at, "records out of time order");
        self.last_at = record.at;
        let at = record.at;
        match &record.event {
            Event::Allocated { ids, host } => {
                for id in ids {
                    if !self.allocate(*id) {
                        self.suspect(
                            at,
                            "unique_ids",
                            format!("stream id {id} allocated again, by {host}"),
                        );
                    }
                }
            }
            Event::Committed { host, rows } => {
                for (stream_id, event_id) in rows {
                    self.commit(at, host, *stream_id, event_id);
                }
            }
            Event::Aborted { host, ids } => {
                self.aborted
                    .extend(ids.iter().map(|id| (host.clone(), *id)));
            }
            Event::Announced { host, line } => self.announce(at, host, line),
            Event::Delivered {
                reader,
                writer,
                stream_id,
                event_id,
                caught_up,
            } => self.deliver(at, reader, writer, *stream_id, event_id, *caught_up),
            Event::TokenHandedOut { reader, to, token } => self.hand_out(at, reader, to, token),
            Event::SyncPage {
                client,
                reader,
                requested_at,
                since,
                next_batch,
                events,
                limited,
                timed_out,
            } => {
                self.page(
                    at,
                    client,
                    reader,
                    *requested_at,
                    since.as_ref(),
                    next_batch,
                    events,
                    *limited || *timed_out,
                );
                if let (Some(_), true) = (since, timed_out) {
                    self.timed_out_page(at, client, reader, *requested_at, since.as_ref());
                }
            }
            Event::FutureToken { client, reader, .. } => {
                self.handed_out.remove(&(reader.clone(), client.clone()));
                self.from_the_future.insert(client.clone());
            }
            Event::SendAnswered {
                client,
                host,
                event_id,
                persisted_at: Some((writer, stream_id)),
                outcome,
            } => {
                if outcome.starts_with("error") {
                    self.suspect(
                        at,
                        "sends_answered",
                        format!("{host} answered {client}'s persisted send of {event_id} with {outcome}"),
                    );
                } else if outcome == "reached" {
                    self.pin(event_id, 1);
                    self.pending_sends
                        .entry(client.clone())
                        .or_default()
                        .push(PendingSend {
                            answered_at: at,
                            host: host.clone(),
                            event_id: event_id.clone(),
                            writer: writer.clone(),
                            stream_id: *stream_id,
                        });
                }
            }
            Event::GapFilled { .. } => self.reach("gap filled from POSITION prev/new"),
            Event::Restarted {
                host,
                ids_in_flight,
            } => {
                if !ids_in_flight.is_empty() {
                    self.reach("restart with ids in flight");
                }
                self.forget_sends_through(host);
            }
            Event::Started { host, token } => self.start(at, host, token),
            Event::Reconnected { .. } => self.reach("replication reconnect"),
            Event::Fault { description } => {
                if crate::faults::described_fault_lasts_until_heal(description) {
                    self.lasting_active = true;
                } else if *description != crate::faults::describe(&FaultKind::Heal {}) {
                    self.settled_ms = at.as_ms();
                }
            }
            Event::Healed => {
                self.last_heal = Some(at);
                if self.lasting_active {
                    self.settled_ms = at.as_ms();
                    self.lasting_active = false;
                }
            }
            Event::FederationSent {
                host,
                from,
                upto,
                events,
            } => self.federation_sent(at, host, *from, *upto, events),
            Event::SendAnswered { .. }
            | Event::SequenceFetched { .. }
            | Event::RdataDiscarded { .. }
            | Event::StreamConnected { .. }
            | Event::Disconnected { .. }
            | Event::PositionAtEnd { .. } => {}
        }
    }

    /// Adds `id` to the allocated ranges; false if it was allocated already.
    fn allocate(&mut self, id: i64) -> bool {
        let below = self
            .allocated
            .range(..=id)
            .next_back()
            .map(|(s, e)| (*s, *e));
        if below.is_some_and(|(_, end)| end >= id) {
            return false;
        }
        let above = self.allocated.get(&(id + 1)).copied();
        match (below.filter(|(_, end)| *end == id - 1), above) {
            (Some((start, _)), Some(end)) => {
                self.allocated.remove(&(id + 1));
                self.allocated.insert(start, end);
            }
            (Some((start, _)), None) => {
                self.allocated.insert(start, id);
            }
            (None, Some(end)) => {
                self.allocated.remove(&(id + 1));
                self.allocated.insert(id, end);
            }
            (None, None) => {
                self.allocated.insert(id, id);
            }
        }
        true
    }

    fn commit(&mut self, at: SimInstant, writer: &str, stream_id: i64, event_id: &str) {
        self.events += 1;
        if self.covered_floor >= stream_id
            || self
                .covered_max
                .get(writer)
                .is_some_and(|covered| *covered >= stream_id)
        {
            self.suspect(
                at,
                "no_missed_event",
                format!("{writer}@{stream_id} ({event_id}) committed after a token covering it was handed out"),
            );
        }
        if self
            .forgotten_upto
            .get(writer)
            .is_some_and(|upto| *upto >= stream_id)
        {
            self.suspect(
                at,
                "no_missed_event",
                format!("{writer}@{stream_id} committed below events already settled"),
            );
        }
        if let Some(sender) = self
            .senders
            .iter()
            .find(|sender| sender.read_upto.is_some_and(|upto| upto >= stream_id))
        {
            let reason = format!(
                "{writer}@{stream_id} ({event_id}) committed below {}'s federation read to {}",
                sender.name,
                sender.read_upto.unwrap_or_default()
            );
            self.suspect(at, "federation_never_passes_uncommitted", reason);
        }
        let highest = self
            .highest_committed
            .entry(writer.to_owned())
            .or_insert(stream_id);
        if *highest > stream_id {
            self.late.insert(event_id.to_owned());
        }
        *highest = (*highest).max(stream_id);
        self.recent_commits.push_back((at, stream_id));
        while let Some((old_at, id)) = self.recent_commits.front().copied() {
            if old_at.as_ms() + self.converge_within_ms >= at.as_ms() {
                break;
            }
            self.old_highest = Some(self.old_highest.map_or(id, |h| h.max(id)));
            self.recent_commits.pop_front();
        }
        let previous = self.live.insert(
            event_id.to_owned(),
            LiveCommit {
                writer: writer.to_owned(),
                stream_id,
                at,
                received: 0,
                received_now: 0,
                pins: 0,
                sent: 0,
            },
        );
        if previous.is_some() {
            self.suspect(at, "unique_ids", format!("{event_id} committed twice"));
        }
        self.live_by_writer
            .entry(writer.to_owned())
            .or_default()
            .insert(stream_id, event_id.to_owned());
        self.peak_live = self.peak_live.max(self.live.len());
    }

    fn announce(&mut self, at: SimInstant, host: &str, line: &str) {
        let mut words = line.split(' ');
        let position = match words.next() {
            Some("POSITION") => {
                let new = words.nth(3).and_then(|w| w.parse::<i64>().ok());
                if let Some(new) = new {
                    let covers = self.position_covers.entry(host.to_owned()).or_insert(new);
                    *covers = (*covers).max(new);
                }
                new
            }
            Some("RDATA") => {
                let token = words.nth(2).and_then(|w| w.parse::<i64>().ok());
                if let (Some(token), Some(covers)) = (token, self.position_covers.get(host)) {
                    if token <= *covers {
                        let covers = *covers;
                        self.suspect(
                            at,
                            "rdata_never_behind_position",
                            format!("{host} sent RDATA {token} after a POSITION up to {covers}"),
                        );
                    }
                }
                token
            }
            _ => None,
        };
        if let Some(position) = position {
            let upto = self.announced_upto.entry(host.to_owned()).or_insert(0);
            *upto = (*upto).max(position);
        }
    }

    /// The owner `owner` received `event_id`: early, phantom and duplicate deliveries, and
    /// deliveries of what was forgotten, are suspect. Returns the consumer's index.
    fn receive(&mut self, at: SimInstant, owner: &str, event_id: &str) -> Option<usize> {
        let Some(consumer) = self.consumer_of.get(owner).copied() else {
            self.suspect(
                at,
                "no_duplicate",
                format!("{event_id} received by {owner}, which is no reader or client"),
            );
            return None;
        };
        let bit = 1u64 << consumer;
        let Some(live) = self.live.get_mut(event_id) else {
            self.suspect(
                at,
                "no_early_or_phantom_event",
                format!("{owner} received {event_id}, not committed or already settled"),
            );
            return None;
        };
        let duplicate = live.received_now & bit != 0;
        live.received |= bit;
        live.received_now |= bit;
        let aborted = self
            .aborted
            .contains(&(live.writer.clone(), live.stream_id));
        if duplicate {
            self.suspect(
                at,
                "no_duplicate",
                format!("{owner} received {event_id} twice"),
            );
        }
        if aborted {
            self.suspect(
                at,
                "no_early_or_phantom_event",
                format!("{owner} received aborted {event_id}"),
            );
        }
        self.owed.remove(&(consumer, event_id.to_owned()));
        Some(consumer)
    }

    fn deliver(
        &mut self,
        at: SimInstant,
        reader: &str,
        writer: &str,
        stream_id: i64,
        event_id: &str,
        caught_up: bool,
    ) {
        if self.late.remove(event_id) {
            self.reach("out-of-order commit delivered");
        }
        self.receive(at, reader, event_id);
        if let Some(token) = self.announced.get(reader) {
            let covered = if caught_up {
                token
                    .instance_map()
                    .get(writer)
                    .is_some_and(|pos| *pos >= stream_id)
            } else {
                token.pos_for(writer) >= stream_id
            };
            if covered {
                self.suspect(
                    at,
                    "notifier_in_order",
                    format!("{reader}'s notifier announced {event_id} after a token past it"),
                );
            }
        }
    }

    fn hand_out(&mut self, at: SimInstant, reader: &str, to: &str, token: &MultiWriterToken) {
        // tokens_never_regress
        let key = (reader.to_owned(), to.to_owned());
        let regressed = match self.handed_out.get_mut(&key) {
            Some(before) => {
                let regressed = (!before.is_before_or_eq(token))
                    .then(|| format!("{reader} handed {to} token {token} after {before}"));
                *before = before.max(token);
                regressed
            }
            None => {
                self.handed_out.insert(key, token.clone());
                None
            }
        };
        if let Some(reason) = regressed {
            self.suspect(at, "tokens_never_regress", reason);
        }
        // sync_answers' record of when each recipient got its token.
        match self.held_since.get_mut(to) {
            Some((held, since)) if held != token => (*held, *since) = (token.clone(), at),
            Some(_) => {}
            None => {
                self.held_since.insert(to.to_owned(), (token.clone(), at));
            }
        }
        if to == NOTIFIER {
            if let Some(sender) = self.senders.iter_mut().find(|s| s.name == reader) {
                sender.releases.push_back((at, token.stream()));
                // Keep the newest release more than the grace before `at`, and all after it.
                while sender.releases.len() > 1
                    && sender.releases[1].0.as_ms() + FEDERATION_READ_GRACE_MS <= at.as_ms()
                {
                    sender.releases.pop_front();
                }
            }
            let joined = self
                .announced
                .get(reader)
                .map_or_else(|| token.clone(), |before| before.max(token));
            self.announced.insert(reader.to_owned(), joined);
            self.cover(token);
            self.notifier_covers(at, reader, token);
            if let Some(consumer) = self.consumer_of.get(reader).copied() {
                self.consumers[consumer].last = Some(token.clone());
            }
        } else {
            match self.consumer_of.get(to).copied() {
                Some(consumer) if self.consumers[consumer].reader == reader => {
                    self.consumers[consumer].last = Some(token.clone());
                }
                _ => self.suspect(
                    at,
                    "liveness",
                    format!("{reader} handed a token to {to}, which does not page through it"),
                ),
            }
        }
        self.settle();
    }

    /// A token was handed out: a row committing later at or below it is suspect.
    fn cover(&mut self, token: &MultiWriterToken) {
        self.covered_floor = self.covered_floor.max(token.stream());
        let writers: Vec<String> = self.live_by_writer.keys().cloned().collect();
        for writer in writers.iter().chain(token.instance_map().keys()) {
            let position = token.pos_for(writer);
            let covered = self.covered_max.entry(writer.clone()).or_insert(position);
            *covered = (*covered).max(position);
        }
    }

    /// `missed_events`' notifier walk: the live rows of each writer from the reader's cursor
    /// up to the token are owed to the notifier unless received or read at its start.
    fn notifier_covers(&mut self, at: SimInstant, reader: &str, token: &MultiWriterToken) {
        let Some(consumer) = self.consumer_of.get(reader).copied() else {
            self.suspect(
                at,
                "notifier_announces_every_event",
                format!("{reader} is no reader"),
            );
            return;
        };
        let started_at = self.consumers[consumer].started_at;
        let bit = 1u64 << consumer;
        for (writer, rows) in &self.live_by_writer {
            let cursor = self
                .checked_upto
                .entry((consumer, writer.clone()))
                .or_insert(0);
            let upto = token.pos_for(writer);
            if upto > *cursor {
                for (_, event_id) in rows.range(*cursor + 1..=upto) {
                    let live = &self.live[event_id];
                    if live.received & bit == 0 && started_at.is_none_or(|s| live.at > s) {
                        self.owed.insert((consumer, event_id.clone()));
                    }
                }
            }
            *cursor = (*cursor).max(upto);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn page(
        &mut self,
        at: SimInstant,
        client: &str,
        reader: &str,
        requested_at: SimInstant,
        since: Option<&MultiWriterToken>,
        next_batch: &MultiWriterToken,
        events: &[(String, i64, String)],
        cut_short: bool,
    ) {
        for (_, _, event_id) in events {
            self.receive(at, client, event_id);
        }
        let consumer = self.consumer_of.get(client).copied();
        self.cover(next_batch);
        if let Some(consumer) = consumer {
            let bit = 1u64 << consumer;
            let low = since.cloned().unwrap_or_default();
            for (writer, rows) in &self.live_by_writer {
                let (from, upto) = (low.pos_for(writer), next_batch.pos_for(writer));
                if upto <= from {
                    continue;
                }
                for (_, event_id) in rows.range(from + 1..=upto) {
                    if self.live[event_id].received & bit == 0 {
                        self.owed.insert((consumer, event_id.clone()));
                    }
                }
            }
        }
        self.read_your_writes(at, client, reader, requested_at, next_batch, cut_short);
    }

    /// `read_your_writes`: the sends answered as readable before this page asked are in it or
    /// in an earlier page (a forgotten event was received by every client).
    fn read_your_writes(
        &mut self,
        at: SimInstant,
        client: &str,
        reader: &str,
        requested_at: SimInstant,
        next_batch: &MultiWriterToken,
        cut_short: bool,
    ) {
        if self.from_the_future.remove(client) {
            let dropped = self.pending_sends.remove(client).unwrap_or_default();
            self.release(&dropped);
            self.skipped_by_future
                .insert(client.to_owned(), next_batch.clone());
            return;
        }
        let Some(sends) = self.pending_sends.get_mut(client) else {
            return;
        };
        let (due, later): (Vec<PendingSend>, Vec<PendingSend>) = std::mem::take(sends)
            .into_iter()
            .partition(|send| send.answered_at <= requested_at && send.host == reader);
        *sends = later;
        let bit = self.consumer_of.get(client).map_or(0, |c| 1u64 << c);
        let judged = !cut_short && bit != 0;
        for send in due.iter().filter(|_| judged) {
            let skipped = self
                .skipped_by_future
                .get(client)
                .is_some_and(|token| token.pos_for(&send.writer) >= send.stream_id);
            // Pinned while the send waited, the event is live if it committed.
            let seen = self
                .live
                .get(&send.event_id)
                .is_some_and(|live| live.received & bit != 0);
            if !skipped && !seen {
                self.suspect(
                    at,
                    "read_your_writes",
                    format!(
                        "{client}'s next /sync through {reader} did not hold {}",
                        send.event_id
                    ),
                );
            }
        }
        self.release(&due);
    }

    /// `sync_answers`: a /sync that gave up waiting for `since`, judged at the end.
    fn timed_out_page(
        &mut self,
        at: SimInstant,
        client: &str,
        reader: &str,
        requested_at: SimInstant,
        since: Option<&MultiWriterToken>,
    ) {
        let got_since = self
            .held_since
            .get(client)
            .filter(|(held, _)| Some(held) == since)
            .map_or(requested_at, |(_, at)| *at);
        self.timed_out.push(TimedOut {
            at,
            reader: reader.to_owned(),
            requested_at,
            due_ms: got_since.as_ms().max(self.settled_ms)
                + self.converge_within_ms
                + super::SYNC_RECHECK_MS,
            lasting_active: self.lasting_active,
        });
    }

    /// `host` went down or came back: sends answered through it are no longer judged.
    fn forget_sends_through(&mut self, host: &str) {
        let mut gone = Vec::new();
        for sends in self.pending_sends.values_mut() {
            let (through, others) = std::mem::take(sends)
                .into_iter()
                .partition(|send| send.host == host);
            *sends = others;
            gone.extend::<Vec<PendingSend>>(through);
        }
        self.release(&gone);
    }

    /// Sends no longer waiting: their events may be forgotten.
    fn release(&mut self, sends: &[PendingSend]) {
        for send in sends {
            self.pin(&send.event_id, -1);
        }
    }

    /// A process (re)started with its generator at `token`.
    fn start(&mut self, at: SimInstant, host: &str, token: &MultiWriterToken) {
        self.last_started.insert(host.to_owned(), at);
        // A restarted federation sender is poked only by its new notifier's releases.
        if let Some(sender) = self.senders.iter_mut().find(|s| s.name == host) {
            sender.releases.clear();
        }
        self.position_covers.remove(host);
        self.handed_out
            .remove(&(host.to_owned(), NOTIFIER.to_owned()));
        self.announced.remove(host);
        self.forget_sends_through(host);
        let Some(consumer) = self
            .consumer_of
            .get(host)
            .copied()
            .filter(|c| self.consumers[*c].notifier)
        else {
            return;
        };
        // A new notifier: what it receives from here on is judged afresh for duplicates.
        let bit = 1u64 << consumer;
        for live in self.live.values_mut() {
            live.received_now &= !bit;
        }
        let writers: BTreeSet<String> = self
            .live_by_writer
            .keys()
            .chain(self.forgotten_upto.keys())
            .chain(token.instance_map().keys())
            .cloned()
            .collect();
        for writer in writers {
            let position = token.pos_for(&writer);
            let cursor = self.checked_upto.entry((consumer, writer)).or_insert(0);
            *cursor = (*cursor).max(position);
        }
        let state = &mut self.consumers[consumer];
        state.started_at = Some(at);
        state.last = Some(token.clone());
    }

    /// Pins `event_id` (`by` 1) or lets it go (`by` -1) while a send waits on it.
    fn pin(&mut self, event_id: &str, by: i32) {
        if let Some(live) = self.live.get_mut(event_id) {
            live.pins = live.pins.saturating_add_signed(by);
        }
    }

    /// Marks settled, in each writer's id order, the events every consumer has settled, and
    /// forgets those settled for `keep_settled_ms`.
    fn settle(&mut self) {
        let now = self.last_at;
        for (writer, rows) in &self.live_by_writer {
            let settled = self.settled_upto.get(writer).copied().unwrap_or(i64::MIN);
            let mut upto = settled;
            for (stream_id, event_id) in rows.range(settled.saturating_add(1)..) {
                if !self.is_settled(&self.live[event_id]) {
                    break;
                }
                upto = *stream_id;
                self.to_forget.push_back((now, writer.clone(), *stream_id));
            }
            if upto > settled {
                self.settled_upto.insert(writer.clone(), upto);
            }
        }
        while let Some((at, _, _)) = self.to_forget.front() {
            if at.as_ms() + self.keep_settled_ms > now.as_ms() {
                break;
            }
            let (_, writer, stream_id) = self.to_forget.pop_front().expect("front");
            let Some(event_id) = self
                .live_by_writer
                .get_mut(&writer)
                .and_then(|rows| rows.remove(&stream_id))
            else {
                continue;
            };
            self.live.remove(&event_id);
            self.late.remove(&event_id);
            let upto = self.forgotten_upto.entry(writer).or_insert(stream_id);
            *upto = (*upto).max(stream_id);
        }
    }

    /// Federation sender `host` read `(from, upto]` and sent `events`: they are sent by it;
    /// a live event in that range it did not send committed after the database read, and is
    /// never sent (`federation_never_passes_uncommitted`; a forgotten event was sent by every
    /// sender, see `is_settled`).
    fn federation_sent(
        &mut self,
        at: SimInstant,
        host: &str,
        from: i64,
        upto: i64,
        events: &[(i64, String)],
    ) {
        let Some(index) = self.senders.iter().position(|s| s.name == host) else {
            self.suspect(
                at,
                "federation_never_passes_uncommitted",
                format!("{host} sent federation but is not a federation sender"),
            );
            return;
        };
        let bit = 1u64 << index;
        for (_, event_id) in events {
            if let Some(live) = self.live.get_mut(event_id) {
                live.sent |= bit;
            }
        }
        if from < upto {
            let missed = self.live_by_writer.iter().find_map(|(writer, rows)| {
                rows.range(from + 1..=upto)
                    .find(|(_, event_id)| self.live[*event_id].sent & bit == 0)
                    .map(|(id, event_id)| {
                        format!("{host} read ({from}, {upto}] without {event_id} ({writer}@{id})")
                    })
            });
            if let Some(reason) = missed {
                self.suspect(at, "federation_never_passes_uncommitted", reason);
            }
        }
        let sender = &mut self.senders[index];
        sender.read_upto = Some(sender.read_upto.map_or(upto, |before| before.max(upto)));
    }

    /// `federation_sends_every_event` over the live events: each running sender has sent
    /// every one committed by `cutoff` below its notifier's last release at least
    /// [`FEDERATION_READ_GRACE_MS`] before the end (forgotten events were sent by all).
    fn judge_federation(&mut self, context: &CheckContext, cutoff: SimInstant) {
        let Some(grace_end) = context
            .ended_at
            .as_ms()
            .checked_sub(FEDERATION_READ_GRACE_MS)
        else {
            return;
        };
        let mut suspicions = Vec::new();
        for (index, sender) in self.senders.iter().enumerate() {
            if context.is_down(&sender.name) {
                continue;
            }
            let Some((_, released)) = sender
                .releases
                .iter()
                .rev()
                .find(|(at, _)| at.as_ms() <= grace_end)
            else {
                continue;
            };
            let unsent = self.live.iter().find(|(_, c)| {
                c.at <= cutoff && c.stream_id <= *released && c.sent & (1u64 << index) == 0
            });
            if let Some((event_id, _)) = unsent {
                suspicions.push(format!(
                    "{} never sent {event_id}, below its release {released}",
                    sender.name
                ));
            }
        }
        for reason in suspicions {
            self.suspect(context.ended_at, "federation_sends_every_event", reason);
        }
    }

    /// Whether every consumer received `live` (or, a notifier, read it at its start) and
    /// holds a token covering it, and no send waits on it.
    fn is_settled(&self, live: &LiveCommit) -> bool {
        live.pins == 0
            && live.sent.count_ones() as usize == self.senders.len()
            && self.consumers.iter().enumerate().all(|(index, consumer)| {
                let covered = consumer
                    .last
                    .as_ref()
                    .is_some_and(|token| token.pos_for(&live.writer) >= live.stream_id);
                let received = live.received & (1u64 << index) != 0
                    || (consumer.notifier && consumer.started_at.is_some_and(|s| live.at <= s));
                covered && received
            })
    }

    /// Ends the run: the checks judged at the end (owed events, liveness, the minimum's
    /// convergence, timed-out /syncs) with the run's `context`.
    pub fn finish(mut self, context: &CheckContext) -> OnlineVerdict {
        let peak_live = self.peak_live;
        let ended = context.ended_at;
        if let Some((consumer, event_id)) = self.owed.first().cloned() {
            let name = self.consumers[consumer].name.clone();
            self.suspect(
                ended,
                "notifier_announces_every_event",
                format!("{name} never received {event_id}, which a token it was handed covered"),
            );
        }
        let cutoff = context
            .ended_at
            .as_ms()
            .checked_sub(context.converge_within_ms)
            .map(SimInstant::from_ms)
            .filter(|cutoff| self.last_heal.is_none_or(|healed| healed <= *cutoff));
        for timed_out in std::mem::take(&mut self.timed_out) {
            if context.started_without_a_down_writer(&timed_out.reader)
                && context
                    .last_started
                    .get(&timed_out.reader)
                    .is_some_and(|s| *s <= timed_out.requested_at)
            {
                continue;
            }
            let after_convergence = cutoff.is_some_and(|c| timed_out.requested_at >= c);
            if after_convergence
                || (!timed_out.lasting_active && timed_out.at.as_ms() >= timed_out.due_ms)
            {
                self.suspect(
                    timed_out.at,
                    "sync_answers",
                    format!("{} gave up on a /sync", timed_out.reader),
                );
            }
        }
        if let Some(cutoff) = cutoff {
            self.judge_convergence(context, cutoff);
            self.judge_federation(context, cutoff);
        }
        OnlineVerdict {
            suspicion: self.suspicion,
            reached: self.reached,
            events: self.events,
            peak_live,
        }
    }

    /// `liveness` and `minimum_converges` over the live events; a consumer whose last token
    /// is below something forgotten is suspect (the forgotten events are not there to judge).
    fn judge_convergence(&mut self, context: &CheckContext, cutoff: SimInstant) {
        let start = MultiWriterToken::default();
        let mut suspicions = Vec::new();
        for consumer in &self.consumers {
            if context.is_down(&consumer.reader) || context.is_down(&consumer.name) {
                continue;
            }
            if !consumer.notifier && context.started_without_a_down_writer(&consumer.reader) {
                continue;
            }
            let token = consumer.last.as_ref().unwrap_or(&start);
            let announced_by_down_writer = |writer: &str, id: i64| {
                !context.is_down(writer)
                    || self
                        .announced_upto
                        .get(writer)
                        .is_some_and(|upto| id <= *upto)
            };
            let behind = self.live.iter().find(|(_, c)| {
                c.at <= cutoff
                    && c.stream_id > token.pos_for(&c.writer)
                    && announced_by_down_writer(&c.writer, c.stream_id)
                    && (!consumer.notifier || consumer.started_at.is_none_or(|s| c.at > s))
            });
            if let Some((event_id, _)) = behind {
                suspicions.push(format!("{} ended behind {event_id}", consumer.name));
            }
            if let Some((writer, upto)) = self
                .forgotten_upto
                .iter()
                .find(|(writer, upto)| token.pos_for(writer) < **upto)
            {
                suspicions.push(format!(
                    "{} ended at {token}, below {writer}@{upto}, forgotten",
                    consumer.name
                ));
            }
        }
        for reason in suspicions {
            self.suspect(context.ended_at, "liveness", reason);
        }
        if context.configured_writer_down().is_some() {
            return;
        }
        let recent = self
            .recent_commits
            .iter()
            .filter(|(at, _)| *at <= cutoff)
            .map(|(_, id)| *id);
        let Some(highest) = recent.chain(self.old_highest).max() else {
            return;
        };
        let behind: Vec<String> = self
            .consumers
            .iter()
            .filter(|c| !c.notifier && !context.is_down(&c.name) && !context.is_down(&c.reader))
            .filter(|c| c.last.as_ref().is_some_and(|t| t.stream() < highest))
            .map(|c| c.name.clone())
            .collect();
        for client in behind {
            self.suspect(
                context.ended_at,
                "minimum_converges",
                format!("{client}'s minimum is below {highest}"),
            );
        }
    }

    /// When the last fault healed (zero if none did).
    pub fn last_heal(&self) -> SimInstant {
        self.last_heal.unwrap_or(SimInstant::ZERO)
    }

    /// When each host last started (the context's `last_started`).
    pub fn last_started(&self) -> &BTreeMap<String, SimInstant> {
        &self.last_started
    }
}

impl crate::history::RecordSink for OnlineChecker {
    fn record(&mut self, record: &Record) {
        self.observe(record);
    }
}

#[cfg(test)]
mod tests;

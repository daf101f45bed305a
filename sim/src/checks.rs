//! The invariants of DESIGN.md as a registry of named properties over a [`History`].
//!
//! Each property is `always` (a violation anywhere fails the run), `eventually` (must hold by
//! the end, measured from the last heal), or `sometimes` (a coverage target: a sweep where it
//! never fires is vacuous, stateright-style). Checks never change what a model did: they only
//! read the history and return [`Violation`] values.

use std::collections::{BTreeMap, BTreeSet};

// Sets the checks only ask for membership (never iterate, so their order cannot reach a
// verdict): hashed, since string comparisons in B-trees were a tenth of the checks.
use rustc_hash::{FxHashMap, FxHashSet};

use serde::Serialize;
use streamsim_models::time::SimInstant;
use streamsim_models::token::MultiWriterToken;

use crate::history::{Event, History};

mod federation;
use crate::scenario::FaultKind;

/// How a property is judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expectation {
    Always,
    Eventually,
    /// A guarantee real Synapse does not give: reported with its evidence, never a failure,
    /// so a sweep measures how often Synapse's own behaviour falls short of it.
    Advisory,
}

/// A violated property, with everything a person needs to find it on the timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub invariant: &'static str,
    pub at: SimInstant,
    pub hosts: Vec<String>,
    pub events: Vec<String>,
    pub tokens: Vec<String>,
    pub message: String,
    /// The known bug of real Synapse this violation is diagnosed as (e.g. `F1`,
    /// tools/synapse/FINDINGS.md): the model reproduces Synapse faithfully here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finding: Option<&'static str>,
}

impl Violation {
    /// Whether this violation is explained by a known bug of real Synapse.
    pub fn is_known(&self) -> bool {
        self.finding.is_some()
    }
}

/// What the checks need to know beyond the history.
#[derive(Clone, Debug)]
pub struct CheckContext {
    /// Every reader host, so one that never handed out a token is still judged.
    pub readers: Vec<String>,
    /// Every sync client and the reader it pages through.
    pub clients: Vec<(String, String)>,
    /// Simulated time the run ended.
    pub ended_at: SimInstant,
    /// The scenario's `converge_within`, in milliseconds.
    pub converge_within_ms: u64,
    /// How replication travelled: F4 needs the Redis bus (over direct TCP the one writer's
    /// POSITION answer precedes its RDATA on the one connection).
    pub transport: crate::scenario::Transport,
    /// The scenario's own network drops messages until the end-of-run heal (`network.message_loss`).
    pub network_loss: bool,
    /// Hosts down when the run ended (crashed, never restarted), with when they went down:
    /// what they or their clients would have seen next cannot converge, so the convergence
    /// checks leave them out ([`convergence_exemptions`] says which and why). Everything
    /// they did before going down is still judged.
    pub down_at_end: BTreeMap<String, SimInstant>,
    /// The writers config when the run ended: a configured writer that is down holds every
    /// minimum back, as it does in Synapse, so `minimum_converges` is not judged then.
    pub writers_at_end: Vec<String>,
    /// When each host last started (its current incarnation). A reader that started after a
    /// configured writer went down for good knows that writer's position only from its
    /// `stream_positions` row, which lags what the writer announced (an idle writer's POSITION
    /// moves no row), so its clients' tokens from before may stay ahead of it until the
    /// writer returns: /sync through it waits and answers empty (`wait_for_stream_token`).
    pub last_started: BTreeMap<String, SimInstant>,
    /// The readers that run a federation sender (`topology.federation_senders`).
    pub federation_senders: Vec<String>,
}

impl CheckContext {
    /// Whether `host` is down at the end of the run.
    fn is_down(&self, host: &str) -> bool {
        self.down_at_end.contains_key(host)
    }

    /// A configured writer down at the end, if any (it holds the minimum back).
    fn configured_writer_down(&self) -> Option<(&str, SimInstant)> {
        self.writers_at_end
            .iter()
            .find_map(|w| Some((w.as_str(), *self.down_at_end.get(w)?)))
    }

    /// Whether `reader` started after a configured writer went down for good: then /sync
    /// through it is not judged for convergence (see `last_started`).
    fn started_without_a_down_writer(&self, reader: &str) -> bool {
        self.configured_writer_down().is_some_and(|(_, since)| {
            self.last_started
                .get(reader)
                .is_some_and(|started| *started >= since)
        })
    }
}

/// What the convergence checks (`liveness`, `minimum_converges`) left out because a host was
/// down at the end, one sentence each, for the report.
pub fn convergence_exemptions(context: &CheckContext) -> Vec<String> {
    let mut notes = Vec::new();
    for (host, since) in &context.down_at_end {
        let clients: Vec<&str> = context
            .clients
            .iter()
            .filter(|(_, reader)| reader == host)
            .map(|(client, _)| client.as_str())
            .collect();
        let what = if context.readers.contains(host) {
            if clients.is_empty() {
                format!("{host}'s notifier is")
            } else {
                format!(
                    "{host}'s notifier and the pages of {} through it are",
                    clients.join(", ")
                )
            }
        } else if context.clients.iter().any(|(client, _)| client == host) {
            format!("{host}'s pages are")
        } else if context.writers_at_end.contains(host) {
            notes.push(format!(
                "{host} is down at the end (since {since}, never restarted) and still configured: it holds every minimum back, in Synapse too, so minimum_converges is not judged, nor are its rows it never announced; what it did before is judged"
            ));
            for reader in context
                .readers
                .iter()
                .filter(|r| context.started_without_a_down_writer(r) && !context.is_down(r))
            {
                let started = context.last_started[reader];
                notes.push(format!(
                    "{reader} started at {started}, after {host} went down: it knows {host}'s position only from stream_positions, so its clients' /sync may wait on tokens from before until {host} returns, in Synapse too; sync_answers and its clients' liveness are not judged through it"
                ));
            }
            continue;
        } else {
            continue;
        };
        notes.push(format!(
            "{host} is down at the end (since {since}, never restarted): {what} left out of the convergence checks; what it did before is judged"
        ));
    }
    notes
}

/// A named property.
pub struct Check {
    pub name: &'static str,
    pub expectation: Expectation,
    pub run: fn(&Facts, &CheckContext) -> Vec<Violation>,
}

/// A coverage target of a sweep.
pub struct SometimesTarget {
    pub name: &'static str,
    pub reached: fn(&History) -> bool,
}

/// Synapse re-checks a /sync's `since` token every 500 ms while it waits
/// (`wait_for_stream_token`).
const SYNC_RECHECK_MS: u64 = 500;

/// The recipient name of tokens a reader's notifier announces.
pub const NOTIFIER: &str = "notifier";

/// Every invariant, in DESIGN.md order.
pub const CHECKS: &[Check] = &[
    Check {
        name: "tokens_never_regress",
        expectation: Expectation::Always,
        run: tokens_never_regress,
    },
    Check {
        name: "no_missed_event",
        expectation: Expectation::Always,
        run: no_missed_event,
    },
    Check {
        name: "no_early_or_phantom_event",
        expectation: Expectation::Always,
        run: no_early_or_phantom_event,
    },
    Check {
        name: "no_duplicate",
        expectation: Expectation::Always,
        run: no_duplicate,
    },
    Check {
        name: "unique_ids",
        expectation: Expectation::Always,
        run: unique_ids,
    },
    Check {
        name: "liveness",
        expectation: Expectation::Eventually,
        run: liveness,
    },
    Check {
        name: "minimum_converges",
        expectation: Expectation::Eventually,
        run: minimum_converges,
    },
    Check {
        name: "notifier_announces_every_event",
        expectation: Expectation::Always,
        run: notifier_announces_every_event,
    },
    Check {
        name: "notifier_in_order",
        expectation: Expectation::Always,
        run: notifier_in_order,
    },
    Check {
        name: "sends_answered",
        expectation: Expectation::Always,
        run: sends_answered,
    },
    Check {
        name: "read_your_writes",
        expectation: Expectation::Always,
        run: read_your_writes,
    },
    Check {
        name: "sync_answers",
        expectation: Expectation::Eventually,
        run: sync_answers,
    },
    Check {
        name: "rdata_never_behind_position",
        expectation: Expectation::Always,
        run: rdata_never_behind_position,
    },
    Check {
        name: "federation_never_passes_uncommitted",
        expectation: Expectation::Always,
        run: federation::never_passes_uncommitted,
    },
    Check {
        name: "federation_sends_every_event",
        expectation: Expectation::Eventually,
        run: federation::sends_every_event,
    },
];

/// The interesting states a sweep must reach to mean anything.
pub const SOMETIMES: &[SometimesTarget] = &[
    SometimesTarget {
        name: "gap filled from POSITION prev/new",
        reached: |h| any(h, |e| matches!(e, Event::GapFilled { .. })),
    },
    SometimesTarget {
        name: "restart with ids in flight",
        reached: |h| {
            any(
                h,
                |e| matches!(e, Event::Restarted { ids_in_flight, .. } if !ids_in_flight.is_empty()),
            )
        },
    },
    SometimesTarget {
        name: "replication reconnect",
        reached: |h| any(h, |e| matches!(e, Event::Reconnected { .. })),
    },
    SometimesTarget {
        name: "out-of-order commit delivered",
        reached: out_of_order_commit_delivered,
    },
];

fn any(history: &History, predicate: impl Fn(&Event) -> bool) -> bool {
    history.records().any(|r| predicate(&r.event))
}

/// A row committed after a higher id of the same writer, and still delivered.
fn out_of_order_commit_delivered(history: &History) -> bool {
    let mut highest: BTreeMap<&str, i64> = BTreeMap::new();
    let mut late: BTreeSet<&str> = BTreeSet::new();
    for record in history.records() {
        match &record.event {
            Event::Committed { host, rows } => {
                for (id, event_id) in rows {
                    if highest.get(host.as_str()).is_some_and(|h| h > id) {
                        late.insert(event_id);
                    }
                    let top = highest.entry(host).or_insert(*id);
                    *top = (*top).max(*id);
                }
            }
            Event::Delivered { event_id, .. } if late.contains(event_id.as_str()) => return true,
            _ => {}
        }
    }
    false
}

/// Runs every failing (`always` and `eventually`) check; violations in history order.
pub fn check_all(history: &History, context: &CheckContext) -> Vec<Violation> {
    run_checks(history, context, |e| e != Expectation::Advisory)
}

/// Runs the advisory checks: where this run fell short of a guarantee Synapse does not give.
pub fn check_advisories(history: &History, context: &CheckContext) -> Vec<Violation> {
    run_checks(history, context, |e| e == Expectation::Advisory)
}

/// [`check_all`] and [`check_advisories`] in one pass: the facts of the history are gathered
/// once (what `run` needs; each alone gathers them again).
pub fn check_all_and_advisories(
    history: &History,
    context: &CheckContext,
) -> (Vec<Violation>, Vec<Violation>) {
    let facts = Facts::from(history);
    (
        judge(&facts, context, |e| e != Expectation::Advisory),
        judge(&facts, context, |e| e == Expectation::Advisory),
    )
}

fn run_checks(
    history: &History,
    context: &CheckContext,
    select: impl Fn(Expectation) -> bool,
) -> Vec<Violation> {
    judge(&Facts::from(history), context, select)
}

fn judge(
    facts: &Facts,
    context: &CheckContext,
    select: impl Fn(Expectation) -> bool,
) -> Vec<Violation> {
    let mut violations: Vec<Violation> = CHECKS
        .iter()
        .filter(|check| select(check.expectation))
        .flat_map(|check| (check.run)(facts, context))
        .collect();
    violations.sort_by_key(|v| v.at);
    violations
}

/// Which sometimes-targets a history reached.
pub fn sometimes_reached(history: &History) -> BTreeMap<&'static str, bool> {
    SOMETIMES
        .iter()
        .map(|t| (t.name, (t.reached)(history)))
        .collect()
}

/// A committed event.
#[derive(Clone, Debug)]
struct Commit<'a> {
    writer: &'a str,
    stream_id: i64,
    at: SimInstant,
}

/// The history, indexed for the checks.
pub struct Facts<'a> {
    history: &'a History,
    /// The walk `no_missed_event` and `notifier_announces_every_event` share, done once.
    missed_walk: std::cell::OnceCell<(Vec<Violation>, Vec<Violation>)>,
    commits: BTreeMap<&'a str, Commit<'a>>,
    aborted: BTreeSet<(String, i64)>,
    last_heal: Option<SimInstant>,
    /// Each writer's commits as (stream id, event id, commit time), sorted by stream id.
    by_writer: BTreeMap<&'a str, Vec<(i64, &'a str, SimInstant)>>,
    /// When each stream id was allocated.
    allocated_at: BTreeMap<i64, SimInstant>,
    /// Which writer allocated each stream id.
    allocated_by: BTreeMap<i64, &'a str>,
    /// Each reader running at the end and the room token its id generator had reached.
    positions_at_end: BTreeMap<&'a str, &'a MultiWriterToken>,
    /// Every process start: (time, host, its generator's token).
    starts: Vec<(SimInstant, &'a str, &'a MultiWriterToken)>,
    /// Every announced `POSITION`: (time, writer, prev, new), in history order.
    positions: Vec<(SimInstant, &'a str, i64, i64)>,
    /// (writer, stream id) of every row a writer sent as RDATA, and when it first did.
    rdata_sent: BTreeMap<(&'a str, i64), SimInstant>,
    /// Per writer, the times of `rdata_sent`, sorted: when its rows were first sent.
    rdata_first_sends: BTreeMap<&'a str, Vec<SimInstant>>,
    /// Per writer, its announced `POSITION`s: (time, prev, new), in history order.
    positions_by_writer: BTreeMap<&'a str, Vec<(SimInstant, i64, i64)>>,
    /// Every RDATA discarded as already seen: (time, reader, writer, token).
    discards: Vec<(SimInstant, &'a str, &'a str, i64)>,
    /// Every RDATA discarded because the stream was not connected: (time, reader, writer,
    /// token).
    unconnected_discards: Vec<(SimInstant, &'a str, &'a str, i64)>,
    /// Every `REPLICATE` a process sent, as it (re)subscribed: (time, host).
    replicates: Vec<(SimInstant, &'a str)>,
    /// Every writer's sequence fetch: (writer, requested at, answered at).
    fetches: Vec<(&'a str, SimInstant, SimInstant)>,
    /// Sequence fetches never answered, their writer gone down first: (writer, when their
    /// `nextval` ran, when the writer next started or the history's end). Requested before
    /// the `nextval`, they were in flight at least over that span.
    unanswered_fetches: Vec<(&'a str, SimInstant, SimInstant)>,
    /// When each reader handed each event to its notifier (looked up, never iterated).
    deliveries: FxHashMap<(&'a str, &'a str), Vec<SimInstant>>,
    /// Every row a reader applied from RDATA (not a catch-up): (time, reader, writer, id).
    rdata_applied: Vec<(SimInstant, &'a str, &'a str, i64)>,
    /// Every catch-up a POSITION started: (time, reader, writer, from, upto).
    gaps_filled: Vec<(SimInstant, &'a str, &'a str, i64, i64)>,
    /// Every POSITION that connected a reader's stream on a new connection: (time processed,
    /// reader, writer, prev, new).
    connections: Vec<(SimInstant, &'a str, &'a str, i64, i64)>,
    /// Per federation sender host, every read it sent: (time, from, upto, the events).
    federation_sent: BTreeMap<&'a str, Vec<FederationRead<'a>>>,
}

/// One read of a federation sender's loop: (when it sent it, from, upto, the events it held).
type FederationRead<'a> = (SimInstant, i64, i64, &'a [(i64, String)]);

impl<'a> From<&'a History> for Facts<'a> {
    fn from(history: &'a History) -> Self {
        let mut commits = BTreeMap::new();
        let mut aborted = BTreeSet::new();
        let mut last_heal = None;
        let mut by_writer: BTreeMap<&str, Vec<(i64, &str, SimInstant)>> = BTreeMap::new();
        let mut allocated_at = BTreeMap::new();
        let mut allocated_by = BTreeMap::new();
        let mut starts = Vec::new();
        let mut positions = Vec::new();
        let mut rdata_sent = BTreeMap::new();
        let mut discards = Vec::new();
        let mut unconnected_discards = Vec::new();
        let mut replicates = Vec::new();
        let mut fetches = Vec::new();
        let mut fetched: BTreeSet<(&str, i64)> = BTreeSet::new();
        let mut allocations: Vec<(SimInstant, &str, &[i64])> = Vec::new();
        let mut deliveries: FxHashMap<(&str, &str), Vec<SimInstant>> = FxHashMap::default();
        let mut rdata_applied = Vec::new();
        let mut gaps_filled = Vec::new();
        let mut connections = Vec::new();
        let mut positions_at_end = BTreeMap::new();
        let mut federation_sent: BTreeMap<&str, Vec<FederationRead>> = BTreeMap::new();
        for record in history.records() {
            match &record.event {
                Event::Announced { host, line } => {
                    let mut words = line.split(' ');
                    match words.next() {
                        Some("POSITION") => {
                            let prev = words.nth(2).and_then(|w| w.parse().ok());
                            let new = words.next().and_then(|w| w.parse().ok());
                            if let (Some(prev), Some(new)) = (prev, new) {
                                positions.push((record.at, host.as_str(), prev, new));
                            }
                        }
                        Some("REPLICATE") => replicates.push((record.at, host.as_str())),
                        Some("RDATA") => {
                            if let Some(token) = words.nth(2).and_then(|w| w.parse().ok()) {
                                rdata_sent
                                    .entry((host.as_str(), token))
                                    .or_insert(record.at);
                            }
                        }
                        _ => {}
                    }
                }
                Event::RdataDiscarded {
                    reader,
                    writer,
                    token,
                    not_connected,
                } => {
                    let discard = (record.at, reader.as_str(), writer.as_str(), *token);
                    if *not_connected {
                        unconnected_discards.push(discard);
                    } else {
                        discards.push(discard);
                    }
                }

                Event::SequenceFetched {
                    host,
                    requested_at,
                    ids,
                } => {
                    fetches.push((host.as_str(), *requested_at, record.at));
                    fetched.extend(ids.iter().map(|id| (host.as_str(), *id)));
                }
                Event::Delivered {
                    reader,
                    writer,
                    stream_id,
                    event_id,
                    caught_up,
                } => {
                    deliveries
                        .entry((reader.as_str(), event_id.as_str()))
                        .or_default()
                        .push(record.at);
                    if !caught_up {
                        rdata_applied.push((
                            record.at,
                            reader.as_str(),
                            writer.as_str(),
                            *stream_id,
                        ));
                    }
                }
                Event::GapFilled {
                    reader,
                    writer,
                    from,
                    upto,
                } => gaps_filled.push((record.at, reader.as_str(), writer.as_str(), *from, *upto)),
                Event::StreamConnected {
                    reader,
                    writer,
                    prev,
                    new,
                } => connections.push((record.at, reader.as_str(), writer.as_str(), *prev, *new)),
                Event::Allocated { host, ids } => {
                    allocations.push((record.at, host.as_str(), ids.as_slice()));
                    for id in ids {
                        allocated_at.entry(*id).or_insert(record.at);
                        allocated_by.entry(*id).or_insert(host.as_str());
                    }
                }
                Event::Started { host, token } => starts.push((record.at, host.as_str(), token)),
                Event::Committed { host, rows } => {
                    for (stream_id, event_id) in rows {
                        by_writer
                            .entry(host)
                            .or_default()
                            .push((*stream_id, event_id, record.at));
                        commits.insert(
                            event_id.as_str(),
                            Commit {
                                writer: host.as_str(),
                                stream_id: *stream_id,
                                at: record.at,
                            },
                        );
                    }
                }
                Event::Aborted { host, ids } => {
                    aborted.extend(ids.iter().map(|id| (host.clone(), *id)))
                }
                Event::Healed => last_heal = Some(record.at),
                Event::PositionAtEnd { reader, token } => {
                    positions_at_end.insert(reader.as_str(), token);
                }
                Event::FederationSent {
                    host,
                    from,
                    upto,
                    events,
                } => federation_sent.entry(host.as_str()).or_default().push((
                    record.at,
                    *from,
                    *upto,
                    events.as_slice(),
                )),
                _ => {}
            }
        }
        for commits in by_writer.values_mut() {
            commits.sort_unstable_by_key(|(id, _, _)| *id);
        }
        // A fetch whose ids never came back to its writer (none fetched, committed or
        // aborted): the writer went down with it in flight.
        let history_end = history.last().map_or(SimInstant::ZERO, |r| r.at);
        let unanswered_fetches = allocations
            .iter()
            .filter(|(_, host, ids)| {
                ids.iter().all(|id| {
                    !fetched.contains(&(*host, *id))
                        && !aborted.contains(&((*host).to_owned(), *id))
                        && by_writer
                            .get(host)
                            .is_none_or(|rows| rows.binary_search_by_key(id, |(i, ..)| *i).is_err())
                })
            })
            .map(|(nextval, host, _)| {
                let down = starts
                    .iter()
                    .find(|(at, h, _)| h == host && at > nextval)
                    .map_or(history_end, |(at, ..)| *at);
                (*host, *nextval, down)
            })
            .collect();
        let mut rdata_first_sends: BTreeMap<&str, Vec<SimInstant>> = BTreeMap::new();
        for ((writer, _), at) in &rdata_sent {
            rdata_first_sends.entry(*writer).or_default().push(*at);
        }
        for sends in rdata_first_sends.values_mut() {
            sends.sort_unstable();
        }
        let mut positions_by_writer: BTreeMap<&str, Vec<(SimInstant, i64, i64)>> = BTreeMap::new();
        for (at, writer, prev, new) in &positions {
            positions_by_writer
                .entry(*writer)
                .or_default()
                .push((*at, *prev, *new));
        }
        Facts {
            history,
            missed_walk: std::cell::OnceCell::new(),
            rdata_first_sends,
            positions_by_writer,
            positions_at_end,
            commits,
            aborted,
            last_heal,
            by_writer,
            allocated_at,
            allocated_by,
            starts,
            positions,
            rdata_sent,
            discards,
            unconnected_discards,
            replicates,
            fetches,
            unanswered_fetches,
            deliveries,
            rdata_applied,
            gaps_filled,
            connections,
            federation_sent,
        }
    }
}

impl Facts<'_> {
    /// The position `host`, started at `started` with its generator at `token`, claimed for
    /// itself: its own entry, or what it announced in its first `POSITION` after the start
    /// (`_max_position_of_local_instance` starts at `_max_seen_allocated_stream_id`, the
    /// largest position read from `stream_positions`, so it may be another writer's:
    /// generated seed 167, w1 restarting while w3's row sat at the top of the table).
    fn claim_of(&self, host: &str, started: SimInstant, token: &MultiWriterToken) -> i64 {
        let next_start = self
            .starts
            .iter()
            .find(|(at, h, _)| *h == host && *at > started)
            .map(|(at, ..)| *at);
        let in_incarnation =
            |at: &SimInstant| *at >= started && next_start.is_none_or(|next| *at < next);
        // The start's announcement, `POSITION host X X` (`send_positions_to_connection` on
        // subscribing), before the incarnation sent any row of its own.
        // Indexed by writer and time: this runs once per diagnosed miss, and a scan of the
        // whole history per miss made an hour's soak quadratic.
        let first_rdata = self.rdata_first_sends.get(host).and_then(|sends| {
            sends
                .get(sends.partition_point(|at| *at < started))
                .filter(|at| in_incarnation(at))
                .copied()
        });
        let announced = self.positions_by_writer.get(host).and_then(|positions| {
            positions
                .get(positions.partition_point(|(at, ..)| *at < started))
                .filter(|(at, ..)| in_incarnation(at))
                .filter(|(at, prev, new)| {
                    prev == new && first_rdata.is_none_or(|first| *at <= first)
                })
                .map(|(.., new)| *new)
        });
        token.pos_for(host).max(announced.unwrap_or(i64::MIN))
    }

    /// When `writer`'s row `stream_id` committed.
    fn commit_of(&self, writer: &str, stream_id: i64) -> Option<SimInstant> {
        let commits = self.by_writer.get(writer)?;
        let index = commits.partition_point(|(id, _, _)| *id < stream_id);
        commits
            .get(index)
            .filter(|(id, _, _)| *id == stream_id)
            .map(|(_, _, at)| *at)
    }

    /// `writer`'s event at `stream_id`.
    fn event_of(&self, writer: &str, stream_id: i64) -> Option<&str> {
        let commits = self.by_writer.get(writer)?;
        let index = commits.partition_point(|(id, _, _)| *id < stream_id);
        commits
            .get(index)
            .filter(|(id, _, _)| *id == stream_id)
            .map(|(_, event_id, _)| *event_id)
    }
}

fn violation(
    invariant: &'static str,
    at: SimInstant,
    hosts: &[&str],
    events: &[&str],
    tokens: &[&MultiWriterToken],
    message: String,
) -> Violation {
    Violation {
        invariant,
        at,
        hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        events: events.iter().map(|e| (*e).to_owned()).collect(),
        tokens: tokens.iter().map(|t| t.to_string()).collect(),
        message,
        finding: None,
    }
}

/// A writer's `POSITION prev new` tells readers it wrote nothing in `(prev, new]` and that
/// they have had its rows up to `prev`: a reader behind `prev` reads the rest from the
/// database. So once a writer (in one incarnation) has announced `POSITION prev new`, every
/// RDATA it sends after carries a token above `new`; a row at or below it would be read
/// from the database by the readers behind, then received again (bug B16, PR #16639). (Finding
/// F3's POSITION also covers a row of its writer, but that row's RDATA is never sent.)
fn rdata_never_behind_position(facts: &Facts, _: &CheckContext) -> Vec<Violation> {
    let mut violations = Vec::new();
    // Per writer: the highest `new` it announced in this incarnation, and that POSITION.
    let mut covered: BTreeMap<&str, (i64, SimInstant, &str)> = BTreeMap::new();
    for record in facts.history.records() {
        match &record.event {
            Event::Started { host, .. } => {
                covered.remove(host.as_str());
            }
            Event::Announced { host, line } => {
                let mut words = line.split(' ');
                match words.next() {
                    Some("POSITION") => {
                        let Some(new) = words.nth(3).and_then(|w| w.parse::<i64>().ok()) else {
                            continue;
                        };
                        let entry =
                            covered
                                .entry(host.as_str())
                                .or_insert((new, record.at, line.as_str()));
                        if new > entry.0 {
                            *entry = (new, record.at, line.as_str());
                        }
                    }
                    Some("RDATA") => {
                        let Some(token) = words.nth(2).and_then(|w| w.parse::<i64>().ok()) else {
                            continue;
                        };
                        let Some((new, position_at, position)) = covered.get(host.as_str()) else {
                            continue;
                        };
                        if token > *new {
                            continue;
                        }
                        let event = facts.event_of(host, token).unwrap_or("?");
                        violations.push(violation(
                            "rdata_never_behind_position",
                            record.at,
                            &[host],
                            &[event],
                            &[],
                            format!(
                                "{host} sent RDATA of its row {token} ({event}) at {}, after announcing `{position}` at {position_at}: readers behind read the row from the database, then receive it again",
                                record.at
                            ),
                        ));
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    violations
}

/// Invariant 1: Every token a reader hands out to a recipient is at or after every token it
/// handed that recipient before. A sync client keeps its token across the reader's restarts,
/// so its tokens are compared across them; the notifier is the process's own memory and
/// starts again with the process (its first release after a restart is compared with the
/// tokens of that incarnation only).
fn tokens_never_regress(facts: &Facts, _: &CheckContext) -> Vec<Violation> {
    // The join of everything handed out so far: a later token must cover all of it.
    let mut handed_out: BTreeMap<(&str, &str), MultiWriterToken> = BTreeMap::new();
    let mut violations = Vec::new();
    for record in facts.history.records() {
        match &record.event {
            Event::Started { host, .. } => {
                handed_out.remove(&(host.as_str(), NOTIFIER));
            }
            Event::FutureToken { client, reader, .. } => {
                // The client threw its tokens away for one from the future.
                handed_out.remove(&(reader.as_str(), client.as_str()));
            }
            Event::TokenHandedOut { reader, to, token } => {
                let key = (reader.as_str(), to.as_str());
                if let Some(before) = handed_out.get(&key) {
                    if !before.is_before_or_eq(token) {
                        violations.push(violation(
                            "tokens_never_regress",
                            record.at,
                            &[reader, to],
                            &[],
                            &[before, token],
                            format!("{reader} handed {to} token {token} after {before}"),
                        ));
                    }
                }
                let joined = handed_out
                    .get(&key)
                    .map_or_else(|| token.clone(), |before| before.max(token));
                handed_out.insert(key, joined);
            }
            _ => {}
        }
    }
    violations
}

/// Invariant 2: Once a reader's notifier announced token T, every event at or before T (that
/// this incarnation of the reader had not already covered at its start) had committed. Each
/// /sync page holds every event of its range `(since, next_batch]`, and no event of that range
/// commits after the page. (Whether the notifier also announces every covered event is
/// `notifier_announces_every_event`.)
///
/// Each event is judged once per reader, at the first announced token that covers it (a
/// per-writer cursor), so the check is linear in the history.
fn no_missed_event(facts: &Facts, context: &CheckContext) -> Vec<Violation> {
    facts
        .missed_walk
        .get_or_init(|| missed_events(facts, context))
        .0
        .clone()
}

/// A committed event a page's token covered but the page did not hold: (page time, its
/// token, its reader, the event's writer, its stream id).
type ClientOwed<'a> = (SimInstant, &'a MultiWriterToken, &'a str, &'a str, i64);

/// The one walk behind `no_missed_event` (first) and `notifier_announces_every_event`
/// (second: the covered events a notifier never announced), each sorted by time.
fn missed_events(facts: &Facts, context: &CheckContext) -> (Vec<Violation>, Vec<Violation>) {
    let mut delivered: FxHashMap<&str, FxHashSet<&str>> = FxHashMap::default();
    let mut checked_upto: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    // Covered but not yet delivered: (reader, event) -> where it was first covered.
    let mut owed: BTreeMap<(&str, &str), (SimInstant, &MultiWriterToken, &str, i64)> =
        BTreeMap::new();
    // Committed, covered by a page's token, not in that page: (client, event) -> the first
    // such page (time, its token, its reader, the event's writer and id).
    let mut client_owed: BTreeMap<(&str, &str), ClientOwed> = BTreeMap::new();
    // What some page returned to each client.
    let mut returned: FxHashSet<(&str, &str)> = FxHashSet::default();
    // When each process's current incarnation started: what was committed by then it read
    // at start-up (`_load_current_ids` adds the rows above the stored minimum to its known
    // persisted positions, and the `_events_stream_cache` is prefilled from the events
    // table), so its notifier never announces those rows and is not owed them; its clients
    // still get them from the database, which `no_missed_event` judges.
    let mut started_at: BTreeMap<&str, SimInstant> = BTreeMap::new();
    let mut violations = Vec::new();
    let mut missed = |at,
                      hosts: &[&str],
                      event_id: &str,
                      token: &MultiWriterToken,
                      writer: &str,
                      stream_id: i64,
                      detail: &str| {
        let mut found = violation(
            "no_missed_event",
            at,
            hosts,
            &[event_id],
            &[token],
            format!("event {event_id} ({writer}@{stream_id}) {detail}"),
        );
        if let Some((finding, evidence)) = diagnose_f1(facts, writer, stream_id, at) {
            found.finding = Some(finding);
            found.message = format!("{}: {evidence}", found.message);
        }
        violations.push(found);
    };
    for record in facts.history.records() {
        match &record.event {
            Event::Started { host, token } => {
                started_at.insert(host, record.at);
                for writer in facts.by_writer.keys() {
                    let cursor = checked_upto.entry((host, writer)).or_insert(0);
                    *cursor = (*cursor).max(token.pos_for(writer));
                }
            }
            Event::Delivered {
                reader, event_id, ..
            } => {
                delivered.entry(reader).or_default().insert(event_id);
                owed.remove(&(reader.as_str(), event_id.as_str()));
            }
            Event::TokenHandedOut { reader, to, token } if to == NOTIFIER => {
                let seen = delivered.get(reader.as_str());
                for (writer, commits) in &facts.by_writer {
                    let cursor = checked_upto.entry((reader, writer)).or_insert(0);
                    let upto = token.pos_for(writer);
                    for (stream_id, event_id, committed_at) in in_range(commits, *cursor, upto) {
                        let hosts = [reader.as_str(), to.as_str(), writer];
                        if *committed_at > record.at {
                            missed(
                                record.at,
                                &hosts,
                                event_id,
                                token,
                                writer,
                                *stream_id,
                                &format!(
                                    "commits only after {reader} announced a token covering it"
                                ),
                            );
                        } else if !seen.is_some_and(|s| s.contains(event_id))
                            && started_at
                                .get(reader.as_str())
                                .is_none_or(|at| committed_at > at)
                        {
                            owed.entry((reader, event_id))
                                .or_insert((record.at, token, writer, *stream_id));
                        }
                    }
                    *cursor = (*cursor).max(upto);
                }
            }
            Event::SyncPage {
                client,
                reader,
                since,
                next_batch,
                events,
                ..
            } => {
                let low = since.clone().unwrap_or_default();
                let in_page: BTreeSet<&str> = events.iter().map(|(_, _, e)| e.as_str()).collect();
                returned.extend(in_page.iter().map(|e| (client.as_str(), *e)));
                for (writer, commits) in &facts.by_writer {
                    let range = in_range(commits, low.pos_for(writer), next_batch.pos_for(writer));
                    for (stream_id, event_id, committed_at) in range {
                        let hosts = [client.as_str(), reader.as_str(), writer];
                        if *committed_at > record.at {
                            missed(
                                record.at,
                                &hosts,
                                event_id,
                                next_batch,
                                writer,
                                *stream_id,
                                &format!(
                                    "commits only after {client}'s page up to a token covering it"
                                ),
                            );
                        } else if !in_page.contains(event_id) {
                            // Judged at the end: a later page may still return it.
                            client_owed
                                .entry((client, event_id))
                                .or_insert((record.at, next_batch, reader, writer, *stream_id));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    {
        for ((client, event_id), (at, token, reader, writer, stream_id)) in client_owed {
            if returned.contains(&(client, event_id)) {
                continue;
            }
            let mut found = violation(
                "no_missed_event",
                at,
                &[client, reader, writer],
                &[event_id],
                &[token],
                format!(
                    "event {event_id} ({writer}@{stream_id}) committed and was covered by {client}'s page up to {token} from {reader}, but no page ever returned it to {client}"
                ),
            );
            if let Some((finding, evidence)) =
                diagnose_client_miss(facts, context, reader, writer, stream_id, at)
            {
                found.finding = Some(finding);
                found.message = format!("{}: {evidence}", found.message);
            }
            violations.push(found);
        }
    }
    let mut unannounced = Vec::new();
    {
        for ((reader, event_id), (at, token, writer, stream_id)) in owed {
            let mut found = violation(
                "notifier_announces_every_event",
                at,
                &[reader, NOTIFIER, writer],
                &[event_id],
                &[token],
                format!(
                    "event {event_id} ({writer}@{stream_id}) was covered by a token {reader} announced, but {reader}'s notifier never announced the event itself"
                ),
            );
            if let Some((finding, evidence)) =
                diagnose_client_miss(facts, context, reader, writer, stream_id, at)
            {
                found.finding = Some(finding);
                found.message = format!("{}: {evidence}", found.message);
            }
            unannounced.push(found);
        }
    }
    violations.sort_by_key(|v| v.at);
    unannounced.sort_by_key(|v| v.at);
    (violations, unannounced)
}

/// Invariant 6, second half: background consumers (federation sender, pushers, application
/// services) follow a stream's *minimum* position (`get_current_token()`), so after the last
/// heal the minimum of each sync client's last token must reach the highest id committed
/// `converge_within` before the end. An idle writer that never announces its position (bug B4)
/// holds every minimum back.
fn minimum_converges(facts: &Facts, context: &CheckContext) -> Vec<Violation> {
    let Some(cutoff) = convergence_cutoff(facts, context) else {
        return Vec::new();
    };
    if context.configured_writer_down().is_some() {
        return Vec::new();
    }
    let Some(highest) = facts
        .by_writer
        .values()
        .flatten()
        .filter(|(_, _, at)| *at <= cutoff)
        .map(|(id, _, _)| *id)
        .max()
    else {
        return Vec::new();
    };
    let last_token = last_tokens(facts);
    let mut violations = Vec::new();
    for (client, reader) in &context.clients {
        if context.is_down(client) || context.is_down(reader) {
            continue;
        }
        let Some(token) = last_token.get(&(reader.as_str(), client.as_str())) else {
            continue;
        };
        if token.stream() < highest {
            violations.push(violation(
                "minimum_converges",
                context.ended_at,
                &[reader, client],
                &[],
                &[token],
                format!(
                    "{client}'s last token from {reader} has minimum {}, below {highest}, the highest id committed by {cutoff}; converge_within {}ms",
                    token.stream(),
                    context.converge_within_ms
                ),
            ));
        }
    }
    violations
}

/// Every event a reader's announced token covers is announced by its notifier too, except
/// the rows a restarted process read at start-up. Synapse 1.163.2 breaks it by findings F1-F4
/// (a row the reader never processed: its notifier never announces it and its change cache
/// never marks its room, so incremental /sync misses it too); each such miss is diagnosed
/// from the finding's exact shape (`diagnose_client_miss`), anything else is a failure.
fn notifier_announces_every_event(facts: &Facts, context: &CheckContext) -> Vec<Violation> {
    facts
        .missed_walk
        .get_or_init(|| missed_events(facts, context))
        .1
        .clone()
}

/// Finding F1 (tools/synapse/FINDINGS.md): an event of `writer` covered before it committed,
/// because another writer restarted while the event's id was allocated and not yet committed,
/// and took a position at or above it from the sequence. Only an event that *did* commit
/// after the cover qualifies; anything else stays an unexplained violation.
fn diagnose_f1(
    facts: &Facts,
    writer: &str,
    stream_id: i64,
    covered_at: SimInstant,
) -> Option<(&'static str, String)> {
    let allocated = *facts.allocated_at.get(&stream_id)?;
    let committed = facts
        .by_writer
        .get(writer)?
        .iter()
        .find(|(id, _, _)| *id == stream_id)?
        .2;
    if committed <= covered_at {
        return None;
    }
    facts.starts.iter().find_map(|(at, host, token)| {
        let claim = facts.claim_of(host, *at, token);
        (*host != writer && allocated <= *at && *at <= covered_at && claim >= stream_id).then(|| {
            (
                "F1",
                format!(
                    "F1: {host} started at {at} claiming position {claim} while {writer}@{stream_id} was allocated (at {allocated}) and not yet committed (at {committed})"
                ),
            )
        })
    })
}

/// Why a client of `reader` never got `writer`'s committed event `stream_id` although a token
/// it got covered the event (first at `covered_at`): the reader's `_events_stream_cache` never
/// marked the event's room, because the reader never processed the event's row. Each confirmed
/// finding (tools/synapse/FINDINGS.md, verified on real Synapse 1.163.2) is diagnosed from
/// its exact shape in the history, and the answer names the records that make it; anything
/// else is `None`, an unexplained failure.
///
/// - F3: the event's own writer announced `POSITION prev new` with `prev < id <= new` and
///   never sent the row's RDATA, and one of its sequence fetches was in flight when the row
///   committed (holding its own position back) or when the POSITION went out.
/// - F1: another writer (re)started, claiming a position at or above the id while the id was
///   allocated and not yet committed, and the reader then discarded the row's RDATA.
/// - F2: the reader reconnected (or re-subscribed to the bus) and afterwards, before the
///   cover, another writer announced a `POSITION` at or above the id, and the reader then
///   discarded the row's RDATA or never processed the row at all (the catch-up started above
///   it).
/// - F4 (Redis only): the reader re-subscribed after the writer had sent the row's RDATA,
///   another writer's `POSITION` connected the events stream, and the reader then applied a
///   later RDATA of the event's writer (before that writer's own `POSITION` answer), so the
///   row it missed while away was never fetched: "connected" is per stream, not per writer.
fn diagnose_client_miss(
    facts: &Facts,
    context: &CheckContext,
    reader: &str,
    writer: &str,
    stream_id: i64,
    covered_at: SimInstant,
) -> Option<(&'static str, String)> {
    diagnose_f3_shape(facts, writer, stream_id)
        .or_else(|| diagnose_f1_shape(facts, reader, writer, stream_id, covered_at))
        .or_else(|| diagnose_f2_shape(facts, reader, writer, stream_id, covered_at))
        .or_else(|| diagnose_f4_shape(facts, context, reader, writer, stream_id, covered_at))
}

fn diagnose_f3_shape(
    facts: &Facts,
    writer: &str,
    stream_id: i64,
) -> Option<(&'static str, String)> {
    if facts.rdata_sent.contains_key(&(writer, stream_id)) {
        return None;
    }
    let committed = facts.commit_of(writer, stream_id)?;
    facts.positions.iter().find_map(|(at, host, prev, new)| {
        if *host != writer || !(*prev < stream_id && stream_id <= *new) {
            return None;
        }
        // The row finished out of order, so the writer's own position stayed below it (the
        // row waits in `_finished_ids`) while `upto` passed it: a sequence fetch was in
        // flight when it committed or when the POSITION went out, or a lower id of the
        // writer's own was allocated and not yet committed when it committed.
        let held_back = match facts.fetches.iter().find(|(fetcher, requested, answered)| {
            *fetcher == writer
                && ((*requested <= committed && committed <= *answered)
                    || (requested <= at && at <= answered))
        }) {
            Some((_, requested, answered)) if *requested <= committed && committed <= *answered => {
                format!("{writer}'s sequence fetch was in flight from {requested} to {answered} (its sequence_fetched record), across the commit")
            }
            Some((_, requested, answered)) => format!(
                "{writer}'s sequence fetch was in flight from {requested} to {answered} (its sequence_fetched record), across the POSITION"
            ),
            None => match facts
                .unanswered_fetches
                .iter()
                .find(|(fetcher, nextval, down)| *fetcher == writer && nextval <= at && at < down)
            {
                Some((_, nextval, down)) => format!(
                    "{writer}'s sequence fetch was in flight across the POSITION (its nextval ran at {nextval}; {writer} went down at {down} before the answer)"
                ),
                None => {
                    let lower = facts
                        .allocated_by
                        .range(..stream_id)
                        .rev()
                        .find(|(id, by)| {
                            **by == writer
                                && facts.allocated_at.get(id).is_some_and(|a| *a <= committed)
                                && facts
                                    .commit_of(writer, **id)
                                    .is_none_or(|c| c > committed)
                        })?
                        .0;
                    format!("{writer}'s own lower id {lower} was still uncommitted then")
                }
            },
        };
        Some((
            "F3",
            format!(
                "F3: {writer}@{stream_id} committed at {committed}; {held_back}; {writer} announced POSITION {prev} {new} at {at} and never sent RDATA for {stream_id}"
            ),
        ))
    })
}

fn diagnose_f1_shape(
    facts: &Facts,
    reader: &str,
    writer: &str,
    stream_id: i64,
    covered_at: SimInstant,
) -> Option<(&'static str, String)> {
    let allocated = *facts.allocated_at.get(&stream_id)?;
    let committed = facts.commit_of(writer, stream_id)?;
    // In flight as the readers see it: allocated, and not yet committed or committed but
    // its RDATA not yet sent (the writer's stream position still held back below it).
    let announced = facts
        .rdata_sent
        .get(&(writer, stream_id))
        .copied()
        .unwrap_or(committed)
        .max(committed);
    let rdata = facts.rdata_sent.get(&(writer, stream_id)).map_or_else(
        || "its RDATA never sent".to_owned(),
        |at| format!("RDATA sent at {at}"),
    );
    facts.starts.iter().find_map(|(started, host, token)| {
        let claim = facts.claim_of(host, *started, token);
        if *host == writer || *started < allocated || claim < stream_id {
            return None;
        }
        // The claim came before the reader had the row: it discarded the row's RDATA when it
        // arrived. The RDATA may have been sent before the claim and reached the reader only
        // later (held by a partition of the writer from the bus: confirmed on real Synapse,
        // tests/data/system/f1_restart_claims_a_row_whose_rdata_is_held.jsonl).
        if let Some((discarded, ..)) = facts.discards.iter().find(|(at, r, w, t)| {
            *r == reader && *w == writer && *t == stream_id && at >= started
        }) {
            return Some((
                "F1",
                format!(
                    "F1: {host} started at {started} claiming position {claim} while {writer}@{stream_id} was allocated (at {allocated}) and not yet processed by {reader} (committed at {committed}, {rdata}); {reader} discarded its RDATA at {discarded}"
                ),
            ));
        }
        // The row's RDATA was never sent (its writer went down between the commit and the
        // send: generated seeds 809 and 883), so only a catch-up of that writer from below
        // the row could bring it, and every catch-up the reader made after the claim began at
        // or above it (or there was none: the writer's later POSITION was already reached):
        // `current_token_for_writer` is never below the `persisted_upto` the claim moved.
        let writer_went_down = facts
            .starts
            .iter()
            .any(|(at, h, _)| *h == writer && *at > committed);
        if writer_went_down
            && !facts.rdata_sent.contains_key(&(writer, stream_id))
            && *started <= covered_at
        {
            let catch_ups: Vec<_> = facts
                .gaps_filled
                .iter()
                .filter(|(at, r, w, ..)| *r == reader && *w == writer && at >= started)
                .collect();
            if catch_ups.iter().all(|(.., from, _)| *from >= stream_id) {
                let how = match catch_ups.first() {
                    Some((at, .., from, upto)) => format!(
                        "{reader}'s next catch-up of {writer}, at {at}, read ({from}, {upto}], above the row"
                    ),
                    None => format!("{reader} never caught up {writer} from below the row after it"),
                };
                return Some((
                    "F1",
                    format!(
                        "F1: {host} started at {started} claiming position {claim} while {writer}@{stream_id} was allocated (at {allocated}) and not yet processed by {reader} (committed at {committed}, {rdata}); {how}"
                    ),
                ));
            }
        }
        // The claim let the reader cover the row before it had processed it, and the reader
        // went down before the RDATA reached it (it would have discarded it, as above):
        // generated seed 218, r1 slow to read the bus, then crashed.
        if let Some(down) = reader_went_down_without_the_row(
            facts, reader, writer, stream_id, *started, covered_at,
        ) {
            return Some((
                "F1",
                format!(
                    "F1: {host} started at {started} claiming position {claim} while {writer}@{stream_id} was allocated (at {allocated}) and not yet processed by {reader} (committed at {committed}, {rdata}); {reader}'s token covered the row at {covered_at} and {reader} restarted at {down} without ever processing it"
                ),
            ));
        }
        if *started >= announced {
            return None;
        }
        // The claim reached the row's own writer too: its persisted_upto passed its own
        // uncommitted row, its next position update raised its own position over it, and it
        // announced POSITION over the row instead of sending its RDATA, which it then never
        // sent (confirmed on real Synapse: tests/data/system/
        // f1_writer_announces_position_over_its_held_row.jsonl).
        if facts.rdata_sent.contains_key(&(writer, stream_id)) {
            return None;
        }
        let over_its_row = match facts.positions.iter().find(|(at, w, prev, new)| {
            *w == writer && started <= at && *at < committed && *prev < stream_id && stream_id <= *new
        }) {
            Some((position_at, _, prev, new)) => {
                format!("announced POSITION {prev} {new} at {position_at}")
            }
            // Or its announcer's range passed the row as RDATA of its later rows, which had
            // committed (generated seed 1186: RDATA 3034 and 3036-3039 while 3035 was still
            // in its persist transaction).
            None => {
                let (later, sent) = facts
                    .rdata_sent
                    .range((writer, stream_id + 1)..=(writer, i64::MAX))
                    .map(|((_, id), at)| (*id, *at))
                    .find(|(_, at)| started <= at && *at < committed)?;
                format!("sent RDATA {later} at {sent}")
            }
        };
        Some((
            "F1",
            format!(
                "F1: {host} started at {started} claiming position {claim} while {writer}@{stream_id} was allocated (at {allocated}) and not yet committed (at {committed}); {writer} then {over_its_row}, over its own uncommitted row, and never sent its RDATA"
            ),
        ))
    })
}

/// After a claim at `claimed_at`, `reader`'s token covered `writer`'s row at `covered_at`
/// (the claim first), the reader had not processed the row by then, and the reader's next
/// start came after it with no delivery or discard of the row in between: when it restarted.
fn reader_went_down_without_the_row(
    facts: &Facts,
    reader: &str,
    writer: &str,
    stream_id: i64,
    claimed_at: SimInstant,
    covered_at: SimInstant,
) -> Option<SimInstant> {
    if claimed_at > covered_at {
        return None;
    }
    let event_id = facts.event_of(writer, stream_id)?;
    let restarted = facts
        .starts
        .iter()
        .find(|(at, host, _)| *host == reader && *at > covered_at)?
        .0;
    let processed = facts
        .deliveries
        .get(&(reader, event_id))
        .is_some_and(|times| times.iter().any(|at| *at < restarted));
    let discarded = facts
        .discards
        .iter()
        .chain(&facts.unconnected_discards)
        .any(|(at, r, w, t)| *r == reader && *w == writer && *t == stream_id && *at < restarted);
    (!processed && !discarded).then_some(restarted)
}

fn diagnose_f4_shape(
    facts: &Facts,
    context: &CheckContext,
    reader: &str,
    writer: &str,
    stream_id: i64,
    covered_at: SimInstant,
) -> Option<(&'static str, String)> {
    if context.transport != crate::scenario::Transport::Redis {
        return None;
    }
    let event_id = facts.event_of(writer, stream_id)?;
    if facts.deliveries.contains_key(&(reader, event_id)) {
        return None;
    }
    let subscribed = subscriptions(facts, reader, covered_at);
    // The latest subscription first: the one the row was missed under.
    subscribed.iter().enumerate().rev().find_map(|(index, &subscribed_at)| {
            let next_subscription = subscribed.get(index + 1).copied();
            // The reader missed the row: its RDATA went out before this subscription (while
            // the reader was off the bus), or arrived before the stream was connected.
            let discarded = facts.unconnected_discards.iter().find(|(at, r, w, t)| {
                *r == reader
                    && *w == writer
                    && *t == stream_id
                    && *at >= subscribed_at
                    && next_subscription.is_none_or(|next| *at < next)
            });
            let missed = match discarded {
                Some((at, ..)) => {
                    format!("discarded RDATA {stream_id} at {at} (stream not connected)")
                }
                None => match facts.rdata_sent.get(&(writer, stream_id)) {
                    Some(sent) => {
                        (*sent <= subscribed_at).then_some(())?;
                        format!("was off the bus when {writer} sent RDATA {stream_id} at {sent}")
                    }
                    // No RDATA ever went out for the row (the writer committed it before it
                    // was on the bus itself): its only announcement was a POSITION over it,
                    // sent before this subscription (generated seed 473).
                    None => {
                        let committed = facts.commit_of(writer, stream_id)?;
                        let (sent, _, prev, new) = facts.positions.iter().find(|(at, w, _, new)| {
                            *w == writer && *at >= committed && *new >= stream_id
                        })?;
                        (*sent <= subscribed_at).then_some(())?;
                        format!(
                            "was not on the bus when {writer} announced POSITION {prev} {new} at {sent}, over its row {stream_id}, whose RDATA it never sent"
                        )
                    }
                },
            };
            // The writer's later row, applied from RDATA after the subscription, with no
            // catch-up of that writer over the row in between (its POSITION answer had not
            // been processed).
            let (applied_at, later) = facts.rdata_applied.iter().find_map(|(at, r, w, id)| {
                (*r == reader && *w == writer && *id > stream_id && *at >= subscribed_at && *at <= covered_at)
                    .then_some((*at, *id))
            })?;
            if facts.gaps_filled.iter().any(|(at, r, w, from, upto)| {
                *r == reader && *w == writer && *at >= subscribed_at && *at <= applied_at && *from < stream_id && stream_id <= *upto
            }) {
                return None;
            }
            // The first POSITION the reader processed on this connection connected the
            // stream, and it was another writer's. (It may have been sent long before, held
            // on its way by a partition: what counts is when the reader processed it.)
            let (connected_at, _, other, prev, new) = facts.connections.iter().find(|(at, r, ..)| {
                *r == reader && *at >= subscribed_at && *at <= applied_at
            })?;
            if *other == writer {
                return None;
            }
            let sent = facts
                .positions
                .iter()
                .rfind(|(at, w, p, n)| w == other && p == prev && n == new && at <= connected_at)
                .map_or(String::new(), |(at, ..)| format!(", sent at {at}"));
            Some((
                "F4",
                format!(
                    "F4: {reader} sent REPLICATE at {subscribed_at} and {missed}; {other}'s POSITION {prev} {new} (processed at {connected_at}{sent}) connected the stream, and {reader} applied {writer}'s RDATA {later} at {applied_at} before {writer}'s own POSITION, so {stream_id} was never fetched"
                ),
            ))
        })
}

fn diagnose_f2_shape(
    facts: &Facts,
    reader: &str,
    writer: &str,
    stream_id: i64,
    covered_at: SimInstant,
) -> Option<(&'static str, String)> {
    let event_id = facts.event_of(writer, stream_id)?;
    subscriptions(facts, reader, covered_at)
        .into_iter()
        .rev()
        .find_map(|subscribed_at| {
            // The writers answer the reader's REPLICATE; another writer's answer at or above
            // the row came before the row's writer's own.
            // (History order, not time: answers can go out in the same millisecond.)
            let own_answer = facts
                .positions
                .iter()
                .position(|(at, w, _, _)| *w == writer && *at >= subscribed_at)
                .unwrap_or(facts.positions.len());
            let passing = |(at, other, _, new): &&(SimInstant, &str, i64, i64)| {
                *other != writer && *at >= subscribed_at && *at <= covered_at && *new >= stream_id
            };
            // Or the answers crossed on the way: the writer's own answer went out first but
            // the reader processed the other one first, so its catch-up of the writer began
            // at or above the row (generated seed 824: w2's POSITION 723 723 sent 5 ms before
            // w1's 719 721, both processed in the same millisecond, w1's first).
            let catch_up_above = || {
                let (caught_up_at, _, _, from, _) =
                    facts.gaps_filled.iter().find(|(at, r, w, from, _)| {
                        *r == reader && *w == writer && *at >= subscribed_at && *from >= stream_id
                    })?;
                facts
                    .positions
                    .iter()
                    .find(|p| passing(p) && p.0 <= *caught_up_at)
                    .map(|p| (p, *caught_up_at, *from))
            };
            let ((passed, other, prev, new), order) =
                match facts.positions[..own_answer].iter().find(passing) {
                    Some(position) => (position, format!("came before {writer}'s own answer")),
                    None => {
                        let (position, caught_up_at, from) = catch_up_above()?;
                        (
                            position,
                            format!(
                                "was processed before {writer}'s own answer ({reader}'s catch-up of {writer} at {caught_up_at} read from {from})"
                            ),
                        )
                    }
                };
            // The reader did not have the row: its RDATA went out before this subscription,
            // or the reader discarded it afterwards (not connected yet, or already seen once
            // the other writer's POSITION had passed it), and never processed it since.
            if facts
                .deliveries
                .get(&(reader, event_id))
                .is_some_and(|times| times.iter().any(|at| *at >= subscribed_at))
            {
                return None;
            }
            let discarded = facts
                .discards
                .iter()
                .chain(&facts.unconnected_discards)
                .find(|(at, r, w, t)| {
                    *r == reader && *w == writer && *t == stream_id && *at >= subscribed_at
                });
            let missed = match discarded {
                Some((at, ..)) => format!("discarded its RDATA at {at}"),
                None => {
                    let sent = *facts.rdata_sent.get(&(writer, stream_id))?;
                    (sent <= subscribed_at).then_some(())?;
                    format!("was off the bus when {writer} sent its RDATA at {sent}")
                }
            };
            Some((
                "F2",
                format!(
                    "F2: {reader} sent REPLICATE at {subscribed_at}; {other}'s POSITION {prev} {new} (sent at {passed}) {order} and passed {writer}@{stream_id}; {reader} {missed} and never fetched it"
                ),
            ))
        })
}

/// Each time `reader` (re)subscribed up to `until`, oldest first: when it sent `REPLICATE`
/// (at start-up, and after every lost connection or subscription), from which on it receives
/// what the writers publish and they answer with their positions.
fn subscriptions(facts: &Facts, reader: &str, until: SimInstant) -> Vec<SimInstant> {
    facts
        .replicates
        .iter()
        .filter(|(at, host)| *host == reader && *at <= until)
        .map(|(at, _)| *at)
        .collect()
}

/// A notifier announces each writer's events in that writer's order: never an event that a
/// token it announced earlier (in this incarnation) already covered. Replication hands a
/// reader each writer's rows in id order (one FIFO per stream), discards RDATA at or below
/// the writer's current token (never below the minimum), and catches up only above it, so an
/// event arriving behind a token already announced means rows were applied out of order or
/// twice (bugs B14, B15), and listeners woken with that token never see it.
fn notifier_in_order(facts: &Facts, _: &CheckContext) -> Vec<Violation> {
    let mut announced: BTreeMap<&str, MultiWriterToken> = BTreeMap::new();
    let mut violations = Vec::new();
    for record in facts.history.records() {
        match &record.event {
            Event::Started { host, .. } => {
                announced.remove(host.as_str());
            }
            Event::Delivered {
                reader,
                writer,
                stream_id,
                event_id,
                caught_up,
            } => {
                let Some(token) = announced.get(reader.as_str()) else {
                    continue;
                };
                // A catch-up's rows may land after the minimum passed them (its read began
                // below it while other writers' commands went on), so only the writer's own
                // position judges them; RDATA is applied only above the writer's token, which
                // is never below the minimum.
                let covered = if *caught_up {
                    token
                        .instance_map()
                        .get(writer)
                        .is_some_and(|pos| pos >= stream_id)
                } else {
                    token.pos_for(writer) >= *stream_id
                };
                if covered {
                    violations.push(violation(
                        "notifier_in_order",
                        record.at,
                        &[reader, NOTIFIER, writer],
                        &[event_id],
                        &[token],
                        format!(
                            "{reader}'s notifier announced {event_id} ({writer}@{stream_id}) after announcing {token}, which already had {writer} past it"
                        ),
                    ));
                }
            }
            Event::TokenHandedOut { reader, to, token } if to == NOTIFIER => {
                let joined = announced
                    .get(reader.as_str())
                    .map_or_else(|| token.clone(), |before| before.max(token));
                announced.insert(reader, joined);
            }
            _ => {}
        }
    }
    violations
}

/// A send the serving process knows was persisted is never answered with an error: the client
/// would send it again (bug B12's lost waiter).
fn sends_answered(facts: &Facts, _: &CheckContext) -> Vec<Violation> {
    facts
        .history
        .records()
        .filter_map(|record| match &record.event {
            Event::SendAnswered {
                client,
                host,
                event_id,
                persisted_at: Some((writer, stream_id)),
                outcome,
            } if outcome.starts_with("error") => Some(violation(
                "sends_answered",
                record.at,
                &[client, host, writer],
                &[event_id],
                &[],
                format!(
                    "{host} answered {client}'s send of {event_id} with \"{outcome}\" although it was persisted at {writer}@{stream_id}"
                ),
            )),
            _ => None,
        })
        .collect()
}

/// Read your writes: after a send through a process that waited until it could read the
/// event (`wait_for_stream_position` reached it), the client's next /sync there holds the
/// event, unless that page was cut by the timeline limit or the wait for its `since` gave up,
/// or the process restarted in between. Sends persisted locally are not judged: Synapse does
/// not wait for its own earlier ids there.
fn read_your_writes(facts: &Facts, context: &CheckContext) -> Vec<Violation> {
    struct Pending<'a> {
        answered_at: SimInstant,
        host: &'a str,
        event_id: &'a str,
        writer: &'a str,
        stream_id: i64,
    }
    let mut seen: BTreeSet<(&str, &str)> = BTreeSet::new();
    let mut pending: BTreeMap<&str, Vec<Pending>> = BTreeMap::new();
    // Clients whose next page starts from a token from the future: it is not judged.
    let mut from_the_future: BTreeSet<&str> = BTreeSet::new();
    // The `next_batch` of each client's last page from a token from the future: what it
    // covers, the client skipped by its own bogus token, so a later send's row below it is
    // not the process's to show.
    let mut skipped_by_future: BTreeMap<&str, &MultiWriterToken> = BTreeMap::new();
    let mut violations = Vec::new();
    for record in facts.history.records() {
        match &record.event {
            Event::SendAnswered {
                client,
                host,
                event_id,
                persisted_at: Some((writer, stream_id)),
                outcome,
            } if outcome == "reached" => pending.entry(client).or_default().push(Pending {
                answered_at: record.at,
                host,
                event_id,
                writer,
                stream_id: *stream_id,
            }),
            Event::Started { host, .. } | Event::Restarted { host, .. } => {
                for sends in pending.values_mut() {
                    sends.retain(|send| send.host != host);
                }
            }
            Event::FutureToken { client, .. } => {
                from_the_future.insert(client);
            }
            Event::SyncPage {
                client,
                reader,
                requested_at,
                events,
                limited,
                timed_out,
                next_batch,
                ..
            } => {
                seen.extend(events.iter().map(|(_, _, e)| (client.as_str(), e.as_str())));
                if from_the_future.remove(client.as_str()) {
                    pending.remove(client.as_str());
                    skipped_by_future.insert(client, next_batch);
                    continue;
                }
                let Some(sends) = pending.get_mut(client.as_str()) else {
                    continue;
                };
                let (due, later): (Vec<Pending>, Vec<Pending>) = std::mem::take(sends)
                    .into_iter()
                    .partition(|send| send.answered_at <= *requested_at && send.host == reader);
                *sends = later;
                if *limited || *timed_out {
                    continue;
                }
                for send in due {
                    let skipped = skipped_by_future
                        .get(client.as_str())
                        .is_some_and(|token| token.pos_for(send.writer) >= send.stream_id);
                    if !skipped && !seen.contains(&(client.as_str(), send.event_id)) {
                        let mut found = violation(
                            "read_your_writes",
                            record.at,
                            &[client, reader, send.writer],
                            &[send.event_id],
                            &[],
                            format!(
                                "{reader} answered {client}'s send of {} ({}@{}) at {} as readable, but {client}'s next /sync there did not hold it",
                                send.event_id, send.writer, send.stream_id, send.answered_at
                            ),
                        );
                        // The event's own row (the send waited on its batch's highest id).
                        let diagnosis = facts.commits.get(send.event_id).and_then(|commit| {
                            diagnose_client_miss(
                                facts,
                                context,
                                reader,
                                commit.writer,
                                commit.stream_id,
                                record.at,
                            )
                        });
                        if let Some((finding, evidence)) = diagnosis {
                            found.finding = Some(finding);
                            found.message = format!("{}: {evidence}", found.message);
                        }
                        violations.push(found);
                    }
                }
            }
            _ => {}
        }
    }
    violations
}

/// Invariant 6 for /sync itself: a /sync does not give up waiting for its `since` token once
/// the system has had `converge_within` to catch up with it (a token from the future is
/// bounded by the sequence, the fix of bug B8). A timed-out answer is a violation when it was
/// asked after the run converged (`converge_within` before the end, faults healed), or when
/// its last check came `converge_within` (plus one 500 ms re-check) after both the client got
/// `since` and the last fault healed: every reader must by then cover what any reader handed
/// out (bug B7: a restarted writer and reader stay below a token a client holds).
fn sync_answers(facts: &Facts, context: &CheckContext) -> Vec<Violation> {
    let cutoff = convergence_cutoff(facts, context);
    // When the last disturbance ended: an instant fault, or a heal of a lasting one.
    let mut settled_ms = 0;
    let mut lasting_active = context.network_loss;
    // Each client's current token and when it first got it.
    let mut held_since: BTreeMap<&str, (&MultiWriterToken, SimInstant)> = BTreeMap::new();
    let mut violations = Vec::new();
    for record in facts.history.records() {
        match &record.event {
            Event::Fault { description } => {
                if crate::faults::described_fault_lasts_until_heal(description) {
                    lasting_active = true;
                } else if *description != crate::faults::describe(&FaultKind::Heal {}) {
                    settled_ms = record.at.as_ms();
                }
            }
            Event::Healed if lasting_active => {
                settled_ms = record.at.as_ms();
                lasting_active = false;
            }
            Event::TokenHandedOut { to, token, .. } => {
                held_since
                    .entry(to.as_str())
                    .and_modify(|(held, at)| {
                        if *held != token {
                            (*held, *at) = (token, record.at);
                        }
                    })
                    .or_insert((token, record.at));
            }
            Event::SyncPage {
                client,
                reader,
                requested_at,
                since: Some(since),
                timed_out: true,
                ..
            } => {
                let got_since = held_since
                    .get(client.as_str())
                    .filter(|(held, _)| *held == since)
                    .map_or(*requested_at, |(_, at)| *at);
                let due_ms = got_since.as_ms().max(settled_ms)
                    + context.converge_within_ms
                    + SYNC_RECHECK_MS;
                if context.started_without_a_down_writer(reader)
                    && context
                        .last_started
                        .get(reader.as_str())
                        .is_some_and(|s| s <= requested_at)
                {
                    continue;
                }
                let after_convergence = cutoff.is_some_and(|cutoff| *requested_at >= cutoff);
                if after_convergence || (!lasting_active && record.at.as_ms() >= due_ms) {
                    violations.push(violation(
                        "sync_answers",
                        record.at,
                        &[client, reader],
                        &[],
                        &[since],
                        format!(
                            "{reader} gave up on {client}'s /sync since {since} (asked at {requested_at}; {client} has held that token since {got_since}, and every reader should cover it within converge_within {}ms of that or of the last fault)",
                            context.converge_within_ms
                        ),
                    ));
                }
            }
            _ => {}
        }
    }
    violations
}

/// The commits of one writer with `from < stream id <= upto` (commits sorted by id).
fn in_range<'c, 'a>(
    commits: &'c [(i64, &'a str, SimInstant)],
    from: i64,
    upto: i64,
) -> &'c [(i64, &'a str, SimInstant)] {
    if upto <= from {
        return &[];
    }
    let start = commits.partition_point(|(id, _, _)| *id <= from);
    let end = commits.partition_point(|(id, _, _)| *id <= upto);
    &commits[start..end]
}

/// Invariant 3: Nothing is delivered before it commits; aborted ids never.
fn no_early_or_phantom_event(facts: &Facts, _: &CheckContext) -> Vec<Violation> {
    let mut violations = Vec::new();
    for record in facts.history.records() {
        let deliveries: Vec<(&str, &str, i64, &str)> = match &record.event {
            Event::Delivered {
                reader,
                writer,
                stream_id,
                event_id,
                ..
            } => vec![(reader, writer, *stream_id, event_id)],
            Event::SyncPage { client, events, .. } => events
                .iter()
                .map(|(writer, id, event_id)| {
                    (client.as_str(), writer.as_str(), *id, event_id.as_str())
                })
                .collect(),
            _ => continue,
        };
        for (reader, writer, stream_id, event_id) in deliveries {
            let stream_id = &stream_id;
            let message = match facts.commits.get(event_id) {
                _ if facts.aborted.contains(&(writer.to_owned(), *stream_id)) => Some(format!(
                    "{reader} delivered aborted id {writer}@{stream_id}"
                )),
                None => Some(format!(
                    "{reader} delivered {event_id}, which never committed"
                )),
                Some(commit) if commit.at > record.at => {
                    Some(format!("{reader} delivered {event_id} before it committed"))
                }
                Some(_) => None,
            };
            if let Some(message) = message {
                violations.push(violation(
                    "no_early_or_phantom_event",
                    record.at,
                    &[reader, writer],
                    &[event_id],
                    &[],
                    message,
                ));
            }
        }
    }
    violations
}

/// Invariant 4: Each event reaches each reader's notifier, and each sync client's stream, at most once.
fn no_duplicate(facts: &Facts, _: &CheckContext) -> Vec<Violation> {
    // Per owner, the events it received: a restart drops one owner's set whole.
    let mut seen: FxHashMap<&str, FxHashSet<&str>> = FxHashMap::default();
    let mut violations = Vec::new();
    for record in facts.history.records() {
        match &record.event {
            // A restarted reader has a new notifier, which announces afresh everything above
            // its start token, as Synapse's does: once per notifier, not per host. (A sync
            // client's pages are judged across the reader's restarts.)
            Event::Started { host, .. } => {
                seen.remove(host.as_str());
            }
            Event::Delivered {
                reader, event_id, ..
            } => receive(&mut seen, &mut violations, reader, event_id, record.at),
            Event::SyncPage { client, events, .. } => {
                for (_, _, event_id) in events {
                    receive(&mut seen, &mut violations, client, event_id, record.at);
                }
            }
            _ => {}
        }
    }
    violations
}

/// `no_duplicate`'s step: `owner` received `event_id` at `at`.
fn receive<'a>(
    seen: &mut FxHashMap<&'a str, FxHashSet<&'a str>>,
    violations: &mut Vec<Violation>,
    owner: &'a str,
    event_id: &'a str,
    at: SimInstant,
) {
    if !seen.entry(owner).or_default().insert(event_id) {
        violations.push(violation(
            "no_duplicate",
            at,
            &[owner],
            &[event_id],
            &[],
            format!("{owner} received {event_id} twice"),
        ));
    }
}

/// Invariant 5: No stream id is allocated twice, by any writer.
fn unique_ids(facts: &Facts, _: &CheckContext) -> Vec<Violation> {
    let mut owners: BTreeMap<i64, &str> = BTreeMap::new();
    let mut violations = Vec::new();
    for record in facts.history.records() {
        if let Event::Allocated { host, ids } = &record.event {
            for id in ids {
                if let Some(first) = owners.insert(*id, host) {
                    violations.push(violation(
                        "unique_ids",
                        record.at,
                        &[first, host],
                        &[],
                        &[],
                        format!("stream id {id} allocated by {first} and again by {host}"),
                    ));
                }
            }
        }
    }
    violations
}

/// The highest position `writer` ever put on a wire (an RDATA token or a POSITION's new
/// position).
fn announced_upto(facts: &Facts, writer: &str) -> i64 {
    let rdata = facts
        .rdata_sent
        .keys()
        .filter(|(host, _)| *host == writer)
        .map(|(_, token)| *token);
    let positions = facts
        .positions
        .iter()
        .filter(|(_, host, _, _)| *host == writer)
        .map(|(_, _, _, new)| *new);
    rdata.chain(positions).max().unwrap_or(0)
}

/// The end of the workload phase, from which convergence is judged: `converge_within` before
/// the end of the run. `None` (inconclusive) when the run did not last that long past the last
/// heal.
fn convergence_cutoff(facts: &Facts, context: &CheckContext) -> Option<SimInstant> {
    let cutoff = context
        .ended_at
        .as_ms()
        .checked_sub(context.converge_within_ms)
        .map(SimInstant::from_ms)?;
    facts
        .last_heal
        .is_none_or(|healed| healed <= cutoff)
        .then_some(cutoff)
}

/// The last token each (reader, recipient) got. A restarted process's notifier starts at its
/// generator's token: what it covers from then on begins there, whatever the previous
/// incarnation announced.
fn last_tokens<'a>(facts: &Facts<'a>) -> BTreeMap<(&'a str, &'a str), &'a MultiWriterToken> {
    let mut last_token = BTreeMap::new();
    for record in facts.history.records() {
        match &record.event {
            Event::TokenHandedOut { reader, to, token } => {
                last_token.insert((reader.as_str(), to.as_str()), token);
            }
            Event::Started { host, token } => {
                last_token.insert((host.as_str(), NOTIFIER), token);
            }
            _ => {}
        }
    }
    last_token
}

/// Invariant 6: After the last fault heals, everyone converges: each reader's last announced
/// token, and each sync client's last `next_batch`, covers every event committed at least
/// `converge_within` before the end of the run. Inconclusive (no violation) when the run did
/// not last `converge_within` past the last heal.
fn liveness(facts: &Facts, context: &CheckContext) -> Vec<Violation> {
    let Some(cutoff) = convergence_cutoff(facts, context) else {
        return Vec::new();
    };
    let last_token = last_tokens(facts);
    let recipients = context
        .readers
        .iter()
        .map(|reader| (reader.as_str(), NOTIFIER))
        .chain(
            context
                .clients
                .iter()
                .map(|(c, r)| (r.as_str(), c.as_str())),
        );
    let start = MultiWriterToken::default();
    let last_start: BTreeMap<&str, SimInstant> = facts
        .starts
        .iter()
        .map(|(at, host, _)| (*host, *at))
        .collect();
    let down_writers_announced: BTreeMap<&str, i64> = context
        .down_at_end
        .keys()
        .map(|host| (host.as_str(), announced_upto(facts, host)))
        .collect();
    let mut violations = Vec::new();
    for (reader, to) in recipients {
        if context.is_down(reader) || context.is_down(to) {
            continue;
        }
        if to != NOTIFIER && context.started_without_a_down_writer(reader) {
            continue;
        }
        let token = last_token.get(&(reader, to)).copied().unwrap_or(&start);
        let behind: Vec<&str> = facts
            .commits
            .iter()
            .filter(|(_, c)| c.at <= cutoff && c.stream_id > token.pos_for(c.writer))
            // A writer down at the end never tells anyone of rows it had not announced.
            .filter(|(_, c)| {
                down_writers_announced
                    .get(c.writer)
                    .is_none_or(|upto| c.stream_id <= *upto)
            })
            // A notifier never announces the rows its process read at start-up (as in
            // `notifier_announces_every_event`): they are its clients' from the database,
            // which the clients' own tokens are judged on.
            .filter(|(_, c)| {
                to != NOTIFIER || last_start.get(reader).is_none_or(|started| c.at > *started)
            })
            .map(|(event_id, _)| *event_id)
            .collect();
        if let Some(first) = behind.first() {
            // A notifier stays behind events its process's position passed without
            // announcing them until something newer is released: known only when every such
            // event is a diagnosed loss of this reader (a finding's exact shape) that its
            // position passed, as a token it handed a client or its position at the end
            // shows (a reader serving no client has only the latter: generated seed 616).
            let diagnoses: Option<Vec<(&'static str, String)>> = (to == NOTIFIER)
                .then(|| {
                    behind
                        .iter()
                        .map(|event_id| {
                            let commit = &facts.commits[*event_id];
                            let covers = |token: &MultiWriterToken| {
                                token.pos_for(commit.writer) >= commit.stream_id
                            };
                            let covered = last_token.iter().any(|((r, recipient), token)| {
                                *r == reader && *recipient != NOTIFIER && covers(token)
                            }) || facts
                                .positions_at_end
                                .get(reader)
                                .is_some_and(|token| covers(token));
                            covered.then_some(())?;
                            diagnose_client_miss(
                                facts,
                                context,
                                reader,
                                commit.writer,
                                commit.stream_id,
                                context.ended_at,
                            )
                        })
                        .collect()
                })
                .flatten();
            let whose = if to == NOTIFIER {
                format!("{reader}'s notifier")
            } else {
                format!("{to} (through {reader})")
            };
            violations.push(violation(
                "liveness",
                context.ended_at,
                &[reader, to],
                &behind[..behind.len().min(5)],
                &[token],
                format!(
                    "{whose} ended at {token}: {} committed by {cutoff} {} not covered (first {first}); converge_within {}ms",
                    match behind.len() {
                        1 => "1 event".to_owned(),
                        n => format!("{n} events"),
                    },
                    if behind.len() == 1 { "is" } else { "are" },
                    context.converge_within_ms
                ),
            ));
            if let Some(first) = diagnoses.as_ref().and_then(|d| d.first()) {
                let found = violations.last_mut().expect("just pushed");
                found.finding = Some(first.0);
                found.message = format!(
                    "{}: every one a diagnosed loss, first {}",
                    found.message, first.1
                );
            }
        }
    }
    violations
}

pub mod online;

#[cfg(test)]
mod tests;

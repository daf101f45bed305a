//! The world: from a scenario and a seed, an [`Engine`] with a `db` host, an optional `redis`
//! host, the metrics hosts, writer hosts, reader hosts and sync-client hosts, a drive loop that
//! applies the fault schedule at its times, and every observable act recorded in one
//! [`History`].
//!
//! Hosts are async tasks on the engine's single thread, so what they share with the driver lives
//! in [`Shared`] behind `Rc`/`RefCell`: the run's configuration and the writers config a
//! (re)starting process reads, what the faults in force make hosts sense (slowness, one-way
//! cuts, ...), and data that lives outside any host as the database's does (the metrics
//! store's and endpoint's). What the world records about hosts and never lets them read
//! back is apart, in [`observer::Observer`]. None of it is host memory: a crash loses only
//! what hosts keep in their own tasks.

mod bus;
mod client;
mod db;
mod federation;
mod follow;
pub mod instruments;
mod link;
pub mod metrics;
pub mod observer;
mod persist;
pub(crate) mod process;
mod process_metrics;
mod reader;
mod redis;
mod send;
mod shared;
mod sync;
mod writer;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use streamsim_models::bugs::Bugs;
use streamsim_models::fixes::Fixes;
use streamsim_models::time::SimInstant;

use streamsim_models::metrics::node::increments;

pub use crate::history::RecordSink;
pub use observer::Recording;
pub use shared::Shared;

/// The homeserver name every process shares (the SERVER greeting carries it).
pub const HOMESERVER_NAME: &str = "streamsim.test";

use crate::aggregation::{self, IncarnationOutcome, MetricsOutcome};
use crate::engine::{Control, Engine};
use crate::faults;
use crate::history::{Event, History};
use crate::scenario::{
    FaultKind, Range, Scenario, Transport, METRICS_ENDPOINT_HOST, METRICS_STORE_HOST,
};

/// What one simulated run produced.
#[derive(Debug)]
pub struct RunOutcome {
    pub history: History,
    /// Simulated time at the end of the run.
    pub ended_at: SimInstant,
    /// Replication commands put on a wire.
    pub messages: u64,
    /// A host's software failed (a model assertion, a panic): the run stopped there.
    pub host_failure: Option<String>,
    /// What the metrics system did.
    pub metrics: MetricsOutcome,
    /// Hosts down when the run ended (crashed and never restarted, or late and never
    /// started), with when they went down.
    pub down_at_end: BTreeMap<String, SimInstant>,
    /// The writers config when the run ended (after any `reconfigure`).
    pub writers_at_end: Vec<String>,
}

/// Runs `scenario` with `seed` (and the models' historical-bug switches `bugs`): the workload
/// for `duration_ms`, then `converge_within_ms` with every fault repaired.
pub fn simulate(scenario: &Scenario, seed: u64, bugs: Bugs) -> RunOutcome {
    simulate_with_fixes(scenario, seed, bugs, Fixes::NONE)
}

/// [`simulate`] with the proposed fixes `fixes` on in every process's models.
pub fn simulate_with_fixes(scenario: &Scenario, seed: u64, bugs: Bugs, fixes: Fixes) -> RunOutcome {
    simulate_recorded(scenario, seed, bugs, fixes, Recording::default())
}

/// [`simulate_with_fixes`], its records going where `recording` says (without the history
/// kept, the outcome's history is empty).
pub fn simulate_recorded(
    scenario: &Scenario,
    seed: u64,
    bugs: Bugs,
    fixes: Fixes,
    recording: Recording,
) -> RunOutcome {
    let shared = Rc::new(Shared::new(scenario.clone(), seed, bugs, fixes));
    shared
        .observer
        .set_recording(recording, SimInstant::from_ms(scenario.duration_ms));
    let total_ms = scenario.duration_ms + scenario.converge_within_ms;
    let latency = scenario.network.latency_ms;
    let mut engine = Engine::new(seed, (latency.min, latency.max));
    let database = Rc::new(RefCell::new(db::DbServer::new(&shared)));
    {
        let shared = shared.clone();
        engine.host("db", move || db::serve(shared.clone(), database.clone()));
    }
    if scenario.transport == Transport::Redis {
        let cuts = shared.cuts.clone();
        engine.host("redis", move || redis::serve(cuts.clone()));
    }
    {
        let shared_store = shared.clone();
        engine.host(METRICS_STORE_HOST, move || {
            metrics::serve_store(shared_store.clone())
        });
        let shared_endpoint = shared.clone();
        engine.host(METRICS_ENDPOINT_HOST, move || {
            metrics::serve_endpoint(shared_endpoint.clone())
        });
    }
    for name in scenario.writer_names() {
        let shared = shared.clone();
        let host = name.clone();
        engine.host(host.as_str(), move || {
            writer::run(shared.clone(), name.clone())
        });
    }
    for name in scenario.reader_names() {
        let shared = shared.clone();
        let host = name.clone();
        engine.host(host.as_str(), move || {
            reader::run(shared.clone(), name.clone())
        });
    }
    for (name, reader) in scenario.clients() {
        let shared = shared.clone();
        let host = name.clone();
        engine.host(host.as_str(), move || {
            client::run(shared.clone(), name.clone(), reader.clone())
        });
    }
    let late = &scenario.topology.late_hosts;
    let down_since: BTreeMap<String, SimInstant> = late
        .iter()
        .map(|host| (host.clone(), SimInstant::ZERO))
        .collect();
    let schedule = faults::schedule(scenario, seed);
    let driver = Rc::new(RefCell::new(Driver {
        shared: shared.clone(),
        partitions: BTreeSet::new(),
        down_since,
    }));
    let drive = {
        let driver = driver.clone();
        let duration = SimInstant::from_ms(scenario.duration_ms);
        move |control: Control| async move {
            driver
                .borrow()
                .set_loss(&control, scenario.network.message_loss);
            let mut healed = false;
            for fault in schedule.iter().filter(|f| f.at_ms <= total_ms) {
                let at = SimInstant::from_ms(fault.at_ms);
                // Faults of the workload's last millisecond still act before the heal.
                if !healed && at > duration {
                    control.sleep_until(duration).await;
                    driver.borrow_mut().heal_all(&control);
                    healed = true;
                }
                control.sleep_until(at).await;
                driver.borrow_mut().apply(&control, &fault.kind);
            }
            if !healed {
                control.sleep_until(duration).await;
                driver.borrow_mut().heal_all(&control);
            }
            control.sleep_until(SimInstant::from_ms(total_ms)).await;
            // Before the engine stops the hosts: their processes are still there to read.
            let shared = driver.borrow().shared.clone();
            shared
                .observer
                .record_reader_positions(SimInstant::from_ms(total_ms));
        }
    };
    let host_failure = engine.run(late, drive);
    let ended_at = engine.ended_at();
    let running: BTreeSet<String> = scenario
        .hosts()
        .into_iter()
        .filter(|host| engine.was_running(host))
        .collect();
    drop(engine);
    let observed = shared.observer.finish();
    let metrics = metrics_outcome(&shared, observed.metrics, &running);
    let down_at_end = std::mem::take(&mut driver.borrow_mut().down_since)
        .into_iter()
        .filter(|(host, _)| !running.contains(host))
        .collect();
    let writers_at_end = shared.writers.borrow().clone();
    RunOutcome {
        history: observed.history,
        ended_at,
        messages: observed.messages,
        host_failure,
        metrics,
        down_at_end,
        writers_at_end,
    }
}

/// What the metrics system did, read off the observer's bookkeeping once the run is over.
fn metrics_outcome(
    shared: &Shared,
    observed: observer::ObservedMetrics,
    running: &BTreeSet<String>,
) -> MetricsOutcome {
    let store = shared.metrics_store.borrow();
    let incarnations = &observed.incarnations;
    let latest: BTreeMap<&str, u32> =
        incarnations
            .iter()
            .fold(BTreeMap::new(), |mut latest, watched| {
                let entry = latest.entry(watched.node.as_str()).or_insert(0);
                *entry = (*entry).max(watched.incarnation);
                latest
            });
    let applied = &observed.applied_by_incarnation;
    let network = &shared.scenario.network;
    MetricsOutcome {
        flush_interval_ms: shared.scenario.metrics.flush_interval_ms,
        staleness_bound_ms: aggregation::staleness_bound_ms(
            shared.scenario.metrics.flush_interval_ms,
            network.latency_ms.max,
        ),
        incarnations: incarnations
            .iter()
            .map(|watched| {
                let metrics = watched.metrics.borrow();
                let applied_seq = store.applied_seq(&watched.node, watched.incarnation);
                IncarnationOutcome {
                    node: watched.node.clone(),
                    incarnation: watched.incarnation,
                    started_at: watched.started_at,
                    crashed: latest.get(watched.node.as_str()) != Some(&watched.incarnation)
                        || !running.contains(&watched.node),
                    lifetime: metrics.node.lifetime(),
                    unflushed: metrics.node.unflushed(),
                    unapplied_pending: metrics
                        .node
                        .pending()
                        .filter(|batch| batch.seq > applied_seq)
                        .map(|batch| increments(&batch.counters, &batch.histograms))
                        .unwrap_or_default(),
                    applied_seq,
                    applied: applied
                        .get(&(watched.node.clone(), watched.incarnation))
                        .cloned()
                        .unwrap_or_default(),
                }
            })
            .collect(),
        store: store.datasets().cloned().collect(),
        watched: observed.watched,
        endpoint_text: shared.metrics_endpoint.borrow().render(),
        duplicate_batches: observed.duplicate_batches,
        running: running.clone(),
    }
}

/// Applies faults through the engine and remembers what must be repaired.
struct Driver {
    shared: Rc<Shared>,
    partitions: BTreeSet<(String, String)>,
    /// Hosts crashed (or late) and not restarted since, with when they went down.
    down_since: BTreeMap<String, SimInstant>,
}

impl Driver {
    fn apply(&mut self, control: &Control, kind: &FaultKind) {
        let now = control.now();
        self.shared.observer.record_at(
            now,
            Event::Fault {
                description: faults::describe(kind),
            },
        );
        // Scenario checks refuse a fault naming a host the world lacks.
        let known = "the scenario names only hosts of the world";
        match kind {
            FaultKind::Partition { hosts: [a, b] } => {
                // TCP loses nothing while a connection lives: segments wait and arrive after
                // the heal, unless a ping time-out closed the connection first.
                control.hold(a, b).expect(known);
                self.partitions.insert((a.clone(), b.clone()));
            }
            FaultKind::PartitionOneway { from, to } => {
                // Every writer of the world holds the bytes in its send buffer
                // (`net::OneWayCuts`), where the processes' own checks can see the cut.
                self.shared.cuts.cut(from, to);
            }
            FaultKind::Heal {} => {
                self.repair(control);
                self.shared.observer.record_at(now, Event::Healed);
            }
            FaultKind::Crash { host } => {
                if control.is_running(host) {
                    control.crash(host).expect(known);
                    self.down_since.insert(host.clone(), now);
                }
            }
            FaultKind::Restart { host } => {
                // A restart of a running host is a crash and a start.
                control.start(host).expect(known);
                self.down_since.remove(host);
            }
            FaultKind::Latency { latency_ms, host } => {
                self.set_latency(control, *latency_ms, host.as_deref())
            }
            FaultKind::MessageLoss { rate } => self.set_loss(control, *rate),
            FaultKind::SlowReader { host, for_ms } => {
                self.shared
                    .slow_until
                    .borrow_mut()
                    .insert(host.clone(), now + *for_ms);
            }
            FaultKind::Busy {
                host,
                for_ms,
                per_command_ms,
            } => {
                self.shared
                    .busy
                    .borrow_mut()
                    .insert(host.clone(), (now + *for_ms, *per_command_ms));
            }
            FaultKind::Reconfigure { writers } => {
                *self.shared.writers.borrow_mut() = writers.clone();
            }
            FaultKind::Quiesce { host } => {
                self.shared.quiesced.borrow_mut().insert(host.clone());
            }
            FaultKind::FutureToken { client, ahead_by } => {
                self.shared
                    .future_tokens
                    .borrow_mut()
                    .insert(client.clone(), *ahead_by);
            }
        }
    }

    fn repair(&mut self, control: &Control) {
        for (a, b) in std::mem::take(&mut self.partitions) {
            control
                .release(&a, &b)
                .expect("partitions name hosts of the world");
        }
        self.shared.cuts.heal();
    }

    /// The end of the workload: every partition repaired, latency and loss back to the
    /// scenario's network, slow readers reading again. Crashed hosts stay down unless the
    /// scenario restarts them (a writer removed from the config is meant to stay gone).
    fn heal_all(&mut self, control: &Control) {
        let now = control.now();
        self.repair(control);
        self.set_latency(control, self.shared.scenario.network.latency_ms, None);
        self.set_loss(control, 0.0);
        self.shared.slow_until.borrow_mut().clear();
        self.shared.busy.borrow_mut().clear();
        self.shared.observer.record_at(now, Event::Healed);
    }

    fn set_latency(&self, control: &Control, latency: Range, only: Option<&str>) {
        let hosts = self.shared.scenario.hosts();
        for (index, a) in hosts.iter().enumerate() {
            for b in &hosts[index + 1..] {
                if only.is_some_and(|host| host != a && host != b) {
                    continue;
                }
                control
                    .set_link_latency(a, b, (latency.min, latency.max))
                    .expect("the scenario's hosts are the world's");
            }
        }
    }

    /// Message loss (`message_loss`) on the replication and client links, never the
    /// database's: every link is a TCP connection, and TCP loses nothing while a connection
    /// lives, so a lost segment holds its link until TCP retransmits it (the engine's loss).
    fn set_loss(&self, control: &Control, rate: f64) {
        control
            .set_loss(rate, &["db"])
            .expect("the world has a db host");
    }
}

//! What a run's hosts and its drive loop share: the run's configuration (scenario, seed,
//! switches, fixes, each host's random stream), the writers config a (re)starting process
//! reads, what the faults in force make hosts sense (slowness, busy CPUs, quiesced writers,
//! one-way cuts, tokens from the future), data that lives outside any host as the
//! database's does (the metrics store's and endpoint's, and each row's commit time, which
//! Synapse's rows would carry and readers use only for the lag metric), and the observer,
//! which hosts only append to. None of it is host memory: a crash loses only what hosts keep in their tasks.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use streamsim_models::bugs::Bugs;
use streamsim_models::fixes::Fixes;
use streamsim_models::metrics::{MetricsEndpoint, MetricsStore};
use streamsim_models::time::SimInstant;

use super::observer;
use crate::scenario::Scenario;

/// What hosts and the driver share.
pub struct Shared {
    pub scenario: Scenario,
    pub seed: u64,
    /// Historical-bug switches every process's models run with.
    pub bugs: Bugs,
    /// Proposed fixes of F1-F5 every process's models run with (none: Synapse 1.163.2).
    pub fixes: Fixes,
    pub(super) incarnations: RefCell<BTreeMap<String, u32>>,
    pub(super) writers: RefCell<Vec<String>>,
    pub(super) slow_until: RefCell<BTreeMap<String, SimInstant>>,
    /// CPU-bound processes: until when, and what each inbound stream command costs (ms).
    pub(super) busy: RefCell<BTreeMap<String, (SimInstant, u64)>>,
    pub(super) quiesced: RefCell<BTreeSet<String>>,
    /// One-way partitions in force: (from, to).
    pub cuts: crate::net::OneWayCuts,
    /// Clients whose next /sync presents a token from the future, and how far ahead.
    pub(super) future_tokens: RefCell<BTreeMap<String, i64>>,
    /// The metrics store's and endpoint's data (outside their hosts, as the database's is).
    pub metrics_store: RefCell<MetricsStore>,
    pub metrics_endpoint: RefCell<MetricsEndpoint>,
    pub(super) commit_times: RefCell<CommitTimes>,
    /// What the world records about hosts; hosts only append to it.
    pub observer: observer::Observer,
}

impl Shared {
    pub(super) fn new(scenario: Scenario, seed: u64, bugs: Bugs, fixes: Fixes) -> Self {
        let writers = scenario.initial_writers();
        Shared {
            scenario,
            seed,
            bugs,
            fixes,
            incarnations: RefCell::default(),
            writers: RefCell::new(writers),
            slow_until: RefCell::default(),
            busy: RefCell::default(),
            quiesced: RefCell::default(),
            cuts: crate::net::OneWayCuts::default(),
            future_tokens: RefCell::default(),
            metrics_store: RefCell::default(),
            metrics_endpoint: RefCell::default(),
            commit_times: RefCell::default(),
            observer: observer::Observer::default(),
        }
    }

    /// A process starts: its incarnation number (1 for the first start).
    pub fn begin_incarnation(&self, host: &str) -> u32 {
        let mut incarnations = self.incarnations.borrow_mut();
        let count = incarnations.entry(host.to_owned()).or_insert(0);
        *count += 1;
        *count
    }

    /// The writers config a process reads when it starts.
    pub fn writers(&self) -> Vec<String> {
        self.writers.borrow().clone()
    }

    /// The random stream of one incarnation of one host, derived from the run's seed.
    pub fn rng_for(&self, host: &str, incarnation: u32) -> ChaCha8Rng {
        // FNV-1a: stable across platforms and releases, unlike `DefaultHasher`.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in host.bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        ChaCha8Rng::seed_from_u64(
            self.seed ^ hash ^ u64::from(incarnation).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        )
    }

    /// What handling one inbound stream command costs `host` now, if it is busy, in ms.
    pub fn busy_cost_ms(&self, host: &str) -> Option<u64> {
        let now = crate::net::now();
        self.busy
            .borrow()
            .get(host)
            .filter(|(until, _)| *until > now)
            .map(|(_, cost)| *cost)
    }

    pub fn slow_until(&self, host: &str) -> Option<SimInstant> {
        self.slow_until.borrow().get(host).copied()
    }

    /// Whether a one-way partition stops `from`'s bytes reaching `to`.
    pub fn is_cut(&self, from: &str, to: &str) -> bool {
        self.cuts.is_cut(from, to)
    }

    pub fn is_quiesced(&self, host: &str) -> bool {
        self.quiesced.borrow().contains(host)
    }

    /// How far ahead the client's next /sync token must be moved, once.
    pub fn take_future_token(&self, client: &str) -> Option<i64> {
        self.future_tokens.borrow_mut().remove(client)
    }
}

/// When each row committed, by stream id (kept beside the rows, as the database would keep
/// the event's timestamp in it). Stream ids come from one sequence, so they are dense: a
/// vector indexed by id holds them in 8 bytes each (a map took about 40).
#[derive(Debug, Default)]
pub struct CommitTimes {
    /// Milliseconds by stream id; `u64::MAX` where no row committed.
    by_id: Vec<u64>,
}

impl CommitTimes {
    const NONE: u64 = u64::MAX;

    /// Row `stream_id` committed at `at` (ids below 0 are not rows of the sequence).
    pub fn insert(&mut self, stream_id: i64, at: SimInstant) {
        let Ok(index) = usize::try_from(stream_id) else {
            return;
        };
        if index >= self.by_id.len() {
            self.by_id.resize(index + 1, Self::NONE);
        }
        self.by_id[index] = at.as_ms();
    }

    /// When row `stream_id` committed, if it did.
    pub fn get(&self, stream_id: i64) -> Option<SimInstant> {
        let index = usize::try_from(stream_id).ok()?;
        self.by_id
            .get(index)
            .filter(|ms| **ms != Self::NONE)
            .map(|ms| SimInstant::from_ms(*ms))
    }
}

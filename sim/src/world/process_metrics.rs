//! A simulated Synapse process's metrics memory: the in-memory metrics AWX keeps
//! ([`NodeMetrics`]), Synapse's background processes, and what the measuring code
//! (`instruments`) needs to remember between calls. It lives in the process's memory and dies
//! with it; the observer keeps a handle on each incarnation's ([`Incarnation`]) only to judge,
//! after the run, what a crash lost.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use streamsim_models::metrics::bgproc::{BackgroundProcesses, ProcessId};
use streamsim_models::metrics::NodeMetrics;
use streamsim_models::time::SimInstant;

use super::HOMESERVER_NAME;

/// Simulated CPU a process spends on one inbound replication command, in microseconds. The
/// models do their work in no simulated time; this is the cost the metrics attribute to it
/// (the order of a parse and a dispatch in CPython).
pub const CPU_US_PER_COMMAND: i64 = 100;
/// Simulated CPU per event handed to the notifier or persisted, in microseconds.
pub const CPU_US_PER_EVENT: i64 = 50;

/// Background-process names, as Synapse 1.163.2 spells them.
pub mod names {
    /// `BackgroundQueue` of `ReplicationCommandHandler._command_queues_by_stream`.
    pub const PROCESS_REPLICATION_DATA: &str = "process-replication-data";
    /// `ReplicationStreamer.on_notifier_poke`.
    pub const REPLICATION_NOTIFIER: &str = "replication_notifier";
    /// `EventsPersistenceStorageController`'s queue.
    pub const PERSIST_EVENTS: &str = "persist_events";
    /// The `stream_positions` upsert after a batch finishes.
    pub const UPDATE_TABLE: &str = "MultiWriterIdGenerator._update_table";
    /// `RedisSubscriber.send_command`: one per command published.
    pub const SEND_CMD: &str = "send-cmd";
    /// `FederationSender._process_event_queue_loop` (synapse/federation/sender/__init__.py).
    pub const FEDERATION_EVENT_QUEUE: &str = "process_event_queue_for_federation";
}

/// One process's metrics memory.
pub struct ProcessMetrics {
    pub node: NodeMetrics,
    pub processes: BackgroundProcesses,
    /// The per-stream queue's consumer, per follower: the process and its last item.
    pub(super) consumers: BTreeMap<String, (ProcessId, SimInstant)>,
    /// With the linearizer: one process per command, oldest first, per follower.
    pub(super) linearized: BTreeMap<String, VecDeque<ProcessId>>,
    /// The running `replication_notifier` and its own-update reads in flight.
    pub(super) notifier: Option<(ProcessId, usize)>,
    /// The timeline span of each running process.
    pub(super) spans: BTreeMap<ProcessId, usize>,
}

impl ProcessMetrics {
    pub fn new(node: &str, incarnation: u32) -> Self {
        ProcessMetrics {
            node: NodeMetrics::new(node, incarnation),
            processes: BackgroundProcesses::new(HOMESERVER_NAME),
            consumers: BTreeMap::new(),
            linearized: BTreeMap::new(),
            notifier: None,
            spans: BTreeMap::new(),
        }
    }
}

/// The handle the world keeps on one incarnation's metrics.
#[derive(Clone)]
pub struct Incarnation {
    pub node: String,
    pub incarnation: u32,
    pub started_at: SimInstant,
    pub metrics: Rc<RefCell<ProcessMetrics>>,
}

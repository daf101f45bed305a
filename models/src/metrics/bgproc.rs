//! Synapse's background processes (`run_as_background_process`): each named process counts
//! a start and is in flight until it ends; the resources it uses (CPU, database
//! transactions and their time) reach the counters only when its metrics are updated, which
//! happens when it ends and, while it runs, at a scrape, and then only for processes active
//! since the last scrape (`_Collector.collect`). That last rule is why many processes stuck
//! behind a lock or a linearizer cost a scrape nothing: they are not active.
//!
//! Resources are simulated: CPU is a cost the caller charges per unit of work (the models do
//! their work in no simulated time), database time is the simulated round trip.

use std::collections::{BTreeMap, BTreeSet};

use super::node::NodeMetrics;
use super::series::{
    BACKGROUND_PROCESS_DB_TXN_COUNT, BACKGROUND_PROCESS_DB_TXN_DURATION,
    BACKGROUND_PROCESS_IN_FLIGHT_COUNT, BACKGROUND_PROCESS_RU_UTIME,
    BACKGROUND_PROCESS_START_COUNT,
};
use crate::time::SimInstant;

/// Identifies one running background process of one node.
pub type ProcessId = u64;

/// Resources a process used (`ContextResourceUsage`), in microseconds and transactions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu_us: i64,
    pub db_txn_count: i64,
    pub db_txn_us: i64,
}

impl Usage {
    fn minus(self, other: Usage) -> Usage {
        Usage {
            cpu_us: self.cpu_us - other.cpu_us,
            db_txn_count: self.db_txn_count - other.db_txn_count,
            db_txn_us: self.db_txn_us - other.db_txn_us,
        }
    }
}

/// A process that is running.
#[derive(Clone, Debug)]
pub struct Running {
    pub name: String,
    pub started_at: SimInstant,
    usage: Usage,
    reported: Usage,
}

/// The background processes of one node.
#[derive(Clone, Debug)]
pub struct BackgroundProcesses {
    server_name: String,
    running: BTreeMap<ProcessId, Running>,
    active_since_scrape: BTreeSet<ProcessId>,
    next_id: ProcessId,
}

impl BackgroundProcesses {
    pub fn new(server_name: &str) -> Self {
        BackgroundProcesses {
            server_name: server_name.to_owned(),
            running: BTreeMap::new(),
            active_since_scrape: BTreeSet::new(),
            next_id: 0,
        }
    }

    /// `run_as_background_process(name, ...)` begins: a start is counted and the process is
    /// in flight (and active: its logging context has started).
    pub fn start(&mut self, name: &str, now: SimInstant, metrics: &mut NodeMetrics) -> ProcessId {
        let id = self.next_id;
        self.next_id += 1;
        let labels = [name, self.server_name.as_str()];
        metrics.inc(&BACKGROUND_PROCESS_START_COUNT, &labels, 1);
        metrics.add_to_gauge(&BACKGROUND_PROCESS_IN_FLIGHT_COUNT, &labels, 1);
        self.running.insert(
            id,
            Running {
                name: name.to_owned(),
                started_at: now,
                usage: Usage::default(),
                reported: Usage::default(),
            },
        );
        self.active_since_scrape.insert(id);
        id
    }

    /// The process did some work: it is active since the last scrape. A process that
    /// already ended (its node restarted its bookkeeping) is ignored.
    pub fn charge(&mut self, id: ProcessId, usage: Usage) {
        if let Some(running) = self.running.get_mut(&id) {
            running.usage.cpu_us += usage.cpu_us;
            running.usage.db_txn_count += usage.db_txn_count;
            running.usage.db_txn_us += usage.db_txn_us;
            self.active_since_scrape.insert(id);
        }
    }

    /// The process ended (returned or raised): no longer in flight, and what it used since
    /// its last report is counted now.
    pub fn finish(&mut self, id: ProcessId, metrics: &mut NodeMetrics) -> Option<Running> {
        let mut running = self.running.remove(&id)?;
        self.active_since_scrape.remove(&id);
        let labels = [running.name.as_str(), self.server_name.as_str()];
        let in_flight = metrics.add_to_gauge(&BACKGROUND_PROCESS_IN_FLIGHT_COUNT, &labels, -1);
        assert!(in_flight >= 0, "{} in flight went negative", running.name);
        Self::update_metrics(&self.server_name, &mut running, metrics);
        Some(running)
    }

    /// `_Collector.collect`: updates the resource counters from the processes active since
    /// the last scrape, and forgets which those were. Returns how many it updated.
    pub fn collect(&mut self, metrics: &mut NodeMetrics) -> usize {
        let active = std::mem::take(&mut self.active_since_scrape);
        let mut updated = 0;
        for id in active {
            if let Some(running) = self.running.get_mut(&id) {
                Self::update_metrics(&self.server_name, running, metrics);
                updated += 1;
            }
        }
        updated
    }

    fn update_metrics(server_name: &str, running: &mut Running, metrics: &mut NodeMetrics) {
        let diff = running.usage.minus(running.reported);
        running.reported = running.usage;
        let labels = [running.name.as_str(), server_name];
        metrics.inc(&BACKGROUND_PROCESS_RU_UTIME, &labels, diff.cpu_us);
        metrics.inc(&BACKGROUND_PROCESS_DB_TXN_COUNT, &labels, diff.db_txn_count);
        metrics.inc(&BACKGROUND_PROCESS_DB_TXN_DURATION, &labels, diff.db_txn_us);
    }

    /// How many processes of `name` are running.
    pub fn in_flight(&self, name: &str) -> usize {
        self.running.values().filter(|p| p.name == name).count()
    }

    /// The name of running process `id` (`None` once it ended).
    pub fn name_of(&self, id: ProcessId) -> Option<&str> {
        self.running.get(&id).map(|running| running.name.as_str())
    }

    /// Every running process, oldest first.
    pub fn running(&self) -> impl Iterator<Item = (&ProcessId, &Running)> {
        self.running.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(metrics: &mut NodeMetrics, family: &str) -> i64 {
        let batch = metrics.begin_flush(SimInstant::ZERO);
        metrics.flush_answered(batch.seq);
        batch
            .counters
            .iter()
            .filter(|(series, _)| series.family == family)
            .map(|(_, value)| value)
            .sum()
    }

    #[test]
    fn start_and_finish_move_the_counts_and_report_what_was_used() {
        let mut metrics = NodeMetrics::new("r1", 1);
        let mut processes = BackgroundProcesses::new("hs");
        let id = processes.start("persist_events", SimInstant::ZERO, &mut metrics);
        assert_eq!(
            metrics.gauge(
                &BACKGROUND_PROCESS_IN_FLIGHT_COUNT,
                &["persist_events", "hs"]
            ),
            1
        );
        processes.charge(
            id,
            Usage {
                cpu_us: 300,
                db_txn_count: 2,
                db_txn_us: 4_000,
            },
        );
        assert!(processes.finish(id, &mut metrics).is_some());
        assert!(processes.finish(id, &mut metrics).is_none());
        assert_eq!(
            metrics.gauge(
                &BACKGROUND_PROCESS_IN_FLIGHT_COUNT,
                &["persist_events", "hs"]
            ),
            0
        );
        let batch = metrics.begin_flush(SimInstant::ZERO);
        let value = |family: &str| -> i64 {
            batch
                .counters
                .iter()
                .filter(|(series, _)| series.family == family)
                .map(|(_, value)| *value)
                .sum()
        };
        assert_eq!(value(BACKGROUND_PROCESS_START_COUNT.name), 1);
        assert_eq!(value(BACKGROUND_PROCESS_RU_UTIME.name), 300);
        assert_eq!(value(BACKGROUND_PROCESS_DB_TXN_COUNT.name), 2);
        assert_eq!(value(BACKGROUND_PROCESS_DB_TXN_DURATION.name), 4_000);
    }

    #[test]
    fn a_scrape_reports_only_processes_active_since_the_last_one() {
        let mut metrics = NodeMetrics::new("r1", 1);
        let mut processes = BackgroundProcesses::new("hs");
        let busy = processes.start("a", SimInstant::ZERO, &mut metrics);
        let idle = processes.start("b", SimInstant::ZERO, &mut metrics);
        assert_eq!(processes.collect(&mut metrics), 2);
        processes.charge(
            busy,
            Usage {
                cpu_us: 10,
                ..Usage::default()
            },
        );
        assert_eq!(processes.collect(&mut metrics), 1);
        assert_eq!(counter(&mut metrics, BACKGROUND_PROCESS_RU_UTIME.name), 10);
        // Nothing new: a scrape reports nothing, the idle process included.
        assert_eq!(processes.collect(&mut metrics), 0);
        assert_eq!(processes.in_flight("b"), 1);
        processes.finish(idle, &mut metrics);
        assert_eq!(processes.in_flight("b"), 0);
    }
}

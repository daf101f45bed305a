//! The shared metrics store: a Redis-like server holding one hash per node, to which nodes'
//! flush batches are applied atomically (one `MULTI`/`EXEC` pipeline per batch).
//!
//! Counters and histogram buckets are incremented (`HINCRBY`), so a node's counts survive
//! its crashes and restarts and never go down. Gauges are overwritten (`HSET`); the first
//! batch of a new incarnation first deletes the node's gauges, so an in-flight gauge of a
//! crashed incarnation does not outlive it. A batch already applied (the same node,
//! incarnation and sequence number, sent again because its answer was lost) changes nothing.

use std::collections::BTreeMap;

use super::node::{Dataset, FlushBatch};
use crate::time::SimInstant;

/// What applying a batch did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// False when the store had already applied this batch.
    pub fresh: bool,
    /// The node's dataset after the batch, which the node then broadcasts.
    pub dataset: Dataset,
}

#[derive(Clone, Debug, Default)]
pub struct MetricsStore {
    hashes: BTreeMap<String, Dataset>,
    /// The highest sequence number applied, per node and incarnation.
    applied: BTreeMap<(String, u32), u64>,
    /// Whether an incarnation's first batch has cleared the node's gauges yet.
    gauges_owner: BTreeMap<String, u32>,
}

impl MetricsStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one flush batch at `now`, once.
    pub fn apply(&mut self, batch: &FlushBatch, now: SimInstant) -> Applied {
        let key = (batch.node.clone(), batch.incarnation);
        let seen = self.applied.get(&key).copied().unwrap_or(0);
        let dataset = self
            .hashes
            .entry(batch.node.clone())
            .or_insert_with(|| Dataset {
                node: batch.node.clone(),
                ..Dataset::default()
            });
        if batch.seq <= seen {
            return Applied {
                fresh: false,
                dataset: dataset.clone(),
            };
        }
        // Batches of one incarnation come one at a time, each after the last was answered.
        assert_eq!(
            batch.seq,
            seen + 1,
            "{} incarnation {} skipped a batch",
            batch.node,
            batch.incarnation
        );
        self.applied.insert(key, batch.seq);
        if self.gauges_owner.get(&batch.node) != Some(&batch.incarnation) {
            self.gauges_owner
                .insert(batch.node.clone(), batch.incarnation);
            dataset.gauges.clear();
        }
        for (series, amount) in &batch.counters {
            *dataset.counters.entry(series.clone()).or_insert(0) += amount;
        }
        for (series, value) in &batch.gauges {
            dataset.gauges.insert(series.clone(), *value);
        }
        for (series, counts) in &batch.histograms {
            dataset
                .histograms
                .entry(series.clone())
                .or_default()
                .add(counts);
        }
        dataset.version += 1;
        dataset.updated_at = now;
        dataset.captured_at = batch.captured_at;
        dataset.incarnation = batch.incarnation;
        Applied {
            fresh: true,
            dataset: dataset.clone(),
        }
    }

    /// A node's dataset as the store holds it now.
    pub fn dataset(&self, node: &str) -> Option<&Dataset> {
        self.hashes.get(node)
    }

    /// Every node's dataset, by node name.
    pub fn datasets(&self) -> impl Iterator<Item = &Dataset> {
        self.hashes.values()
    }

    /// The highest batch applied for one incarnation of a node (0 if none).
    pub fn applied_seq(&self, node: &str, incarnation: u32) -> u64 {
        self.applied
            .get(&(node.to_owned(), incarnation))
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::node::NodeMetrics;
    use crate::metrics::series::{
        BACKGROUND_PROCESS_IN_FLIGHT_COUNT, BACKGROUND_PROCESS_START_COUNT,
    };

    const LABELS: &[&str] = &["process-replication-data", "hs"];

    fn total(dataset: &Dataset) -> i64 {
        dataset.counters.values().sum()
    }

    #[test]
    fn a_batch_sent_twice_counts_once() {
        let mut store = MetricsStore::new();
        let mut metrics = NodeMetrics::new("r1", 1);
        metrics.inc(&BACKGROUND_PROCESS_START_COUNT, LABELS, 3);
        let batch = metrics.begin_flush(SimInstant::ZERO);
        assert!(store.apply(&batch, SimInstant::from_ms(5)).fresh);
        let again = store.apply(&batch, SimInstant::from_ms(9));
        assert!(!again.fresh);
        assert_eq!(total(&again.dataset), 3);
        assert_eq!(again.dataset.version, 1);
        assert_eq!(again.dataset.updated_at, SimInstant::from_ms(5));
    }

    #[test]
    fn counters_sum_over_incarnations_and_a_new_incarnation_replaces_the_gauges() {
        let mut store = MetricsStore::new();
        let mut first = NodeMetrics::new("w1", 1);
        first.inc(&BACKGROUND_PROCESS_START_COUNT, LABELS, 4);
        first.add_to_gauge(
            &BACKGROUND_PROCESS_IN_FLIGHT_COUNT,
            &["persist_events", "hs"],
            2,
        );
        store.apply(&first.begin_flush(SimInstant::ZERO), SimInstant::ZERO);
        let mut second = NodeMetrics::new("w1", 2);
        second.inc(&BACKGROUND_PROCESS_START_COUNT, LABELS, 1);
        second.add_to_gauge(&BACKGROUND_PROCESS_IN_FLIGHT_COUNT, LABELS, 1);
        let applied = store.apply(&second.begin_flush(SimInstant::ZERO), SimInstant::ZERO);
        assert_eq!(total(&applied.dataset), 5);
        assert_eq!(applied.dataset.gauges.len(), 1);
        assert_eq!(store.applied_seq("w1", 1), 1);
        assert_eq!(store.applied_seq("w1", 2), 1);
        assert_eq!(store.applied_seq("w1", 3), 0);
    }
}

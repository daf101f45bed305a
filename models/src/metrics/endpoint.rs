//! The metrics endpoint (AWX's `api/v2/metrics`): keeps the newest dataset each node
//! broadcast and renders them all, one `node` label per node.
//!
//! Broadcasts can arrive out of order (a retry overtaking an older one), so a dataset older
//! than the one held is ignored: the endpoint's counters never go down.

use std::collections::BTreeMap;

use super::exposition;
use super::node::Dataset;
use crate::time::SimInstant;

/// A node's dataset as the endpoint holds it, and when it arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub dataset: Dataset,
    pub received_at: SimInstant,
}

#[derive(Clone, Debug, Default)]
pub struct MetricsEndpoint {
    instances: BTreeMap<String, Held>,
}

impl MetricsEndpoint {
    pub fn new() -> Self {
        Self::default()
    }

    /// A broadcast arrived; returns whether it replaced what was held.
    pub fn receive(&mut self, dataset: Dataset, now: SimInstant) -> bool {
        if self
            .instances
            .get(&dataset.node)
            .is_some_and(|held| held.dataset.version >= dataset.version)
        {
            return false;
        }
        self.instances.insert(
            dataset.node.clone(),
            Held {
                dataset,
                received_at: now,
            },
        );
        true
    }

    /// Every node's dataset, by node name.
    pub fn instances(&self) -> &BTreeMap<String, Held> {
        &self.instances
    }

    /// The Prometheus text of every node's dataset.
    pub fn render(&self) -> String {
        exposition::render(self.instances.values().map(|held| &held.dataset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset(node: &str, version: u64) -> Dataset {
        Dataset {
            node: node.to_owned(),
            version,
            ..Dataset::default()
        }
    }

    #[test]
    fn an_older_broadcast_never_replaces_a_newer_one() {
        let mut endpoint = MetricsEndpoint::new();
        assert!(endpoint.receive(dataset("r1", 2), SimInstant::from_ms(10)));
        assert!(!endpoint.receive(dataset("r1", 1), SimInstant::from_ms(20)));
        assert!(!endpoint.receive(dataset("r1", 2), SimInstant::from_ms(30)));
        assert!(endpoint.receive(dataset("r2", 1), SimInstant::from_ms(40)));
        let held = &endpoint.instances()["r1"];
        assert_eq!(
            (held.dataset.version, held.received_at),
            (2, SimInstant::from_ms(10))
        );
    }
}

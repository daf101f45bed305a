//! Metrics as Synapse and AWX keep them, as a second system under test.
//!
//! Two real designs meet here. Synapse instruments each process with Prometheus counters,
//! gauges and histograms, and tracks every background process (how many started, how many
//! are in flight, and the CPU and database time they used, attributed only for processes
//! active since the last scrape: `synapse/metrics/background_process_metrics.py`). AWX's
//! subsystem metrics aggregate such per-node values across a cluster: each node keeps them in
//! memory, adds its increments to a shared Redis hash every interval (`pipe_execute`),
//! broadcasts its full dataset to the other nodes, and the metrics endpoint renders every
//! node's dataset with a `node` label (`awx/docs/subsystem_metrics.md`).
//!
//! Every value is kept in integer raw units (a `_seconds` family counts microseconds), so
//! sums are exact whatever the grouping: the aggregation checks compare them for equality.
//!
//! - [`series`]: metric families (Synapse's names where Synapse has them) and series keys.
//! - [`node`]: one node's in-memory metrics (AWX's `Metrics`): counters, set gauges,
//!   cumulative histograms, and the flush batches that carry their increments.
//! - [`store`]: the shared Redis-like store the batches are applied to.
//! - [`endpoint`]: the metrics endpoint that merges every node's broadcast dataset.
//! - [`bgproc`]: Synapse's background-process tracking.
//! - [`exposition`]: Prometheus text, through the `prometheus-client` crate.

pub mod bgproc;
pub mod endpoint;
pub mod exposition;
pub mod node;
pub mod series;
pub mod store;

pub use endpoint::MetricsEndpoint;
pub use node::{Dataset, FlushBatch, HistogramCounts, NodeMetrics};
pub use series::{Family, Kind, SeriesKey};
pub use store::MetricsStore;

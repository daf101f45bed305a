//! One node's metrics in memory, as AWX's `Metrics` object keeps them, and the flush batches
//! (`pipe_execute`) that carry them to the shared store.
//!
//! Counters and histograms hold only what was added since the last capture: a flush adds
//! them to the store (`HINCRBY`), so the store sums every flush of every incarnation. Set
//! gauges hold the current value and a flush overwrites the store's (`HSET`).
//!
//! Unlike AWX, whose `pipe_execute` talks to a local Redis over a socket that does not fail,
//! the store here is across a network: a flush can go unanswered. A captured batch therefore
//! stays pending, and is sent again with the same sequence number, until the store answers;
//! the store applies each `(node, incarnation, seq)` once. Increments made meanwhile wait for
//! the next capture. What a crash loses is exactly what was not yet applied: the pending
//! batch (unless the store had applied it and only the answer was lost) and everything
//! counted since it was captured.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::series::{Family, Kind, SeriesKey};
use crate::time::SimInstant;

/// A histogram's counts: per bucket (cumulative, as Prometheus and AWX keep them: bucket `i`
/// counts every observation at or below its bound; the last bucket is `+Inf`), the number
/// of observations and their sum, in raw units.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistogramCounts {
    pub cumulative: Vec<i64>,
    pub count: i64,
    pub sum: i64,
}

impl HistogramCounts {
    fn empty(family: &Family) -> Self {
        HistogramCounts {
            cumulative: vec![0; family.buckets.len() + 1],
            count: 0,
            sum: 0,
        }
    }

    fn observe(&mut self, family: &Family, raw: i64) {
        let first = family
            .buckets
            .iter()
            .position(|bound| raw <= *bound)
            .unwrap_or(family.buckets.len());
        for bucket in &mut self.cumulative[first..] {
            *bucket += 1;
        }
        self.count += 1;
        self.sum += raw;
    }

    /// Adds another histogram's counts (a flush into the store).
    pub fn add(&mut self, other: &HistogramCounts) {
        if self.cumulative.len() < other.cumulative.len() {
            self.cumulative.resize(other.cumulative.len(), 0);
        }
        for (mine, theirs) in self.cumulative.iter_mut().zip(&other.cumulative) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum += other.sum;
    }
}

/// The series under which a histogram's number of observations is accounted.
pub fn count_series(series: &SeriesKey) -> SeriesKey {
    SeriesKey {
        family: format!("{}_count", series.family),
        labels: series.labels.clone(),
    }
}

/// The increments a batch or dataset carries, histograms as their `<family>_count`.
pub fn increments(
    counters: &BTreeMap<SeriesKey, i64>,
    histograms: &BTreeMap<SeriesKey, HistogramCounts>,
) -> BTreeMap<SeriesKey, i64> {
    let mut counts = counters.clone();
    for (series, histogram) in histograms {
        counts.insert(count_series(series), histogram.count);
    }
    counts
}

/// What one flush carries: the increments of one capture and every set gauge's value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlushBatch {
    pub node: String,
    pub incarnation: u32,
    /// 1 for an incarnation's first capture, then 2, 3, ...
    pub seq: u64,
    /// When the node took its gauges' values (the latest send of the batch).
    pub captured_at: SimInstant,
    #[serde(with = "super::series::series_map")]
    pub counters: BTreeMap<SeriesKey, i64>,
    #[serde(with = "super::series::series_map")]
    pub gauges: BTreeMap<SeriesKey, i64>,
    #[serde(with = "super::series::series_map")]
    pub histograms: BTreeMap<SeriesKey, HistogramCounts>,
}

/// A node's whole dataset in the store, as the store answers a flush and the node
/// broadcasts it: every counter, gauge and histogram summed over all its incarnations.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dataset {
    pub node: String,
    /// Bumped by every applied batch: a newer dataset of the same node has a higher version.
    pub version: u64,
    /// When the store last applied a batch of this node.
    pub updated_at: SimInstant,
    /// When the node took the gauge values of that batch, and which incarnation it was.
    pub captured_at: SimInstant,
    pub incarnation: u32,
    #[serde(with = "super::series::series_map")]
    pub counters: BTreeMap<SeriesKey, i64>,
    #[serde(with = "super::series::series_map")]
    pub gauges: BTreeMap<SeriesKey, i64>,
    #[serde(with = "super::series::series_map")]
    pub histograms: BTreeMap<SeriesKey, HistogramCounts>,
}

/// Series keys built once per node and looked up without allocating: metrics are bumped on
/// every replication command, and a key is a family name and label strings. Each series gets
/// a dense index into the node's value tables, found through an FxHash of the family and
/// values (word at a time: byte-wise FNV cost 5% of a run).
#[derive(Clone, Debug, Default)]
struct SeriesInterner {
    /// Each series and its `<family>_count` series, by index.
    series: Vec<(SeriesKey, SeriesKey)>,
    /// Each series' family name and label values, as borrowed-form keys compare cheaply.
    parts: Vec<(&'static str, Vec<String>)>,
    by_hash: BTreeMap<u64, Vec<usize>>,
}

impl SeriesInterner {
    fn hash(family: &Family, values: &[&str]) -> u64 {
        use std::hash::Hasher;
        let mut hasher = rustc_hash::FxHasher::default();
        hasher.write(family.name.as_bytes());
        for value in values {
            hasher.write_u8(0xff);
            hasher.write(value.as_bytes());
        }
        hasher.finish()
    }

    /// Whether series `index` is `family` with `values`: a family is a static, so the same
    /// name string means the same family and label names.
    fn is(&self, index: usize, family: &Family, values: &[&str]) -> bool {
        let (name, stored) = &self.parts[index];
        (std::ptr::eq(*name, family.name) || *name == family.name)
            && stored.len() == values.len()
            && stored.iter().zip(values).all(|(a, b)| a == b)
    }

    /// The index of the series of `family` with `values`, if it was ever interned.
    fn find(&self, family: &Family, values: &[&str]) -> Option<usize> {
        self.by_hash
            .get(&Self::hash(family, values))?
            .iter()
            .copied()
            .find(|index| self.is(*index, family, values))
    }

    /// The index of the series of `family` with `values`, interning it when new.
    fn get(&mut self, family: &Family, values: &[&str]) -> usize {
        let hash = Self::hash(family, values);
        if let Some(index) = self.by_hash.get(&hash).and_then(|bucket| {
            bucket
                .iter()
                .copied()
                .find(|index| self.is(*index, family, values))
        }) {
            return index;
        }
        let key = SeriesKey::new(family, values);
        debug_assert!(key.is(family, values));
        let count = count_series(&key);
        self.series.push((key, count));
        self.parts.push((
            family.name,
            values.iter().map(|value| (*value).to_owned()).collect(),
        ));
        let index = self.series.len() - 1;
        self.by_hash.entry(hash).or_default().push(index);
        index
    }

    fn key(&self, index: usize) -> &SeriesKey {
        &self.series[index].0
    }

    fn count_key(&self, index: usize) -> &SeriesKey {
        &self.series[index].1
    }
}

/// A value per interned series: `None` until the series is first touched, so a series bumped
/// by 0 is still present (as a map entry was).
#[derive(Clone, Debug)]
struct Table<T>(Vec<Option<T>>);

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table(Vec::new())
    }
}

impl<T> Table<T> {
    fn slot(&mut self, index: usize) -> &mut Option<T> {
        if self.0.len() <= index {
            self.0.resize_with(index + 1, || None);
        }
        &mut self.0[index]
    }

    fn get(&self, index: usize) -> Option<&T> {
        self.0.get(index).and_then(Option::as_ref)
    }

    fn touched(&self) -> impl Iterator<Item = (usize, &T)> {
        self.0
            .iter()
            .enumerate()
            .filter_map(|(index, value)| value.as_ref().map(|value| (index, value)))
    }

    fn take(&mut self) -> Table<T> {
        Table(std::mem::take(&mut self.0))
    }
}

impl Table<i64> {
    fn add(&mut self, index: usize, amount: i64) -> i64 {
        let value = self.slot(index).get_or_insert(0);
        *value += amount;
        *value
    }
}

/// One incarnation of one node's in-memory metrics.
#[derive(Clone, Debug)]
pub struct NodeMetrics {
    node: String,
    incarnation: u32,
    counters: Table<i64>,
    gauges: Table<i64>,
    histograms: Table<HistogramCounts>,
    captured: u64,
    pending: Option<FlushBatch>,
    last_flush_at: Option<SimInstant>,
    /// Every increment this incarnation ever made (counters, and histogram observations
    /// under `<family>_count`), never cleared: what the aggregation checks account for.
    lifetime_counters: Table<i64>,
    lifetime_observations: Table<i64>,
    interner: SeriesInterner,
}

impl NodeMetrics {
    pub fn new(node: &str, incarnation: u32) -> Self {
        NodeMetrics {
            node: node.to_owned(),
            incarnation,
            counters: Table::default(),
            gauges: Table::default(),
            histograms: Table::default(),
            captured: 0,
            pending: None,
            last_flush_at: None,
            lifetime_counters: Table::default(),
            lifetime_observations: Table::default(),
            interner: SeriesInterner::default(),
        }
    }

    /// A table of series values as a map keyed by series, in series order.
    fn by_key<T: Clone>(&self, table: &Table<T>) -> BTreeMap<SeriesKey, T> {
        table
            .touched()
            .map(|(index, value)| (self.interner.key(index).clone(), value.clone()))
            .collect()
    }

    /// Counters and histogram counts as increments keyed by series.
    fn increments_by_key(
        &self,
        counters: &Table<i64>,
        observations: impl Iterator<Item = (usize, i64)>,
    ) -> BTreeMap<SeriesKey, i64> {
        let mut counts = self.by_key(counters);
        for (index, count) in observations {
            counts.insert(self.interner.count_key(index).clone(), count);
        }
        counts
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn incarnation(&self) -> u32 {
        self.incarnation
    }

    /// The sequence number of the capture that will carry an increment made now.
    pub fn next_seq(&self) -> u64 {
        self.captured + 1
    }

    /// `inc(name, value)`: adds to a counter. Panics on a gauge or histogram family or a
    /// negative amount (a counter never goes down; a broken call site).
    pub fn inc(&mut self, family: &Family, labels: &[&str], amount: i64) {
        assert_eq!(
            family.kind,
            Kind::Counter,
            "{} is not a counter",
            family.name
        );
        assert!(amount >= 0, "{} cannot go down", family.name);
        let series = self.interner.get(family, labels);
        self.lifetime_counters.add(series, amount);
        self.counters.add(series, amount);
    }

    /// `set(name, value)`: a set gauge's current value.
    pub fn set(&mut self, family: &Family, labels: &[&str], value: i64) {
        assert_eq!(family.kind, Kind::Gauge, "{} is not a gauge", family.name);
        let series = self.interner.get(family, labels);
        *self.gauges.slot(series) = Some(value);
    }

    /// Adds `delta` to a set gauge (an in-flight count going up or down).
    pub fn add_to_gauge(&mut self, family: &Family, labels: &[&str], delta: i64) -> i64 {
        assert_eq!(family.kind, Kind::Gauge, "{} is not a gauge", family.name);
        let series = self.interner.get(family, labels);
        self.gauges.add(series, delta)
    }

    pub fn gauge(&self, family: &Family, labels: &[&str]) -> i64 {
        self.interner
            .find(family, labels)
            .and_then(|series| self.gauges.get(series))
            .copied()
            .unwrap_or(0)
    }

    /// `observe(name, value)`: one observation into a histogram, in raw units.
    pub fn observe(&mut self, family: &Family, labels: &[&str], raw: i64) {
        assert_eq!(
            family.kind,
            Kind::Histogram,
            "{} is not a histogram",
            family.name
        );
        let series = self.interner.get(family, labels);
        self.lifetime_observations.add(series, 1);
        self.histograms
            .slot(series)
            .get_or_insert_with(|| HistogramCounts::empty(family))
            .observe(family, raw);
    }

    /// Every increment this incarnation made, flushed or not (histograms as their
    /// `<family>_count`).
    pub fn lifetime(&self) -> BTreeMap<SeriesKey, i64> {
        self.increments_by_key(
            &self.lifetime_counters,
            self.lifetime_observations
                .touched()
                .map(|(index, count)| (index, *count)),
        )
    }

    /// The increments not yet captured into a batch.
    pub fn unflushed(&self) -> BTreeMap<SeriesKey, i64> {
        self.increments_by_key(
            &self.counters,
            self.histograms
                .touched()
                .map(|(index, histogram)| (index, histogram.count)),
        )
    }

    /// `should_pipe_execute`: whether `interval_ms` passed since the last flush began.
    pub fn should_flush(&self, now: SimInstant, interval_ms: u64) -> bool {
        self.last_flush_at
            .is_none_or(|last| now.ms_since(last) >= interval_ms)
    }

    /// `pipe_execute`, first half: the batch to send. A batch still unanswered is sent again
    /// unchanged; otherwise the increments so far are captured (and cleared) into a new one.
    pub fn begin_flush(&mut self, now: SimInstant) -> FlushBatch {
        self.last_flush_at = Some(now);
        if let Some(pending) = &self.pending {
            let mut batch = pending.clone();
            // Gauges are values, not increments: the latest ones go with the retry.
            batch.gauges = self.by_key(&self.gauges);
            batch.captured_at = now;
            return batch;
        }
        self.captured += 1;
        let counters = self.counters.take();
        let histograms = self.histograms.take();
        let batch = FlushBatch {
            node: self.node.clone(),
            incarnation: self.incarnation,
            seq: self.captured,
            captured_at: now,
            counters: self.by_key(&counters),
            gauges: self.by_key(&self.gauges),
            histograms: self.by_key(&histograms),
        };
        self.pending = Some(batch.clone());
        batch
    }

    /// `pipe_execute`, second half: the store answered the batch `seq`.
    pub fn flush_answered(&mut self, seq: u64) {
        if self.pending.as_ref().is_some_and(|batch| batch.seq == seq) {
            self.pending = None;
        }
    }

    /// The batch waiting for the store's answer, if any.
    pub fn pending(&self) -> Option<&FlushBatch> {
        self.pending.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::series::{
        BACKGROUND_PROCESS_IN_FLIGHT_COUNT, BACKGROUND_PROCESS_START_COUNT, REPLICATION_LAG,
    };

    const HS: &str = "hs";

    #[test]
    fn a_capture_takes_the_increments_and_keeps_the_gauges() {
        let mut metrics = NodeMetrics::new("r1", 1);
        metrics.inc(&BACKGROUND_PROCESS_START_COUNT, &["a", HS], 2);
        metrics.add_to_gauge(&BACKGROUND_PROCESS_IN_FLIGHT_COUNT, &["a", HS], 1);
        assert_eq!(metrics.next_seq(), 1);
        let first = metrics.begin_flush(SimInstant::from_ms(10));
        assert_eq!(first.seq, 1);
        assert_eq!(first.counters.values().sum::<i64>(), 2);
        assert_eq!(first.gauges.values().sum::<i64>(), 1);
        metrics.flush_answered(1);
        metrics.inc(&BACKGROUND_PROCESS_START_COUNT, &["a", HS], 1);
        assert_eq!(metrics.next_seq(), 2);
        let second = metrics.begin_flush(SimInstant::from_ms(20));
        assert_eq!((second.seq, second.counters.values().sum::<i64>()), (2, 1));
        assert_eq!(second.gauges, first.gauges);
    }

    #[test]
    fn an_unanswered_batch_is_sent_again_and_new_increments_wait() {
        let mut metrics = NodeMetrics::new("r1", 1);
        metrics.inc(&BACKGROUND_PROCESS_START_COUNT, &["a", HS], 5);
        let first = metrics.begin_flush(SimInstant::from_ms(0));
        metrics.inc(&BACKGROUND_PROCESS_START_COUNT, &["a", HS], 7);
        assert_eq!(metrics.next_seq(), 2);
        let retry = metrics.begin_flush(SimInstant::from_ms(1_000));
        assert_eq!(retry.seq, first.seq);
        assert_eq!(retry.counters, first.counters);
        assert_eq!(retry.captured_at, SimInstant::from_ms(1_000));
        metrics.flush_answered(first.seq);
        let next = metrics.begin_flush(SimInstant::from_ms(2_000));
        assert_eq!((next.seq, next.counters.values().sum::<i64>()), (2, 7));
    }

    #[test]
    fn should_flush_waits_for_the_interval() {
        let mut metrics = NodeMetrics::new("r1", 1);
        assert!(metrics.should_flush(SimInstant::from_ms(0), 1_000));
        metrics.begin_flush(SimInstant::from_ms(0));
        assert!(!metrics.should_flush(SimInstant::from_ms(999), 1_000));
        assert!(metrics.should_flush(SimInstant::from_ms(1_000), 1_000));
    }

    #[test]
    fn histograms_are_cumulative_with_an_infinite_bucket() {
        let mut metrics = NodeMetrics::new("r1", 1);
        for raw in [1_000, 60_000, 120_000_000] {
            metrics.observe(&REPLICATION_LAG, &["w1", HS], raw);
        }
        let batch = metrics.begin_flush(SimInstant::ZERO);
        let counts = batch.histograms.values().next().unwrap();
        assert_eq!(counts.count, 3);
        assert_eq!(counts.sum, 120_061_000);
        assert_eq!(counts.cumulative.first(), Some(&1));
        assert_eq!(counts.cumulative[REPLICATION_LAG.buckets.len() - 1], 2);
        assert_eq!(counts.cumulative.last(), Some(&3));
    }
}

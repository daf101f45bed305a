//! The observer: what the world records about its hosts and never lets them read back.
//!
//! Every observable act goes into the [`History`] the checks judge; the ids a writer has in
//! flight are kept to report them when it restarts; replication commands are counted; each
//! reader's position is read when the run ends (`position_at_end` records); the metrics
//! system's bookkeeping (each process incarnation's in-memory metrics and what the store
//! applied of it, to judge after the run what a crash lost; the endpoint's scrapes;
//! background-process spans, for the timeline and the in-flight check) is kept. Hosts only append here: no host decision may depend on it, so
//! none of its state is host memory and a crash loses none of it.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::{Rc, Weak};

use serde::Serialize;
use streamsim_models::metrics::node::increments;
use streamsim_models::metrics::{FlushBatch, SeriesKey};
use streamsim_models::time::SimInstant;
use streamsim_models::token::MultiWriterToken;

use super::process_metrics::Incarnation;
use crate::aggregation::{MetricsWatch, WatchedMetrics};
use crate::history::{Event, History, Record, RecordSink};

/// A span of the timeline: a background process of a host, from start to end (none if it
/// was still running when the run ended or its host crashed).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Span {
    pub host: String,
    pub incarnation: u32,
    pub name: String,
    pub start: SimInstant,
    pub end: Option<SimInstant>,
}

/// One scrape of the endpoint: what it held of each node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Scrape {
    pub at: SimInstant,
    pub nodes: Vec<ScrapedNode>,
}

/// A node's dataset as one scrape saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ScrapedNode {
    pub node: String,
    pub version: u64,
    /// When the store applied the flush this dataset reflects.
    pub updated_at: SimInstant,
    pub received_at: SimInstant,
    /// Counters and histogram counts.
    pub increments: Vec<(SeriesKey, i64)>,
    /// Background processes in flight, over every name.
    pub in_flight: i64,
}

/// A reader process, as the observer reads it when the run ends.
pub trait Positioned {
    /// The room token its id generator has reached.
    fn room_token(&self) -> MultiWriterToken;
}

/// What the observer does with each record: keeps it in the history (what the whole-history
/// checks judge; a long soak's is gigabytes) and hands it to each sink.
pub struct Recording {
    pub keep_history: bool,
    pub sinks: Vec<Rc<RefCell<dyn RecordSink>>>,
}

impl Default for Recording {
    /// Keep the history, no sinks.
    fn default() -> Self {
        Self {
            keep_history: true,
            sinks: Vec::new(),
        }
    }
}

/// The observer of one run (shared by its hosts through `Rc<Shared>`).
#[derive(Default)]
pub struct Observer {
    history: RefCell<History>,
    /// Set when the history is not kept.
    discard_history: Cell<bool>,
    /// The time of the last record (checked when the history is not kept).
    last_at: Cell<SimInstant>,
    sinks: RefCell<Vec<Rc<RefCell<dyn RecordSink>>>>,
    /// Per writer, the stream ids it allocated and has not yet finished.
    unfinished: RefCell<BTreeMap<String, BTreeSet<i64>>>,
    /// Replication commands put on a wire.
    messages: Cell<u64>,
    metric_incarnations: RefCell<Vec<Incarnation>>,
    applied_by_incarnation: RefCell<BTreeMap<(String, u32), BTreeMap<SeriesKey, i64>>>,
    /// The endpoint's scrapes and the background processes' spans, judged as they come.
    metrics_watch: RefCell<MetricsWatch>,
    /// Batches the store received again after applying them (their answer was lost).
    duplicate_batches: Cell<u64>,
    /// Each reader incarnation, to read its position when the run ends (a crashed one is
    /// gone: its tasks held the only strong references).
    readers: RefCell<Vec<(String, Weak<dyn Positioned>)>>,
}

/// What the observer kept, once the run is over.
pub struct Observed {
    pub history: History,
    pub messages: u64,
    pub metrics: ObservedMetrics,
}

/// The metrics system's bookkeeping, once the run is over.
pub struct ObservedMetrics {
    pub incarnations: Vec<Incarnation>,
    pub applied_by_incarnation: BTreeMap<(String, u32), BTreeMap<SeriesKey, i64>>,
    pub watched: WatchedMetrics,
    pub duplicate_batches: u64,
}

impl Observer {
    /// Records an event at the running host's simulated time.
    pub fn record(&self, event: Event) {
        self.record_at(crate::net::now(), event);
    }

    /// Where records go (set before the run starts); without the history kept, the metrics
    /// bookkeeping keeps only what its checks still need, scrapes from `workload_end` on.
    pub fn set_recording(&self, recording: Recording, workload_end: SimInstant) {
        self.discard_history.set(!recording.keep_history);
        *self.metrics_watch.borrow_mut() = MetricsWatch::new(recording.keep_history, workload_end);
        *self.sinks.borrow_mut() = recording.sinks;
    }

    /// Records an event at `at` (never before the last record).
    pub fn record_at(&self, at: SimInstant, event: Event) {
        tracing::debug!(at = %at, ?event);
        assert!(
            self.last_at.get() <= at,
            "history time went backwards: {} after {}",
            at,
            self.last_at.get()
        );
        self.last_at.set(at);
        let record = Record { at, event };
        for sink in self.sinks.borrow().iter() {
            sink.borrow_mut().record(&record);
        }
        if !self.discard_history.get() {
            self.history.borrow_mut().push(record);
        }
    }

    /// `host` allocated `ids`: in flight until finished.
    pub fn add_unfinished(&self, host: &str, ids: &[i64]) {
        self.unfinished
            .borrow_mut()
            .entry(host.to_owned())
            .or_default()
            .extend(ids);
    }

    /// `host` finished `ids` (committed or aborted).
    pub fn remove_unfinished(&self, host: &str, ids: &[i64]) {
        if let Some(set) = self.unfinished.borrow_mut().get_mut(host) {
            for id in ids {
                set.remove(id);
            }
        }
    }

    /// The ids a crashed incarnation left unfinished, forgotten once reported.
    pub fn take_unfinished(&self, host: &str) -> Vec<i64> {
        self.unfinished
            .borrow_mut()
            .remove(host)
            .map(|set| set.into_iter().collect())
            .unwrap_or_default()
    }

    /// One replication command went out on a wire.
    pub fn count_message(&self) {
        self.messages.set(self.messages.get() + 1);
    }

    /// A process incarnation's metrics, kept to judge after the run what it lost.
    pub fn watch_metrics(&self, incarnation: Incarnation) {
        self.metric_incarnations.borrow_mut().push(incarnation);
    }

    /// The store applied a batch (for the first time).
    pub fn note_applied(&self, batch: &FlushBatch) {
        let mut applied = self.applied_by_incarnation.borrow_mut();
        let totals = applied
            .entry((batch.node.clone(), batch.incarnation))
            .or_default();
        for (series, amount) in increments(&batch.counters, &batch.histograms) {
            *totals.entry(series).or_insert(0) += amount;
        }
        self.metrics_watch
            .borrow_mut()
            .applied(&batch.node, batch.incarnation, batch.captured_at);
    }

    /// The store received a batch it had already applied.
    pub fn note_duplicate_batch(&self) {
        self.duplicate_batches.set(self.duplicate_batches.get() + 1);
    }

    /// Incarnation `incarnation` of `node` charged one unit of `cost` to its background
    /// process `process`; `needless`: nothing it knew called for it (`describe` says what it
    /// was, for the report).
    pub fn cost(
        &self,
        node: (&str, u32),
        cost: crate::aggregation::Cost,
        process: &str,
        needless: bool,
        describe: impl FnOnce() -> String,
    ) {
        self.metrics_watch
            .borrow_mut()
            .cost(node, cost, process, needless, describe);
    }

    /// The endpoint scraped itself.
    pub fn note_scrape(&self, scrape: Scrape) {
        self.metrics_watch.borrow_mut().scrape(scrape);
    }

    /// A background process began: its span's index, to close it.
    pub fn open_span(&self, host: &str, incarnation: u32, name: &str) -> usize {
        self.metrics_watch
            .borrow_mut()
            .open_span(host, incarnation, name, crate::net::now())
    }

    /// The background process of span `index` ended.
    pub fn close_span(&self, index: usize) {
        self.metrics_watch
            .borrow_mut()
            .close_span(index, crate::net::now());
    }

    /// A reader process started: its position is recorded when the run ends.
    pub fn watch_reader(&self, name: &str, process: Weak<dyn Positioned>) {
        self.readers.borrow_mut().push((name.to_owned(), process));
    }

    /// Records, at `at` (the run's end), the room token of every reader still running: the
    /// position its id generator reached, which its notifier announces only when something
    /// newer is released. (A notifier left behind an event its position passed is evidence
    /// of a loss only where this or a client's token shows the position passed it.)
    pub fn record_reader_positions(&self, at: SimInstant) {
        let readers = std::mem::take(&mut *self.readers.borrow_mut());
        // The latest incarnation of each reader, in name order.
        let latest: BTreeMap<String, Weak<dyn Positioned>> = readers.into_iter().collect();
        for (name, process) in latest {
            if let Some(process) = process.upgrade() {
                let token = process.room_token();
                self.record_at(
                    at,
                    Event::PositionAtEnd {
                        reader: name,
                        token,
                    },
                );
            }
        }
    }

    /// Everything kept, taken out once the run is over (the sinks are let go).
    pub fn finish(&self) -> Observed {
        self.sinks.take();
        Observed {
            history: self.history.take(),
            messages: self.messages.get(),
            metrics: ObservedMetrics {
                incarnations: self.metric_incarnations.take(),
                applied_by_incarnation: self.applied_by_incarnation.take(),
                watched: self.metrics_watch.take().finish(),
                duplicate_batches: self.duplicate_batches.get(),
            },
        }
    }
}

//! The metrics observer's running account of the endpoint's scrapes and the background
//! processes' spans: what the metrics checks need of them, judged as the run goes, so that a
//! long run need not keep every scrape (one per flush interval, each holding every node's
//! counters) and every span (one per background process run).
//!
//! Judged as each scrape arrives: counters never go down (`metrics_counters_never_decrease`
//! compares a scrape with the one before) and in-flight gauges are never negative (the first
//! half of `metrics_in_flight_accurate`). Kept: the scrapes from `retain_scrapes_from` on
//! (`metrics_staleness_bounded` judges only scrapes after the last heal, which is never before
//! the end of the workload), and the spans a final dataset may still be compared with (open,
//! or ended at or after the newest capture the store applied of their incarnation: the
//! second half of `metrics_in_flight_accurate`). The most background processes of each
//! (host, name) in flight at once is counted as spans open and close. With `keep_all` (the
//! timeline needs every span, `--judge whole` every scrape) nothing is let go; the verdicts
//! are the same either way, and [`WatchedMetrics::needs_whole`] says when a pruned account
//! cannot give them (the run is then replayed and judged whole).

use std::collections::BTreeMap;

use streamsim_models::metrics::SeriesKey;
use streamsim_models::time::SimInstant;

use super::violation;
use crate::checks::Violation;
use crate::world::observer::{Scrape, Span};

/// The running count of one (host, name)'s background processes in flight, and its peak.
/// Within one millisecond starts count before ends (as `peak_in_flight` always counted): an
/// end is applied only once time has moved past its millisecond.
#[derive(Clone, Debug, Default)]
struct PeakCounter {
    running: i64,
    /// Ends in the current millisecond, not yet applied: (when, how many).
    ending: Option<(SimInstant, i64)>,
    peak: i64,
}

impl PeakCounter {
    fn settle_before(&mut self, at: SimInstant) {
        if let Some((when, count)) = self.ending {
            if when < at {
                self.running -= count;
                self.ending = None;
            }
        }
    }

    fn start(&mut self, at: SimInstant) {
        self.settle_before(at);
        self.running += 1;
        self.peak = self.peak.max(self.running);
    }

    fn end(&mut self, at: SimInstant) {
        self.settle_before(at);
        let ending = self.ending.get_or_insert((at, 0));
        ending.1 += 1;
    }
}

/// The running account (see the module docs).
#[derive(Debug)]
pub struct MetricsWatch {
    keep_all: bool,
    retain_scrapes_from: SimInstant,
    scrapes: Vec<Scrape>,
    scrape_count: usize,
    last_scrape_at: SimInstant,
    /// Each node's counters at the scrape before.
    last_increments: BTreeMap<String, BTreeMap<SeriesKey, i64>>,
    counter_decreases: Vec<Violation>,
    negative_in_flight: Vec<Violation>,
    /// Spans by the index `open_span` gave them.
    spans: BTreeMap<usize, Span>,
    next_span: usize,
    /// Per (node, incarnation): the newest capture the store applied. Spans of the
    /// incarnation that ended before it were let go (unless `keep_all`).
    watermarks: BTreeMap<(String, u32), SimInstant>,
    /// By host, then name (looked up without building keys: spans open per message).
    peaks: BTreeMap<String, BTreeMap<String, PeakCounter>>,
    costs: BTreeMap<CostKey, CostLedger>,
}

/// Whose cost a ledger holds: (node, incarnation, cost, the background process charged).
pub type CostKey = (String, u32, Cost, String);

/// A cost the metrics count that the protocol accounts for: each unit is either called for
/// by what the process knew, or needless (done only by a historical bug).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cost {
    /// A POSITION's catch-up read: a database transaction of `process-replication-data`.
    CatchUpRead,
    /// A start of the writer's streamer loop, the `replication_notifier` background process.
    NotifierLoop,
}

impl Cost {
    /// The counter family (labelled with the charged process's `name`) that counts it.
    pub fn family(self) -> &'static str {
        match self {
            Cost::CatchUpRead => {
                streamsim_models::metrics::series::BACKGROUND_PROCESS_DB_TXN_COUNT.name
            }
            Cost::NotifierLoop => {
                streamsim_models::metrics::series::BACKGROUND_PROCESS_START_COUNT.name
            }
        }
    }

    /// What one unit is, in the plural.
    pub fn units(self) -> &'static str {
        match self {
            Cost::CatchUpRead => "catch-up database reads",
            Cost::NotifierLoop => "replication_notifier starts",
        }
    }

    /// What calls for one unit.
    pub fn called_for_by(self) -> &'static str {
        match self {
            Cost::CatchUpRead => "its POSITIONs called for",
            Cost::NotifierLoop => "its pokes that had anything to send",
        }
    }
}

/// One incarnation's units of one [`Cost`] (a few numbers, whatever the run's length).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CostLedger {
    /// Units the process's knowledge called for.
    pub justified: i64,
    /// Units nothing called for.
    pub needless: i64,
    /// The first needless unit, described.
    pub first_needless: Option<String>,
}

/// What the account holds once the run is over.
#[derive(Clone, Debug, Default)]
pub struct WatchedMetrics {
    /// The scrapes kept: every one with `keep_all`, else those from `retained_from`.
    pub scrapes: Vec<Scrape>,
    pub retained_from: SimInstant,
    pub scrape_count: usize,
    pub last_scrape_at: SimInstant,
    pub counter_decreases: Vec<Violation>,
    pub negative_in_flight: Vec<Violation>,
    /// The spans kept, in the order they began.
    pub spans: Vec<Span>,
    /// Per (node, incarnation): spans that ended before this were let go.
    pub watermarks: BTreeMap<(String, u32), SimInstant>,
    /// The most background processes of each (host, name) in flight at once.
    pub peak_in_flight: BTreeMap<(String, String), usize>,
    /// Per (node, incarnation, cost, process charged): the units it charged, as the
    /// protocol accounts them.
    pub costs: BTreeMap<CostKey, CostLedger>,
}

impl Default for MetricsWatch {
    /// Keeps everything.
    fn default() -> Self {
        Self::new(true, SimInstant::ZERO)
    }
}

impl MetricsWatch {
    /// An account keeping everything (`keep_all`) or only what the checks still need, with
    /// scrapes kept from `retain_scrapes_from` (the end of the workload, before which no
    /// heal's staleness window can begin).
    pub fn new(keep_all: bool, retain_scrapes_from: SimInstant) -> Self {
        Self {
            keep_all,
            retain_scrapes_from,
            scrapes: Vec::new(),
            scrape_count: 0,
            last_scrape_at: SimInstant::ZERO,
            last_increments: BTreeMap::new(),
            counter_decreases: Vec::new(),
            negative_in_flight: Vec::new(),
            spans: BTreeMap::new(),
            next_span: 0,
            watermarks: BTreeMap::new(),
            peaks: BTreeMap::new(),
            costs: BTreeMap::new(),
        }
    }

    /// One unit of `cost` was charged to background process `process` of incarnation
    /// `incarnation` of `node`.
    pub fn cost(
        &mut self,
        (node, incarnation): (&str, u32),
        cost: Cost,
        process: &str,
        needless: bool,
        describe: impl FnOnce() -> String,
    ) {
        let reads = self
            .costs
            .entry((node.to_owned(), incarnation, cost, process.to_owned()))
            .or_default();
        if needless {
            reads.needless += 1;
            if reads.first_needless.is_none() {
                reads.first_needless = Some(describe());
            }
        } else {
            reads.justified += 1;
        }
    }

    /// The endpoint scraped itself.
    pub fn scrape(&mut self, scrape: Scrape) {
        debug_assert!(scrape.at >= self.last_scrape_at, "scrapes in time order");
        self.scrape_count += 1;
        self.last_scrape_at = scrape.at;
        for node in &scrape.nodes {
            let before = self.last_increments.entry(node.node.clone()).or_default();
            for (series, value) in &node.increments {
                if let Some(previous) = before.get(series) {
                    if value < previous {
                        self.counter_decreases.push(violation(
                            "metrics_counters_never_decrease",
                            scrape.at,
                            vec![node.node.clone()],
                            format!(
                                "{series} of {} went down from {previous} to {value} at the endpoint",
                                node.node
                            ),
                        ));
                    }
                }
                before.insert(series.clone(), *value);
            }
            if node.in_flight < 0 {
                self.negative_in_flight.push(violation(
                    "metrics_in_flight_accurate",
                    scrape.at,
                    vec![node.node.clone()],
                    format!(
                        "{} has {} background processes in flight",
                        node.node, node.in_flight
                    ),
                ));
            }
        }
        if self.keep_all || scrape.at >= self.retain_scrapes_from {
            self.scrapes.push(scrape);
        }
    }

    /// A background process began at `at`: its span's index, to close it.
    pub fn open_span(&mut self, host: &str, incarnation: u32, name: &str, at: SimInstant) -> usize {
        let index = self.next_span;
        self.next_span += 1;
        let by_name = match self.peaks.get_mut(host) {
            Some(by_name) => by_name,
            None => self.peaks.entry(host.to_owned()).or_default(),
        };
        match by_name.get_mut(name) {
            Some(peak) => peak.start(at),
            None => by_name.entry(name.to_owned()).or_default().start(at),
        }
        self.spans.insert(
            index,
            Span {
                host: host.to_owned(),
                incarnation,
                name: name.to_owned(),
                start: at,
                end: None,
            },
        );
        index
    }

    /// The background process of span `index` ended at `at`.
    pub fn close_span(&mut self, index: usize, at: SimInstant) {
        let Some(span) = self.spans.get_mut(&index) else {
            return;
        };
        span.end = Some(at);
        if let Some(peak) = self
            .peaks
            .get_mut(&span.host)
            .and_then(|by_name| by_name.get_mut(&span.name))
        {
            peak.end(at);
        }
    }

    /// The store applied a batch of `node`'s `incarnation` captured at `captured_at`: every
    /// later dataset of that incarnation is captured at or after it, so its spans that ended
    /// before it cannot be compared with any.
    pub fn applied(&mut self, node: &str, incarnation: u32, captured_at: SimInstant) {
        let watermark = self
            .watermarks
            .entry((node.to_owned(), incarnation))
            .or_insert(captured_at);
        *watermark = (*watermark).max(captured_at);
        let watermark = *watermark;
        if !self.keep_all {
            self.spans.retain(|_, span| {
                span.host != node
                    || span.incarnation != incarnation
                    || span.end.is_none_or(|end| end >= watermark)
            });
        }
    }

    /// The account, once the run is over.
    pub fn finish(self) -> WatchedMetrics {
        WatchedMetrics {
            scrapes: self.scrapes,
            retained_from: if self.keep_all {
                SimInstant::ZERO
            } else {
                self.retain_scrapes_from
            },
            scrape_count: self.scrape_count,
            last_scrape_at: self.last_scrape_at,
            costs: self.costs,
            counter_decreases: self.counter_decreases,
            negative_in_flight: self.negative_in_flight,
            spans: self.spans.into_values().collect(),
            watermarks: if self.keep_all {
                BTreeMap::new()
            } else {
                self.watermarks
            },
            peak_in_flight: self
                .peaks
                .into_iter()
                .flat_map(|(host, by_name)| {
                    by_name.into_iter().map(move |(name, peak)| {
                        (
                            (host.clone(), name),
                            usize::try_from(peak.peak).unwrap_or(0),
                        )
                    })
                })
                .collect(),
        }
    }
}

impl WatchedMetrics {
    /// Why the checks cannot be judged on what was kept, if they cannot: a final dataset
    /// captured before spans of its incarnation were let go, or a staleness window opening
    /// before the scrapes kept. (Neither happens while the store only moves forward and
    /// every heal comes after the workload; a run where one does is replayed and judged on
    /// everything.)
    pub fn needs_whole(
        &self,
        store: &[streamsim_models::metrics::Dataset],
        staleness_from: SimInstant,
    ) -> Option<String> {
        if staleness_from < self.retained_from {
            return Some(format!(
                "the staleness window opens at {staleness_from}, before the scrapes kept (from {})",
                self.retained_from
            ));
        }
        store.iter().find_map(|dataset| {
            let watermark = self
                .watermarks
                .get(&(dataset.node.clone(), dataset.incarnation))?;
            (dataset.captured_at < *watermark).then(|| {
                format!(
                    "{}'s final dataset was captured at {}, before spans up to {watermark} were let go",
                    dataset.node, dataset.captured_at
                )
            })
        })
    }
}

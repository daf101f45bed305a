//! Each metrics invariant on hand-made outcomes: quiet when the system kept its promise,
//! loud when it did not.

use super::*;
use crate::world::observer::{Scrape, ScrapedNode, Span};
use streamsim_models::metrics::series::{
    BACKGROUND_PROCESS_IN_FLIGHT_COUNT, BACKGROUND_PROCESS_START_COUNT,
};

fn series() -> SeriesKey {
    SeriesKey::new(&BACKGROUND_PROCESS_START_COUNT, &["persist_events", "hs"])
}

fn map(amount: i64) -> BTreeMap<SeriesKey, i64> {
    if amount == 0 {
        BTreeMap::new()
    } else {
        [(series(), amount)].into_iter().collect()
    }
}

fn incarnation(lifetime: i64, applied: i64, unflushed: i64, pending: i64) -> IncarnationOutcome {
    IncarnationOutcome {
        node: "w1".to_owned(),
        incarnation: 1,
        started_at: SimInstant::ZERO,
        crashed: false,
        lifetime: map(lifetime),
        unflushed: map(unflushed),
        unapplied_pending: map(pending),
        applied_seq: 1,
        applied: map(applied),
    }
}

fn store(amount: i64) -> Dataset {
    Dataset {
        node: "w1".to_owned(),
        version: 1,
        counters: map(amount),
        ..Dataset::default()
    }
}

fn outcome(incarnations: Vec<IncarnationOutcome>, stored: i64) -> MetricsOutcome {
    MetricsOutcome {
        flush_interval_ms: 1_000,
        staleness_bound_ms: 1_100,
        incarnations,
        store: vec![store(stored)],
        running: ["w1".to_owned()].into_iter().collect(),
        ..MetricsOutcome::default()
    }
}

/// What a [`MetricsWatch`] keeping everything makes of `scrapes` and `spans` (each span
/// opened at its start and closed at its end, in time order, starts first within a
/// millisecond, as the world's processes do).
fn watched(scrapes: Vec<Scrape>, spans: &[Span]) -> WatchedMetrics {
    let mut watch = MetricsWatch::default();
    let mut moments: Vec<(SimInstant, bool, usize)> = Vec::new();
    for (index, span) in spans.iter().enumerate() {
        moments.push((span.start, false, index));
        if let Some(end) = span.end {
            moments.push((end, true, index));
        }
    }
    moments.sort();
    let mut opened = BTreeMap::new();
    for (at, is_end, index) in moments {
        let span = &spans[index];
        if is_end {
            watch.close_span(opened[&index], at);
        } else {
            opened.insert(
                index,
                watch.open_span(&span.host, span.incarnation, &span.name, at),
            );
        }
    }
    for scrape in scrapes {
        watch.scrape(scrape);
    }
    watch.finish()
}

fn names(violations: &[Violation]) -> Vec<&'static str> {
    violations.iter().map(|v| v.invariant).collect()
}

#[test]
fn an_accounted_run_passes_every_check() {
    let run = outcome(vec![incarnation(10, 7, 2, 1)], 7);
    assert!(check_metrics(&run, SimInstant::ZERO).is_empty());
}

#[test]
fn a_batch_applied_twice_is_double_counting() {
    // Counted 10, flushed all, but the store applied 20 and holds 20.
    let run = outcome(vec![incarnation(10, 20, 0, 0)], 20);
    let found = names(&check_metrics(&run, SimInstant::ZERO));
    assert!(found.contains(&"metrics_no_double_counting"), "{found:?}");
    // The store holding more than its applied batches is double counting too.
    let run = outcome(vec![incarnation(10, 10, 0, 0)], 12);
    assert_eq!(
        names(&no_double_counting(&run, SimInstant::ZERO)),
        ["metrics_no_double_counting"]
    );
}

#[test]
fn increments_lost_without_a_crash_are_reported() {
    // Counted 10, 7 applied, but the memory holds only 1 more: 2 vanished.
    let run = outcome(vec![incarnation(10, 7, 1, 0)], 7);
    assert_eq!(
        names(&loss_only_by_crash(&run, SimInstant::ZERO)),
        ["metrics_loss_only_by_crash"]
    );
}

#[test]
fn a_crash_loses_exactly_what_its_memory_held() {
    let mut crashed = incarnation(10, 6, 3, 1);
    crashed.crashed = true;
    let run = outcome(vec![crashed], 6);
    assert!(check_metrics(&run, SimInstant::ZERO).is_empty());
    let losses = crash_losses(&run);
    assert_eq!(losses.len(), 1);
    assert_eq!((losses[0].predicted, losses[0].measured), (4, 4));
}

fn scraped(at_ms: u64, value: i64, updated_ms: u64, in_flight: i64) -> Scrape {
    Scrape {
        at: SimInstant::from_ms(at_ms),
        nodes: vec![ScrapedNode {
            node: "w1".to_owned(),
            version: 1,
            updated_at: SimInstant::from_ms(updated_ms),
            received_at: SimInstant::from_ms(updated_ms),
            increments: vec![(series(), value)],
            in_flight,
        }],
    }
}

#[test]
fn a_counter_going_down_at_the_endpoint_is_caught() {
    let mut run = outcome(Vec::new(), 0);
    run.watched = watched(
        vec![scraped(1_000, 5, 900, 0), scraped(2_000, 4, 1_900, 0)],
        &[],
    );
    assert_eq!(
        names(&counters_never_decrease(&run, SimInstant::ZERO)),
        ["metrics_counters_never_decrease"]
    );
    run.watched = watched(
        vec![scraped(1_000, 5, 900, 0), scraped(2_000, 5, 1_900, 0)],
        &[],
    );
    assert!(counters_never_decrease(&run, SimInstant::ZERO).is_empty());
}

#[test]
fn a_stale_view_after_the_heal_is_caught_but_not_before() {
    let mut run = outcome(vec![incarnation(0, 0, 0, 0)], 0);
    let last_heal = SimInstant::from_ms(10_000);
    // Stale during the faults (before the heal): not judged.
    run.watched = watched(vec![scraped(5_000, 0, 1_000, 0)], &[]);
    assert!(staleness_bounded(&run, last_heal).is_empty());
    // Fresh after the heal: fine. Stale after it: caught, once per node.
    run.watched = watched(vec![scraped(14_000, 0, 13_500, 0)], &[]);
    assert!(staleness_bounded(&run, last_heal).is_empty());
    run.watched = watched(
        vec![scraped(14_000, 0, 11_000, 0), scraped(15_000, 0, 11_000, 0)],
        &[],
    );
    assert_eq!(
        names(&staleness_bounded(&run, last_heal)),
        ["metrics_staleness_bounded"]
    );
    // A node that is down at the end is not expected to report.
    run.running.clear();
    assert!(staleness_bounded(&run, last_heal).is_empty());
}

fn in_flight(value: i64, captured_ms: u64) -> Dataset {
    Dataset {
        node: "w1".to_owned(),
        version: 1,
        incarnation: 1,
        captured_at: SimInstant::from_ms(captured_ms),
        gauges: [(
            SeriesKey::new(
                &BACKGROUND_PROCESS_IN_FLIGHT_COUNT,
                &["persist_events", "hs"],
            ),
            value,
        )]
        .into_iter()
        .collect(),
        ..Dataset::default()
    }
}

fn persist_span(start: u64, end: Option<u64>) -> Span {
    Span {
        host: "w1".to_owned(),
        incarnation: 1,
        name: "persist_events".to_owned(),
        start: SimInstant::from_ms(start),
        end: end.map(SimInstant::from_ms),
    }
}

#[test]
fn in_flight_gauges_must_tell_the_truth_and_never_go_negative() {
    let mut run = outcome(Vec::new(), 0);
    let spans = [persist_span(100, Some(300)), persist_span(200, None)];
    run.watched = watched(Vec::new(), &spans);
    // Two running at 250, one at 350, none before 100.
    for (value, at, truthful) in [
        (2, 250, true),
        (1, 350, true),
        (0, 50, true),
        (0, 250, false),
        (3, 250, false),
    ] {
        run.store = vec![in_flight(value, at)];
        assert_eq!(
            in_flight_accurate(&run, SimInstant::ZERO).is_empty(),
            truthful,
            "{value} at {at}"
        );
    }
    // Within the millisecond of a start or an end, either count is true.
    run.store = vec![in_flight(1, 100)];
    assert!(in_flight_accurate(&run, SimInstant::ZERO).is_empty());
    run.store = vec![in_flight(2, 300)];
    assert!(in_flight_accurate(&run, SimInstant::ZERO).is_empty());
    // A node that is down at the end is not judged; a negative value at a scrape always is.
    run.store = vec![in_flight(5, 250)];
    run.running.clear();
    assert!(in_flight_accurate(&run, SimInstant::ZERO).is_empty());
    run.watched = watched(vec![scraped(1_000, 0, 900, -1)], &spans);
    assert_eq!(in_flight_accurate(&run, SimInstant::ZERO).len(), 1);
}

#[test]
fn peaks_count_overlapping_spans_per_host_and_name() {
    let span = |start: u64, end: Option<u64>| Span {
        host: "r1".to_owned(),
        incarnation: 1,
        name: "replication-RDATA-events".to_owned(),
        start: SimInstant::from_ms(start),
        end: end.map(SimInstant::from_ms),
    };
    let mut run = outcome(Vec::new(), 0);
    run.watched = watched(
        Vec::new(),
        &[
            span(0, Some(10)),
            span(5, Some(20)),
            span(8, None),
            span(30, Some(30)),
        ],
    );
    let peaks = peak_in_flight(&run);
    assert_eq!(
        peaks[&("r1".to_owned(), "replication-RDATA-events".to_owned())],
        3
    );
}

#[test]
fn peaks_count_starts_before_ends_within_a_millisecond() {
    let span = |start: u64, end: u64| Span {
        host: "w1".to_owned(),
        incarnation: 1,
        name: "persist_events".to_owned(),
        start: SimInstant::from_ms(start),
        end: Some(SimInstant::from_ms(end)),
    };
    // One ends at 10 as another starts there: they overlap. Ends before a start a
    // millisecond later do not.
    let watched = watched(Vec::new(), &[span(0, 10), span(10, 12), span(13, 14)]);
    assert_eq!(
        watched.peak_in_flight[&("w1".to_owned(), "persist_events".to_owned())],
        2
    );
}

#[test]
fn a_pruned_account_keeps_what_a_later_dataset_can_be_compared_with() {
    let span = |start: u64, end: Option<u64>| Span {
        host: "w1".to_owned(),
        incarnation: 1,
        name: "persist_events".to_owned(),
        start: SimInstant::from_ms(start),
        end: end.map(SimInstant::from_ms),
    };
    let mut watch = MetricsWatch::new(false, SimInstant::from_ms(5_000));
    let ms = SimInstant::from_ms;
    let done = watch.open_span("w1", 1, "persist_events", ms(100));
    let open = watch.open_span("w1", 1, "persist_events", ms(150));
    let at_capture = watch.open_span("w1", 1, "persist_events", ms(200));
    watch.close_span(done, ms(120));
    watch.close_span(at_capture, ms(300));
    watch.applied("w1", 1, ms(300));
    watch.scrape(scraped(4_000, 0, 3_900, 0));
    watch.scrape(scraped(6_000, 0, 5_900, 0));
    let _ = open;
    let kept = watch.finish();
    // The span that ended before the capture is let go; the open one and the one ending at
    // the capture's millisecond are kept; scrapes before the workload's end are counted, not
    // kept.
    assert_eq!(kept.spans, vec![span(150, None), span(200, Some(300))]);
    assert_eq!((kept.scrape_count, kept.scrapes.len()), (2, 1));
    let mut run = outcome(Vec::new(), 0);
    run.store = vec![in_flight(2, 300)];
    assert_eq!(kept.needs_whole(&run.store, ms(6_000)), None);
    // A final dataset captured before the let-go spans, or a staleness window opening
    // before the kept scrapes, cannot be judged on what was kept.
    run.store = vec![in_flight(2, 250)];
    assert!(kept.needs_whole(&run.store, ms(6_000)).is_some());
    run.store = vec![in_flight(2, 300)];
    assert!(kept.needs_whole(&run.store, ms(4_000)).is_some());
    run.watched = kept;
    assert!(in_flight_accurate(&run, SimInstant::ZERO).is_empty());
}

/// An incarnation of w1 whose metrics counted `counted` starts of `persist_events`, with
/// `justified` and `needless` of them booked as a [`Cost::NotifierLoop`] of that process.
fn costed(counted: i64, justified: i64, needless: i64) -> Vec<Violation> {
    let mut watch = MetricsWatch::default();
    for _ in 0..justified {
        watch.cost(
            ("w1", 1),
            Cost::NotifierLoop,
            "persist_events",
            false,
            || unreachable!("only needless units are described"),
        );
    }
    for n in 0..needless {
        watch.cost(
            ("w1", 1),
            Cost::NotifierLoop,
            "persist_events",
            true,
            || format!("needless {n}"),
        );
    }
    let outcome = MetricsOutcome {
        watched: watch.finish(),
        ..outcome(vec![incarnation(counted, counted, 0, 0)], counted)
    };
    check_metrics(&outcome, SimInstant::ZERO)
        .into_iter()
        .filter(|v| v.invariant == "metrics_cost_justified")
        .collect()
}

#[test]
fn a_cost_the_metrics_count_beyond_what_was_called_for_is_caught() {
    assert!(costed(5, 5, 0).is_empty());
    // Units the metrics never counted (a process that had ended) are no excess.
    assert!(costed(3, 5, 0).is_empty());
    let found = costed(7, 5, 2);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].message.contains("2 more than") && found[0].message.contains("needless 0"),
        "{}",
        found[0].message
    );
}

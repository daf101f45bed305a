//! The metrics system end to end: what crashes lose, the endpoint's text, determinism of the
//! metrics and the timeline, and the background-process figures README quotes.

use std::collections::BTreeMap;

use streamsim_models::metrics::node::increments;
use streamsim_sim::aggregation::{crash_losses, peak_in_flight};
use streamsim_sim::runner::{run_seed, RunReport};
use streamsim_sim::scenario::Scenario;
use streamsim_sim::timeline;

use crate::support::repo_root;

fn scenario(name: &str) -> Scenario {
    Scenario::load(&repo_root().join("scenarios").join(name)).unwrap_or_else(|e| panic!("{e}"))
}

fn replay(name: &str, seed: u64) -> String {
    format!("replay: streamsim metrics scenarios/{name} --seed {seed}")
}

fn metric_violations(report: &RunReport) -> Vec<String> {
    report
        .violations
        .iter()
        .filter(|v| v.invariant.starts_with("metrics_"))
        .map(|v| format!("[{}] {}", v.invariant, v.message))
        .collect()
}

/// A node's counter (summed over label sets matching `name` in `label`) in the store.
fn stored(report: &RunReport, node: &str, family: &str, label: (&str, &str)) -> i64 {
    report
        .metrics
        .store
        .iter()
        .filter(|dataset| dataset.node == node)
        .flat_map(|dataset| increments(&dataset.counters, &dataset.histograms))
        .filter(|(series, _)| series.family == family && series.label(label.0) == Some(label.1))
        .map(|(_, value)| value)
        .sum()
}

#[test]
fn crashes_before_a_flush_lose_exactly_what_the_model_predicts() {
    let name = "metrics_crash_before_flush.toml";
    for seed in 0..3 {
        let report = run_seed(&scenario(name), seed);
        assert!(
            metric_violations(&report).is_empty(),
            "seed {seed}: {:?}\n{}",
            metric_violations(&report),
            replay(name, seed)
        );
        let losses = crash_losses(&report.metrics);
        let mut nodes: Vec<&str> = losses.iter().map(|loss| loss.node.as_str()).collect();
        nodes.sort_unstable();
        assert_eq!(
            nodes,
            ["r1", "w2"],
            "seed {seed}: {losses:?}\n{}",
            replay(name, seed)
        );
        for loss in &losses {
            assert!(loss.predicted > 0, "seed {seed}: {loss:?}");
            assert_eq!(loss.predicted, loss.measured, "seed {seed}: {loss:?}");
        }
    }
}

#[test]
fn without_crashes_nothing_is_lost_and_every_node_reaches_the_endpoint() {
    let name = "smoke.toml";
    let report = run_seed(&scenario(name), 0);
    assert!(crash_losses(&report.metrics).is_empty());
    assert!(metric_violations(&report).is_empty(), "{}", replay(name, 0));
    let text = &report.metrics.endpoint_text;
    for node in ["w1", "w2", "r1", "r2"] {
        assert!(
            text.contains(&format!("node=\"{node}\"")),
            "no series of {node} at the endpoint"
        );
    }
    assert!(text.contains("# TYPE synapse_background_process_start_count_total counter"));
    assert!(text.contains("# TYPE streamsim_replication_lag_seconds histogram"));
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        assert!(
            line.contains("node=\""),
            "a series without a node label: {line}"
        );
    }
}

#[test]
fn metrics_and_timeline_are_deterministic() {
    let scenario = scenario("metrics_crash_before_flush.toml");
    let render = |report: &RunReport| {
        let trace = timeline::build(
            &scenario.hosts(),
            &report.history,
            &report.metrics,
            &report.violations,
            report.ended_at,
        );
        (report.metrics.endpoint_text.clone(), trace.to_string())
    };
    let first = render(&run_seed(&scenario, 4));
    assert_eq!(first, render(&run_seed(&scenario, 4)));
    assert_ne!(first.0, render(&run_seed(&scenario, 5)).0);
}

/// README's finding: how many background processes each replication command starts, and
/// how the historical linearizer piles them up when a reader falls behind.
#[test]
fn a_reader_falling_behind_piles_up_processes_only_with_the_linearizer() {
    let seed = 1;
    let per_stream = run_seed(&scenario("reader_falls_behind.toml"), seed);
    let linearizer = run_seed(&scenario("reader_falls_behind_linearizer.toml"), seed);
    // The queue discipline changes only which processes run, not what the reader does.
    assert_eq!(
        per_stream.history.to_json_lines(),
        linearizer.history.to_json_lines(),
        "the two queue disciplines must behave alike"
    );
    let commands = |report: &RunReport| {
        ["RDATA", "POSITION"]
            .iter()
            .map(|command| {
                stored(
                    report,
                    "r1",
                    "synapse_replication_tcp_protocol_inbound_commands",
                    ("command", command),
                )
            })
            .sum::<i64>()
    };
    let starts = |report: &RunReport, name: &str| {
        stored(
            report,
            "r1",
            "synapse_background_process_start_count",
            ("name", name),
        )
    };
    let peaks = |report: &RunReport| -> BTreeMap<String, usize> {
        peak_in_flight(&report.metrics)
            .into_iter()
            .filter(|((host, _), _)| host == "r1")
            .map(|((_, name), peak)| (name, peak))
            .collect()
    };
    let received = commands(&per_stream);
    assert!(received > 1_000, "{received}");
    // One queue per stream (per connection here): a handful of starts, at most one process
    // per connection in flight.
    let queue_starts = starts(&per_stream, "process-replication-data");
    assert!((1..=10).contains(&queue_starts), "{queue_starts}");
    assert!(peaks(&per_stream)["process-replication-data"] <= 2);
    // The linearizer: one process per command, and hundreds waiting at once.
    assert_eq!(
        starts(&linearizer, "replication-RDATA-test_stream")
            + starts(&linearizer, "replication-POSITION"),
        received
    );
    assert!(peaks(&linearizer)["replication-RDATA-test_stream"] > 200);
}

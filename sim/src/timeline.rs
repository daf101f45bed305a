//! A run as a Chrome trace-event file (`{"traceEvents":[...]}`), for ui.perfetto.dev or
//! chrome://tracing: one process track per host, `X` spans for background processes (the
//! writers' `persist_events` are the persists), `i` instants for faults, heals and
//! violations, and `C` counters for each reader's token and each host's background
//! processes in flight.
//!
//! Timestamps are simulated microseconds. Spans of one host that overlap go on separate
//! lanes (threads), because trace viewers expect the slices of one thread to nest.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use streamsim_models::time::SimInstant;

use crate::aggregation::MetricsOutcome;
use crate::checks::{Violation, NOTIFIER};
use crate::history::{Event, History};

/// Microseconds of simulated time, the trace's unit.
fn ts(at: SimInstant) -> u64 {
    at.as_ms() * 1_000
}

/// The track (trace "process") of each host: in the order the hosts are given, from 1; 0 is
/// the run itself (global instants).
fn pids(hosts: &[String]) -> BTreeMap<&str, u64> {
    hosts
        .iter()
        .enumerate()
        .map(|(index, host)| (host.as_str(), index as u64 + 1))
        .collect()
}

/// The instant a violation is drawn at, named as the timeline names it.
pub fn violation_instant_name(violation: &Violation) -> String {
    format!("violation: {}", violation.invariant)
}

/// Builds the trace of one run.
pub fn build(
    hosts: &[String],
    history: &History,
    metrics: &MetricsOutcome,
    violations: &[Violation],
    ended_at: SimInstant,
) -> Value {
    let pids = pids(hosts);
    let mut events = vec![json!({
        "ph": "M", "name": "process_name", "pid": 0, "tid": 0, "args": {"name": "run"}
    })];
    for (host, pid) in &pids {
        events.push(json!({
            "ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": host}
        }));
        events.push(json!({
            "ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0,
            "args": {"sort_index": pid}
        }));
    }

    // Background processes, each on the first lane of its host free at its start.
    let mut lanes: BTreeMap<&str, Vec<SimInstant>> = BTreeMap::new();
    let mut spans: Vec<_> = metrics.watched.spans.iter().collect();
    spans.sort_by_key(|span| (span.start, span.end.unwrap_or(ended_at)));
    for span in spans {
        let Some(pid) = pids.get(span.host.as_str()) else {
            continue;
        };
        let end = span.end.unwrap_or(ended_at).max(span.start);
        let host_lanes = lanes.entry(&span.host).or_default();
        let lane = match host_lanes.iter().position(|free_at| *free_at <= span.start) {
            Some(lane) => {
                host_lanes[lane] = end;
                lane
            }
            None => {
                host_lanes.push(end);
                events.push(json!({
                    "ph": "M", "name": "thread_name", "pid": pid, "tid": host_lanes.len(),
                    "args": {"name": format!("background processes #{}", host_lanes.len())}
                }));
                host_lanes.len() - 1
            }
        };
        events.push(json!({
            "ph": "X", "cat": "background_process", "name": span.name,
            "pid": pid, "tid": lane + 1, "ts": ts(span.start), "dur": ts(end) - ts(span.start),
            "args": {"incarnation": span.incarnation, "unfinished": span.end.is_none()}
        }));
    }

    // Each host's background processes in flight, as a counter track: a pile-up is a hill.
    let mut changes: BTreeMap<(&str, SimInstant), i64> = BTreeMap::new();
    for span in &metrics.watched.spans {
        *changes.entry((&span.host, span.start)).or_insert(0) += 1;
        *changes
            .entry((&span.host, span.end.unwrap_or(ended_at).max(span.start)))
            .or_insert(0) -= 1;
    }
    let mut in_flight: BTreeMap<&str, i64> = BTreeMap::new();
    for ((host, at), change) in changes {
        let Some(pid) = pids.get(host) else {
            continue;
        };
        let running = in_flight.entry(host).or_insert(0);
        *running += change;
        events.push(json!({
            "ph": "C", "name": "background processes in flight", "pid": pid, "tid": 0,
            "ts": ts(at), "args": {"in_flight": *running}
        }));
    }

    for record in history.records() {
        match &record.event {
            Event::Fault { description } => events.push(json!({
                "ph": "i", "s": "g", "cat": "fault", "name": description,
                "pid": 0, "tid": 0, "ts": ts(record.at)
            })),
            Event::Healed => events.push(json!({
                "ph": "i", "s": "g", "cat": "fault", "name": "healed",
                "pid": 0, "tid": 0, "ts": ts(record.at)
            })),
            Event::Restarted {
                host,
                ids_in_flight,
            } => {
                if let Some(pid) = pids.get(host.as_str()) {
                    events.push(json!({
                        "ph": "i", "s": "p", "cat": "fault", "name": "restarted",
                        "pid": pid, "tid": 0, "ts": ts(record.at),
                        "args": {"ids_in_flight": ids_in_flight.len()}
                    }));
                }
            }
            Event::Disconnected { host, peer, reason } => {
                if let Some(pid) = pids.get(host.as_str()) {
                    events.push(json!({
                        "ph": "i", "s": "p", "cat": "connection",
                        "name": format!("lost {peer}: {reason}"),
                        "pid": pid, "tid": 0, "ts": ts(record.at),
                        "args": {"peer": peer, "reason": reason}
                    }));
                }
            }
            Event::Reconnected { host, peer } => {
                if let Some(pid) = pids.get(host.as_str()) {
                    events.push(json!({
                        "ph": "i", "s": "p", "cat": "connection",
                        "name": format!("reconnected {peer}"),
                        "pid": pid, "tid": 0, "ts": ts(record.at),
                        "args": {"peer": peer}
                    }));
                }
            }
            Event::StreamConnected {
                reader,
                writer,
                prev,
                new,
            } => {
                if let Some(pid) = pids.get(reader.as_str()) {
                    events.push(json!({
                        "ph": "i", "s": "p", "cat": "connection",
                        "name": format!("stream connected by {writer}'s POSITION"),
                        "pid": pid, "tid": 0, "ts": ts(record.at),
                        "args": {"writer": writer, "prev": prev, "new": new}
                    }));
                }
            }
            Event::TokenHandedOut { reader, to, token } if to == NOTIFIER => {
                if let Some(pid) = pids.get(reader.as_str()) {
                    events.push(json!({
                        "ph": "C", "name": "token", "pid": pid, "tid": 0, "ts": ts(record.at),
                        "args": {"minimum": token.stream(), "maximum": token.max_pos()}
                    }));
                }
            }
            _ => {}
        }
    }

    for violation in violations {
        let name = violation_instant_name(violation);
        let args = json!({"message": violation.message, "events": violation.events});
        let tracks: Vec<u64> = violation
            .hosts
            .iter()
            .filter_map(|host| pids.get(host.as_str()).copied())
            .collect();
        if tracks.is_empty() {
            events.push(json!({
                "ph": "i", "s": "g", "cat": "violation", "name": name,
                "pid": 0, "tid": 0, "ts": ts(violation.at), "args": args
            }));
        }
        for pid in tracks {
            events.push(json!({
                "ph": "i", "s": "p", "cat": "violation", "name": name,
                "pid": pid, "tid": 0, "ts": ts(violation.at), "args": args
            }));
        }
    }
    json!({"traceEvents": events, "displayTimeUnit": "ms"})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::run_seed;
    use crate::scenario::Scenario;

    #[test]
    fn every_event_has_the_fields_its_phase_needs_and_spans_nest_per_lane() {
        let text = include_str!("../../scenarios/smoke.toml");
        let scenario = Scenario::parse(std::path::Path::new("smoke.toml"), text).unwrap();
        let report = run_seed(&scenario, 1);
        let trace = build(
            &scenario.hosts(),
            &report.history,
            &report.metrics,
            &report.violations,
            report.ended_at,
        );
        let events = trace["traceEvents"].as_array().unwrap();
        let mut phases = BTreeMap::new();
        let mut last_end: BTreeMap<(u64, u64), u64> = BTreeMap::new();
        for event in events {
            let phase = event["ph"].as_str().unwrap();
            *phases.entry(phase).or_insert(0) += 1;
            assert!(event["pid"].is_u64() && event["tid"].is_u64(), "{event}");
            if phase != "M" {
                assert!(event["ts"].is_u64(), "{event}");
            }
            if phase == "X" {
                let key = (
                    event["pid"].as_u64().unwrap(),
                    event["tid"].as_u64().unwrap(),
                );
                let start = event["ts"].as_u64().unwrap();
                let end = start + event["dur"].as_u64().unwrap();
                let free = last_end.entry(key).or_insert(0);
                assert!(*free <= start, "overlapping spans on one lane: {event}");
                *free = end;
            }
        }
        for phase in ["M", "X", "C"] {
            assert!(
                phases.get(phase).copied().unwrap_or(0) > 0,
                "no {phase} events: {phases:?}"
            );
        }
    }
}

//! Each invariant catches a hand-written history that breaks it and passes one that keeps it.

use std::collections::BTreeMap;

use super::*;

fn token(stream: i64, map: &[(&str, i64)]) -> MultiWriterToken {
    MultiWriterToken::new(
        stream,
        map.iter()
            .map(|(w, p)| ((*w).to_owned(), *p))
            .collect::<BTreeMap<_, _>>(),
    )
    .unwrap()
}

fn context(ended_at: u64) -> CheckContext {
    CheckContext {
        readers: vec!["r1".into()],
        clients: Vec::new(),
        ended_at: SimInstant::from_ms(ended_at),
        converge_within_ms: 1_000,
    }
}

fn committed(h: &mut History, at: u64, writer: &str, id: i64) {
    h.record(
        SimInstant::from_ms(at),
        Event::Allocated {
            host: writer.into(),
            ids: vec![id],
        },
    );
    h.record(
        SimInstant::from_ms(at),
        Event::Committed {
            host: writer.into(),
            rows: vec![(id, format!("$e{id}"))],
        },
    );
}

fn delivered(h: &mut History, at: u64, writer: &str, id: i64) {
    h.record(
        SimInstant::from_ms(at),
        Event::Delivered {
            reader: "r1".into(),
            writer: writer.into(),
            stream_id: id,
            event_id: format!("$e{id}"),
            caught_up: false,
        },
    );
}

fn handed(h: &mut History, at: u64, token: MultiWriterToken) {
    h.record(
        SimInstant::from_ms(at),
        Event::TokenHandedOut {
            reader: "r1".into(),
            to: NOTIFIER.into(),
            token,
        },
    );
}

fn invariants(h: &History, ended_at: u64) -> Vec<&'static str> {
    check_all(h, &context(ended_at))
        .into_iter()
        .map(|v| v.invariant)
        .collect()
}

#[test]
fn a_clean_history_passes_everything() {
    let mut h = History::new();
    committed(&mut h, 10, "w1", 2);
    committed(&mut h, 20, "w2", 3);
    delivered(&mut h, 30, "w1", 2);
    handed(&mut h, 30, token(2, &[]));
    delivered(&mut h, 40, "w2", 3);
    handed(&mut h, 40, token(3, &[]));
    assert_eq!(invariants(&h, 5_000), Vec::<&str>::new());
}

#[test]
fn out_of_order_commit_under_a_handed_out_token_is_missed() {
    // B1's symptom: the reader hands out 3 while 2 commits only later.
    let mut h = History::new();
    committed(&mut h, 10, "w1", 3);
    delivered(&mut h, 20, "w1", 3);
    handed(&mut h, 20, token(3, &[]));
    committed(&mut h, 30, "w1", 2);
    let violations = check_all(&h, &context(50));
    assert_eq!(
        violations.iter().map(|v| v.invariant).collect::<Vec<_>>(),
        vec!["no_missed_event"]
    );
    assert_eq!(violations[0].events, vec!["$e2"]);
    assert_eq!(violations[0].at, SimInstant::from_ms(20));
}

#[test]
fn regressing_tokens_duplicates_early_events_and_reused_ids_are_caught() {
    let mut h = History::new();
    committed(&mut h, 10, "w1", 2);
    delivered(&mut h, 20, "w1", 2);
    handed(&mut h, 20, token(2, &[("w2", 5)]));
    handed(&mut h, 25, token(3, &[]));
    delivered(&mut h, 30, "w1", 2);
    delivered(&mut h, 31, "w1", 9);
    committed(&mut h, 40, "w2", 2);
    let found = invariants(&h, 50);
    for expected in [
        "tokens_never_regress",
        "no_duplicate",
        "no_early_or_phantom_event",
        "unique_ids",
    ] {
        assert!(
            found.contains(&expected),
            "{expected} missing from {found:?}"
        );
    }
}

#[test]
fn aborted_ids_may_never_be_delivered() {
    let mut h = History::new();
    h.record(
        SimInstant::from_ms(5),
        Event::Aborted {
            host: "w1".into(),
            ids: vec![4],
        },
    );
    h.record(
        SimInstant::from_ms(6),
        Event::Delivered {
            reader: "r1".into(),
            writer: "w1".into(),
            stream_id: 4,
            event_id: "$x".into(),
            caught_up: false,
        },
    );
    assert_eq!(invariants(&h, 10), vec!["no_early_or_phantom_event"]);
}

#[test]
fn liveness_waits_for_converge_within_after_the_last_heal() {
    let mut h = History::new();
    committed(&mut h, 10, "w1", 2);
    h.record(SimInstant::from_ms(100), Event::Healed);
    assert_eq!(
        invariants(&h, 900),
        Vec::<&str>::new(),
        "too early to judge"
    );
    assert_eq!(invariants(&h, 1_200), vec!["liveness"]);
    delivered(&mut h, 1_150, "w1", 2);
    handed(&mut h, 1_150, token(2, &[]));
    assert_eq!(invariants(&h, 1_200), Vec::<&str>::new());
}

#[test]
fn sometimes_targets_report_what_was_reached() {
    let mut h = History::new();
    committed(&mut h, 10, "w1", 3);
    committed(&mut h, 11, "w1", 2);
    delivered(&mut h, 12, "w1", 2);
    h.record(
        SimInstant::from_ms(13),
        Event::GapFilled {
            reader: "r1".into(),
            writer: "w1".into(),
            from: 1,
            upto: 3,
        },
    );
    let reached = sometimes_reached(&h);
    assert!(reached["gap filled from POSITION prev/new"]);
    assert!(reached["out-of-order commit delivered"]);
    assert!(!reached["replication reconnect"]);
    assert!(!reached["restart with ids in flight"]);
}

#[test]
fn history_is_json_lines() {
    let mut h = History::new();
    handed(&mut h, 7, token(2, &[("w2", 4)]));
    assert_eq!(
        h.to_json_lines(),
        "{\"at\":7,\"kind\":\"token_handed_out\",\"reader\":\"r1\",\"to\":\"notifier\",\"token\":{\"stream\":2,\"instance_map\":{\"w2\":4}}}\n"
    );
}

#[test]
fn an_early_cover_after_another_writers_restart_is_diagnosed_as_f1() {
    let early_cover = |restart_claims: i64| {
        let mut h = History::new();
        h.record(
            SimInstant::from_ms(1),
            Event::Allocated {
                host: "w1".into(),
                ids: vec![5],
            },
        );
        h.record(
            SimInstant::from_ms(2),
            Event::Started {
                host: "w2".into(),
                token: token(3, &[("w2", restart_claims)]),
            },
        );
        handed(&mut h, 3, token(5, &[]));
        committed(&mut h, 4, "w1", 5);
        let violations = check_all(&h, &context(100));
        let missed: Vec<_> = violations
            .into_iter()
            .filter(|v| v.invariant == "no_missed_event")
            .collect();
        assert_eq!(missed.len(), 1, "{missed:?}");
        missed[0].finding
    };
    assert_eq!(
        early_cover(5),
        Some("F1"),
        "w2 restarted claiming w1's in-flight id 5"
    );
    assert_eq!(
        early_cover(4),
        None,
        "w2's claim stops below the id: not F1"
    );
}

#[test]
fn a_restarted_readers_new_notifier_may_announce_again_but_one_notifier_only_once() {
    let mut h = History::new();
    committed(&mut h, 10, "w1", 2);
    delivered(&mut h, 20, "w1", 2);
    h.record(
        SimInstant::from_ms(30),
        Event::Started {
            host: "r1".into(),
            token: token(1, &[]),
        },
    );
    delivered(&mut h, 40, "w1", 2);
    assert!(!no_duplicate(&Facts::from(&h), &context(50))
        .iter()
        .any(|v| v.invariant == "no_duplicate"));
    delivered(&mut h, 45, "w1", 2);
    assert_eq!(no_duplicate(&Facts::from(&h), &context(50)).len(), 1);
}

//! The worked examples of research/synapse-model.md §1.7, taken from Synapse's
//! tests/storage/test_id_generators.py, driven through the generator's API directly.

use super::*;
use crate::db::StreamRow;

fn preload(db: &mut Database, instance: &str, count: usize) {
    let txn = db.begin("test");
    for _ in 0..count {
        let id = db.nextval().unwrap();
        db.insert_row(
            txn,
            StreamRow {
                stream_id: id,
                instance_name: instance.into(),
                payload: None,
            },
        )
        .unwrap();
        db.overwrite_position(txn, instance, id).unwrap();
    }
    db.commit(txn).unwrap();
}

fn preload_id(db: &mut Database, instance: &str, id: i64) {
    let txn = db.begin("test");
    db.insert_row(
        txn,
        StreamRow {
            stream_id: id,
            instance_name: instance.into(),
            payload: None,
        },
    )
    .unwrap();
    db.setval(id).unwrap();
    db.overwrite_position(txn, instance, id).unwrap();
    db.commit(txn).unwrap();
}

fn start(db: &mut Database, instance: &str, writers: &[&str]) -> MultiWriterIdGenerator {
    MultiWriterIdGenerator::start(db, IdGenConfig::new(instance, writers)).unwrap()
}

fn finish(db: &mut Database, generator: &mut MultiWriterIdGenerator, ids: &[i64]) {
    generator.mark_finished(ids);
    if let Some(position) = generator.position_to_persist() {
        db.upsert_position_if_greater_autocommit("test", generator.instance_name(), position)
            .unwrap();
    }
}

#[test]
fn example_a_out_of_order_finish() {
    let mut db = Database::new();
    preload(&mut db, "master", 7);
    let mut master = start(&mut db, "master", &["master"]);
    assert_eq!(master.positions()["master"], 7);
    let ids: Vec<i64> = (0..4)
        .map(|_| master.allocate(&mut db, 1).unwrap()[0])
        .collect();
    assert_eq!(ids, vec![8, 9, 10, 11]);
    assert_eq!(master.current_token_for_writer("master"), 7);
    let mut steps = Vec::new();
    for id in [9, 8, 11, 10] {
        finish(&mut db, &mut master, &[id]);
        steps.push(master.current_token_for_writer("master"));
    }
    assert_eq!(steps, vec![7, 9, 9, 11]);
}

#[test]
fn example_b_restart_during_out_of_order_persistence() {
    let mut db = Database::new();
    preload(&mut db, "master", 7);
    let mut master = start(&mut db, "master", &["master"]);
    let first = master.allocate(&mut db, 1).unwrap();
    let second = master.allocate(&mut db, 1).unwrap();
    assert_eq!((first[0], second[0]), (8, 9));
    db.insert_rows_autocommit(
        "master",
        vec![StreamRow {
            stream_id: 9,
            instance_name: "master".into(),
            payload: None,
        }],
    )
    .unwrap();
    finish(&mut db, &mut master, &second);
    assert_eq!(db.stream_positions()["master"], 7);
    let mut worker = start(&mut db, "worker", &["master"]);
    assert_eq!(worker.positions()["master"], 7);
    assert_eq!(worker.current_token(), 7);
    db.insert_rows_autocommit(
        "master",
        vec![StreamRow {
            stream_id: 8,
            instance_name: "master".into(),
            payload: None,
        }],
    )
    .unwrap();
    finish(&mut db, &mut master, &first);
    assert_eq!(master.positions()["master"], 9);
    worker.advance("master", master.current_token_for_writer("master"));
    assert_eq!(worker.positions()["master"], 9);
}

#[test]
fn example_c_persisted_upto_skip_forward() {
    let mut db = Database::new();
    preload_id(&mut db, "first", 3);
    preload_id(&mut db, "second", 5);
    let mut worker = start(&mut db, "worker", &["first", "second"]);
    assert_eq!(worker.persisted_upto(), 3);
    let mut seen = Vec::new();
    for (writer, token) in [
        ("first", 6),
        ("second", 7),
        ("second", 9),
        ("first", 8),
        ("first", 11),
        ("second", 15),
    ] {
        worker.advance(writer, token);
        seen.push(worker.persisted_upto());
    }
    assert_eq!(seen, vec![6, 7, 7, 9, 9, 11]);
}

#[test]
fn example_d_idle_writer_reports_the_max() {
    let mut db = Database::new();
    preload(&mut db, "first", 3);
    preload(&mut db, "second", 4);
    let writers = ["first", "second", "third"];
    let mut first = start(&mut db, "first", &writers);
    let mut second = start(&mut db, "second", &writers);
    assert_eq!(second.current_token_for_writer("first"), 7);
    assert_eq!(second.current_token_for_writer("second"), 7);
    assert_eq!(second.current_token(), 7);
    let ids = first.allocate(&mut db, 2).unwrap();
    assert_eq!(ids, vec![8, 9]);
    second.advance("first", 9);
    assert_eq!(second.current_token_for_writer("first"), 9);
    assert_eq!(second.current_token_for_writer("second"), 9);
    assert_eq!(second.current_token(), 7);
    assert_eq!(first.allocate(&mut db, 2).unwrap(), vec![10, 11]);
    let fetch = second.begin_fetch().unwrap();
    second.advance("first", 11);
    assert_eq!(second.current_token_for_writer("first"), 11);
    assert_eq!(second.current_token_for_writer("second"), 9);
    let twelve = db.nextval().unwrap();
    second.complete_fetch(fetch, &[twelve]);
    finish(&mut db, &mut second, &[twelve]);
    assert_eq!(second.current_token_for_writer("second"), 12);
    assert_eq!(second.current_token(), 7);
}

#[test]
fn example_e_writer_set_change() {
    let mut db = Database::new();
    preload_id(&mut db, "first", 3);
    preload_id(&mut db, "second", 5);
    assert_eq!(
        start(&mut db, "worker", &["first", "second"]).persisted_upto(),
        3
    );
    assert_eq!(start(&mut db, "second", &["second"]).persisted_upto(), 5);
    let mut third = start(&mut db, "third", &["third"]);
    assert_eq!(third.current_token_for_writer("third"), 5);
    let id = third.allocate(&mut db, 1).unwrap();
    assert_eq!(id, vec![6]);
    db.insert_rows_autocommit(
        "third",
        vec![StreamRow {
            stream_id: 6,
            instance_name: "third".into(),
            payload: None,
        }],
    )
    .unwrap();
    finish(&mut db, &mut third, &id);
    assert_eq!(third.persisted_upto(), 6);
    let first = start(&mut db, "first", &["first", "third"]);
    assert_eq!(first.current_token_for_writer("first"), 6);
    assert_eq!(first.current_token_for_writer("third"), 6);
}

#[test]
fn in_flight_fetch_guards_the_local_position() {
    let mut db = Database::new();
    preload(&mut db, "w1", 3);
    let mut w1 = start(&mut db, "w1", &["w1", "w2"]);
    let fetch = w1.begin_fetch().unwrap();
    let id = db.nextval().unwrap();
    // Another writer's id above ours is announced while ours is still being fetched.
    w1.advance("w2", id + 1);
    assert!(
        w1.current_token() < id,
        "persisted_upto must not pass an id being fetched"
    );
    w1.complete_fetch(fetch, &[id]);
    assert!(w1.current_token() < id);
    finish(&mut db, &mut w1, &[id]);
    assert_eq!(w1.current_token(), id + 1);
}

#[test]
fn non_writer_cannot_allocate_and_consumes_nothing() {
    let mut db = Database::new();
    let mut reader = start(&mut db, "reader", &["w1"]);
    assert_eq!(reader.allocate(&mut db, 1), Err(IdGenError::NotAWriter));
    assert_eq!(db.sequence().max_allocated(), 0);
}

#[test]
fn future_stream_position_makes_start_fail_before_pruning() {
    let mut db = Database::new();
    preload(&mut db, "w1", 2);
    db.upsert_position_if_greater_autocommit("test", "w1", 9)
        .unwrap();
    db.upsert_position_if_greater_autocommit("test", "gone", 1)
        .unwrap();
    let before = db.stream_positions().clone();
    assert_eq!(
        MultiWriterIdGenerator::start(&mut db, IdGenConfig::new("w1", &["w1"])).unwrap_err(),
        IdGenError::IncorrectDatabaseSetup
    );
    assert_eq!(
        db.stream_positions(),
        &before,
        "the stale row is not deleted by a failed start"
    );
}

// ---- historical-bug switches ---------------------------------------------------------------

fn start_with(
    db: &mut Database,
    instance: &str,
    writers: &[&str],
    bug: Bug,
) -> MultiWriterIdGenerator {
    let config = IdGenConfig::new(instance, writers).with_bugs(Bugs::NONE.with(bug));
    MultiWriterIdGenerator::start(db, config).unwrap()
}

#[test]
fn switch_b1_takes_a_writers_highest_row_despite_lower_ids_in_flight() {
    // w1 is stored at 7 (rows 1..=7); it allocated 8 and 9, and only 9 committed.
    for (bug, expected) in [(None, 7), (Some(Bug::RestartTakesMaxId), 9)] {
        let mut db = Database::new();
        preload(&mut db, "w1", 7);
        assert_eq!(db.nextval_many(2).unwrap(), vec![8, 9]);
        let nine = StreamRow {
            stream_id: 9,
            instance_name: "w1".into(),
            payload: None,
        };
        db.insert_rows_autocommit("w1", vec![nine]).unwrap();
        let reader = match bug {
            Some(bug) => start_with(&mut db, "reader", &["w1"], bug),
            None => start(&mut db, "reader", &["w1"]),
        };
        assert_eq!(reader.current_token(), expected, "{bug:?}");
    }
}

#[test]
fn switch_b2_forgets_ids_finished_out_of_order() {
    let mut db = Database::new();
    preload(&mut db, "w1", 7);
    let mut w1 = start_with(&mut db, "w1", &["w1"], Bug::OutOfOrderFinishStalls);
    let ids = w1.allocate(&mut db, 2).unwrap();
    assert_eq!(ids, vec![8, 9]);
    w1.mark_finished(&[9]);
    w1.mark_finished(&[8]);
    assert_eq!(w1.current_token_for_writer("w1"), 8, "9 is forgotten");
    let next = w1.allocate(&mut db, 1).unwrap();
    w1.mark_finished(&next);
    assert_eq!(
        w1.current_token_for_writer("w1"),
        10,
        "until another id finishes"
    );
}

// ---- proposed fixes (tools/synapse/FIXES.md) ------------------------------------------------

fn start_fixed(
    db: &mut Database,
    instance: &str,
    writers: &[&str],
    fixes: crate::fixes::Fixes,
) -> MultiWriterIdGenerator {
    let config = IdGenConfig::new(instance, writers).with_fixes(fixes);
    MultiWriterIdGenerator::start(db, config).unwrap()
}

#[test]
fn fix_f1_a_restarted_writers_claim_does_not_cover_another_writers_in_flight_id() {
    use crate::fixes::{Fix, Fixes};
    for fixes in [Fixes::NONE, Fixes::NONE.with(Fix::F1)] {
        let mut db = Database::new();
        preload(&mut db, "w1", 3);
        let mut reader = start_fixed(&mut db, "r1", &["w1", "w2"], fixes);
        let mut w1 = start_fixed(&mut db, "w1", &["w1", "w2"], fixes);
        // w1's X = 4 is allocated and held in its transaction; w2 restarts meanwhile and,
        // fixed or not, claims the sequence's last_value (PR #17309's start-up is kept).
        assert_eq!(w1.allocate(&mut db, 1).unwrap(), vec![4]);
        let w2 = start_fixed(&mut db, "w2", &["w1", "w2"], fixes);
        let announced = w2.current_token_for_writer("w2");
        assert_eq!(announced, 4, "{fixes:?}");
        // Its `POSITION w2 4 4` reaches the reader: 1.163.2's `advance`, or with the fix the
        // POSITION's advance, which does not count 4 as persisted (F2's rule).
        if fixes.position_is_not_persisted() {
            reader.advance_from_position("w2", announced);
        } else {
            reader.advance("w2", announced);
        }
        // Unfixed the reader's token covers X before X commits (X's RDATA is then "already
        // seen", F1's loss); fixed it stays below X while w2's own position is 4.
        assert_eq!(
            reader.current_token_for_writer("w1") >= 4,
            fixes.is_none(),
            "{fixes:?}"
        );
        assert_eq!(reader.positions().get("w2"), Some(&4), "{fixes:?}");
    }
}

#[test]
fn bug_b7_a_restarted_writer_whose_last_ids_were_cancelled_claims_its_stale_row() {
    use crate::bugs::{Bug, Bugs};
    for (bugs, claimed) in [
        (Bugs::NONE, 5),
        (Bugs::NONE.with(Bug::OwnPositionNotFromSequence), 3),
    ] {
        let mut db = Database::new();
        preload(&mut db, "w1", 3);
        let config = IdGenConfig::new("w1", &["w1"]).with_bugs(bugs);
        let mut w1 = MultiWriterIdGenerator::start(&mut db, config.clone()).unwrap();
        // 4 and 5 are allocated for a request cancelled inside `enter`: finished, never written,
        // so `stream_positions` keeps 3 while w1 announces 5.
        let ids = w1.allocate(&mut db, 2).unwrap();
        w1.mark_finished(&ids);
        assert_eq!(w1.current_token_for_writer("w1"), 5);
        let restarted = MultiWriterIdGenerator::start(&mut db, config).unwrap();
        assert_eq!(
            restarted.current_token_for_writer("w1"),
            claimed,
            "{bugs:?}"
        );
    }
}

#[test]
fn fix_f2_a_positions_token_is_not_a_persisted_id() {
    // w1's row 4 is committed but not received; idle w2 announces 4 (its idle bump).
    for (from_position, covered) in [(false, true), (true, false)] {
        let mut db = Database::new();
        preload(&mut db, "w1", 3);
        let mut reader = start(&mut db, "r1", &["w1", "w2"]);
        if from_position {
            reader.advance_from_position("w2", 4);
        } else {
            reader.advance("w2", 4);
        }
        assert_eq!(reader.positions()["w2"], 4);
        // Unfixed, w1's RDATA of 4 (or its POSITION) is then redundant: the row is lost.
        assert_eq!(reader.current_token_for_writer("w1") >= 4, covered);
        // The row itself still moves the reader on.
        reader.advance("w1", 4);
        assert_eq!(reader.current_token(), 4);
    }
}

#[test]
fn fix_f3_the_local_position_stays_below_an_own_finished_row_not_yet_absorbed() {
    use crate::fixes::{Fix, Fixes};
    use crate::replication::{AnnouncerAction, StreamAnnouncer};
    use crate::wire::Command;
    for fixes in [Fixes::NONE, Fixes::NONE.with(Fix::F3)] {
        let mut db = Database::new();
        preload(&mut db, "w1", 3);
        let mut w1 = start_fixed(&mut db, "w1", &["w1", "w2"], fixes);
        let mut announcer = StreamAnnouncer::new("events", &w1);
        // A's fetch is held before nextval (guard 3); B = 4 is allocated and finishes.
        let fetch_a = w1.begin_fetch().unwrap();
        let b = w1.allocate(&mut db, 1).unwrap();
        assert_eq!(b, vec![4]);
        w1.mark_finished(&b);
        assert_eq!(
            w1.minimal_local_current_token(),
            3,
            "B waits behind A's fetch"
        );
        assert!(announcer.poke(&w1, true).is_empty());
        // w2's C = 5 arrives: the next add_persisted raises the local position.
        w1.advance("w2", db.nextval().unwrap());
        let actions = announcer.poke(&w1, true);
        let over_b = actions.iter().any(|action| {
            matches!(action, AnnouncerAction::Send(command)
                if *command == Command::position("events", "w1", 3, 4))
        });
        // Unfixed: `POSITION w1 3 4` without B's RDATA (F3's loss); fixed: nothing yet.
        assert_eq!(over_b, fixes.is_none(), "{fixes:?}: {actions:?}");
        assert_eq!(
            w1.current_token_for_writer("w1"),
            if fixes.is_none() { 4 } else { 3 }
        );
        // A gets its id and finishes: B is absorbed and the fixed writer reads B and A.
        let a = db.nextval().unwrap();
        w1.complete_fetch(fetch_a, &[a]);
        w1.mark_finished(&[a]);
        if !fixes.is_none() {
            assert_eq!(
                announcer.poke(&w1, true),
                vec![AnnouncerAction::FetchOwnUpdates { from: 3, upto: a }]
            );
        }
    }
}

#[test]
fn f5_a_writer_starting_while_no_writer_has_a_stream_positions_row_covers_ids_in_flight_unless_fixed(
) {
    // w1 and w3 run and have allocated ids, w3 has committed the two above w1's, but neither
    // has a `stream_positions` row yet (the upsert follows the commit in its own transaction;
    // or an operator ran the documented `DELETE FROM stream_positions`). w2 starts: its own
    // claim is the sequence's last_value, the minimum over the positions it knows is that
    // claim, and every writer without a row is set to it, so w2's persisted position covers
    // w1's id still in flight (finding F5; generated seeds 408 and 730). F1-F4's fixes do not
    // touch this; F5's caps the start-up at the gapless committed prefix.
    use crate::fixes::Fix;
    let without_f5 = [Fix::F1, Fix::F2, Fix::F3, Fix::F4]
        .into_iter()
        .fold(Fixes::NONE, Fixes::with);
    for fixes in [Fixes::NONE, without_f5, Fixes::all()] {
        let mut db = Database::new();
        // The genesis row takes id 1, without a `stream_positions` row.
        let genesis = db.nextval().unwrap();
        let txn = db.begin("setup");
        db.insert_row(
            txn,
            StreamRow {
                stream_id: genesis,
                instance_name: "w1".into(),
                payload: None,
            },
        )
        .unwrap();
        db.commit(txn).unwrap();
        let writers = ["w1", "w2", "w3"];
        let mut w1 = start_fixed(&mut db, "w1", &writers, fixes);
        let mut w3 = start_fixed(&mut db, "w3", &writers, fixes);
        let in_flight = w1.allocate(&mut db, 1).unwrap();
        let committed = w3.allocate(&mut db, 2).unwrap();
        let txn = db.begin("w3");
        for id in &committed {
            db.insert_row(
                txn,
                StreamRow {
                    stream_id: *id,
                    instance_name: "w3".into(),
                    payload: None,
                },
            )
            .unwrap();
        }
        db.commit(txn).unwrap();
        assert!(db.stream_positions().is_empty());
        assert!(committed.iter().all(|id| *id > in_flight[0]));
        let w2 = start_fixed(&mut db, "w2", &writers, fixes);
        assert_eq!(
            w2.persisted_upto() >= in_flight[0],
            !fixes.on(Fix::F5),
            "{fixes:?}: w2's persisted position {}, w1's id in flight {}",
            w2.persisted_upto(),
            in_flight[0]
        );
        assert_eq!(
            w2.positions().get("w1"),
            Some(&w2.persisted_upto()),
            "{fixes:?}"
        );
    }
}

//! Replication tests: a writer's announcer and a reader's follower over one database.

use super::*;
use crate::bugs::{Bug, Bugs};
use crate::db::{Database, StreamRow};
use crate::idgen::IdGenConfig;
use crate::limits::UPDATES_FETCH_ROWS_MAX;
use crate::token::MultiWriterToken;
use crate::wire::Command;

fn start(db: &mut Database, instance: &str) -> MultiWriterIdGenerator {
    MultiWriterIdGenerator::start(db, IdGenConfig::new(instance, &["w1", "w2"])).unwrap()
}

/// Allocates, writes and finishes one event on `generator`.
fn persist(db: &mut Database, generator: &mut MultiWriterIdGenerator, event: &str) -> i64 {
    let id = generator.allocate(db, 1).unwrap()[0];
    let row = StreamRow {
        stream_id: id,
        instance_name: generator.instance_name().into(),
        payload: Some(event.into()),
    };
    db.insert_rows_autocommit(generator.instance_name(), vec![row])
        .unwrap();
    generator.mark_finished(&[id]);
    id
}

fn rows_of(db: &Database, writer: &str, from: i64, upto: i64) -> (Vec<Row>, bool) {
    let rows = db.rows_between(writer, from, upto, UPDATES_FETCH_ROWS_MAX);
    let limited = rows.len() == UPDATES_FETCH_ROWS_MAX;
    (
        rows.into_iter()
            .map(|r| (r.stream_id, r.payload.unwrap_or_default()))
            .collect(),
        limited,
    )
}

fn sent(actions: &[AnnouncerAction]) -> Vec<Command> {
    actions
        .iter()
        .filter_map(|a| {
            if let AnnouncerAction::Send(c) = a {
                Some(c.clone())
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn writer_announces_its_rows_then_idles_with_positions() {
    let mut db = Database::new();
    db.nextval().unwrap();
    let mut w1 = start(&mut db, "w1");
    let mut w2 = start(&mut db, "w2");
    let mut announcer = StreamAnnouncer::new("events", &w1);
    let a = persist(&mut db, &mut w1, "$a");
    let actions = announcer.poke(&w1, true);
    assert_eq!(
        actions,
        vec![AnnouncerAction::FetchOwnUpdates { from: 1, upto: a }]
    );
    let (rows, limited) = rows_of(&db, "w1", 1, a);
    let commands = sent(&announcer.handle_updates(&w1, rows, limited));
    assert_eq!(commands, vec![rdata("events", "w1", Some(a), "$a")]);
    // w2 writes; w1 hears of it and is idle, so its own token follows and a POSITION goes out.
    let b = persist(&mut db, &mut w2, "$b");
    w1.advance("w2", b);
    let commands = sent(&announcer.poke(&w1, true));
    assert_eq!(commands, vec![Command::position("events", "w1", a, b)]);
    assert!(announcer.poke(&w1, true).is_empty(), "nothing new");
    assert_eq!(announcer.handle_replicate(&w1), None);
    assert_eq!(
        sent(&announcer.poke(&w1, true)),
        vec![Command::position("events", "w1", b, b)]
    );
}

#[test]
fn reader_fills_a_gap_announced_by_position_prev() {
    let mut db = Database::new();
    db.nextval().unwrap();
    let mut w1 = start(&mut db, "w1");
    let mut reader = start(&mut db, "r1");
    let mut follower = StreamFollower::new("r1");
    // The reader connects: the writer's position arrives first.
    assert_eq!(
        follower.handle_position(&mut reader, "w1", 1, 1),
        vec![FollowerAction::Advanced {
            instance: "w1".into(),
            prev: 1,
            token: 1,
            connected_stream: true,
        }]
    );
    let a = persist(&mut db, &mut w1, "$a");
    let b = persist(&mut db, &mut w1, "$b");
    // The RDATA of a and b were lost; a POSITION says w1 wrote nothing in (b, b].
    let actions = follower.handle_position(&mut reader, "w1", b, b);
    assert_eq!(
        actions,
        vec![FollowerAction::FetchMissing {
            instance: "w1".into(),
            from: 1,
            upto: b,
            needless: false
        }]
    );
    // While catching up, the late RDATA of b waits in the stream's queue.
    assert!(follower
        .handle_rdata(&mut reader, "w1", Some(b), (b, "$b".into()))
        .is_empty());
    let (rows, limited) = rows_of(&db, "w1", 1, b);
    let actions = follower.handle_updates(&mut reader, rows, limited);
    let announced: Vec<i64> = actions
        .iter()
        .filter_map(|action| match action {
            FollowerAction::Rows { room_token, .. } => Some(room_token.pos_for("w1")),
            _ => None,
        })
        .collect();
    assert_eq!(
        announced,
        vec![a, b],
        "each group is announced with its own token"
    );
    assert_eq!(
        without_room_tokens(actions),
        vec![
            FollowerAction::Rows {
                instance: "w1".into(),
                token: a,
                rows: vec![(a, "$a".into())],
                room_token: MultiWriterToken::default(),
                caught_up: false,
            },
            FollowerAction::Rows {
                instance: "w1".into(),
                token: b,
                rows: vec![(b, "$b".into())],
                room_token: MultiWriterToken::default(),
                caught_up: false,
            },
            FollowerAction::Advanced {
                instance: "w1".into(),
                prev: b,
                token: b,
                connected_stream: false,
            },
            FollowerAction::Discarded {
                instance: "w1".into(),
                prev: None,
                token: Some(b),
                reason: "already seen"
            },
        ]
    );
    assert_eq!(reader.current_token_for_writer("w1"), b);
}

#[test]
fn rdata_batches_and_unconnected_streams() {
    let mut db = Database::new();
    let mut reader = start(&mut db, "r1");
    let mut follower = StreamFollower::new("r1");
    let discarded = follower.handle_rdata(&mut reader, "w1", Some(5), (5, "$x".into()));
    assert!(matches!(
        discarded[0],
        FollowerAction::Discarded {
            reason: "stream not connected",
            ..
        }
    ));
    follower.handle_position(&mut reader, "w1", 1, 1);
    assert!(follower
        .handle_rdata(&mut reader, "w1", None, (7, "$a".into()))
        .is_empty());
    assert!(
        follower
            .handle_rdata(&mut reader, "r1", Some(9), (9, "$own".into()))
            .is_empty(),
        "own rows are dropped"
    );
    let actions = follower.handle_rdata(&mut reader, "w1", Some(7), (7, "$b".into()));
    assert_eq!(
        without_room_tokens(actions),
        vec![FollowerAction::Rows {
            instance: "w1".into(),
            token: 7,
            rows: vec![(7, "$a".into()), (7, "$b".into())],
            room_token: MultiWriterToken::default(),
            caught_up: false,
        }]
    );
    follower.handle_connection_lost();
    assert!(!follower.is_connected());
}

#[test]
fn limited_catch_up_reads_again_from_the_last_row() {
    let mut db = Database::new();
    db.nextval().unwrap();
    let mut w1 = start(&mut db, "w1");
    let mut reader = start(&mut db, "r1");
    let mut follower = StreamFollower::new("r1");
    follower.handle_position(&mut reader, "w1", 1, 1);
    let ids: Vec<i64> = (0..UPDATES_FETCH_ROWS_MAX + 3)
        .map(|i| persist(&mut db, &mut w1, &format!("$e{i}")))
        .collect();
    let top = *ids.last().unwrap();
    let mut actions = follower.handle_position(&mut reader, "w1", top, top);
    let mut delivered = Vec::new();
    while let Some(FollowerAction::FetchMissing { from, upto, .. }) = actions.last().cloned() {
        let (rows, limited) = rows_of(&db, "w1", from, upto);
        actions = follower.handle_updates(&mut reader, rows, limited);
        delivered.extend(actions.iter().filter_map(|a| {
            if let FollowerAction::Rows { token, .. } = a {
                Some(*token)
            } else {
                None
            }
        }));
    }
    assert_eq!(delivered, ids);
    assert!(follower.is_connected() && !follower.is_catching_up());
}

/// The actions with every `Rows`' room token and provenance blanked, to compare the rest
/// literally.
fn without_room_tokens(actions: Vec<FollowerAction>) -> Vec<FollowerAction> {
    actions
        .into_iter()
        .map(|action| match action {
            FollowerAction::Rows {
                instance,
                token,
                rows,
                ..
            } => FollowerAction::Rows {
                instance,
                token,
                rows,
                room_token: MultiWriterToken::default(),
                caught_up: false,
            },
            other => other,
        })
        .collect()
}

// ---- historical-bug switches ---------------------------------------------------------------

/// A reader connected to w1 at 1, with w1's `a` and `b` written.
fn connected_reader(bugs: Bugs) -> (Database, StreamFollower, MultiWriterIdGenerator, i64, i64) {
    connected_reader_with(bugs, crate::fixes::Fixes::NONE)
}

fn connected_reader_with(
    bugs: Bugs,
    fixes: crate::fixes::Fixes,
) -> (Database, StreamFollower, MultiWriterIdGenerator, i64, i64) {
    let mut db = Database::new();
    db.nextval().unwrap();
    let mut w1 = start(&mut db, "w1");
    let mut reader = start(&mut db, "r1");
    let mut follower = StreamFollower::new("r1").with_bugs(bugs).with_fixes(fixes);
    follower.handle_position(&mut reader, "w1", 1, 1);
    let a = persist(&mut db, &mut w1, "$a");
    let b = persist(&mut db, &mut w1, "$b");
    (db, follower, reader, a, b)
}

#[test]
fn switch_b14_handles_rdata_during_a_catch_up_at_once_and_loses_it() {
    for (bugs, lost) in [
        (Bugs::NONE, false),
        (Bugs::NONE.with(Bug::UpdatesDuringCatchUp), true),
    ] {
        let (db, mut follower, mut reader, _a, b) = connected_reader(bugs);
        let c_id = b + 1;
        follower.handle_position(&mut reader, "w1", b, b);
        let during = follower.handle_rdata(&mut reader, "w1", Some(c_id), (c_id, "$c".into()));
        assert_eq!(
            matches!(
                &during[..],
                [FollowerAction::Discarded {
                    reason: "stream not connected",
                    ..
                }]
            ),
            lost,
            "{bugs:?}: {during:?}"
        );
        let (rows, limited) = rows_of(&db, "w1", 1, b);
        let after = follower.handle_updates(&mut reader, rows, limited);
        let c_announced = after
            .iter()
            .any(|action| matches!(action, FollowerAction::Rows { token, .. } if *token == c_id));
        assert_eq!(c_announced, !lost, "{bugs:?}: {after:?}");
    }
}

#[test]
fn switch_b13_keeps_the_stream_connected_so_rdata_skips_what_was_missed() {
    for (bugs, applied) in [
        (Bugs::NONE, false),
        (Bugs::NONE.with(Bug::LostEventsOnReconnect), true),
    ] {
        // The switch acts on the patched baseline too: F4's per-writer "connected" is kept
        // across the loss as well (else the fix would hide the historical bug).
        use crate::fixes::{Fix, Fixes};
        for fixes in [Fixes::NONE, Fixes::NONE.with(Fix::F4)] {
            let (_db, mut follower, mut reader, _a, b) = connected_reader_with(bugs, fixes);
            // a and b were sent while the connection was down; RDATA of c arrives first.
            follower.handle_connection_lost();
            let c_id = b + 1;
            let actions = follower.handle_rdata(&mut reader, "w1", Some(c_id), (c_id, "$c".into()));
            assert_eq!(
                matches!(&actions[..], [FollowerAction::Rows { .. }]),
                applied,
                "{bugs:?} {fixes:?}: {actions:?}"
            );
        }
    }
}

#[test]
fn switch_b15_applies_rdata_below_the_writers_position_again() {
    let (_db, mut follower, mut reader, a, b) =
        connected_reader(Bugs::NONE.with(Bug::ReprocessingOldRdata));
    follower.handle_rdata(&mut reader, "w1", Some(b), (b, "$b".into()));
    let again = follower.handle_rdata(&mut reader, "w1", Some(a), (a, "$a".into()));
    assert!(
        matches!(&again[..], [FollowerAction::Rows { token, .. }] if *token == a),
        "{again:?}"
    );
}

// ---- proposed fixes (tools/synapse/FIXES.md) ------------------------------------------------

#[test]
fn fix_f2_a_reader_does_not_skip_a_row_an_idle_writers_position_names() {
    use crate::fixes::{Fix, Fixes};
    for fixes in [Fixes::NONE, Fixes::NONE.with(Fix::F2)] {
        let mut db = Database::new();
        db.nextval().unwrap();
        let mut w1 = start(&mut db, "w1");
        let mut reader = start(&mut db, "r1");
        let mut follower = StreamFollower::new("r1").with_fixes(fixes);
        follower.handle_position(&mut reader, "w1", 1, 1);
        // w1's X is committed; idle w2 saw it and announces its id before X's RDATA arrives.
        let x = persist(&mut db, &mut w1, "$x");
        let fetch = follower.handle_position(&mut reader, "w2", x, x);
        assert!(matches!(&fetch[..], [FollowerAction::FetchMissing { .. }]));
        follower.handle_updates(&mut reader, Vec::new(), false);
        let actions = follower.handle_rdata(&mut reader, "w1", Some(x), (x, "$x".into()));
        let applied = matches!(&actions[..], [FollowerAction::Rows { token, .. }] if *token == x);
        // Unfixed X is "already seen" and never announced (F2's loss); fixed it is applied.
        assert_eq!(applied, !fixes.is_none(), "{fixes:?}: {actions:?}");
    }
}

#[test]
fn fix_f4_a_writers_rdata_waits_for_its_own_position_after_a_reconnect() {
    use crate::fixes::{Fix, Fixes};
    for fixes in [Fixes::NONE, Fixes::NONE.with(Fix::F4)] {
        let mut db = Database::new();
        db.nextval().unwrap();
        let mut w2 = start(&mut db, "w2");
        let mut reader = start(&mut db, "r1");
        let mut follower = StreamFollower::new("r1").with_fixes(fixes);
        follower.handle_position(&mut reader, "w1", 1, 1);
        // Redundant on the connected stream: under F4 it connects w2.
        follower.handle_position(&mut reader, "w2", 1, 1);
        follower.handle_connection_lost();
        // While away, w2 published X; after the re-subscribe w1 answers first, then Y's RDATA
        // of w2 arrives before w2's own answer.
        let x = persist(&mut db, &mut w2, "$x");
        let y = persist(&mut db, &mut w2, "$y");
        follower.handle_position(&mut reader, "w1", 1, 1);
        let mut actions = follower.handle_rdata(&mut reader, "w2", Some(y), (y, "$y".into()));
        let answer = follower.handle_position(&mut reader, "w2", y, y);
        if let [FollowerAction::FetchMissing { from, upto, .. }] = &answer[..] {
            let (rows, limited) = rows_of(&db, "w2", *from, *upto);
            actions.extend(follower.handle_updates(&mut reader, rows, limited));
        } else {
            actions.extend(answer);
        }
        let x_announced = actions
            .iter()
            .any(|action| matches!(action, FollowerAction::Rows { token, .. } if *token == x));
        // Unfixed Y is applied and w2's answer is redundant: X is lost (F4); fixed Y waits
        // and w2's POSITION fetches X and Y.
        assert_eq!(x_announced, !fixes.is_none(), "{fixes:?}: {actions:?}");
    }
}

#[test]
fn only_the_first_position_on_a_connection_connects_the_stream() {
    let mut db = Database::new();
    db.nextval().unwrap();
    let _w1 = start(&mut db, "w1");
    let _w2 = start(&mut db, "w2");
    let mut reader = start(&mut db, "r1");
    let mut follower = StreamFollower::new("r1");
    let connected = |actions: Vec<FollowerAction>| -> Vec<bool> {
        actions
            .into_iter()
            .filter_map(|action| match action {
                FollowerAction::Advanced {
                    connected_stream, ..
                } => Some(connected_stream),
                _ => None,
            })
            .collect()
    };
    assert_eq!(
        connected(follower.handle_position(&mut reader, "w1", 1, 1)),
        vec![true]
    );
    assert_eq!(
        connected(follower.handle_position(&mut reader, "w2", 1, 2)),
        vec![false]
    );
    // After a loss the next POSITION, whoever's, connects the stream again.
    follower.handle_connection_lost();
    assert!(!follower.is_connected());
    assert_eq!(
        connected(follower.handle_position(&mut reader, "w2", 2, 2)),
        vec![true]
    );
    assert!(follower.is_connected());
}

#[test]
fn a_position_below_the_readers_view_reads_nothing_and_switch_b23_queries_anyway() {
    for (bugs, expected_fetch) in [
        (Bugs::NONE, None),
        (
            Bugs::NONE.with(Bug::CatchUpOnAnyPrevMismatch),
            Some(FollowerAction::FetchMissing {
                instance: "w1".into(),
                from: 5,
                upto: 8,
                needless: true,
            }),
        ),
    ] {
        let (_db, mut follower, mut reader, _, _) = connected_reader(bugs);
        follower.handle_rdata(&mut reader, "w1", Some(5), (5, "$e5".into()));
        assert_eq!(reader.current_token_for_writer("w1"), 5);
        // w1 says it wrote nothing in (3, 8]; the reader already has everything to 5.
        let actions = follower.handle_position(&mut reader, "w1", 3, 8);
        match expected_fetch {
            None => {
                assert!(
                    matches!(&actions[..], [FollowerAction::Advanced { token: 8, .. }]),
                    "{actions:?}"
                );
                assert_eq!(reader.current_token_for_writer("w1"), 8);
            }
            Some(fetch) => assert_eq!(actions, vec![fetch]),
        }
    }
}

#[test]
fn a_replicate_is_answered_in_order_with_the_backlog_and_switch_b16_answers_ahead_of_it() {
    for bugs in [Bugs::NONE, Bugs::NONE.with(Bug::PositionBeforeBacklog)] {
        let mut db = Database::new();
        db.nextval().unwrap();
        let mut w1 = start(&mut db, "w1");
        let mut announcer = StreamAnnouncer::new("events", &w1).with_bugs(bugs);
        let last = announcer.last_token();
        // Two rows committed, their RDATA still to go, when a REPLICATE arrives.
        let a = persist(&mut db, &mut w1, "$a");
        let b = persist(&mut db, &mut w1, "$b");
        let mut commands: Vec<Command> = announcer.handle_replicate(&w1).into_iter().collect();
        let actions = announcer.poke(&w1, true);
        commands.extend(sent(&actions));
        assert!(actions.contains(&AnnouncerAction::FetchOwnUpdates {
            from: last,
            upto: b
        }));
        let (rows, limited) = rows_of(&db, "w1", last, b);
        commands.extend(sent(&announcer.handle_updates(&w1, rows, limited)));
        let rdata = vec![
            rdata("events", "w1", Some(a), "$a"),
            rdata("events", "w1", Some(b), "$b"),
        ];
        let expected: Vec<Command> = if bugs.is_clean() {
            // POSITION last last, then the rows above it.
            std::iter::once(Command::position("events", "w1", last, last))
                .chain(rdata)
                .collect()
        } else {
            // POSITION b b first: readers behind b read a and b from the database, then
            // receive their RDATA again.
            std::iter::once(Command::position("events", "w1", b, b))
                .chain(rdata)
                .collect()
        };
        assert_eq!(commands, expected, "{bugs:?}");
    }
}

#[test]
fn a_position_below_the_reader_reads_nothing_and_switch_b24_queries_the_empty_range() {
    for (bugs, below_fetches) in [
        (Bugs::NONE, false),
        (Bugs::NONE.with(Bug::CatchUpReadsEmptyRange), true),
    ] {
        let (_db, mut follower, mut reader, _, _) = connected_reader(bugs);
        follower.handle_rdata(&mut reader, "w1", Some(5), (5, "$e5".into()));
        // Not connected: a stale POSITION is processed, not dropped as redundant.
        follower.handle_connection_lost();
        // At the reader's position: nothing to read, with or without the switch
        // (`get_updates_since` returns at once when from == upto).
        let at = follower.handle_position(&mut reader, "w1", 3, 5);
        assert!(
            matches!(&at[..], [FollowerAction::Advanced { token: 5, .. }]),
            "{bugs:?}: {at:?}"
        );
        follower.handle_connection_lost();
        let below = follower.handle_position(&mut reader, "w1", 3, 4);
        let expected_fetch = FollowerAction::FetchMissing {
            instance: "w1".into(),
            from: 5,
            upto: 4,
            needless: true,
        };
        assert_eq!(
            below.contains(&expected_fetch),
            below_fetches,
            "{bugs:?}: {below:?}"
        );
        assert_eq!(reader.current_token_for_writer("w1"), 5, "never goes back");
    }
}

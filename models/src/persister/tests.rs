//! Persister tests: batches commit out of order and the generator follows Synapse's rules.

use super::*;
use crate::bugs::Bugs;
use crate::db::{Database, StreamRow};
use crate::idgen::IdGenConfig;

struct Host {
    db: Database,
    generator: MultiWriterIdGenerator,
    persister: Persister,
}

impl Host {
    fn new() -> Self {
        let mut db = Database::new();
        db.nextval().unwrap(); // Synapse streams consume id 1 at creation.
        let generator =
            MultiWriterIdGenerator::start(&mut db, IdGenConfig::new("w1", &["w1"])).unwrap();
        Host {
            db,
            generator,
            persister: Persister::new(),
        }
    }

    /// Submits a batch and carries it up to the commit, returning the batch and its rows.
    fn write(&mut self, events: &[&str]) -> (BatchId, Vec<(i64, EventId)>) {
        let (batch, action) = self
            .persister
            .submit(
                &mut self.generator,
                events.iter().map(|e| (*e).to_owned()).collect(),
            )
            .unwrap();
        let Action::FetchIds { count, .. } = action else {
            panic!("{action:?}")
        };
        let ids = self.db.nextval_many(count).unwrap();
        let Action::CommitRows { rows, .. } =
            self.persister.handle_ids(&mut self.generator, batch, ids)
        else {
            panic!()
        };
        let stream_rows = rows
            .iter()
            .map(|(id, e)| StreamRow {
                stream_id: *id,
                instance_name: "w1".into(),
                payload: Some(e.clone()),
            })
            .collect();
        self.db.insert_rows_autocommit("w1", stream_rows).unwrap();
        (batch, rows)
    }

    fn commit(&mut self, batch: BatchId) -> Vec<Action> {
        let actions = self.persister.handle_committed(&mut self.generator, batch);
        for action in &actions {
            if let Action::UpsertPosition { position } = action {
                self.db
                    .upsert_position_if_greater_autocommit("w1", "w1", *position)
                    .unwrap();
            }
        }
        actions
    }
}

#[test]
fn batches_commit_out_of_order_and_the_token_waits_for_the_gap() {
    let mut host = Host::new();
    let (first, first_rows) = host.write(&["$a", "$b"]);
    let (second, second_rows) = host.write(&["$c"]);
    assert_eq!(
        first_rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert_eq!(second_rows[0].0, 4);
    let actions = host.commit(second);
    let Some(Action::Persisted { max_token, .. }) = actions.last() else {
        panic!("{actions:?}")
    };
    assert_eq!(
        max_token.stream(),
        1,
        "id 4 is persisted but 2 and 3 are not finished"
    );
    assert_eq!(host.db.stream_positions()["w1"], 1);
    let actions = host.commit(first);
    let Some(Action::Persisted {
        max_token, events, ..
    }) = actions.last()
    else {
        panic!("{actions:?}")
    };
    assert_eq!(max_token.stream(), 4);
    assert_eq!(events, &first_rows);
    assert_eq!(host.db.stream_positions()["w1"], 4);
    assert_eq!(host.persister.in_flight().count(), 0);
}

#[test]
fn failed_commit_leaves_a_gap_that_positions_move_past() {
    let mut host = Host::new();
    let (first, _) = host.write(&["$a"]);
    let (second, _) = host.write(&["$b"]);
    let Action::Failed { ids, .. } = host
        .persister
        .handle_commit_failed(&mut host.generator, first)
    else {
        panic!()
    };
    assert_eq!(ids, vec![2]);
    host.commit(second);
    assert_eq!(host.generator.current_token(), 3);
}

#[test]
fn crash_forgets_batches_in_flight() {
    let mut host = Host::new();
    host.write(&["$a"]);
    let (batch, action) = host
        .persister
        .submit(&mut host.generator, vec!["$b".into()])
        .unwrap();
    assert!(matches!(action, Action::FetchIds { count: 1, .. }));
    assert_eq!(host.persister.crash().len(), 2);
    assert!(host.persister.in_flight().next().is_none());
    let _ = batch;
}

#[test]
fn empty_batches_and_readers_are_refused() {
    let mut host = Host::new();
    assert_eq!(
        host.persister
            .submit(&mut host.generator, vec![])
            .unwrap_err(),
        PersistError::EmptyBatch
    );
    let mut reader =
        MultiWriterIdGenerator::start(&mut host.db, IdGenConfig::new("r1", &["w1"])).unwrap();
    assert_eq!(
        host.persister
            .submit(&mut reader, vec!["$x".into()])
            .unwrap_err(),
        PersistError::IdGen(IdGenError::NotAWriter)
    );
}

#[test]
fn cancelled_enter_leaves_a_gap_and_switch_b10_pins_the_position() {
    for (bugs, expected) in [
        (Bugs::NONE, 3),
        (Bugs::NONE.with(Bug::CancelledEnterWedgesPosition), 1),
    ] {
        let mut db = Database::new();
        db.nextval().unwrap();
        let config = IdGenConfig::new("w1", &["w1"]).with_bugs(bugs);
        let mut generator = MultiWriterIdGenerator::start(&mut db, config).unwrap();
        let mut persister = Persister::new();
        let (batch, _) = persister
            .submit(&mut generator, vec!["$cancelled".into()])
            .unwrap();
        let ids = db.nextval_many(1).unwrap();
        let action = persister.handle_enter_cancelled(&mut generator, batch, ids.clone());
        assert_eq!(action, Action::Failed { batch, ids });
        // A later batch commits; with the leak, the position stays below the cancelled id.
        let (next, _) = persister.submit(&mut generator, vec!["$x".into()]).unwrap();
        let ids = db.nextval_many(1).unwrap();
        persister.handle_ids(&mut generator, next, ids);
        persister.handle_committed(&mut generator, next);
        assert_eq!(
            generator.current_token_for_writer("w1"),
            expected,
            "{bugs:?}"
        );
    }
}

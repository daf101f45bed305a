//! The simulated database: one Postgres-like sequence per stream, the stream table and
//! `stream_positions`, with transactions that a crash of their owner throws away.
//!
//! Models what Synapse relies on from PostgreSQL for multi-writer streams:
//! - `nextval` never hands out a value twice, also across aborted transactions (sequences are
//!   not transactional), and `setval` can move a sequence anywhere, even backwards;
//! - rows and `stream_positions` upserts become visible atomically at commit;
//! - what is committed survives a crash of any host; what an owner had not committed is gone.
//!
//! The one sequence, table and stream are named as in Synapse's own tests
//! (`foobar_seq`, `foobar`, `test_stream`); the names only matter to error texts.

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

/// Name of the stream in `stream_positions`, as in tests/storage/test_id_generators.py.
pub const STREAM_NAME: &str = "test_stream";
/// Name of the sequence, as in tests/storage/test_id_generators.py.
pub const SEQUENCE_NAME: &str = "foobar_seq";

/// A PostgreSQL sequence: `last_value` plus `is_called`, exactly the two columns Synapse reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sequence {
    last_value: i64,
    is_called: bool,
}

impl Default for Sequence {
    /// `CREATE SEQUENCE` without `nextval`: `last_value` 1, `is_called` false, so the first
    /// `nextval` returns 1 (the "id 1 quirk" of Synapse's tests).
    fn default() -> Self {
        Sequence {
            last_value: 1,
            is_called: false,
        }
    }
}

impl Sequence {
    /// `nextval`: the next value, never handed out before.
    pub fn nextval(&mut self) -> Result<i64, DbError> {
        if !self.is_called {
            self.is_called = true;
            return Ok(self.last_value);
        }
        let next = self
            .last_value
            .checked_add(1)
            .ok_or(DbError::SequenceExhausted)?;
        self.last_value = next;
        Ok(next)
    }

    /// `setval(seq, value)`: moves the sequence, even backwards; `is_called` becomes true.
    pub fn setval(&mut self, value: i64) -> Result<(), DbError> {
        if value < 1 {
            // A default sequence has MINVALUE 1; Postgres rejects anything below.
            return Err(DbError::SetvalOutOfBounds(value));
        }
        self.last_value = value;
        self.is_called = true;
        Ok(())
    }

    /// The raw `last_value` column, whatever `is_called` says (what a restarting writer takes as
    /// its own position, synapse-model §1.6 step 3).
    pub fn last_value(&self) -> i64 {
        self.last_value
    }

    /// Highest value handed out so far: `last_value`, minus 1 when not yet called
    /// (`get_max_allocated` and `check_consistency`).
    pub fn max_allocated(&self) -> i64 {
        if self.is_called {
            self.last_value
        } else {
            self.last_value - 1
        }
    }
}

/// One row of the stream table (`foobar(stream_id, instance_name, data)`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StreamRow {
    pub stream_id: i64,
    pub instance_name: String,
    pub payload: Option<String>,
}

/// Identifies an open transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxnId(u64);

/// Who a transaction belongs to: the host whose crash throws it away.
pub type Owner = String;

#[derive(Clone, Debug, Default)]
struct OpenTxn {
    owner: Owner,
    rows: Vec<StreamRow>,
    position_writes: Vec<PositionWrite>,
}

#[derive(Clone, Debug)]
enum PositionWrite {
    /// `INSERT ... ON CONFLICT DO UPDATE SET stream_id = EXCLUDED.stream_id WHERE stored < new`:
    /// the rule of `_update_stream_positions_table_txn`; the stored row never regresses.
    IfGreater { instance: String, stream_id: i64 },
    /// `... DO UPDATE SET stream_id = ?` without a condition, as the test helpers
    /// `_insert_rows` and `_insert_row_with_id` do.
    Overwrite { instance: String, stream_id: i64 },
}

/// What a crash of one owner threw away.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CrashLoss {
    /// Transactions that were open and are now gone.
    pub transactions: usize,
    /// Stream ids of rows those transactions had inserted.
    pub lost_row_ids: Vec<i64>,
}

/// The database: one stream's sequence, table and `stream_positions` rows.
#[derive(Clone, Debug, Default)]
pub struct Database {
    sequence: Sequence,
    /// In insertion order, as a freshly created heap table without updates returns them; ties on
    /// stream_id keep this order when Synapse sorts rows at start-up.
    rows: Vec<StreamRow>,
    /// The primary-key index: stream id -> positions in `rows` (ids may repeat only through
    /// test helpers that write exact ids). Keeps range reads logarithmic, as Postgres's index
    /// does, so long simulations do not go quadratic.
    /// `(stream id, position in rows)`: one entry per row, no allocation per id.
    by_stream_id: BTreeSet<(i64, usize)>,
    stream_positions: BTreeMap<String, i64>,
    /// `federation_stream_position` rows of type `events`, by federation sender instance.
    federation_positions: BTreeMap<String, i64>,
    open: BTreeMap<TxnId, OpenTxn>,
    next_txn: u64,
    committed_txns: u64,
}

/// Errors the database reports to its callers, as Postgres would.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum DbError {
    #[error("nextval: reached maximum value of sequence \"{SEQUENCE_NAME}\"")]
    SequenceExhausted,
    #[error("setval: value {0} is out of bounds for sequence \"{SEQUENCE_NAME}\" (1..9223372036854775807)")]
    SetvalOutOfBounds(i64),
    /// psycopg2 refuses to send such a parameter; Synapse sees a `ValueError`.
    #[error("ValueError: A string literal cannot contain NUL (0x00) characters.")]
    NulInText,
    #[error("no open transaction {0:?}")]
    UnknownTransaction(TxnId),
}

impl Database {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn sequence(&self) -> &Sequence {
        &self.sequence
    }

    /// `nextval` outside any transaction: sequences ignore rollbacks, so this is all there is.
    pub fn nextval(&mut self) -> Result<i64, DbError> {
        self.sequence.nextval()
    }

    /// `SELECT nextval(seq) FROM generate_series(1, n)`: `n` consecutive calls.
    pub fn nextval_many(&mut self, n: u64) -> Result<Vec<i64>, DbError> {
        (0..n).map(|_| self.sequence.nextval()).collect()
    }

    pub fn setval(&mut self, value: i64) -> Result<(), DbError> {
        self.sequence.setval(value)
    }

    /// Committed rows in insertion order.
    pub fn rows(&self) -> &[StreamRow] {
        &self.rows
    }

    /// Committed `stream_positions` rows of the stream, by instance name.
    pub fn stream_positions(&self) -> &BTreeMap<String, i64> {
        &self.stream_positions
    }

    /// Number of transactions committed so far (a db-work measure for metrics).
    pub fn committed_transactions(&self) -> u64 {
        self.committed_txns
    }

    pub fn begin(&mut self, owner: &str) -> TxnId {
        let id = TxnId(self.next_txn);
        self.next_txn += 1;
        self.open.insert(
            id,
            OpenTxn {
                owner: owner.to_owned(),
                ..OpenTxn::default()
            },
        );
        id
    }

    /// Text parameters may not contain NUL, which PostgreSQL's drivers reject.
    pub fn check_text<'a>(&self, texts: impl IntoIterator<Item = &'a str>) -> Result<(), DbError> {
        match texts.into_iter().any(|text| text.contains('\0')) {
            true => Err(DbError::NulInText),
            false => Ok(()),
        }
    }

    pub fn insert_row(&mut self, txn: TxnId, row: StreamRow) -> Result<(), DbError> {
        self.check_text([row.instance_name.as_str()])?;
        self.check_text(row.payload.as_deref())?;
        self.txn_mut(txn)?.rows.push(row);
        Ok(())
    }

    /// Queues the conditional upsert of `stream_positions` (never moves a row backwards).
    pub fn upsert_position_if_greater(
        &mut self,
        txn: TxnId,
        instance: &str,
        stream_id: i64,
    ) -> Result<(), DbError> {
        self.check_text([instance])?;
        self.txn_mut(txn)?
            .position_writes
            .push(PositionWrite::IfGreater {
                instance: instance.to_owned(),
                stream_id,
            });
        Ok(())
    }

    /// Queues the unconditional upsert the test helpers use.
    pub fn overwrite_position(
        &mut self,
        txn: TxnId,
        instance: &str,
        stream_id: i64,
    ) -> Result<(), DbError> {
        self.check_text([instance])?;
        self.txn_mut(txn)?
            .position_writes
            .push(PositionWrite::Overwrite {
                instance: instance.to_owned(),
                stream_id,
            });
        Ok(())
    }

    /// Makes everything the transaction did visible at once.
    pub fn commit(&mut self, txn: TxnId) -> Result<(), DbError> {
        let open = self
            .open
            .remove(&txn)
            .ok_or(DbError::UnknownTransaction(txn))?;
        for row in open.rows {
            self.by_stream_id.insert((row.stream_id, self.rows.len()));
            self.rows.push(row);
        }
        for write in open.position_writes {
            self.apply_position_write(write);
        }
        self.committed_txns += 1;
        Ok(())
    }

    /// Throws the transaction's work away. Sequence values it consumed stay consumed.
    pub fn rollback(&mut self, txn: TxnId) -> Result<(), DbError> {
        self.open
            .remove(&txn)
            .map(|_| ())
            .ok_or(DbError::UnknownTransaction(txn))
    }

    /// A crash of `owner`: its open transactions are rolled back by the server when the
    /// connection drops. Returns what was lost so the history can record it.
    pub fn crash_owner(&mut self, owner: &str) -> CrashLoss {
        let doomed: Vec<TxnId> = self
            .open
            .iter()
            .filter(|(_, t)| t.owner == owner)
            .map(|(id, _)| *id)
            .collect();
        let mut loss = CrashLoss::default();
        for id in doomed {
            let txn = self.open.remove(&id).expect("listed above");
            loss.transactions += 1;
            loss.lost_row_ids
                .extend(txn.rows.iter().map(|r| r.stream_id));
        }
        loss
    }

    /// Rows and the conditional position upsert in one autocommit transaction.
    pub fn insert_rows_autocommit(
        &mut self,
        owner: &str,
        rows: Vec<StreamRow>,
    ) -> Result<(), DbError> {
        let txn = self.begin(owner);
        for row in rows {
            if let Err(error) = self.insert_row(txn, row) {
                self.rollback(txn).expect("transaction just opened");
                return Err(error);
            }
        }
        self.commit(txn)
    }

    /// `_update_stream_positions_table_txn` in its own autocommit transaction.
    pub fn upsert_position_if_greater_autocommit(
        &mut self,
        owner: &str,
        instance: &str,
        stream_id: i64,
    ) -> Result<(), DbError> {
        let txn = self.begin(owner);
        if let Err(error) = self.upsert_position_if_greater(txn, instance, stream_id) {
            self.rollback(txn).expect("transaction just opened");
            return Err(error);
        }
        self.commit(txn)
    }

    /// `DELETE FROM stream_positions WHERE stream_name = ? AND instance_name NOT IN (writers)`.
    pub fn prune_stream_positions(&mut self, writers: &[String]) {
        self.stream_positions
            .retain(|instance, _| writers.contains(instance));
    }

    /// `GREATEST(MAX(stream_id), 0)` over the committed rows.
    pub fn max_row_id(&self) -> i64 {
        self.by_stream_id.last().map_or(0, |(id, _)| *id).max(0)
    }

    /// The highest id `h` such that every id in `2..=h` is a committed row (id 1, the
    /// sequence's first value, counts as persisted): the end of the gapless committed prefix.
    /// What fix F5 caps a start-up's persisted position at (tools/synapse/FIXES.md).
    pub fn committed_prefix_end(&self) -> i64 {
        let mut end = 1;
        for id in self.by_stream_id.range((2, 0)..).map(|(id, _)| *id) {
            if id == end {
                continue;
            }
            if id != end + 1 {
                break;
            }
            end = id;
        }
        end
    }

    /// `SELECT instance_name, MAX(stream_id) ... GROUP BY instance_name` over committed rows.
    pub fn max_row_id_per_instance(&self) -> BTreeMap<String, i64> {
        let mut highest = BTreeMap::new();
        for row in &self.rows {
            let entry = highest
                .entry(row.instance_name.clone())
                .or_insert(row.stream_id);
            *entry = (*entry).max(row.stream_id);
        }
        highest
    }

    /// Indexes in `rows` of the rows with `from < stream_id <= upto`, in id order.
    fn indexes_between(&self, from: i64, upto: i64) -> impl Iterator<Item = usize> + '_ {
        use std::ops::Bound::{Excluded, Included};
        let range = (from < upto).then(|| {
            self.by_stream_id
                .range((Excluded((from, usize::MAX)), Included((upto, usize::MAX))))
        });
        range.into_iter().flatten().map(|(_, index)| *index)
    }

    /// Committed rows with `from < stream_id <= upto` in id order (ties in table order).
    pub fn rows_in_range(&self, from: i64, upto: i64) -> Vec<&StreamRow> {
        self.indexes_between(from, upto)
            .map(|index| &self.rows[index])
            .collect()
    }

    /// `SELECT instance_name, stream_id FROM foobar WHERE ? <= stream_id`, in table order.
    pub fn rows_from(&self, min_stream_id: i64) -> Vec<(String, i64)> {
        let mut indexes: Vec<usize> = self
            .by_stream_id
            .range((min_stream_id, 0)..)
            .map(|(_, index)| *index)
            .collect();
        indexes.sort_unstable();
        indexes
            .into_iter()
            .map(|index| {
                let row = &self.rows[index];
                (row.instance_name.clone(), row.stream_id)
            })
            .collect()
    }

    /// `get_all_new_event_ids_stream`'s query (storage/databases/main/stream.py lines
    /// 2104-2126): every writer's rows with `from < stream_id <= upto`, in stream order, at
    /// most `limit`, as (stream id, payload).
    pub fn new_event_ids(&self, from: i64, upto: i64, limit: usize) -> Vec<(i64, String)> {
        self.indexes_between(from, upto)
            .map(|index| &self.rows[index])
            .take(limit)
            .map(|row| (row.stream_id, row.payload.clone().unwrap_or_default()))
            .collect()
    }

    /// `get_federation_out_pos("events")` of `instance`: its stored position, or
    /// [`crate::fedsender::INITIAL_OUT_POS`] when it has none.
    pub fn federation_out_pos(&self, instance: &str) -> i64 {
        self.federation_positions
            .get(instance)
            .copied()
            .unwrap_or(crate::fedsender::INITIAL_OUT_POS)
    }

    /// `update_federation_out_pos("events", position)` of `instance` (autocommit).
    pub fn update_federation_out_pos(&mut self, instance: &str, position: i64) {
        self.federation_positions
            .insert(instance.to_owned(), position);
    }

    /// Committed rows of one writer with `from < stream_id <= upto`, ascending, at most `limit`
    /// (the shape of a stream's `get_updates_since` query).
    pub fn rows_between(&self, writer: &str, from: i64, upto: i64, limit: usize) -> Vec<StreamRow> {
        self.indexes_between(from, upto)
            .map(|index| &self.rows[index])
            .filter(|row| row.instance_name == writer)
            .take(limit)
            .cloned()
            .collect()
    }

    fn apply_position_write(&mut self, write: PositionWrite) {
        match write {
            PositionWrite::IfGreater {
                instance,
                stream_id,
            } => {
                let stored = self.stream_positions.entry(instance).or_insert(stream_id);
                if *stored < stream_id {
                    *stored = stream_id;
                }
            }
            PositionWrite::Overwrite {
                instance,
                stream_id,
            } => {
                self.stream_positions.insert(instance, stream_id);
            }
        }
    }

    fn txn_mut(&mut self, txn: TxnId) -> Result<&mut OpenTxn, DbError> {
        self.open
            .get_mut(&txn)
            .ok_or(DbError::UnknownTransaction(txn))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_sequence_hands_out_one_first_and_never_repeats() {
        let mut db = Database::new();
        assert_eq!(db.sequence().max_allocated(), 0);
        assert_eq!(db.nextval().unwrap(), 1);
        assert_eq!(db.nextval_many(3).unwrap(), vec![2, 3, 4]);
        assert_eq!(db.sequence().last_value(), 4);
        assert_eq!(db.sequence().max_allocated(), 4);
    }

    #[test]
    fn aborted_transaction_does_not_give_its_ids_back() {
        let mut db = Database::new();
        let txn = db.begin("w1");
        let id = db.nextval().unwrap();
        db.insert_row(
            txn,
            StreamRow {
                stream_id: id,
                instance_name: "w1".into(),
                payload: None,
            },
        )
        .unwrap();
        db.rollback(txn).unwrap();
        assert!(db.rows().is_empty());
        assert_eq!(db.nextval().unwrap(), id + 1);
    }

    #[test]
    fn setval_can_move_backwards_and_rejects_zero() {
        let mut db = Database::new();
        db.nextval_many(5).unwrap();
        db.setval(2).unwrap();
        assert_eq!(db.nextval().unwrap(), 3);
        assert_eq!(db.setval(0), Err(DbError::SetvalOutOfBounds(0)));
    }

    #[test]
    fn conditional_upsert_never_regresses_but_overwrite_does() {
        let mut db = Database::new();
        db.upsert_position_if_greater_autocommit("w1", "w1", 7)
            .unwrap();
        db.upsert_position_if_greater_autocommit("w1", "w1", 5)
            .unwrap();
        assert_eq!(db.stream_positions()["w1"], 7);
        let txn = db.begin("test");
        db.overwrite_position(txn, "w1", 3).unwrap();
        db.commit(txn).unwrap();
        assert_eq!(db.stream_positions()["w1"], 3);
    }

    #[test]
    fn crash_keeps_committed_rows_and_drops_open_work() {
        let mut db = Database::new();
        db.insert_rows_autocommit(
            "w1",
            vec![StreamRow {
                stream_id: 2,
                instance_name: "w1".into(),
                payload: None,
            }],
        )
        .unwrap();
        let open = db.begin("w1");
        db.insert_row(
            open,
            StreamRow {
                stream_id: 3,
                instance_name: "w1".into(),
                payload: None,
            },
        )
        .unwrap();
        db.upsert_position_if_greater(open, "w1", 3).unwrap();
        let other = db.begin("w2");
        db.insert_row(
            other,
            StreamRow {
                stream_id: 4,
                instance_name: "w2".into(),
                payload: None,
            },
        )
        .unwrap();
        let loss = db.crash_owner("w1");
        assert_eq!(
            loss,
            CrashLoss {
                transactions: 1,
                lost_row_ids: vec![3]
            }
        );
        assert_eq!(db.commit(open), Err(DbError::UnknownTransaction(open)));
        db.commit(other).unwrap();
        let ids: Vec<i64> = db.rows().iter().map(|r| r.stream_id).collect();
        assert_eq!(ids, vec![2, 4]);
        assert!(db.stream_positions().is_empty());
    }

    #[test]
    fn rows_from_and_between_select_the_right_rows() {
        let mut db = Database::new();
        let row = |id, w: &str| StreamRow {
            stream_id: id,
            instance_name: w.into(),
            payload: None,
        };
        db.insert_rows_autocommit(
            "t",
            vec![row(5, "a"), row(3, "b"), row(4, "a"), row(7, "a")],
        )
        .unwrap();
        assert_eq!(
            db.rows_from(4),
            vec![("a".into(), 5), ("a".into(), 4), ("a".into(), 7)]
        );
        let between: Vec<i64> = db
            .rows_between("a", 4, 7, 10)
            .iter()
            .map(|r| r.stream_id)
            .collect();
        assert_eq!(between, vec![5, 7]);
        assert_eq!(db.max_row_id(), 7);
    }
}

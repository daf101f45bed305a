//! An event persister (a Synapse process that writes the events stream): it takes batches of
//! events, allocates their stream ids through its [`MultiWriterIdGenerator`], writes their rows
//! in a transaction, and finishes the ids, so that several batches in flight may commit out of
//! order.
//!
//! This is `persist_events` reduced to what streams see: `get_next_mult(n)` is entered (one
//! autocommit round trip to the sequence), the rows are written in a *separate* transaction,
//! and the context exits, marking the ids finished and upserting `stream_positions`
//! (synapse-model.md §1.2). Every database round trip is an [`Action`] for the host to carry
//! out; its answer comes back through a `handle_*` method.
//!
//! Drive contract: call [`Persister::submit`] for a new batch, then answer each action:
//! [`Action::FetchIds`] with [`Persister::handle_ids`] (or [`Persister::handle_fetch_failed`]),
//! [`Action::CommitRows`] with [`Persister::handle_committed`] (or
//! [`Persister::handle_commit_failed`]). [`Action::UpsertPosition`] and [`Action::Persisted`]
//! need no answer. A crash of the host is [`Persister::crash`].

use std::collections::BTreeMap;

use crate::bugs::Bug;
use crate::idgen::{Fetch, IdGenError, MultiWriterIdGenerator};
use crate::token::MultiWriterToken;

/// Identifies one batch of one persister.
pub type BatchId = u64;

/// An event's identity as the workload names it (e.g. `$w1-17`).
pub type EventId = String;

/// What the host must do for the persister.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// `nextval` `count` times in one autocommit round trip; answer with `handle_ids`.
    FetchIds { batch: BatchId, count: u64 },
    /// Insert `(stream_id, instance, event)` rows in one transaction; answer with
    /// `handle_committed` once it committed.
    CommitRows {
        batch: BatchId,
        rows: Vec<(i64, EventId)>,
    },
    /// Upsert `stream_positions` for this writer, only if greater (autocommit, no answer).
    UpsertPosition { position: i64 },
    /// The batch is persisted and its ids finished: the host wakes its notifier
    /// (`on_new_room_events` with `max_token`) and pokes its replication streamer.
    Persisted {
        batch: BatchId,
        events: Vec<(i64, EventId)>,
        max_token: MultiWriterToken,
    },
    /// The batch failed after its ids were allocated: the ids are finished (a permanent gap)
    /// and nothing was written.
    Failed { batch: BatchId, ids: Vec<i64> },
}

#[derive(Debug)]
enum Stage {
    /// Entering the id-generator context: the sequence has been asked.
    AwaitingIds(Fetch),
    /// Rows sent in a transaction, waiting for the commit.
    AwaitingCommit,
}

#[derive(Debug)]
struct Batch {
    events: Vec<EventId>,
    ids: Vec<i64>,
    stage: Stage,
}

/// The batches one persister has in flight.
#[derive(Debug, Default)]
pub struct Persister {
    next_batch: BatchId,
    in_flight: BTreeMap<BatchId, Batch>,
}

/// Why a batch could not start.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PersistError {
    #[error("a batch needs at least one event")]
    EmptyBatch,
    #[error(transparent)]
    IdGen(#[from] IdGenError),
}

impl Persister {
    pub fn new() -> Self {
        Self::default()
    }

    /// Batches not yet persisted, in submission order.
    pub fn in_flight(&self) -> impl Iterator<Item = BatchId> + '_ {
        self.in_flight.keys().copied()
    }

    /// Starts persisting `events`: enters the id generator (`get_next_mult(len)`).
    pub fn submit(
        &mut self,
        generator: &mut MultiWriterIdGenerator,
        events: Vec<EventId>,
    ) -> Result<(BatchId, Action), PersistError> {
        if events.is_empty() {
            return Err(PersistError::EmptyBatch);
        }
        let fetch = generator.begin_fetch()?;
        let batch = self.next_batch;
        self.next_batch += 1;
        let count = events.len() as u64;
        self.in_flight.insert(
            batch,
            Batch {
                events,
                ids: Vec::new(),
                stage: Stage::AwaitingIds(fetch),
            },
        );
        Ok((batch, Action::FetchIds { batch, count }))
    }

    /// The sequence answered: the ids become unfinished in the generator and the rows go out.
    pub fn handle_ids(
        &mut self,
        generator: &mut MultiWriterIdGenerator,
        batch: BatchId,
        ids: Vec<i64>,
    ) -> Action {
        let entry = self
            .in_flight
            .get_mut(&batch)
            .expect("ids for a batch in flight");
        assert_eq!(ids.len(), entry.events.len(), "one id per event");
        let Stage::AwaitingIds(fetch) = std::mem::replace(&mut entry.stage, Stage::AwaitingCommit)
        else {
            panic!("batch {batch} was not waiting for ids");
        };
        generator.complete_fetch(fetch, &ids);
        entry.ids = ids;
        let rows = entry
            .ids
            .iter()
            .copied()
            .zip(entry.events.iter().cloned())
            .collect();
        Action::CommitRows { batch, rows }
    }

    /// The request was cancelled (its client went away) after the sequence answered but
    /// before `enter` returned the ids: the caller never writes its rows. 1.163.2 catches the
    /// cancellation inside `enter`, marks the recorded ids finished (a permanent gap) and
    /// notifies; with bug B10 (PR #20090) they stay unfinished and pin the position.
    pub fn handle_enter_cancelled(
        &mut self,
        generator: &mut MultiWriterIdGenerator,
        batch: BatchId,
        ids: Vec<i64>,
    ) -> Action {
        let entry = self.in_flight.remove(&batch).expect("a batch in flight");
        let Stage::AwaitingIds(fetch) = entry.stage else {
            panic!("batch {batch} was not waiting for ids")
        };
        generator.complete_fetch(fetch, &ids);
        if !generator
            .config()
            .bugs
            .on(Bug::CancelledEnterWedgesPosition)
        {
            generator.mark_finished(&ids);
        }
        Action::Failed { batch, ids }
    }

    /// The sequence call failed: the guard goes, nothing was allocated.
    pub fn handle_fetch_failed(&mut self, generator: &mut MultiWriterIdGenerator, batch: BatchId) {
        let entry = self.in_flight.remove(&batch).expect("a batch in flight");
        let Stage::AwaitingIds(fetch) = entry.stage else {
            panic!("batch {batch} was not waiting for ids")
        };
        generator.abandon_fetch(fetch);
    }

    /// The rows committed: the context exits successfully (ids finished, position upserted,
    /// notifier and replication woken with the token read *after* finishing).
    pub fn handle_committed(
        &mut self,
        generator: &mut MultiWriterIdGenerator,
        batch: BatchId,
    ) -> Vec<Action> {
        let entry = self
            .in_flight
            .remove(&batch)
            .expect("commit of a batch in flight");
        assert!(
            matches!(entry.stage, Stage::AwaitingCommit),
            "batch {batch} committed before its ids arrived"
        );
        generator.mark_finished(&entry.ids);
        let mut actions = Vec::new();
        if let Some(position) = generator.position_to_persist() {
            actions.push(Action::UpsertPosition { position });
        }
        let max_token =
            MultiWriterToken::from_positions(generator.current_token(), generator.positions());
        let events = entry.ids.into_iter().zip(entry.events).collect();
        actions.push(Action::Persisted {
            batch,
            events,
            max_token,
        });
        actions
    }

    /// The transaction failed: the context exits with an exception, so the ids are marked
    /// finished (a permanent gap) and `stream_positions` is not written.
    pub fn handle_commit_failed(
        &mut self,
        generator: &mut MultiWriterIdGenerator,
        batch: BatchId,
    ) -> Action {
        let entry = self.in_flight.remove(&batch).expect("a batch in flight");
        assert!(
            matches!(entry.stage, Stage::AwaitingCommit),
            "batch {batch} failed before its ids arrived"
        );
        generator.mark_finished(&entry.ids);
        Action::Failed {
            batch,
            ids: entry.ids,
        }
    }

    /// The host crashed: everything in flight is forgotten (the database rolls back the open
    /// transactions; the sequence values stay used). Returns the lost batches.
    pub fn crash(&mut self) -> Vec<BatchId> {
        let lost = self.in_flight.keys().copied().collect();
        self.in_flight.clear();
        lost
    }
}

#[cfg(test)]
mod tests;

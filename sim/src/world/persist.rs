//! The persistence path of a writer process: one batch through the persister model (ids from
//! the sequence, the persist delay, the commit, `_update_table`), with the database over the
//! network, and the replication announcement of what it wrote. The writer's workload and
//! forwarded client sends (`send`) both persist through it.

use std::rc::Rc;
use std::time::Duration;

use rand::Rng;
use streamsim_models::metrics::bgproc::{ProcessId, Usage};
use streamsim_models::persister::Action;

use super::db::DbCallError;
use super::process::Process;
use super::process_metrics::{names, CPU_US_PER_EVENT};
use crate::history::Event;
use crate::net::now;

/// A batch's persist delay, from the scenario's range.
pub fn draw_persist_delay(process: &Process, rng: &mut impl Rng) -> u64 {
    let range = process.shared.scenario.workload.persist_delay_ms;
    rng.random_range(range.min..=range.max)
}

/// One batch through the persister: ids, delay, commit, finish, announce. Answers the ids
/// of a committed batch, or why it was not persisted. `events` are row payloads
/// (`roomsync::row_payload`: event id and room).
pub async fn persist(
    process: Rc<Process>,
    events: Vec<String>,
    delay_ms: u64,
) -> Result<Vec<i64>, String> {
    // `persist_events`: the persistence queue's background process, one per batch here.
    let worker = process.bg_start(names::PERSIST_EVENTS);
    let count = i64::try_from(events.len()).unwrap_or(i64::MAX);
    process.bg_charge(
        worker,
        Usage {
            cpu_us: CPU_US_PER_EVENT * count,
            ..Usage::default()
        },
    );
    let outcome = persist_batch(&process, worker, events, delay_ms).await;
    process.bg_finish(worker);
    outcome
}

async fn persist_batch(
    process: &Rc<Process>,
    worker: ProcessId,
    events: Vec<String>,
    delay_ms: u64,
) -> Result<Vec<i64>, String> {
    let submitted = {
        let state = &mut *process.state.borrow_mut();
        let writer = state.writer.as_mut().expect("a writer process");
        writer.persister.submit(&mut state.generator, events)
    };
    let (batch, count) = match submitted {
        Ok((batch, Action::FetchIds { batch: _, count })) => (batch, count),
        Ok((_, other)) => unreachable!("submit answers FetchIds, not {other:?}"),
        Err(error) => {
            // Not a configured writer (removed from the config): Synapse refuses too.
            tracing::debug!(host = %process.name, %error, "batch refused");
            return Err(error.to_string());
        }
    };
    let started = now();
    let fetched = process.db.nextval_many(count).await;
    process.bg_db_txn(worker, started);
    process.shared.observer.record(Event::SequenceFetched {
        host: process.name.clone(),
        requested_at: started,
        ids: fetched.as_ref().map(Clone::clone).unwrap_or_default(),
    });
    let ids = match fetched {
        Ok(ids) => ids,
        Err(error) => {
            tracing::debug!(host = %process.name, %error, "sequence call failed");
            let state = &mut *process.state.borrow_mut();
            let writer = state.writer.as_mut().expect("a writer process");
            writer
                .persister
                .handle_fetch_failed(&mut state.generator, batch);
            return Err(error.to_string());
        }
    };
    let cancel_rate = process.shared.scenario.workload.cancel_rate;
    if cancel_rate > 0.0 && process.cancel_draw() < cancel_rate {
        // The request went away while `enter` was returning the ids: its rows are never
        // written, and the ids are a gap (or, with bug B10, pin the position).
        {
            let state = &mut *process.state.borrow_mut();
            let writer = state.writer.as_mut().expect("a writer process");
            writer
                .persister
                .handle_enter_cancelled(&mut state.generator, batch, ids.clone());
        }
        process.shared.observer.record(Event::Aborted {
            host: process.name.clone(),
            ids,
        });
        process.poke();
        return Err("request cancelled".into());
    }
    process.shared.observer.add_unfinished(&process.name, &ids);
    let rows = {
        let state = &mut *process.state.borrow_mut();
        let writer = state.writer.as_mut().expect("a writer process");
        match writer
            .persister
            .handle_ids(&mut state.generator, batch, ids.clone())
        {
            Action::CommitRows { rows, .. } => rows,
            other => unreachable!("ids answer CommitRows, not {other:?}"),
        }
    };
    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    let started = now();
    let committed = process.db.commit(rows.clone()).await;
    process.bg_db_txn(worker, started);
    if committed.is_ok() {
        // `txn.call_after(_events_stream_cache.entity_has_changed, room_id, stream_ordering)`
        // (`_update_room_depths_txn`, storage/databases/main/events.py): the
        // persisting process marks each room once its transaction committed, before the
        // ids are finished.
        process.rooms_changed(rows.iter().map(|(id, payload)| (payload.as_str(), *id)));
    }
    let actions = {
        let state = &mut *process.state.borrow_mut();
        let writer = state.writer.as_mut().expect("a writer process");
        match &committed {
            Ok(()) => writer
                .persister
                .handle_committed(&mut state.generator, batch),
            Err(_) => vec![writer
                .persister
                .handle_commit_failed(&mut state.generator, batch)],
        }
    };
    process
        .shared
        .observer
        .remove_unfinished(&process.name, &ids);
    if let Err(DbCallError::Rejected(message)) = &committed {
        // The database said no: the ids are a permanent gap. (Without an answer the outcome
        // is unknown, so nothing is claimed.)
        tracing::debug!(host = %process.name, %message, "commit rejected");
        process.shared.observer.record(Event::Aborted {
            host: process.name.clone(),
            ids: ids.clone(),
        });
    }
    // `__aexit__`: ids finished, then `notify_replication`, then the position upsert.
    process.poke();
    for action in actions {
        if let Action::UpsertPosition { position } = action {
            let updater = process.bg_start(names::UPDATE_TABLE);
            let started = now();
            let upserted = process.db.upsert_position(position).await;
            process.bg_db_txn(updater, started);
            process.bg_finish(updater);
            if let Err(error) = upserted {
                tracing::debug!(host = %process.name, %error, "position upsert failed");
            }
        }
    }
    match committed {
        Ok(()) => Ok(ids),
        Err(error) => Err(error.to_string()),
    }
}

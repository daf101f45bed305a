//! A writer host (an event persister): the scenario's workload, each batch persisted through
//! the persister model with the database over the network, and the replication server that
//! announces what it wrote.
//!
//! Batches run concurrently: each waits its persist delay between getting its ids and
//! committing, so a later batch with higher ids can commit first.

use std::rc::Rc;
use std::time::Duration;

use rand::Rng;
use streamsim_models::connection::Role;
use streamsim_models::limits::STREAMER_IDLE_POKE_INTERVAL_MS;
use streamsim_models::persister::Action;
use tokio::sync::mpsc;

use streamsim_models::metrics::bgproc::{ProcessId, Usage};

use super::db::DbCallError;
use super::instruments::{names, CPU_US_PER_EVENT};
use super::link::{self, LinkHandler};
use super::process::Process;
use super::{follow, reader, send, Shared, HOMESERVER_NAME};
use crate::history::Event;
use crate::net::{now, REPLICATION_PORT};
use crate::scenario::{room_persister, Transport};
use streamsim_models::roomsync::row_payload;

/// The writer host's software: start, serve replication, follow the other writers, run the
/// workload until the scenario's workload phase ends.
pub async fn run(shared: Rc<Shared>, name: String) -> crate::engine::HostResult {
    let process = Process::start(shared.clone(), &name, true).await;
    match shared.scenario.transport {
        Transport::Tcp => {
            crate::engine::spawn_local(serve_replication(process.clone()));
            follow::follow_writers(&process);
        }
        Transport::Redis => super::redis::subscribe(&process),
    }
    crate::engine::spawn_local(idle_pokes(process.clone()));
    crate::engine::spawn_local(send::serve_forwarded(process.clone()));
    crate::engine::spawn_local(send::serve_client_sends(process.clone()));
    crate::engine::spawn_local(reader::serve_sync(process.clone()));
    workload(process).await;
    std::future::pending::<()>().await;
    Ok(())
}

/// The streamer's timer: pokes the announcer so an idle writer announces its position.
async fn idle_pokes(process: Rc<Process>) {
    loop {
        tokio::time::sleep(Duration::from_millis(STREAMER_IDLE_POKE_INTERVAL_MS)).await;
        process.poke();
    }
}

/// Starts batches at the scenario's rate until the workload phase ends or the host is
/// quiesced.
async fn workload(process: Rc<Process>) {
    let shared = process.shared.clone();
    let mut rng = shared.rng_for(&process.name, process.incarnation);
    // Rooms are drawn from a stream of their own, so the workload's timing draws stay as
    // they were.
    let mut room_rng = shared.rng_for(&format!("{}/rooms", process.name), process.incarnation);
    let rooms = own_rooms(&process);
    let workload = shared.scenario.workload.clone();
    let interval_ms = (1_000 / u64::from(workload.batches_per_second.max(1))).max(1);
    let mut sequence = 0u64;
    loop {
        let jittered = rng.random_range(interval_ms / 2..=interval_ms + interval_ms / 2);
        tokio::time::sleep(Duration::from_millis(jittered.max(1))).await;
        if now().as_ms() >= shared.scenario.duration_ms || shared.is_quiesced(&process.name) {
            return;
        }
        let size = rng.random_range(workload.batch_size.min..=workload.batch_size.max);
        let delay = draw_persist_delay(&process, &mut rng);
        let events = (0..size)
            .map(|_| {
                sequence += 1;
                let event_id = format!("${}.{}.{}", process.name, process.incarnation, sequence);
                let room = &rooms[room_rng.random_range(0..rooms.len())];
                row_payload(&event_id, room)
            })
            .collect();
        let process = process.clone();
        crate::engine::spawn_local(async move {
            let _ = persist(process, events, delay).await;
        });
    }
}

/// The rooms this writer persists under its writers config (every room when it is not a
/// configured writer: its batches are refused anyway).
fn own_rooms(process: &Process) -> Vec<String> {
    let all = process.shared.scenario.rooms();
    let own: Vec<String> = all
        .iter()
        .filter(|room| room_persister(room, &process.writers) == Some(process.name.as_str()))
        .cloned()
        .collect();
    if own.is_empty() {
        all
    } else {
        own
    }
}

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

/// The replication server: one protocol connection per client.
async fn serve_replication(process: Rc<Process>) {
    let Err(error) = crate::net::accept_each(REPLICATION_PORT, |stream, peer| {
        let peer = crate::engine::reverse_lookup(peer.ip()).unwrap_or_default();
        let (sender, receiver) = mpsc::unbounded_channel();
        let id = process.add_link(sender);
        let process = process.clone();
        async move {
            let handler: Rc<dyn LinkHandler> = Rc::new(ServerSide {
                process: process.clone(),
                peer,
            });
            let role = Role::Server {
                server_name: HOMESERVER_NAME.to_owned(),
            };
            link::drive(stream, role, Vec::new(), receiver, handler).await;
            process.remove_link(id);
        }
    })
    .await;
    panic!("the replication port is taken: {error}");
}

struct ServerSide {
    process: Rc<Process>,
    peer: String,
}

impl LinkHandler for ServerSide {
    fn on_command(&self, command: streamsim_models::wire::Command) {
        // Clients send REPLICATE (and USER_SYNC etc.); the server follows no stream from them.
        self.process.count_inbound(&self.peer, &command);
        self.process.on_command("clients", &command);
    }

    fn on_transmit(&self, line: &[u8]) {
        self.process.shared.observer.count_message();
        self.process.count_outbound(&self.peer, line);
    }

    fn on_pending(&self, pending: usize) {
        self.process.set_pending_commands(&self.peer, pending);
    }

    fn slow_until(&self) -> Option<streamsim_models::time::SimInstant> {
        None
    }

    fn on_closed(&self, reason: &str) {
        self.process
            .shared
            .observer
            .record(crate::history::Event::Disconnected {
                host: self.process.name.clone(),
                peer: self.peer.clone(),
                reason: reason.to_owned(),
            });
    }

    fn outbound_cut(&self) -> bool {
        self.process.shared.is_cut(&self.process.name, &self.peer)
    }
}

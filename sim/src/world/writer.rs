//! A writer host (an event persister): the scenario's workload, each batch persisted through
//! `persist`, the replication server that announces what it wrote (direct TCP) or its
//! subscriber (Redis), the idle pokes of its announcer, and, as every Synapse process does,
//! the /sync server (`sync`) and client sends (`send`).
//!
//! Batches run concurrently: each waits its persist delay between getting its ids and
//! committing, so a later batch with higher ids can commit first.

use std::rc::Rc;
use std::time::Duration;

use rand::Rng;
use streamsim_models::connection::Role;
use streamsim_models::limits::STREAMER_IDLE_POKE_INTERVAL_MS;
use tokio::sync::mpsc;

use super::link::{self, LinkHandler};
use super::persist::{draw_persist_delay, persist};
use super::process::Process;
use super::shared::Shared;
use super::HOMESERVER_NAME;
use super::{follow, send, sync};
use crate::net::{now, REPLICATION_PORT};
use crate::scenario::{room_persister, Transport};
use streamsim_models::roomsync::row_payload;

/// The writer host's software: start, serve replication, follow the other writers, run the
/// workload until the scenario's workload phase ends.
pub async fn run(shared: Rc<Shared>, name: String) -> crate::engine::HostResult {
    let process = Process::start(shared.clone(), &name, true).await;
    crate::engine::spawn_local(super::metrics::flush_loop(process.clone()));
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
    crate::engine::spawn_local(sync::serve_sync(process.clone()));
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
                link: Process::server_link(id),
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
    /// The connection's name as the process knows it (`Process::server_link`).
    link: String,
}

impl LinkHandler for ServerSide {
    fn on_command(&self, command: streamsim_models::wire::Command) {
        // Clients send REPLICATE (and USER_SYNC etc.); the server follows no stream from them.
        self.process.count_inbound(&self.peer, &command);
        self.process.on_command(&self.link, &command);
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

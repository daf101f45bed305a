//! The client side of direct-TCP replication: a process connects to the configured writer
//! (a TCP world has one, the process every worker connects to: the scenario refuses a second,
//! see `scenario::Transport::Tcp`), runs the protocol over the connection, and reconnects with
//! Twisted's back-off when it is lost. The connection feeds its own stream follower.

use std::rc::Rc;
use std::time::Duration;

use streamsim_models::connection::Role;
use streamsim_models::limits::{RECONNECT_DELAY_INITIAL_MS, RECONNECT_DELAY_MAX_MS};
use streamsim_models::time::SimInstant;
use streamsim_models::wire::Command;
use tokio::sync::mpsc;

use super::link::{self, LinkHandler};
use super::process::Process;
use super::HOMESERVER_NAME;
use crate::history::Event;
use crate::net::REPLICATION_PORT;

/// Starts one follower task per configured writer other than the process itself.
pub fn follow_writers(process: &Rc<Process>) {
    let writers = process.shared.writers();
    for writer in writers.into_iter().filter(|w| *w != process.name) {
        crate::engine::spawn_local(follow(process.clone(), writer));
    }
}

/// `ReconnectingClientFactory`: the delay starts at 1 s and grows by e up to 5 s; a
/// successful connection resets it.
fn next_delay(delay_ms: u64) -> u64 {
    ((delay_ms as f64 * std::f64::consts::E) as u64).min(RECONNECT_DELAY_MAX_MS)
}

async fn follow(process: Rc<Process>, writer: String) {
    let mut connected_before = false;
    let mut delay_ms = RECONNECT_DELAY_INITIAL_MS;
    loop {
        if let Ok(stream) = crate::net::connect(&writer, REPLICATION_PORT).await {
            if connected_before {
                process.shared.observer.record(Event::Reconnected {
                    host: process.name.clone(),
                    peer: writer.clone(),
                });
            }
            connected_before = true;
            delay_ms = RECONNECT_DELAY_INITIAL_MS;
            // The process never sends commands of its own on this connection beyond what the
            // protocol does (NAME, PING, REPLICATE); the sender lives as long as the link.
            let (_sender, receiver) = mpsc::unbounded_channel::<Command>();
            let handler: Rc<dyn LinkHandler> = Rc::new(ClientSide {
                process: process.clone(),
                writer: writer.clone(),
            });
            let role = Role::Client {
                client_name: process.name.clone(),
                server_name: HOMESERVER_NAME.to_owned(),
            };
            link::drive(stream, role, Vec::new(), receiver, handler).await;
            process.on_link_lost(&writer);
        }
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        delay_ms = next_delay(delay_ms);
    }
}

struct ClientSide {
    process: Rc<Process>,
    writer: String,
}

impl LinkHandler for ClientSide {
    fn on_command(&self, command: Command) {
        self.process.count_inbound(&self.writer, &command);
        self.process.on_command(&self.writer, &command);
    }

    fn on_transmit(&self, line: &[u8]) {
        self.process.shared.observer.count_message();
        self.process.count_outbound(&self.writer, line);
    }

    fn on_pending(&self, pending: usize) {
        self.process.set_pending_commands(&self.writer, pending);
    }

    fn slow_until(&self) -> Option<SimInstant> {
        self.process.shared.slow_until(&self.process.name)
    }

    fn on_closed(&self, reason: &str) {
        self.process
            .shared
            .observer
            .record(crate::history::Event::Disconnected {
                host: self.process.name.clone(),
                peer: self.writer.clone(),
                reason: reason.to_owned(),
            });
    }

    fn outbound_cut(&self) -> bool {
        self.process.shared.is_cut(&self.process.name, &self.writer)
    }
}

//! A reader host (a worker serving clients): follows every writer's stream into its id
//! generator and notifier, and answers /sync requests from sync clients (`sync`) and their
//! sends (`send`).

use std::rc::Rc;

use super::process::Process;
use super::shared::Shared;
use super::{follow, sync};
use crate::scenario::Transport;

/// The reader host's software: start, follow the writers, serve sends and /sync.
pub async fn run(shared: Rc<Shared>, name: String) -> crate::engine::HostResult {
    let process = Process::start(shared.clone(), &name, false).await;
    crate::engine::spawn_local(super::metrics::flush_loop(process.clone()));
    match shared.scenario.transport {
        Transport::Tcp => follow::follow_writers(&process),
        Transport::Redis => super::redis::subscribe(&process),
    }
    crate::engine::spawn_local(super::send::serve_client_sends(process.clone()));
    sync::serve_sync(process).await;
    Ok(())
}

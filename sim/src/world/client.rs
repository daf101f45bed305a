//! A sync-client host: pages through one process's stream with /sync (a reader's, or a
//! writer's that serves clients), each request `since` the `next_batch` of the last answer,
//! as a Matrix client does, records every page it got, and sends events through the same
//! process (`send`).

use std::rc::Rc;
use std::time::Duration;

use streamsim_models::token::MultiWriterToken;
use tokio::sync::Notify;

use super::shared::Shared;
use super::sync::{SyncAnswer, SyncQuery};
use crate::history::Event;
use crate::net::{FramedStream, SYNC_PORT};

/// Pause between a client's /sync requests, in milliseconds.
pub const SYNC_CLIENT_INTERVAL_MS: u64 = 250;

/// How long a client waits for a /sync answer before it reconnects, in milliseconds: more
/// than the 10.5 s a /sync may wait for a token from the future.
pub const SYNC_CLIENT_TIMEOUT_MS: u64 = 15_000;

pub async fn run(shared: Rc<Shared>, name: String, reader: String) -> crate::engine::HostResult {
    let answered = Rc::new(Notify::new());
    crate::engine::spawn_local(super::send::client_sends(
        shared.clone(),
        name.clone(),
        reader.clone(),
        answered.clone(),
    ));
    let mut since: Option<MultiWriterToken> = None;
    loop {
        pause(&answered).await;
        let Ok(stream) = crate::net::connect(&reader, SYNC_PORT).await else {
            continue;
        };
        let mut framed = FramedStream::new(stream, &shared.cuts);
        loop {
            if let Some(ahead_by) = shared.take_future_token(&name) {
                let token = since.clone().unwrap_or_default().ahead_by(ahead_by);
                shared.observer.record(Event::FutureToken {
                    client: name.clone(),
                    reader: reader.clone(),
                    token: token.clone(),
                });
                since = Some(token);
            }
            let query = SyncQuery {
                client: name.clone(),
                since: since.clone(),
            };
            let requested_at = crate::net::now();
            let answer: SyncAnswer = match framed.call(&query, SYNC_CLIENT_TIMEOUT_MS).await {
                Ok(answer) => answer,
                Err(_) => break,
            };
            shared.observer.record(Event::SyncPage {
                client: name.clone(),
                reader: reader.clone(),
                requested_at,
                since: since.clone(),
                next_batch: answer.next_batch.clone(),
                events: answer.events,
                limited: answer.limited,
                timed_out: answer.timed_out,
            });
            shared.observer.record(Event::TokenHandedOut {
                reader: reader.clone(),
                to: name.clone(),
                token: answer.next_batch.clone(),
            });
            since = Some(answer.next_batch);
            if !answer.limited {
                // A limited page means more is waiting: ask again at once.
                pause(&answered).await;
            }
        }
    }
}

/// The pause between /sync requests, cut short when one of the client's sends is answered:
/// a client's long-poll returns as soon as its own event is there.
async fn pause(answered: &Notify) {
    let interval = Duration::from_millis(SYNC_CLIENT_INTERVAL_MS);
    let _ = tokio::time::timeout(interval, answered.notified()).await;
}

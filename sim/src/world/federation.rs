//! A reader host's federation sender (`federation_sender_instances`): the loop of
//! `streamsim_models::fedsender` driven against the database, poked by the process's notifier
//! with the room token it releases events at (`Notifier._on_updated_room_token`). One loop
//! task runs while the model says it is processing, as Synapse runs
//! `process_event_queue_for_federation` as one background process.

use std::rc::Rc;

use streamsim_models::bugs::Bug;
use streamsim_models::fedsender::FederationAction;

use super::process::{retry_db, Process};
use super::process_metrics::names;
use crate::history::Event;

impl Process {
    /// `federation_sender.notify_new_events(max_token)` with `max_token.stream` = `token`;
    /// starts the loop if it is not running. A process without a federation sender ignores it.
    pub fn poke_federation(self: &Rc<Self>, token: i64) {
        let first = {
            let state = &mut *self.state.borrow_mut();
            match &mut state.federation {
                Some(sender) => sender.notify_new_events(token),
                None => return,
            }
        };
        if let Some(action) = first {
            crate::engine::spawn_local(run_loop(self.clone(), action));
        }
    }

    /// Rows of `token`, or a POSITION whose new token is `token`, arrived by replication.
    /// Bug B22 (PR #8536, Synapse 1.22): the federation sender worker's `on_rdata` (which
    /// `on_position` calls with no rows) passed them to
    /// `FederationSenderHandler.process_replication_rows`, which poked the sender with that
    /// token (`notify_new_events(token)`): one persister's position, as if every event below
    /// it were persisted. The fix removed that call: only the notifier pokes it, with the
    /// minimum.
    pub fn federation_replication_arrived(self: &Rc<Self>, token: i64) {
        if self.shared.bugs.on(Bug::FederationPokedWithRdataToken) {
            self.poke_federation(token);
        }
    }

    fn federation_step(
        &self,
        step: impl FnOnce(&mut streamsim_models::fedsender::FederationSender) -> FederationAction,
    ) -> FederationAction {
        let state = &mut *self.state.borrow_mut();
        step(
            state
                .federation
                .as_mut()
                .expect("a federation loop runs on its sender"),
        )
    }
}

/// `_process_event_queue_loop`, from `first` until the model idles. A database error is
/// retried (`retry_db`), as the model's other readers of it do: Synapse's loop would stop on
/// it and wait for the next poke, which a quiet stream may never send.
async fn run_loop(process: Rc<Process>, first: FederationAction) {
    let background = process.bg_start(names::FEDERATION_EVENT_QUEUE);
    let mut action = first;
    loop {
        let started = crate::net::now();
        action = match action {
            FederationAction::ReadOutPos => {
                let position = retry_db(|| process.db.federation_out_pos()).await;
                process.bg_db_txn(background, started);
                process.federation_step(|sender| sender.handle_out_pos(position))
            }
            FederationAction::ReadEvents { from, upto, limit } => {
                let events = retry_db(|| process.db.new_event_ids(from, upto, limit)).await;
                process.bg_db_txn(background, started);
                process.federation_step(|sender| sender.handle_events(events))
            }
            FederationAction::SendAndStore {
                from,
                events,
                position,
            } => {
                process.shared.observer.record(Event::FederationSent {
                    host: process.name.clone(),
                    from,
                    upto: position,
                    events,
                });
                retry_db(|| process.db.update_federation_out_pos(position)).await;
                process.bg_db_txn(background, started);
                process.federation_step(|sender| sender.handle_stored())
            }
            FederationAction::Idle => break,
        };
    }
    process.bg_finish(background);
}

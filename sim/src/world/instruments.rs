//! What a simulated Synapse process measures about itself: its replication commands, its
//! background processes (how each kind starts, runs and ends in Synapse 1.163.2, or with the
//! historical linearizer), its stream position, and each event's lag from commit to delivery.
//!
//! The metrics live in the process's memory (`process_metrics`) and die with it; these are
//! the process's methods that measure.

use std::collections::VecDeque;
use std::rc::Rc;

use streamsim_models::db::STREAM_NAME;
use streamsim_models::limits::REPLICATION_QUEUE_IDLE_MS;
use streamsim_models::metrics::bgproc::{ProcessId, Usage};
use streamsim_models::metrics::series::{
    REPLICATION_COMMAND_QUEUE, REPLICATION_INBOUND_COMMANDS, REPLICATION_INBOUND_RDATA,
    REPLICATION_LAG, REPLICATION_OUTBOUND_COMMANDS, REPLICATION_PENDING_COMMANDS,
    STREAM_CURRENT_POSITION,
};
use streamsim_models::notifier::RoomEvent;
use streamsim_models::time::SimInstant;
use streamsim_models::wire::Command;

use super::process::Process;
use super::process_metrics::names;
use super::shared::Shared;
use super::HOMESERVER_NAME;
use crate::net::{now, sleep_until};
use crate::scenario::ReplicationQueue;

/// The command name of a wire line (`NAME args`).
fn line_command(line: &[u8]) -> &str {
    let end = line
        .iter()
        .position(|byte| *byte == b' ' || *byte == b'\n')
        .unwrap_or(line.len());
    std::str::from_utf8(&line[..end]).unwrap_or("?")
}

impl Shared {
    /// Remembers when a row committed, for the lag its readers measure. Synapse's rows carry
    /// the event's own timestamps; the model's rows do not, so `Shared` keeps them beside the
    /// rows, as the database would, and readers read them back for the lag metric only.
    pub fn note_committed(&self, rows: &[(i64, String)]) {
        let at = now();
        let mut times = self.commit_times.borrow_mut();
        for (stream_id, _) in rows {
            times.insert(*stream_id, at);
        }
    }
}

impl Process {
    /// `run_as_background_process(name)` begins.
    pub fn bg_start(&self, name: &str) -> ProcessId {
        let span = self
            .shared
            .observer
            .open_span(&self.name, self.incarnation, name);
        let metrics = &mut *self.metrics.borrow_mut();
        let id = metrics.processes.start(name, now(), &mut metrics.node);
        metrics.spans.insert(id, span);
        id
    }

    /// The background process did work.
    pub fn bg_charge(&self, id: ProcessId, usage: Usage) {
        self.metrics.borrow_mut().processes.charge(id, usage);
    }

    /// The name of running background process `id` (`None` once it ended: its usage is no
    /// longer counted).
    pub fn bg_name(&self, id: ProcessId) -> Option<String> {
        self.metrics
            .borrow()
            .processes
            .name_of(id)
            .map(str::to_owned)
    }

    /// The background process ended.
    pub fn bg_finish(&self, id: ProcessId) {
        let span = {
            let metrics = &mut *self.metrics.borrow_mut();
            metrics.processes.finish(id, &mut metrics.node);
            metrics.spans.remove(&id)
        };
        if let Some(span) = span {
            self.shared.observer.close_span(span);
        }
    }

    /// A database transaction of `started`..now, done by background process `id`.
    pub fn bg_db_txn(&self, id: ProcessId, started: SimInstant) {
        let us = i64::try_from(now().ms_since(started)).unwrap_or(i64::MAX / 1_000) * 1_000;
        self.bg_charge(
            id,
            Usage {
                db_txn_count: 1,
                db_txn_us: us,
                ..Usage::default()
            },
        );
    }

    /// A command arrived from `peer` (a process name, or `redis`).
    pub fn count_inbound(&self, peer: &str, command: &Command) {
        let name = command.name();
        let metrics = &mut *self.metrics.borrow_mut();
        metrics.node.inc(
            &REPLICATION_INBOUND_COMMANDS,
            &[name.as_str(), peer, HOMESERVER_NAME],
            1,
        );
        if let Command::Rdata {
            stream_name,
            instance_name,
            ..
        } = command
        {
            if instance_name.eq_str(&self.name) {
                // Counted after the own-echo check, as `on_RDATA` does.
                return;
            }
            let stream = stream_name.to_utf8().unwrap_or_default();
            metrics
                .node
                .inc(&REPLICATION_INBOUND_RDATA, &[&stream, HOMESERVER_NAME], 1);
        }
    }

    /// A command line went out to `peer`.
    pub fn count_outbound(&self, peer: &str, line: &[u8]) {
        self.metrics.borrow_mut().node.inc(
            &REPLICATION_OUTBOUND_COMMANDS,
            &[line_command(line), peer, HOMESERVER_NAME],
            1,
        );
    }

    /// A connection to `peer` holds `pending` commands while its transport is paused.
    pub fn set_pending_commands(&self, peer: &str, pending: usize) {
        self.metrics.borrow_mut().node.set(
            &REPLICATION_PENDING_COMMANDS,
            &[peer, HOMESERVER_NAME],
            i64::try_from(pending).unwrap_or(i64::MAX),
        );
    }

    /// An RDATA or POSITION of `link`'s stream is about to be handled: the background process
    /// that handles it, as the scenario's replication queue starts them.
    pub fn replication_item_arrived(self: &Rc<Self>, link: &str, command: &Command) -> ProcessId {
        match self.shared.scenario.metrics.replication_queue {
            ReplicationQueue::PerStream => {
                let existing = self.metrics.borrow().consumers.get(link).copied();
                let id = match existing {
                    Some((id, _)) => id,
                    None => {
                        let id = self.bg_start(names::PROCESS_REPLICATION_DATA);
                        crate::engine::spawn_local(retire_consumer(
                            self.clone(),
                            link.to_owned(),
                            id,
                        ));
                        id
                    }
                };
                self.metrics
                    .borrow_mut()
                    .consumers
                    .insert(link.to_owned(), (id, now()));
                id
            }
            ReplicationQueue::Linearizer => {
                // `"replication-" + cmd.get_logcontext_id()`, each waiting its turn.
                let name = match command {
                    Command::Rdata { .. } => format!("replication-RDATA-{STREAM_NAME}"),
                    other => format!("replication-{}", other.name().as_str()),
                };
                let id = self.bg_start(&name);
                self.metrics
                    .borrow_mut()
                    .linearized
                    .entry(link.to_owned())
                    .or_default()
                    .push_back(id);
                id
            }
        }
    }

    /// The process doing `link`'s current work: the consumer, or the linearizer's head.
    pub fn replication_worker(&self, link: &str) -> Option<ProcessId> {
        let metrics = self.metrics.borrow();
        match self.shared.scenario.metrics.replication_queue {
            ReplicationQueue::PerStream => metrics.consumers.get(link).map(|(id, _)| *id),
            ReplicationQueue::Linearizer => metrics
                .linearized
                .get(link)
                .and_then(|queue| queue.front().copied()),
        }
    }

    /// After `link`'s follower moved on: with the linearizer, every command it is done with
    /// ends its process (they finish in order: the linearizer admits one at a time).
    pub fn replication_settled(&self, link: &str) {
        if self.shared.scenario.metrics.replication_queue != ReplicationQueue::Linearizer {
            return;
        }
        let backlog = {
            let state = self.state.borrow();
            state.followers.get(link).map_or(0, |f| f.backlog())
                + state.inbound_backlog.get(link).map_or(0, VecDeque::len)
        };
        loop {
            let done = {
                let mut metrics = self.metrics.borrow_mut();
                let queue = metrics.linearized.entry(link.to_owned()).or_default();
                if queue.len() > backlog {
                    queue.pop_front()
                } else {
                    None
                }
            };
            match done {
                Some(id) => self.bg_finish(id),
                None => break,
            }
        }
    }

    /// Whether the writer's `replication_notifier` loop is running.
    pub fn notifier_running(&self) -> bool {
        self.metrics.borrow().notifier.is_some()
    }

    /// The streamer was poked and has connections: `replication_notifier` runs unless it
    /// already is. Returns the running process.
    pub fn notifier_poked(&self) -> ProcessId {
        if let Some((id, _)) = self.metrics.borrow().notifier {
            return id;
        }
        let id = self.bg_start(names::REPLICATION_NOTIFIER);
        self.metrics.borrow_mut().notifier = Some((id, 0));
        id
    }

    /// The notifier's own-update reads in flight went up or down by one; the notifier loop
    /// ends when none is left.
    pub fn notifier_fetches(&self, delta: isize) {
        let finished = {
            let mut metrics = self.metrics.borrow_mut();
            let Some((id, fetches)) = metrics.notifier.as_mut() else {
                return;
            };
            *fetches = fetches.saturating_add_signed(delta);
            (*fetches == 0).then_some(*id)
        };
        if let Some(id) = finished {
            self.metrics.borrow_mut().notifier = None;
            self.bg_finish(id);
        }
    }

    /// Events reached this reader's notifier: each one's lag since its commit.
    pub fn observe_deliveries_of(&self, events: &[RoomEvent]) {
        let at = now();
        let times = self.shared.commit_times.borrow();
        let metrics = &mut *self.metrics.borrow_mut();
        for event in events {
            if let Some(committed) = times.get(event.stream_id) {
                let us = i64::try_from(at.ms_since(committed)).unwrap_or(i64::MAX / 1_000) * 1_000;
                metrics
                    .node
                    .observe(&REPLICATION_LAG, &[&event.instance, HOMESERVER_NAME], us);
            }
        }
    }

    /// The running `replication_notifier`, if any.
    pub fn notifier_process(&self) -> Option<ProcessId> {
        self.metrics.borrow().notifier.map(|(id, _)| id)
    }

    /// Gauges sampled before each flush, as Synapse's `LaterGauge`s are computed at a
    /// scrape rather than on every change.
    pub fn sample_gauges(&self) {
        let (position, queued) = {
            let state = self.state.borrow();
            let queued = state.followers.values().map(|f| f.backlog()).sum::<usize>()
                + state
                    .inbound_backlog
                    .values()
                    .map(VecDeque::len)
                    .sum::<usize>();
            (state.generator.persisted_upto(), queued)
        };
        let node = &mut self.metrics.borrow_mut().node;
        node.set(
            &STREAM_CURRENT_POSITION,
            &[STREAM_NAME, HOMESERVER_NAME],
            position,
        );
        node.set(
            &REPLICATION_COMMAND_QUEUE,
            &[STREAM_NAME, HOMESERVER_NAME],
            i64::try_from(queued).unwrap_or(i64::MAX),
        );
    }
}

/// `BackgroundQueue._process_queue`: the consumer drains its queue, then waits up to
/// [`REPLICATION_QUEUE_IDLE_MS`] for more before it ends. A catch-up in flight keeps it busy.
async fn retire_consumer(process: Rc<Process>, link: String, id: ProcessId) {
    loop {
        let Some((current, last_item)) = process.metrics.borrow().consumers.get(&link).copied()
        else {
            return;
        };
        if current != id {
            return;
        }
        sleep_until(last_item + REPLICATION_QUEUE_IDLE_MS).await;
        let busy = {
            let state = process.state.borrow();
            state.followers.get(&link).is_some_and(|f| f.backlog() > 0)
                || state
                    .inbound_backlog
                    .get(&link)
                    .is_some_and(|q| !q.is_empty())
        };
        let idle_since = process
            .metrics
            .borrow()
            .consumers
            .get(&link)
            .map(|(_, at)| *at);
        if !busy && idle_since.is_some_and(|at| now().ms_since(at) >= REPLICATION_QUEUE_IDLE_MS) {
            process.metrics.borrow_mut().consumers.remove(&link);
            process.bg_finish(id);
            return;
        }
        if busy {
            // Still catching up: look again a second after now.
            process
                .metrics
                .borrow_mut()
                .consumers
                .insert(link.clone(), (id, now()));
        }
    }
}

//! Client sends and read-your-writes: a client sends an event through the process it syncs
//! with; that process forwards it to the room's persister (Synapse's `send_events`
//! replication endpoint), then waits until replication has brought the persister's position
//! to the event (`wait_for_stream_position`) before it answers, so the client's next /sync
//! there holds the event.
//!
//! The persister batches what arrives while a batch is being persisted, as Synapse's
//! per-room persistence queue does, and answers every send of a batch with the batch's
//! highest id: two sends of one batch wait on the same position.

use std::rc::Rc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use streamsim_models::limits::WAIT_FOR_STREAM_POSITION_TIMEOUT_MS;
use streamsim_models::notifier::PositionWakeup;
use tokio::sync::oneshot;

use super::persist;
use super::process::{Process, QueuedSend};
use crate::net::{connect, now, FramedStream, CLIENT_SEND_PORT, PERSIST_PORT};
use crate::scenario::room_persister;
use streamsim_models::roomsync::row_payload;

/// How long a process waits for the persister to answer a forwarded send, in milliseconds.
pub const FORWARD_TIMEOUT_MS: u64 = 30_000;

/// A client's send.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SendRequest {
    pub event_id: String,
    /// The room the event is sent to.
    pub room: String,
}

/// The answer to a client's send.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SendAnswer {
    /// The writer and position the event was persisted at, when the process learned it.
    pub persisted_at: Option<(String, i64)>,
    /// `local`, `reached`, `timed_out`, or `error: ...`.
    pub outcome: String,
}

/// A send forwarded to the room's persister: the row payload (event id and room).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct ForwardRequest {
    payload: String,
}

/// The persister's answer: the batch's highest id, or why it was not persisted.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct ForwardAnswer {
    result: Result<i64, String>,
}

/// Serves client sends on every process.
pub async fn serve_client_sends(process: Rc<Process>) {
    let Err(error) = crate::net::accept_each(CLIENT_SEND_PORT, |stream, _| {
        let process = process.clone();
        async move {
            // One send per connection: the client connects for each.
            let mut framed = FramedStream::new(stream, &process.shared.cuts);
            if let Ok(Some(request)) = framed.recv::<SendRequest>().await {
                let answer = handle_send(&process, request).await;
                let _ = framed.send(&answer).await;
            }
        }
    })
    .await;
    panic!("the client send port is taken: {error}");
}

/// Serves forwarded sends on a writer, and persists them in batches.
pub async fn serve_forwarded(process: Rc<Process>) {
    crate::engine::spawn_local(persist_queued(process.clone()));
    let Err(error) = crate::net::accept_each(PERSIST_PORT, |stream, _| {
        let process = process.clone();
        async move {
            let mut framed = FramedStream::new(stream, &process.shared.cuts);
            if let Ok(Some(request)) = framed.recv::<ForwardRequest>().await {
                let result = enqueue(&process, request.payload).await;
                let _ = framed.send(&ForwardAnswer { result }).await;
            }
        }
    })
    .await;
    panic!("the persist port is taken: {error}");
}

/// Queues one event (its row payload) for the next batch and waits for the batch's outcome.
async fn enqueue(process: &Rc<Process>, payload: String) -> Result<i64, String> {
    let (answer, outcome) = oneshot::channel();
    process
        .state
        .borrow_mut()
        .send_queue
        .push(QueuedSend { payload, answer });
    process.send_queued.notify_one();
    outcome
        .await
        .unwrap_or_else(|_| Err("persister went away".into()))
}

/// The persistence queue: one batch at a time, holding everything queued meanwhile.
async fn persist_queued(process: Rc<Process>) {
    let mut rng = process
        .shared
        .rng_for(&format!("{}/sends", process.name), process.incarnation);
    loop {
        process.send_queued.notified().await;
        let queued = std::mem::take(&mut process.state.borrow_mut().send_queue);
        if queued.is_empty() {
            continue;
        }
        let delay = persist::draw_persist_delay(&process, &mut rng);
        let events = queued.iter().map(|q| q.payload.clone()).collect();
        let result = persist::persist(process.clone(), events, delay)
            .await
            .and_then(|ids| ids.into_iter().max().ok_or_else(|| "empty batch".into()));
        for send in queued {
            let _ = send.answer.send(result.clone());
        }
    }
}

/// One client send through this process.
async fn handle_send(process: &Rc<Process>, request: SendRequest) -> SendAnswer {
    let error = |message: String| SendAnswer {
        persisted_at: None,
        outcome: format!("error: {message}"),
    };
    // The event goes to its room's persister under this process's writers config
    // (`send_events` to the room's `stream_writers.events` shard).
    let Some(persister) = room_persister(&request.room, &process.writers).map(str::to_owned) else {
        return error("no writer configured".into());
    };
    let payload = row_payload(&request.event_id, &request.room);
    if persister == process.name {
        return match enqueue(process, payload).await {
            Ok(stream_id) => SendAnswer {
                persisted_at: Some((persister, stream_id)),
                outcome: "local".into(),
            },
            Err(message) => error(format!("{persister} could not persist: {message}")),
        };
    }
    let forwarded = async {
        let stream = connect(&persister, PERSIST_PORT)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    format!("send to {persister} refused: {e}")
                }
                _ => format!("send to {persister} failed: {e}"),
            })?;
        let mut framed = FramedStream::new(stream, &process.shared.cuts);
        let answer: ForwardAnswer = framed
            .call(&ForwardRequest { payload }, FORWARD_TIMEOUT_MS)
            .await
            .map_err(|e| format!("send to {persister} failed: {e}"))?;
        answer
            .result
            .map_err(|e| format!("{persister} could not persist: {e}"))
    };
    let stream_id = match forwarded.await {
        Ok(stream_id) => stream_id,
        Err(message) => return error(message),
    };
    let persisted_at = Some((persister.clone(), stream_id));
    let outcome = match wait_for_stream_position(process, &persister, stream_id).await {
        Ok(PositionWakeup::Reached { .. }) => "reached".into(),
        Ok(PositionWakeup::TimedOut { .. }) => "timed_out".into(),
        Err(message) => format!("error: waiting for {persister}@{stream_id}: {message}"),
    };
    SendAnswer {
        persisted_at,
        outcome,
    }
}

/// `wait_for_stream_position(writer, "events", position)` on this process.
async fn wait_for_stream_position(
    process: &Rc<Process>,
    writer: &str,
    position: i64,
) -> Result<PositionWakeup, String> {
    let (wakeup, woken) = oneshot::channel();
    {
        let state = &mut *process.state.borrow_mut();
        let waiter = state.next_waiter;
        state.next_waiter += 1;
        let generator = &state.generator;
        let answer = state
            .waiters
            .wait_for_stream_position(
                waiter,
                writer,
                position,
                |instance| generator.current_token_for_writer(instance),
                now(),
            )
            .map_err(|e| e.to_string())?;
        if let Some(at_once) = answer {
            return Ok(at_once);
        }
        state.waiter_wakeups.insert(waiter, wakeup);
    }
    let timeout = Duration::from_millis(WAIT_FOR_STREAM_POSITION_TIMEOUT_MS);
    let mut woken = woken;
    match tokio::time::timeout(timeout, &mut woken).await {
        Ok(result) => result.map_err(|_| "waiter dropped".to_owned()),
        Err(_) => {
            process.expire_waiters();
            woken.await.map_err(|_| "waiter dropped".to_owned())
        }
    }
}

/// A client's sends: `sends_per_second`, each on its own connection, concurrently. Every
/// answer is recorded, and wakes the client's /sync loop so its next page comes at once.
pub async fn client_sends(
    shared: Rc<super::shared::Shared>,
    client: String,
    host: String,
    answered: Rc<tokio::sync::Notify>,
) {
    let rate = shared.scenario.workload.sends_per_second;
    if rate == 0 {
        return;
    }
    let mut rng = shared.rng_for(&format!("{client}/sends"), 1);
    // Rooms come from a stream of their own, so the sends' timing draws stay as they were.
    let mut room_rng = shared.rng_for(&format!("{client}/rooms"), 1);
    let rooms = shared.scenario.rooms();
    let interval_ms = (1_000 / u64::from(rate)).max(1);
    let mut sequence = 0u64;
    loop {
        let jittered =
            rand::Rng::random_range(&mut rng, interval_ms / 2..=interval_ms + interval_ms / 2);
        tokio::time::sleep(Duration::from_millis(jittered.max(1))).await;
        if now().as_ms() >= shared.scenario.duration_ms {
            return;
        }
        sequence += 1;
        let event_id = format!("${client}.send.{sequence}");
        let room = rooms[rand::Rng::random_range(&mut room_rng, 0..rooms.len())].clone();
        let (shared, client, host, answered) = (
            shared.clone(),
            client.clone(),
            host.clone(),
            answered.clone(),
        );
        crate::engine::spawn_local(async move {
            let Ok(stream) = connect(&host, CLIENT_SEND_PORT).await else {
                return;
            };
            let mut framed = FramedStream::new(stream, &shared.cuts);
            let request = SendRequest {
                event_id: event_id.clone(),
                room,
            };
            let Ok(answer) = framed
                .call::<_, SendAnswer>(&request, 2 * FORWARD_TIMEOUT_MS)
                .await
            else {
                return;
            };
            shared.observer.record(crate::history::Event::SendAnswered {
                client,
                host,
                event_id,
                persisted_at: answer.persisted_at,
                outcome: answer.outcome,
            });
            answered.notify_one();
        });
    }
}

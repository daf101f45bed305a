//! The Redis transport Synapse 1.163.2 actually runs between workers: a `redis` host that
//! broadcasts every published line to every subscriber (the sender included), and each
//! process's subscriber connection (its publisher, started on each subscription, is `bus`).
//!
//! Delivery is at most once: what is published while a subscriber is cut off is lost, and the
//! protocol has no handshake, no PING of its own and no pending limit. Losses are repaired the
//! way Synapse repairs them: on (re)subscribing a process publishes `REPLICATE` and its
//! positions (`_send_subscribe`), and every writer answers `REPLICATE` with its position, whose
//! `prev` lets readers fetch what they missed. A dead subscription is noticed only by the
//! client's PING every 30 s going unanswered for 30 s (txredisapi's `replyTimeout`).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use crate::engine::tcp::{TcpListener, TcpStream};
use streamsim_models::limits::{
    RECONNECT_DELAY_INITIAL_MS, RECONNECT_DELAY_MAX_MS, REDIS_PING_INTERVAL_MS,
    REDIS_REPLY_TIMEOUT_MS,
};
use streamsim_models::wire::pytext::PyStr;
use streamsim_models::wire::Command;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use super::bus::BusPublisher;
use super::process::{command_line, Process};
use crate::history::Event;
use crate::net::{now, sleep_until, REDIS_PORT};

/// Bytes queued for one subscriber before the broker drops it: Redis's default
/// `client-output-buffer-limit pubsub` hard limit of 32 MiB.
pub const SUBSCRIBER_BUFFER_BYTES_MAX: usize = 32 * 1024 * 1024;

/// The `redis` host: a pub/sub broker with one channel.
pub async fn serve(cuts: crate::net::OneWayCuts) -> crate::engine::HostResult {
    let listener = TcpListener::bind(("0.0.0.0", REDIS_PORT)).await?;
    let subscribers: Rc<RefCell<BTreeMap<u64, Subscriber>>> = Rc::default();
    let mut next_id = 0u64;
    loop {
        let (stream, _) = listener.accept().await?;
        let id = next_id;
        next_id += 1;
        crate::engine::spawn_local(serve_connection(
            stream,
            id,
            subscribers.clone(),
            cuts.clone(),
        ));
    }
}

struct Subscriber {
    sender: mpsc::UnboundedSender<Vec<u8>>,
    queued: Rc<Cell<usize>>,
}

async fn serve_connection(
    stream: TcpStream,
    id: u64,
    subscribers: Rc<RefCell<BTreeMap<u64, Subscriber>>>,
    cuts: crate::net::OneWayCuts,
) {
    let (local, peer) = crate::net::ends(&stream);
    let (read, mut write) = stream.into_split();
    let (sender, mut receiver) = mpsc::unbounded_channel::<Vec<u8>>();
    let queued = Rc::new(Cell::new(0usize));
    {
        let queued = queued.clone();
        crate::engine::spawn_local(async move {
            while let Some(bytes) = receiver.recv().await {
                // A one-way cut from redis to the client: the bytes wait in redis's buffer.
                cuts.wait_open(&local, &peer).await;
                if write.write_all(&bytes).await.is_err() {
                    break;
                }
                queued.set(queued.get().saturating_sub(bytes.len()));
            }
        });
    }
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line == "SUBSCRIBE" {
            subscribers.borrow_mut().insert(
                id,
                Subscriber {
                    sender: sender.clone(),
                    queued: queued.clone(),
                },
            );
            let _ = sender.send(b"+SUBSCRIBED\n".to_vec());
        } else if line == "PING" {
            let _ = sender.send(b"+PONG\n".to_vec());
        } else if let Some(message) = line.strip_prefix("PUBLISH ") {
            let mut bytes = message.as_bytes().to_vec();
            bytes.push(b'\n');
            let mut subscribers = subscribers.borrow_mut();
            subscribers.retain(|_, subscriber| {
                subscriber.queued.set(subscriber.queued.get() + bytes.len());
                subscriber.queued.get() <= SUBSCRIBER_BUFFER_BYTES_MAX
                    && subscriber.sender.send(bytes.clone()).is_ok()
            });
        }
    }
    subscribers.borrow_mut().remove(&id);
}

/// Starts the process's subscriber: subscribe, then `REPLICATE` and positions, then dispatch
/// every message; reconnect with back-off when the subscription is lost.
pub fn subscribe(process: &Rc<Process>) {
    crate::engine::spawn_local(subscriber(process.clone()));
}

async fn subscriber(process: Rc<Process>) {
    let mut subscribed_before = false;
    let mut delay_ms = RECONNECT_DELAY_INITIAL_MS;
    loop {
        if let Ok(stream) = crate::net::connect("redis", REDIS_PORT).await {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            let subscribed = async {
                process.shared.cuts.wait_open(&process.name, "redis").await;
                write.write_all(b"SUBSCRIBE\n").await.ok()?;
                let reply = lines.next_line().await.ok()??;
                (reply == "+SUBSCRIBED").then_some(())
            };
            let subscribed =
                tokio::time::timeout(Duration::from_millis(REDIS_REPLY_TIMEOUT_MS), subscribed)
                    .await;
            if let Ok(Some(())) = subscribed {
                if subscribed_before {
                    process.shared.observer.record(Event::Reconnected {
                        host: process.name.clone(),
                        peer: "redis".to_owned(),
                    });
                }
                subscribed_before = true;
                delay_ms = RECONNECT_DELAY_INITIAL_MS;
                on_subscribed(&process);
                let reason = listen(&process, &mut lines, write).await;
                process.shared.observer.record(Event::Disconnected {
                    host: process.name.clone(),
                    peer: "redis".to_owned(),
                    reason: format!("subscription {reason}"),
                });
                process.state.borrow_mut().bus = None;
                process.on_link_lost("bus");
            }
        }
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        delay_ms = ((delay_ms as f64 * std::f64::consts::E) as u64).min(RECONNECT_DELAY_MAX_MS);
    }
}

/// `_send_subscribe` after SUBSCRIBE succeeded: `new_connection`, publish `REPLICATE`, then
/// `send_positions_to_connection`.
fn on_subscribed(process: &Rc<Process>) {
    let publisher = BusPublisher::start(process.shared.clone(), &process.name);
    if let Some(line) = command_line(&Command::Replicate) {
        process.shared.observer.record(Event::Announced {
            host: process.name.clone(),
            line: line.clone(),
        });
        publisher.publish(&line);
    }
    let reply = {
        let state = &mut *process.state.borrow_mut();
        state.bus = Some(publisher);
        state
            .writer
            .as_mut()
            .and_then(|writer| writer.announcer.handle_replicate(&state.generator))
    };
    if let Some(command) = reply {
        process.broadcast(command);
    }
    process.poke();
}

/// Dispatches the subscription's messages and pings Redis, until the subscription is lost;
/// returns why (`ping timeout`: no PONG within the reply time-out, as Synapse's
/// `RedisSubscriber` gives up on an unanswering server; `closed by peer`; a read or write
/// error).
async fn listen(
    process: &Rc<Process>,
    lines: &mut tokio::io::Lines<BufReader<crate::engine::tcp::OwnedReadHalf>>,
    mut write: crate::engine::tcp::OwnedWriteHalf,
) -> String {
    // PINGs go out through their own task, so that a one-way cut toward redis holds them in
    // the send buffer while what redis sends is still read.
    let (pings, mut to_send) = mpsc::unbounded_channel::<()>();
    let (write_failed, mut write_error) = tokio::sync::oneshot::channel::<String>();
    let writer = {
        let (cuts, name) = (process.shared.cuts.clone(), process.name.clone());
        crate::engine::spawn_local(async move {
            while to_send.recv().await.is_some() {
                cuts.wait_open(&name, "redis").await;
                if let Err(error) = write.write_all(b"PING\n").await {
                    let _ = write_failed.send(error.to_string());
                    return;
                }
            }
        })
    };
    let reason = listen_until_lost(process, lines, pings, &mut write_error).await;
    writer.abort();
    reason
}

async fn listen_until_lost(
    process: &Rc<Process>,
    lines: &mut tokio::io::Lines<BufReader<crate::engine::tcp::OwnedReadHalf>>,
    pings: mpsc::UnboundedSender<()>,
    write_error: &mut tokio::sync::oneshot::Receiver<String>,
) -> String {
    let mut next_ping = now() + REDIS_PING_INTERVAL_MS;
    let mut awaiting_pong_since = None;
    loop {
        let deadline = match awaiting_pong_since {
            Some(sent) => next_ping.min(sent + REDIS_REPLY_TIMEOUT_MS),
            None => next_ping,
        };
        let slow = process
            .shared
            .slow_until(&process.name)
            .filter(|until| *until > now());
        tokio::select! {
            line = lines.next_line(), if slow.is_none() => {
                let line = match line {
                    Ok(Some(line)) => line,
                    Ok(None) => return "closed by peer".to_owned(),
                    Err(error) => return format!("read error: {error}"),
                };
                if line == "+PONG" {
                    awaiting_pong_since = None;
                } else if !line.trim().is_empty() {
                    if let Ok(command) = Command::from_line(&PyStr::from(line.as_str())) {
                        process.shared.observer.count_message();
                        process.count_inbound("redis", &command);
                        process.on_command("bus", &command);
                    }
                }
            }
            () = sleep_until(slow.unwrap_or(now())), if slow.is_some() => {}
            error = &mut *write_error => {
                return format!("write error: {}", error.unwrap_or_default());
            }
            () = sleep_until(deadline) => {
                let now = now();
                if awaiting_pong_since.is_some_and(|sent| now.ms_since(sent) >= REDIS_REPLY_TIMEOUT_MS) {
                    return "ping timeout".to_owned();
                }
                if now >= next_ping {
                    next_ping = now + REDIS_PING_INTERVAL_MS;
                    let _ = pings.send(());
                    awaiting_pong_since.get_or_insert(now);
                }
            }
        }
    }
}

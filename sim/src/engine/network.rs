//! The links between hosts: segments in flight with their latency, partitions that hold them,
//! loss that holds a link until TCP retransmits, and delivery into the sockets of [`super::tcp`].
//!
//! TCP as Synapse relies on it: every connection direction is first-in-first-out (a segment's
//! due time is never before the one sent before it on the same direction), nothing is lost
//! while a connection lives (a partition or a lost segment holds the link; what is held is
//! delivered, in order, when it opens), a segment for a crashed host is silence, and a segment
//! for a restarted host (a newer incarnation on the same address) is answered by a reset.
//! The pump is one task that sleeps until the next due segment; nothing runs in between.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;
use std::task::Waker;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp};

use super::{HostId, Incarnation, State};

/// How long a link that lost a segment delivers nothing, in milliseconds: Linux's minimum
/// retransmission time-out (`TCP_RTO_MIN`, 200 ms), after which TCP sends the segment again.
pub const RETRANSMIT_MS: u64 = 200;

/// Why a directed link is held; a link is open when it has no reason left.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum HoldReason {
    Partition,
    OneWay,
    /// A segment was lost and TCP has not yet retransmitted it.
    Loss,
}

#[derive(Debug)]
pub(crate) enum Payload {
    Syn,
    SynAck,
    Data(Vec<u8>),
    Fin,
    Rst,
}

#[derive(Debug)]
struct Segment {
    conn: u64,
    /// The side it is for (0 the connecting end, 1 the accepting end).
    to: usize,
    payload: Payload,
}

/// One end of a connection.
#[derive(Debug)]
pub(crate) struct End {
    pub(crate) host: HostId,
    pub(crate) port: u16,
    pub(crate) rx: VecDeque<u8>,
    /// The peer's FIN has arrived: reads end once `rx` is drained.
    pub(crate) eof: bool,
    /// A reset arrived (or the connect was refused).
    pub(crate) reset: bool,
    /// The connect completed (the connecting end only).
    pub(crate) connected: bool,
    pub(crate) waker: Option<Waker>,
    /// This end sent its FIN.
    pub(crate) write_shut: bool,
    /// Halves the application still holds (2 for a stream, 0 once both are dropped).
    pub(crate) halves: u8,
    /// The due time of the last segment sent from this end (FIFO per direction).
    last_due: u64,
}

impl End {
    pub(crate) fn new(host: HostId, port: u16) -> End {
        End {
            host,
            port,
            rx: VecDeque::new(),
            eof: false,
            reset: false,
            connected: false,
            waker: None,
            write_shut: false,
            halves: 2,
            last_due: 0,
        }
    }

    fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) ends: [End; 2],
}

/// A listening socket: connections accepted and not yet taken.
#[derive(Debug)]
pub(crate) struct Listener {
    pub(crate) host: HostId,
    pub(crate) backlog: VecDeque<u64>,
    pub(crate) waker: Option<Waker>,
}

pub(crate) struct Network {
    latency_rng: ChaCha8Rng,
    loss_rng: ChaCha8Rng,
    default_latency: (u64, u64),
    /// Per unordered host pair (lower index first).
    latency: BTreeMap<(usize, usize), (u64, u64)>,
    in_flight: BTreeMap<(u64, u64), Segment>,
    next_seq: u64,
    holds: BTreeMap<(usize, usize), BTreeSet<HoldReason>>,
    held: BTreeMap<(usize, usize), VecDeque<Segment>>,
    loss_rate: f64,
    loss_exempt: Vec<usize>,
    /// Links (unordered pair) waiting to retransmit, until when.
    losses: BTreeMap<(usize, usize), u64>,
    pub(crate) conns: BTreeMap<u64, Conn>,
    next_conn: u64,
    pub(crate) listeners: BTreeMap<(usize, u16), Listener>,
    next_port: u16,
}

/// One segment's latency in `min..=max` ms, drawn as turmoil 0.7 draws it (so a scenario's
/// `latency_ms` keeps its meaning across engines): `min + floor((max - min) * x)` with `x`
/// exponential of rate 5 (mean a fifth of the range), capped at `max`.
fn draw_latency(rng: &mut ChaCha8Rng, (min, max): (u64, u64)) -> u64 {
    let x: f64 = Exp::new(5.0).expect("a positive rate").sample(rng);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let extra = ((max - min) as f64 * x) as u64;
    (min + extra).min(max)
}

fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

impl Network {
    pub(crate) fn new(seed: u64, default_latency: (u64, u64)) -> Network {
        assert!(default_latency.0 <= default_latency.1, "latency min > max");
        Network {
            latency_rng: ChaCha8Rng::seed_from_u64(seed ^ 0x6c61_7465_6e63_7921),
            loss_rng: ChaCha8Rng::seed_from_u64(seed ^ 0x6c6f_7373_6c6f_7373),
            default_latency,
            latency: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            next_seq: 0,
            holds: BTreeMap::new(),
            held: BTreeMap::new(),
            loss_rate: 0.0,
            loss_exempt: Vec::new(),
            losses: BTreeMap::new(),
            conns: BTreeMap::new(),
            next_conn: 0,
            listeners: BTreeMap::new(),
            next_port: 49_152,
        }
    }

    pub(crate) fn set_latency(&mut self, a: usize, b: usize, ms: (u64, u64)) {
        assert!(ms.0 <= ms.1, "latency min > max");
        self.latency.insert(pair(a, b), ms);
    }

    pub(crate) fn set_loss(&mut self, rate: f64, exempt: Vec<usize>) {
        assert!((0.0..=1.0).contains(&rate), "loss rate outside 0..=1");
        self.loss_rate = rate;
        self.loss_exempt = exempt;
    }

    pub(crate) fn hold(&mut self, from: usize, to: usize, reason: HoldReason) {
        self.holds.entry((from, to)).or_default().insert(reason);
    }

    fn is_held(&self, from: usize, to: usize) -> bool {
        self.holds.get(&(from, to)).is_some_and(|r| !r.is_empty())
    }

    /// An ephemeral port for a connecting socket.
    pub(crate) fn ephemeral_port(&mut self) -> u16 {
        let port = self.next_port;
        self.next_port = if port == u16::MAX { 49_152 } else { port + 1 };
        port
    }

    pub(crate) fn open(&mut self, conn: Conn) -> u64 {
        let id = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(id, conn);
        id
    }

    /// The next time the pump must act: a segment due, or a lost segment retransmitted.
    fn next_wake(&self) -> Option<u64> {
        let segment = self.in_flight.keys().next().map(|(due, _)| *due);
        let retransmit = self.losses.values().min().copied();
        match (segment, retransmit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Sends `payload` from side `from_side` of `conn` at `now` (ms). Returns whether the
    /// pump must look again sooner than it planned.
    pub(crate) fn send(&mut self, now: u64, conn: u64, from_side: usize, payload: Payload) -> bool {
        let Some(c) = self.conns.get(&conn) else {
            return false;
        };
        let (from, to) = (
            c.ends[from_side].host.index,
            c.ends[1 - from_side].host.index,
        );
        let latency = if from == to {
            0
        } else {
            let range = self
                .latency
                .get(&pair(from, to))
                .copied()
                .unwrap_or(self.default_latency);
            draw_latency(&mut self.latency_rng, range)
        };
        let end = &mut self.conns.get_mut(&conn).expect("looked up above").ends[from_side];
        let due = (now + latency).max(end.last_due);
        end.last_due = due;
        if self.loss_rate > 0.0
            && from != to
            && !self.loss_exempt.contains(&from)
            && !self.loss_exempt.contains(&to)
            && self.loss_rng.random_bool(self.loss_rate)
            && !self.losses.contains_key(&pair(from, to))
        {
            // TCP delivers in order, so nothing after the lost segment gets through on this
            // link until the retransmission; the ACKs of the other way are held with it.
            self.losses.insert(pair(from, to), now + RETRANSMIT_MS);
            self.hold(from, to, HoldReason::Loss);
            self.hold(to, from, HoldReason::Loss);
        }
        let sooner = self.next_wake().is_none_or(|next| due < next);
        self.in_flight.insert(
            (due, self.next_seq),
            Segment {
                conn,
                to: 1 - from_side,
                payload,
            },
        );
        self.next_seq += 1;
        sooner
    }

    /// A host went down: its listeners close. (Its sockets fall silent by incarnation.)
    pub(crate) fn host_down(&mut self, index: usize) {
        self.listeners.retain(|(host, _), _| *host != index);
    }

    /// Forgets `conn` once neither end's application holds it.
    pub(crate) fn collect(&mut self, conn: u64) {
        if self
            .conns
            .get(&conn)
            .is_some_and(|c| c.ends.iter().all(|e| e.halves == 0))
        {
            self.conns.remove(&conn);
        }
    }
}

/// Sends `payload` and wakes the pump if it is due sooner than the pump planned.
pub(crate) fn send(state: &State, conn: u64, from_side: usize, payload: Payload) {
    let now = state.now().as_ms();
    if state
        .network
        .borrow_mut()
        .send(now, conn, from_side, payload)
    {
        state.pump.notify_one();
    }
}

/// Ends hold `reason` on the directed link `from` -> `to`; if it opens, what it held is
/// delivered now, in order.
pub(crate) fn release(state: &State, from: usize, to: usize, reason: HoldReason) {
    let opened = {
        let mut network = state.network.borrow_mut();
        let Some(reasons) = network.holds.get_mut(&(from, to)) else {
            return;
        };
        reasons.remove(&reason);
        if !reasons.is_empty() {
            return;
        }
        network.holds.remove(&(from, to));
        network.held.remove(&(from, to)).unwrap_or_default()
    };
    for segment in opened {
        deliver(state, segment);
    }
}

/// The network's one task: delivers every segment when it is due and the link is open.
pub(crate) async fn pump(state: Rc<State>) {
    loop {
        let next = state.network.borrow().next_wake();
        let Some(due) = next else {
            state.pump.notified().await;
            continue;
        };
        let now = state.now().as_ms();
        if due > now {
            tokio::select! {
                biased;
                () = state.pump.notified() => {}
                () = tokio::time::sleep_until(state.instant(streamsim_models::time::SimInstant::from_ms(due))) => {}
            }
            continue;
        }
        // Retransmissions first: a segment due now on a link that retransmits now goes
        // through behind what the link held.
        let retransmitted: Vec<(usize, usize)> = {
            let mut network = state.network.borrow_mut();
            let due_links: Vec<(usize, usize)> = network
                .losses
                .iter()
                .filter(|(_, until)| **until <= now)
                .map(|(link, _)| *link)
                .collect();
            for link in &due_links {
                network.losses.remove(link);
            }
            due_links
        };
        for (a, b) in retransmitted {
            release(&state, a, b, HoldReason::Loss);
            release(&state, b, a, HoldReason::Loss);
        }
        loop {
            let segment = {
                let mut network = state.network.borrow_mut();
                let Some(entry) = network.in_flight.first_entry() else {
                    break;
                };
                if entry.key().0 > now {
                    break;
                }
                let segment = entry.remove();
                let link = network.conns.get(&segment.conn).map(|c| {
                    (
                        c.ends[1 - segment.to].host.index,
                        c.ends[segment.to].host.index,
                    )
                });
                match link {
                    None => continue,
                    Some(link) if network.is_held(link.0, link.1) => {
                        network.held.entry(link).or_default().push_back(segment);
                        continue;
                    }
                    Some(_) => segment,
                }
            };
            deliver(&state, segment);
        }
    }
}

/// Hands `segment` to its socket, as the receiving machine's kernel would.
fn deliver(state: &State, segment: Segment) {
    let Segment { conn, to, payload } = segment;
    let reply = {
        let mut network = state.network.borrow_mut();
        let Some(c) = network.conns.get(&conn) else {
            return;
        };
        let end_host = c.ends[to].host;
        if let Payload::Syn = payload {
            return accept(state, &mut network, conn, end_host);
        }
        if end_host.incarnation == 0 {
            // Never accepted (refused, or still in the handshake): nothing to deliver to.
            return;
        }
        let closed = c.ends[to].halves == 0;
        match state.incarnation_state(end_host) {
            Incarnation::Down => return,
            Incarnation::Restarted => !matches!(payload, Payload::Rst),
            Incarnation::Alive => {
                let end = &mut network.conns.get_mut(&conn).expect("looked up").ends[to];
                match payload {
                    Payload::Syn => unreachable!("handled above"),
                    Payload::SynAck => {
                        if closed {
                            true
                        } else {
                            end.connected = true;
                            end.wake();
                            false
                        }
                    }
                    Payload::Data(bytes) => {
                        if closed {
                            true
                        } else {
                            end.rx.extend(bytes);
                            end.wake();
                            false
                        }
                    }
                    Payload::Fin => {
                        end.eof = true;
                        end.wake();
                        false
                    }
                    Payload::Rst => {
                        end.reset = true;
                        end.wake();
                        false
                    }
                }
            }
        }
    };
    if reply {
        send(state, conn, to, Payload::Rst);
    }
}

/// A connect reaching its host: accepted into the listener's backlog if the host runs and
/// listens on the port, refused (a reset) otherwise.
fn accept(state: &State, network: &mut Network, conn: u64, target: HostId) {
    let port = network.conns[&conn].ends[1].port;
    let listener = network
        .listeners
        .get_mut(&(target.index, port))
        .filter(|l| state.is_alive(l.host));
    let Some(listener) = listener else {
        network.conns.get_mut(&conn).expect("looked up").ends[1].halves = 0;
        let now = state.now().as_ms();
        // The refusal travels back from the target's address (side 1's host index).
        if network.send(now, conn, 1, Payload::Rst) {
            state.pump.notify_one();
        }
        return;
    };
    let host = listener.host;
    listener.backlog.push_back(conn);
    if let Some(waker) = listener.waker.take() {
        waker.wake();
    }
    let end = &mut network.conns.get_mut(&conn).expect("looked up").ends[1];
    end.host = host;
    // Held by the backlog until `accept` hands it out.
    end.halves = 2;
    let now = state.now().as_ms();
    if network.send(now, conn, 1, Payload::SynAck) {
        state.pump.notify_one();
    }
}

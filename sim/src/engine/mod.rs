//! The event-driven engine: every host of a world on one paused, current-thread tokio runtime,
//! simulated time jumping straight to the next timer or delivery, so a run costs what happens
//! in it rather than what its milliseconds are.
//!
//! What it models is machines on a network, not Synapse: hosts that run a program
//! ("software", restarted from scratch on every start), crash (their tasks stop where they are
//! and their sockets fall silent) and restart (a new incarnation on the same address), joined
//! by TCP connections ([`tcp`]) over links with latency, partitions and loss ([`network`]).
//!
//! Why not turmoil 0.7: it steps every host's runtime every millisecond whether anything
//! happens or not (../shared/research/engine.md: ~1.3 µs per host per step, and fewer than half
//! the milliseconds of the standard load have any activity). Why not turmoil-net 0.1: it models
//! packets and a TCP state machine whose retransmission is counted in harness passes, not time,
//! it has no crash, and it drops on live connections; what Synapse relies on is TCP's stream
//! guarantees (in order, nothing lost while the connection lives, held by a partition,
//! silence from a dead peer, a reset from a restarted one), which a stream-level model gives
//! exactly and cheaply.
//!
//! Determinism: one thread, one `LocalSet`, tasks in spawn order, timers with equal deadlines in
//! registration order, `select!` drawing from the runtime's seeded RNG (`tokio_unstable`'s
//! `rng_seed`), and the network's draws from its own seeded ChaCha stream. The engine owns no
//! wall clock: `now()` is the paused clock's distance from the run's start.

pub mod network;
pub mod tcp;

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use streamsim_models::time::SimInstant;
use tokio::task::{AbortHandle, JoinHandle, LocalSet};

use network::Network;

/// What a host's software returns when it stops: `Err` ends the run (a host failure).
pub type HostResult = Result<(), Box<dyn std::error::Error>>;

type Software = Rc<dyn Fn() -> Pin<Box<dyn Future<Output = HostResult>>>>;

/// A host of the world and the incarnation of it that a task or socket belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostId {
    /// The host's index in registration order (its address is 192.168.0.(index + 1)).
    pub index: usize,
    /// Counts starts from 1; a socket of an older incarnation is a dead one.
    pub incarnation: u32,
}

struct Host {
    name: String,
    software: Software,
    /// The current (or last) incarnation; 0 before the first start.
    incarnation: u32,
    running: bool,
    /// Every task the current incarnation spawned (pruned of finished ones as it grows).
    tasks: Vec<AbortHandle>,
    /// `tasks.len()` after the last pruning, so pruning costs amortised O(1) per spawn.
    pruned_at: usize,
}

/// The engine's state, shared by the drive loop, the hosts' sockets and the network pump.
pub(crate) struct State {
    hosts: RefCell<Vec<Host>>,
    pub(crate) network: RefCell<Network>,
    /// Wakes the network pump when a segment is due before what it sleeps for.
    pub(crate) pump: tokio::sync::Notify,
    /// The paused clock's reading at the run's start: `now()` is the distance from it.
    start: Cell<Option<tokio::time::Instant>>,
    /// The first host failure (a host's software returned `Err`): it ends the run.
    failure: RefCell<Option<String>>,
    failed: tokio::sync::Notify,
}

tokio::task_local! {
    static CURRENT_HOST: HostId;
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<State>>> = const { RefCell::new(None) };
}

fn state() -> Rc<State> {
    CURRENT.with(|current| {
        current
            .borrow()
            .clone()
            .expect("called inside a running engine")
    })
}

/// The host whose task is running now.
///
/// # Panics
/// Outside a host's task (the drive loop is not a host).
pub fn current_host() -> HostId {
    CURRENT_HOST
        .try_with(|host| *host)
        .expect("called inside a host's task")
}

/// Simulated time since the run started, in whole milliseconds (the paused clock only ever
/// stops on whole milliseconds: every deadline of the world is one).
pub fn now() -> SimInstant {
    state().now()
}

/// Sleeps until `at` in simulated time (returns at once if it has passed).
pub async fn sleep_until(at: SimInstant) {
    let deadline = state().instant(at);
    tokio::time::sleep_until(deadline).await;
}

/// Spawns `task` as a task of the current host: it runs until it ends or the host crashes.
///
/// # Panics
/// Outside a host's task.
pub fn spawn_local<F>(task: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let host = current_host();
    let handle = tokio::task::spawn_local(CURRENT_HOST.scope(host, task));
    state().adopt(host, handle.abort_handle());
    handle
}

/// The host at `ip` (192.168.0.(index + 1)), if there is one.
pub fn reverse_lookup(ip: IpAddr) -> Option<String> {
    let state = state();
    let index = index_of_ip(ip)?;
    let hosts = state.hosts.borrow();
    hosts.get(index).map(|host| host.name.clone())
}

fn ip_of(index: usize) -> IpAddr {
    let n = u32::try_from(index + 1).expect("fewer than 2^32 hosts");
    IpAddr::V4(Ipv4Addr::from(0xc0a8_0000 + n))
}

fn index_of_ip(ip: IpAddr) -> Option<usize> {
    let IpAddr::V4(v4) = ip else { return None };
    let n = u32::from(v4).checked_sub(0xc0a8_0000)?;
    usize::try_from(n).ok()?.checked_sub(1)
}

impl State {
    fn now(&self) -> SimInstant {
        let start = self.start.get().expect("the run has started");
        let elapsed = tokio::time::Instant::now().duration_since(start);
        SimInstant::from_ms(u64::try_from(elapsed.as_millis()).expect("simulated time fits u64"))
    }

    fn instant(&self, at: SimInstant) -> tokio::time::Instant {
        self.start.get().expect("the run has started") + Duration::from_millis(at.as_ms())
    }

    pub(crate) fn host_name(&self, index: usize) -> String {
        self.hosts.borrow()[index].name.clone()
    }

    pub(crate) fn host_index(&self, name: &str) -> Option<usize> {
        self.hosts
            .borrow()
            .iter()
            .position(|host| host.name == name)
    }

    /// Whether `host`'s incarnation is the one running now.
    pub(crate) fn is_alive(&self, host: HostId) -> bool {
        let hosts = self.hosts.borrow();
        let h = &hosts[host.index];
        h.running && h.incarnation == host.incarnation
    }

    /// The state of `host`'s machine for a segment arriving at a socket of `host`: `Alive`,
    /// `Down` (crashed, not restarted: silence), or `Restarted` (a newer incarnation answers
    /// with a reset).
    pub(crate) fn incarnation_state(&self, host: HostId) -> Incarnation {
        let hosts = self.hosts.borrow();
        let h = &hosts[host.index];
        if h.incarnation == host.incarnation && h.running {
            Incarnation::Alive
        } else if h.running {
            Incarnation::Restarted
        } else {
            Incarnation::Down
        }
    }

    fn adopt(&self, host: HostId, task: AbortHandle) {
        let mut hosts = self.hosts.borrow_mut();
        let h = &mut hosts[host.index];
        if h.incarnation != host.incarnation || !h.running {
            // Spawned while its incarnation was going down: it must not outlive it.
            task.abort();
            return;
        }
        h.tasks.push(task);
        if h.tasks.len() >= 2 * h.pruned_at.max(16) {
            h.tasks.retain(|task| !task.is_finished());
            h.pruned_at = h.tasks.len();
        }
    }

    fn fail(&self, host: &str, error: &str) {
        let mut failure = self.failure.borrow_mut();
        if failure.is_none() {
            *failure = Some(format!("{host}: {error}"));
            self.failed.notify_one();
        }
    }
}

/// What became of the incarnation a socket belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Incarnation {
    Alive,
    Down,
    Restarted,
}

/// A world's hosts and network before and while it runs.
///
/// Shape: register hosts ([`Engine::host`]), then [`Engine::run`] a drive loop that applies
/// faults through a [`Control`]; the run ends when the drive loop returns or a host fails.
pub struct Engine {
    state: Rc<State>,
    runtime: tokio::runtime::Runtime,
    /// The hosts running when the last run ended.
    running_at_end: BTreeSet<String>,
    /// When the last run ended.
    ended_at: SimInstant,
}

/// The drive loop's handle on the world: faults and queries, in simulated time.
#[derive(Clone)]
pub struct Control {
    state: Rc<State>,
}

/// Why a [`Control`] call could not act.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EngineError {
    #[error("no host {0:?}")]
    NoHost(String),
}

impl Engine {
    /// An engine whose runtime and network draw from `seed`; `latency_ms` is every link's
    /// one-way latency range in milliseconds (inclusive).
    pub fn new(seed: u64, latency_ms: (u64, u64)) -> Engine {
        let mut bytes = seed.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"streamsim-engine");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .rng_seed(tokio::runtime::RngSeed::from_bytes(&bytes))
            .build()
            .expect("a current-thread runtime builds");
        let state = Rc::new(State {
            hosts: RefCell::new(Vec::new()),
            network: RefCell::new(Network::new(seed, latency_ms)),
            pump: tokio::sync::Notify::new(),
            start: Cell::new(None),
            failure: RefCell::new(None),
            failed: tokio::sync::Notify::new(),
        });
        Engine {
            state,
            runtime,
            running_at_end: BTreeSet::new(),
            ended_at: SimInstant::ZERO,
        }
    }

    /// Registers host `name` running `software` (called anew on every start). Hosts start
    /// when the run starts, in registration order, unless [`Control::crash`]ed first.
    pub fn host<F, Fut>(&mut self, name: &str, software: F)
    where
        F: Fn() -> Fut + 'static,
        Fut: Future<Output = HostResult> + 'static,
    {
        assert!(
            self.state.host_index(name).is_none(),
            "host {name} registered twice"
        );
        self.state.hosts.borrow_mut().push(Host {
            name: name.to_owned(),
            software: Rc::new(move || Box::pin(software())),
            incarnation: 0,
            running: false,
            tasks: Vec::new(),
            pruned_at: 0,
        });
    }

    /// Starts every host not in `late` and runs `drive` (given a [`Control`]) until it
    /// returns; a host failure ends the run early. Returns the first host failure, if any.
    pub fn run<D, Fut>(&mut self, late: &[String], drive: D) -> Option<String>
    where
        D: FnOnce(Control) -> Fut,
        Fut: Future<Output = ()>,
    {
        let state = self.state.clone();
        CURRENT.with(|current| *current.borrow_mut() = Some(state.clone()));
        let local = LocalSet::new();
        let control = Control {
            state: state.clone(),
        };
        let drive = drive(control.clone());
        self.ended_at = self.runtime.block_on(local.run_until(async {
            state.start.set(Some(tokio::time::Instant::now()));
            tokio::task::spawn_local(network::pump(state.clone()));
            let names: Vec<String> = state
                .hosts
                .borrow()
                .iter()
                .map(|h| h.name.clone())
                .collect();
            for name in names {
                if !late.contains(&name) {
                    control.start(&name).expect("a registered host");
                }
            }
            tokio::select! {
                biased;
                () = state.failed.notified() => {}
                () = drive => {}
            }
            state.now()
        }));
        // Dropping the local set drops every task: their sockets must not act any more.
        self.running_at_end.clear();
        for host in state.hosts.borrow_mut().iter_mut() {
            if host.running {
                self.running_at_end.insert(host.name.clone());
            }
            host.running = false;
        }
        drop(local);
        CURRENT.with(|current| *current.borrow_mut() = None);
        let failure = state.failure.borrow().clone();
        failure
    }

    /// When the last run ended: the drive loop's return, or the first host failure.
    pub fn ended_at(&self) -> SimInstant {
        self.ended_at
    }

    /// Whether `name` was running when the run ended.
    pub fn was_running(&self, name: &str) -> bool {
        self.running_at_end.contains(name)
    }
}

impl Control {
    fn index(&self, name: &str) -> Result<usize, EngineError> {
        self.state
            .host_index(name)
            .ok_or_else(|| EngineError::NoHost(name.to_owned()))
    }

    /// Simulated time now.
    pub fn now(&self) -> SimInstant {
        self.state.now()
    }

    /// Sleeps until `at`.
    pub async fn sleep_until(&self, at: SimInstant) {
        tokio::time::sleep_until(self.state.instant(at)).await;
    }

    /// Whether `name` is running now.
    pub fn is_running(&self, name: &str) -> bool {
        self.index(name)
            .is_ok_and(|index| self.state.hosts.borrow()[index].running)
    }

    /// Starts `name`'s software as a new incarnation (a running host is crashed first: a
    /// bounce).
    pub fn start(&self, name: &str) -> Result<(), EngineError> {
        let index = self.index(name)?;
        if self.state.hosts.borrow()[index].running {
            self.crash(name)?;
        }
        let (host, software) = {
            let mut hosts = self.state.hosts.borrow_mut();
            let h = &mut hosts[index];
            h.incarnation += 1;
            h.running = true;
            h.pruned_at = 0;
            (
                HostId {
                    index,
                    incarnation: h.incarnation,
                },
                h.software.clone(),
            )
        };
        let state = self.state.clone();
        let host_name = name.to_owned();
        let main = async move {
            if let Err(error) = software().await {
                state.fail(&host_name, &error.to_string());
            }
        };
        let handle = tokio::task::spawn_local(CURRENT_HOST.scope(host, main));
        self.state.adopt(host, handle.abort_handle());
        Ok(())
    }

    /// Crashes `name`: its tasks stop where they are, its listeners close, and its sockets
    /// fall silent (no FIN, no reset: peers hear nothing until they time out, or until a
    /// restarted incarnation resets what they send). Crashing a stopped host does nothing.
    pub fn crash(&self, name: &str) -> Result<(), EngineError> {
        let index = self.index(name)?;
        let tasks = {
            let mut hosts = self.state.hosts.borrow_mut();
            let h = &mut hosts[index];
            if !h.running {
                return Ok(());
            }
            h.running = false;
            std::mem::take(&mut h.tasks)
        };
        for task in tasks {
            task.abort();
        }
        self.state.network.borrow_mut().host_down(index);
        Ok(())
    }

    /// Holds every segment between `a` and `b`, both ways, until [`Control::release`]: a
    /// partition as TCP lives it (nothing is lost; a connection survives unless a time-out
    /// closes it).
    pub fn hold(&self, a: &str, b: &str) -> Result<(), EngineError> {
        let (a, b) = (self.index(a)?, self.index(b)?);
        let mut network = self.state.network.borrow_mut();
        network.hold(a, b, network::HoldReason::Partition);
        network.hold(b, a, network::HoldReason::Partition);
        Ok(())
    }

    /// Ends a [`Control::hold`]: what was held is delivered now, in order.
    pub fn release(&self, a: &str, b: &str) -> Result<(), EngineError> {
        let (a, b) = (self.index(a)?, self.index(b)?);
        network::release(&self.state, a, b, network::HoldReason::Partition);
        network::release(&self.state, b, a, network::HoldReason::Partition);
        Ok(())
    }

    /// Holds `from`'s segments to `to` (not the other way) until [`Control::release_oneway`].
    pub fn hold_oneway(&self, from: &str, to: &str) -> Result<(), EngineError> {
        let (from, to) = (self.index(from)?, self.index(to)?);
        self.state
            .network
            .borrow_mut()
            .hold(from, to, network::HoldReason::OneWay);
        Ok(())
    }

    /// Ends a [`Control::hold_oneway`].
    pub fn release_oneway(&self, from: &str, to: &str) -> Result<(), EngineError> {
        let (from, to) = (self.index(from)?, self.index(to)?);
        network::release(&self.state, from, to, network::HoldReason::OneWay);
        Ok(())
    }

    /// Sets the one-way latency range (milliseconds, inclusive) of the link between `a` and
    /// `b`, both ways, for segments sent from now on.
    pub fn set_link_latency(&self, a: &str, b: &str, ms: (u64, u64)) -> Result<(), EngineError> {
        let (a, b) = (self.index(a)?, self.index(b)?);
        self.state.network.borrow_mut().set_latency(a, b, ms);
        Ok(())
    }

    /// Sets the loss rate: each segment sent on a link not touching an `exempt` host is lost
    /// with probability `rate`, and TCP then delivers nothing more on that link (both ways)
    /// until it retransmits, [`network::RETRANSMIT_MS`] later.
    pub fn set_loss(&self, rate: f64, exempt: &[&str]) -> Result<(), EngineError> {
        let exempt = exempt
            .iter()
            .map(|name| self.index(name))
            .collect::<Result<Vec<_>, _>>()?;
        self.state.network.borrow_mut().set_loss(rate, exempt);
        Ok(())
    }
}

#[cfg(test)]
mod tests;

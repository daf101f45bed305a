//! The plumbing every host shares: simulated time as [`SimInstant`], the well-known ports, and
//! JSON-lines request/response framing over the engine's TCP ([`crate::engine::tcp`]).
//!
//! Nothing here models Synapse; it is how the simulated processes talk to the simulated
//! database, the sync clients to their reader, and the Redis bus to its clients.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use crate::engine::tcp::{OwnedReadHalf, OwnedWriteHalf};
use crate::engine::tcp::{TcpListener, TcpStream};
use serde::de::DeserializeOwned;
use serde::Serialize;
use streamsim_models::time::SimInstant;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The database host's port (PostgreSQL's).
pub const DB_PORT: u16 = 5432;
/// A writer's replication server port (Synapse's conventional `replication` listener).
pub const REPLICATION_PORT: u16 = 9092;
/// A reader's client-serving (/sync) port.
pub const SYNC_PORT: u16 = 8008;
/// The Redis host's port.
pub const REDIS_PORT: u16 = 6379;
/// Where a process takes client sends (`PUT /rooms/.../send`).
pub const CLIENT_SEND_PORT: u16 = 8009;
/// Where a writer takes forwarded sends (the `send_events` replication HTTP endpoint).
pub const PERSIST_PORT: u16 = 9093;
/// The shared metrics store (Redis's port on its own host).
pub const METRICS_STORE_PORT: u16 = 6380;
/// Where nodes broadcast their metrics datasets to the endpoint host.
pub const METRICS_ENDPOINT_PORT: u16 = 9094;

/// How long a TCP connect may take before it fails, in milliseconds: Twisted's `connectTCP`
/// default time-out of 30 s. The engine's connect waits as long as a partition holds its SYN
/// or SYN-ACK, as a kernel's would until it gives up.
pub const CONNECT_TIMEOUT_MS: u64 = 30_000;

/// Connects to `host:port`, failing after [`CONNECT_TIMEOUT_MS`].
///
/// Errors name the peer and the cause: a refused connect is `connection refused (w1 is down)`
/// (every host of the world listens on its ports while it is up, so nothing listening means
/// the host is down), a connect that gets no answer is `connect to w1:9093 timed out`.
pub async fn connect(host: &str, port: u16) -> std::io::Result<TcpStream> {
    let connected = tokio::time::timeout(
        Duration::from_millis(CONNECT_TIMEOUT_MS),
        TcpStream::connect((host, port)),
    )
    .await
    .unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("connect to {host}:{port} timed out"),
        ))
    });
    connected.map_err(|error| match error.kind() {
        // Say which host, and why: nothing listens on a host of the world that is up.
        std::io::ErrorKind::ConnectionRefused => {
            std::io::Error::new(error.kind(), format!("connection refused ({host} is down)"))
        }
        std::io::ErrorKind::TimedOut => error,
        _ => std::io::Error::new(error.kind(), format!("connect to {host}:{port}: {error}")),
    })
}

/// The simulated time of the running host.
pub fn now() -> SimInstant {
    crate::engine::now()
}

/// Sleeps until `deadline` in simulated time (returns at once if it has passed).
pub async fn sleep_until(deadline: SimInstant) {
    crate::engine::sleep_until(deadline).await;
}

/// Why a framed exchange failed. The world only needs to know that the peer is unusable now.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("peer closed the connection")]
    Closed,
    #[error("no answer within {0} ms")]
    TimedOut(u64),
    #[error("bad frame: {0}")]
    Decode(#[from] serde_json::Error),
}

/// How often a write held by a one-way partition looks again, in milliseconds.
pub const CUT_POLL_MS: u64 = 10;

/// The one-way partitions in force, `(from, to)`: a `partition_oneway` fault as TCP lives it.
/// Nothing is lost; `from`'s bytes for `to` wait in `from`'s send buffer until the heal,
/// while `to`'s bytes for `from` flow. (Every writer of the world passes this gate, where
/// the processes' own checks can see the cut; the engine's one-way hold would act alike.) Shared by the hosts of one
/// run; cloning shares it.
#[derive(Clone, Debug, Default)]
pub struct OneWayCuts(Rc<RefCell<BTreeSet<(String, String)>>>);

impl OneWayCuts {
    /// Whether `from`'s bytes to `to` are held now.
    pub fn is_cut(&self, from: &str, to: &str) -> bool {
        // Called before every write: compare in place rather than allocate.
        self.0.borrow().iter().any(|(f, t)| f == from && t == to)
    }

    pub fn cut(&self, from: &str, to: &str) {
        self.0.borrow_mut().insert((from.to_owned(), to.to_owned()));
    }

    /// Repairs every one-way partition.
    pub fn heal(&self) {
        self.0.borrow_mut().clear();
    }

    /// Returns once `from`'s bytes may reach `to`.
    pub async fn wait_open(&self, from: &str, to: &str) {
        while self.is_cut(from, to) {
            tokio::time::sleep(Duration::from_millis(CUT_POLL_MS)).await;
        }
    }
}

/// The host names at the two ends of `stream` (local, peer).
pub fn ends(stream: &TcpStream) -> (String, String) {
    let name = |addr: std::io::Result<SocketAddr>| {
        addr.ok()
            .and_then(|a| crate::engine::reverse_lookup(a.ip()))
            .unwrap_or_default()
    };
    (name(stream.local_addr()), name(stream.peer_addr()))
}

/// One end of a JSON-lines connection.
pub struct FramedStream {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    line: String,
    /// The one-way partitions, and this end's (local, peer) host names.
    cuts: OneWayCuts,
    ends: (String, String),
}

impl FramedStream {
    /// Frames `stream`; its writes wait while a one-way partition of `cuts` holds this
    /// direction.
    pub fn new(stream: TcpStream, cuts: &OneWayCuts) -> Self {
        let ends = ends(&stream);
        let (read, writer) = stream.into_split();
        FramedStream {
            reader: BufReader::new(read),
            writer,
            line: String::new(),
            cuts: cuts.clone(),
            ends,
        }
    }

    pub async fn send<T: Serialize>(&mut self, value: &T) -> Result<(), FrameError> {
        let mut bytes = serde_json::to_vec(value)?;
        bytes.push(b'\n');
        self.cuts.wait_open(&self.ends.0, &self.ends.1).await;
        self.writer.write_all(&bytes).await?;
        Ok(())
    }

    /// The next frame; `Ok(None)` when the peer closed cleanly between frames.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        self.line.clear();
        if self.reader.read_line(&mut self.line).await? == 0 {
            return Ok(None);
        }
        Ok(Some(serde_json::from_str(&self.line)?))
    }

    /// Sends a request and waits at most `timeout_ms` for its answer.
    pub async fn call<Q: Serialize, A: DeserializeOwned>(
        &mut self,
        request: &Q,
        timeout_ms: u64,
    ) -> Result<A, FrameError> {
        let exchange = async {
            self.send(request).await?;
            self.recv().await?.ok_or(FrameError::Closed)
        };
        tokio::time::timeout(Duration::from_millis(timeout_ms), exchange)
            .await
            .map_err(|_| FrameError::TimedOut(timeout_ms))?
    }
}

/// Listens on `port` of the running host and runs `serve` as its own task for every
/// connection accepted, for as long as the host lives. Returns only if the port cannot be
/// bound. (An accept fails only while the host goes down; listening goes on.)
pub async fn accept_each<S, F>(port: u16, mut serve: S) -> std::io::Result<Infallible>
where
    S: FnMut(TcpStream, SocketAddr) -> F,
    F: Future<Output = ()> + 'static,
{
    let listener = TcpListener::bind(("0.0.0.0", port)).await?;
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        crate::engine::spawn_local(serve(stream, peer));
    }
}

/// Answers one connection's requests in order, until the peer closes it or sends a frame
/// that cannot be read.
pub async fn answer_each<Q, A, H, F>(stream: TcpStream, cuts: OneWayCuts, mut handle: H)
where
    Q: DeserializeOwned,
    A: Serialize,
    H: FnMut(Q) -> F,
    F: Future<Output = A>,
{
    let mut framed = FramedStream::new(stream, &cuts);
    while let Ok(Some(request)) = framed.recv::<Q>().await {
        let answer = handle(request).await;
        if framed.send(&answer).await.is_err() {
            break;
        }
    }
}

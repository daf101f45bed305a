//! TCP sockets of the engine's hosts, shaped like `tokio::net`'s (`TcpListener::bind`,
//! `accept`, `TcpStream::connect`, `into_split`, `AsyncRead`/`AsyncWrite`), over the links of
//! [`super::network`].
//!
//! A write never blocks (the send buffer is unbounded, as turmoil's was: a bound would have to
//! be Synapse's, which the world models where Synapse does); a write to a reset connection
//! fails with `ConnectionReset`, after a shutdown with `BrokenPipe`. A read returns what has
//! arrived, then end-of-stream after the peer's FIN, or `ConnectionReset` after a reset.
//! Dropping the write half sends a FIN, unless the host is down (a crash is silent).

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::network::{self, Conn, End, Listener, Payload};
use super::{current_host, ip_of, state, HostId, State};

/// A listening socket of the current host.
pub struct TcpListener {
    state: Rc<State>,
    host: HostId,
    port: u16,
}

impl TcpListener {
    /// Listens on `port` of the current host (the address part is ignored: a host has one).
    ///
    /// # Errors
    /// `AddrInUse` if this incarnation of the host already listens on `port`.
    pub async fn bind(addr: (&str, u16)) -> io::Result<TcpListener> {
        let state = state();
        let host = current_host();
        let port = addr.1;
        let mut network = state.network.borrow_mut();
        if network
            .listeners
            .get(&(host.index, port))
            .is_some_and(|l| l.host == host)
        {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("port {port} is in use"),
            ));
        }
        network.listeners.insert(
            (host.index, port),
            Listener {
                host,
                backlog: Default::default(),
                waker: None,
            },
        );
        drop(network);
        Ok(TcpListener { state, host, port })
    }

    /// The next connection, with the peer's address.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let conn = poll_fn(|cx| {
            let mut network = self.state.network.borrow_mut();
            let Some(listener) = network.listeners.get_mut(&(self.host.index, self.port)) else {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "the listener is closed",
                )));
            };
            match listener.backlog.pop_front() {
                Some(conn) => Poll::Ready(Ok(conn)),
                None => {
                    listener.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await?;
        let stream = TcpStream::new(self.state.clone(), conn, 1);
        let peer = stream.peer_addr()?;
        Ok((stream, peer))
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        let backlog = {
            let mut network = self.state.network.borrow_mut();
            let ours = network
                .listeners
                .get(&(self.host.index, self.port))
                .is_some_and(|l| l.host == self.host);
            if !ours {
                return;
            }
            let listener = network
                .listeners
                .remove(&(self.host.index, self.port))
                .expect("looked up");
            listener.backlog
        };
        // Connections accepted by the kernel but never taken are reset.
        let alive = self.state.is_alive(self.host);
        for conn in backlog {
            self.state
                .network
                .borrow_mut()
                .conns
                .get_mut(&conn)
                .expect("a backlog connection")
                .ends[1]
                .halves = 0;
            if alive {
                network::send(&self.state, conn, 1, Payload::Rst);
            }
            self.state.network.borrow_mut().collect(conn);
        }
    }
}

/// A connected TCP stream.
pub struct TcpStream {
    read: OwnedReadHalf,
    write: OwnedWriteHalf,
}

/// The reading half of a [`TcpStream`].
pub struct OwnedReadHalf {
    state: Rc<State>,
    conn: u64,
    side: usize,
}

/// The writing half of a [`TcpStream`].
pub struct OwnedWriteHalf {
    state: Rc<State>,
    conn: u64,
    side: usize,
}

impl TcpStream {
    fn new(state: Rc<State>, conn: u64, side: usize) -> TcpStream {
        TcpStream {
            read: OwnedReadHalf {
                state: state.clone(),
                conn,
                side,
            },
            write: OwnedWriteHalf { state, conn, side },
        }
    }

    /// Connects to `host:port`; waits for the answer (which a partition holds).
    ///
    /// # Errors
    /// `NotFound` for a host the world does not have; `ConnectionRefused` when the host is
    /// down or nothing listens on the port. (A connect that gets no answer waits: callers
    /// bound it with their own time-out, as Twisted's `connectTCP` does.)
    pub async fn connect(addr: (&str, u16)) -> io::Result<TcpStream> {
        let state = state();
        let me = current_host();
        let (host, port) = addr;
        let target = state
            .host_index(host)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no host {host}")))?;
        let conn = {
            let mut network = state.network.borrow_mut();
            let local_port = network.ephemeral_port();
            let mut acceptor = End::new(
                HostId {
                    index: target,
                    incarnation: 0,
                },
                port,
            );
            acceptor.halves = 0;
            network.open(Conn {
                ends: [End::new(me, local_port), acceptor],
            })
        };
        // The stream owns the connection from here: a connect abandoned (timed out) drops it
        // and closes it like any other.
        let stream = TcpStream::new(state.clone(), conn, 0);
        network::send(&state, conn, 0, Payload::Syn);
        poll_fn(|cx| {
            let mut network = state.network.borrow_mut();
            let end = &mut network
                .conns
                .get_mut(&conn)
                .expect("held by the stream")
                .ends[0];
            if end.connected {
                Poll::Ready(Ok(()))
            } else if end.reset {
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("connection refused by {host}:{port}"),
                )))
            } else {
                end.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await?;
        Ok(stream)
    }

    /// This end's address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.read.addr(self.read.side)
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.read.addr(1 - self.read.side)
    }

    /// The two halves, to read and write from different tasks.
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        (self.read, self.write)
    }
}

impl OwnedReadHalf {
    fn addr(&self, side: usize) -> io::Result<SocketAddr> {
        let network = self.state.network.borrow();
        let end = &network.conns[&self.conn].ends[side];
        Ok(SocketAddr::new(ip_of(end.host.index), end.port))
    }
}

/// The end `side` of `conn`, which a half of it still holds.
fn end_mut(network: &mut network::Network, conn: u64, side: usize) -> &mut End {
    &mut network
        .conns
        .get_mut(&conn)
        .expect("held by a half of it")
        .ends[side]
}

fn reset_error(state: &State, conn: u64, side: usize) -> io::Error {
    let network = state.network.borrow();
    let peer = network.conns[&conn].ends[1 - side].host.index;
    drop(network);
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        format!("connection reset by {}", state.host_name(peer)),
    )
}

impl AsyncRead for OwnedReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut network = self.state.network.borrow_mut();
        let end = end_mut(&mut network, self.conn, self.side);
        if !end.rx.is_empty() {
            let n = end.rx.len().min(buf.remaining());
            let (a, b) = end.rx.as_slices();
            let from_a = n.min(a.len());
            buf.put_slice(&a[..from_a]);
            buf.put_slice(&b[..n - from_a]);
            end.rx.drain(..n);
            return Poll::Ready(Ok(()));
        }
        if end.reset {
            drop(network);
            return Poll::Ready(Err(reset_error(&self.state, self.conn, self.side)));
        }
        if end.eof {
            return Poll::Ready(Ok(()));
        }
        end.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for OwnedWriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let (reset, shut) = {
            let network = self.state.network.borrow();
            let end = &network.conns[&self.conn].ends[self.side];
            (end.reset, end.write_shut)
        };
        if reset {
            return Poll::Ready(Err(reset_error(&self.state, self.conn, self.side)));
        }
        if shut {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after shutdown",
            )));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        network::send(
            &self.state,
            self.conn,
            self.side,
            Payload::Data(buf.to_vec()),
        );
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shut();
        Poll::Ready(Ok(()))
    }
}

impl OwnedWriteHalf {
    /// Sends this end's FIN once (not from a host that is down: a crash is silent).
    fn shut(&self) {
        let send_fin = {
            let mut network = self.state.network.borrow_mut();
            let end = end_mut(&mut network, self.conn, self.side);
            let first = !end.write_shut;
            end.write_shut = true;
            first && !end.reset && self.state.is_alive(end.host)
        };
        if send_fin {
            network::send(&self.state, self.conn, self.side, Payload::Fin);
        }
    }
}

impl Drop for OwnedWriteHalf {
    fn drop(&mut self) {
        self.shut();
        release_half(&self.state, self.conn, self.side, false);
    }
}

impl Drop for OwnedReadHalf {
    fn drop(&mut self) {
        release_half(&self.state, self.conn, self.side, true);
    }
}

/// One half is gone; the connection is forgotten once both ends' halves are. Only the read
/// half's waker is the end's (a write never waits): dropping the write half of a stream
/// whose read half still waits must leave that reader wakeable.
fn release_half(state: &State, conn: u64, side: usize, reader: bool) {
    let mut network = state.network.borrow_mut();
    if let Some(c) = network.conns.get_mut(&conn) {
        c.ends[side].halves -= 1;
        if reader {
            c.ends[side].waker = None;
        }
    }
    network.collect(conn);
}

impl AsyncRead for TcpStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.write).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.write).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.write).poll_shutdown(cx)
    }
}

//! One direct-TCP replication connection (synapse/replication/tcp/protocol.py, 1.163.2):
//! `BaseReplicationStreamProtocol` with its `ServerReplicationStreamProtocol` and
//! `ClientReplicationStreamProtocol` subclasses, over Twisted's `LineOnlyReceiver`.
//!
//! Sans-IO: bytes, time and transport events come in through `handle_*` calls; bytes to
//! write, commands for the application and transport actions come out of
//! [`Connection::poll_output`]. Each rule cites the lines of protocol.py (or of Twisted 24.x,
//! which 1.163.2 runs on) it copies; research/synapse-model.md §3.2 gives them in prose.

use std::collections::VecDeque;

use crate::limits::{LINE_BYTES_MAX, PENDING_COMMANDS_MAX, PING_INTERVAL_MS, PING_TIMEOUT_MS};
use crate::time::SimInstant;
use crate::wire::pytext::PyStr;
use crate::wire::{self, Command, CommandName, DecodeError, Direction, SendError};

/// Which end of the connection this is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// `ServerReplicationStreamProtocol`: the process with the streams; greets with `SERVER`.
    Server { server_name: String },
    /// `ClientReplicationStreamProtocol`: a worker; greets with `NAME`, then asks `REPLICATE`.
    /// `server_name` is the homeserver name the `SERVER` greeting must carry.
    Client {
        client_name: String,
        server_name: String,
    },
}

impl Role {
    /// The direction of the commands this end receives (`VALID_INBOUND_COMMANDS`).
    pub fn inbound_direction(&self) -> Direction {
        match self {
            Role::Server { .. } => Direction::ClientToServer,
            Role::Client { .. } => Direction::ServerToClient,
        }
    }
}

/// `ConnectionStates` (protocol.py:97-101).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    /// Built, `connectionMade` not yet called: commands queue.
    Connecting,
    Established,
    /// The transport's buffers are full (`pauseProducing`): commands queue.
    Paused,
    /// We closed or the transport was lost: commands are dropped. Synapse sets this as soon as
    /// it *asks* to close, before the transport is gone.
    Closed,
}

/// Why this end asked the transport to close, one per `send_error` / `close` call site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// `lineLengthExceeded` (protocol.py:469-471).
    LineTooLong,
    /// A line that is not a command (protocol.py:249-252).
    ParseError,
    /// A command the peer's side may not send (protocol.py:254-257).
    InvalidCommand(CommandName),
    /// The `SERVER` greeting named another homeserver (protocol.py:522-525).
    WrongRemote,
    /// No valid command for more than [`PING_TIMEOUT_MS`] from a peer that pings (protocol.py:224-233).
    PingTimeout,
    /// More than [`PENDING_COMMANDS_MAX`] commands queued (protocol.py:367-373).
    FailedToKeepUp,
}

/// Why the transport must be dropped at once, discarding anything not yet written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AbortReason {
    /// `send_ping`: we asked to close more than [`PING_TIMEOUT_MS`] ago and the transport is
    /// still there, so `transport.abortConnection()` (protocol.py:213-219).
    CloseTimedOut,
    /// An exception escaped a callback Twisted made (`dataReceived`, `connectionMade`,
    /// `resumeProducing`): Twisted's reactor logs it and disconnects the transport at once
    /// (twisted/internet/posixbase.py `_doReadOrWrite`). `Class: message`, as Python prints it.
    Exception(String),
}

/// Something the application hears about that is not a command for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// `on_ERROR`: the peer reported an error. Synapse only logs it (protocol.py:385-386);
    /// `ReplicationCommandHandler` has no `on_ERROR`, so nothing else happens.
    RemoteError { text: PyStr },
    /// `on_connection_closed` ran for the first time: the point where Synapse calls
    /// `command_handler.lost_connection` (protocol.py:438-444). Synapse calls it again on
    /// every later close path; it is idempotent, so the model reports it once.
    Closed,
}

/// What the connection wants done, in the order it must be done.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Bytes to write to the transport, in order (one whole `NAME␠args\n` line each).
    Transmit(Vec<u8>),
    /// A valid inbound command for the application (`ReplicationCommandHandler.on_<NAME>`):
    /// every command except `SERVER`, `NAME`, `PING` and `ERROR`, which only the protocol
    /// handles (the handler has no `on_` method for them).
    Command(Command),
    Event(Event),
    /// `transport.loseConnection()`: write everything already transmitted, then close. Call
    /// [`Connection::handle_closed`] when the transport reports the connection gone.
    Close {
        reason: CloseReason,
    },
    /// Drop the transport now, discarding unwritten bytes, then call
    /// [`Connection::handle_closed`] (a no-op if the model already ran it).
    Abort {
        reason: AbortReason,
    },
}

/// Why [`Connection::send`] raised, as Synapse's `send_command` does to its caller.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionSendError {
    /// The command cannot be written: newline inside, too long, not encodable
    /// (protocol.py:346-356). Nothing was sent.
    #[error(transparent)]
    Encode(#[from] SendError),
    /// An unbuffered write before `connectionMade`, when `self.transport` is still `None`: only
    /// reachable when more than [`PENDING_COMMANDS_MAX`] commands are queued before connecting
    /// (protocol.py:372). The queue is kept, as the exception skips `close()`.
    #[error("AttributeError: 'NoneType' object has no attribute 'writeSequence'")]
    NotConnected,
}

/// Counts per command name, indexed like [`CommandName::ALL`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandCounts([u64; CommandName::ALL.len()]);

impl CommandCounts {
    fn index(name: CommandName) -> usize {
        CommandName::ALL
            .iter()
            .position(|&n| n == name)
            .expect("ALL lists every name")
    }

    fn bump(&mut self, name: CommandName) {
        self.0[Self::index(name)] += 1;
    }

    pub fn get(&self, name: CommandName) -> u64 {
        self.0[Self::index(name)]
    }

    /// `(name, count)` for every name counted at least once, in [`CommandName::ALL`] order.
    pub fn nonzero(&self) -> impl Iterator<Item = (CommandName, u64)> + '_ {
        CommandName::ALL
            .iter()
            .zip(self.0.iter())
            .filter(|(_, count)| **count > 0)
            .map(|(&name, &count)| (name, count))
    }
}

/// What the transport under the protocol is doing (Twisted's `tcp.Connection` flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    /// Before `makeConnection`: `self.transport is None`.
    None,
    /// Reading and writing.
    Open,
    /// `loseConnection()` was called: `disconnecting`, no more reads, writes still flushed.
    Closing,
    /// `abortConnection()` was called or an exception dropped it: nothing read or written.
    Aborted,
    /// `connectionLost` has run.
    Lost,
}

/// Twisted's `LoopingCall` running `send_ping` every [`PING_INTERVAL_MS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PingLoop {
    started: SimInstant,
    next: SimInstant,
}

impl PingLoop {
    /// `LoopingCall._scheduleFrom`: the next multiple of the interval after `now`, counted
    /// from the start, so a late call skips the ticks it missed instead of bunching them.
    fn reschedule(&mut self, now: SimInstant) {
        let ticks = now.ms_since(self.started) / PING_INTERVAL_MS + 1;
        self.next = self.started + ticks * PING_INTERVAL_MS;
    }
}

/// One end of a direct-TCP replication connection.
///
/// Drive contract:
/// - [`Connection::new`] when the protocol object is built, then
///   [`Connection::handle_connected`] once the transport is up (`connectionMade`).
/// - [`Connection::handle_bytes`] with whatever the transport read, split anywhere.
/// - [`Connection::pause_producing`] / [`Connection::resume_producing`] when the transport's
///   write buffer fills / drains; [`Connection::send`] for every command the application sends.
/// - [`Connection::handle_timeout`] at (or after) [`Connection::poll_timeout`]; calling it
///   early is harmless.
/// - [`Connection::handle_closed`] when the transport is gone (`connectionLost`), whichever
///   side closed it; after it the connection is inert.
/// - After every call, drain [`Connection::poll_output`] until `None` and act on the outputs
///   in order: writes are only valid in that order, and a `Close` comes after the `ERROR`
///   line that explains it.
///
/// Everything is deterministic: the same calls give the same outputs. Once
/// [`Connection::state`] is [`ConnectionState::Closed`] no more bytes are transmitted and no
/// more commands are handed up; only an [`Output::Abort`] can still follow. (The one exception
/// is Synapse's own: more than [`PENDING_COMMANDS_MAX`] sends before `handle_connected` make
/// `connectionMade` close and then set ESTABLISHED again, protocol.py:187.) After
/// [`Connection::handle_closed`] nothing is output at all.
#[derive(Clone, Debug)]
pub struct Connection {
    role: Role,
    state: ConnectionState,
    transport: Transport,
    /// `self.name`: what the client called itself in `NAME`; "anon" until then.
    peer_name: PyStr,
    /// `LineOnlyReceiver._buffer`: bytes after the last `\n`.
    read_buffer: Vec<u8>,
    /// `self.pending_commands`.
    pending: Vec<Command>,
    last_received_command: SimInstant,
    last_sent_command: SimInstant,
    time_we_closed: Option<SimInstant>,
    received_ping: bool,
    ping_loop: Option<PingLoop>,
    reported_closed: bool,
    outputs: VecDeque<Output>,
    inbound: CommandCounts,
    outbound: CommandCounts,
}

impl Connection {
    /// `__init__` (protocol.py:142-167): `last_received_command` starts at creation time,
    /// `last_sent_command` at 0.
    pub fn new(role: Role, now: SimInstant) -> Self {
        Connection {
            role,
            state: ConnectionState::Connecting,
            transport: Transport::None,
            peer_name: PyStr::from("anon"),
            read_buffer: Vec::new(),
            pending: Vec::new(),
            last_received_command: now,
            last_sent_command: SimInstant::ZERO,
            time_we_closed: None,
            received_ping: false,
            ping_loop: None,
            reported_closed: false,
            outputs: VecDeque::new(),
            inbound: CommandCounts::default(),
            outbound: CommandCounts::default(),
        }
    }

    pub fn role(&self) -> &Role {
        &self.role
    }

    pub fn state(&self) -> ConnectionState {
        self.state
    }

    /// Synapse's `self.name`: the client's `NAME` on a server end, "anon" otherwise.
    pub fn peer_name(&self) -> &PyStr {
        &self.peer_name
    }

    /// Commands queued while connecting or paused (the `pending_commands` gauge).
    pub fn pending_commands(&self) -> usize {
        self.pending.len()
    }

    /// Valid inbound commands by name (`synapse_replication_tcp_protocol_inbound_commands`).
    pub fn inbound_commands(&self) -> &CommandCounts {
        &self.inbound
    }

    /// Commands past the buffering check by name, counted *before* encoding as Synapse does,
    /// so a command that failed to encode is counted
    /// (`synapse_replication_tcp_protocol_outbound_commands`, protocol.py:340-344).
    pub fn outbound_commands(&self) -> &CommandCounts {
        &self.outbound
    }

    /// Has the peer ever sent a PING (so that it may be timed out)?
    pub fn received_ping(&self) -> bool {
        self.received_ping
    }

    /// The next time [`Connection::handle_timeout`] must be called: the ping loop's next tick,
    /// from `connectionMade` until `connectionLost`.
    pub fn poll_timeout(&self) -> Option<SimInstant> {
        self.ping_loop.map(|l| l.next)
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// `connectionMade` (protocol.py:184-205, 489-491, 515-520). `new_connection` are the
    /// commands `ReplicationCommandHandler.new_connection` sends (a `USER_SYNC … start` per
    /// syncing user); Synapse sends them after the first PING and, on a client, before
    /// `REPLICATE`.
    ///
    /// Bytes: server `SERVER <name>`, `PING <now>`, then `new_connection`; client
    /// `NAME <name>`, `PING <now>`, `new_connection`, `REPLICATE `.
    pub fn handle_connected(&mut self, now: SimInstant, new_connection: Vec<Command>) {
        assert_eq!(
            self.transport,
            Transport::None,
            "handle_connected called twice or after handle_closed"
        );
        // `makeConnection` sets the transport before calling `connectionMade`.
        self.transport = Transport::Open;
        if let Err(error) = self.connection_made(now, new_connection) {
            self.exception_escaped(error.to_string());
        }
        self.check_invariants();
    }

    fn connection_made(
        &mut self,
        now: SimInstant,
        new_connection: Vec<Command>,
    ) -> Result<(), ConnectionSendError> {
        // The subclass greeting goes first, while still CONNECTING, so it is queued and goes
        // out with the flush below (protocol.py:490, 516).
        let greeting = match &self.role {
            Role::Server { server_name } => Command::simple(CommandName::Server, server_name),
            Role::Client { client_name, .. } => Command::simple(CommandName::Name, client_name),
        };
        self.send_command(now, greeting, true)?;
        self.state = ConnectionState::Established; // protocol.py:187
        self.send_pending_commands(now)?; // protocol.py:194
        let mut ping_loop = PingLoop {
            started: now,
            next: now,
        };
        ping_loop.reschedule(now); // `looping_call`: first call one interval from now.
        self.ping_loop = Some(ping_loop);
        // "Always send the initial PING so that the other side knows that they can time us
        // out" (protocol.py:201-203).
        self.send_command(now, ping(now), true)?;
        for command in new_connection {
            self.send_command(now, command, true)?; // handler.new_connection (protocol.py:205)
        }
        if matches!(self.role, Role::Client { .. }) {
            self.send_command(now, Command::Replicate, true)?; // replicate() (protocol.py:520)
        }
        Ok(())
    }

    /// `dataReceived` of Twisted's `LineOnlyReceiver` (delimiter `\n`, `MAX_LENGTH` =
    /// [`LINE_BYTES_MAX`]), then `lineReceived` for each complete line.
    pub fn handle_bytes(&mut self, now: SimInstant, bytes: &[u8]) {
        assert_ne!(
            self.transport,
            Transport::None,
            "handle_bytes before handle_connected"
        );
        // After `loseConnection` / `abortConnection` the transport stops reading.
        if self.transport != Transport::Open {
            return;
        }
        // `lines = (self._buffer + data).split(self.delimiter); self._buffer = lines.pop(-1)`:
        // the remainder is stored before any line is handled.
        let mut data = std::mem::take(&mut self.read_buffer);
        data.extend_from_slice(bytes);
        let last_newline = data.iter().rposition(|&b| b == b'\n');
        let complete = match last_newline {
            Some(end) => {
                self.read_buffer = data[end + 1..].to_vec();
                &data[..end]
            }
            None => {
                self.read_buffer = data;
                &[][..]
            }
        };
        if last_newline.is_some() {
            for line in complete.split(|&b| b == b'\n') {
                // "the transport may be told to lose the connection by a line within a larger
                // packet ... disregard all the lines in that packet following the one that told
                // it to close" (twisted/protocols/basic.py LineOnlyReceiver.dataReceived).
                if self.transport != Transport::Open {
                    return self.check_invariants();
                }
                if line.len() > LINE_BYTES_MAX {
                    self.line_length_exceeded(now);
                    return self.check_invariants();
                }
                if let Err(exception) = self.line_received(now, line) {
                    // The exception leaves `dataReceived`; the rest of the chunk is not read.
                    self.exception_escaped(exception);
                    return self.check_invariants();
                }
            }
        }
        // A partial line already longer than the limit is rejected without waiting for `\n`.
        if self.read_buffer.len() > LINE_BYTES_MAX {
            self.line_length_exceeded(now);
        }
        self.check_invariants();
    }

    /// `lineLengthExceeded` (protocol.py:469-471).
    fn line_length_exceeded(&mut self, now: SimInstant) {
        self.send_error(now, "Line length exceeded".into(), CloseReason::LineTooLong)
            .expect("a fixed ERROR line always encodes");
    }

    /// `_parse_and_dispatch_line` (protocol.py:240-267). `Err` is an exception escaping it.
    fn line_received(&mut self, now: SimInstant, line: &[u8]) -> Result<(), String> {
        let command = match wire::decode_line(line) {
            // `if line.strip() == b"": return` (protocol.py:241-243).
            Ok(None) => return Ok(()),
            Ok(Some(command)) => command,
            // `line.decode("utf-8")` is outside the try (protocol.py:245): a UnicodeDecodeError
            // escapes `lineReceived`, and Twisted drops the connection without an ERROR.
            Err(error @ DecodeError::NotUtf8 { .. }) => return Err(error.to_string()),
            Err(DecodeError::LineTooLong { .. }) => {
                unreachable!("dataReceived rejects long lines before lineReceived")
            }
            Err(error) => {
                // protocol.py:249-252: `send_error("failed to parse line: %r (%r):" % (e,
                // linestr))`. The text then goes through `error_string % ()` in `send_error`,
                // which raises if it contains a `%` other than `%%`.
                let linestr = std::str::from_utf8(line).expect("the name was read, so UTF-8");
                let text = format!(
                    "failed to parse line: {} ({}):",
                    exception_repr(&error),
                    PyStr::from(linestr).python_repr()
                );
                let text = python_percent_no_args(&text)?;
                return self
                    .send_error(now, text, CloseReason::ParseError)
                    .map_err(|e| e.to_string());
            }
        };
        let name = command.name();
        if !name.valid_from(self.role.inbound_direction()) {
            // protocol.py:254-257.
            return self
                .send_error(
                    now,
                    format!("invalid command: {}", name.as_str()),
                    CloseReason::InvalidCommand(name),
                )
                .map_err(|e| e.to_string());
        }
        self.last_received_command = now; // protocol.py:259
        self.inbound.bump(name); // protocol.py:261-265
        self.handle_command(now, command);
        Ok(())
    }

    /// `handle_command` (protocol.py:269-308): the protocol's own `on_<NAME>` first, then the
    /// handler's; exactly one of the two exists for each command valid on a TCP connection.
    fn handle_command(&mut self, now: SimInstant, command: Command) {
        let data = match &command {
            Command::Simple { data, .. } => Some(data.clone()),
            _ => None,
        };
        match (command.name(), data) {
            // on_PING (protocol.py:382-383).
            (CommandName::Ping, _) => self.received_ping = true,
            // on_ERROR (protocol.py:385-386).
            (CommandName::Error, Some(text)) => self
                .outputs
                .push_back(Output::Event(Event::RemoteError { text })),
            // Server's on_NAME (protocol.py:493-495).
            (CommandName::Name, Some(name)) => self.peer_name = name,
            // Client's on_SERVER (protocol.py:522-525).
            (CommandName::Server, Some(remote)) => {
                let expected = match &self.role {
                    Role::Client { server_name, .. } => server_name,
                    Role::Server { .. } => unreachable!("SERVER is not valid inbound"),
                };
                if !remote.eq_str(expected) {
                    self.send_error(now, "Wrong remote".into(), CloseReason::WrongRemote)
                        .expect("a fixed ERROR line always encodes");
                }
            }
            _ => self.outputs.push_back(Output::Command(command)),
        }
    }

    /// `send_ping`, run by the ping loop (protocol.py:207-233). Call at [`Self::poll_timeout`].
    pub fn handle_timeout(&mut self, now: SimInstant) {
        let Some(ping_loop) = self.ping_loop.as_mut() else {
            return;
        };
        if now < ping_loop.next {
            return;
        }
        ping_loop.reschedule(now);
        self.send_ping(now);
        self.check_invariants();
    }

    fn send_ping(&mut self, now: SimInstant) {
        // `if self.time_we_closed:` is Python truthiness, so a close at time 0 counts as no
        // close (protocol.py:213). Kept as is; real clocks never read 0.
        match self.time_we_closed {
            Some(closed) if closed.as_ms() != 0 => {
                if now.ms_since(closed) > PING_TIMEOUT_MS {
                    // "Failed to close connection gracefully, aborting" (protocol.py:214-219).
                    // `abortConnection` is a no-op on a transport already aborting or gone.
                    if matches!(self.transport, Transport::Open | Transport::Closing) {
                        self.transport = Transport::Aborted;
                        self.outputs.push_back(Output::Abort {
                            reason: AbortReason::CloseTimedOut,
                        });
                    }
                }
            }
            _ => {
                if now.ms_since(self.last_sent_command) >= PING_INTERVAL_MS {
                    self.send_command(now, ping(now), true)
                        .expect("the ping loop runs only with a transport");
                }
                // No timeout against a peer that never pinged (protocol.py:224-226).
                if self.received_ping && now.ms_since(self.last_received_command) > PING_TIMEOUT_MS
                {
                    self.send_error(now, "ping timeout".into(), CloseReason::PingTimeout)
                        .expect("the ping loop runs only with a transport");
                }
            }
        }
    }

    /// `send_command(cmd)` with `do_buffer=True` (protocol.py:322-360): written at once when
    /// established, queued while connecting or paused, dropped once closed. The direction is
    /// not checked, as in Synapse (`VALID_OUTBOUND_COMMANDS` is never consulted).
    pub fn send(&mut self, now: SimInstant, command: Command) -> Result<(), ConnectionSendError> {
        let result = self.send_command(now, command, true);
        self.check_invariants();
        result
    }

    /// `pauseProducing` (protocol.py:388-397): the transport's buffers are full.
    pub fn pause_producing(&mut self) {
        assert_ne!(
            self.transport,
            Transport::None,
            "the producer is registered in connectionMade"
        );
        // `on_connection_closed` unregisters the producer, so a closed connection is not paused.
        if self.state == ConnectionState::Closed {
            return;
        }
        self.state = ConnectionState::Paused;
    }

    /// `resumeProducing` (protocol.py:399-403): the transport drained; the queue is flushed in
    /// order. A command in it that fails to encode raises inside Twisted's write path, which
    /// drops the connection (the rest of the queue is lost with it).
    pub fn resume_producing(&mut self, now: SimInstant) {
        assert_ne!(
            self.transport,
            Transport::None,
            "the producer is registered in connectionMade"
        );
        if self.state == ConnectionState::Closed {
            return;
        }
        self.state = ConnectionState::Established;
        if let Err(error) = self.send_pending_commands(now) {
            self.exception_escaped(error.to_string());
        }
        self.check_invariants();
    }

    /// `connectionLost` (protocol.py:412-436): the transport is gone, whoever closed it. Stops
    /// the ping loop; idempotent.
    pub fn handle_closed(&mut self, _now: SimInstant) {
        if self.transport == Transport::Lost {
            return;
        }
        self.connection_lost();
        self.check_invariants();
    }

    fn connection_lost(&mut self) {
        self.transport = Transport::Lost;
        self.ping_loop = None;
        self.read_buffer.clear();
        self.on_connection_closed();
    }

    /// `on_connection_closed` (protocol.py:438-444).
    fn on_connection_closed(&mut self) {
        self.state = ConnectionState::Closed;
        self.pending.clear();
        if !self.reported_closed {
            self.reported_closed = true;
            self.outputs.push_back(Output::Event(Event::Closed));
        }
    }

    /// An exception left a callback of Twisted's: it is logged, the transport is dropped and
    /// `connectionLost` runs at once (`_doReadOrWrite` → `_disconnectSelectable`).
    fn exception_escaped(&mut self, exception: String) {
        if matches!(self.transport, Transport::Open | Transport::Closing) {
            self.outputs.push_back(Output::Abort {
                reason: AbortReason::Exception(exception),
            });
        }
        if self.transport != Transport::Lost {
            self.connection_lost();
        }
    }

    /// `close` (protocol.py:310-315): Synapse marks itself closed at once, without waiting for
    /// the transport.
    fn close(&mut self, now: SimInstant, reason: CloseReason) {
        self.time_we_closed = Some(now);
        assert_ne!(
            self.transport,
            Transport::None,
            "close() asserts self.transport is not None"
        );
        // `loseConnection` is a no-op unless connected and not already disconnecting.
        if self.transport == Transport::Open {
            self.transport = Transport::Closing;
            self.outputs.push_back(Output::Close { reason });
        }
        self.on_connection_closed();
    }

    /// `send_error` (protocol.py:317-320): `ErrorCommand(error_string % args)` then close;
    /// `text` is already formatted (see [`python_percent_no_args`]). The ERROR goes through the buffer like any command, so while paused it is queued and
    /// then discarded by `close()`: a paused connection closes without saying why.
    fn send_error(
        &mut self,
        now: SimInstant,
        text: String,
        reason: CloseReason,
    ) -> Result<(), ConnectionSendError> {
        self.send_command(now, Command::simple(CommandName::Error, &text), true)?;
        self.close(now, reason);
        Ok(())
    }

    /// `send_command` (protocol.py:322-360).
    fn send_command(
        &mut self,
        now: SimInstant,
        command: Command,
        buffer: bool,
    ) -> Result<(), ConnectionSendError> {
        if self.state == ConnectionState::Closed {
            return Ok(()); // "Not sending, connection closed" (protocol.py:332-334).
        }
        if buffer && self.state != ConnectionState::Established {
            return self.queue_command(now, command); // protocol.py:336-338
        }
        self.outbound.bump(command.name()); // before the encoding checks (protocol.py:340)
        let bytes = wire::encode_command(&command)?;
        if self.transport == Transport::None {
            return Err(ConnectionSendError::NotConnected);
        }
        // A transport that is closing still writes; one aborted or lost discards silently.
        if matches!(self.transport, Transport::Open | Transport::Closing) {
            self.outputs.push_back(Output::Transmit(bytes));
        }
        self.last_sent_command = now; // protocol.py:360
        Ok(())
    }

    /// `_queue_command` (protocol.py:362-373).
    fn queue_command(
        &mut self,
        now: SimInstant,
        command: Command,
    ) -> Result<(), ConnectionSendError> {
        self.pending.push(command);
        if self.pending.len() > PENDING_COMMANDS_MAX {
            // "Remote failed to keep up": the ERROR bypasses the queue.
            self.send_command(
                now,
                Command::simple(CommandName::Error, "Failed to keep up"),
                false,
            )?;
            self.close(now, CloseReason::FailedToKeepUp);
        }
        Ok(())
    }

    /// `_send_pending_commands` (protocol.py:375-380): the queue is taken whole first, so an
    /// exception part-way loses the rest.
    fn send_pending_commands(&mut self, now: SimInstant) -> Result<(), ConnectionSendError> {
        for command in std::mem::take(&mut self.pending) {
            self.send_command(now, command, true)?;
        }
        Ok(())
    }

    fn check_invariants(&self) {
        if self.transport == Transport::Lost {
            assert!(
                self.ping_loop.is_none(),
                "connectionLost stops the ping loop"
            );
            assert_eq!(self.state, ConnectionState::Closed);
        }
        if self.state == ConnectionState::Closed {
            assert!(
                self.pending.is_empty(),
                "on_connection_closed clears the queue"
            );
        }
        if self.state == ConnectionState::Established {
            assert!(
                self.pending.is_empty(),
                "an established connection does not queue"
            );
        }
        assert!(self.pending.len() <= PENDING_COMMANDS_MAX || self.transport == Transport::None);
        assert!(self.read_buffer.len() <= LINE_BYTES_MAX || self.transport != Transport::Open);
    }
}

fn ping(now: SimInstant) -> Command {
    Command::simple(CommandName::Ping, &now.as_ms().to_string())
}

/// `repr(e)` of the exception `parse_command_from_line` raised: `Class('message')`.
fn exception_repr(error: &DecodeError) -> String {
    match error {
        DecodeError::UnknownCommand { name } => format!("KeyError({})", name.python_repr()),
        DecodeError::Parse { class, message } => {
            format!("{class}({})", PyStr::from(message.as_str()).python_repr())
        }
        DecodeError::LineTooLong { .. } | DecodeError::NotUtf8 { .. } => {
            unreachable!("not raised by parse_command_from_line")
        }
    }
}

/// Python's `format % ()`, which `send_error` applies to every message: `%%` becomes `%`, and
/// any other `%` raises (the error, as Python prints it, is returned).
fn python_percent_no_args(format: &str) -> Result<String, String> {
    let mut out = String::with_capacity(format.len());
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('%') => {
                chars.next();
                out.push('%');
            }
            Some('(') => return Err("TypeError: format requires a mapping".into()),
            _ => {
                // Flags, width, precision and length are skipped; running out of text first
                // is an incomplete format, reaching a conversion (or `*`) needs an argument.
                let rest = chars.skip_while(|c| {
                    matches!(c, '-' | '+' | ' ' | '#' | '0'..='9' | '.' | 'h' | 'l' | 'L')
                });
                return Err(match rest.peekable().peek() {
                    None => "ValueError: incomplete format".into(),
                    Some(_) => "TypeError: not enough arguments for format string".into(),
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;

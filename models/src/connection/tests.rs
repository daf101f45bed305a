//! Unit tests of the connection state machine against behaviour read from Synapse 1.163.2's
//! protocol.py, with a server and a client end driven back to back in memory.

use super::*;

const HS: &str = "hs.example";

fn server_role(name: &str) -> Role {
    Role::Server {
        server_name: name.to_owned(),
    }
}

fn client_role(expected_server: &str) -> Role {
    Role::Client {
        client_name: "worker1".to_owned(),
        server_name: expected_server.to_owned(),
    }
}

fn t(ms: u64) -> SimInstant {
    SimInstant::from_ms(ms)
}

fn drain(conn: &mut Connection) -> Vec<Output> {
    std::iter::from_fn(|| conn.poll_output()).collect()
}

/// The bytes transmitted among `outputs`, as text.
fn wire_text(outputs: &[Output]) -> String {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Transmit(bytes) => Some(String::from_utf8(bytes.clone()).unwrap()),
            _ => None,
        })
        .collect()
}

/// A server connection already connected at `at`, its greeting drained.
fn connected_server(at: u64) -> Connection {
    let mut conn = Connection::new(server_role(HS), t(at));
    conn.handle_connected(t(at), Vec::new());
    drain(&mut conn);
    conn
}

/// A client connection already connected at `at`, its greeting drained.
fn connected_client(at: u64) -> Connection {
    let mut conn = Connection::new(client_role(HS), t(at));
    conn.handle_connected(t(at), Vec::new());
    drain(&mut conn);
    conn
}

fn position(n: i64) -> Command {
    Command::position("events", "master", n - 1, n)
}

/// One end of the in-memory link, with everything it has output so far.
struct Side {
    conn: Connection,
    sent: String,
    commands: Vec<Command>,
    events: Vec<Event>,
    closes: Vec<CloseReason>,
    aborts: Vec<AbortReason>,
}

impl Side {
    fn new(conn: Connection) -> Self {
        Side {
            conn,
            sent: String::new(),
            commands: Vec::new(),
            events: Vec::new(),
            closes: Vec::new(),
            aborts: Vec::new(),
        }
    }
}

/// A server and a client wired back to back. Bytes are delivered as soon as they are
/// transmitted (unless that direction is cut); a close or abort by either end ends the
/// transport, so both ends get `handle_closed` once the bytes before it are delivered.
struct Pair {
    now: SimInstant,
    server: Side,
    client: Side,
    /// Drop everything the client transmits (a peer gone silent without closing).
    cut_client_to_server: bool,
    /// Do not tell the ends when the transport ends (a close that never completes).
    hold_transport: bool,
    transport_gone: bool,
}

impl Pair {
    fn connect(at: u64, server_name: &str) -> Pair {
        let mut pair = Pair {
            now: t(at),
            server: Side::new(Connection::new(server_role(server_name), t(at))),
            client: Side::new(Connection::new(client_role(HS), t(at))),
            cut_client_to_server: false,
            hold_transport: false,
            transport_gone: false,
        };
        pair.server.conn.handle_connected(t(at), Vec::new());
        pair.client.conn.handle_connected(t(at), Vec::new());
        pair.pump();
        pair
    }

    /// Moves outputs between the ends until neither has any.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            for from_server in [true, false] {
                let (from, to) = if from_server {
                    (&mut self.server, &mut self.client)
                } else {
                    (&mut self.client, &mut self.server)
                };
                while let Some(output) = from.conn.poll_output() {
                    moved = true;
                    match output {
                        Output::Transmit(bytes) => {
                            from.sent.push_str(std::str::from_utf8(&bytes).unwrap());
                            let cut = !from_server && self.cut_client_to_server;
                            if !cut && !self.transport_gone {
                                to.conn.handle_bytes(self.now, &bytes);
                            }
                        }
                        Output::Command(command) => from.commands.push(command),
                        Output::Event(event) => from.events.push(event),
                        Output::Close { reason } => {
                            from.closes.push(reason);
                            if !self.hold_transport {
                                self.transport_gone = true;
                                from.conn.handle_closed(self.now);
                                to.conn.handle_closed(self.now);
                            }
                        }
                        Output::Abort { reason } => {
                            from.aborts.push(reason);
                            self.transport_gone = true;
                            from.conn.handle_closed(self.now);
                            to.conn.handle_closed(self.now);
                        }
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Runs both ping loops up to `until`, in time order, pumping after each tick.
    fn advance_to(&mut self, until: u64) {
        loop {
            let next = [
                self.server.conn.poll_timeout(),
                self.client.conn.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .filter(|&d| d <= t(until))
            .min();
            let Some(deadline) = next else { break };
            self.now = deadline;
            self.server.conn.handle_timeout(deadline);
            self.client.conn.handle_timeout(deadline);
            self.pump();
        }
        self.now = t(until);
    }

    fn server_send(&mut self, command: Command) {
        self.server.conn.send(self.now, command).unwrap();
        self.pump();
    }

    fn client_send(&mut self, command: Command) {
        self.client.conn.send(self.now, command).unwrap();
        self.pump();
    }
}

#[test]
fn handshake_bytes_are_exactly_synapses() {
    let mut server = Connection::new(server_role(HS), t(1_000));
    server.handle_connected(t(1_234), Vec::new());
    assert_eq!(
        drain(&mut server),
        vec![
            Output::Transmit(b"SERVER hs.example\n".to_vec()),
            Output::Transmit(b"PING 1234\n".to_vec()),
        ]
    );

    let mut client = Connection::new(client_role(HS), t(1_000));
    client.handle_connected(t(1_234), Vec::new());
    assert_eq!(
        drain(&mut client),
        vec![
            Output::Transmit(b"NAME worker1\n".to_vec()),
            Output::Transmit(b"PING 1234\n".to_vec()),
            Output::Transmit(b"REPLICATE \n".to_vec()),
        ]
    );
    assert_eq!(client.state(), ConnectionState::Established);
    assert_eq!(client.poll_timeout(), Some(t(6_234)));
}

#[test]
fn new_connection_commands_go_between_ping_and_replicate() {
    let mut client = Connection::new(client_role(HS), t(0));
    client.handle_connected(
        t(7),
        vec![Command::simple(
            CommandName::RemoteServerUp,
            "other.example",
        )],
    );
    assert_eq!(
        wire_text(&drain(&mut client)),
        "NAME worker1\nPING 7\nREMOTE_SERVER_UP other.example\nREPLICATE \n"
    );
}

#[test]
fn handshake_between_two_ends() {
    let pair = Pair::connect(1_000, HS);
    assert_eq!(pair.server.sent, "SERVER hs.example\nPING 1000\n");
    assert_eq!(pair.client.sent, "NAME worker1\nPING 1000\nREPLICATE \n");
    // Only REPLICATE reaches the server's application; NAME and PING are the protocol's.
    assert_eq!(pair.server.commands, vec![Command::Replicate]);
    assert!(pair.client.commands.is_empty());
    assert!(pair.server.conn.peer_name().eq_str("worker1"));
    assert!(pair.client.conn.peer_name().eq_str("anon"));
    assert!(pair.server.conn.received_ping() && pair.client.conn.received_ping());
    let inbound = pair.server.conn.inbound_commands();
    assert_eq!(inbound.get(CommandName::Name), 1);
    assert_eq!(inbound.get(CommandName::Replicate), 1);
    assert_eq!(inbound.get(CommandName::Ping), 1);
    assert_eq!(
        pair.client
            .conn
            .outbound_commands()
            .nonzero()
            .collect::<Vec<_>>(),
        vec![
            (CommandName::Ping, 1),
            (CommandName::Name, 1),
            (CommandName::Replicate, 1)
        ]
    );
}

#[test]
fn commands_flow_both_ways_after_the_handshake() {
    let mut pair = Pair::connect(1_000, HS);
    pair.server_send(position(5));
    pair.client_send(Command::simple(CommandName::RemoteServerUp, "x.example"));
    assert_eq!(pair.client.commands, vec![position(5)]);
    assert_eq!(
        pair.server.commands.last(),
        Some(&Command::simple(CommandName::RemoteServerUp, "x.example"))
    );
}

#[test]
fn wrong_remote_closes_with_error() {
    let mut pair = Pair::connect(1_000, "evil.example");
    assert_eq!(
        pair.client.sent,
        "NAME worker1\nPING 1000\nREPLICATE \nERROR Wrong remote\n"
    );
    assert_eq!(pair.client.closes, vec![CloseReason::WrongRemote]);
    assert_eq!(pair.client.events, vec![Event::Closed]);
    // The server got the ERROR before the transport ended, and passes it on as an event.
    assert_eq!(
        pair.server.events,
        vec![
            Event::RemoteError {
                text: PyStr::from("Wrong remote")
            },
            Event::Closed
        ]
    );
    assert_eq!(pair.client.conn.state(), ConnectionState::Closed);
    assert_eq!(pair.client.conn.poll_timeout(), None);
    // Sends after close are dropped silently.
    pair.client_send(position(1));
    assert!(drain(&mut pair.client.conn).is_empty());
}

#[test]
fn command_invalid_for_the_direction_closes_with_exact_error() {
    let mut server = connected_server(1_000);
    server.handle_bytes(t(2_000), b"RDATA events master 1 []\nPING 5\n");
    assert_eq!(
        drain(&mut server),
        vec![
            Output::Transmit(b"ERROR invalid command: RDATA\n".to_vec()),
            Output::Close {
                reason: CloseReason::InvalidCommand(CommandName::Rdata)
            },
            Output::Event(Event::Closed),
        ]
    );
    // The PING after it in the same chunk was disregarded.
    assert!(!server.received_ping());
    assert_eq!(server.inbound_commands().get(CommandName::Rdata), 0);

    let mut client = connected_client(1_000);
    client.handle_bytes(t(2_000), b"NAME someone\n");
    assert_eq!(
        wire_text(&drain(&mut client)),
        "ERROR invalid command: NAME\n"
    );
    assert_eq!(client.state(), ConnectionState::Closed);
}

#[test]
fn redis_only_commands_are_invalid_on_tcp() {
    let mut server = connected_server(0);
    server.handle_bytes(t(1), b"NEW_ACTIVE_TASK abc\n");
    assert_eq!(
        wire_text(&drain(&mut server)),
        "ERROR invalid command: NEW_ACTIVE_TASK\n"
    );
}

#[test]
fn too_long_line_closes() {
    // Exactly LINE_BYTES_MAX bytes is accepted (`len(line) > MAX_LENGTH`).
    let mut server = connected_server(0);
    let mut line = b"PING ".to_vec();
    line.resize(LINE_BYTES_MAX, b'1');
    line.push(b'\n');
    server.handle_bytes(t(1), &line);
    assert!(drain(&mut server).is_empty());
    assert!(server.received_ping());

    // One more byte is not, whether it arrives with its `\n` ...
    let mut server = connected_server(0);
    let mut long = b"PING ".to_vec();
    long.resize(LINE_BYTES_MAX + 1, b'1');
    let mut with_newline = long.clone();
    with_newline.extend_from_slice(b"\nPING 2\n");
    server.handle_bytes(t(1), &with_newline);
    assert_eq!(
        drain(&mut server),
        vec![
            Output::Transmit(b"ERROR Line length exceeded\n".to_vec()),
            Output::Close {
                reason: CloseReason::LineTooLong
            },
            Output::Event(Event::Closed),
        ]
    );
    assert!(!server.received_ping());

    // ... or as a partial line that is already too long, after the complete lines before it.
    let mut server = connected_server(0);
    let mut chunk = b"PING 1\n".to_vec();
    chunk.extend_from_slice(&long[..LINE_BYTES_MAX]);
    server.handle_bytes(t(1), &chunk);
    assert!(drain(&mut server).is_empty());
    server.handle_bytes(t(2), b"1");
    assert_eq!(
        wire_text(&drain(&mut server)),
        "ERROR Line length exceeded\n"
    );
    assert!(server.received_ping());
}

#[test]
fn parse_error_sends_python_repr_and_closes() {
    let mut server = connected_server(0);
    server.handle_bytes(t(1), b"FOO bar\n");
    assert_eq!(
        drain(&mut server),
        vec![
            Output::Transmit(
                b"ERROR failed to parse line: KeyError('FOO') ('FOO bar'):\n".to_vec()
            ),
            Output::Close {
                reason: CloseReason::ParseError
            },
            Output::Event(Event::Closed),
        ]
    );

    let mut client = connected_client(0);
    client.handle_bytes(t(1), b"POSITION events w1 7\n");
    assert_eq!(
        wire_text(&drain(&mut client)),
        "ERROR failed to parse line: ValueError('not enough values to unpack (expected 4, got 3)') \
         ('POSITION events w1 7'):\n"
    );
}

#[test]
fn parse_error_text_with_percent_raises_and_drops_the_connection() {
    // `send_error(text)` does `text % ()`: a `%` in the bad line makes it raise TypeError,
    // which escapes dataReceived, so Twisted drops the transport without any ERROR.
    let mut server = connected_server(0);
    server.handle_bytes(t(1), b"FOO 100%\nPING 1\n");
    assert_eq!(
        drain(&mut server),
        vec![
            Output::Abort {
                reason: AbortReason::Exception(
                    "TypeError: not enough arguments for format string".into()
                )
            },
            Output::Event(Event::Closed),
        ]
    );
    assert!(!server.received_ping());
    assert_eq!(server.poll_timeout(), None);
    // `%%` is merely halved.
    let mut server = connected_server(0);
    server.handle_bytes(t(1), b"FOO 100%%\n");
    assert_eq!(
        wire_text(&drain(&mut server)),
        "ERROR failed to parse line: KeyError('FOO') ('FOO 100%'):\n"
    );
}

#[test]
fn invalid_utf8_drops_the_connection_without_error() {
    let mut server = connected_server(0);
    server.handle_bytes(t(1), b"PING \xff\nPING 2\n");
    let outputs = drain(&mut server);
    assert_eq!(outputs.len(), 2);
    match &outputs[0] {
        Output::Abort {
            reason: AbortReason::Exception(text),
        } => assert!(text.starts_with("UnicodeDecodeError: "), "{text}"),
        other => panic!("expected an abort, got {other:?}"),
    }
    assert_eq!(outputs[1], Output::Event(Event::Closed));
    assert_eq!(server.state(), ConnectionState::Closed);
    assert!(!server.received_ping());
    // The driver's handle_closed afterwards is a no-op; nothing more is read.
    server.handle_closed(t(2));
    server.handle_bytes(t(2), b"PING 3\n");
    assert!(drain(&mut server).is_empty());
}

#[test]
fn blank_lines_are_ignored() {
    let mut server = connected_server(0);
    server.handle_bytes(t(1), b"\n \r\n\t\x0b\x0c\nPING 1\n\n");
    assert!(drain(&mut server).is_empty());
    assert_eq!(server.inbound_commands().get(CommandName::Ping), 1);
    assert_eq!(server.state(), ConnectionState::Established);
}

#[test]
fn remote_error_is_an_event_not_a_close() {
    let mut server = connected_server(0);
    server.handle_bytes(t(1), b"ERROR something broke\n");
    assert_eq!(
        drain(&mut server),
        vec![Output::Event(Event::RemoteError {
            text: PyStr::from("something broke")
        })]
    );
    assert_eq!(server.state(), ConnectionState::Established);
}

#[test]
fn bytes_split_anywhere_reassemble() {
    let stream: &[u8] =
        b"NAME w9\nPING 3\nREPLICATE \nFEDERATION_ACK master 12\nREMOTE_SERVER_UP a.b\n";
    let run = |chunks: &[&[u8]]| {
        let mut server = connected_server(0);
        let mut outputs = Vec::new();
        for chunk in chunks {
            server.handle_bytes(t(1), chunk);
            outputs.extend(drain(&mut server));
        }
        (outputs, server.peer_name().clone(), server.received_ping())
    };
    let whole = run(&[stream]);
    assert_eq!(whole.0.len(), 3, "{:?}", whole.0);
    assert!(whole.1.eq_str("w9") && whole.2);
    for split in 0..=stream.len() {
        assert_eq!(
            run(&[&stream[..split], &stream[split..]]),
            whole,
            "split at {split}"
        );
    }
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(run(&bytes), whole);
    let threes: Vec<&[u8]> = stream.chunks(3).collect();
    assert_eq!(run(&threes), whole);
}

#[test]
fn pings_every_five_seconds_when_idle() {
    let mut pair = Pair::connect(1_000, HS);
    pair.advance_to(16_000);
    assert_eq!(
        pair.server.sent,
        "SERVER hs.example\nPING 1000\nPING 6000\nPING 11000\nPING 16000\n"
    );
    assert_eq!(
        pair.client.sent,
        "NAME worker1\nPING 1000\nREPLICATE \nPING 6000\nPING 11000\nPING 16000\n"
    );
    assert_eq!(pair.server.conn.state(), ConnectionState::Established);
    assert_eq!(pair.server.conn.poll_timeout(), Some(t(21_000)));
}

#[test]
fn a_recent_send_postpones_the_ping() {
    let mut pair = Pair::connect(1_000, HS);
    pair.advance_to(5_500);
    pair.server_send(position(2));
    pair.advance_to(11_000);
    // At 6000 only 500 ms had passed since POSITION, so no PING until 11000.
    assert_eq!(
        pair.server.sent,
        "SERVER hs.example\nPING 1000\nPOSITION events master 1 2\nPING 11000\n"
    );
}

#[test]
fn late_timeout_skips_missed_ticks() {
    let mut server = connected_server(1_000);
    server.handle_timeout(t(3_000)); // early: nothing
    assert!(drain(&mut server).is_empty());
    server.handle_timeout(t(13_500));
    assert_eq!(wire_text(&drain(&mut server)), "PING 13500\n");
    assert_eq!(server.poll_timeout(), Some(t(16_000)));
}

#[test]
fn ping_timeout_after_silence_from_a_peer_that_pinged() {
    let mut pair = Pair::connect(1_000, HS);
    pair.cut_client_to_server = true;
    // Last valid command at 1000: 25000 ms later is not yet "more than" the timeout.
    pair.advance_to(26_000);
    assert!(pair.server.closes.is_empty());
    pair.advance_to(31_000);
    assert_eq!(pair.server.closes, vec![CloseReason::PingTimeout]);
    assert!(pair
        .server
        .sent
        .ends_with("PING 26000\nPING 31000\nERROR ping timeout\n"));
    assert_eq!(pair.server.conn.state(), ConnectionState::Closed);
    assert_eq!(pair.client.conn.state(), ConnectionState::Closed);
}

#[test]
fn any_valid_command_keeps_the_connection_alive() {
    let mut pair = Pair::connect(1_000, HS);
    pair.advance_to(100_000);
    assert!(pair.server.closes.is_empty() && pair.client.closes.is_empty());
}

#[test]
fn no_timeout_against_a_peer_that_never_pinged() {
    let mut server = connected_server(0);
    server.handle_bytes(t(1), b"NAME quiet\nREPLICATE \n");
    drain(&mut server);
    let mut now = 0;
    while now < 200_000 {
        now = server.poll_timeout().unwrap().as_ms();
        server.handle_timeout(t(now));
        let outputs = drain(&mut server);
        assert_eq!(wire_text(&outputs), format!("PING {now}\n"));
        assert_eq!(outputs.len(), 1);
    }
    assert_eq!(server.state(), ConnectionState::Established);
}

#[test]
fn a_close_that_never_completes_is_aborted_after_the_timeout() {
    let mut pair = Pair::connect(1_000, HS);
    pair.cut_client_to_server = true;
    pair.hold_transport = true;
    pair.advance_to(31_000);
    assert_eq!(pair.server.closes, vec![CloseReason::PingTimeout]);
    // Closed at 31000: aborted at the first tick more than 25000 ms later.
    pair.advance_to(56_000);
    assert!(pair.server.aborts.is_empty());
    let sent_before = pair.server.sent.clone();
    pair.advance_to(61_000);
    assert_eq!(pair.server.aborts, vec![AbortReason::CloseTimedOut]);
    assert_eq!(pair.server.sent, sent_before, "nothing sent after close");
    assert_eq!(pair.server.conn.poll_timeout(), None);
}

#[test]
fn queues_while_paused_and_flushes_in_order_on_resume() {
    let mut server = connected_server(0);
    server.pause_producing();
    assert_eq!(server.state(), ConnectionState::Paused);
    for n in 1..=3 {
        server.send(t(10), position(n)).unwrap();
    }
    assert!(drain(&mut server).is_empty());
    assert_eq!(server.pending_commands(), 3);
    server.resume_producing(t(20));
    assert_eq!(
        wire_text(&drain(&mut server)),
        "POSITION events master 0 1\nPOSITION events master 1 2\nPOSITION events master 2 3\n"
    );
    assert_eq!(server.pending_commands(), 0);
    assert_eq!(server.state(), ConnectionState::Established);
}

#[test]
fn ping_loop_queues_pings_while_paused() {
    let mut server = connected_server(0);
    server.pause_producing();
    server.handle_timeout(t(5_000));
    server.handle_timeout(t(10_000));
    assert!(drain(&mut server).is_empty());
    // `last_sent_command` only moves on a real write, so every tick queued a PING.
    assert_eq!(server.pending_commands(), 2);
    server.resume_producing(t(10_001));
    assert_eq!(wire_text(&drain(&mut server)), "PING 5000\nPING 10000\n");
}

#[test]
fn ping_timeout_while_paused_closes_without_the_error_line() {
    let mut server = connected_server(0);
    server.handle_bytes(t(0), b"PING 0\n");
    server.pause_producing();
    server.handle_timeout(t(30_000));
    // The ERROR was queued, then `close()` discarded the queue.
    assert_eq!(
        drain(&mut server),
        vec![
            Output::Close {
                reason: CloseReason::PingTimeout
            },
            Output::Event(Event::Closed),
        ]
    );
    assert_eq!(server.pending_commands(), 0);
}

#[test]
fn failed_to_keep_up_at_one_more_than_the_queue_limit() {
    let mut server = connected_server(0);
    server.pause_producing();
    for _ in 0..PENDING_COMMANDS_MAX {
        server.send(t(1), position(1)).unwrap();
    }
    assert!(drain(&mut server).is_empty());
    assert_eq!(server.pending_commands(), PENDING_COMMANDS_MAX);
    server.send(t(1), position(1)).unwrap();
    assert_eq!(
        drain(&mut server),
        vec![
            Output::Transmit(b"ERROR Failed to keep up\n".to_vec()),
            Output::Close {
                reason: CloseReason::FailedToKeepUp
            },
            Output::Event(Event::Closed),
        ]
    );
    assert_eq!(server.pending_commands(), 0);
    assert_eq!(server.state(), ConnectionState::Closed);
    // The transport no longer calls the producer; sends are dropped.
    server.resume_producing(t(2));
    server.send(t(2), position(2)).unwrap();
    assert!(drain(&mut server).is_empty());
    assert_eq!(server.pending_commands(), 0);
}

#[test]
fn commands_sent_before_connecting_go_out_before_the_greeting() {
    // connectionMade queues SERVER behind whatever is already pending (protocol.py:490).
    let mut server = Connection::new(server_role(HS), t(0));
    server.send(t(0), position(1)).unwrap();
    assert_eq!(server.state(), ConnectionState::Connecting);
    assert_eq!(server.pending_commands(), 1);
    server.handle_connected(t(5), Vec::new());
    assert_eq!(
        wire_text(&drain(&mut server)),
        "POSITION events master 0 1\nSERVER hs.example\nPING 5\n"
    );
}

#[test]
fn unencodable_command_is_an_error_to_the_caller() {
    let mut server = connected_server(0);
    let error = server
        .send(t(1), Command::simple(CommandName::RemoteServerUp, "a\nb"))
        .unwrap_err();
    assert!(matches!(
        error,
        ConnectionSendError::Encode(SendError::Newline(_))
    ));
    let long = "x".repeat(LINE_BYTES_MAX);
    let error = server
        .send(t(1), Command::simple(CommandName::RemoteServerUp, &long))
        .unwrap_err();
    assert_eq!(
        error,
        ConnectionSendError::Encode(SendError::TooLong {
            name: "REMOTE_SERVER_UP",
            bytes: LINE_BYTES_MAX + 17
        })
    );
    assert!(drain(&mut server).is_empty());
    assert_eq!(server.state(), ConnectionState::Established);
    // Synapse counts the command before it fails to encode.
    assert_eq!(
        server.outbound_commands().get(CommandName::RemoteServerUp),
        2
    );
}

#[test]
fn unencodable_command_queued_while_paused_drops_the_connection_on_resume() {
    let mut server = connected_server(0);
    server.pause_producing();
    server.send(t(1), position(1)).unwrap();
    server
        .send(t(1), Command::simple(CommandName::RemoteServerUp, "a\nb"))
        .unwrap();
    server.send(t(1), position(2)).unwrap();
    server.resume_producing(t(2));
    let outputs = drain(&mut server);
    assert_eq!(
        outputs[0],
        Output::Transmit(b"POSITION events master 0 1\n".to_vec())
    );
    assert!(matches!(
        &outputs[1],
        Output::Abort { reason: AbortReason::Exception(text) } if text.starts_with("Exception: Unexpected newline")
    ));
    assert_eq!(outputs[2], Output::Event(Event::Closed));
    assert_eq!(outputs.len(), 3);
}

#[test]
fn peer_close_ends_everything() {
    let mut pair = Pair::connect(1_000, HS);
    pair.client.conn.handle_closed(t(2_000));
    pair.server.conn.handle_closed(t(2_000));
    pair.pump();
    assert_eq!(pair.server.events, vec![Event::Closed]);
    assert_eq!(pair.client.events, vec![Event::Closed]);
    assert_eq!(pair.server.conn.poll_timeout(), None);
    pair.server.conn.handle_timeout(t(100_000));
    pair.server.conn.send(t(100_000), position(1)).unwrap();
    assert!(drain(&mut pair.server.conn).is_empty());
}

#[test]
fn percent_formatting_matches_python() {
    assert_eq!(python_percent_no_args("a%%b").unwrap(), "a%b");
    assert_eq!(python_percent_no_args("plain").unwrap(), "plain");
    for (text, error) in [
        ("a%", "ValueError: incomplete format"),
        ("a%5", "ValueError: incomplete format"),
        ("a% ", "ValueError: incomplete format"),
        ("a%%%", "ValueError: incomplete format"),
        ("a%s", "TypeError: not enough arguments for format string"),
        ("a % b", "TypeError: not enough arguments for format string"),
        ("a%5%", "TypeError: not enough arguments for format string"),
        ("a%*d", "TypeError: not enough arguments for format string"),
        ("a%(x)s", "TypeError: format requires a mapping"),
    ] {
        assert_eq!(python_percent_no_args(text).unwrap_err(), error, "{text:?}");
    }
}

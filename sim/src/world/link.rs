//! Drives one [`Connection`] (the sans-IO protocol state machine) over a simulated TCP stream:
//! bytes in, timers, outbound commands, and the transport's buffer.
//!
//! The transport copies what Twisted does for Synapse: writes go into a buffer drained by a
//! separate task; above [`TRANSPORT_BUFFER_BYTES`] unsent the connection is paused (the model
//! then queues commands itself, up to its "failed to keep up" limit), and it is resumed once the
//! buffer is empty. A reader made slow by a fault reads its socket a little at a time, which
//! is what fills its peer's buffers.

use std::cell::Cell;
use std::rc::Rc;

use crate::engine::tcp::TcpStream;
use streamsim_models::connection::{
    AbortReason, CloseReason, Connection, ConnectionState, Output, Role,
};
use streamsim_models::limits::TRANSPORT_BUFFER_BYTES;
use streamsim_models::time::SimInstant;
use streamsim_models::wire::Command;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};

use crate::net::{now, sleep_until};

/// What the host does with the connection's inbound traffic.
pub trait LinkHandler {
    /// A valid inbound command for the application.
    fn on_command(&self, command: Command);
    /// A line went out on the wire (for the history and the message count).
    fn on_transmit(&self, line: &[u8]);
    /// Until when (if at all) this process stops reading its sockets.
    fn slow_until(&self) -> Option<SimInstant>;
    /// Whether a one-way partition cuts this process off from its peer in the outbound
    /// direction right now.
    fn outbound_cut(&self) -> bool;
    /// The connection ended, and why.
    fn on_closed(&self, reason: &str);
    /// The number of commands the connection holds while its transport is paused changed.
    fn on_pending(&self, _pending: usize) {}
}

fn close_reason(reason: &CloseReason) -> String {
    match reason {
        CloseReason::LineTooLong => "line too long".into(),
        CloseReason::ParseError => "parse error".into(),
        CloseReason::InvalidCommand(name) => format!("invalid command {}", name.as_str()),
        CloseReason::WrongRemote => "wrong remote".into(),
        CloseReason::PingTimeout => "ping timeout".into(),
        CloseReason::FailedToKeepUp => "failed to keep up".into(),
    }
}

/// How often a write blocked by a one-way partition looks again, in milliseconds.
const CUT_POLL_MS: u64 = 10;

/// What a slow reader reads at a time, in bytes, and how long it pauses after each read, in
/// milliseconds: about 5 KB/s, a tenth of what a busy writer sends.
const SLOW_READ_BYTES: usize = 512;
const SLOW_READ_PAUSE_MS: u64 = 100;

enum WriteOp {
    Bytes(Vec<u8>),
    /// `loseConnection`: flush what is buffered, then close.
    Close,
}

/// Runs the connection until the transport is gone. `outbound` carries the host's commands
/// to send; the future returns when the connection closed (either side, or a time-out).
pub async fn drive(
    stream: TcpStream,
    role: Role,
    new_connection: Vec<Command>,
    mut outbound: mpsc::UnboundedReceiver<Command>,
    handler: Rc<dyn LinkHandler>,
) {
    let (mut read_half, mut write_half) = stream.into_split();
    let buffered = Rc::new(Cell::new(0usize));
    let drained = Rc::new(Notify::new());
    let (write_tx, mut write_rx) = mpsc::unbounded_channel::<WriteOp>();
    let writer_done = Rc::new(Notify::new());
    {
        let buffered = buffered.clone();
        let drained = drained.clone();
        let writer_done = writer_done.clone();
        let handler = handler.clone();
        crate::engine::spawn_local(async move {
            while let Some(op) = write_rx.recv().await {
                // A one-way partition as TCP lives it: nothing is lost, the bytes wait in the
                // send buffer (which fills, pausing the producer) until the path heals.
                while handler.outbound_cut() {
                    tokio::time::sleep(std::time::Duration::from_millis(CUT_POLL_MS)).await;
                }
                match op {
                    WriteOp::Bytes(bytes) => {
                        if write_half.write_all(&bytes).await.is_err() {
                            break;
                        }
                        buffered.set(buffered.get() - bytes.len());
                        if buffered.get() == 0 {
                            drained.notify_one();
                        }
                    }
                    WriteOp::Close => {
                        let _ = write_half.shutdown().await;
                        break;
                    }
                }
            }
            writer_done.notify_one();
        });
    }

    let mut connection = Connection::new(role, now());
    connection.handle_connected(now(), new_connection);
    let mut read_buffer = vec![0u8; 4096];
    let mut closing = false;
    let mut gone = false;
    let mut reason = String::from("closed by peer");
    // usize::MAX so that the first turn reports the connection (at 0), as a LaterGauge would.
    let mut reported_pending = usize::MAX;
    loop {
        // Carry out everything the connection asked for, in order.
        while let Some(output) = connection.poll_output() {
            match output {
                Output::Transmit(bytes) => {
                    handler.on_transmit(&bytes);
                    buffered.set(buffered.get() + bytes.len());
                    let _ = write_tx.send(WriteOp::Bytes(bytes));
                    if buffered.get() > TRANSPORT_BUFFER_BYTES
                        && connection.state() == ConnectionState::Established
                    {
                        connection.pause_producing();
                    }
                }
                Output::Command(command) => handler.on_command(command),
                Output::Event(_) => {}
                Output::Close { reason: why } => {
                    reason = close_reason(&why);
                    closing = true;
                    let _ = write_tx.send(WriteOp::Close);
                }
                Output::Abort { reason: why } => {
                    handler.on_closed(&match why {
                        AbortReason::CloseTimedOut => "close timed out".to_owned(),
                        AbortReason::Exception(text) => format!("exception {text}"),
                    });
                    connection.handle_closed(now());
                    return;
                }
            }
        }
        // Reported on change only: this loop turns for every read and every command.
        if connection.pending_commands() != reported_pending {
            reported_pending = connection.pending_commands();
            handler.on_pending(reported_pending);
        }
        if gone || (connection.state() == ConnectionState::Closed && !closing) {
            handler.on_closed(&reason);
            return;
        }
        let timer = connection.poll_timeout();
        let slow = handler.slow_until().is_some_and(|until| until > now());
        // A slow reader still reads, a little at a time: enough to see its peer's PINGs (so
        // it does not time out itself), too little to keep up, so its peer's send buffer
        // fills, the peer pauses, and the peer's pending queue grows towards "failed to
        // keep up".
        let read_size = if slow {
            SLOW_READ_BYTES
        } else {
            read_buffer.len()
        };
        tokio::select! {
            read = read_half.read(&mut read_buffer[..read_size]) => match read {
                Ok(0) | Err(_) => {
                    connection.handle_closed(now());
                    gone = true;
                }
                Ok(n) => {
                    connection.handle_bytes(now(), &read_buffer[..n]);
                    if slow {
                        tokio::time::sleep(std::time::Duration::from_millis(SLOW_READ_PAUSE_MS)).await;
                    }
                }
            },
            command = outbound.recv(), if !closing => match command {
                Some(command) => {
                    // An unencodable command is the caller's bug in Synapse too: it raises to
                    // the caller and nothing is sent.
                    let _ = connection.send(now(), command);
                }
                None => {
                    handler.on_closed("dropped by the process");
                    return;
                }
            },
            () = sleep_until(timer.unwrap_or(SimInstant::from_ms(0))), if timer.is_some() => {
                connection.handle_timeout(now());
            }
            () = drained.notified() => {
                if connection.state() == ConnectionState::Paused {
                    connection.resume_producing(now());
                }
            }
            () = writer_done.notified(), if closing => {
                connection.handle_closed(now());
                gone = true;
            }
        }
    }
}

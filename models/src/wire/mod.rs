//! The replication line protocol of synapse/replication/tcp/commands.py and protocol.py,
//! byte-compatible in both directions.
//!
//! A command is one line: `NAME`, one space, the command's line form, `\n`. Reading follows
//! the order of `_parse_and_dispatch_line` behind Twisted's `LineOnlyReceiver`: line length
//! (16384 bytes), blank (`bytes.strip() == b""`), UTF-8, command name, then the command's own
//! `from_line`. Writing follows `send_command`: no `\n` inside, UTF-8, at most 16384 bytes.
//! Decoding never panics: every bad line is a [`DecodeError`] naming what Synapse would raise.

mod command;
pub mod pyjson;
pub mod pytext;
mod stream;

pub use command::{Command, CommandName, Direction, EncodeFieldsError};
pub use stream::{decode_lines, encode_lines, DecodeOutcome};

use crate::limits::LINE_BYTES_MAX;
use pytext::PyStr;

/// Why an inbound line is not a command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Twisted calls `lineLengthExceeded`; Synapse answers `ERROR Line length exceeded`.
    #[error("Line length exceeded")]
    LineTooLong { bytes: usize },
    /// `line.decode("utf-8")` raised; Synapse's handler does not catch it.
    #[error("UnicodeDecodeError: 'utf-8' codec can't decode byte 0x{byte:02x} in position {position}: {reason}")]
    NotUtf8 {
        byte: u8,
        position: usize,
        reason: &'static str,
    },
    /// `COMMAND_MAP[name]` raised.
    #[error("KeyError: {}", .name.python_repr())]
    UnknownCommand { name: PyStr },
    /// The command's `from_line` raised `class`.
    #[error("{class}: {message}")]
    Parse {
        class: &'static str,
        message: String,
    },
}

impl DecodeError {
    /// What the differential tests compare: Synapse's exception class, or the fixed text.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::LineTooLong { .. } => "Line length exceeded",
            DecodeError::NotUtf8 { .. } => "UnicodeDecodeError",
            DecodeError::UnknownCommand { .. } => "KeyError",
            DecodeError::Parse { class, .. } => class,
        }
    }
}

/// Why a command cannot be sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("Exception: Unexpected newline in command: {0}")]
    Newline(String),
    #[error("UnicodeEncodeError: {0}")]
    NotUtf8(#[from] pytext::LoneSurrogate),
    #[error("Exception: Failed to send command {name} as too long ({bytes} > {LINE_BYTES_MAX})")]
    TooLong { name: &'static str, bytes: usize },
    /// `to_line` raised (a float that is not finite, an int too long for `str`).
    #[error("ValueError: {0}")]
    Value(String),
}

impl SendError {
    pub fn kind(&self) -> &'static str {
        match self {
            SendError::Newline(_) | SendError::TooLong { .. } => "Exception",
            SendError::NotUtf8(_) => "UnicodeEncodeError",
            SendError::Value(_) => "ValueError",
        }
    }
}

/// Reads one line (without its `\n`). `Ok(None)` is a blank line, which Synapse skips.
pub fn decode_line(line: &[u8]) -> Result<Option<Command>, DecodeError> {
    if line.len() > LINE_BYTES_MAX {
        return Err(DecodeError::LineTooLong { bytes: line.len() });
    }
    // `bytes.strip()` removes ASCII whitespace only: space, \t, \n, \r, \x0b, \x0c.
    if line
        .iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c))
    {
        return Ok(None);
    }
    let text = std::str::from_utf8(line).map_err(|error| {
        let position = error.valid_up_to();
        let reason = match error.error_len() {
            None => "unexpected end of data",
            Some(_) if (0x80..0xC2).contains(&line[position]) || line[position] > 0xF4 => {
                "invalid start byte"
            }
            Some(_) => "invalid continuation byte",
        };
        DecodeError::NotUtf8 {
            byte: line[position],
            position,
            reason,
        }
    })?;
    Command::from_line(&PyStr::from(text)).map(Some)
}

/// The bytes `send_command` writes for `command`: `NAME␠<line form>\n`.
pub fn encode_command(command: &Command) -> Result<Vec<u8>, SendError> {
    let mut line = PyStr::from(command.name().as_str());
    line.push_code_point(u32::from(' '));
    for &cp in command.to_line()?.code_points() {
        line.push_code_point(cp);
    }
    if line.contains('\n') {
        return Err(SendError::Newline(line.python_repr()));
    }
    let mut bytes = line.to_utf8()?.into_bytes();
    if bytes.len() > LINE_BYTES_MAX {
        return Err(SendError::TooLong {
            name: command.name().as_str(),
            bytes: bytes.len(),
        });
    }
    bytes.push(b'\n');
    Ok(bytes)
}

#[cfg(test)]
mod tests;

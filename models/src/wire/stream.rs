//! `streamsim wire decode` / `encode` on whole byte streams: one JSON line per input line.

use super::pyjson::{self, Constants, NonFinite, PyValue};
use super::pytext::PyStr;
use super::{decode_line, encode_command, Command};

/// What one input line decoded to, as printed by `streamsim wire decode`.
#[derive(Clone, Debug, PartialEq)]
pub enum DecodeOutcome {
    Command(Command),
    Blank,
    Error(super::DecodeError),
}

impl DecodeOutcome {
    /// `{"command":..,"fields":{..}}`, `{"ignored":"blank"}` or `{"error":".."}`, written as
    /// Python's `json.dumps(obj, separators=(",", ":"))` would (ASCII, insertion order).
    pub fn to_json_line(&self) -> String {
        let object = match self {
            DecodeOutcome::Command(command) => PyValue::Dict(vec![
                (
                    PyStr::from("command"),
                    PyValue::str(command.name().as_str()),
                ),
                (
                    PyStr::from("fields"),
                    PyValue::Dict(
                        command
                            .fields()
                            .into_iter()
                            .map(|(k, v)| (PyStr::from(k), v))
                            .collect(),
                    ),
                ),
            ]),
            DecodeOutcome::Blank => {
                PyValue::Dict(vec![(PyStr::from("ignored"), PyValue::str("blank"))])
            }
            DecodeOutcome::Error(error) => error_object(&error.to_string()),
        };
        pyjson::encode(&object, NonFinite::Allow)
            .expect("decoded values re-encode: ints were read within the digit limit")
    }
}

fn error_object(text: &str) -> PyValue {
    PyValue::Dict(vec![(PyStr::from("error"), PyValue::str(text))])
}

/// Splits `input` on `\n` only (a trailing `\r` stays in the line) and decodes every line. A
/// last line without `\n` is decoded too; a final `\n` does not start another line.
pub fn decode_lines(input: &[u8]) -> Vec<DecodeOutcome> {
    let body = input.strip_suffix(b"\n").unwrap_or(input);
    if input.is_empty() {
        return Vec::new();
    }
    body.split(|&b| b == b'\n')
        .map(|line| match decode_line(line) {
            Ok(Some(command)) => DecodeOutcome::Command(command),
            Ok(None) => DecodeOutcome::Blank,
            Err(error) => DecodeOutcome::Error(error),
        })
        .collect()
}

/// Reads one `{"command": NAME, "fields": {...}}` object per non-blank line and writes the
/// bytes Synapse would send for it, or an `{"error":..}` line when it cannot be sent.
pub fn encode_lines(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in input.split(|&b| b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match encode_request(line) {
            Ok(bytes) => out.extend_from_slice(&bytes),
            Err(text) => {
                out.extend_from_slice(
                    pyjson::encode(&error_object(&text), NonFinite::Allow)
                        .expect("a string")
                        .as_bytes(),
                );
                out.push(b'\n');
            }
        }
    }
    out
}

fn encode_request(line: &[u8]) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(line).map_err(|e| format!("invalid input: not UTF-8: {e}"))?;
    let request = pyjson::decode(&PyStr::from(text), Constants::Accept)
        .map_err(|e| format!("invalid input: {e}"))?;
    let Some(PyValue::Str(name)) = request.get("command") else {
        return Err("invalid input: expected an object with a string \"command\"".into());
    };
    let fields = request
        .get("fields")
        .ok_or("invalid input: expected an object with \"fields\"")?;
    let command = Command::from_fields(&name.to_string(), fields).map_err(|e| e.to_string())?;
    encode_command(&command).map_err(|e| e.to_string())
}

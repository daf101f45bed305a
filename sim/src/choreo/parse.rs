//! The step language of tools/synapse/CHOREO.md: one JSON object per line. Blank lines and
//! lines starting with `#` are skipped; anything else that is not a well-formed step is a
//! [`ParseError`] naming its line, and the script goes on.

use serde_json::{Map, Value};
use thiserror::Error;

/// Where a held fetch waits (`_load_next_mult_id_txn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchHold {
    /// The fetch's guard is in `in_flight_fetches`; no id drawn yet.
    BeforeNextval,
    /// `nextval` drew the id; it is not yet in `unfinished_ids`.
    AfterNextval,
}

/// One step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Setup {
        writers: Vec<String>,
        readers: Vec<String>,
        /// Room label → writer, in the order given.
        rooms: Vec<(String, String)>,
        base: i64,
    },
    Send {
        event: String,
        room: String,
    },
    HoldPersist {
        writer: String,
    },
    HoldFetch {
        writer: String,
        at: FetchHold,
    },
    Release {
        event: String,
    },
    UnholdPersist {
        writer: String,
    },
    Restart {
        process: String,
    },
    Disconnect {
        process: String,
    },
    Reconnect {
        process: String,
    },
    HoldPublishes {
        process: String,
    },
    ReleasePublishes {
        process: String,
    },
    HoldDeliveries {
        process: String,
    },
    ReleaseDeliveries {
        process: String,
    },
    Advance {
        ms: u64,
    },
    /// `DELETE FROM stream_positions WHERE stream_name = 'events'`: the workaround Synapse's
    /// `IncorrectDatabaseSetup` error prints, run by an operator while processes are up.
    ForgetPositions,
    Sync {
        process: String,
        label: String,
        since: Option<String>,
        timeout_ms: u64,
    },
    Observe {
        process: String,
    },
    Wait {
        process: String,
        writer: String,
        event: String,
        label: String,
    },
}

impl Step {
    /// The step's `op`.
    pub fn op(&self) -> &'static str {
        match self {
            Step::Setup { .. } => "setup",
            Step::Send { .. } => "send",
            Step::HoldPersist { .. } => "hold_persist",
            Step::HoldFetch { .. } => "hold_fetch",
            Step::Release { .. } => "release",
            Step::UnholdPersist { .. } => "unhold_persist",
            Step::Restart { .. } => "restart",
            Step::Disconnect { .. } => "disconnect",
            Step::Reconnect { .. } => "reconnect",
            Step::HoldPublishes { .. } => "hold_publishes",
            Step::ReleasePublishes { .. } => "release_publishes",
            Step::HoldDeliveries { .. } => "hold_deliveries",
            Step::ReleaseDeliveries { .. } => "release_deliveries",
            Step::Advance { .. } => "advance",
            Step::ForgetPositions => "forget_positions",
            Step::Sync { .. } => "sync",
            Step::Observe { .. } => "observe",
            Step::Wait { .. } => "wait",
        }
    }
}

/// Why a line is not a step. The texts are the system oracle's (`parse_step` in
/// tools/synapse/system_oracle.py): they are part of the output compared byte for byte.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ParseError {
    #[error("not valid JSON")]
    NotJson(String),
    #[error("not a JSON object")]
    NotAnObject,
    #[error("missing field 'op'")]
    MissingOp,
    /// The op as JSON, ASCII-escaped as `json.dumps` writes it.
    #[error("unknown op {}", streamsim_models::opscript::to_python_json(&serde_json::Value::String(.0.clone())))]
    UnknownOp(String),
    #[error("{op}: missing field '{field}'")]
    MissingField { op: String, field: &'static str },
    #[error("field '{field}' must be {expected}")]
    BadField {
        op: String,
        field: &'static str,
        expected: &'static str,
    },
    #[error("{op}: unknown field '{key}'")]
    UnknownKey { op: String, key: String },
    #[error("{0}")]
    BadSetup(String),
}

/// Longest `advance` and long-poll time-out, in ms (the oracle's `MAX_ADVANCE_MS`).
pub const MAX_ADVANCE_MS: u64 = 600_000;

/// A line's meaning: nothing (blank or comment) or a step.
pub fn parse_line(line: &str) -> Result<Option<Step>, ParseError> {
    // Blank: only Unicode White_Space; a comment's first other character is `#`.
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(None);
    }
    // The oracle's strict reader decides what is JSON (no repeated key at any depth, no
    // NaN, no lone surrogate); serde_json then reads the same, unambiguous text.
    streamsim_models::opscript::strict_json(trimmed).map_err(ParseError::NotJson)?;
    let value: Value =
        serde_json::from_str(trimmed).map_err(|e| ParseError::NotJson(e.to_string()))?;
    let Value::Object(object) = value else {
        return Err(ParseError::NotAnObject);
    };
    let op = match object.get("op") {
        Some(Value::String(op)) => op.clone(),
        // `op` present but not a string counts as missing (CHOREO.md's Errors).
        Some(_) | None => return Err(ParseError::MissingOp),
    };
    let fields = Fields {
        op: op.clone(),
        object,
        line: trimmed,
    };
    let step = match op.as_str() {
        "setup" => {
            fields.only(&["writers", "readers", "rooms", "base"])?;
            let writers = fields.names("writers", true)?;
            let readers = fields.names("readers", false)?;
            let rooms = fields.rooms()?;
            let base = match fields.object.get("base") {
                None => 40,
                Some(value) => match value.as_i64() {
                    Some(base) if (30..=1_000_000).contains(&base) => base,
                    Some(_) => return Err(fields.bad("base", "in 30..1000000")),
                    None => return Err(fields.bad("base", "an integer")),
                },
            };
            check_setup(&writers, &readers, &rooms, base)?;
            Step::Setup {
                writers,
                readers,
                rooms,
                base,
            }
        }
        "send" => {
            fields.only(&["event", "room"])?;
            Step::Send {
                event: fields.string("event")?,
                room: fields.string("room")?,
            }
        }
        "hold_persist" => {
            fields.only(&["writer"])?;
            Step::HoldPersist {
                writer: fields.string("writer")?,
            }
        }
        "hold_fetch" => {
            fields.only(&["writer", "at"])?;
            let at = match fields.string("at")?.as_str() {
                "before_nextval" => FetchHold::BeforeNextval,
                "after_nextval" => FetchHold::AfterNextval,
                _ => return Err(fields.bad("at", "before_nextval or after_nextval")),
            };
            Step::HoldFetch {
                writer: fields.string("writer")?,
                at,
            }
        }
        "release" => {
            fields.only(&["event"])?;
            Step::Release {
                event: fields.string("event")?,
            }
        }
        "unhold_persist" => {
            fields.only(&["writer"])?;
            Step::UnholdPersist {
                writer: fields.string("writer")?,
            }
        }
        "restart" | "disconnect" | "reconnect" | "hold_publishes" | "release_publishes"
        | "hold_deliveries" | "release_deliveries" | "observe" => {
            fields.only(&["process"])?;
            let process = fields.string("process")?;
            match op.as_str() {
                "restart" => Step::Restart { process },
                "disconnect" => Step::Disconnect { process },
                "reconnect" => Step::Reconnect { process },
                "hold_publishes" => Step::HoldPublishes { process },
                "release_publishes" => Step::ReleasePublishes { process },
                "hold_deliveries" => Step::HoldDeliveries { process },
                "release_deliveries" => Step::ReleaseDeliveries { process },
                _ => Step::Observe { process },
            }
        }
        "forget_positions" => {
            fields.only(&[])?;
            Step::ForgetPositions
        }
        "advance" => {
            fields.only(&["ms"])?;
            Step::Advance {
                ms: fields.count("ms")?,
            }
        }
        "sync" => {
            fields.only(&["process", "label", "since", "timeout_ms"])?;
            let since = match fields.object.get("since") {
                None | Some(Value::Null) => None,
                Some(Value::String(since)) => Some(since.clone()),
                Some(_) => return Err(fields.bad("since", "a string")),
            };
            let timeout_ms = match fields.object.get("timeout_ms") {
                None => 0,
                Some(_) => fields.count("timeout_ms")?,
            };
            Step::Sync {
                process: fields.string("process")?,
                label: fields.string("label")?,
                since,
                timeout_ms,
            }
        }
        "wait" => {
            fields.only(&["process", "writer", "event", "label"])?;
            Step::Wait {
                process: fields.string("process")?,
                writer: fields.string("writer")?,
                event: fields.string("event")?,
                label: fields.string("label")?,
            }
        }
        _ => return Err(ParseError::UnknownOp(op)),
    };
    Ok(Some(step))
}

struct Fields<'a> {
    op: String,
    object: Map<String, Value>,
    /// The line itself: `serde_json::Map` is sorted, so the rooms' order is read again from it.
    line: &'a str,
}

/// The rooms of a set-up line, in the order written.
#[derive(serde::Deserialize)]
struct OrderedRooms {
    rooms: indexmap::IndexMap<String, String>,
}

impl Fields<'_> {
    fn bad(&self, field: &'static str, expected: &'static str) -> ParseError {
        ParseError::BadField {
            op: self.op.clone(),
            field,
            expected,
        }
    }

    fn only(&self, allowed: &[&str]) -> Result<(), ParseError> {
        match self
            .object
            .keys()
            .find(|key| *key != "op" && !allowed.contains(&key.as_str()))
        {
            Some(key) => Err(ParseError::UnknownKey {
                op: self.op.clone(),
                key: key.clone(),
            }),
            None => Ok(()),
        }
    }

    fn string(&self, field: &'static str) -> Result<String, ParseError> {
        match self.object.get(field) {
            Some(Value::String(text)) if !text.is_empty() => Ok(text.clone()),
            Some(_) => Err(self.bad(field, "a non-empty string")),
            None => Err(ParseError::MissingField {
                op: self.op.clone(),
                field,
            }),
        }
    }

    fn count(&self, field: &'static str) -> Result<u64, ParseError> {
        match self.object.get(field) {
            Some(value) if value.is_i64() || value.is_u64() => value
                .as_u64()
                .filter(|ms| *ms <= MAX_ADVANCE_MS)
                .ok_or_else(|| self.bad(field, "in 0..600000")),
            Some(_) => Err(self.bad(field, "an integer")),
            None => Err(ParseError::MissingField {
                op: self.op.clone(),
                field,
            }),
        }
    }

    fn names(&self, field: &'static str, required: bool) -> Result<Vec<String>, ParseError> {
        match self.object.get(field) {
            None if !required => Ok(Vec::new()),
            None => Err(ParseError::MissingField {
                op: self.op.clone(),
                field,
            }),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| {
                    item.as_str()
                        .filter(|name| valid_name(name))
                        .map(str::to_owned)
                        .ok_or_else(|| self.bad(field, "a list of names [a-z][a-z0-9]*"))
                })
                .collect(),
            Some(_) => Err(self.bad(field, "a list of names [a-z][a-z0-9]*")),
        }
    }

    /// The rooms in the order written (a JSON object's order is part of the contract: each
    /// writer's first room takes the set-up padding).
    fn rooms(&self) -> Result<Vec<(String, String)>, ParseError> {
        match self.object.get("rooms") {
            None => Err(ParseError::MissingField {
                op: self.op.clone(),
                field: "rooms",
            }),
            Some(Value::Object(_)) => serde_json::from_str::<OrderedRooms>(self.line)
                .map(|ordered| ordered.rooms.into_iter().collect())
                .map_err(|_| {
                    ParseError::BadSetup("field 'rooms' must map room labels to writers".into())
                }),
            Some(_) => Err(ParseError::BadSetup(
                "field 'rooms' must map room labels to writers".into(),
            )),
        }
    }
}

fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn check_setup(
    writers: &[String],
    readers: &[String],
    rooms: &[(String, String)],
    _base: i64,
) -> Result<(), ParseError> {
    let bad = |message: String| Err(ParseError::BadSetup(message));
    if writers.is_empty() || writers.len() > 3 {
        return bad("field 'writers' must name 1 to 3 writers".into());
    }
    let everyone: Vec<&String> = writers.iter().chain(readers).collect();
    let distinct: std::collections::BTreeSet<&String> = everyone.iter().copied().collect();
    if distinct.len() != everyone.len() || everyone.iter().any(|n| *n == "main") {
        return bad("process names must be distinct and not 'main'".into());
    }
    if rooms.is_empty() {
        return bad("field 'rooms' must map room labels to writers".into());
    }
    for (room, writer) in rooms {
        if !valid_name(room) || !writers.contains(writer) {
            return bad(format!(
                "room {} must be a name and map to a writer",
                Value::String(room.clone())
            ));
        }
    }
    if let Some(idle) = writers
        .iter()
        .find(|w| !rooms.iter().any(|(_, writer)| writer == *w))
    {
        return bad(format!("writer {idle} has no room"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_and_comment_lines_are_nothing() {
        assert_eq!(parse_line(""), Ok(None));
        assert_eq!(parse_line("   "), Ok(None));
        assert_eq!(parse_line("# a comment"), Ok(None));
    }

    #[test]
    fn setup_keeps_the_rooms_in_order_and_defaults_base() {
        let step = parse_line(
            r#"{"op":"setup","writers":["worker1","worker2"],"readers":["sync1"],"rooms":{"r2":"worker2","r1":"worker1"}}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            step,
            Step::Setup {
                writers: vec!["worker1".into(), "worker2".into()],
                readers: vec!["sync1".into()],
                rooms: vec![
                    ("r2".into(), "worker2".into()),
                    ("r1".into(), "worker1".into())
                ],
                base: 40,
            }
        );
    }

    #[test]
    fn every_op_parses() {
        let lines = [
            (r#"{"op":"send","event":"A","room":"r1"}"#, "send"),
            (
                r#"{"op":"hold_persist","writer":"worker1"}"#,
                "hold_persist",
            ),
            (
                r#"{"op":"hold_fetch","writer":"worker1","at":"after_nextval"}"#,
                "hold_fetch",
            ),
            (r#"{"op":"release","event":"A"}"#, "release"),
            (
                r#"{"op":"unhold_persist","writer":"worker1"}"#,
                "unhold_persist",
            ),
            (r#"{"op":"restart","process":"worker2"}"#, "restart"),
            (r#"{"op":"disconnect","process":"sync1"}"#, "disconnect"),
            (r#"{"op":"reconnect","process":"sync1"}"#, "reconnect"),
            (
                r#"{"op":"hold_publishes","process":"worker1"}"#,
                "hold_publishes",
            ),
            (
                r#"{"op":"release_publishes","process":"worker1"}"#,
                "release_publishes",
            ),
            (r#"{"op":"advance","ms":1000}"#, "advance"),
            (
                r#"{"op":"sync","process":"sync1","label":"T1","since":"T0","timeout_ms":0}"#,
                "sync",
            ),
            (r#"{"op":"observe","process":"sync1"}"#, "observe"),
            (
                r#"{"op":"wait","process":"main","writer":"worker1","event":"X","label":"W1"}"#,
                "wait",
            ),
        ];
        for (line, op) in lines {
            assert_eq!(parse_line(line).unwrap().unwrap().op(), op, "{line}");
        }
    }

    #[test]
    fn malformed_lines_say_why() {
        let cases = [
            ("{", "not valid JSON"),
            ("[1]", "not a JSON object"),
            (r#"{"event":"A"}"#, "missing field 'op'"),
            (r#"{"op":"jump"}"#, "unknown op \"jump\""),
            (r#"{"op":"send","event":"A"}"#, "send: missing field 'room'"),
            (
                r#"{"op":"advance","ms":-1}"#,
                "field 'ms' must be in 0..600000",
            ),
            (
                r#"{"op":"send","event":"A","room":"r1","x":1}"#,
                "send: unknown field 'x'",
            ),
            (
                r#"{"op":"hold_fetch","writer":"worker1","at":"later"}"#,
                "field 'at' must be before_nextval or after_nextval",
            ),
            (
                r#"{"op":"setup","writers":["main"],"rooms":{"r1":"main"}}"#,
                "process names must be distinct and not 'main'",
            ),
            (
                r#"{"op":"setup","writers":["w1","w2"],"rooms":{"r1":"w1"}}"#,
                "writer w2 has no room",
            ),
            (
                r#"{"op":"setup","writers":["w1"],"rooms":{"r1":"w1"},"base":29}"#,
                "field 'base' must be in 30..1000000",
            ),
        ];
        for (line, expected) in cases {
            let error = parse_line(line).unwrap_err().to_string();
            assert!(error.starts_with(expected), "{line}: {error}");
        }
    }
}

//! The ID-generator op-script language (research/idgen-ops.md): JSON-lines scripts that drive
//! several [`MultiWriterIdGenerator`]s, one per simulated process, over one [`Database`], the
//! way Synapse's tests/storage/test_id_generators.py drives the real class.
//!
//! Each non-blank line is one op and yields exactly one output line,
//! `json.dumps(result, sort_keys=True, separators=(",",":"))` in Python terms. A malformed
//! line yields `{"error":"line N: ..."}`; a failing op `{"error":"..."}`; both leave the world
//! unchanged and the script goes on.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::wire::pyjson::{self, Constants, PyValue};
use crate::wire::pytext::PyStr;

use crate::db::{Database, StreamRow};
use crate::idgen::{IdGenConfig, MultiWriterIdGenerator};
use crate::limits::{ALLOC_IDS_MAX, PRELOAD_ROWS_MAX};

/// One parsed op.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    PreloadCount {
        instance: String,
        count: u64,
    },
    PreloadId {
        instance: String,
        id: i64,
    },
    Start {
        instance: String,
        writers: Vec<String>,
    },
    Alloc {
        instance: String,
        n: u64,
        handle: String,
    },
    Write {
        handle: String,
    },
    Finish {
        handle: String,
    },
    Abort {
        handle: String,
    },
    Advance {
        instance: String,
        writer: String,
        token: i64,
    },
    Replicate {
        from: String,
    },
    Observe {
        instance: String,
    },
}

/// Why a line is not an op. The text after `line N: ` is informative only.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct MalformedLine {
    pub line: usize,
    pub reason: String,
}

/// Parses one non-blank line (`line` is its 1-based physical number, for the error).
///
/// JSON is read as Python's `json.loads` reads it, stricter in three ways that keep scripts
/// unambiguous: a repeated key, a lone surrogate, or a number that is not a finite double is
/// malformed. Integers must fit in 64 bits.
pub fn parse_op(text: &str, line: usize) -> Result<Op, MalformedLine> {
    let malformed = |reason: String| MalformedLine { line, reason };
    let value = strict_json(text).map_err(|e| malformed(format!("not valid JSON: {e}")))?;
    if !matches!(value, PyValue::Dict(_)) {
        return Err(malformed("not a JSON object".into()));
    }
    let has = |key: &str| value.get(key).is_some();
    let string = |key: &str| -> Result<String, MalformedLine> {
        match value.get(key) {
            None => Err(malformed(format!("missing field {key:?}"))),
            Some(PyValue::Str(s)) if !s.is_empty() => Ok(s.to_string()),
            Some(PyValue::Str(_)) => Err(malformed(format!("field {key:?} must be non-empty"))),
            Some(_) => Err(malformed(format!("field {key:?} must be a string"))),
        }
    };
    let integer = |key: &str, minimum: Option<i64>| -> Result<i64, MalformedLine> {
        let number = match value.get(key) {
            None => return Err(malformed(format!("missing field {key:?}"))),
            Some(PyValue::Int(n)) => n.to_i64().ok_or_else(|| {
                malformed(format!("field {key:?} is outside the 64-bit integer range"))
            })?,
            Some(_) => return Err(malformed(format!("field {key:?} must be an integer"))),
        };
        match minimum {
            Some(min) if number < min => Err(malformed(format!("field {key:?} must be >= {min}"))),
            _ => Ok(number),
        }
    };
    let op = value
        .get("op")
        .ok_or_else(|| malformed("missing field \"op\"".into()))?;
    let op_name = match op {
        PyValue::Str(name) => name.to_string(),
        _ => String::new(),
    };
    Ok(match op_name.as_str() {
        "preload" => {
            let instance = string("instance")?;
            match (has("count"), has("id")) {
                (true, true) => {
                    return Err(malformed("preload has both \"count\" and \"id\"".into()))
                }
                (true, false) => Op::PreloadCount {
                    instance,
                    count: integer("count", Some(0))? as u64,
                },
                (false, true) => Op::PreloadId {
                    instance,
                    id: integer("id", Some(1))?,
                },
                (false, false) => {
                    return Err(malformed("preload needs \"count\" or \"id\"".into()))
                }
            }
        }
        "start" => {
            let instance = string("instance")?;
            let writers = match value.get("writers") {
                None => return Err(malformed("missing field \"writers\"".into())),
                Some(PyValue::List(items)) => items
                    .iter()
                    .map(|item| match item {
                        PyValue::Str(s) if !s.is_empty() => Ok(s.to_string()),
                        _ => Err(malformed(
                            "field \"writers\" must hold non-empty strings".into(),
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                Some(_) => {
                    return Err(malformed(
                        "field \"writers\" must be a list of strings".into(),
                    ))
                }
            };
            Op::Start { instance, writers }
        }
        "alloc" => Op::Alloc {
            instance: string("instance")?,
            n: integer("n", Some(1))? as u64,
            handle: string("handle")?,
        },
        "write" => Op::Write {
            handle: string("handle")?,
        },
        "finish" => Op::Finish {
            handle: string("handle")?,
        },
        "abort" => Op::Abort {
            handle: string("handle")?,
        },
        "advance" => Op::Advance {
            instance: string("instance")?,
            writer: string("writer")?,
            token: integer("token", None)?,
        },
        "replicate" => Op::Replicate {
            from: string("from")?,
        },
        "observe" => Op::Observe {
            instance: string("instance")?,
        },
        _ => {
            let shown = pyjson::encode(op, pyjson::NonFinite::Allow).unwrap_or_default();
            return Err(malformed(format!("unknown op {shown}")));
        }
    })
}

/// Reads one JSON line as the oracles' strict reader does (tools/synapse/strict_json.py):
/// Python's `json.loads` without NaN/Infinity, with no repeated key at any depth, no lone
/// surrogate and no number beyond a finite double. The error says why (informative only).
pub fn strict_json(text: &str) -> Result<PyValue, String> {
    let value = pyjson::decode_rejecting_duplicates(&PyStr::from(text), Constants::Reject)
        .map_err(|e| e.to_string())?;
    match unrepresentable(&value) {
        Some(problem) => Err(problem.to_owned()),
        None => Ok(value),
    }
}

/// A value Python reads but a script may not hold: a float that overflowed to infinity, or a
/// string with a lone surrogate (it could not be stored or printed as UTF-8).
fn unrepresentable(value: &PyValue) -> Option<&'static str> {
    match value {
        PyValue::Float(f) if !f.is_finite() => Some("number out of range"),
        PyValue::Str(s) if s.to_utf8().is_err() => Some("lone surrogate in a string"),
        PyValue::List(items) => items.iter().find_map(unrepresentable),
        PyValue::Dict(entries) => entries.iter().find_map(|(key, item)| {
            key.to_utf8()
                .is_err()
                .then_some("lone surrogate in a string")
                .or_else(|| unrepresentable(item))
        }),
        _ => None,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HandleState {
    Open,
    Finished,
    Aborted,
    /// Its instance was restarted: the context can never exit.
    Abandoned,
}

#[derive(Clone, Debug)]
struct Handle {
    instance: String,
    ids: Vec<i64>,
    state: HandleState,
    written: bool,
}

#[derive(Clone, Debug)]
struct Instance {
    generator: MultiWriterIdGenerator,
    writers: Vec<String>,
}

/// The result of `observe`, keys in sorted order as Python's `sort_keys` prints them.
#[derive(Clone, Debug, Serialize)]
struct Observation {
    current_token: i64,
    minimal_local: i64,
    persisted_upto: i64,
    positions: BTreeMap<String, i64>,
    token_for_writer: BTreeMap<String, i64>,
}

/// The world of one script: the database, live instances, and every handle ever bound.
#[derive(Debug, Default)]
pub struct World {
    db: Database,
    instances: BTreeMap<String, Instance>,
    handles: BTreeMap<String, Handle>,
}

/// A failing op: `{"error": ...}`.
type OpResult = Result<Value, String>;

impl World {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn db(&self) -> &Database {
        &self.db
    }

    /// Runs one op; the result is the output object.
    pub fn apply(&mut self, op: &Op) -> Value {
        self.try_apply(op)
            .unwrap_or_else(|error| serde_json::json!({ "error": error }))
    }

    fn try_apply(&mut self, op: &Op) -> OpResult {
        let ok = || Ok(serde_json::json!({ "ok": true }));
        match op {
            Op::PreloadCount { instance, count } => {
                if *count > PRELOAD_ROWS_MAX {
                    return Err(format!(
                        "preload count {count} is above streamsim's limit of {PRELOAD_ROWS_MAX}"
                    ));
                }
                // `_insert_rows`: one transaction of nextval + INSERT + unconditional upsert.
                // A failure rolls the rows back; the sequence values drawn stay drawn.
                let txn = self.db.begin("script");
                for _ in 0..*count {
                    let inserted = self.db.nextval().and_then(|id| {
                        let row = StreamRow {
                            stream_id: id,
                            instance_name: instance.clone(),
                            payload: None,
                        };
                        self.db.insert_row(txn, row)?;
                        self.db.overwrite_position(txn, instance, id)
                    });
                    if let Err(error) = inserted {
                        self.db.rollback(txn).expect("open transaction");
                        return Err(error.to_string());
                    }
                }
                self.db.commit(txn).expect("open transaction");
                ok()
            }
            Op::PreloadId { instance, id } => {
                // `_insert_row_with_id`: INSERT, `setval` (may move backwards), upsert.
                self.db
                    .check_text([instance.as_str()])
                    .map_err(|e| e.to_string())?;
                self.db.setval(*id).map_err(|e| e.to_string())?;
                let txn = self.db.begin("script");
                let row = StreamRow {
                    stream_id: *id,
                    instance_name: instance.clone(),
                    payload: None,
                };
                self.db.insert_row(txn, row).expect("open transaction");
                self.db
                    .overwrite_position(txn, instance, *id)
                    .expect("open transaction");
                self.db.commit(txn).expect("open transaction");
                ok()
            }
            Op::Start { instance, writers } => {
                if self.instances.remove(instance).is_some() {
                    for handle in self.handles.values_mut() {
                        if handle.instance == *instance && handle.state == HandleState::Open {
                            handle.state = HandleState::Abandoned;
                        }
                    }
                }
                let config = IdGenConfig {
                    instance_name: instance.clone(),
                    writers: writers.clone(),
                    bugs: crate::bugs::Bugs::NONE,
                    fixes: crate::fixes::Fixes::NONE,
                };
                let generator = MultiWriterIdGenerator::start(&mut self.db, config)
                    .map_err(|e| e.to_string())?;
                self.instances.insert(
                    instance.clone(),
                    Instance {
                        generator,
                        writers: writers.clone(),
                    },
                );
                ok()
            }
            Op::Alloc {
                instance,
                n,
                handle,
            } => {
                if self.handles.contains_key(handle) {
                    return Err(format!("handle {} is already bound", repr(handle)));
                }
                if *n > ALLOC_IDS_MAX {
                    return Err(format!(
                        "alloc of {n} ids is above streamsim's limit of {ALLOC_IDS_MAX}"
                    ));
                }
                let live = self
                    .instances
                    .get_mut(instance)
                    .ok_or_else(|| format!("instance {} is not live", repr(instance)))?;
                let ids = live
                    .generator
                    .allocate(&mut self.db, *n)
                    .map_err(|e| e.to_string())?;
                let state = HandleState::Open;
                self.handles.insert(
                    handle.clone(),
                    Handle {
                        instance: instance.clone(),
                        ids: ids.clone(),
                        state,
                        written: false,
                    },
                );
                Ok(serde_json::json!({ "ids": ids }))
            }
            Op::Write { handle } => {
                let open = self.open_handle(handle)?;
                if open.written {
                    return Err(format!("handle {} was already written", repr(handle)));
                }
                let rows = open
                    .ids
                    .iter()
                    .map(|id| StreamRow {
                        stream_id: *id,
                        instance_name: open.instance.clone(),
                        payload: None,
                    })
                    .collect();
                let owner = open.instance.clone();
                self.db
                    .insert_rows_autocommit(&owner, rows)
                    .map_err(|e| e.to_string())?;
                self.handles.get_mut(handle).expect("open").written = true;
                ok()
            }
            Op::Finish { handle } | Op::Abort { handle } => {
                let success = matches!(op, Op::Finish { .. });
                let open = self.open_handle(handle)?;
                let (instance, ids) = (open.instance.clone(), open.ids.clone());
                self.handles.get_mut(handle).expect("open").state = if success {
                    HandleState::Finished
                } else {
                    HandleState::Aborted
                };
                let live = self
                    .instances
                    .get_mut(&instance)
                    .expect("an open handle's instance is live");
                // `__aexit__`: ids are marked finished on both paths; only success upserts.
                live.generator.mark_finished(&ids);
                if success {
                    if let Some(position) = live.generator.position_to_persist() {
                        self.db
                            .upsert_position_if_greater_autocommit(&instance, &instance, position)
                            .map_err(|e| e.to_string())?;
                    }
                }
                ok()
            }
            Op::Advance {
                instance,
                writer,
                token,
            } => {
                self.live_mut(instance)?.generator.advance(writer, *token);
                ok()
            }
            Op::Replicate { from } => {
                let token = self
                    .live_mut(from)?
                    .generator
                    .current_token_for_writer(from);
                for (name, other) in self.instances.iter_mut() {
                    if name != from {
                        other.generator.advance(from, token);
                    }
                }
                Ok(serde_json::json!({ "ok": true, "token": token }))
            }
            Op::Observe { instance } => {
                let live = self.live_mut(instance)?;
                let generator = &live.generator;
                let observation = Observation {
                    current_token: generator.current_token(),
                    minimal_local: generator.minimal_local_current_token(),
                    persisted_upto: generator.persisted_upto(),
                    positions: generator.positions().clone(),
                    token_for_writer: live
                        .writers
                        .iter()
                        .map(|writer| (writer.clone(), generator.current_token_for_writer(writer)))
                        .collect(),
                };
                Ok(serde_json::to_value(observation).expect("plain data serializes"))
            }
        }
    }

    fn live_mut(&mut self, instance: &str) -> Result<&mut Instance, String> {
        self.instances
            .get_mut(instance)
            .ok_or_else(|| format!("instance {} is not live", repr(instance)))
    }

    fn open_handle(&self, handle: &str) -> Result<&Handle, String> {
        let found = self
            .handles
            .get(handle)
            .ok_or_else(|| format!("handle {} is unknown", repr(handle)))?;
        match found.state {
            HandleState::Open => Ok(found),
            state => Err(format!(
                "handle {} is {}",
                repr(handle),
                format!("{state:?}").to_lowercase()
            )),
        }
    }
}

/// Runs a whole script from a fresh world; one output line per non-blank input line.
///
/// Lines are split on `\n`; a line that is empty or only Unicode white space is skipped.
/// A line that is not UTF-8 is malformed.
pub fn run_script(script: &[u8]) -> Vec<String> {
    let mut world = World::new();
    let mut out = Vec::new();
    for (index, raw) in script.split(|&b| b == b'\n').enumerate() {
        let line = index + 1;
        let parsed = match std::str::from_utf8(raw) {
            Ok(text) if text.trim().is_empty() => continue,
            Ok(text) => parse_op(text, line),
            Err(_) if raw.is_empty() => continue,
            Err(e) => Err(MalformedLine {
                line,
                reason: format!("not valid UTF-8: {e}"),
            }),
        };
        let result = match parsed {
            Ok(op) => world.apply(&op),
            Err(malformed) => serde_json::json!({ "error": malformed.to_string() }),
        };
        out.push(to_python_json(&result));
    }
    out
}

/// Python's `repr` of a name, so error texts read as Synapse-side ones do.
fn repr(name: &str) -> String {
    PyStr::from(name).python_repr()
}

/// `json.dumps(value, sort_keys=True, separators=(",", ":"))` for the values ops produce
/// (ASCII-safe keys and strings, integers only). Also what `streamsim choreo` prints.
pub fn to_python_json(value: &Value) -> String {
    // serde_json's default map is ordered by key, which is Python's sort_keys order for the
    // ASCII names scripts use; non-ASCII is escaped as Python's ensure_ascii does.
    let compact = serde_json::to_string(value).expect("plain data serializes");
    let mut out = String::with_capacity(compact.len());
    for ch in compact.chars() {
        if ch.is_ascii() {
            out.push(ch);
        } else {
            let mut units = [0u16; 2];
            for unit in ch.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_lines_name_their_line_and_do_nothing() {
        let out = run_script(b"\n{\"op\":\"alloc\",\"instance\":\"w\",\"n\":0,\"handle\":\"h\"}\nnot json\n{\"op\":\"preload\",\"instance\":\"w\",\"count\":1,\"id\":2}\n");
        assert_eq!(out.len(), 3);
        assert!(out[0].starts_with("{\"error\":\"line 2: "), "{}", out[0]);
        assert!(out[1].starts_with("{\"error\":\"line 3: "), "{}", out[1]);
        assert!(out[2].starts_with("{\"error\":\"line 4: "), "{}", out[2]);
    }

    #[test]
    fn restart_abandons_handles_and_abort_moves_past_ids() {
        let script = [
            r#"{"op":"start","instance":"w1","writers":["w1"]}"#,
            r#"{"op":"alloc","instance":"w1","n":2,"handle":"a"}"#,
            r#"{"op":"abort","handle":"a"}"#,
            r#"{"op":"observe","instance":"w1"}"#,
            r#"{"op":"alloc","instance":"w1","n":1,"handle":"b"}"#,
            r#"{"op":"start","instance":"w1","writers":["w1"]}"#,
            r#"{"op":"finish","handle":"b"}"#,
            r#"{"op":"alloc","instance":"w1","n":1,"handle":"b"}"#,
        ]
        .join("\n");
        let out = run_script(script.as_bytes());
        assert_eq!(out[1], r#"{"ids":[1,2]}"#);
        assert_eq!(
            out[3],
            r#"{"current_token":2,"minimal_local":2,"persisted_upto":2,"positions":{"w1":2},"token_for_writer":{"w1":2}}"#
        );
        assert!(out[6].starts_with("{\"error\""), "{}", out[6]);
        assert!(
            out[7].starts_with("{\"error\""),
            "a bound name is never rebound: {}",
            out[7]
        );
    }
}

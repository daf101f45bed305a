//! Every command class of synapse/replication/tcp/commands.py: its fields (named as the
//! class's `__slots__`), `from_line`, `to_line`, and which side of a TCP connection may send it.

use super::pyjson::{self, Constants, NonFinite, PyValue};
use super::pytext::{python_int, PyInt, PyStr};
use super::{DecodeError, SendError};

/// The name of a command on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CommandName {
    Server,
    Rdata,
    Position,
    Error,
    Ping,
    Name,
    Replicate,
    UserSync,
    FederationAck,
    UserIp,
    RemoteServerUp,
    ClearUserSync,
    LockReleased,
    NewActiveTask,
    CancelTask,
}

impl CommandName {
    /// In the order of `_COMMANDS`.
    pub const ALL: [CommandName; 15] = [
        CommandName::Server,
        CommandName::Rdata,
        CommandName::Position,
        CommandName::Error,
        CommandName::Ping,
        CommandName::Name,
        CommandName::Replicate,
        CommandName::UserSync,
        CommandName::FederationAck,
        CommandName::UserIp,
        CommandName::RemoteServerUp,
        CommandName::ClearUserSync,
        CommandName::LockReleased,
        CommandName::NewActiveTask,
        CommandName::CancelTask,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CommandName::Server => "SERVER",
            CommandName::Rdata => "RDATA",
            CommandName::Position => "POSITION",
            CommandName::Error => "ERROR",
            CommandName::Ping => "PING",
            CommandName::Name => "NAME",
            CommandName::Replicate => "REPLICATE",
            CommandName::UserSync => "USER_SYNC",
            CommandName::FederationAck => "FEDERATION_ACK",
            CommandName::UserIp => "USER_IP",
            CommandName::RemoteServerUp => "REMOTE_SERVER_UP",
            CommandName::ClearUserSync => "CLEAR_USER_SYNC",
            CommandName::LockReleased => "LOCK_RELEASED",
            CommandName::NewActiveTask => "NEW_ACTIVE_TASK",
            CommandName::CancelTask => "CANCEL_TASK",
        }
    }

    /// `COMMAND_MAP[name]`: exact, case-sensitive.
    pub fn parse(name: &PyStr) -> Option<CommandName> {
        CommandName::ALL
            .into_iter()
            .find(|c| name.eq_str(c.as_str()))
    }

    /// The field names, the class's `__slots__` in order.
    pub fn slots(self) -> &'static [&'static str] {
        match self {
            CommandName::Rdata => &["stream_name", "instance_name", "token", "row"],
            CommandName::Position => &["stream_name", "instance_name", "prev_token", "new_token"],
            CommandName::Replicate => &[],
            CommandName::UserSync => &[
                "instance_id",
                "user_id",
                "device_id",
                "is_syncing",
                "last_sync_ms",
            ],
            CommandName::ClearUserSync => &["instance_id"],
            CommandName::FederationAck => &["instance_name", "token"],
            CommandName::UserIp => &[
                "user_id",
                "access_token",
                "ip",
                "user_agent",
                "device_id",
                "last_seen",
            ],
            CommandName::LockReleased => &["instance_name", "lock_name", "lock_key"],
            _ => &["data"],
        }
    }

    /// May the given side send this command over direct TCP (`VALID_SERVER_COMMANDS`,
    /// `VALID_CLIENT_COMMANDS`)? NEW_ACTIVE_TASK and CANCEL_TASK are in neither: Redis only.
    pub fn valid_from(self, side: Direction) -> bool {
        use CommandName::*;
        match side {
            Direction::ServerToClient => {
                matches!(
                    self,
                    Server | Rdata | Position | Error | Ping | RemoteServerUp | LockReleased
                )
            }
            Direction::ClientToServer => matches!(
                self,
                Name | Replicate
                    | Ping
                    | UserSync
                    | ClearUserSync
                    | FederationAck
                    | UserIp
                    | Error
                    | RemoteServerUp
                    | LockReleased
            ),
        }
    }
}

/// Which way a command travels on a direct TCP connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    ServerToClient,
    ClientToServer,
}

/// One replication command with its fields after Synapse's parsing.
///
/// Text fields are Python strings ([`PyStr`]) and numbers Python ints ([`PyInt`]) because the
/// codec must carry whatever Synapse carries; the simulation uses the typed constructors and
/// accessors below.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// SERVER, ERROR, PING, NAME, REMOTE_SERVER_UP, NEW_ACTIVE_TASK, CANCEL_TASK (`_SimpleCommand`).
    Simple {
        name: CommandName,
        data: PyStr,
    },
    Rdata {
        stream_name: PyStr,
        instance_name: PyStr,
        token: Option<PyInt>,
        row: PyValue,
    },
    Position {
        stream_name: PyStr,
        instance_name: PyStr,
        prev_token: PyInt,
        new_token: PyInt,
    },
    Replicate,
    UserSync {
        instance_id: PyStr,
        user_id: PyStr,
        device_id: Option<PyStr>,
        is_syncing: bool,
        last_sync_ms: PyInt,
    },
    ClearUserSync {
        instance_id: PyStr,
    },
    FederationAck {
        instance_name: PyStr,
        token: PyInt,
    },
    /// The five values come from unpacking a JSON value, so they may be of any JSON type.
    UserIp {
        user_id: PyStr,
        access_token: PyValue,
        ip: PyValue,
        user_agent: PyValue,
        device_id: PyValue,
        last_seen: PyValue,
    },
    LockReleased {
        instance_name: PyValue,
        lock_name: PyValue,
        lock_key: PyValue,
    },
}

fn parse_error(class: &'static str, message: impl Into<String>) -> DecodeError {
    DecodeError::Parse {
        class,
        message: message.into(),
    }
}

/// Python's tuple unpacking `a, b, c = parts`.
fn unpack<T: Clone>(parts: &[T], expected: usize) -> Result<Vec<T>, DecodeError> {
    match parts.len() {
        n if n < expected => Err(parse_error(
            "ValueError",
            format!("not enough values to unpack (expected {expected}, got {n})"),
        )),
        n if n > expected => Err(parse_error(
            "ValueError",
            format!("too many values to unpack (expected {expected})"),
        )),
        _ => Ok(parts.to_vec()),
    }
}

fn int(text: &PyStr) -> Result<PyInt, DecodeError> {
    python_int(text).map_err(|e| parse_error("ValueError", e.to_string()))
}

fn json(text: &PyStr) -> Result<PyValue, DecodeError> {
    pyjson::decode(text, Constants::Reject)
        .map_err(|e| parse_error(e.python_class(), e.to_string()))
}

/// `a, b, c = json_decoder.decode(text)`: any iterable of the right length unpacks.
fn unpack_json(text: &PyStr, expected: usize) -> Result<Vec<PyValue>, DecodeError> {
    let value = json(text)?;
    let items = value.iterate().ok_or_else(|| {
        parse_error(
            "TypeError",
            format!("cannot unpack non-iterable {} object", value.type_name()),
        )
    })?;
    unpack(&items, expected)
}

impl Command {
    pub fn name(&self) -> CommandName {
        match self {
            Command::Simple { name, .. } => *name,
            Command::Rdata { .. } => CommandName::Rdata,
            Command::Position { .. } => CommandName::Position,
            Command::Replicate => CommandName::Replicate,
            Command::UserSync { .. } => CommandName::UserSync,
            Command::ClearUserSync { .. } => CommandName::ClearUserSync,
            Command::FederationAck { .. } => CommandName::FederationAck,
            Command::UserIp { .. } => CommandName::UserIp,
            Command::LockReleased { .. } => CommandName::LockReleased,
        }
    }

    /// A `_SimpleCommand` (SERVER, NAME, PING, ERROR, ...) with its `data` string.
    pub fn simple(name: CommandName, data: &str) -> Command {
        debug_assert_eq!(name.slots(), &["data"]);
        Command::Simple {
            name,
            data: PyStr::from(data),
        }
    }

    pub fn position(
        stream_name: &str,
        instance_name: &str,
        prev_token: i64,
        new_token: i64,
    ) -> Command {
        Command::Position {
            stream_name: PyStr::from(stream_name),
            instance_name: PyStr::from(instance_name),
            prev_token: PyInt::from_i64(prev_token),
            new_token: PyInt::from_i64(new_token),
        }
    }

    /// RDATA; `token` is `None` for every row of a batch but the last.
    pub fn rdata(
        stream_name: &str,
        instance_name: &str,
        token: Option<i64>,
        row: PyValue,
    ) -> Command {
        Command::Rdata {
            stream_name: PyStr::from(stream_name),
            instance_name: PyStr::from(instance_name),
            token: token.map(PyInt::from_i64),
            row,
        }
    }

    /// `parse_command_from_line`: the name up to the first space, the rest to `from_line`.
    pub fn from_line(line: &PyStr) -> Result<Command, DecodeError> {
        let (name_text, rest) = line.split_first_space();
        let name = CommandName::parse(&name_text)
            .ok_or(DecodeError::UnknownCommand { name: name_text })?;
        Command::from_arguments(name, &rest)
    }

    /// The command class's `from_line(rest)`.
    pub fn from_arguments(name: CommandName, rest: &PyStr) -> Result<Command, DecodeError> {
        Ok(match name {
            CommandName::Rdata => {
                let parts = unpack(&rest.split_space(Some(3)), 4)?;
                let token = if parts[2].eq_str("batch") {
                    None
                } else {
                    Some(int(&parts[2])?)
                };
                Command::Rdata {
                    stream_name: parts[0].clone(),
                    instance_name: parts[1].clone(),
                    token,
                    row: json(&parts[3])?,
                }
            }
            CommandName::Position => {
                let parts = unpack(&rest.split_space(Some(3)), 4)?;
                Command::Position {
                    stream_name: parts[0].clone(),
                    instance_name: parts[1].clone(),
                    prev_token: int(&parts[2])?,
                    new_token: int(&parts[3])?,
                }
            }
            CommandName::Replicate => Command::Replicate,
            CommandName::UserSync => {
                let parts = unpack(&rest.split_space(Some(4)), 5)?;
                let device_id = if parts[2].eq_str("None") {
                    None
                } else {
                    Some(parts[2].clone())
                };
                let is_syncing = match &parts[3] {
                    state if state.eq_str("start") => true,
                    state if state.eq_str("end") => false,
                    state => {
                        return Err(parse_error(
                            "Exception",
                            format!("Invalid USER_SYNC state {}", state.python_repr()),
                        ))
                    }
                };
                Command::UserSync {
                    instance_id: parts[0].clone(),
                    user_id: parts[1].clone(),
                    device_id,
                    is_syncing,
                    last_sync_ms: int(&parts[4])?,
                }
            }
            CommandName::ClearUserSync => Command::ClearUserSync {
                instance_id: rest.clone(),
            },
            CommandName::FederationAck => {
                let parts = unpack(&rest.split_space(None), 2)?;
                Command::FederationAck {
                    instance_name: parts[0].clone(),
                    token: int(&parts[1])?,
                }
            }
            CommandName::UserIp => {
                let parts = unpack(&rest.split_space(Some(1)), 2)?;
                let mut values = unpack_json(&parts[1], 5)?.into_iter();
                let mut next = || values.next().expect("unpacked five");
                Command::UserIp {
                    user_id: parts[0].clone(),
                    access_token: next(),
                    ip: next(),
                    user_agent: next(),
                    device_id: next(),
                    last_seen: next(),
                }
            }
            CommandName::LockReleased => {
                let mut values = unpack_json(rest, 3)?.into_iter();
                let mut next = || values.next().expect("unpacked three");
                Command::LockReleased {
                    instance_name: next(),
                    lock_name: next(),
                    lock_key: next(),
                }
            }
            simple => Command::Simple {
                name: simple,
                data: rest.clone(),
            },
        })
    }

    /// The command class's `to_line()`.
    pub fn to_line(&self) -> Result<PyStr, SendError> {
        let value_error = |e: &dyn std::fmt::Display| SendError::Value(e.to_string());
        let int_text = |i: &PyInt| {
            i.to_python_str()
                .map(|s| PyStr::from(s.as_str()))
                .map_err(|e| value_error(&e))
        };
        let json_text = |v: &PyValue| {
            pyjson::encode(v, NonFinite::Reject)
                .map(|s| PyStr::from(s.as_str()))
                .map_err(|e| value_error(&e))
        };
        let parts: Vec<PyStr> = match self {
            Command::Simple { data, .. } => vec![data.clone()],
            Command::Rdata {
                stream_name,
                instance_name,
                token,
                row,
            } => vec![
                stream_name.clone(),
                instance_name.clone(),
                match token {
                    Some(token) => int_text(token)?,
                    None => PyStr::from("batch"),
                },
                json_text(row)?,
            ],
            Command::Position {
                stream_name,
                instance_name,
                prev_token,
                new_token,
            } => {
                vec![
                    stream_name.clone(),
                    instance_name.clone(),
                    int_text(prev_token)?,
                    int_text(new_token)?,
                ]
            }
            Command::Replicate => vec![PyStr::new()],
            Command::UserSync {
                instance_id,
                user_id,
                device_id,
                is_syncing,
                last_sync_ms,
            } => vec![
                instance_id.clone(),
                user_id.clone(),
                device_id.clone().unwrap_or_else(|| PyStr::from("None")),
                PyStr::from(if *is_syncing { "start" } else { "end" }),
                int_text(last_sync_ms)?,
            ],
            Command::ClearUserSync { instance_id } => vec![instance_id.clone()],
            Command::FederationAck {
                instance_name,
                token,
            } => vec![instance_name.clone(), int_text(token)?],
            Command::UserIp {
                user_id,
                access_token,
                ip,
                user_agent,
                device_id,
                last_seen,
            } => vec![
                user_id.clone(),
                json_text(&PyValue::List(vec![
                    access_token.clone(),
                    ip.clone(),
                    user_agent.clone(),
                    device_id.clone(),
                    last_seen.clone(),
                ]))?,
            ],
            Command::LockReleased {
                instance_name,
                lock_name,
                lock_key,
            } => {
                vec![json_text(&PyValue::List(vec![
                    instance_name.clone(),
                    lock_name.clone(),
                    lock_key.clone(),
                ]))?]
            }
        };
        let mut line = PyStr::new();
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                line.push_code_point(u32::from(' '));
            }
            for &cp in part.code_points() {
                line.push_code_point(cp);
            }
        }
        Ok(line)
    }

    /// The fields as a dict in `__slots__` order, as `streamsim wire decode` prints them.
    pub fn fields(&self) -> Vec<(&'static str, PyValue)> {
        let s = |v: &PyStr| PyValue::Str(v.clone());
        let i = |v: &PyInt| PyValue::Int(v.clone());
        let values: Vec<PyValue> = match self {
            Command::Simple { data, .. } => vec![s(data)],
            Command::Rdata {
                stream_name,
                instance_name,
                token,
                row,
            } => {
                vec![
                    s(stream_name),
                    s(instance_name),
                    token.as_ref().map_or(PyValue::Null, i),
                    row.clone(),
                ]
            }
            Command::Position {
                stream_name,
                instance_name,
                prev_token,
                new_token,
            } => {
                vec![
                    s(stream_name),
                    s(instance_name),
                    i(prev_token),
                    i(new_token),
                ]
            }
            Command::Replicate => vec![],
            Command::UserSync {
                instance_id,
                user_id,
                device_id,
                is_syncing,
                last_sync_ms,
            } => vec![
                s(instance_id),
                s(user_id),
                device_id.as_ref().map_or(PyValue::Null, s),
                PyValue::Bool(*is_syncing),
                i(last_sync_ms),
            ],
            Command::ClearUserSync { instance_id } => vec![s(instance_id)],
            Command::FederationAck {
                instance_name,
                token,
            } => vec![s(instance_name), i(token)],
            Command::UserIp {
                user_id,
                access_token,
                ip,
                user_agent,
                device_id,
                last_seen,
            } => vec![
                s(user_id),
                access_token.clone(),
                ip.clone(),
                user_agent.clone(),
                device_id.clone(),
                last_seen.clone(),
            ],
            Command::LockReleased {
                instance_name,
                lock_name,
                lock_key,
            } => {
                vec![instance_name.clone(), lock_name.clone(), lock_key.clone()]
            }
        };
        self.name().slots().iter().copied().zip(values).collect()
    }

    /// Builds a command from `{"command": NAME, "fields": {...}}` as `streamsim wire encode`
    /// reads it. Fields are checked against the constructor's annotations: exactly the slots,
    /// `str` fields strings, `int` fields integers (not bools), `token`/`device_id` may be null.
    pub fn from_fields(name: &str, fields: &PyValue) -> Result<Command, EncodeFieldsError> {
        let invalid = |what: String| EncodeFieldsError(what);
        let name = CommandName::parse(&PyStr::from(name))
            .ok_or_else(|| invalid(format!("unknown command {name:?}")))?;
        let PyValue::Dict(entries) = fields else {
            return Err(invalid("\"fields\" must be an object".into()));
        };
        let slots = name.slots();
        for (key, _) in entries {
            if !slots.iter().any(|slot| key.eq_str(slot)) {
                return Err(invalid(format!(
                    "{} has no field {}",
                    name.as_str(),
                    key.python_repr()
                )));
            }
        }
        let field = |slot: &str| {
            fields
                .get(slot)
                .ok_or_else(|| invalid(format!("{} needs field {slot:?}", name.as_str())))
        };
        let text = |slot: &str| match field(slot)? {
            PyValue::Str(v) => Ok(v.clone()),
            other => Err(invalid(format!(
                "{slot} must be a string, not {}",
                other.type_name()
            ))),
        };
        let optional_text = |slot: &str| match field(slot)? {
            PyValue::Null => Ok(None),
            PyValue::Str(v) => Ok(Some(v.clone())),
            other => Err(invalid(format!(
                "{slot} must be a string or null, not {}",
                other.type_name()
            ))),
        };
        let integer = |slot: &str| match field(slot)? {
            PyValue::Int(v) => Ok(v.clone()),
            other => Err(invalid(format!(
                "{slot} must be an integer, not {}",
                other.type_name()
            ))),
        };
        Ok(match name {
            CommandName::Rdata => Command::Rdata {
                stream_name: text("stream_name")?,
                instance_name: text("instance_name")?,
                token: match field("token")? {
                    PyValue::Null => None,
                    PyValue::Int(v) => Some(v.clone()),
                    other => {
                        return Err(invalid(format!(
                            "token must be an integer or null, not {}",
                            other.type_name()
                        )))
                    }
                },
                row: field("row")?.clone(),
            },
            CommandName::Position => Command::Position {
                stream_name: text("stream_name")?,
                instance_name: text("instance_name")?,
                prev_token: integer("prev_token")?,
                new_token: integer("new_token")?,
            },
            CommandName::Replicate => Command::Replicate,
            CommandName::UserSync => Command::UserSync {
                instance_id: text("instance_id")?,
                user_id: text("user_id")?,
                device_id: optional_text("device_id")?,
                is_syncing: match field("is_syncing")? {
                    PyValue::Bool(v) => *v,
                    other => {
                        return Err(invalid(format!(
                            "is_syncing must be a boolean, not {}",
                            other.type_name()
                        )))
                    }
                },
                last_sync_ms: integer("last_sync_ms")?,
            },
            CommandName::ClearUserSync => Command::ClearUserSync {
                instance_id: text("instance_id")?,
            },
            CommandName::FederationAck => Command::FederationAck {
                instance_name: text("instance_name")?,
                token: integer("token")?,
            },
            CommandName::UserIp => Command::UserIp {
                user_id: text("user_id")?,
                access_token: PyValue::Str(text("access_token")?),
                ip: PyValue::Str(text("ip")?),
                user_agent: PyValue::Str(text("user_agent")?),
                device_id: optional_text("device_id")?.map_or(PyValue::Null, PyValue::Str),
                last_seen: PyValue::Int(integer("last_seen")?),
            },
            CommandName::LockReleased => Command::LockReleased {
                instance_name: PyValue::Str(text("instance_name")?),
                lock_name: PyValue::Str(text("lock_name")?),
                lock_key: PyValue::Str(text("lock_key")?),
            },
            simple => Command::Simple {
                name: simple,
                data: text("data")?,
            },
        })
    }
}

/// An encode request that does not describe a command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid input: {0}")]
pub struct EncodeFieldsError(pub String);

#!/usr/bin/env python3
"""Synapse 1.163.2's replication wire codec as an oracle.

    wire_oracle.py decode < BYTES    one JSON line per input line (split on b"\\n" only)
    wire_oracle.py encode < JSONL    the exact bytes Synapse would send, per input object

decode, per line, in Synapse's order (Twisted LineOnlyReceiver, then
BaseReplicationStreamProtocol._parse_and_dispatch_line):
  len(line) > 16384        -> {"error":"Line length exceeded"}
  line.strip() == b""      -> {"ignored":"blank"}
  not UTF-8                -> {"error":"UnicodeDecodeError: ..."}
  parse_command_from_line  -> {"error":"<Class>: <message>"} (unknown command: KeyError)
  success                  -> {"command":NAME,"fields":{slot: value, ...}} (slots in order)

encode, per non-blank input line {"command": NAME, "fields": {...}}: the fields are checked
against the command's constructor types, the real command object is built, and what
BaseReplicationStreamProtocol.send_command would write goes to stdout: "NAME " + to_line(),
UTF-8, plus b"\\n"; or one {"error": ...} JSON line.

Parsing and serialising are Synapse's own (synapse.replication.tcp.commands); nothing here
re-implements them.
"""

from __future__ import annotations

import json
import sys

from twisted.protocols.basic import LineOnlyReceiver

from synapse.replication.tcp import commands as C

MAX_LENGTH = LineOnlyReceiver.MAX_LENGTH  # 16384, what the replication protocol inherits

# Constructor parameter types of each command (from the classes' __init__ annotations).
STR, INT, BOOL, OPT_STR, OPT_INT, ANY = "str", "int", "bool", "str|None", "int|None", "any"
_SIMPLE = {"data": STR}
FIELD_TYPES: dict[str, dict[str, str]] = {
    "SERVER": _SIMPLE,
    "RDATA": {"stream_name": STR, "instance_name": STR, "token": OPT_INT, "row": ANY},
    "POSITION": {"stream_name": STR, "instance_name": STR, "prev_token": INT, "new_token": INT},
    "ERROR": _SIMPLE,
    "PING": _SIMPLE,
    "NAME": _SIMPLE,
    "REPLICATE": {},
    "USER_SYNC": {
        "instance_id": STR,
        "user_id": STR,
        "device_id": OPT_STR,
        "is_syncing": BOOL,
        "last_sync_ms": INT,
    },
    "FEDERATION_ACK": {"instance_name": STR, "token": INT},
    "USER_IP": {
        "user_id": STR,
        "access_token": STR,
        "ip": STR,
        "user_agent": STR,
        "device_id": OPT_STR,
        "last_seen": INT,
    },
    "REMOTE_SERVER_UP": _SIMPLE,
    "CLEAR_USER_SYNC": {"instance_id": STR},
    "LOCK_RELEASED": {"instance_name": STR, "lock_name": STR, "lock_key": STR},
    "NEW_ACTIVE_TASK": _SIMPLE,
    "CANCEL_TASK": _SIMPLE,
}
# The table must describe exactly Synapse's commands and their slots, in order.
assert set(FIELD_TYPES) == set(C.COMMAND_MAP), (set(FIELD_TYPES), set(C.COMMAND_MAP))
for _name, _cls in C.COMMAND_MAP.items():
    assert list(FIELD_TYPES[_name]) == list(_cls.__slots__), (_name, _cls.__slots__)


def _dump(obj) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True, allow_nan=True)


# ---- decode ---------------------------------------------------------------------------------


def split_lines(data: bytes) -> list[bytes]:
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # data ended with "\n" (or was empty): no extra line after it
    return lines


def decode_line(line: bytes) -> object:
    if len(line) > MAX_LENGTH:
        return {"error": "Line length exceeded"}
    if line.strip() == b"":
        return {"ignored": "blank"}
    try:
        linestr = line.decode("utf-8")
    except UnicodeDecodeError as e:
        return {"error": "UnicodeDecodeError: %s" % (e,)}
    try:
        cmd = C.parse_command_from_line(linestr)
    except Exception as e:
        return {"error": "%s: %s" % (type(e).__name__, e)}
    return {
        "command": cmd.NAME,
        "fields": {slot: getattr(cmd, slot) for slot in type(cmd).__slots__},
    }


def decode(data: bytes, out) -> None:
    for line in split_lines(data):
        try:
            text = _dump(decode_line(line))
        except Exception as e:  # should not happen
            text = _dump({"error": "oracle: %s: %s" % (type(e).__name__, e)})
        out.write(text.encode("ascii") + b"\n")


# ---- encode ---------------------------------------------------------------------------------


class Invalid(Exception):
    pass


def _check(name: str, key: str, kind: str, value) -> None:
    is_int = isinstance(value, int) and not isinstance(value, bool)
    ok = {
        STR: isinstance(value, str),
        INT: is_int,
        BOOL: isinstance(value, bool),
        OPT_STR: value is None or isinstance(value, str),
        OPT_INT: value is None or is_int,
        ANY: True,
    }[kind]
    if not ok:
        raise Invalid("%s.%s must be %s, got %s" % (name, key, kind, _dump(value)))


def build_command(text: str) -> C.Command:
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise Invalid("not JSON: %s" % (e,))
    if not isinstance(obj, dict):
        raise Invalid("not a JSON object")
    if set(obj) != {"command", "fields"}:
        raise Invalid("the object's keys must be exactly 'command' and 'fields'")
    name, fields = obj["command"], obj["fields"]
    if not isinstance(name, str) or name not in C.COMMAND_MAP:
        raise Invalid("unknown command %s" % (_dump(name),))
    if not isinstance(fields, dict):
        raise Invalid("'fields' must be an object")
    types = FIELD_TYPES[name]
    if set(fields) != set(types):
        raise Invalid(
            "%s fields must be exactly %s, got %s"
            % (name, _dump(list(types)), _dump(sorted(fields)))
        )
    for key, kind in types.items():
        _check(name, key, kind, fields[key])
    return C.COMMAND_MAP[name](**{key: fields[key] for key in types})


def encode_line(text: str) -> bytes:
    """The bytes send_command would write for one input line, or an error JSON line."""
    try:
        cmd = build_command(text)
    except Invalid as e:
        return _dump({"error": "invalid input: %s" % (e,)}).encode("ascii") + b"\n"
    try:
        # BaseReplicationStreamProtocol.send_command, minus the connection state.
        string = "%s %s" % (cmd.NAME, cmd.to_line())
        if "\n" in string:
            raise Exception("Unexpected newline in command")
        encoded = string.encode("utf-8")
        if len(encoded) > MAX_LENGTH:
            raise Exception(
                "Failed to send command %s as too long (%d > %d)"
                % (cmd.NAME, len(encoded), MAX_LENGTH)
            )
    except Exception as e:
        return _dump({"error": "%s: %s" % (type(e).__name__, e)}).encode("ascii") + b"\n"
    return encoded + b"\n"


def encode(data: bytes, out) -> None:
    for raw in split_lines(data):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            out.write(_dump({"error": "invalid input: not UTF-8: %s" % (e,)}).encode() + b"\n")
            continue
        if text.strip() == "":
            continue
        try:
            out.write(encode_line(text))
        except Exception as e:  # should not happen
            out.write(_dump({"error": "oracle: %s: %s" % (type(e).__name__, e)}).encode() + b"\n")


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("decode", "encode"):
        sys.stderr.write("usage: wire_oracle.py decode|encode < input\n")
        return 2
    data = sys.stdin.buffer.read()
    out = sys.stdout.buffer
    (decode if argv[0] == "decode" else encode)(data, out)
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

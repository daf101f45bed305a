"""Strict JSON lines, as both sides of the differential oracles read them.

Python's `json` is more lenient than a JSON reader in Rust (and than RFC 8259): it takes
NaN and Infinity, numbers that overflow a double, duplicate keys (last wins) and lone
surrogates. The oracles refuse all of those as "not valid JSON", so that streamsim and the
oracle agree on what a malformed line is. Blank lines are empty or only Unicode White_Space.
"""

from __future__ import annotations

import json


def is_blank(line: str) -> bool:
    """Empty or only Unicode White_Space (what Rust's str::trim strips).

    Python's str.isspace() also counts U+001C..U+001F; those make a line non-blank here.
    """
    return all(_white(c) for c in line)


def _white(c: str) -> bool:
    return c.isspace() and not "\x1c" <= c <= "\x1f"


def trim_white_space(line: str) -> str:
    """`line` without leading or trailing Unicode White_Space (Rust's str::trim)."""
    i, j = 0, len(line)
    while i < j and _white(line[i]):
        i += 1
    while j > i and _white(line[j - 1]):
        j -= 1
    return line[i:j]


def reject_constant(name: str):
    raise ValueError("%s is not valid JSON" % (name,))


def parse_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("number out of range: %s" % (text,))
    return value


def no_duplicate_keys(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError("duplicate key %s" % (json.dumps(key),))
        obj[key] = value
    return obj


def has_surrogate(value) -> bool:
    if isinstance(value, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, list):
        return any(has_surrogate(v) for v in value)
    if isinstance(value, dict):
        return any(has_surrogate(k) or has_surrogate(v) for k, v in value.items())
    return False


def strict_loads(raw: str):
    """`json.loads` that raises ValueError (or RecursionError) for everything above."""
    value = json.loads(
        raw,
        parse_constant=reject_constant,
        parse_float=parse_float,
        object_pairs_hook=no_duplicate_keys,
    )
    if has_surrogate(value):
        raise ValueError("lone surrogate in a string")
    return value

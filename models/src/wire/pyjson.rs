//! JSON exactly as CPython 3.11's `json` module reads and writes it, which is what Synapse's
//! `json_decoder` and `json_encoder` (synapse/util/json.py) put on and take off the wire.
//!
//! Differences from RFC 8259 that matter for byte-compatibility: integers of any size (up to
//! 4300 digits), floats printed with `repr`, `NaN`/`Infinity` (rejected by Synapse's decoder,
//! accepted by plain `json.loads`), lone surrogates from `\ud800` escapes, duplicate keys (the
//! last value wins at the first key's place), and `ensure_ascii` escapes on output.

use std::fmt::Write as _;

use super::pytext::{json_int, python_float_repr, IntError, PyInt, PyStr};
use crate::limits::JSON_DEPTH_MAX;

/// A Python value as `json.loads` builds it.
#[derive(Clone, Debug, PartialEq)]
pub enum PyValue {
    Null,
    Bool(bool),
    Int(PyInt),
    Float(f64),
    Str(PyStr),
    List(Vec<PyValue>),
    /// Insertion-ordered, keys unique (a `dict`).
    Dict(Vec<(PyStr, PyValue)>),
}

impl PyValue {
    pub fn str(text: &str) -> Self {
        PyValue::Str(PyStr::from(text))
    }

    /// Python's type name, for `TypeError` texts.
    pub fn type_name(&self) -> &'static str {
        match self {
            PyValue::Null => "NoneType",
            PyValue::Bool(_) => "bool",
            PyValue::Int(_) => "int",
            PyValue::Float(_) => "float",
            PyValue::Str(_) => "str",
            PyValue::List(_) => "list",
            PyValue::Dict(_) => "dict",
        }
    }

    /// `list(value)` for the iterables JSON can produce: a list's items, a string's
    /// characters, a dict's keys. `None` for values Python cannot iterate.
    pub fn iterate(&self) -> Option<Vec<PyValue>> {
        match self {
            PyValue::List(items) => Some(items.clone()),
            PyValue::Str(text) => Some(
                text.code_points()
                    .iter()
                    .map(|&cp| {
                        let mut one = PyStr::new();
                        one.push_code_point(cp);
                        PyValue::Str(one)
                    })
                    .collect(),
            ),
            PyValue::Dict(entries) => Some(
                entries
                    .iter()
                    .map(|(key, _)| PyValue::Str(key.clone()))
                    .collect(),
            ),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&PyValue> {
        match self {
            PyValue::Dict(entries) => entries.iter().find(|(k, _)| k.eq_str(key)).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Why a JSON text could not be read; `python_class` is the exception CPython raises.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// `json.JSONDecodeError` (a `ValueError`), with CPython's message and 0-based position.
    #[error("{message}: line 1 column {} (char {position})", position + 1)]
    Decode {
        message: &'static str,
        position: usize,
    },
    /// Synapse's `parse_constant` hook rejects `NaN`, `Infinity` and `-Infinity`.
    #[error("Invalid JSON value: '{0}'")]
    InvalidConstant(&'static str),
    #[error(transparent)]
    Int(#[from] IntError),
    #[error("duplicate key {0}")]
    DuplicateKey(String),
    #[error("maximum recursion depth exceeded while decoding a JSON {0} from a unicode string")]
    Recursion(&'static str),
}

impl JsonError {
    pub fn python_class(&self) -> &'static str {
        match self {
            JsonError::Decode { .. } => "JSONDecodeError",
            JsonError::InvalidConstant(_) | JsonError::Int(_) | JsonError::DuplicateKey(_) => {
                "ValueError"
            }
            JsonError::Recursion(_) => "RecursionError",
        }
    }
}

/// Which of `NaN`, `Infinity`, `-Infinity` the reader accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Constants {
    /// Plain `json.loads`: they become floats.
    Accept,
    /// Synapse's `json_decoder`: `ValueError`.
    Reject,
}

/// `JSONDecoder.decode(text)`: leading and trailing JSON whitespace allowed, nothing else after.
pub fn decode(text: &PyStr, constants: Constants) -> Result<PyValue, JsonError> {
    decode_with(text, constants, false)
}

/// [`decode`], but a key repeated in one object is an error instead of overwriting (what
/// `object_pairs_hook` can enforce; used for op scripts, where a repeated key is a typo).
pub fn decode_rejecting_duplicates(
    text: &PyStr,
    constants: Constants,
) -> Result<PyValue, JsonError> {
    decode_with(text, constants, true)
}

fn decode_with(
    text: &PyStr,
    constants: Constants,
    reject_duplicates: bool,
) -> Result<PyValue, JsonError> {
    let mut reader = Reader {
        text: text.code_points(),
        constants,
        depth: 0,
        reject_duplicates,
    };
    let start = reader.skip_whitespace(0);
    let (value, end) = reader.value(start)?.ok_or(JsonError::Decode {
        message: "Expecting value",
        position: start,
    })?;
    let end = reader.skip_whitespace(end);
    if end != reader.text.len() {
        return Err(JsonError::Decode {
            message: "Extra data",
            position: end,
        });
    }
    Ok(value)
}

struct Reader<'a> {
    text: &'a [u32],
    constants: Constants,
    depth: usize,
    reject_duplicates: bool,
}

impl Reader<'_> {
    fn at(&self, idx: usize) -> Option<u32> {
        self.text.get(idx).copied()
    }

    fn is(&self, idx: usize, ch: char) -> bool {
        self.at(idx) == Some(u32::from(ch))
    }

    fn matches(&self, idx: usize, word: &str) -> bool {
        word.chars().enumerate().all(|(i, ch)| self.is(idx + i, ch))
    }

    fn skip_whitespace(&self, mut idx: usize) -> usize {
        while matches!(self.at(idx), Some(0x20 | 0x09 | 0x0A | 0x0D)) {
            idx += 1;
        }
        idx
    }

    /// `scan_once`: `Ok(None)` is CPython's `StopIteration` (no value starts here).
    fn value(&mut self, idx: usize) -> Result<Option<(PyValue, usize)>, JsonError> {
        let Some(ch) = self.at(idx).and_then(char::from_u32) else {
            return Ok(None);
        };
        let word = |value, len| Ok(Some((value, idx + len)));
        match ch {
            '"' => self
                .string(idx + 1)
                .map(|(s, end)| Some((PyValue::Str(s), end))),
            '{' => self
                .nested("object", |reader| reader.object(idx + 1))
                .map(Some),
            '[' => self
                .nested("array", |reader| reader.array(idx + 1))
                .map(Some),
            'n' if self.matches(idx, "null") => word(PyValue::Null, 4),
            't' if self.matches(idx, "true") => word(PyValue::Bool(true), 4),
            'f' if self.matches(idx, "false") => word(PyValue::Bool(false), 5),
            'N' if self.matches(idx, "NaN") => self.constant("NaN", f64::NAN, idx + 3),
            'I' if self.matches(idx, "Infinity") => {
                self.constant("Infinity", f64::INFINITY, idx + 8)
            }
            '-' if self.matches(idx, "-Infinity") => {
                self.constant("-Infinity", f64::NEG_INFINITY, idx + 9)
            }
            _ => self.number(idx),
        }
    }

    fn constant(
        &self,
        name: &'static str,
        value: f64,
        end: usize,
    ) -> Result<Option<(PyValue, usize)>, JsonError> {
        match self.constants {
            Constants::Accept => Ok(Some((PyValue::Float(value), end))),
            Constants::Reject => Err(JsonError::InvalidConstant(name)),
        }
    }

    fn nested(
        &mut self,
        kind: &'static str,
        parse: impl FnOnce(&mut Self) -> Result<(PyValue, usize), JsonError>,
    ) -> Result<(PyValue, usize), JsonError> {
        if self.depth >= JSON_DEPTH_MAX {
            return Err(JsonError::Recursion(kind));
        }
        self.depth += 1;
        let result = parse(self);
        self.depth -= 1;
        result
    }

    fn digit(&self, idx: usize) -> bool {
        matches!(self.at(idx), Some(0x30..=0x39))
    }

    /// `_match_number_unicode`: `-?(0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?`, ASCII digits only; an
    /// exponent without digits is left unread.
    fn number(&self, start: usize) -> Result<Option<(PyValue, usize)>, JsonError> {
        let mut idx = start;
        let negative = self.is(idx, '-');
        if negative {
            idx += 1;
        }
        match self.at(idx) {
            Some(0x31..=0x39) => {
                while self.digit(idx) {
                    idx += 1;
                }
            }
            Some(0x30) => idx += 1,
            _ => return Ok(None),
        }
        let integer_end = idx;
        let mut is_float = false;
        if self.is(idx, '.') && self.digit(idx + 1) {
            is_float = true;
            idx += 2;
            while self.digit(idx) {
                idx += 1;
            }
        }
        if self.is(idx, 'e') || self.is(idx, 'E') {
            let exponent_start = idx;
            idx += 1;
            if self.is(idx, '-') || self.is(idx, '+') {
                idx += 1;
            }
            let digits_start = idx;
            while self.digit(idx) {
                idx += 1;
            }
            if idx > digits_start {
                is_float = true;
            } else {
                idx = exponent_start;
            }
        }
        let text: String = self.text[start..idx]
            .iter()
            .map(|&cp| cp as u8 as char)
            .collect();
        if is_float {
            let value: f64 = text.parse().expect("matched a float literal");
            return Ok(Some((PyValue::Float(value), idx)));
        }
        let digits_start = start + usize::from(negative);
        let digits: String = self.text[digits_start..integer_end]
            .iter()
            .map(|&cp| cp as u8 as char)
            .collect();
        Ok(Some((PyValue::Int(json_int(negative, &digits)?), idx)))
    }

    /// `scanstring` with `strict=True`; `start` is just after the opening quote.
    fn string(&self, start: usize) -> Result<(PyStr, usize), JsonError> {
        let unterminated = JsonError::Decode {
            message: "Unterminated string starting at",
            position: start - 1,
        };
        let mut out = PyStr::new();
        let mut idx = start;
        loop {
            let Some(cp) = self.at(idx) else {
                return Err(unterminated);
            };
            match cp {
                0x22 => return Ok((out, idx + 1)),
                0x5C => {
                    let Some(escape) = self.at(idx + 1) else {
                        return Err(unterminated);
                    };
                    let simple = match char::from_u32(escape) {
                        Some('"') => Some(0x22),
                        Some('\\') => Some(0x5C),
                        Some('/') => Some(0x2F),
                        Some('b') => Some(0x08),
                        Some('f') => Some(0x0C),
                        Some('n') => Some(0x0A),
                        Some('r') => Some(0x0D),
                        Some('t') => Some(0x09),
                        Some('u') => None,
                        _ => {
                            return Err(JsonError::Decode {
                                message: "Invalid \\escape",
                                position: idx,
                            })
                        }
                    };
                    if let Some(decoded) = simple {
                        out.push_code_point(decoded);
                        idx += 2;
                        continue;
                    }
                    let mut code = self.hex4(idx + 2).ok_or(JsonError::Decode {
                        message: "Invalid \\uXXXX escape",
                        position: idx + 1,
                    })?;
                    idx += 6;
                    if (0xD800..=0xDBFF).contains(&code)
                        && self.is(idx, '\\')
                        && self.is(idx + 1, 'u')
                    {
                        let low = self.hex4(idx + 2).ok_or(JsonError::Decode {
                            message: "Invalid \\uXXXX escape",
                            position: idx + 1,
                        })?;
                        if (0xDC00..=0xDFFF).contains(&low) {
                            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                            idx += 6;
                        }
                    }
                    out.push_code_point(code);
                }
                _ if cp < 0x20 => {
                    return Err(JsonError::Decode {
                        message: "Invalid control character at",
                        position: idx,
                    })
                }
                _ => {
                    out.push_code_point(cp);
                    idx += 1;
                }
            }
        }
    }

    fn hex4(&self, idx: usize) -> Option<u32> {
        (0..4).try_fold(0u32, |acc, i| {
            let digit = char::from_u32(self.at(idx + i)?)?.to_digit(16)?;
            Some(acc * 16 + digit)
        })
    }

    fn object(&mut self, start: usize) -> Result<(PyValue, usize), JsonError> {
        let mut entries: Vec<(PyStr, PyValue)> = Vec::new();
        let mut idx = self.skip_whitespace(start);
        if self.is(idx, '}') {
            return Ok((PyValue::Dict(entries), idx + 1));
        }
        loop {
            if !self.is(idx, '"') {
                return Err(JsonError::Decode {
                    message: "Expecting property name enclosed in double quotes",
                    position: idx,
                });
            }
            let (key, after_key) = self.string(idx + 1)?;
            idx = self.skip_whitespace(after_key);
            if !self.is(idx, ':') {
                return Err(JsonError::Decode {
                    message: "Expecting ':' delimiter",
                    position: idx,
                });
            }
            idx = self.skip_whitespace(idx + 1);
            let (value, after_value) = self.value(idx)?.ok_or(JsonError::Decode {
                message: "Expecting value",
                position: idx,
            })?;
            match entries.iter_mut().find(|(existing, _)| *existing == key) {
                Some(_) if self.reject_duplicates => {
                    return Err(JsonError::DuplicateKey(key.python_repr()))
                }
                Some(entry) => entry.1 = value,
                None => entries.push((key, value)),
            }
            idx = self.skip_whitespace(after_value);
            if self.is(idx, '}') {
                return Ok((PyValue::Dict(entries), idx + 1));
            }
            if !self.is(idx, ',') {
                return Err(JsonError::Decode {
                    message: "Expecting ',' delimiter",
                    position: idx,
                });
            }
            idx = self.skip_whitespace(idx + 1);
        }
    }

    fn array(&mut self, start: usize) -> Result<(PyValue, usize), JsonError> {
        let mut items = Vec::new();
        let mut idx = self.skip_whitespace(start);
        if self.is(idx, ']') {
            return Ok((PyValue::List(items), idx + 1));
        }
        loop {
            let (value, after_value) = self.value(idx)?.ok_or(JsonError::Decode {
                message: "Expecting value",
                position: idx,
            })?;
            items.push(value);
            idx = self.skip_whitespace(after_value);
            if self.is(idx, ']') {
                return Ok((PyValue::List(items), idx + 1));
            }
            if !self.is(idx, ',') {
                return Err(JsonError::Decode {
                    message: "Expecting ',' delimiter",
                    position: idx,
                });
            }
            idx = self.skip_whitespace(idx + 1);
        }
    }
}

/// Why a value could not be written; both are `ValueError` in Python.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("Out of range float values are not JSON compliant")]
    NonFiniteFloat,
    #[error(transparent)]
    Int(#[from] IntError),
}

/// Whether `NaN`/`Infinity` may be written (`allow_nan`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonFinite {
    Allow,
    Reject,
}

/// `json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=...)`.encode(value):
/// the result is pure ASCII.
pub fn encode(value: &PyValue, non_finite: NonFinite) -> Result<String, EncodeError> {
    let mut out = String::new();
    write_value(&mut out, value, non_finite)?;
    Ok(out)
}

fn write_value(
    out: &mut String,
    value: &PyValue,
    non_finite: NonFinite,
) -> Result<(), EncodeError> {
    match value {
        PyValue::Null => out.push_str("null"),
        PyValue::Bool(true) => out.push_str("true"),
        PyValue::Bool(false) => out.push_str("false"),
        PyValue::Int(int) => out.push_str(&int.to_python_str()?),
        PyValue::Float(float) => {
            if !float.is_finite() && non_finite == NonFinite::Reject {
                return Err(EncodeError::NonFiniteFloat);
            }
            out.push_str(&python_float_repr(*float));
        }
        PyValue::Str(text) => write_ascii_string(out, text),
        PyValue::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item, non_finite)?;
            }
            out.push(']');
        }
        PyValue::Dict(entries) => {
            out.push('{');
            for (i, (key, item)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_ascii_string(out, key);
                out.push(':');
                write_value(out, item, non_finite)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

/// `py_encode_basestring_ascii`: `"` and `\` escaped, the short escapes for control characters,
/// everything outside `' '..='~'` as `\uXXXX` (lower-case hex, surrogate pairs above U+FFFF).
pub fn write_ascii_string(out: &mut String, text: &PyStr) {
    out.push('"');
    for &cp in text.code_points() {
        match cp {
            0x22 => out.push_str("\\\""),
            0x5C => out.push_str("\\\\"),
            0x0A => out.push_str("\\n"),
            0x0D => out.push_str("\\r"),
            0x09 => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0C => out.push_str("\\f"),
            0x20..=0x7E => out.push(cp as u8 as char),
            0x10000.. => {
                let v = cp - 0x10000;
                let _ = write!(
                    out,
                    "\\u{:04x}\\u{:04x}",
                    0xD800 + (v >> 10),
                    0xDC00 + (v & 0x3FF)
                );
            }
            _ => {
                let _ = write!(out, "\\u{cp:04x}");
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(text: &str) -> Result<String, String> {
        decode(&PyStr::from(text), Constants::Reject)
            .map_err(|e| e.python_class().to_owned())
            .and_then(|v| encode(&v, NonFinite::Allow).map_err(|e| e.to_string()))
    }

    #[test]
    fn reads_and_writes_like_cpython() {
        assert_eq!(
            roundtrip(r#" {"b": [1, 2.50, -0, 1E2], "a": "é\ud83d\ude00\ud800"} "#).unwrap(),
            r#"{"b":[1,2.5,0,100.0],"a":"\u00e9\ud83d\ude00\ud800"}"#
        );
        assert_eq!(
            roundtrip(r#"{"a":1,"b":2,"a":3}"#).unwrap(),
            r#"{"a":3,"b":2}"#
        );
        assert_eq!(roundtrip("1e400").unwrap(), "Infinity");
        assert_eq!(
            roundtrip("123456789012345678901234567890").unwrap(),
            "123456789012345678901234567890"
        );
        assert_eq!(roundtrip("\"\u{7f}/\"").unwrap(), "\"\\u007f/\"");
    }

    #[test]
    fn rejects_what_cpython_rejects() {
        for (text, class) in [
            ("", "JSONDecodeError"),
            ("01", "JSONDecodeError"),
            ("1.", "JSONDecodeError"),
            ("[1,]", "JSONDecodeError"),
            ("{\"a\":1,}", "JSONDecodeError"),
            ("\"\t\"", "JSONDecodeError"),
            ("\"\\x\"", "JSONDecodeError"),
            ("NaN", "ValueError"),
            ("[-Infinity]", "ValueError"),
            ("nul", "JSONDecodeError"),
        ] {
            assert_eq!(roundtrip(text), Err(class.to_owned()), "{text:?}");
        }
        assert_eq!(roundtrip(&"9".repeat(4301)), Err("ValueError".to_owned()));
        assert_eq!(
            roundtrip(&"[".repeat(JSON_DEPTH_MAX + 1)),
            Err("RecursionError".to_owned())
        );
    }

    #[test]
    fn exponent_without_digits_is_left_unread() {
        assert_eq!(roundtrip("1e"), Err("JSONDecodeError".to_owned()));
        assert_eq!(roundtrip("[1E+]"), Err("JSONDecodeError".to_owned()));
    }

    #[test]
    fn constants_are_floats_for_plain_loads() {
        let value = decode(&PyStr::from("[NaN,-Infinity]"), Constants::Accept).unwrap();
        assert_eq!(encode(&value, NonFinite::Allow).unwrap(), "[NaN,-Infinity]");
        assert_eq!(
            encode(&value, NonFinite::Reject),
            Err(EncodeError::NonFiniteFloat)
        );
    }
}

//! Python's text and number semantics that Synapse's wire code inherits: `str` with lone
//! surrogates, `int(text)`, and `repr(float)`.
//!
//! Synapse parses tokens with Python's `int()` and JSON with CPython's `json` module. Being
//! byte-compatible with it means accepting what CPython 3.11 accepts (Unicode digits and
//! spaces, underscores, a 4300-digit limit) and printing numbers as CPython prints them.

use std::fmt;

use crate::limits::PYTHON_INT_DIGITS_MAX;

/// A Python `str`: a sequence of code points that, unlike Rust's `String`, may contain lone
/// surrogates (JSON's `"\ud800"` decodes to one in Python).
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PyStr(Vec<u32>);

impl PyStr {
    pub fn new() -> Self {
        PyStr(Vec::new())
    }

    pub fn push_code_point(&mut self, code_point: u32) {
        debug_assert!(code_point < 0x110000);
        self.0.push(code_point);
    }

    pub fn code_points(&self) -> &[u32] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `str.encode("utf-8")`: fails on a lone surrogate, as CPython does.
    pub fn to_utf8(&self) -> Result<String, LoneSurrogate> {
        let mut text = String::with_capacity(self.0.len());
        for (position, &cp) in self.0.iter().enumerate() {
            text.push(char::from_u32(cp).ok_or(LoneSurrogate {
                code_point: cp,
                position,
            })?);
        }
        Ok(text)
    }

    /// Python's `line.split(" ", maxsplit)` (`None` = no maximum): splits on every single
    /// space, so two spaces give an empty part.
    pub fn split_space(&self, maxsplit: Option<usize>) -> Vec<PyStr> {
        let space = u32::from(' ');
        let mut parts = Vec::new();
        let mut rest = self.0.as_slice();
        // Each part is copied once from its slice: this runs on every replication command.
        while maxsplit.is_none_or(|max| parts.len() < max) {
            match rest.iter().position(|&cp| cp == space) {
                Some(index) => {
                    parts.push(PyStr(rest[..index].to_vec()));
                    rest = &rest[index + 1..];
                }
                None => break,
            }
        }
        parts.push(PyStr(rest.to_vec()));
        parts
    }

    /// `line.find(" ")` then the two halves around it, as `parse_command_from_line` does.
    pub fn split_first_space(&self) -> (PyStr, PyStr) {
        match self.0.iter().position(|&cp| cp == u32::from(' ')) {
            Some(idx) => (
                PyStr(self.0[..idx].to_vec()),
                PyStr(self.0[idx + 1..].to_vec()),
            ),
            None => (self.clone(), PyStr::new()),
        }
    }

    pub fn eq_str(&self, text: &str) -> bool {
        self.0.iter().copied().eq(text.chars().map(u32::from))
    }

    pub fn contains(&self, cp: char) -> bool {
        self.0.contains(&u32::from(cp))
    }

    /// Python's `repr(str)`: the text form Synapse's error messages embed (`%r`).
    pub fn python_repr(&self) -> String {
        let quote = if self.contains('\'') && !self.contains('"') {
            '"'
        } else {
            '\''
        };
        let mut out = String::new();
        out.push(quote);
        for &cp in &self.0 {
            match cp {
                0x5C => out.push_str("\\\\"),
                0x09 => out.push_str("\\t"),
                0x0A => out.push_str("\\n"),
                0x0D => out.push_str("\\r"),
                _ if cp == u32::from(quote) => {
                    out.push('\\');
                    out.push(quote);
                }
                _ if cp < 0x20 || cp == 0x7F => out.push_str(&format!("\\x{cp:02x}")),
                _ => match char::from_u32(cp) {
                    Some(ch) if cp < 0x80 || is_printable(ch) => out.push(ch),
                    _ if cp <= 0xFF => out.push_str(&format!("\\x{cp:02x}")),
                    _ if cp <= 0xFFFF => out.push_str(&format!("\\u{cp:04x}")),
                    _ => out.push_str(&format!("\\U{cp:08x}")),
                },
            }
        }
        out.push(quote);
        out
    }
}

/// Rough `str.isprintable` for error texts only (never compared byte for byte).
fn is_printable(ch: char) -> bool {
    !ch.is_control() && !matches!(ch as u32, 0xA0 | 0xAD | 0x2028 | 0x2029 | 0xFEFF)
}

impl From<&str> for PyStr {
    fn from(text: &str) -> Self {
        // Sized once: wire text is ASCII almost always, one code point per byte (collecting
        // `chars()` grew the vector from a quarter of that).
        let mut code_points = Vec::with_capacity(text.len());
        if text.is_ascii() {
            code_points.extend(text.bytes().map(u32::from));
        } else {
            code_points.extend(text.chars().map(u32::from));
        }
        PyStr(code_points)
    }
}

impl fmt::Debug for PyStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.python_repr())
    }
}

impl fmt::Display for PyStr {
    /// Lossy: lone surrogates show as U+FFFD. For messages, never for wire bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &cp in &self.0 {
            write!(f, "{}", char::from_u32(cp).unwrap_or('\u{FFFD}'))?;
        }
        Ok(())
    }
}

/// A `str` with a lone surrogate could not be encoded as UTF-8.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("'utf-8' codec can't encode character '\\u{code_point:04x}' in position {position}: surrogates not allowed")]
pub struct LoneSurrogate {
    pub code_point: u32,
    pub position: usize,
}

/// A Python `int` of any size, kept as its canonical decimal text (`-0` never occurs).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PyInt {
    negative: bool,
    /// Decimal digits without leading zeros ("0" for zero).
    digits: String,
}

impl PyInt {
    pub fn from_i64(value: i64) -> Self {
        PyInt {
            negative: value < 0,
            digits: value.unsigned_abs().to_string(),
        }
    }

    /// From an optional `-` and ASCII digits, as the JSON scanner hands them over.
    fn from_sign_digits(negative: bool, digits: &str) -> Self {
        let trimmed = digits.trim_start_matches('0');
        let digits = if trimmed.is_empty() {
            "0".to_owned()
        } else {
            trimmed.to_owned()
        };
        PyInt {
            negative: negative && digits != "0",
            digits,
        }
    }

    pub fn to_i64(&self) -> Option<i64> {
        let text = self.to_string();
        text.parse().ok()
    }

    /// Number of decimal digits, what CPython's conversion limit counts.
    pub fn digit_count(&self) -> usize {
        self.digits.len()
    }

    /// `str(value)`, which CPython refuses above 4300 digits.
    pub fn to_python_str(&self) -> Result<String, IntError> {
        if self.digit_count() > PYTHON_INT_DIGITS_MAX {
            return Err(IntError::TooManyDigitsToStr);
        }
        Ok(self.to_string())
    }
}

impl fmt::Display for PyInt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.negative {
            f.write_str("-")?;
        }
        f.write_str(&self.digits)
    }
}

/// Why Python's `int()` or `str()` of an int failed; both are `ValueError` in Python.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IntError {
    #[error("invalid literal for int() with base 10: {0}")]
    InvalidLiteral(String),
    #[error("Exceeds the limit (4300 digits) for integer string conversion: value has {digits} digits; use sys.set_int_max_str_digits() to increase the limit")]
    TooManyDigits { digits: usize },
    #[error("Exceeds the limit (4300 digits) for integer string conversion; use sys.set_int_max_str_digits() to increase the limit")]
    TooManyDigitsToStr,
}

/// First code point of each run of ten Unicode decimal digits (category Nd) in the Unicode 14.0
/// database of CPython 3.11: `[c for c in range(0x110000) if unicodedata.decimal(chr(c), None) == 0]`.
/// Every run is exactly ten code points long with values 0..9 (checked when generated).
const DECIMAL_ZEROS: [u32; 66] = [
    0x30, 0x660, 0x6F0, 0x7C0, 0x966, 0x9E6, 0xA66, 0xAE6, 0xB66, 0xBE6, 0xC66, 0xCE6, 0xD66,
    0xDE6, 0xE50, 0xED0, 0xF20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90,
    0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0xFF10,
    0x104A0, 0x10D30, 0x11066, 0x110F0, 0x11136, 0x111D0, 0x112F0, 0x11450, 0x114D0, 0x11650,
    0x116C0, 0x11730, 0x118E0, 0x11950, 0x11C50, 0x11D50, 0x11DA0, 0x16A60, 0x16AC0, 0x16B50,
    0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E140, 0x1E2F0, 0x1E950, 0x1FBF0,
];

/// `str.isspace()` in CPython 3.11 (`Py_UNICODE_ISSPACE`): the code points `int()` treats as
/// surrounding whitespace.
const PYTHON_SPACES: [u32; 29] = [
    0x9, 0xA, 0xB, 0xC, 0xD, 0x1C, 0x1D, 0x1E, 0x1F, 0x20, 0x85, 0xA0, 0x1680, 0x2000, 0x2001,
    0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200A, 0x2028, 0x2029, 0x202F,
    0x205F, 0x3000,
];

fn decimal_value(cp: u32) -> Option<u32> {
    let idx = DECIMAL_ZEROS.partition_point(|&zero| zero <= cp);
    let zero = DECIMAL_ZEROS[idx.checked_sub(1)?];
    (cp - zero < 10).then_some(cp - zero)
}

fn is_python_space(cp: u32) -> bool {
    PYTHON_SPACES.binary_search(&cp).is_ok()
}

/// Python's `int(text)` with base 10, as CPython 3.11 does it: Unicode spaces and decimal
/// digits are first mapped to ASCII (`_PyUnicode_TransformDecimalAndSpaceToASCII`), then
/// `PyLong_FromString` takes optional ASCII whitespace, a sign, digits with single underscores
/// between them, and optional whitespace; more than 4300 digits is an error.
pub fn python_int(text: &PyStr) -> Result<PyInt, IntError> {
    let invalid = || IntError::InvalidLiteral(text.python_repr());
    let ascii: Vec<u8> = text
        .code_points()
        .iter()
        .map(|&cp| {
            // ASCII passes through untouched, so \x1c..\x1f (spaces to `str.isspace`) are
            // not spaces to `PyLong_FromString`.
            if cp < 0x80 {
                cp as u8
            } else if is_python_space(cp) {
                b' '
            } else if let Some(value) = decimal_value(cp) {
                b'0' + value as u8
            } else {
                b'?'
            }
        })
        .collect();
    let is_space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r');
    let start = ascii
        .iter()
        .position(|b| !is_space(b))
        .ok_or_else(invalid)?;
    let end = ascii
        .iter()
        .rposition(|b| !is_space(b))
        .expect("a non-space exists")
        + 1;
    let mut body = &ascii[start..end];
    let negative = match body.first() {
        Some(b'-') => true,
        Some(b'+') => false,
        _ => false,
    };
    if matches!(body.first(), Some(b'-' | b'+')) {
        body = &body[1..];
    }
    let mut digits = String::with_capacity(body.len());
    let mut previous_was_digit = false;
    for &byte in body {
        match byte {
            b'0'..=b'9' => {
                digits.push(byte as char);
                previous_was_digit = true;
            }
            b'_' if previous_was_digit => previous_was_digit = false,
            _ => return Err(invalid()),
        }
    }
    if digits.is_empty() || !previous_was_digit {
        return Err(invalid());
    }
    if digits.len() > PYTHON_INT_DIGITS_MAX {
        return Err(IntError::TooManyDigits {
            digits: digits.len(),
        });
    }
    Ok(PyInt::from_sign_digits(negative, &digits))
}

/// A JSON integer literal (`-?(0|[1-9][0-9]*)`) as CPython's scanner converts it.
pub(crate) fn json_int(negative: bool, digits: &str) -> Result<PyInt, IntError> {
    if digits.len() > PYTHON_INT_DIGITS_MAX {
        return Err(IntError::TooManyDigits {
            digits: digits.len(),
        });
    }
    Ok(PyInt::from_sign_digits(negative, digits))
}

/// `repr(float)` as CPython prints it (shortest round-trip digits; fixed notation for decimal
/// exponents -4..16, else `d.ddde±XX`), with JSON's `NaN`/`Infinity` for the specials.
pub fn python_float_repr(value: f64) -> String {
    if value.is_nan() {
        return "NaN".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    // Rust's `{:e}` prints the shortest digits that round-trip, like CPython's repr.
    let scientific = format!("{:e}", value.abs());
    let (mantissa, exponent) = scientific.split_once('e').expect("{:e} has an exponent");
    let exponent: i32 = exponent.parse().expect("{:e} exponent is an integer");
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let sign = if value.is_sign_negative() { "-" } else { "" };
    if (-4..16).contains(&exponent) {
        let point = exponent + 1;
        let body = if point <= 0 {
            format!("0.{}{}", "0".repeat((-point) as usize), digits)
        } else if point as usize >= digits.len() {
            format!("{}{}.0", digits, "0".repeat(point as usize - digits.len()))
        } else {
            format!(
                "{}.{}",
                &digits[..point as usize],
                &digits[point as usize..]
            )
        };
        format!("{sign}{body}")
    } else {
        let (first, rest) = digits.split_at(1);
        let fraction = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        format!("{sign}{first}{fraction}e{exp_sign}{:02}", exponent.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(text: &str) -> Result<String, IntError> {
        python_int(&PyStr::from(text)).map(|v| v.to_string())
    }

    #[test]
    fn int_accepts_what_cpython_accepts() {
        assert_eq!(int("42").unwrap(), "42");
        assert_eq!(int(" +0_0_7\t").unwrap(), "7");
        assert_eq!(int("-0").unwrap(), "0");
        assert_eq!(int("\u{663}\u{664}").unwrap(), "34");
        assert_eq!(int("\u{3000}12\u{85}").unwrap(), "12");
        assert_eq!(
            int("123456789012345678901234567890").unwrap(),
            "123456789012345678901234567890"
        );
    }

    #[test]
    fn int_rejects_what_cpython_rejects() {
        for bad in [
            "", " ", "1_", "_1", "1__2", "+-1", "1.0", "0x10", "\u{b2}", "1 2", "- 1", "\x1c5",
        ] {
            assert!(
                matches!(int(bad), Err(IntError::InvalidLiteral(_))),
                "{bad:?} should be invalid"
            );
        }
        assert!(matches!(
            int(&"9".repeat(4301)),
            Err(IntError::TooManyDigits { digits: 4301 })
        ));
        assert!(int(&"9".repeat(4300)).is_ok());
    }

    #[test]
    fn float_repr_matches_cpython() {
        let cases = [
            (1.0, "1.0"),
            (1.5, "1.5"),
            (-0.0, "-0.0"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (123456789.125, "123456789.125"),
            (1e300, "1e+300"),
            (5e-324, "5e-324"),
            (0.1 + 0.2, "0.30000000000000004"),
            (f64::INFINITY, "Infinity"),
            (f64::NAN, "NaN"),
        ];
        for (value, expected) in cases {
            assert_eq!(python_float_repr(value), expected);
        }
    }

    #[test]
    fn split_matches_python() {
        let parts = |text: &str, max| {
            PyStr::from(text)
                .split_space(max)
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(parts("a  b c d", Some(3)), vec!["a", "", "b", "c d"]);
        assert_eq!(parts("a b", None), vec!["a", "b"]);
        assert_eq!(parts("", None), vec![""]);
        assert_eq!(parts(" a ", None), vec!["", "a", ""]);
        assert_eq!(parts("a b", Some(0)), vec!["a b"]);
        assert_eq!(parts("a b ", Some(1)), vec!["a", "b "]);
    }
}

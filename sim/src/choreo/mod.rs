//! `streamsim choreo`: a choreography (tools/synapse/CHOREO.md) run through the models, one
//! JSON line of observables per step, to be compared byte for byte with what the system
//! oracle prints for real Synapse 1.163.2.
//!
//! - [`parse`]: the step language; a malformed line is a typed error naming its line.
//! - [`driver`]: one deterministic, step-driven composition of the sans-IO models (database,
//!   processes, Redis bus, zero latency, simulated milliseconds).
//!
//! [`run_script`] ties them together: every step's output is compact JSON with sorted keys
//! and ASCII only (`\uXXXX` escapes, as Python's `json.dumps`).

pub mod driver;
pub mod parse;

use serde_json::{Map, Value};
use streamsim_models::fixes::Fixes;

/// Runs a whole script; one output line per step (blank and comment lines print nothing).
pub fn run_script(text: &str) -> Vec<String> {
    run_script_with(text, Fixes::NONE)
}

/// [`run_script`] with the proposed fixes `fixes` on in every process (the system oracle's
/// `--fix`; `tests/data/system/fix-all/` holds real Synapse's output with all four).
pub fn run_script_with(text: &str, fixes: Fixes) -> Vec<String> {
    let mut driver = driver::Driver::with_fixes(fixes);
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let step = match parse::parse_line(line) {
            Ok(None) => continue,
            Ok(Some(step)) => step,
            Err(error) => {
                out.push(error_line(number, &error.to_string()));
                continue;
            }
        };
        match driver.run(&step) {
            Ok(mut keys) => {
                keys.insert("step".into(), Value::from(number));
                keys.insert("op".into(), Value::from(step.op()));
                out.push(ascii_json(&Value::Object(keys)));
            }
            Err(error) => out.push(error_line(number, &error.to_string())),
        }
    }
    out
}

fn error_line(number: usize, message: &str) -> String {
    let mut keys = Map::new();
    keys.insert(
        "error".into(),
        Value::String(format!("line {number}: {message}")),
    );
    ascii_json(&Value::Object(keys))
}

/// Compact JSON with sorted keys (`serde_json::Map` is a `BTreeMap`) and every non-ASCII
/// character escaped as `\uXXXX` (surrogate pairs above the BMP), as `json.dumps` writes it:
/// the op-script printer's [`streamsim_models::opscript::to_python_json`].
pub fn ascii_json(value: &Value) -> String {
    streamsim_models::opscript::to_python_json(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_sorted_compact_ascii() {
        let value: Value = serde_json::from_str(r#"{"b":1,"a":["é","𝄞"]}"#).unwrap();
        assert_eq!(
            ascii_json(&value),
            r#"{"a":["\u00e9","\ud834\udd1e"],"b":1}"#
        );
    }

    #[test]
    fn malformed_lines_and_steps_before_setup_are_errors_and_the_script_goes_on() {
        let out = run_script("# comment\n\n{\n{\"op\":\"observe\",\"process\":\"main\"}\n");
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], r#"{"error":"line 3: not valid JSON"}"#);
        assert_eq!(
            out[1],
            r#"{"error":"line 4: the first step must be setup"}"#
        );
    }
}

//! Differential test of `streamsim wire decode` / `encode` against Synapse 1.163.2's own
//! command classes (tools/synapse/wire_oracle.py), on lines from an adversarial generator:
//! odd numbers and spacing, Unicode digits and spaces, big and float JSON values, NaN,
//! nesting, duplicate keys, lone surrogates, line-length boundaries and bytes that are not
//! UTF-8. Decoded commands must be identical field for field; errors must name the same
//! Python exception class. Encoded bytes must be identical.
//!
//! `STREAMSIM_WIRE_DIFF_SEEDS` sets how many seeds (default 40, 100 lines each);
//! `STREAMSIM_DIFF_SEED=N` replays one.

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use streamsim_models::limits::LINE_BYTES_MAX;

use crate::support::{diff_seeds, oracle, streamsim, synapse_python};

const LINES_PER_SEED: usize = 100;

struct LineGen {
    rng: ChaCha8Rng,
}

impl LineGen {
    fn pick<'a>(&mut self, options: &[&'a str]) -> &'a str {
        options.choose(&mut self.rng).expect("non-empty")
    }

    fn word(&mut self) -> String {
        self.pick(&[
            "events",
            "typing",
            "master",
            "w1",
            "caches",
            "wé",
            "数据",
            "a_b",
            "x\u{1F600}",
            "None",
            "batch",
            "\t",
        ])
        .to_owned()
    }

    fn int_text(&mut self) -> String {
        match self.rng.random_range(0..24) {
            0 => "batch".into(),
            1 => "+5".into(),
            2 => "-7".into(),
            3 => "1_000".into(),
            4 => "1__0".into(),
            5 => "_1".into(),
            6 => "\u{663}\u{664}".into(),
            7 => "\u{ff11}2".into(),
            8 => " 5".into(),
            9 => "5\r".into(),
            10 => "\u{3000}9\u{85}".into(),
            11 => String::new(),
            12 => "1e3".into(),
            13 => "0x10".into(),
            14 => "\u{b2}".into(),
            15 => "9".repeat(4300),
            16 => "9".repeat(4301),
            17 => "000042".into(),
            18 => "18446744073709551616".into(),
            19 => "\x1c3".into(),
            _ => self.rng.random_range(0..100_000u32).to_string(),
        }
    }

    fn json_string(&mut self) -> String {
        self.pick(&[
            r#""plain""#,
            r#""with space""#,
            r#""é\u00e9""#,
            r#""\ud83d\ude00""#,
            r#""\ud800""#,
            r#""\udc00\ud800x""#,
            r#""\"\\\/\b\f\n\r\t""#,
            "\"raw \u{e9}\u{1F600}\"",
            "\"tab\tinside\"",
            r#""\x""#,
            r#""\u12g4""#,
            r#""unterminated"#,
            "\"\u{7f}\"",
        ])
        .to_owned()
    }

    fn json_number(&mut self) -> String {
        self.pick(&[
            "0",
            "-0",
            "1",
            "-1",
            "01",
            "1.5",
            "1.",
            ".5",
            "1e5",
            "1E+5",
            "1e-5",
            "2.5e-7",
            "1e16",
            "1e15",
            "123456789.125",
            "0.1",
            "1e400",
            "-1e400",
            "1e-400",
            "12345678901234567890123",
            "-0.0",
            "1e",
            "NaN",
            "Infinity",
            "-Infinity",
            "5e-324",
            "1.7976931348623157e308",
            "100000000000000000.0",
        ])
        .to_owned()
    }

    fn ws(&mut self) -> &'static str {
        ["", "", "", " ", "  ", "\t", "\r", " \r\t"]
            .choose(&mut self.rng)
            .expect("non-empty")
    }

    fn json(&mut self, depth: usize) -> String {
        let roll = if depth > 3 {
            self.rng.random_range(0..6)
        } else {
            self.rng.random_range(0..10)
        };
        match roll {
            0 | 1 => self.json_string(),
            2 | 3 => self.json_number(),
            4 => self
                .pick(&["true", "false", "null", "nul", "True"])
                .to_owned(),
            5 => self
                .pick(&[
                    "[]",
                    "{}",
                    "[1,]",
                    "{\"a\":1,}",
                    "{\"a\" 1}",
                    "[1 2]",
                    "{1:2}",
                ])
                .to_owned(),
            6 | 7 => {
                let n = self.rng.random_range(0..4);
                let items: Vec<String> = (0..n).map(|_| self.json(depth + 1)).collect();
                let sep = format!("{},{}", self.ws(), self.ws());
                format!("[{}{}{}]", self.ws(), items.join(&sep), self.ws())
            }
            _ => {
                let n = self.rng.random_range(0..4);
                let keys = ["\"a\"", "\"b\"", "\"a\"", "\"é\"", "\"\\ud800\""];
                let items: Vec<String> = (0..n)
                    .map(|_| {
                        let key = *keys.choose(&mut self.rng).expect("non-empty");
                        format!("{key}{}:{}{}", self.ws(), self.ws(), self.json(depth + 1))
                    })
                    .collect();
                format!("{{{}}}", items.join(","))
            }
        }
    }

    fn top_json(&mut self) -> String {
        match self.rng.random_range(0..30) {
            0 => format!(
                "{}{}",
                "[".repeat(self.rng.random_range(50..800)),
                "]".repeat(3)
            ),
            1 => format!("{}1{}", "[".repeat(1200), "]".repeat(1200)),
            2 => format!("{} trailing", self.json(0)),
            3 => String::new(),
            _ => format!("{}{}{}", self.ws(), self.json(0), self.ws()),
        }
    }

    fn command_line(&mut self) -> Vec<u8> {
        let text = match self.rng.random_range(0..20) {
            0..=2 => format!(
                "RDATA {} {} {} {}",
                self.word(),
                self.word(),
                self.int_text(),
                self.top_json()
            ),
            3 => format!(
                "RDATA {} {}  {} {}",
                self.word(),
                self.word(),
                self.int_text(),
                self.top_json()
            ),
            4 | 5 => format!(
                "POSITION {} {} {} {}",
                self.word(),
                self.word(),
                self.int_text(),
                self.int_text()
            ),
            6 => format!(
                "POSITION {} {} {}",
                self.word(),
                self.word(),
                self.int_text()
            ),
            7 => {
                let state = self.pick(&["start", "end", "START", "", "maybe"]);
                let device = self.pick(&["None", "DEV", "", "none"]);
                format!(
                    "USER_SYNC {} @u:x {device} {state} {}",
                    self.word(),
                    self.int_text()
                )
            }
            8 => format!("FEDERATION_ACK {} {}", self.word(), self.int_text()),
            9 => format!("FEDERATION_ACK {} {} 3", self.word(), self.int_text()),
            10 => {
                let body = match self.rng.random_range(0..6) {
                    0 => "\"abcde\"".to_owned(),
                    1 => "{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5}".to_owned(),
                    2 => "5".to_owned(),
                    3 => format!(
                        "[{},{},{},{}]",
                        self.json(2),
                        self.json(2),
                        self.json(2),
                        self.json(2)
                    ),
                    _ => format!(
                        "[{},{},{},{},{}]",
                        self.json_string(),
                        self.json(2),
                        self.json(2),
                        self.json(2),
                        self.json_number()
                    ),
                };
                format!("USER_IP @u:x {body}")
            }
            11 => {
                let body = match self.rng.random_range(0..4) {
                    0 => "\"abc\"".to_owned(),
                    1 => "null".to_owned(),
                    _ => format!("[{},{},{}]", self.json(2), self.json(2), self.json(2)),
                };
                format!("LOCK_RELEASED {body}")
            }
            12 => format!("CLEAR_USER_SYNC {}", self.word()),
            13 => format!("REPLICATE{}", self.pick(&["", " ", " junk"])),
            14 => format!(
                "{} {}",
                self.pick(&[
                    "SERVER",
                    "NAME",
                    "PING",
                    "ERROR",
                    "REMOTE_SERVER_UP",
                    "NEW_ACTIVE_TASK",
                    "CANCEL_TASK"
                ]),
                self.word()
            ),
            15 => self
                .pick(&[
                    "PING",
                    "ping 5",
                    "RDATA",
                    "UNKNOWN x",
                    " PING 5",
                    "PING\t5",
                    "POSITION",
                ])
                .to_owned(),
            16 => self
                .pick(&[
                    "",
                    " ",
                    "\r",
                    "\t\u{b}\u{c}",
                    "\u{1c}",
                    "\u{a0}",
                    "\u{3000}",
                ])
                .to_owned(),
            _ => format!("ERROR {}{}", self.word(), self.ws()),
        };
        let mut bytes = text.into_bytes();
        if self.rng.random_range(0..12) == 0 {
            let bad: &[u8] = [
                &b"\xff"[..],
                b"\xc0\x80",
                b"\xed\xa0\x80",
                b"\xf4\x90\x80\x80",
                b"\xe2\x82",
                b"\x80",
            ]
            .choose(&mut self.rng)
            .expect("non-empty");
            let at = self.rng.random_range(0..=bytes.len());
            bytes.splice(at..at, bad.iter().copied());
        }
        bytes
    }

    fn boundary_line(&mut self) -> Vec<u8> {
        let target = LINE_BYTES_MAX - 2 + self.rng.random_range(0..4);
        let mut line = b"PING ".to_vec();
        let filler: &[u8] = if self.rng.random_bool(0.5) {
            b"x"
        } else {
            "é".as_bytes()
        };
        while line.len() + filler.len() <= target {
            line.extend_from_slice(filler);
        }
        while line.len() < target {
            line.push(b'y');
        }
        line
    }

    fn decode_input(&mut self) -> Vec<u8> {
        let mut lines = Vec::new();
        for _ in 0..LINES_PER_SEED {
            lines.push(if self.rng.random_range(0..40) == 0 {
                self.boundary_line()
            } else {
                self.command_line()
            });
        }
        let mut input = lines.join(&b'\n');
        input.push(b'\n');
        input
    }

    fn encode_request(&mut self) -> String {
        let s = |g: &mut Self| serde_json::to_string(&g.word()).expect("string");
        let int = |g: &mut Self| {
            g.json_number().parse::<i64>().map_or_else(
                |_| g.rng.random_range(-5..100_000i64).to_string(),
                |n| n.to_string(),
            )
        };
        let request = match self.rng.random_range(0..14) {
            0 | 1 => format!(
                r#"{{"command":"RDATA","fields":{{"stream_name":{},"instance_name":{},"token":{},"row":{}}}}}"#,
                s(self),
                s(self),
                if self.rng.random_bool(0.3) {
                    "null".to_owned()
                } else {
                    int(self)
                },
                self.json(1)
            ),
            2 => format!(
                r#"{{"command":"POSITION","fields":{{"stream_name":{},"instance_name":{},"prev_token":{},"new_token":{}}}}}"#,
                s(self),
                s(self),
                int(self),
                self.pick(&[
                    "5",
                    "1e2",
                    "\"7\"",
                    "true",
                    "123456789012345678901234567890"
                ])
            ),
            3 => format!(
                r#"{{"command":"USER_SYNC","fields":{{"instance_id":{},"user_id":"@u:x","device_id":{},"is_syncing":{},"last_sync_ms":{}}}}}"#,
                s(self),
                self.pick(&["null", "\"D\"", "\"None\""]),
                self.pick(&["true", "false", "1"]),
                int(self)
            ),
            4 => format!(
                r#"{{"command":"USER_IP","fields":{{"user_id":"@u:x","access_token":{},"ip":"::1","user_agent":{},"device_id":null,"last_seen":{}}}}}"#,
                self.json_string(),
                s(self),
                int(self)
            ),
            5 => format!(
                r#"{{"command":"LOCK_RELEASED","fields":{{"instance_name":{},"lock_name":"n","lock_key":{}}}}}"#,
                s(self),
                self.json_string()
            ),
            6 => format!(
                r#"{{"command":"FEDERATION_ACK","fields":{{"instance_name":{},"token":{}}}}}"#,
                s(self),
                int(self)
            ),
            7 => r#"{"command":"REPLICATE","fields":{}}"#.to_owned(),
            8 => format!(
                r#"{{"command":"CLEAR_USER_SYNC","fields":{{"instance_id":{}}}}}"#,
                self.json_string()
            ),
            9 => format!(
                r#"{{"command":"{}","fields":{{"data":{}}}}}"#,
                self.pick(&[
                    "PING",
                    "ERROR",
                    "SERVER",
                    "NAME",
                    "REMOTE_SERVER_UP",
                    "NEW_ACTIVE_TASK",
                    "CANCEL_TASK"
                ]),
                self.json_string()
            ),
            10 => format!(
                r#"{{"command":"PING","fields":{{"data":"{}"}}}}"#,
                "x".repeat(LINE_BYTES_MAX - 6 + self.rng.random_range(0..3))
            ),
            11 => self
                .pick(&[
                    r#"{"command":"NOPE","fields":{}}"#,
                    r#"{"command":"PING","fields":{"data":"a","extra":1}}"#,
                    r#"{"command":"PING","fields":{}}"#,
                    r#"{"command":"PING","fields":{"data":5}}"#,
                ])
                .to_owned(),
            12 => format!(
                r#"{{"command":"RDATA","fields":{{"stream_name":"s","instance_name":"i","token":{},"row":[{}]}}}}"#,
                self.pick(&["1", "99999", "-3"]),
                self.pick(&[
                    "NaN",
                    "Infinity",
                    "1e400",
                    "1.0",
                    "1e16",
                    "0.30000000000000004"
                ])
            ),
            _ => format!(
                r#"{{"command":"RDATA","fields":{{"stream_name":"s","instance_name":"i","token":{},"row":null}}}}"#,
                "9".repeat(4300 + self.rng.random_range(0..2))
            ),
        };
        request
    }
}

/// The comparable part of one output line: the whole line for commands and blanks; for
/// errors the exception class (or Synapse's fixed text).
fn comparable(line: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
    {
        Some(error) => format!("error {}", error.split(':').next().unwrap_or_default()),
        None => line.to_owned(),
    }
}

/// Runs `streamsim wire <mode>` and the oracle on `input` (exactly [`LINES_PER_SEED`] lines
/// per seed, in `seeds` order) and returns our output lines and every difference, each naming
/// the seed that generated its line and the command that replays it.
fn differential(
    python: &std::path::Path,
    mode: &str,
    seeds: &[u64],
    input: &[u8],
) -> (String, Vec<String>) {
    let ours = String::from_utf8(streamsim(&["wire", mode], input)).expect("ascii output");
    let theirs =
        String::from_utf8(oracle(python, "wire_oracle.py", &[mode], input)).expect("ascii output");
    let input_lines: Vec<&[u8]> = input
        .strip_suffix(b"\n")
        .expect("ends with a newline")
        .split(|&b| b == b'\n')
        .collect();
    let (our_lines, their_lines): (Vec<&str>, Vec<&str>) =
        (ours.lines().collect(), theirs.lines().collect());
    assert_eq!(
        our_lines.len(),
        input_lines.len(),
        "{mode}: one output line per input line"
    );
    assert_eq!(
        their_lines.len(),
        input_lines.len(),
        "{mode}: the oracle gave one line per input line"
    );
    assert_eq!(
        input_lines.len(),
        seeds.len() * LINES_PER_SEED,
        "{mode}: {LINES_PER_SEED} lines per seed"
    );
    let failures = (0..input_lines.len())
        .filter(|&i| comparable(our_lines[i]) != comparable(their_lines[i]))
        .map(|i| {
            let seed = seeds[i / LINES_PER_SEED];
            let shown = String::from_utf8_lossy(&input_lines[i][..input_lines[i].len().min(300)]).into_owned();
            format!(
                "seed {seed} {mode} line {}: {shown:?}\n  streamsim: {}\n  synapse:   {}\n  replay: STREAMSIM_DIFF_SEED={seed} cargo test --test it wire_{mode}",
                i % LINES_PER_SEED + 1,
                &our_lines[i][..our_lines[i].len().min(300)],
                &their_lines[i][..their_lines[i].len().min(300)]
            )
        })
        .collect();
    (ours, failures)
}

#[test]
fn wire_decode_matches_synapse_parse() {
    let Some(python) = synapse_python("wire_decode_matches_synapse_parse") else {
        return;
    };
    let seeds = diff_seeds(40, "STREAMSIM_WIRE_DIFF_SEEDS");
    let input: Vec<u8> = seeds
        .iter()
        .flat_map(|s| {
            LineGen {
                rng: ChaCha8Rng::seed_from_u64(*s),
            }
            .decode_input()
        })
        .collect();
    let (ours, failures) = differential(&python, "decode", &seeds, &input);
    let total = ours.lines().count();
    let commands = ours
        .lines()
        .filter(|l| l.starts_with("{\"command\""))
        .count();
    eprintln!("wire decode differential: {total} lines compared, {commands} decoded as commands");
    assert!(
        commands * 4 > total,
        "too few valid commands ({commands}): the generator lost its aim"
    );
    assert!(
        failures.is_empty(),
        "{} lines differ from Synapse:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn wire_encode_matches_synapse_to_line() {
    let Some(python) = synapse_python("wire_encode_matches_synapse_to_line") else {
        return;
    };
    let seeds = diff_seeds(40, "STREAMSIM_WIRE_DIFF_SEEDS");
    let mut input = Vec::new();
    for seed in &seeds {
        let mut generator = LineGen {
            rng: ChaCha8Rng::seed_from_u64(*seed),
        };
        for _ in 0..LINES_PER_SEED {
            input.extend_from_slice(generator.encode_request().as_bytes());
            input.push(b'\n');
        }
    }
    let (ours, failures) = differential(&python, "encode", &seeds, &input);
    let total = ours.lines().count();
    let sent = ours
        .lines()
        .filter(|l| !l.starts_with("{\"error\""))
        .count();
    eprintln!("wire encode differential: {total} commands compared, {sent} encoded");
    assert!(
        sent * 3 > total,
        "too few valid commands ({sent}): the generator lost its aim"
    );
    assert!(
        failures.is_empty(),
        "{} encodings differ from Synapse:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

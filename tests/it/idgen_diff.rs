//! Differential test of `streamsim idgen` against real Synapse 1.163.2's
//! `MultiWriterIdGenerator` on real PostgreSQL (tools/synapse/idgen_oracle.py), on op scripts
//! from a seeded generator that goes after the hard cases: restarts with ids in flight, rows
//! written but unfinished, writer-config changes, stale/future/negative advances, aborts,
//! misuse of handles, and malformed lines.
//!
//! `STREAMSIM_IDGEN_DIFF_SCRIPTS` sets how many scripts (default 300);
//! `STREAMSIM_DIFF_SEED=N` replays one. Failing scripts are kept under
//! target/test-scratch/idgen-diff/.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use streamsim_models::opscript::{parse_op, Op, World};

use crate::support::{diff_seeds, oracle, scratch_dir, streamsim, synapse_python};

const NAMES: [&str; 5] = ["w1", "w2", "w3", "r1", "r2"];

/// What the generator knows of the world it is building, from running our own model as it
/// goes (only to aim at interesting values; the verdict comes from Synapse).
struct Generator {
    rng: ChaCha8Rng,
    world: World,
    lines: Vec<Vec<u8>>,
    handles: Vec<String>,
    next_handle: usize,
    highest_id: i64,
}

impl Generator {
    fn new(seed: u64) -> Self {
        Generator {
            rng: ChaCha8Rng::seed_from_u64(seed),
            world: World::new(),
            lines: Vec::new(),
            handles: Vec::new(),
            next_handle: 0,
            highest_id: 1,
        }
    }

    fn name(&mut self) -> String {
        match self.rng.random_range(0..40) {
            0 => "w\u{e9}".to_owned(),
            1 => "w\u{0}".to_owned(),
            _ => NAMES[self.rng.random_range(0..NAMES.len())].to_owned(),
        }
    }

    fn writers(&mut self) -> Vec<String> {
        match self.rng.random_range(0..10) {
            0 => Vec::new(),
            1 => vec!["w1".into(), "w1".into(), "w2".into()],
            _ => {
                let mut writers: Vec<String> = NAMES[..3]
                    .iter()
                    .filter(|_| self.rng.random_bool(0.6))
                    .map(|w| (*w).to_owned())
                    .collect();
                if writers.is_empty() {
                    writers.push("w1".into());
                }
                if self.rng.random_bool(0.1) {
                    writers.push(self.name());
                }
                writers
            }
        }
    }

    fn token(&mut self) -> i64 {
        match self.rng.random_range(0..12) {
            0 => -self.rng.random_range(0..5),
            1 => self.highest_id + self.rng.random_range(5..50),
            2 => 0,
            _ => (self.highest_id + self.rng.random_range(-4..=2)).max(1),
        }
    }

    fn handle(&mut self) -> String {
        if !self.handles.is_empty() && self.rng.random_bool(0.9) {
            self.handles[self.rng.random_range(0..self.handles.len())].clone()
        } else {
            format!("h{}", self.rng.random_range(0..self.next_handle + 2))
        }
    }

    fn push_op(&mut self, value: serde_json::Value) {
        let text = value.to_string();
        if let Ok(op) = parse_op(&text, 0) {
            let result = self.world.apply(&op);
            if let Some(ids) = result.get("ids").and_then(|ids| ids.as_array()) {
                let top = ids.iter().filter_map(|id| id.as_i64()).max().unwrap_or(1);
                self.highest_id = self.highest_id.max(top);
            }
            if let Op::PreloadId { id, .. } = op {
                self.highest_id = self.highest_id.max(id);
            }
        }
        self.lines.push(text.into_bytes());
    }

    fn malformed(&mut self) {
        let line: Vec<u8> = match self.rng.random_range(0..16) {
            0 => b"not json".to_vec(),
            1 => b"[1,2]".to_vec(),
            2 => br#"{"op":"alloc","instance":"w1","n":0,"handle":"x"}"#.to_vec(),
            3 => br#"{"op":"alloc","instance":"w1","n":1.0,"handle":"x"}"#.to_vec(),
            4 => br#"{"op":"preload","instance":"w1","count":-1}"#.to_vec(),
            5 => br#"{"op":"preload","instance":"w1","count":1,"id":3}"#.to_vec(),
            6 => br#"{"op":"advance","instance":"w1","writer":"w2","token":true}"#.to_vec(),
            7 => br#"{"op":"observe","instance":""}"#.to_vec(),
            8 => br#"{"op":"teleport","instance":"w1"}"#.to_vec(),
            9 => br#"{"instance":"w1"}"#.to_vec(),
            10 => br#"{"op":"observe","instance":"w1","op":"observe"}"#.to_vec(),
            11 => br#"{"op":"advance","instance":"w1","writer":"w2","token":9223372036854775808}"#
                .to_vec(),
            12 => b"{\"op\":\"observe\",\"instance\":\"w\xff\"}".to_vec(),
            13 => br#"{"op":"start","instance":"w1","writers":["w1",""]}"#.to_vec(),
            14 => br#"{"op":"observe","instance":"w1","extra":[1e400]}"#.to_vec(),
            _ => br#"{"op":"observe","instance":"\ud800"}"#.to_vec(),
        };
        self.lines.push(line);
    }

    fn step(&mut self) {
        let roll = self.rng.random_range(0..100);
        match roll {
            0..=5 => {
                let (instance, count) = (self.name(), self.rng.random_range(0..4));
                self.push_op(json!({"op":"preload","instance":instance,"count":count}));
            }
            6..=8 => {
                let instance = self.name();
                let id = (self.highest_id + self.rng.random_range(-3..6)).max(1);
                self.push_op(json!({"op":"preload","instance":instance,"id":id}));
            }
            9..=20 => {
                let (instance, writers) = (self.name(), self.writers());
                self.push_op(json!({"op":"start","instance":instance,"writers":writers}));
            }
            21..=38 => {
                let instance = self.name();
                let n = if self.rng.random_bool(0.7) {
                    1
                } else {
                    self.rng.random_range(2..4)
                };
                let handle = if self.rng.random_bool(0.05) && !self.handles.is_empty() {
                    self.handle()
                } else {
                    self.next_handle += 1;
                    format!("h{}", self.next_handle)
                };
                self.handles.push(handle.clone());
                self.push_op(json!({"op":"alloc","instance":instance,"n":n,"handle":handle}));
            }
            39..=48 => {
                let handle = self.handle();
                self.push_op(json!({"op":"write","handle":handle}));
            }
            49..=62 => {
                let handle = self.handle();
                self.push_op(json!({"op":"finish","handle":handle}));
            }
            63..=67 => {
                let handle = self.handle();
                self.push_op(json!({"op":"abort","handle":handle}));
            }
            68..=75 => {
                let (instance, writer, token) = (self.name(), self.name(), self.token());
                self.push_op(
                    json!({"op":"advance","instance":instance,"writer":writer,"token":token}),
                );
            }
            76..=82 => {
                let from = self.name();
                self.push_op(json!({"op":"replicate","from":from}));
            }
            83..=95 => {
                let instance = self.name();
                self.push_op(json!({"op":"observe","instance":instance}));
            }
            96 => self.lines.push(if self.rng.random_bool(0.5) {
                b"".to_vec()
            } else {
                " \t\u{3000}".as_bytes().to_vec()
            }),
            _ => self.malformed(),
        }
    }

    /// A script of 20-60 lines that starts with a few preloads and writers.
    fn script(mut self) -> Vec<u8> {
        for _ in 0..self.rng.random_range(0..3) {
            let (instance, count) = (
                NAMES[self.rng.random_range(0..3)],
                self.rng.random_range(1..4),
            );
            self.push_op(json!({"op":"preload","instance":instance,"count":count}));
        }
        for writer in ["w1", "w2"] {
            if self.rng.random_bool(0.8) {
                let writers = self.writers();
                self.push_op(json!({"op":"start","instance":writer,"writers":writers}));
            }
        }
        let length = self.rng.random_range(20..60);
        while self.lines.len() < length {
            self.step();
        }
        let mut script = self.lines.join(&b'\n');
        script.push(b'\n');
        script
    }
}

/// Do two output lines agree? Success lines must be identical. Errors agree when both are
/// errors, name the same line if malformed, and have the same text for `start` (the Synapse
/// exception class and first line); other error texts are informative only (idgen-ops.md).
fn lines_agree(op_line: &[u8], ours: &str, theirs: &str) -> bool {
    if ours == theirs {
        return true;
    }
    let error = |line: &str| -> Option<String> {
        serde_json::from_str::<serde_json::Value>(line)
            .ok()?
            .get("error")?
            .as_str()
            .map(str::to_owned)
    };
    let (Some(ours), Some(theirs)) = (error(ours), error(theirs)) else {
        return false;
    };
    let line_prefix = |e: &str| {
        e.starts_with("line ")
            .then(|| e.split(':').next().unwrap_or_default().to_owned())
    };
    if line_prefix(&ours).is_some() || line_prefix(&theirs).is_some() {
        return line_prefix(&ours) == line_prefix(&theirs);
    }
    let is_start = std::str::from_utf8(op_line).is_ok_and(|l| l.contains("\"op\":\"start\""));
    !is_start || ours == theirs
}

#[test]
fn idgen_matches_real_synapse_on_generated_scripts() {
    let Some(python) = synapse_python("idgen_matches_real_synapse_on_generated_scripts") else {
        return;
    };
    let dir = scratch_dir("idgen-diff");
    let seeds = diff_seeds(300, "STREAMSIM_IDGEN_DIFF_SCRIPTS");
    let mut paths = Vec::new();
    for seed in &seeds {
        let path = dir.join(format!("seed-{seed}.jsonl"));
        std::fs::write(&path, Generator::new(*seed).script()).expect("write script");
        paths.push(path);
    }
    let out_dir = dir.join("synapse");
    let mut args = vec!["--out-dir".to_owned(), out_dir.display().to_string()];
    args.extend(paths.iter().map(|p| p.display().to_string()));
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    oracle(&python, "idgen_oracle.py", &arg_refs, b"");

    let (mut compared_lines, mut failures) = (0usize, Vec::new());
    for (seed, path) in seeds.iter().zip(&paths) {
        let script = std::fs::read(path).expect("read script");
        let ours = String::from_utf8(streamsim(&["idgen", &path.display().to_string()], b""))
            .expect("utf-8 output");
        let theirs = std::fs::read_to_string(out_dir.join(format!("seed-{seed}.out.jsonl")))
            .expect("oracle output");
        let op_lines: Vec<&[u8]> = script
            .split(|&b| b == b'\n')
            .filter(|l| std::str::from_utf8(l).map_or(true, |t| !t.trim().is_empty()))
            .collect();
        let (ours, theirs): (Vec<&str>, Vec<&str>) =
            (ours.lines().collect(), theirs.lines().collect());
        assert_eq!(
            ours.len(),
            op_lines.len(),
            "seed {seed}: one output line per op"
        );
        assert_eq!(
            theirs.len(),
            op_lines.len(),
            "seed {seed}: the oracle gave one line per op"
        );
        compared_lines += ours.len();
        if let Some(index) =
            (0..ours.len()).find(|&i| !lines_agree(op_lines[i], ours[i], theirs[i]))
        {
            failures.push(format!(
                "seed {seed}, op {}: {}\n  streamsim: {}\n  synapse:   {}\n  script: {}\n  replay: STREAMSIM_DIFF_SEED={seed} cargo test --test it idgen_matches_real_synapse",
                index + 1,
                String::from_utf8_lossy(op_lines[index]),
                ours[index],
                theirs[index],
                path.display()
            ));
        }
    }
    eprintln!(
        "idgen differential: {} scripts, {compared_lines} output lines compared",
        seeds.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} scripts differ from Synapse:\n{}",
        failures.len(),
        seeds.len(),
        failures.join("\n")
    );
    for path in paths {
        let _ = std::fs::remove_file(path);
    }
}

#[test]
fn generated_scripts_reach_the_hard_cases() {
    // Guards the generator itself: across the default seeds it must restart writers with ids
    // in flight, leave written rows unfinished, and hit start errors and malformed lines.
    let (mut restarts_in_flight, mut errors, mut malformed, mut advances) = (0, 0, 0, 0);
    for seed in 0..100 {
        let script = Generator::new(seed).script();
        let text = String::from_utf8_lossy(&script).into_owned();
        let output = streamsim_models::opscript::run_script(&script);
        errors += output
            .iter()
            .filter(|l| l.starts_with("{\"error\""))
            .count();
        malformed += output
            .iter()
            .filter(|l| l.starts_with("{\"error\":\"line "))
            .count();
        let mut open = std::collections::BTreeSet::new();
        for (line, out) in text.lines().filter(|l| !l.trim().is_empty()).zip(&output) {
            if line.contains("\"op\":\"alloc\"") && out.starts_with("{\"ids\"") {
                open.insert(
                    line.split("\"instance\":\"")
                        .nth(1)
                        .unwrap_or("")
                        .split('"')
                        .next()
                        .unwrap_or("")
                        .to_owned(),
                );
            }
            if line.contains("\"op\":\"start\"")
                && open
                    .iter()
                    .any(|i| line.contains(&format!("\"instance\":\"{i}\"")))
            {
                restarts_in_flight += 1;
            }
            if line.contains("\"op\":\"advance\"") {
                advances += 1;
            }
        }
    }
    assert!(
        restarts_in_flight > 50,
        "restarts with ids in flight: {restarts_in_flight}"
    );
    assert!(
        errors > 200 && malformed > 20,
        "errors {errors}, malformed {malformed}"
    );
    assert!(advances > 100, "advances: {advances}");
}

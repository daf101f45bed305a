//! `streamsim choreo`: every choreography in tests/data/system that has a `NAME.expected.jsonl`
//! beside it (written by the system oracle, tools/synapse/system_oracle.py, on real Synapse
//! 1.163.2) must give those bytes, line for line. `UPDATE_EXPECT` never rewrites them: they
//! are Synapse's, not ours.

use std::path::{Path, PathBuf};
use std::process::Command;

use streamsim_models::fixes::Fixes;
use streamsim_sim::choreo::{run_script, run_script_with};

use crate::support::repo_root;

fn choreographies() -> Vec<PathBuf> {
    let dir = repo_root().join("tests/data/system");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|path| {
                    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    name.ends_with(".jsonl") && !name.ends_with(".expected.jsonl")
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

fn expected_of(path: &Path) -> PathBuf {
    let stem = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".jsonl"))
        .expect("a .jsonl file");
    path.with_file_name(format!("{stem}.expected.jsonl"))
}

/// Lines that are steps: not blank, not comments.
fn step_count(script: &str) -> usize {
    script
        .lines()
        .filter(|line| {
            let line = line.trim();
            !line.is_empty() && !line.starts_with('#')
        })
        .count()
}

/// Runs every choreography with `fixes` and compares it with `expected_of(choreography)`,
/// which real Synapse (patched as `fixes` says) printed. A choreography without its expected
/// file is a failure, not a skip: nothing may pass here without real Synapse having printed
/// it. At least 40 must be compared (the issue's floor).
fn compare_corpus(expected_of: fn(&Path) -> PathBuf, fixes: Fixes, update: &str, what: &str) {
    let mut failures = Vec::new();
    let mut compared = 0;
    for path in choreographies() {
        let expected_path = expected_of(&path);
        let Ok(expected) = std::fs::read_to_string(&expected_path) else {
            failures.push(format!(
                "{}: no {} (write it with tools/synapse/system_oracle.py {update})",
                path.display(),
                expected_path.display()
            ));
            continue;
        };
        compared += 1;
        let script = std::fs::read_to_string(&path).expect("readable choreography");
        let actual = run_script_with(&script, fixes);
        let expected: Vec<&str> = expected.lines().collect();
        let first_difference = (0..actual.len().max(expected.len()))
            .find(|i| actual.get(*i).map(String::as_str) != expected.get(*i).copied());
        if let Some(i) = first_difference {
            failures.push(format!(
                "{}: output line {} differs\n  synapse:   {}\n  streamsim: {}",
                path.display(),
                i + 1,
                expected.get(i).copied().unwrap_or("<none>"),
                actual.get(i).map_or("<none>", String::as_str),
            ));
        }
    }
    assert!(
        compared >= 40,
        "only {compared} choreographies have {what} expected files"
    );
    assert!(
        failures.is_empty(),
        "{} of {compared} choreographies differ from {what} Synapse:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_choreography_matches_what_synapse_printed() {
    compare_corpus(expected_of, Fixes::NONE, "--update", "unpatched");
}

/// `fix-all/NAME.expected.jsonl`: real Synapse's output with the four proposed fixes
/// (tools/synapse/FIXES.md, `system_oracle.py --fix all --update`).
fn fix_all_expected_of(path: &Path) -> PathBuf {
    let expected = expected_of(path);
    let name = expected.file_name().expect("a file name").to_owned();
    path.with_file_name("fix-all").join(name)
}

#[test]
fn every_choreography_with_every_fix_matches_what_fixed_synapse_printed() {
    compare_corpus(
        fix_all_expected_of,
        Fixes::all(),
        "--fix all --update",
        "fixed (--fix all)",
    );
}

#[test]
fn the_cli_takes_fixes_and_refuses_an_unknown_one_with_exit_2() {
    let path = repo_root().join("tests/data/system/f4_rdata_before_its_writers_position.jsonl");
    let output = Command::new(env!("CARGO_BIN_EXE_streamsim"))
        .args(["choreo", "--fix", "all", path.to_str().expect("utf-8 path")])
        .output()
        .expect("spawn streamsim");
    assert_eq!(output.status.code(), Some(0));
    let script = std::fs::read_to_string(&path).unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        run_script_with(&script, Fixes::all())
    );

    let output = Command::new(env!("CARGO_BIN_EXE_streamsim"))
        .args(["choreo", "--fix", "f9", path.to_str().unwrap()])
        .output()
        .expect("spawn streamsim");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("f1, f2, f3, f4, f5, all"), "{stderr}");
}

#[test]
fn every_choreography_runs_and_prints_one_line_per_step() {
    for path in choreographies() {
        let script = std::fs::read_to_string(&path).expect("readable choreography");
        let first = run_script(&script);
        assert_eq!(first.len(), step_count(&script), "{}", path.display());
        for line in &first {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: {e}: {line}", path.display()));
            assert!(value.is_object(), "{}: {line}", path.display());
            assert!(line.is_ascii(), "{}: {line}", path.display());
        }
        assert_eq!(
            first,
            run_script(&script),
            "{}: not deterministic",
            path.display()
        );
    }
}

#[test]
fn the_cli_prints_the_lines_and_an_unreadable_file_exits_2() {
    let path = repo_root().join("tests/data/system/f2_disconnect_reconnect.jsonl");
    let output = Command::new(env!("CARGO_BIN_EXE_streamsim"))
        .args(["choreo", path.to_str().expect("utf-8 path")])
        .output()
        .expect("spawn streamsim");
    assert_eq!(output.status.code(), Some(0));
    let script = std::fs::read_to_string(&path).unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stdout.lines().collect::<Vec<_>>(), run_script(&script));

    let missing = "tests/data/system/no_such_choreography.jsonl";
    let output = Command::new(env!("CARGO_BIN_EXE_streamsim"))
        .args(["choreo", missing])
        .current_dir(repo_root())
        .output()
        .expect("spawn streamsim");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(missing), "{stderr}");
}

#[test]
fn the_driver_composes_the_models_as_synapse_does() {
    let script = r#"{"op":"setup","writers":["worker1","worker2"],"readers":["sync1"],"rooms":{"r1":"worker1","r2":"worker2"},"base":40}
{"op":"sync","process":"sync1","label":"T0"}
{"op":"hold_persist","writer":"worker1"}
{"op":"send","event":"A","room":"r1"}
{"op":"send","event":"B","room":"r2"}
{"op":"sync","process":"sync1","label":"T1","since":"T0"}
{"op":"release","event":"A"}
{"op":"sync","process":"sync1","label":"T2","since":"T1"}
{"op":"disconnect","process":"sync1"}
{"op":"unhold_persist","writer":"worker1"}
{"op":"send","event":"C","room":"r1"}
{"op":"reconnect","process":"sync1"}"#;
    let out = run_script(script);
    let line = |i: usize| -> serde_json::Value { serde_json::from_str(&out[i]).unwrap() };
    // Set-up: everyone at base; the readers' positions of worker1 stay at its last write (its
    // idle POSITION 39 -> 40 is dropped: not ahead of persisted_upto).
    assert_eq!(line(0)["processes"]["sync1"]["room_max"], "s40");
    assert_eq!(line(0)["processes"]["worker1"]["own"], 40);
    assert_eq!(line(1)["next_batch"], "s40");
    // A is allocated 41 and held; B (42) is persisted and announced: the token is a vector.
    assert_eq!(line(3)["id"], 41);
    assert_eq!(line(3)["done"], false);
    assert_eq!(line(4)["announced"]["sync1"], serde_json::json!(["B"]));
    assert_eq!(line(5)["next_batch"], "m40~worker2.42");
    assert_eq!(line(5)["rooms"], serde_json::json!({"r2": ["B"]}));
    // Released, A arrives by RDATA and the next incremental sync has it.
    assert_eq!(line(6)["handled"]["sync1"][0], "RDATA worker1 41 A");
    assert_eq!(line(7)["rooms"], serde_json::json!({"r1": ["A"]}));
    assert_eq!(line(7)["next_batch"], "s42");
    // Off the bus sync1 misses C; on reconnect worker1's POSITION makes it fetch C.
    let handled = &line(11)["handled"]["sync1"];
    assert!(
        handled
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h == "fetched worker1 43 C"),
        "{handled}"
    );
    assert_eq!(line(11)["announced"]["sync1"], serde_json::json!(["C"]));
}

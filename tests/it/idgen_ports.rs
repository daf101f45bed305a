//! Data-driven op-script tests: every `*.jsonl` under tests/data/idgen/ runs through
//! `streamsim idgen` and must print its `*.expected.jsonl` exactly. The synapse_ports/ folder
//! holds the test cases of Synapse's tests/storage/test_id_generators.py (see its INDEX.md);
//! cases/ holds our own. `UPDATE_EXPECT=1` rewrites the expectations of cases/ only, since the
//! ports' numbers come from Synapse.

use std::path::Path;

use crate::support::{repo_root, streamsim};

fn check_folder(folder: &str, may_update: bool) -> usize {
    let dir = repo_root().join("tests/data/idgen").join(folder);
    let mut scripts: Vec<_> = std::fs::read_dir(&dir)
        .expect("read corpus dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.to_string_lossy().ends_with(".jsonl")
                && !p.to_string_lossy().ends_with(".expected.jsonl")
        })
        .collect();
    scripts.sort();
    let mut failures = Vec::new();
    for script in &scripts {
        let expected_path = Path::new(
            &script
                .to_string_lossy()
                .replace(".jsonl", ".expected.jsonl"),
        )
        .to_path_buf();
        let actual = String::from_utf8(streamsim(&["idgen", &script.display().to_string()], b""))
            .expect("utf-8");
        if may_update && std::env::var("UPDATE_EXPECT").as_deref() == Ok("1") {
            std::fs::write(&expected_path, &actual).expect("write expectation");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("missing {}", expected_path.display()));
        for (number, (a, e)) in actual.lines().zip(expected.lines()).enumerate() {
            if a != e {
                failures.push(format!(
                    "{} output line {}:\n  got      {a}\n  expected {e}",
                    script.display(),
                    number + 1
                ));
                break;
            }
        }
        if actual.lines().count() != expected.lines().count() {
            failures.push(format!(
                "{}: {} output lines, expected {}",
                script.display(),
                actual.lines().count(),
                expected.lines().count()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    scripts.len()
}

#[test]
fn synapse_test_id_generators_ports() {
    assert_eq!(
        check_folder("synapse_ports", false),
        14,
        "the 14 ported Synapse test cases (INDEX.md)"
    );
}

#[test]
fn own_op_script_cases() {
    assert!(check_folder("cases", true) >= 3);
}

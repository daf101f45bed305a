//! README.md is the front door: its `streamsim idgen`, `streamsim wire` and `streamsim choreo`
//! examples must print exactly what the README says they print.

use crate::support::{repo_root, streamsim};

fn readme() -> String {
    std::fs::read_to_string(repo_root().join("README.md")).expect("README.md")
}

/// The lines of the shell example that follow `$ command` up to the next `$` or fence.
fn output_after(readme: &str, command: &str) -> Vec<String> {
    let start = readme
        .find(&format!("$ {command}"))
        .unwrap_or_else(|| panic!("README shows `{command}`"));
    readme[start..]
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with('$') && !l.starts_with("```"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn readme_idgen_example_is_true() {
    let readme = readme();
    let begin = readme.find("<<'OPS'\n").expect("heredoc in README") + "<<'OPS'\n".len();
    let script = &readme[begin..begin + readme[begin..].find("OPS\n").expect("heredoc end")];
    let actual = String::from_utf8(streamsim(&["idgen", "-"], script.as_bytes())).expect("utf-8");
    assert_eq!(
        actual.lines().collect::<Vec<_>>(),
        output_after(&readme, "streamsim idgen /tmp/ooo.jsonl")
    );
}

#[test]
fn readme_wire_examples_are_true() {
    let readme = readme();
    let decode_input =
        b"RDATA events w1 batch [\"$ev\", {\"a\": 1.50}]\nPOSITION events w1 7 \xd9\xa3\n";
    let decoded = String::from_utf8(streamsim(&["wire", "decode"], decode_input)).expect("utf-8");
    let marker = "| streamsim wire decode";
    let start = readme.find(marker).expect("README shows wire decode") + marker.len();
    let shown: Vec<&str> = readme[start..]
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with('$'))
        .collect();
    assert_eq!(decoded.lines().collect::<Vec<_>>(), shown);

    let request = br#"{"command":"USER_SYNC","fields":{"instance_id":"w1","user_id":"@a:x","device_id":null,"is_syncing":true,"last_sync_ms":5}}"#;
    let encoded = String::from_utf8(streamsim(&["wire", "encode"], request)).expect("utf-8");
    let marker = "| streamsim wire encode";
    let start = readme.find(marker).expect("README shows wire encode") + marker.len();
    let shown: Vec<&str> = readme[start..]
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .collect();
    assert_eq!(encoded.lines().collect::<Vec<_>>(), shown);
}

#[test]
fn readme_scenario_example_parses_and_named_scenarios_exist() {
    let readme = readme();
    let begin = readme.find("```toml\n").expect("README shows a scenario") + "```toml\n".len();
    let text = &readme[begin..begin + readme[begin..].find("```").expect("fence end")];
    let scenario =
        streamsim_sim::scenario::Scenario::parse(std::path::Path::new("README.md"), text)
            .unwrap_or_else(|e| panic!("README's scenario example: {e}"));
    assert_eq!(scenario.topology.writers, 2);
    for word in readme.split(|c: char| c.is_whitespace() || c == '`') {
        if let Some(path) = word
            .strip_prefix("scenarios/")
            .filter(|p| p.ends_with(".toml"))
        {
            assert!(
                repo_root().join("scenarios").join(path).is_file(),
                "README names scenarios/{path}, which does not exist"
            );
        }
    }
}

/// README's choreography example: the script after `$ cat f2.jsonl`, run by `streamsim
/// choreo`, ends with the four lines README shows (real Synapse prints them too: the same
/// steps are `tests/data/system/f2_reconnect_writer2_answers_first.jsonl`).
#[test]
fn readme_choreo_example_is_true() {
    let readme = readme();
    let script = output_after(&readme, "cat f2.jsonl").join("\n") + "\n";
    let out = String::from_utf8(streamsim(&["choreo", "-"], script.as_bytes())).expect("utf-8");
    let lines: Vec<&str> = out.lines().collect();
    let tail = &lines[lines.len().saturating_sub(4)..];
    assert_eq!(
        tail,
        output_after(&readme, "streamsim choreo f2.jsonl | tail -4").as_slice()
    );
}

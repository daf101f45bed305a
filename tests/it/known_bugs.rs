//! The known-bug catalogue (`models::bugs`), on the patched baseline (`--fix all`, where no
//! finding F1-F5 can happen, so a red run is the switch's doing): every switch has a permanent
//! regression scenario `tests/data/bugs/SWITCH.toml` (made by `streamsim shrink`, carrying the
//! bug on at least 18 of seeds 0..20; `tests/scenarios.rs` judges each over a seed range as
//! `bug::SWITCH`), and the hunt itself must catch every switch by its catalogue invariant
//! within its budget with the patched model passing every seed it used.

use streamsim_models::bugs::{Bug, CATALOGUE};
use streamsim_models::fixes::Fixes;
use streamsim_sim::hunt::hunt_with_fixes;
use streamsim_sim::scenario::Scenario;

use crate::support::repo_root;

/// Seeds the hunt may spend on each switch here: the ceiling is 100; the generator
/// catches every switch well within this (see README's hunt table).
const HUNT_BUDGET: u64 = 30;

#[test]
fn every_switch_has_one_regression_file_that_says_what_it_shows() {
    let dir = repo_root().join("tests/data/bugs");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut problems = Vec::new();
    for file in &names {
        let Some(name) = file.strip_suffix(".toml").filter(|n| !n.contains('.')) else {
            problems.push(format!(
                "{file}: not SWITCH.toml (re-make it: bash scripts/remake-regressions.sh)"
            ));
            continue;
        };
        if Bug::from_name(name).is_none() {
            problems.push(format!("{file}: no bug switch {name:?}"));
        }
    }
    for info in CATALOGUE {
        let path = dir.join(format!("{}.toml", info.name));
        let Ok(text) = std::fs::read_to_string(&path) else {
            problems.push(format!(
                "{}: missing (bash scripts/remake-regressions.sh {})",
                path.display(),
                info.name
            ));
            continue;
        };
        // The file opens with its replay command (as `streamsim shrink` writes it), then its
        // first comment says what it shows: the bug and the invariant that catches it.
        let replay = format!("# streamsim run tests/data/bugs/{}.toml --seed ", info.name);
        let mut lines = text.lines();
        let first = lines.next().unwrap_or_default();
        if !first.starts_with(&replay) || !first.contains(&format!("--bug {}", info.name)) {
            problems.push(format!(
                "{}: the first line must replay it ({replay}N --bug {} --fix all): {first:?}",
                path.display(),
                info.name
            ));
        }
        let says = lines.next().unwrap_or_default();
        if !says.starts_with('#') || !says.contains(info.name) || !says.contains(info.caught_by) {
            problems.push(format!(
                "{}: the first comment must say what it shows ({} caught by {}): {says:?}",
                path.display(),
                info.name,
                info.caught_by
            ));
        }
        if let Err(error) = Scenario::load(&path) {
            problems.push(error.to_string());
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_hunt_catches_every_switch_within_its_budget_and_the_clean_model_passes() {
    let report = hunt_with_fixes(HUNT_BUDGET, 2, Fixes::all());
    let missed: Vec<&str> = report
        .bugs
        .iter()
        .filter(|h| !h.caught)
        .map(|h| h.name)
        .collect();
    assert!(
        missed.is_empty(),
        "not caught by their catalogue invariants within {HUNT_BUDGET} seeds: {missed:?}; run `streamsim bugs --hunt --budget {HUNT_BUDGET} --fix all`"
    );
    assert_eq!(
        report.clean_failures, 0,
        "the patched model fails seeds the hunt used; run `streamsim sweep --generated --seeds 0..{HUNT_BUDGET} --fix all`"
    );
    assert_eq!(report.bugs.len(), CATALOGUE.len());
    assert!(CATALOGUE.len() >= 15, "at least 15 switches");
}

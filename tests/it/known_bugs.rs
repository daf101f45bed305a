//! The known-bug catalogue (`models::bugs`), on the patched baseline (`--fix all`, where no
//! finding F1-F4 can happen, so a red run is the switch's doing): every switch has a permanent
//! regression scenario in `tests/data/bugs/` (the generated scenario where `streamsim bugs
//! --hunt --fix all` first caught it, written out as a TOML file so it survives changes to the
//! generator), which the catalogue's invariant must catch while the patched model passes the
//! same seed; and the hunt itself must catch every switch by its catalogue invariant within its
//! budget with the patched model passing every seed it used.

use std::path::PathBuf;

use streamsim_models::bugs::{Bugs, CATALOGUE};
use streamsim_models::fixes::Fixes;
use streamsim_sim::hunt::hunt_with_fixes;
use streamsim_sim::runner::run_seed_fixed;
use streamsim_sim::scenario::Scenario;

use crate::support::repo_root;

/// Seeds the hunt may spend on each switch here: the ceiling is 100; the generator
/// catches every switch well within this (see README's hunt table).
const HUNT_BUDGET: u64 = 30;

/// The regression file of `name`: `<name>.toml` (made by `streamsim shrink`, carrying the bug
/// on most seeds: `tests/scenarios.rs` checks it over a seed range) or, until it is re-made,
/// `<name>.seed-<N>.toml` (a generated scenario frozen at the seed that caught it), with `N`.
fn regression_file(name: &str) -> (PathBuf, Option<u64>) {
    let dir = repo_root().join("tests/data/bugs");
    let shrunk = dir.join(format!("{name}.toml"));
    if shrunk.is_file() {
        return (shrunk, None);
    }
    let prefix = format!("{name}.seed-");
    let entry = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|file| file.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no regression scenario for {name} in {}", dir.display()));
    let seed = entry[prefix.len()..]
        .trim_end_matches(".toml")
        .parse()
        .unwrap_or_else(|e| panic!("{entry}: seed: {e}"));
    (dir.join(entry), Some(seed))
}

#[test]
fn every_switch_is_caught_by_its_invariant_on_its_regression_scenario() {
    let failures: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = CATALOGUE
            .iter()
            .map(|info| {
                scope.spawn(move || {
                    let (path, seed) = regression_file(info.name);
                    // A shrunk file is judged over a seed range by tests/scenarios.rs.
                    let Some(seed) = seed else {
                        return Vec::new();
                    };
                    let scenario = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
                    let replay = format!(
                        "streamsim run {} --seed {seed} --bug {} --fix all",
                        path.display(),
                        info.name
                    );
                    let buggy =
                        run_seed_fixed(&scenario, seed, Bugs::NONE.with(info.bug), Fixes::all());
                    let caught = buggy
                        .violations
                        .iter()
                        .any(|v| !v.is_known() && v.invariant == info.caught_by);
                    let clean = run_seed_fixed(&scenario, seed, Bugs::NONE, Fixes::all());
                    let mut problems = Vec::new();
                    if !caught {
                        problems.push(format!(
                            "{} ({}) not caught by {}: {:?}; replay: {replay}",
                            info.name,
                            info.id,
                            info.caught_by,
                            buggy.violations.iter().find(|v| !v.is_known())
                        ));
                    }
                    if !clean.violations.is_empty() {
                        problems.push(format!(
                            "the patched model fails {}'s scenario: {:?}; replay: streamsim run {} --seed {seed} --fix all",
                            info.name,
                            clean.violations.first(),
                            path.display()
                        ));
                    }
                    problems
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("no panic"))
            .collect()
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
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

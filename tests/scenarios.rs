//! `cargo test --test scenarios`: every shipped scenario and every known-bug regression file
//! is its own test (libtest-mimic), so `cargo test --test scenarios smoke`, `--list` and
//! `cargo nextest run --partition` work per file.
//!
//! - `scenarios/NAME.toml` gives two tests: `scenario::NAME` (Synapse 1.163.2 as it is: a
//!   seed fails when a violation is left that no confirmed finding explains, as `sweep`
//!   judges) and `scenario::NAME::fix-all` (the patched baseline: any violation fails).
//! - `tests/data/bugs/SWITCH.toml` gives `bug::SWITCH`: with the switch on and `--fix all`,
//!   the catalogue's invariant must fail on at least 90% of the seeds (rounded down, at least
//!   one: 18 of 20, 2 of 3), and the patched model without the switch must pass every one.
//!   (`scripts/remake-regressions.sh` shrinks each file until it catches its switch on at
//!   least 18 of seeds 0..20.)
//!
//! Seeds: `STREAMSIM_SEEDS=A..B` (default 0..3), or `STREAMSIM_SEED=N` for one. A failure
//! prints the `streamsim run` command that replays it.

use std::path::{Path, PathBuf};

use libtest_mimic::{Arguments, Failed, Trial};
use streamsim_models::bugs::{Bug, Bugs};
use streamsim_models::fixes::Fixes;
use streamsim_sim::runner::run_seed_fixed;
use streamsim_sim::scenario::Scenario;

/// Seeds when the environment names none.
const DEFAULT_SEEDS: std::ops::Range<u64> = 0..3;

fn seeds() -> Result<Vec<u64>, String> {
    if let Ok(seed) = std::env::var("STREAMSIM_SEED") {
        let seed = seed
            .parse()
            .map_err(|e| format!("STREAMSIM_SEED={seed}: {e}"))?;
        return Ok(vec![seed]);
    }
    let Ok(range) = std::env::var("STREAMSIM_SEEDS") else {
        return Ok(DEFAULT_SEEDS.collect());
    };
    let (a, b) = range
        .split_once("..")
        .ok_or_else(|| format!("STREAMSIM_SEEDS={range}: not A..B"))?;
    let a: u64 = a
        .parse()
        .map_err(|e| format!("STREAMSIM_SEEDS={range}: A: {e}"))?;
    let b: u64 = b
        .parse()
        .map_err(|e| format!("STREAMSIM_SEEDS={range}: B: {e}"))?;
    if a >= b {
        return Err(format!(
            "STREAMSIM_SEEDS={range}: empty (A must be below B)"
        ));
    }
    Ok((a..b).collect())
}

fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

/// The path as the replay command should print it (relative to the repository).
fn shown(path: &Path) -> String {
    path.strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap_or(path)
        .display()
        .to_string()
}

fn replay(path: &Path, seed: u64, bugs: Bugs, fixes: Fixes) -> String {
    let mut command = format!("streamsim run {} --seed {seed}", shown(path));
    for name in bugs.names() {
        command.push_str(&format!(" --bug {name}"));
    }
    command.push_str(&fixes.flags());
    command
}

/// A shipped scenario on one baseline: every seed passes (known findings allowed on the
/// faithful one, as `sweep` counts them).
fn shipped(path: &Path, seeds: &[u64], fixes: Fixes) -> Result<(), Failed> {
    let scenario = Scenario::load(path).map_err(|e| e.to_string())?;
    let mut failures = Vec::new();
    for &seed in seeds {
        let report = run_seed_fixed(&scenario, seed, Bugs::NONE, fixes);
        if report.has_unexplained() {
            let first = report
                .violations
                .iter()
                .find(|v| !v.is_known())
                .expect("an unexplained violation");
            failures.push(format!(
                "seed {seed}: [{}] {}\n  replay: {}",
                first.invariant,
                first.message,
                replay(path, seed, Bugs::NONE, fixes)
            ));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n").into())
    }
}

/// A regression file: its switch caught by the catalogue invariant on at least 90% of the
/// seeds (rounded down, at least one), the patched model without it passing all of them.
fn regression(path: &Path, bug: Bug, seeds: &[u64]) -> Result<(), Failed> {
    let scenario = Scenario::load(path).map_err(|e| e.to_string())?;
    let info = bug.info();
    let bugs = Bugs::NONE.with(bug);
    let mut missed = Vec::new();
    let mut clean_failures = Vec::new();
    for &seed in seeds {
        let buggy = run_seed_fixed(&scenario, seed, bugs, Fixes::all());
        if !buggy
            .violations
            .iter()
            .any(|v| !v.is_known() && v.invariant == info.caught_by)
        {
            missed.push(seed);
        }
        let clean = run_seed_fixed(&scenario, seed, Bugs::NONE, Fixes::all());
        if let Some(first) = clean.violations.first() {
            clean_failures.push(format!(
                "seed {seed}: the patched model without the switch fails [{}] {}\n  replay: {}",
                first.invariant,
                first.message,
                replay(path, seed, Bugs::NONE, Fixes::all())
            ));
        }
    }
    let caught = seeds.len() - missed.len();
    // At least 90% of the seeds, rounded down (the files are made to catch their switch on
    // 18 of seeds 0..20, so 2 of the default 3), and at least one.
    let needed = (seeds.len() * 9 / 10).max(1);
    let mut problems = clean_failures;
    if caught < needed {
        problems.push(format!(
            "{} caught by {} on {caught} of {} seeds (needs {needed}); missed seeds {missed:?}\n  replay: {}",
            info.name,
            info.caught_by,
            seeds.len(),
            replay(path, missed[0], bugs, Fixes::all())
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n").into())
    }
}

fn main() {
    let args = Arguments::from_args();
    let seeds = match seeds() {
        Ok(seeds) => seeds,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut trials = Vec::new();
    for path in toml_files(&root.join("scenarios")) {
        let name = path
            .file_stem()
            .expect("a file")
            .to_string_lossy()
            .into_owned();
        for (suffix, fixes) in [("", Fixes::NONE), ("::fix-all", Fixes::all())] {
            let (path, seeds) = (path.clone(), seeds.clone());
            trials.push(Trial::test(
                format!("scenario::{name}{suffix}"),
                move || shipped(&path, &seeds, fixes),
            ));
        }
    }
    for path in toml_files(&root.join("tests/data/bugs")) {
        let file = path
            .file_name()
            .expect("a file")
            .to_string_lossy()
            .into_owned();
        // `SWITCH.toml`.
        let Some(name) = file.strip_suffix(".toml").filter(|n| !n.contains('.')) else {
            continue;
        };
        let name = name.to_owned();
        let seeds = seeds.clone();
        trials.push(Trial::test(format!("bug::{name}"), move || {
            let bug =
                Bug::from_name(&name).ok_or_else(|| format!("{file}: no bug switch {name:?}"))?;
            regression(&path, bug, &seeds)
        }));
    }
    libtest_mimic::run(&args, trials).exit();
}

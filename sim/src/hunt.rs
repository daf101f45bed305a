//! The bug hunt: for every historical-bug switch, generated scenarios (one per seed) until the
//! invariant its catalogue entry names fails, and the clean model on the same seeds, which must
//! pass.
//!
//! A violation diagnosed as a known bug of real Synapse (F1-F5) is not a catch: the clean
//! model has it too. On the patched baseline (`--fix all`) there are none, so a red run of a
//! switch is that switch's doing; another invariant failing first does not count as the catch.

use std::time::Instant;

use serde::Serialize;
use streamsim_models::bugs::{Bugs, CATALOGUE};
use streamsim_models::fixes::Fixes;

use crate::generate::generated;
use crate::runner::{run_seed_fixed, RunReport};

/// The hunt for one switch.
#[derive(Clone, Debug, Serialize)]
pub struct Hunted {
    pub name: &'static str,
    pub caught: bool,
    /// Seeds run until the catch (the whole budget when not caught).
    pub seeds: u64,
    pub wall_s: f64,
    /// The invariant that caught it: the one its catalogue entry names.
    pub invariant: Option<&'static str>,
    /// The command that replays the catch.
    pub replay: Option<String>,
}

/// What the whole hunt found; serializes as DESIGN.md's `--json` line.
#[derive(Clone, Debug, Serialize)]
pub struct HuntReport {
    pub bugs: Vec<Hunted>,
    /// Failures of the clean model on the seeds the hunt used.
    pub clean_failures: u64,
}

/// The first violation not explained by a known Synapse bug.
fn unexplained(report: &RunReport) -> Option<&'static str> {
    report
        .violations
        .iter()
        .find(|v| !v.is_known())
        .map(|v| v.invariant)
}

/// Whether `invariant` failed in `report` for a reason no known Synapse bug explains.
fn caught_by(report: &RunReport, invariant: &str) -> bool {
    report
        .violations
        .iter()
        .any(|v| !v.is_known() && v.invariant == invariant)
}

/// Hunts every switch with at most `budget` seeds each, on `jobs` threads.
pub fn hunt(budget: u64, jobs: usize) -> HuntReport {
    hunt_with_fixes(budget, jobs, Fixes::NONE)
}

/// [`hunt`] with the proposed fixes `fixes` on in every run (the clean runs included).
pub fn hunt_with_fixes(budget: u64, jobs: usize, fixes: Fixes) -> HuntReport {
    let fix_flags = fixes.flags();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(vec![None; CATALOGUE.len()]);
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(info) = CATALOGUE.get(index) else {
                    return;
                };
                let bugs = Bugs::NONE.with(info.bug);
                let started = Instant::now();
                let mut hunted = Hunted {
                    name: info.name,
                    caught: false,
                    seeds: budget,
                    wall_s: 0.0,
                    invariant: None,
                    replay: None,
                };
                for seed in 0..budget {
                    let report = run_seed_fixed(&generated(seed), seed, bugs, fixes);
                    if caught_by(&report, info.caught_by) {
                        hunted.caught = true;
                        hunted.seeds = seed + 1;
                        hunted.invariant = Some(info.caught_by);
                        hunted.replay = Some(format!(
                            "streamsim run --generated --seed {seed} --bug {}{fix_flags}",
                            info.name
                        ));
                        break;
                    }
                }
                hunted.wall_s = started.elapsed().as_secs_f64();
                results.lock().expect("no panics holding it")[index] = Some(hunted);
            });
        }
    });
    let bugs: Vec<Hunted> = results
        .into_inner()
        .expect("no panics holding it")
        .into_iter()
        .map(|h| h.expect("every switch hunted"))
        .collect();
    let used = bugs.iter().map(|h| h.seeds).max().unwrap_or(0);
    let clean_failures = (0..used)
        .filter(|seed| {
            unexplained(&run_seed_fixed(&generated(*seed), *seed, Bugs::NONE, fixes)).is_some()
        })
        .count() as u64;
    HuntReport {
        bugs,
        clean_failures,
    }
}

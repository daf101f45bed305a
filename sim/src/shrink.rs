//! Shrinking a failing run (`streamsim shrink`): greedy delta debugging over a scenario's
//! parts, down to a smaller scenario that still fails the same invariant.
//!
//! A candidate is kept when it still fails the target on enough of the seeds (one seed for a
//! replay; most of a range for a regression file) and, when historical-bug switches are on,
//! when the same seeds with the switches off still pass: a regression scenario must fail
//! because of its bug, not because shrinking made the world unable to converge. Passes run
//! to a fixpoint, largest cuts first: the drawn faults made explicit, then faults removed
//! (halves, quarters, ... one by one), hosts removed, the run shortened, rates lowered, faults
//! shortened and moved earlier. Every candidate goes through the scenario parser, so the
//! result is a file `streamsim run` accepts. Deterministic: the same input gives the same
//! file.

use streamsim_models::bugs::Bugs;
use streamsim_models::fixes::Fixes;

use crate::checks::Violation;
use crate::runner::{self, SweepScenarios};
use crate::scenario::{Fault, FaultKind, Scenario};

/// What must keep failing: an invariant, and whether the violation is a known finding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub invariant: &'static str,
    /// The finding the violation is diagnosed as (`None`: an unexplained failure).
    pub finding: Option<&'static str>,
}

impl Target {
    /// Whether `violation` is this target.
    pub fn matches(&self, violation: &Violation) -> bool {
        violation.invariant == self.invariant && violation.finding == self.finding
    }

    /// The target of a failing run: its first unexplained violation, else its first one.
    pub fn of(violations: &[Violation]) -> Option<Target> {
        let first = violations
            .iter()
            .find(|v| !v.is_known())
            .or_else(|| violations.first())?;
        Some(Target {
            invariant: first.invariant,
            finding: first.finding,
        })
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.finding {
            Some(finding) => write!(f, "{} (known: {finding})", self.invariant),
            None => write!(f, "{} (failed)", self.invariant),
        }
    }
}

/// How to judge a candidate.
#[derive(Clone, Debug)]
pub struct Options {
    /// The seeds every candidate runs.
    pub seeds: Vec<u64>,
    /// How many of them must fail the target (1..=seeds.len()).
    pub min_failing: usize,
    pub bugs: Bugs,
    pub fixes: Fixes,
    /// Threads for the seeds of one candidate.
    pub jobs: usize,
    /// At most this many candidates are tried.
    pub max_candidates: usize,
    /// The seed known to fail: its drawn faults are the ones made explicit.
    pub origin_seed: u64,
}

/// Why a run cannot be shrunk.
#[derive(Debug, thiserror::Error)]
pub enum ShrinkError {
    #[error("the run does not fail{}: nothing to shrink (seeds {seeds:?})", invariant.as_ref().map(|i| format!(" {i}")).unwrap_or_default())]
    Passes {
        seeds: Vec<u64>,
        invariant: Option<String>,
    },
    #[error(
        "{target} fails on {failing} of the {seeds} seeds at best, fewer than the {min} asked for"
    )]
    TooFew {
        target: Target,
        failing: usize,
        seeds: usize,
        min: usize,
        /// The scenario that came closest.
        best: Box<Scenario>,
    },
    #[error("{target} also fails with the bug switches off on {failing} of the seeds: the scenario fails without its bug")]
    FailsWithoutTheBug { target: Target, failing: usize },
    #[error("with the bug switches off, seed {seed} fails [{invariant}]: the scenario fails without its bug")]
    OtherFailureWithoutTheBug { seed: u64, invariant: &'static str },
}

/// A shrunk scenario and how it was found.
#[derive(Clone, Debug)]
pub struct Shrunk {
    pub scenario: Scenario,
    pub target: Target,
    /// Seeds (of `Options::seeds`) on which the shrunk scenario fails the target.
    pub failing: Vec<u64>,
    /// Candidates run (each on every seed).
    pub candidates: usize,
    /// Lines of the TOML text before and after (without comments).
    pub lines_before: usize,
    pub lines_after: usize,
}

/// The TOML text of a scenario (what `--print-scenario` prints, without the comment).
pub fn to_toml(scenario: &Scenario) -> String {
    scenario.to_toml()
}

/// The seeds of `seeds` on which `scenario` fails `target`.
fn failing_seeds(scenario: &Scenario, target: &Target, options: &Options, bugs: Bugs) -> Vec<u64> {
    let results = runner::sweep(
        SweepScenarios::Fixed(scenario),
        &options.seeds,
        bugs,
        options.fixes,
        options.jobs,
        &|_| {},
    );
    results
        .into_iter()
        .filter(|r| r.violations.iter().any(|v| target.matches(v)))
        .map(|r| r.seed)
        .collect()
}

/// The first of the seeds on which `scenario` without bug switches fails any invariant
/// (a violation no confirmed finding explains): a scenario meant to show a bug must pass
/// without it on every seed, whatever the target (a file shrunk on its target alone once
/// kept a converge window too short for the patched model to converge in).
fn fails_without_bugs(scenario: &Scenario, options: &Options) -> Option<(u64, &'static str)> {
    // Every seed must pass, so all of them run (in parallel, as `count_failing`'s do).
    runner::sweep(
        SweepScenarios::Fixed(scenario),
        &options.seeds,
        Bugs::NONE,
        options.fixes,
        options.jobs,
        &|_| {},
    )
    .into_iter()
    .find_map(|report| {
        report
            .violations
            .iter()
            .find(|v| !v.is_known())
            .map(|v| (report.seed, v.invariant))
    })
}

/// How many of the seeds `scenario` fails `target` on, judged with `bugs`; `None` once
/// fewer than `at_least` is certain. With `exact` false the count may stop at `at_least`
/// (the answer is certain). `at_least` 0 asks whether it fails on none: `Some(0)` or `None`.
/// Stops running seeds once the answer is certain, so a candidate that is going to be refused
/// usually costs a few runs; the answer does not depend on the order threads finish in.
fn count_failing(
    scenario: &Scenario,
    target: &Target,
    options: &Options,
    bugs: Bugs,
    at_least: usize,
    exact: bool,
) -> Option<usize> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let total = options.seeds.len();
    let next = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let passed = AtomicUsize::new(0);
    let decided = |failed: usize, passed: usize| {
        if at_least == 0 {
            failed > 0
        } else {
            passed > total - at_least || (!exact && failed >= at_least)
        }
    };
    std::thread::scope(|scope| {
        for _ in 0..options.jobs.clamp(1, total) {
            scope.spawn(|| loop {
                if decided(failed.load(Ordering::SeqCst), passed.load(Ordering::SeqCst)) {
                    return;
                }
                let index = next.fetch_add(1, Ordering::SeqCst);
                let Some(&seed) = options.seeds.get(index) else {
                    return;
                };
                let report = runner::run_seed_fixed(scenario, seed, bugs, options.fixes);
                if report.violations.iter().any(|v| target.matches(v)) {
                    failed.fetch_add(1, Ordering::SeqCst);
                } else {
                    passed.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    let failed = failed.into_inner();
    let enough = if at_least == 0 {
        failed == 0
    } else {
        failed >= at_least
    };
    enough.then_some(failed)
}

/// The target of `scenario` on the first seed that fails (first unexplained violation
/// first), of invariant `only` when given.
pub fn find_target(
    scenario: &Scenario,
    options: &Options,
    only: Option<&str>,
) -> Result<Target, ShrinkError> {
    for &seed in &options.seeds {
        let mut report = runner::run_seed_fixed(scenario, seed, options.bugs, options.fixes);
        if let Some(only) = only {
            report.violations.retain(|v| v.invariant == only);
        }
        if let Some(target) = Target::of(&report.violations) {
            return Ok(target);
        }
    }
    Err(ShrinkError::Passes {
        seeds: options.seeds.clone(),
        invariant: only.map(str::to_owned),
    })
}

/// Shrinks `scenario`, which must fail `target` on at least `options.min_failing` seeds.
/// `progress` gets one line per kept step.
pub fn shrink(
    scenario: &Scenario,
    target: Target,
    options: &Options,
    progress: &mut dyn FnMut(&str),
) -> Result<Shrunk, ShrinkError> {
    assert!(
        (1..=options.seeds.len()).contains(&options.min_failing),
        "min_failing {} outside 1..={}",
        options.min_failing,
        options.seeds.len()
    );
    // The drawn faults of the seed that failed, made explicit: every seed then meets the
    // faults that caught it, and each one can be removed on its own. Kept if it fails on at
    // least as many seeds.
    let mut start = scenario.clone();
    let mut failing = failing_seeds(scenario, &target, options, options.bugs);
    if scenario.random_faults.is_some() {
        let mut explicit = scenario.clone();
        explicit.faults = crate::faults::schedule(scenario, options.origin_seed);
        explicit.random_faults = None;
        let explicit_failing = failing_seeds(&explicit, &target, options, options.bugs);
        if explicit_failing.len() >= failing.len() {
            progress(&format!(
                "shrink: the faults drawn from seed {} made explicit: fails on {} of {} seeds (drawn: {})",
                options.origin_seed,
                explicit_failing.len(),
                options.seeds.len(),
                failing.len()
            ));
            (start, failing) = (explicit, explicit_failing);
        }
    }
    if failing.is_empty() {
        return Err(ShrinkError::Passes {
            seeds: options.seeds.clone(),
            invariant: Some(target.invariant.to_owned()),
        });
    }
    // In time order, as the world applies them (a stable sort, like the schedule's): moving a
    // fault earlier measures from the one before it, which a file may list later (the panic
    // `at_ms - previous` once gave on a hand-written file).
    sort_faults(&mut start.faults);
    let mut shrinker = Shrinker {
        target,
        options,
        candidates: 0,
        // Below the asked-for count, every kept candidate must fail on at least as many
        // seeds as the best so far (a ratchet up to `min_failing`).
        need: failing.len().min(options.min_failing),
        best: start,
        failing,
    };
    if options.bugs != Bugs::NONE {
        let without = failing_seeds(&shrinker.best, &shrinker.target, options, Bugs::NONE);
        if !without.is_empty() {
            return Err(ShrinkError::FailsWithoutTheBug {
                target: shrinker.target,
                failing: without.len(),
            });
        }
        if let Some((seed, invariant)) = fails_without_bugs(&shrinker.best, options) {
            return Err(ShrinkError::OtherFailureWithoutTheBug { seed, invariant });
        }
    }
    let lines_before = to_toml(scenario).lines().count();
    progress(&format!(
        "shrink: {} fails on {} of {} seeds; {lines_before} lines",
        shrinker.target,
        shrinker.failing.len(),
        options.seeds.len()
    ));
    shrinker.run(progress);
    shrinker.failing = failing_seeds(&shrinker.best, &shrinker.target, options, options.bugs);
    if shrinker.failing.len() < options.min_failing {
        return Err(ShrinkError::TooFew {
            target: shrinker.target,
            failing: shrinker.failing.len(),
            seeds: options.seeds.len(),
            min: options.min_failing,
            best: Box::new(shrinker.best),
        });
    }
    let lines_after = to_toml(&shrinker.best).lines().count();
    Ok(Shrunk {
        scenario: shrinker.best,
        target: shrinker.target,
        failing: shrinker.failing,
        candidates: shrinker.candidates,
        lines_before,
        lines_after,
    })
}

struct Shrinker<'o> {
    target: Target,
    options: &'o Options,
    candidates: usize,
    best: Scenario,
    failing: Vec<u64>,
    /// How many seeds a candidate must fail on to be kept.
    need: usize,
}

impl Shrinker<'_> {
    fn exhausted(&self) -> bool {
        self.candidates >= self.options.max_candidates
    }

    /// Tries `candidate`; keeps it (and says why) when it is a valid scenario that still
    /// fails the target, and passes without the bug switches.
    fn attempt(&mut self, candidate: Scenario, why: &str, progress: &mut dyn FnMut(&str)) -> bool {
        if candidate == self.best || self.exhausted() {
            return false;
        }
        // Through the parser: only what a user could write is kept.
        let text = to_toml(&candidate);
        let Ok(candidate) = Scenario::parse(std::path::Path::new("<shrink>"), &text) else {
            return false;
        };
        self.candidates += 1;
        let options = self.options;
        let ratchet = self.need < options.min_failing;
        let Some(count) = count_failing(
            &candidate,
            &self.target,
            options,
            options.bugs,
            self.need,
            ratchet,
        ) else {
            return false;
        };
        if options.bugs != Bugs::NONE && fails_without_bugs(&candidate, options).is_some() {
            return false;
        }
        if ratchet && count > self.need {
            self.need = count.min(options.min_failing);
            progress(&format!(
                "shrink: now failing on {count} of {} seeds",
                options.seeds.len()
            ));
        }
        progress(&format!(
            "shrink: {why}; {} lines ({} candidates tried)",
            text.lines().count(),
            self.candidates
        ));
        self.best = candidate;
        true
    }

    fn run(&mut self, progress: &mut dyn FnMut(&str)) {
        self.intensify(progress);
        loop {
            let before = self.best.clone();
            // Shorter runs first: every later candidate costs less.
            self.shorten_run(progress);
            self.remove_faults(progress);
            self.remove_hosts(progress);
            self.lower_rates(progress);
            self.shorten_faults(progress);
            if self.best == before || self.exhausted() {
                return;
            }
        }
    }

    /// While the scenario fails on fewer seeds than asked, more of what makes a race happen:
    /// a longer run, more batches. Each step is kept only if it fails on more seeds than
    /// before; shrinking then takes back whatever it can.
    fn intensify(&mut self, progress: &mut dyn FnMut(&str)) {
        type Grow = fn(&mut Scenario) -> Option<String>;
        let steps: [Grow; 2] = [
            |s| {
                (s.duration_ms < 240_000).then(|| {
                    s.duration_ms = (s.duration_ms * 2).min(240_000);
                    format!("duration_ms {}", s.duration_ms)
                })
            },
            |s| {
                let w = &mut s.workload;
                (w.batches_per_second < 50).then(|| {
                    w.batches_per_second = (w.batches_per_second * 2).min(50);
                    format!("batches_per_second {}", w.batches_per_second)
                })
            },
        ];
        while self.need < self.options.min_failing && !self.exhausted() {
            let improved = steps.iter().any(|grow| {
                let mut candidate = self.best.clone();
                let Some(why) = grow(&mut candidate) else {
                    return false;
                };
                let need = self.need;
                self.need += 1;
                let kept = self.attempt(candidate, &format!("intensified: {why}"), progress);
                if !kept {
                    self.need = need;
                }
                kept
            });
            if !improved {
                return;
            }
        }
    }

    /// ddmin over the fault list: chunks of half, a quarter, ... one fault.
    fn remove_faults(&mut self, progress: &mut dyn FnMut(&str)) {
        let mut chunk = self.best.faults.len().div_ceil(2).max(1);
        loop {
            let mut start = 0;
            while start < self.best.faults.len() {
                let end = (start + chunk).min(self.best.faults.len());
                let mut candidate = self.best.clone();
                let removed: Vec<String> = candidate
                    .faults
                    .drain(start..end)
                    .map(|f| format!("{} at {} ms", crate::faults::describe(&f.kind), f.at_ms))
                    .collect();
                let why = if removed.len() == 1 {
                    format!("removed fault {}", removed[0])
                } else {
                    format!("removed {} faults", removed.len())
                };
                if !self.attempt(candidate, &why, progress) {
                    start = end;
                }
            }
            if chunk == 1 {
                return;
            }
            chunk = chunk.div_ceil(2);
        }
    }

    /// The highest-numbered writer, reader or client goes, with every fault that names it.
    fn remove_hosts(&mut self, progress: &mut dyn FnMut(&str)) {
        type Count = fn(&mut Scenario) -> &mut u32;
        let counts: [(&str, Count, u32); 4] = [
            ("writer", |s| &mut s.topology.writers, 1),
            ("reader", |s| &mut s.topology.readers, 0),
            ("sync client", |s| &mut s.topology.sync_clients, 0),
            ("writer client", |s| &mut s.topology.writer_clients, 0),
        ];
        for (role, count, min) in counts {
            loop {
                let mut candidate = self.best.clone();
                let hosts_before = candidate.hosts();
                let n = count(&mut candidate);
                if *n <= min {
                    break;
                }
                *n -= 1;
                let gone: Vec<String> = hosts_before
                    .into_iter()
                    .filter(|h| !candidate.hosts().contains(h))
                    .collect();
                candidate.faults.retain(|f| !names_any(&f.kind, &gone));
                candidate.topology.late_hosts.retain(|h| !gone.contains(h));
                if !self.attempt(
                    candidate,
                    &format!("removed {role} {}", gone.join(", ")),
                    progress,
                ) {
                    break;
                }
            }
        }
        if self.best.topology.rooms_per_writer > 1 {
            let mut candidate = self.best.clone();
            candidate.topology.rooms_per_writer = 1;
            self.attempt(candidate, "one room per writer", progress);
        }
    }

    /// The workload ends soon after the last fault; halves of what is left.
    fn shorten_run(&mut self, progress: &mut dyn FnMut(&str)) {
        // converge_within only with the bug switches on: a run judged too early would fail
        // liveness on any model, and the check with the switches off refuses that.
        while self.options.bugs != Bugs::NONE && self.best.converge_within_ms > 5_000 {
            let mut candidate = self.best.clone();
            candidate.converge_within_ms = round_ms(candidate.converge_within_ms / 2).max(5_000);
            let why = format!("converge_within_ms {}", candidate.converge_within_ms);
            if !self.attempt(candidate, &why, progress) {
                break;
            }
        }
        loop {
            let last_fault = self.best.faults.iter().map(|f| f.at_ms).max().unwrap_or(0);
            let duration = self.best.duration_ms;
            let left = duration - last_fault;
            let mut shorter: Vec<u64> = [1_000, left / 4, left / 2, left * 3 / 4]
                .into_iter()
                .map(|cut| round_ms(last_fault + cut).max(1_000))
                .filter(|d| *d < duration)
                .collect();
            shorter.dedup();
            let kept = shorter.into_iter().any(|shorter| {
                let mut candidate = self.best.clone();
                candidate.duration_ms = shorter;
                if candidate.metrics.flush_interval_ms > shorter {
                    candidate.metrics.flush_interval_ms = shorter;
                }
                if let Some(random) = &mut candidate.random_faults {
                    random.until_ms = random.until_ms.map(|u| u.min(shorter));
                }
                self.attempt(candidate, &format!("duration_ms {shorter}"), progress)
            });
            if !kept {
                break;
            }
        }
    }

    /// Fewer and smaller batches, fewer sends, no cancellations, less latency and loss.
    fn lower_rates(&mut self, progress: &mut dyn FnMut(&str)) {
        type Lower = fn(&mut Scenario) -> Option<String>;
        let steps: [Lower; 9] = [
            |s| {
                let w = &mut s.workload;
                (w.batches_per_second > 1).then(|| {
                    w.batches_per_second = w.batches_per_second.div_ceil(2);
                    format!("batches_per_second {}", w.batches_per_second)
                })
            },
            |s| halve_spread(&mut s.workload.batch_size, "batch_size"),
            |s| {
                let b = &mut s.workload.batch_size;
                (b.min > 1).then(|| {
                    b.min = 1;
                    "batch_size min 1".to_owned()
                })
            },
            |s| {
                let w = &mut s.workload;
                (w.sends_per_second > 0).then(|| {
                    w.sends_per_second /= 2;
                    format!("sends_per_second {}", w.sends_per_second)
                })
            },
            |s| {
                let w = &mut s.workload;
                (w.cancel_rate > 0.0).then(|| {
                    w.cancel_rate = 0.0;
                    "cancel_rate 0".to_owned()
                })
            },
            |s| halve_spread(&mut s.workload.persist_delay_ms, "persist_delay_ms"),
            |s| {
                let w = &mut s.workload;
                w.sync_timeline_limit
                    .take()
                    .map(|_| "no sync_timeline_limit".to_owned())
            },
            |s| {
                let n = &mut s.network;
                (n.message_loss > 0.0).then(|| {
                    n.message_loss = 0.0;
                    "message_loss 0".to_owned()
                })
            },
            |s| halve_spread(&mut s.network.latency_ms, "latency_ms"),
        ];
        for lower in steps {
            loop {
                let mut candidate = self.best.clone();
                let Some(why) = lower(&mut candidate) else {
                    break;
                };
                if !self.attempt(candidate, &why, progress) {
                    break;
                }
            }
        }
    }

    /// Lasting faults end sooner (a heal or restart moved toward its fault, `for_ms`
    /// halved); every fault moves earlier toward the one before it, so the run can end
    /// sooner too.
    fn shorten_faults(&mut self, progress: &mut dyn FnMut(&str)) {
        for index in 0..self.best.faults.len() {
            while let Some(fault) = self.best.faults.get(index) {
                let mut candidate = self.best.clone();
                let why = match &mut candidate.faults[index].kind {
                    FaultKind::SlowReader { for_ms, .. } | FaultKind::Busy { for_ms, .. }
                        if *for_ms > 100 =>
                    {
                        *for_ms = round_ms(*for_ms / 2).max(100);
                        format!("{} for {} ms", crate::faults::describe(&fault.kind), for_ms)
                    }
                    _ => {
                        let previous = index
                            .checked_sub(1)
                            .map_or(0, |p| self.best.faults[p].at_ms);
                        let earlier = round_ms(previous + (fault.at_ms - previous) / 2);
                        if earlier >= fault.at_ms {
                            break;
                        }
                        candidate.faults[index].at_ms = earlier;
                        format!(
                            "{} moved from {} ms to {earlier} ms",
                            crate::faults::describe(&fault.kind),
                            fault.at_ms
                        )
                    }
                };
                sort_faults(&mut candidate.faults);
                if !self.attempt(candidate, &why, progress) {
                    break;
                }
            }
        }
    }
}

/// Whether a fault names any of `hosts`.
fn names_any(kind: &FaultKind, hosts: &[String]) -> bool {
    let named: Vec<&String> = match kind {
        FaultKind::Partition { hosts } => hosts.iter().collect(),
        FaultKind::PartitionOneway { from, to } => vec![from, to],
        FaultKind::Crash { host }
        | FaultKind::Restart { host }
        | FaultKind::Quiesce { host }
        | FaultKind::SlowReader { host, .. }
        | FaultKind::Busy { host, .. } => vec![host],
        FaultKind::Latency { host, .. } => host.iter().collect(),
        FaultKind::Reconfigure { writers } => writers.iter().collect(),
        FaultKind::FutureToken { client, .. } => vec![client],
        FaultKind::Heal {} | FaultKind::MessageLoss { .. } => vec![],
    };
    named.iter().any(|h| hosts.contains(h))
}

/// Halves how far a range's maximum lies above its minimum; `None` when they meet.
fn halve_spread(range: &mut crate::scenario::Range, name: &str) -> Option<String> {
    (range.max > range.min).then(|| {
        range.max = range.min + (range.max - range.min) / 2;
        format!("{name} max {}", range.max)
    })
}

/// Times in a shrunk file are whole 100 ms, so it reads as written by hand.
fn round_ms(ms: u64) -> u64 {
    ms / 100 * 100
}

fn sort_faults(faults: &mut [Fault]) {
    faults.sort_by_key(|f| f.at_ms);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_naming_a_removed_host_is_found() {
        let gone = vec!["r2".to_owned()];
        assert!(names_any(
            &FaultKind::Partition {
                hosts: ["w1".into(), "r2".into()]
            },
            &gone
        ));
        assert!(!names_any(&FaultKind::Heal {}, &gone));
        assert!(names_any(
            &FaultKind::Reconfigure {
                writers: vec!["w1".into(), "r2".into()]
            },
            &gone
        ));
    }

    fn violation(invariant: &'static str, finding: Option<&'static str>) -> Violation {
        Violation {
            invariant,
            at: streamsim_models::time::SimInstant::ZERO,
            hosts: Vec::new(),
            events: Vec::new(),
            tokens: Vec::new(),
            message: String::new(),
            finding,
        }
    }

    #[test]
    fn the_target_is_the_first_unexplained_violation_else_the_first() {
        let known = violation("no_missed_event", Some("F3"));
        let failed = violation("liveness", None);
        let target = Target::of(&[known.clone(), failed.clone()]).unwrap();
        assert_eq!(target.invariant, "liveness");
        assert!(target.matches(&failed) && !target.matches(&known));
        let target = Target::of(std::slice::from_ref(&known)).unwrap();
        assert_eq!(target.to_string(), "no_missed_event (known: F3)");
        assert!(
            !target.matches(&violation("no_missed_event", None)),
            "a known target is not matched by an unexplained violation"
        );
        assert_eq!(Target::of(&[]), None);
    }

    #[test]
    fn times_round_down_to_100_ms() {
        assert_eq!(round_ms(12_345), 12_300);
        assert_eq!(round_ms(99), 0);
    }
}

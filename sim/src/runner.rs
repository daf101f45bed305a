//! Running seeds: one run (simulate, then judge), and a sweep over a seed range, in parallel
//! threads, each seed its own independent simulation.
//!
//! Results are plain values; the CLI prints them. A sweep's results come back in seed order
//! whatever the thread interleaving, so its output is deterministic too.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use streamsim_models::bugs::Bugs;
use streamsim_models::fixes::Fixes;
use streamsim_models::time::SimInstant;

use crate::checks::{check_all_and_advisories, sometimes_reached, CheckContext, Violation};
use crate::history::{Event, History};
use crate::scenario::Scenario;
use crate::world;

/// The verdict and the evidence of one seed.
#[derive(Debug)]
pub struct RunReport {
    pub seed: u64,
    pub violations: Vec<Violation>,
    /// Where the run fell short of a guarantee Synapse does not give (never a failure).
    pub advisories: Vec<Violation>,
    pub history: History,
    /// What the metrics system did (its checks are among `violations`).
    pub metrics: crate::aggregation::MetricsOutcome,
    pub ended_at: SimInstant,
    /// Replication commands put on a wire.
    pub messages: u64,
    /// Events committed to the database.
    pub events: u64,
    /// Wall time of the simulation and the checks (for the CLI's timing output only).
    pub wall: Duration,
    /// What the convergence checks left out because a host was down at the end, one
    /// sentence each (`checks::convergence_exemptions`).
    pub not_judged: Vec<String>,
}

impl RunReport {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// Whether a violation is left that no known Synapse bug explains.
    pub fn has_unexplained(&self) -> bool {
        self.violations.iter().any(|v| !v.is_known())
    }

    /// The known Synapse bugs this run hit, when every violation is diagnosed as one.
    pub fn known_findings(&self) -> Option<Vec<&'static str>> {
        if self.violations.is_empty() || !self.violations.iter().all(Violation::is_known) {
            return None;
        }
        let mut findings: Vec<&'static str> =
            self.violations.iter().filter_map(|v| v.finding).collect();
        findings.sort_unstable();
        findings.dedup();
        Some(findings)
    }
}

/// Simulates one seed with the clean model and applies every check.
pub fn run_seed(scenario: &Scenario, seed: u64) -> RunReport {
    run_seed_with(scenario, seed, Bugs::NONE)
}

/// Simulates one seed with the historical-bug switches `bugs` on and applies every check.
pub fn run_seed_with(scenario: &Scenario, seed: u64, bugs: Bugs) -> RunReport {
    run_seed_fixed(scenario, seed, bugs, Fixes::NONE)
}

/// [`run_seed_with`] with the proposed fixes `fixes` on as well.
pub fn run_seed_fixed(scenario: &Scenario, seed: u64, bugs: Bugs, fixes: Fixes) -> RunReport {
    let started = Instant::now();
    let outcome = world::simulate_with_fixes(scenario, seed, bugs, fixes);
    let context = CheckContext {
        readers: scenario.reader_names(),
        clients: scenario.clients(),
        ended_at: outcome.ended_at,
        converge_within_ms: scenario.converge_within_ms,
        transport: scenario.transport,
        network_loss: scenario.network.message_loss > 0.0,
        down_at_end: outcome.down_at_end.clone(),
        writers_at_end: outcome.writers_at_end.clone(),
        last_started: outcome
            .history
            .records()
            .filter_map(|record| match &record.event {
                Event::Started { host, .. } => Some((host.clone(), record.at)),
                _ => None,
            })
            .collect(),
    };
    let not_judged = crate::checks::convergence_exemptions(&context);
    let mut violations = Vec::new();
    if let Some(failure) = &outcome.host_failure {
        violations.push(Violation {
            invariant: "host_failure",
            at: outcome.ended_at,
            hosts: Vec::new(),
            events: Vec::new(),
            tokens: Vec::new(),
            message: format!("a host's software failed: {failure}"),
            finding: None,
        });
    }
    let (judged, advisories) = check_all_and_advisories(&outcome.history, &context);
    violations.extend(judged);
    violations.extend(crate::aggregation::check_metrics(
        &outcome.metrics,
        &outcome.history,
    ));
    demote_fixed_findings(&mut violations, fixes);
    let events = outcome
        .history
        .records()
        .map(|r| match &r.event {
            Event::Committed { rows, .. } => rows.len() as u64,
            _ => 0,
        })
        .sum();
    RunReport {
        seed,
        violations,
        advisories,
        history: outcome.history,
        metrics: outcome.metrics,
        ended_at: outcome.ended_at,
        messages: outcome.messages,
        events,
        wall: started.elapsed(),
        not_judged,
    }
}

/// A finding's shape with that finding's fix on is not the known bug but a failure (the fix
/// did not remove it, or the model's diagnosis is wrong): the violation loses its finding and
/// says so in its message.
///
/// F1's shape is also F5's (the history does not record `stream_positions`): with F1's rule
/// on and F5's off, only F5 can have made it, so it is reported as F5.
fn demote_fixed_findings(violations: &mut [Violation], fixes: Fixes) {
    for violation in violations {
        if violation.finding == Some("F1")
            && fixes.position_is_not_persisted()
            && !fixes.on(streamsim_models::fixes::Fix::F5)
        {
            violation.finding = Some("F5");
            violation.message = format!(
                "{} (F1's shape while F1's fix is on: a process started while a running writer had no stream_positions row, F5)",
                violation.message
            );
            continue;
        }
        if let Some(finding) = violation.finding.filter(|f| fixes.remove_finding(f)) {
            violation.finding = None;
            violation.message = format!(
                "{} (the shape of {finding}, whose proposed fix is on)",
                violation.message
            );
        }
    }
}

/// What a sweep keeps of each seed (histories are dropped to bound memory).
#[derive(Clone, Debug, Serialize)]
pub struct SeedResult {
    pub seed: u64,
    pub passed: bool,
    /// The known Synapse bugs (e.g. `F1`) when every violation of this seed is diagnosed as
    /// one; such a seed is counted as known, not failed.
    pub known: Option<String>,
    pub violations: Vec<Violation>,
    /// Advisory findings of this seed (Synapse's own gaps), by check name.
    pub advisories: Vec<&'static str>,
    pub events: u64,
    pub messages: u64,
    pub sim_ms: u64,
    /// Sometimes-targets this seed reached.
    pub reached: Vec<&'static str>,
}

/// What a sweep runs: one scenario for every seed, or each seed's generated scenario.
#[derive(Clone, Copy, Debug)]
pub enum SweepScenarios<'a> {
    Fixed(&'a Scenario),
    Generated,
}

impl SweepScenarios<'_> {
    /// The scenario of `seed`.
    pub fn for_seed(&self, seed: u64) -> std::borrow::Cow<'_, Scenario> {
        match self {
            SweepScenarios::Fixed(scenario) => std::borrow::Cow::Borrowed(*scenario),
            SweepScenarios::Generated => std::borrow::Cow::Owned(crate::generate::generated(seed)),
        }
    }
}

/// Runs `seeds` on `jobs` threads; `progress` is called once per finished seed (from any
/// thread). Results are in seed order.
pub fn sweep(
    scenarios: SweepScenarios,
    seeds: &[u64],
    bugs: Bugs,
    fixes: Fixes,
    jobs: usize,
    progress: &(dyn Fn(&SeedResult) + Sync),
) -> Vec<SeedResult> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<SeedResult>>> = Mutex::new(vec![None; seeds.len()]);
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(&seed) = seeds.get(index) else {
                    return;
                };
                let report = run_seed_fixed(&scenarios.for_seed(seed), seed, bugs, fixes);
                let reached = sometimes_reached(&report.history)
                    .into_iter()
                    .filter_map(|(name, hit)| hit.then_some(name))
                    .collect();
                let known = report.known_findings().map(|f| f.join(","));
                let result = SeedResult {
                    seed,
                    passed: report.passed(),
                    known,
                    violations: report.violations,
                    advisories: {
                        let mut names: Vec<&'static str> =
                            report.advisories.iter().map(|a| a.invariant).collect();
                        names.dedup();
                        names
                    },
                    events: report.events,
                    messages: report.messages,
                    sim_ms: report.ended_at.as_ms(),
                    reached,
                };
                progress(&result);
                results.lock().expect("no thread panics holding it")[index] = Some(result);
            });
        }
    });
    results
        .into_inner()
        .expect("no thread panics holding it")
        .into_iter()
        .map(|r| r.expect("every seed ran"))
        .collect()
}

#[cfg(test)]
mod tests {
    use streamsim_models::fixes::Fix;

    use super::*;

    fn diagnosed(finding: &'static str) -> Violation {
        Violation {
            invariant: "no_missed_event",
            at: SimInstant::ZERO,
            hosts: Vec::new(),
            events: Vec::new(),
            tokens: Vec::new(),
            message: "missed".to_owned(),
            finding: Some(finding),
        }
    }

    #[test]
    fn a_findings_shape_with_its_fix_on_is_a_failure_and_others_stay_known() {
        let mut violations = vec![diagnosed("F1"), diagnosed("F3"), diagnosed("F4")];
        demote_fixed_findings(&mut violations, Fixes::NONE.with(Fix::F2).with(Fix::F4));
        let findings: Vec<Option<&str>> = violations.iter().map(|v| v.finding).collect();
        // F1's shape is also F5's: with F2's rule (F1's) on, only F5 can have made it.
        assert_eq!(findings, vec![Some("F5"), Some("F3"), None]);
        let mut violations = vec![diagnosed("F1"), diagnosed("F3"), diagnosed("F4")];
        demote_fixed_findings(&mut violations, Fixes::NONE.with(Fix::F2).with(Fix::F5));
        let findings: Vec<Option<&str>> = violations.iter().map(|v| v.finding).collect();
        assert_eq!(findings, vec![None, Some("F3"), Some("F4")]);
        assert_eq!(
            violations[0].message,
            "missed (the shape of F1, whose proposed fix is on)"
        );
        assert_eq!(violations[1].message, "missed");
    }
}

//! Running seeds: one run (simulate, then judge), and a sweep over a seed range, in parallel
//! threads, each seed its own independent simulation.
//!
//! Results are plain values; the CLI prints them. A sweep's results come back in seed order
//! whatever the thread interleaving, so its output is deterministic too.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use streamsim_models::bugs::Bugs;
use streamsim_models::fixes::Fixes;
use streamsim_models::time::SimInstant;

use crate::checks::online::{OnlineChecker, Suspicion};
use crate::checks::{check_all_and_advisories, sometimes_reached, CheckContext, Violation};
use crate::history::{Event, History};
use crate::scenario::Scenario;
use crate::world::{self, RecordSink, Recording};

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
    /// Which sometimes-targets the run reached.
    pub reached: BTreeMap<&'static str, bool>,
    /// How it was judged (online runs keep no history).
    pub judged: Judged,
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

/// [`run_seed_with`] with the proposed fixes `fixes` on as well, judged on the whole
/// history or online as [`Judging::Auto`] picks.
pub fn run_seed_fixed(scenario: &Scenario, seed: u64, bugs: Bugs, fixes: Fixes) -> RunReport {
    run_seed_judged(scenario, seed, bugs, fixes, Judging::Auto, None)
}

/// How a run is judged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Judging {
    /// Online for runs of at least [`AUTO_ONLINE_FROM_MS`] simulated, else on the whole
    /// history.
    #[default]
    Auto,
    /// Keep the whole history and judge it after the run (memory grows with the run).
    Whole,
    /// Judge each record as it happens and keep no history (memory follows what is in
    /// flight); a suspect run is replayed from its seed and judged on its whole history.
    Online,
}

/// Runs at least this long (workload plus convergence, simulated) are judged online by
/// [`Judging::Auto`]: 5 minutes keep a history of about 100 MB.
pub const AUTO_ONLINE_FROM_MS: u64 = 300_000;

impl Judging {
    /// Whether `scenario` is judged online.
    pub fn is_online_for(self, scenario: &Scenario) -> bool {
        match self {
            Judging::Whole => false,
            Judging::Online => true,
            Judging::Auto => {
                scenario.duration_ms + scenario.converge_within_ms >= AUTO_ONLINE_FROM_MS
            }
        }
    }
}

/// How a run was judged, for the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Judged {
    /// On its whole history.
    Whole,
    /// Online, and found clean: no history was kept. `peak_live`: the most committed events
    /// the checker held at once.
    Online { peak_live: usize },
    /// Online, found suspect, and replayed from its seed to be judged on its whole history
    /// (whose verdict this report holds).
    Replayed(Suspicion),
}

/// Simulates one seed and judges it as `judging` says; with `trace`, every record is handed
/// to it as it happens (exactly once, whatever the judging).
pub fn run_seed_judged(
    scenario: &Scenario,
    seed: u64,
    bugs: Bugs,
    fixes: Fixes,
    judging: Judging,
    trace: Option<Rc<RefCell<dyn RecordSink>>>,
) -> RunReport {
    let started = Instant::now();
    let checker = judging
        .is_online_for(scenario)
        .then(|| {
            OnlineChecker::new(
                &scenario.reader_names(),
                &scenario.clients(),
                &scenario.federation_sender_names(),
                scenario.converge_within_ms,
                scenario.network.message_loss > 0.0,
            )
        })
        .flatten();
    let Some(checker) = checker else {
        let outcome = world::simulate_recorded(
            scenario,
            seed,
            bugs,
            fixes,
            Recording {
                keep_history: true,
                sinks: trace.into_iter().collect(),
            },
        );
        return judge_whole(scenario, seed, fixes, outcome, started);
    };
    let checker = Rc::new(RefCell::new(checker));
    let mut sinks: Vec<Rc<RefCell<dyn RecordSink>>> = vec![checker.clone()];
    sinks.extend(trace);
    let outcome = world::simulate_recorded(
        scenario,
        seed,
        bugs,
        fixes,
        Recording {
            keep_history: false,
            sinks,
        },
    );
    let checker = Rc::try_unwrap(checker)
        .expect("the observer let its sinks go when the run ended")
        .into_inner();
    let last_heal = checker.last_heal();
    let context = check_context(scenario, &outcome, checker.last_started().clone());
    let verdict = checker.finish(&context);
    // The metrics bookkeeping let go of what its checks no longer needed; if it cannot judge
    // on what it kept, the run is replayed like a suspect one.
    let metrics_suspicion = outcome
        .metrics
        .watched
        .needs_whole(
            &outcome.metrics.store,
            crate::aggregation::staleness_from(&outcome.metrics, last_heal),
        )
        .map(|reason| Suspicion {
            at: outcome.ended_at,
            invariant: "metrics",
            reason,
        });
    if let Some(suspicion) = verdict.suspicion.or(metrics_suspicion) {
        // The simulation is deterministic: the replay is the same run, its history kept.
        let replay = world::simulate_with_fixes(scenario, seed, bugs, fixes);
        let mut report = judge_whole(scenario, seed, fixes, replay, started);
        report.judged = Judged::Replayed(suspicion);
        return report;
    }
    let mut violations: Vec<Violation> = outcome
        .host_failure
        .iter()
        .map(|failure| host_failure(failure, outcome.ended_at))
        .collect();
    violations.extend(crate::aggregation::check_metrics(
        &outcome.metrics,
        last_heal,
    ));
    RunReport {
        seed,
        not_judged: crate::checks::convergence_exemptions(&context),
        violations,
        advisories: Vec::new(),
        history: outcome.history,
        metrics: outcome.metrics,
        ended_at: outcome.ended_at,
        messages: outcome.messages,
        events: verdict.events,
        reached: verdict.reached,
        judged: Judged::Online {
            peak_live: verdict.peak_live,
        },
        wall: started.elapsed(),
    }
}

/// What the checks need to know of `outcome` beyond its history; `last_started`: when each
/// host last started.
pub(crate) fn check_context(
    scenario: &Scenario,
    outcome: &world::RunOutcome,
    last_started: BTreeMap<String, SimInstant>,
) -> CheckContext {
    CheckContext {
        readers: scenario.reader_names(),
        clients: scenario.clients(),
        ended_at: outcome.ended_at,
        converge_within_ms: scenario.converge_within_ms,
        transport: scenario.transport,
        network_loss: scenario.network.message_loss > 0.0,
        down_at_end: outcome.down_at_end.clone(),
        writers_at_end: outcome.writers_at_end.clone(),
        last_started,
        federation_senders: scenario.federation_sender_names(),
    }
}

/// The violation of a host whose software failed (the run stopped at `at`).
fn host_failure(failure: &str, at: SimInstant) -> Violation {
    Violation {
        invariant: "host_failure",
        at,
        hosts: Vec::new(),
        events: Vec::new(),
        tokens: Vec::new(),
        message: format!("a host's software failed: {failure}"),
        finding: None,
    }
}

/// Judges `outcome` on its whole history.
fn judge_whole(
    scenario: &Scenario,
    seed: u64,
    fixes: Fixes,
    outcome: world::RunOutcome,
    started: Instant,
) -> RunReport {
    let last_started = outcome
        .history
        .records()
        .filter_map(|record| match &record.event {
            Event::Started { host, .. } => Some((host.clone(), record.at)),
            _ => None,
        })
        .collect();
    let context = check_context(scenario, &outcome, last_started);
    let not_judged = crate::checks::convergence_exemptions(&context);
    let mut violations: Vec<Violation> = outcome
        .host_failure
        .iter()
        .map(|failure| host_failure(failure, outcome.ended_at))
        .collect();
    let (judged, advisories) = check_all_and_advisories(&outcome.history, &context);
    violations.extend(judged);
    let last_heal = outcome
        .history
        .records()
        .rev()
        .find(|record| matches!(record.event, Event::Healed))
        .map_or(SimInstant::ZERO, |record| record.at);
    violations.extend(crate::aggregation::check_metrics(
        &outcome.metrics,
        last_heal,
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
        reached: sometimes_reached(&outcome.history),
        judged: Judged::Whole,
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
                let reached = report
                    .reached
                    .iter()
                    .map(|(name, hit)| (*name, *hit))
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

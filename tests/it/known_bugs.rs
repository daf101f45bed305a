//! The known-bug catalogue (`models::bugs`): each switch that the default generated
//! scenarios already catch has a permanent regression here, with the clean model passing the
//! same seed. (The hunt over generated scenarios that must catch every switch is issue 5.)

use streamsim_models::bugs::{Bug, Bugs};
use streamsim_sim::runner::{run_seed, run_seed_with};
use streamsim_sim::scenario::Scenario;

use crate::support::repo_root;

/// B20: a notifier that announces released events with their own highest id hands out a
/// token below one it gave before as soon as an out-of-order event is released.
#[test]
fn b20_notifier_given_per_event_ids_is_caught_as_a_token_regression() {
    let path = repo_root().join("scenarios/smoke.toml");
    let scenario = Scenario::load(&path).unwrap();
    let seed = 0;
    let replay = format!(
        "streamsim run scenarios/smoke.toml --seed {seed} --bug notifier-given-per-event-ids"
    );
    let buggy = run_seed_with(
        &scenario,
        seed,
        Bugs::NONE.with(Bug::NotifierGivenPerEventIds),
    );
    assert!(
        buggy
            .violations
            .iter()
            .any(|v| v.invariant == Bug::NotifierGivenPerEventIds.info().caught_by),
        "not caught; replay: {replay}"
    );
    let clean = run_seed(&scenario, seed);
    assert!(
        clean.passed(),
        "the clean model fails the same seed: {:?}",
        clean.violations.first()
    );
}

/// B4: an idle writer that never announces its position holds every reader's minimum behind
/// the first gap (ids a crashed writer never committed), so background consumers stall. The
/// generated scenario of seed 11 has one writer go idle and the other crash with ids in
/// flight; `bugs --hunt` found it.
#[test]
fn b4_idle_writer_never_announces_is_caught_as_a_stuck_minimum() {
    let seed = 11;
    let scenario = streamsim_sim::generate::generated(seed);
    let replay =
        format!("streamsim run --generated --seed {seed} --bug idle-writer-never-announces");
    let buggy = run_seed_with(
        &scenario,
        seed,
        Bugs::NONE.with(Bug::IdleWriterNeverAnnounces),
    );
    assert!(
        buggy
            .violations
            .iter()
            .any(|v| v.invariant == "minimum_converges"),
        "not caught: {:?}; replay: {replay}",
        buggy.violations.first()
    );
    let clean = run_seed(&scenario, seed);
    assert!(
        clean.passed(),
        "the clean model fails the same seed: {:?}",
        clean.violations.first()
    );
}

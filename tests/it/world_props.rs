//! Property tests of the whole world: proptest generates scenarios (topology, workload, persist
//! delays, latency, a fault schedule of partitions, heals, crashes, restarts, quiesced writers,
//! busy readers, processes cut off from the metrics store and tokens from the future, and the
//! metrics system's flush interval and replication queue) plus a simulation seed; every case
//! must keep every invariant, the metrics system's included, on the patched baseline (`--fix
//! all`, where no confirmed finding can happen, so any violation is a bug of the model or a
//! new finding; Synapse as it is is judged by the sweeps, whose known findings it excuses).
//!
//! On failure streamsim's shrinker makes the case small (fewer hosts, fewer faults, a shorter
//! run), and the message prints it as a scenario file and the `streamsim run` command that
//! replays it. `PROPTEST_CASES` sets the number of cases (default 6 here, to keep CI short);
//! proptest keeps failing cases of the clean model in `tests/proptest-regressions/` (commit
//! it when one appears) and replays them first; `PROPTEST_RNG_SEED` fixes proptest's own seed.

use proptest::prelude::*;
use proptest::test_runner::Config;
use streamsim_models::bugs::{Bug, Bugs};
use streamsim_models::fixes::Fixes;
use streamsim_sim::runner::run_seed_fixed;
use streamsim_sim::scenario::{
    Fault, FaultKind, Metrics, Network, Range, ReplicationQueue, Scenario, Topology, Transport,
    Workload, METRICS_STORE_HOST,
};
use streamsim_sim::shrink;

/// One fault of a generated schedule, by host index so that shrinking keeps it valid.
#[derive(Clone, Debug)]
enum FaultSpec {
    Partition {
        writer: u32,
        reader: u32,
        for_ms: u64,
    },
    OneWay {
        writer: u32,
        reader: u32,
        for_ms: u64,
    },
    CrashRestart {
        writer: u32,
        down_ms: u64,
    },
    ReaderRestart {
        reader: u32,
    },
    Quiesce {
        writer: u32,
    },
    /// A reader CPU-bound for a while (its stream commands queue up).
    Busy {
        reader: u32,
        for_ms: u64,
        per_command_ms: u64,
    },
    /// A process cut off from the metrics store (its flushes are retried).
    StoreCut {
        writer: u32,
        for_ms: u64,
    },
    /// A client's next /sync presents a token from the future.
    FutureToken {
        client: u32,
    },
}

fn fault_spec() -> impl Strategy<Value = (u64, FaultSpec)> {
    let spec = prop_oneof![
        (0..4u32, 0..3u32, 1_000..30_000u64).prop_map(|(writer, reader, for_ms)| {
            FaultSpec::Partition {
                writer,
                reader,
                for_ms,
            }
        }),
        (0..4u32, 0..3u32, 1_000..30_000u64).prop_map(|(writer, reader, for_ms)| {
            FaultSpec::OneWay {
                writer,
                reader,
                for_ms,
            }
        }),
        (0..4u32, 100..5_000u64)
            .prop_map(|(writer, down_ms)| FaultSpec::CrashRestart { writer, down_ms }),
        (0..3u32).prop_map(|reader| FaultSpec::ReaderRestart { reader }),
        (0..4u32).prop_map(|writer| FaultSpec::Quiesce { writer }),
        (0..3u32, 1_000..8_000u64, 1..30u64).prop_map(|(reader, for_ms, per_command_ms)| {
            FaultSpec::Busy {
                reader,
                for_ms,
                per_command_ms,
            }
        }),
        (0..4u32, 1_000..10_000u64)
            .prop_map(|(writer, for_ms)| FaultSpec::StoreCut { writer, for_ms }),
        (0..2u32).prop_map(|client| FaultSpec::FutureToken { client }),
    ];
    (500..15_000u64, spec)
}

prop_compose! {
    fn scenario()(
        writers in 1..=3u32,
        readers in 1..=2u32,
        sync_clients in 0..=2u32,
        duration_s in 8..=20u64,
        batches_per_second in 2..=30u32,
        batch_max in 1..=6u64,
        delay_max in prop_oneof![Just(0u64), Just(100), Just(800), Just(1_500)],
        latency_max in prop_oneof![Just(2u64), Just(10), Just(100)],
        specs in proptest::collection::vec(fault_spec(), 0..4),
        redis in proptest::bool::weighted(0.2),
        (writer_clients, cancel_rate, sync_timeline_limit, sends_per_second) in (
            0..=1u32,
            prop_oneof![Just(0.0), Just(0.05)],
            prop_oneof![Just(None), Just(Some(50u32))],
            0..=3u32,
        ),
        (flush_interval_ms, linearizer) in (
            prop_oneof![Just(500u64), Just(2_000)],
            proptest::bool::weighted(0.3),
        ),
    ) -> Scenario {
        let duration_ms = duration_s * 1_000;
        // Direct TCP carries one writer's streams: several writers run over Redis.
        let transport = if redis || writers > 1 { Transport::Redis } else { Transport::Tcp };
        let mut faults = Vec::new();
        // Only faults that can act (a scenario file could hold no other): over Redis a
        // partition cuts the reader off the bus, a crashed writer is not crashed again
        // before its restart, a writer is quiesced once.
        let mut specs = specs;
        specs.sort_by_key(|(at_ms, _)| *at_ms);
        let mut down_until: std::collections::BTreeMap<String, u64> = Default::default();
        let mut quiesced = std::collections::BTreeSet::new();
        for (at_ms, spec) in specs {
            let at_ms = at_ms.min(duration_ms);
            let writer = |i: u32| format!("w{}", i % writers + 1);
            let reader = |i: u32| format!("r{}", i % readers + 1);
            let heal = |after: u64| Fault { at_ms: (at_ms + after).min(duration_ms), kind: FaultKind::Heal {} };
            match spec {
                FaultSpec::Partition { writer: w, reader: r, for_ms } => {
                    let peer = if transport == Transport::Redis { "redis".to_owned() } else { writer(w) };
                    faults.push(Fault { at_ms, kind: FaultKind::Partition { hosts: [peer, reader(r)] } });
                    faults.push(heal(for_ms));
                }
                FaultSpec::OneWay { writer: w, reader: r, for_ms } => {
                    let peer = if transport == Transport::Redis { "redis".to_owned() } else { writer(w) };
                    faults.push(Fault { at_ms, kind: FaultKind::PartitionOneway { from: peer, to: reader(r) } });
                    faults.push(heal(for_ms));
                }
                FaultSpec::CrashRestart { writer: w, down_ms } => {
                    let restart_at = (at_ms + down_ms).min(duration_ms);
                    if down_until.get(&writer(w)).is_some_and(|until| *until > at_ms) {
                        continue;
                    }
                    down_until.insert(writer(w), restart_at);
                    faults.push(Fault { at_ms, kind: FaultKind::Crash { host: writer(w) } });
                    faults.push(Fault { at_ms: restart_at, kind: FaultKind::Restart { host: writer(w) } });
                }
                FaultSpec::ReaderRestart { reader: r } => {
                    faults.push(Fault { at_ms, kind: FaultKind::Restart { host: reader(r) } });
                }
                FaultSpec::Quiesce { writer: w } => {
                    if quiesced.insert(writer(w)) {
                        faults.push(Fault { at_ms, kind: FaultKind::Quiesce { host: writer(w) } });
                    }
                }
                FaultSpec::Busy { reader: r, for_ms, per_command_ms } => {
                    faults.push(Fault { at_ms, kind: FaultKind::Busy { host: reader(r), for_ms, per_command_ms } });
                }
                FaultSpec::StoreCut { writer: w, for_ms } => {
                    faults.push(Fault { at_ms, kind: FaultKind::Partition { hosts: [writer(w), METRICS_STORE_HOST.to_owned()] } });
                    faults.push(heal(for_ms));
                }
                FaultSpec::FutureToken { client } => {
                    // Only clients that exist: with none, the fault names no one and is dropped.
                    if sync_clients.min(readers) > 0 {
                        let client = client % sync_clients.min(readers) + 1;
                        faults.push(Fault { at_ms, kind: FaultKind::FutureToken { client: format!("c{client}"), ahead_by: 1_000_000 } });
                    }
                }
            }
        }
        faults.sort_by_key(|f| f.at_ms);
        streamsim_sim::faults::drop_idle_heals(&mut faults);
        Scenario {
            duration_ms,
            converge_within_ms: 30_000,
            transport,
            topology: Topology {
                writers,
                readers,
                sync_clients: sync_clients.min(readers),
                writer_clients,
                late_hosts: Vec::new(),
                rooms_per_writer: 2,
                // Background consumers with two or more readers.
                federation_senders: readers / 2,
            },
            workload: Workload {
                batches_per_second,
                batch_size: Range { min: 1, max: batch_max },
                persist_delay_ms: Range { min: 0, max: delay_max },
                cancel_rate,
                sync_timeline_limit,
                sends_per_second,
            },
            network: Network { latency_ms: Range { min: 1, max: latency_max }, ..Network::default() },
            faults,
            random_faults: None,
            metrics: Metrics {
                flush_interval_ms,
                replication_queue: if linearizer { ReplicationQueue::Linearizer } else { ReplicationQueue::PerStream },
            },
        }
    }
}

/// `STREAMSIM_PROP_BUG=NAME[,NAME]` runs the property with historical-bug switches on, to
/// watch it catch and shrink one (the default is the clean model, which must pass).
fn bug_switches() -> Bugs {
    std::env::var("STREAMSIM_PROP_BUG")
        .unwrap_or_default()
        .split(',')
        .filter(|name| !name.is_empty())
        .map(|name| Bug::from_name(name).unwrap_or_else(|| panic!("no bug switch {name:?}")))
        .fold(Bugs::NONE, Bugs::with)
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(6)
}

proptest! {
    // Cases found under a bug switch are not regressions of the clean model: keep only those.
    #![proptest_config(Config {
        cases: cases(),
        failure_persistence: if bug_switches().is_clean() {
            Config::default().failure_persistence
        } else {
            None
        },
        // A failing case is shrunk by `streamsim shrink`'s shrinker (fewer hosts, faults,
        // a shorter run...), which knows the scenario's parts; proptest's own shrinking of
        // the strategy's draws would only repeat it, slower.
        max_shrink_iters: 0,
        ..Config::default()
    })]

    #[test]
    fn generated_worlds_keep_every_invariant(scenario in scenario(), seed in 0..1_000u64) {
        let bugs = bug_switches();
        // The strategy draws only faults that can act: what a scenario file may hold.
        let text = scenario.to_toml();
        if let Err(error) = Scenario::parse(std::path::Path::new("case.toml"), &text) {
            panic!("the strategy drew a scenario that is bad input: {error}\n{text}");
        }
        let report = run_seed_fixed(&scenario, seed, bugs, Fixes::all());
        if let Some(first) = report.violations.first() {
            let target = shrink::Target { invariant: first.invariant, finding: first.finding };
            let options = shrink::Options {
                seeds: vec![seed],
                min_failing: 1,
                bugs,
                fixes: Fixes::all(),
                jobs: 1,
                max_candidates: 150,
                origin_seed: seed,
            };
            let shrunk = shrink::shrink(&scenario, target, &options, &mut |line| eprintln!("{line}"))
                .map_or(text.clone(), |shrunk| shrunk.scenario.to_toml());
            panic!(
                "[{}] at {}: {}\n\nsave as failing.toml (shrunk by streamsim shrink):\n# proptest case\n{shrunk}\nreplay: streamsim run failing.toml --seed {seed}{} --fix all",
                first.invariant,
                first.at,
                first.message,
                bugs.names().iter().map(|n| format!(" --bug {n}")).collect::<String>()
            );
        }
    }
}

//! The fault schedule of a run: the scenario's scheduled faults plus the ones drawn from the
//! seed (`[random_faults]`), merged into one time-ordered list, each applied by the world's
//! drive loop at its time.
//!
//! A drawn fault always comes with its repair (heal, restart, latency back), so a drawn mix
//! never leaves the world broken for longer than `lasting_ms`.

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::scenario::{Fault, FaultKind, RandomFaultKind, Range, Scenario, Transport};

/// Latency of a drawn latency spike, in milliseconds.
pub const SPIKE_LATENCY_MS: Range = Range { min: 50, max: 500 };

/// Salt that separates the fault stream from the hosts' workload streams of the same seed.
const FAULT_STREAM: u64 = 0x6661_756c_7473;

/// Every fault of the run in time order (stable: scheduled before drawn at the same time).
pub fn schedule(scenario: &Scenario, seed: u64) -> Vec<Fault> {
    let mut faults = scenario.faults.clone();
    if let Some(random) = &scenario.random_faults {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ FAULT_STREAM);
        let until = random
            .until_ms
            .unwrap_or(scenario.duration_ms)
            .min(scenario.duration_ms);
        let writers = scenario.writer_names();
        let readers = scenario.reader_names();
        let processes: Vec<String> = writers.iter().chain(&readers).cloned().collect();
        let mut at = random.from_ms;
        let mut down_until: std::collections::BTreeMap<String, u64> = Default::default();
        loop {
            at += rng.random_range(random.every_ms.min..=random.every_ms.max);
            if at >= until {
                break;
            }
            let lasting = rng.random_range(random.lasting_ms.min..=random.lasting_ms.max);
            let repair_at = (at + lasting).min(scenario.duration_ms);
            let kind = *random.kinds.choose(&mut rng).expect("kinds is not empty");
            match kind {
                RandomFaultKind::Partition | RandomFaultKind::PartitionOneway => {
                    // Over Redis two processes share no replication link: replication goes
                    // through the bus, so the cut is between a process and `redis` (a cut
                    // between two processes would act on nothing but forwarded sends).
                    // Over TCP it is between the writer and a process that follows it.
                    let pair = match scenario.transport {
                        Transport::Redis => processes
                            .choose(&mut rng)
                            .map(|process| (process.clone(), "redis".to_owned())),
                        Transport::Tcp => writers.choose(&mut rng).cloned().and_then(|writer| {
                            let others: Vec<&String> =
                                processes.iter().filter(|p| **p != writer).collect();
                            others.choose(&mut rng).map(|o| (writer, (*o).clone()))
                        }),
                    };
                    let Some((writer, other)) = pair else {
                        continue;
                    };
                    let (from, to) = if rng.random_bool(0.5) {
                        (writer, other)
                    } else {
                        (other, writer)
                    };
                    let kind = if kind == RandomFaultKind::Partition {
                        FaultKind::Partition { hosts: [from, to] }
                    } else {
                        FaultKind::PartitionOneway { from, to }
                    };
                    faults.push(Fault { at_ms: at, kind });
                    faults.push(Fault {
                        at_ms: repair_at,
                        kind: FaultKind::Heal {},
                    });
                }
                RandomFaultKind::CrashRestart => {
                    let Some(host) = processes.choose(&mut rng).cloned() else {
                        continue;
                    };
                    // A host down (crashed and not yet restarted, or late) cannot crash
                    // again: the crash would change nothing.
                    // Nor may its down time swallow another crash or restart of the host.
                    let overlaps = faults.iter().any(|f| {
                        (at..=repair_at).contains(&f.at_ms)
                            && matches!(&f.kind, FaultKind::Crash { host: h } | FaultKind::Restart { host: h } if *h == host)
                    });
                    if down_until.get(&host).is_some_and(|until| *until > at)
                        || is_down(scenario, &faults, &host, at)
                        || overlaps
                    {
                        continue;
                    }
                    down_until.insert(host.clone(), repair_at);
                    faults.push(Fault {
                        at_ms: at,
                        kind: FaultKind::Crash { host: host.clone() },
                    });
                    faults.push(Fault {
                        at_ms: repair_at,
                        kind: FaultKind::Restart { host },
                    });
                }
                RandomFaultKind::Latency => {
                    faults.push(Fault {
                        at_ms: at,
                        kind: FaultKind::Latency {
                            latency_ms: SPIKE_LATENCY_MS,
                            host: None,
                        },
                    });
                    faults.push(Fault {
                        at_ms: repair_at,
                        kind: FaultKind::Latency {
                            latency_ms: scenario.network.latency_ms,
                            host: None,
                        },
                    });
                }
                RandomFaultKind::SlowReader => {
                    let Some(host) = readers.choose(&mut rng).cloned() else {
                        continue;
                    };
                    // A reader that is down reads nothing, slowly or not.
                    if down_until.get(&host).is_some_and(|until| *until > at)
                        || is_down(scenario, &faults, &host, at)
                    {
                        continue;
                    }
                    faults.push(Fault {
                        at_ms: at,
                        kind: FaultKind::SlowReader {
                            host,
                            for_ms: lasting,
                        },
                    });
                }
            }
        }
    }
    faults.sort_by_key(|f| f.at_ms);
    drop_idle_heals(&mut faults);
    faults
}

/// Whether `host` is down at `at` under the scheduled faults (a late host until its first
/// restart; a crash until the next restart).
fn is_down(scenario: &Scenario, faults: &[Fault], host: &str, at: u64) -> bool {
    let mut scheduled: Vec<&Fault> = faults.iter().filter(|f| f.at_ms <= at).collect();
    scheduled.sort_by_key(|f| f.at_ms);
    scheduled.iter().fold(
        scenario.topology.late_hosts.iter().any(|h| h == host),
        |down, fault| match &fault.kind {
            FaultKind::Crash { host: h } if h == host => true,
            FaultKind::Restart { host: h } if h == host => false,
            _ => down,
        },
    )
}

/// Drops every heal (of a time-ordered list) that has no partition to repair: one right
/// after another heal repaired everything. Generators pair each partition with a heal, and
/// two overlapping partitions leave the second heal idle; a scenario file may not hold one
/// (`scenario::reach`).
pub fn drop_idle_heals(faults: &mut Vec<Fault>) {
    let mut cut = false;
    faults.retain(|fault| match fault.kind {
        FaultKind::Partition { .. } | FaultKind::PartitionOneway { .. } => {
            cut = true;
            true
        }
        FaultKind::Heal {} => std::mem::replace(&mut cut, false),
        _ => true,
    });
}

/// One line describing a fault, for the history.
pub fn describe(kind: &FaultKind) -> String {
    match kind {
        FaultKind::Partition { hosts } => format!("partition {} <-> {}", hosts[0], hosts[1]),
        FaultKind::PartitionOneway { from, to } => format!("partition {from} -> {to}"),
        FaultKind::Heal {} => "heal".into(),
        FaultKind::Crash { host } => format!("crash {host}"),
        FaultKind::Restart { host } => format!("restart {host}"),
        FaultKind::Latency { latency_ms, host } => format!(
            "latency {}..{} ms on {}",
            latency_ms.min,
            latency_ms.max,
            host.as_deref().unwrap_or("every link")
        ),
        FaultKind::MessageLoss { rate } => format!("message loss {rate}"),
        FaultKind::SlowReader { host, for_ms } => format!("slow reader {host} for {for_ms} ms"),
        FaultKind::Busy {
            host,
            for_ms,
            per_command_ms,
        } => format!("busy {host} for {for_ms} ms, {per_command_ms} ms per command"),
        FaultKind::Reconfigure { writers } => format!("reconfigure writers {}", writers.join(",")),
        FaultKind::Quiesce { host } => format!("quiesce {host}"),
        FaultKind::FutureToken { client, ahead_by } => {
            format!("{client}'s token moved {ahead_by} ahead")
        }
    }
}

/// Whether a fault lasts until a heal (a partition, latency, message loss, a slow or busy
/// process) rather than acting at once (crash, restart, quiesce, reconfigure, a token moved
/// ahead, a heal).
pub fn lasts_until_heal(kind: &FaultKind) -> bool {
    match kind {
        FaultKind::Partition { .. }
        | FaultKind::PartitionOneway { .. }
        | FaultKind::Latency { .. }
        | FaultKind::MessageLoss { .. }
        | FaultKind::SlowReader { .. }
        | FaultKind::Busy { .. } => true,
        FaultKind::Heal {}
        | FaultKind::Crash { .. }
        | FaultKind::Restart { .. }
        | FaultKind::Reconfigure { .. }
        | FaultKind::Quiesce { .. }
        | FaultKind::FutureToken { .. } => false,
    }
}

/// [`lasts_until_heal`] for a fault as the history records it (its [`describe`] text), which
/// is all a check sees.
pub fn described_fault_lasts_until_heal(description: &str) -> bool {
    const LASTING: &[&str] = &[
        "partition ",
        "latency ",
        "message loss ",
        "slow reader ",
        "busy ",
    ];
    LASTING.iter().any(|kind| description.starts_with(kind))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn soak() -> Scenario {
        Scenario::parse(
            Path::new("soak.toml"),
            r#"
duration_ms = 60_000
converge_within_ms = 10_000
[topology]
writers = 2
readers = 2
[workload]
batches_per_second = 1
batch_size = { min = 1, max = 1 }
persist_delay_ms = { min = 0, max = 0 }
[random_faults]
from_ms = 1_000
every_ms = { min = 2_000, max = 5_000 }
lasting_ms = { min = 1_000, max = 4_000 }
kinds = ["partition", "partition_oneway", "crash_restart", "latency", "slow_reader"]
[[fault]]
at_ms = 30_000
kind = "crash"
host = "w1"
"#,
        )
        .unwrap()
    }

    #[test]
    fn the_history_text_of_every_fault_kind_says_whether_it_lasts_until_a_heal() {
        let host = || "w1".to_owned();
        let every_kind = [
            FaultKind::Partition {
                hosts: [host(), "r1".to_owned()],
            },
            FaultKind::PartitionOneway {
                from: host(),
                to: "db".to_owned(),
            },
            FaultKind::Heal {},
            FaultKind::Crash { host: host() },
            FaultKind::Restart { host: host() },
            FaultKind::Latency {
                latency_ms: Range { min: 1, max: 5 },
                host: None,
            },
            FaultKind::MessageLoss { rate: 0.1 },
            FaultKind::Reconfigure {
                writers: vec![host()],
            },
            FaultKind::Quiesce { host: host() },
            FaultKind::SlowReader {
                host: "r1".to_owned(),
                for_ms: 10,
            },
            FaultKind::Busy {
                host: "r1".to_owned(),
                for_ms: 10,
                per_command_ms: 1,
            },
            FaultKind::FutureToken {
                client: "c1".to_owned(),
                ahead_by: 5,
            },
        ];
        for kind in &every_kind {
            assert_eq!(
                described_fault_lasts_until_heal(&describe(kind)),
                lasts_until_heal(kind),
                "{kind:?}: {}",
                describe(kind)
            );
        }
        assert_eq!(every_kind.iter().filter(|k| lasts_until_heal(k)).count(), 6);
    }

    /// Generated seed 1711 drew a slow reader for r1 while r1 was crashed: a fault that
    /// cannot act. No drawn crash or slow reader may name a host that is down then.
    #[test]
    fn no_drawn_fault_names_a_host_that_is_down() {
        for seed in 0..400 {
            let scenario = crate::generate::generated(seed);
            let faults = schedule(&scenario, seed);
            for fault in &faults {
                let host = match &fault.kind {
                    FaultKind::Crash { host } | FaultKind::SlowReader { host, .. } => host,
                    _ => continue,
                };
                let earlier: Vec<Fault> = faults
                    .iter()
                    .take_while(|f| !std::ptr::eq(*f, fault))
                    .cloned()
                    .collect();
                assert!(
                    !is_down(&scenario, &earlier, host, fault.at_ms),
                    "seed {seed}: {} at {} ms names a host that is down (streamsim run --generated --seed {seed} --print-scenario)",
                    describe(&fault.kind),
                    fault.at_ms
                );
            }
        }
    }

    #[test]
    fn a_seed_draws_one_schedule_and_every_fault_is_repaired_in_time() {
        let scenario = soak();
        let schedule = schedule(&scenario, 7);
        assert_eq!(
            schedule,
            super::schedule(&scenario, 7),
            "same seed, same faults"
        );
        assert_ne!(
            schedule,
            super::schedule(&scenario, 8),
            "another seed, other faults"
        );
        assert!(schedule.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
        assert!(schedule.iter().all(|f| f.at_ms <= scenario.duration_ms));
        let scheduled_crash = FaultKind::Crash { host: "w1".into() };
        assert!(schedule
            .iter()
            .any(|f| f.kind == scheduled_crash && f.at_ms == 30_000));
        let crashes = schedule
            .iter()
            .filter(|f| matches!(&f.kind, FaultKind::Crash { .. }))
            .count();
        let drawn_crashes = crashes - 1;
        let restarts = schedule
            .iter()
            .filter(|f| matches!(f.kind, FaultKind::Restart { .. }))
            .count();
        assert_eq!(drawn_crashes, restarts, "each drawn crash has its restart");
        let partitions = schedule
            .iter()
            .filter(|f| {
                matches!(
                    f.kind,
                    FaultKind::Partition { .. } | FaultKind::PartitionOneway { .. }
                )
            })
            .count();
        let heals = schedule
            .iter()
            .filter(|f| f.kind == FaultKind::Heal {})
            .count();
        assert_eq!(partitions, heals, "each drawn partition has its heal");
        assert!(schedule.len() > 10, "a minute of faults every 2-5 s");
    }
}

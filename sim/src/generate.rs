//! Scenarios generated from a seed, swarm-style (each seed picks its own topology, workload
//! and mix of fault kinds), for bug hunts and property tests. Every generated scenario is an
//! ordinary [`Scenario`]: `streamsim run --generated --seed N --print-scenario` writes it out
//! as a TOML file a person can edit and keep.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::scenario::{
    Fault, FaultKind, Metrics, Network, RandomFaultKind, RandomFaults, Range, ReplicationQueue,
    Scenario, Topology, Transport, Workload, METRICS_STORE_HOST,
};

/// Salt that keeps the generator's stream apart from the run's own use of the seed.
const GENERATOR_STREAM: u64 = 0x7363_656e_6172_696f;

/// The scenario of `seed`.
pub fn generated(seed: u64) -> Scenario {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ GENERATOR_STREAM);
    let writers = rng.random_range(1..=4);
    let readers = rng.random_range(1..=3);
    // At least one sync client: its tokens are what the minimum-position check reads.
    let sync_clients = rng.random_range(1..=readers);
    let duration_ms = rng.random_range(15..=40) * 1_000;
    let batch_max = rng.random_range(1..=8);
    // Biased delays: sometimes all quick, sometimes a long tail that reorders commits.
    let delay_max = [0, 50, 300, 1_500][rng.random_range(0..4)];
    let workload = Workload {
        batches_per_second: rng.random_range(2..=30),
        batch_size: Range {
            min: 1,
            max: batch_max,
        },
        persist_delay_ms: Range {
            min: 0,
            max: delay_max,
        },
        cancel_rate: 0.0,
        sync_timeline_limit: None,
        sends_per_second: 0,
    };
    let latency_max = [2, 5, 20, 100][rng.random_range(0..4)];
    let network = Network {
        latency_ms: Range {
            min: 1,
            max: latency_max,
        },
        ..Network::default()
    };
    // Swarm testing: each kind of fault is in this seed's mix or not.
    let all = [
        RandomFaultKind::Partition,
        RandomFaultKind::PartitionOneway,
        RandomFaultKind::CrashRestart,
        RandomFaultKind::Latency,
        RandomFaultKind::SlowReader,
    ];
    let kinds: Vec<RandomFaultKind> = all.into_iter().filter(|_| rng.random_bool(0.5)).collect();
    let random_faults = (!kinds.is_empty()).then(|| RandomFaults {
        from_ms: 1_000,
        until_ms: None,
        every_ms: Range {
            min: 2_000,
            max: rng.random_range(3_000..=12_000),
        },
        lasting_ms: Range {
            min: 500,
            max: rng.random_range(1_000..=30_000),
        },
        kinds,
    });
    let mut faults = Vec::new();
    // An idle writer: one writer stops taking batches early on.
    if writers > 1 && rng.random_bool(0.4) {
        let idle = rng.random_range(1..=writers);
        let quiesce_at = rng.random_range(1_000..=5_000);
        faults.push(Fault {
            at_ms: quiesce_at,
            kind: FaultKind::Quiesce {
                host: format!("w{idle}"),
            },
        });
        // Biased toward the shape that matters with an idle writer: another writer dies with
        // ids in flight, leaving gaps only the idle writer's announced position can skip.
        if rng.random_bool(0.7) {
            let busy = (idle % writers) + 1;
            let crash_at = quiesce_at + rng.random_range(2_000..=6_000);
            faults.push(Fault {
                at_ms: crash_at,
                kind: FaultKind::Crash {
                    host: format!("w{busy}"),
                },
            });
            faults.push(Fault {
                at_ms: crash_at + rng.random_range(500..=3_000),
                kind: FaultKind::Restart {
                    host: format!("w{busy}"),
                },
            });
        }
    }
    // A slow database in spikes: a long round trip between the sequence handing out an id and
    // the writer hearing of it is where allocation races live. (Drawn last, so the choices
    // above stay what they were for every seed.)
    if rng.random_bool(0.4) {
        let at_ms = rng.random_range(1_000..=duration_ms / 2);
        faults.push(Fault {
            at_ms,
            kind: FaultKind::Latency {
                latency_ms: Range { min: 1, max: 400 },
                host: Some("db".to_owned()),
            },
        });
        faults.push(Fault {
            at_ms: (at_ms + rng.random_range(3_000..=15_000)).min(duration_ms),
            kind: FaultKind::Latency {
                latency_ms: network.latency_ms,
                host: Some("db".to_owned()),
            },
        });
        faults.sort_by_key(|f| f.at_ms);
    }
    // Direct TCP carries one writer's streams (see [`Transport::Tcp`]): several writers always
    // run over Redis. (The draw is made either way, so the choices after it stay what they
    // were for every seed.)
    let redis_drawn = rng.random_bool(0.2);
    let transport = if redis_drawn || writers > 1 {
        Transport::Redis
    } else {
        Transport::Tcp
    };
    // Clients that send: through readers and, with several writers, through a writer that is
    // not the room's persister, so sends are forwarded and waited for.
    let mut workload = workload;
    let writer_clients = if writers >= 2 {
        rng.random_range(0..=2)
    } else {
        0
    };
    workload.sends_per_second = [0, 2, 5, 10][rng.random_range(0..4)];
    // Requests cancelled inside `enter`, and /sync answers read in limited pages.
    workload.cancel_rate = if rng.random_bool(0.5) { 0.03 } else { 0.0 };
    workload.sync_timeline_limit = rng.random_bool(0.5).then(|| rng.random_range(30..=100));
    let clients = sync_clients + writer_clients;
    // The idle writer restarts: its `stream_positions` row is as old as its last write.
    if let Some(idle) = faults.iter().find_map(|f| match &f.kind {
        FaultKind::Quiesce { host } => Some((host.clone(), f.at_ms)),
        _ => None,
    }) {
        if rng.random_bool(0.5) {
            faults.push(Fault {
                at_ms: (idle.1 + rng.random_range(3_000..=10_000)).min(duration_ms),
                kind: FaultKind::Restart { host: idle.0 },
            });
        }
    }
    // A reader restarts while writers have ids in flight.
    if rng.random_bool(0.8) {
        let reader = rng.random_range(1..=readers);
        faults.push(Fault {
            at_ms: rng.random_range(2_000..=duration_ms - 1_000),
            kind: FaultKind::Restart {
                host: format!("r{reader}"),
            },
        });
    }
    // A writer dies mid-workload (with ids in flight, its position row behind its rows) and
    // comes back.
    if rng.random_bool(0.6) {
        let writer = format!("w{}", rng.random_range(1..=writers));
        let crash_at = rng.random_range(2_000..=duration_ms - 2_000);
        let restart_at = (crash_at + rng.random_range(500..=3_000)).min(duration_ms);
        // Not while the idle-writer shape above has the same writer down (or about to go
        // down): a crash of a host that is down changes nothing.
        let overlaps = faults.iter().any(|f| {
            matches!(&f.kind, FaultKind::Crash { host } | FaultKind::Restart { host } if *host == writer)
                && (crash_at.saturating_sub(3_000)..=restart_at).contains(&f.at_ms)
        });
        if !overlaps {
            faults.push(Fault {
                at_ms: crash_at,
                kind: FaultKind::Crash {
                    host: writer.clone(),
                },
            });
            faults.push(Fault {
                at_ms: restart_at,
                kind: FaultKind::Restart { host: writer },
            });
        }
    }
    // A client comes back with a token from the future (a database restored from a backup).
    if rng.random_bool(0.5) {
        let client = rng.random_range(1..=clients);
        faults.push(Fault {
            at_ms: rng.random_range(1_000..=duration_ms / 2),
            kind: FaultKind::FutureToken {
                client: format!("c{client}"),
                ahead_by: 1_000_000,
            },
        });
    }
    // The metrics store out of reach of one process for a while: its flushes go unanswered
    // and are sent again, which the store must count once.
    if rng.random_bool(0.3) {
        let host = if rng.random_bool(0.5) {
            format!("r{}", rng.random_range(1..=readers))
        } else {
            format!("w{}", rng.random_range(1..=writers))
        };
        let at_ms = rng.random_range(1_000..=duration_ms / 2);
        faults.push(Fault {
            at_ms,
            kind: FaultKind::Partition {
                hosts: [host, METRICS_STORE_HOST.to_owned()],
            },
        });
        faults.push(Fault {
            at_ms: (at_ms + rng.random_range(2_000..=8_000)).min(duration_ms),
            kind: FaultKind::Heal {},
        });
    }
    // A reader falls behind: CPU-bound for a while, its stream commands queue up.
    if rng.random_bool(0.3) {
        faults.push(Fault {
            at_ms: rng.random_range(1_000..=duration_ms / 2),
            kind: FaultKind::Busy {
                host: format!("r{}", rng.random_range(1..=readers)),
                for_ms: rng.random_range(2_000..=8_000),
                per_command_ms: rng.random_range(5..=30),
            },
        });
    }
    // The metrics system: flushes from often to rare, and sometimes the historical linearizer
    // (its in-flight processes pile up behind a catch-up).
    let metrics = Metrics {
        flush_interval_ms: rng.random_range(5..=30) * 100,
        replication_queue: if rng.random_bool(0.25) {
            ReplicationQueue::Linearizer
        } else {
            ReplicationQueue::PerStream
        },
    };
    // The stream goes quiet, then a rolling restart (an upgrade at night): every writer stops
    // taking batches, some requests were cancelled inside `enter` (their ids announced, never
    // written to `stream_positions`), every writer restarts, then every reader. A writer that
    // restarts below what it announced strands clients holding that token (bug B7). Drawn last,
    // so the choices above stay what they were for every seed.
    // The night is otherwise calm: no other fault, so the run has `converge_within` after the
    // restarts to bring every reader back to the tokens clients hold.
    let mut random_faults = random_faults;
    if rng.random_bool(0.25) {
        let quiet_at = rng.random_range(2_000..=duration_ms.saturating_sub(15_000).max(2_000));
        faults.clear();
        random_faults = None;
        workload.cancel_rate = 0.3;
        // Clients' sends would keep the writers busy through the quiet.
        workload.sends_per_second = 0;
        for writer in 1..=writers {
            faults.push(Fault {
                at_ms: quiet_at,
                kind: FaultKind::Quiesce {
                    host: format!("w{writer}"),
                },
            });
            faults.push(Fault {
                at_ms: quiet_at + 1_000 + 300 * u64::from(writer),
                kind: FaultKind::Restart {
                    host: format!("w{writer}"),
                },
            });
        }
        for reader in 1..=readers {
            faults.push(Fault {
                at_ms: quiet_at + 3_000 + 300 * u64::from(reader),
                kind: FaultKind::Restart {
                    host: format!("r{reader}"),
                },
            });
        }
    }
    // Background consumers of the minimum: readers that also send federation. Drawn last, so
    // the choices above stay what they were for every seed.
    let federation_senders = if rng.random_bool(0.5) {
        rng.random_range(1..=readers)
    } else {
        0
    };
    faults.sort_by_key(|f| f.at_ms);
    crate::faults::drop_idle_heals(&mut faults);
    Scenario {
        duration_ms,
        converge_within_ms: 30_000,
        transport,
        topology: Topology {
            writers,
            readers,
            sync_clients,
            writer_clients,
            late_hosts: Vec::new(),
            rooms_per_writer: 2,
            federation_senders,
        },
        workload,
        network,
        faults,
        random_faults,
        metrics,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn a_seed_generates_one_valid_scenario_that_round_trips_through_toml() {
        // Parsing refuses any fault that cannot act (`scenario::reach`): the generator never
        // draws one.
        for seed in 0..1_000 {
            let scenario = generated(seed);
            assert_eq!(scenario, generated(seed));
            let text = scenario.to_toml();
            let again = Scenario::parse(Path::new("generated.toml"), &text)
                .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{text}"));
            assert_eq!(again, scenario, "seed {seed}");
            assert!(
                scenario.transport == Transport::Redis || scenario.topology.writers == 1,
                "seed {seed}: TCP with several writers"
            );
        }
        // Both transports are still drawn.
        let tcp = (0..50)
            .filter(|seed| generated(*seed).transport == Transport::Tcp)
            .count();
        assert!((1..50).contains(&tcp), "{tcp} of 50 seeds over TCP");
        assert_ne!(generated(1), generated(2));
    }
}

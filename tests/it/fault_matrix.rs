//! Every fault bites or is refused: each fault kind, naming a host of each role (writer,
//! reader, sync client, db, redis, metrics store, metrics endpoint; every pair for the two
//! partitions), on both transports, is either refused as bad input (with the file, line,
//! column and field) or changes what happens: the run's history, without the fault's own
//! records, differs from the same scenario's without it. The table of outcomes is
//! `tests/data/faults/matrix.expected` (`UPDATE_EXPECT=1` rewrites it).

use std::path::Path;

use streamsim_models::bugs::Bugs;
use streamsim_models::fixes::Fixes;
use streamsim_sim::runner::run_seed_fixed;
use streamsim_sim::scenario::Scenario;

use crate::support::repo_root;

/// The length of most matrix runs, in ms.
const SHORT_MS: u64 = 5_000;

/// One host of each role, as the base scenario names them.
const ROLES: &[(&str, &str)] = &[
    ("writer", "w1"),
    ("reader", "r1"),
    ("client", "c1"),
    ("db", "db"),
    ("redis", "redis"),
    ("metrics-store", "metrics-store"),
    ("metrics", "metrics"),
];

/// A short world with every role: sends on (so processes forward to writers), two writers
/// over Redis, one over TCP.
fn base(transport: &str, duration_ms: u64) -> String {
    let writers = if transport == "tcp" { 1 } else { 2 };
    format!(
        r#"duration_ms = {duration_ms}
converge_within_ms = 3_000
transport = "{transport}"

[topology]
writers = {writers}
readers = 2
sync_clients = 1

[workload]
batches_per_second = 10
batch_size = {{ min = 1, max = 3 }}
persist_delay_ms = {{ min = 0, max = 200 }}
sends_per_second = 3
"#
    )
}

/// Every fault of the matrix: (label, the run's duration in ms, the `[[fault]]` tables).
fn faults() -> Vec<(String, u64, String)> {
    let fault = |body: String| format!("\n[[fault]]\nat_ms = 1_000\n{body}\n");
    let heal = "\n[[fault]]\nat_ms = 3_000\nkind = \"heal\"\n";
    let mut all = Vec::new();
    for (_, a) in ROLES {
        for (_, b) in ROLES {
            all.push((
                format!("partition {a} {b}"),
                SHORT_MS,
                fault(format!("kind = \"partition\"\nhosts = [\"{a}\", \"{b}\"]")) + heal,
            ));
            // A cut toward the bus holds only what the process publishes: a reader
            // publishes its PING every 30 s, so the cut lasts past its ping time-out.
            let (oneway_heal, duration_ms) = if *b == "redis" {
                ("\n[[fault]]\nat_ms = 65_000\nkind = \"heal\"\n", 70_000)
            } else {
                (heal, SHORT_MS)
            };
            all.push((
                format!("partition_oneway {a} -> {b}"),
                duration_ms,
                fault(format!(
                    "kind = \"partition_oneway\"\nfrom = \"{a}\"\nto = \"{b}\""
                )) + oneway_heal,
            ));
        }
    }
    for (_, h) in ROLES {
        let restart = format!("\n[[fault]]\nat_ms = 3_000\nkind = \"restart\"\nhost = \"{h}\"\n");
        all.push((
            format!("crash {h} (restart at 3 s)"),
            SHORT_MS,
            fault(format!("kind = \"crash\"\nhost = \"{h}\"")) + &restart,
        ));
        all.push((
            format!("restart {h}"),
            SHORT_MS,
            fault(format!("kind = \"restart\"\nhost = \"{h}\"")),
        ));
        all.push((
            format!("latency {h}"),
            SHORT_MS,
            fault(format!(
                "kind = \"latency\"\nhost = \"{h}\"\nlatency_ms = {{ min = 200, max = 400 }}"
            )),
        ));
        all.push((
            format!("slow_reader {h}"),
            SHORT_MS,
            fault(format!(
                "kind = \"slow_reader\"\nhost = \"{h}\"\nfor_ms = 3_000"
            )),
        ));
        all.push((
            format!("busy {h}"),
            SHORT_MS,
            fault(format!(
                "kind = \"busy\"\nhost = \"{h}\"\nfor_ms = 3_000\nper_command_ms = 50"
            )),
        ));
        all.push((
            format!("quiesce {h}"),
            SHORT_MS,
            fault(format!("kind = \"quiesce\"\nhost = \"{h}\"")),
        ));
        all.push((
            format!("future_token {h}"),
            SHORT_MS,
            fault(format!(
                "kind = \"future_token\"\nclient = \"{h}\"\nahead_by = 1_000_000"
            )),
        ));
        // r1 restarts after each reconfigure, so it reads the new config.
        let restart_r1 = "\n[[fault]]\nat_ms = 2_000\nkind = \"restart\"\nhost = \"r1\"\n";
        all.push((
            format!("reconfigure [{h}] (r1 restarts)"),
            SHORT_MS,
            fault(format!("kind = \"reconfigure\"\nwriters = [\"{h}\"]")) + restart_r1,
        ));
        all.push((
            format!("reconfigure [{h}, {h}] (r1 restarts)"),
            SHORT_MS,
            fault(format!(
                "kind = \"reconfigure\"\nwriters = [\"{h}\", \"{h}\"]"
            )) + restart_r1,
        ));
    }
    all.push(("heal".into(), SHORT_MS, fault("kind = \"heal\"".into())));
    all.push((
        "message_loss".into(),
        SHORT_MS,
        fault("kind = \"message_loss\"\nrate = 0.05".into()),
    ));
    all
}

/// What a run did: its history without the records of the faults themselves, and what the
/// metrics system saw (every scrape of the endpoint, and its final text).
fn observed(scenario: &Scenario) -> String {
    let report = run_seed_fixed(scenario, 0, Bugs::NONE, Fixes::NONE);
    let history: Vec<String> = report
        .history
        .to_json_lines()
        .lines()
        .filter(|l| !l.contains(r#""kind":"fault""#) && !l.contains(r#""kind":"healed""#))
        .map(str::to_owned)
        .collect();
    format!(
        "{}\n{}\n{}",
        history.join("\n"),
        serde_json::to_string(&report.metrics.watched.scrapes).unwrap(),
        report.metrics.endpoint_text
    )
}

#[test]
fn every_fault_kind_on_every_role_and_transport_acts_or_is_refused() {
    let mut cases = Vec::new();
    for transport in ["redis", "tcp"] {
        for (label, duration_ms, tables) in faults() {
            cases.push((
                transport,
                label,
                duration_ms,
                base(transport, duration_ms) + &tables,
            ));
        }
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let outcomes: Vec<std::sync::Mutex<String>> =
        cases.iter().map(|_| Default::default()).collect();
    let quiet: std::collections::BTreeMap<(&str, u64), String> = cases
        .iter()
        .map(|(t, _, duration_ms, _)| (*t, *duration_ms))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|(t, duration_ms)| {
            let text = base(t, duration_ms);
            let scenario = Scenario::parse(Path::new("base.toml"), &text).unwrap();
            ((t, duration_ms), observed(&scenario))
        })
        .collect();
    std::thread::scope(|scope| {
        for _ in 0..std::thread::available_parallelism().map_or(1, |n| n.get()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((transport, label, duration_ms, text)) = cases.get(i) else {
                    return;
                };
                let outcome = match Scenario::parse(Path::new("matrix.toml"), text) {
                    Err(error) => {
                        let error = error.to_string();
                        assert!(
                            error.starts_with("matrix.toml:")
                                && error.split(':').nth(1).unwrap().parse::<usize>().unwrap() > 0,
                            "{transport} {label}: a refusal names file:line:col: field: {error}"
                        );
                        format!("refused: {}", error.split_once(": ").unwrap().1)
                    }
                    Ok(scenario) if observed(&scenario) == quiet[&(*transport, *duration_ms)] => {
                        "INERT".to_owned()
                    }
                    Ok(_) => "acts".to_owned(),
                };
                *outcomes[i].lock().unwrap() = format!("{transport} {label}: {outcome}");
            });
        }
    });
    let table: String = outcomes
        .into_iter()
        .map(|o| o.into_inner().unwrap() + "\n")
        .collect();
    let inert: Vec<&str> = table.lines().filter(|l| l.ends_with(": INERT")).collect();
    assert!(
        inert.is_empty(),
        "accepted faults that change nothing:\n{}",
        inert.join("\n")
    );
    let expected_path = repo_root().join("tests/data/faults/matrix.expected");
    if std::env::var("UPDATE_EXPECT").as_deref() == Ok("1") {
        std::fs::write(&expected_path, &table).unwrap();
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
    assert!(
        table == expected,
        "the fault matrix changed (UPDATE_EXPECT=1 cargo test --test it fault_matrix rewrites {}); first difference: {:?}",
        expected_path.display(),
        table
            .lines()
            .zip(expected.lines())
            .find(|(a, b)| a != b)
    );
}

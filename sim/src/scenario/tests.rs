//! Scenario parsing: a good file loads; every kind of bad file names its line and field.

use std::path::Path;

use super::*;

const GOOD: &str = r#"# A writer restarts while batches persist out of order.
duration_ms = 20000
converge_within_ms = 10000
transport = "redis"

[topology]
writers = 2
readers = 1
sync_clients = 1

[workload]
batches_per_second = 20
batch_size = { min = 1, max = 4 }
persist_delay_ms = { min = 1, max = 80 }

[network]
latency_ms = { min = 1, max = 10 }

[[fault]]
at_ms = 5000
kind = "crash"
host = "w1"

[[fault]]
at_ms = 6000
kind = "restart"
host = "w1"
"#;

fn error(text: &str) -> ScenarioError {
    Scenario::parse(Path::new("s.toml"), text).expect_err("should be rejected")
}

#[test]
fn a_good_scenario_loads() {
    let scenario = Scenario::parse(Path::new("s.toml"), GOOD).unwrap();
    assert_eq!(scenario.faults.len(), 2);
    assert_eq!(
        scenario.faults[0].kind,
        FaultKind::Crash { host: "w1".into() }
    );
    assert_eq!(
        scenario.hosts(),
        vec![
            "db",
            "redis",
            "metrics-store",
            "metrics",
            "w1",
            "w2",
            "r1",
            "c1"
        ]
    );
}

#[test]
fn unknown_keys_name_line_column_and_field() {
    let e = error(&GOOD.replace("readers = 1", "readers = 1\nreaderz = 2"));
    assert_eq!((e.line, e.field.as_str()), (9, "topology.readerz"), "{e}");
    assert!(
        e.to_string()
            .starts_with("s.toml:9:1: topology.readerz: unknown field"),
        "{e}"
    );
    // A missing key is named with its table too, and a key of the n-th `[[fault]]` so.
    let e = error(&GOOD.replace("readers = 1\n", ""));
    assert_eq!(e.field, "topology.readers", "{e}");
    let e = error(&format!(
        "{GOOD}\n[[fault]]\nat_ms = 1\nkind = \"crash\"\nhost = \"w1\"\nhostz = \"w1\"\n"
    ));
    assert_eq!(e.field, "fault[2].hostz", "{e}");
}

#[test]
fn a_value_of_the_wrong_type_names_its_key_not_the_value() {
    // Found by a fresh-user review: `tick_ms = 1.0` was reported as `network.1.0`.
    let with_network = |line: &str| GOOD.replace("latency_ms = { min = 1, max = 10 }", line);
    for (line, field) in [
        ("tick_ms = 1.0", "network.tick_ms"),
        ("tick_ms = true", "network.tick_ms"),
        ("message_loss = \"x\"", "network.message_loss"),
        ("latency_ms = 5", "network.latency_ms"),
        // Inside an inline table, its key too (a fresh-user review found `network.min`).
        (
            "latency_ms = { min = 1.5, max = 5 }",
            "network.latency_ms.min",
        ),
        (
            "latency_ms = { min = 1, max = -5 }",
            "network.latency_ms.max",
        ),
        (
            "latency_ms = { min = 1, max = 5, avg = 2 }",
            "network.latency_ms.avg",
        ),
        (
            "latency_ms = { \"min\" = -1, max = 5 }",
            "network.latency_ms.min",
        ),
    ] {
        let e = error(&with_network(line));
        assert_eq!(e.field, field, "{line}: {e}");
    }
    let e = error(&GOOD.replace("readers = 1", "readers = -1"));
    assert_eq!(e.field, "topology.readers", "{e}");
    // Inside a `[[fault]]`, read whole for its `kind`: the line holding the value, else the
    // fault itself.
    let e = error(&GOOD.replace("kind = \"crash\"", "kind = \"explode\""));
    assert_eq!(e.field, "fault[0].kind", "{e}");
    let e = error(&format!(
        "{GOOD}\n[[fault]]\nat_ms = 7000\nkind = \"partition\"\nhosts = [\"r1\"]\n"
    ));
    assert_eq!(e.field, "fault[2]", "{e}");
}

#[test]
fn bad_values_name_their_line() {
    let e = error(&GOOD.replace("duration_ms = 20000", "duration_ms = \"long\""));
    assert_eq!(e.line, 2, "{e}");
    let e = error(&GOOD.replace("transport = \"redis\"", "transport = \"pigeon\""));
    assert_eq!(e.line, 4, "{e}");
    let e = error(&GOOD.replace("kind = \"crash\"", "kind = \"meteor\""));
    assert!(e.line >= 19 && e.message.contains("unknown variant"), "{e}");
    let e = error(&GOOD.replace(
        "host = \"w1\"\n\n[[fault]]",
        "host = \"w1\"\nhots = 1\n\n[[fault]]",
    ));
    assert!(e.line >= 19 && e.message.contains("hots"), "{e}");
}

#[test]
fn checks_after_parsing_point_at_the_field() {
    let e = error(&GOOD.replace("max = 80", "max = 0"));
    assert_eq!(
        (e.field.as_str(), e.line),
        ("workload.persist_delay_ms", 14),
        "{e}"
    );
    let e = error(&GOOD.replace("host = \"w1\"\n\n[[fault]]", "host = \"w9\"\n\n[[fault]]"));
    assert_eq!((e.field.as_str(), e.line), ("fault[0].host", 22), "{e}");
    let e = error(&GOOD.replace("at_ms = 6000", "at_ms = 60000"));
    assert_eq!((e.field.as_str(), e.line), ("fault[1].at_ms", 25), "{e}");
    let e = error(&GOOD.replace("writers = 2", "writers = 0"));
    assert_eq!(e.field, "topology.writers", "{e}");
    let e = error(&GOOD.replace("sync_clients = 1", "sync_clients = 1\nrooms_per_writer = 0"));
    assert_eq!(
        (e.field.as_str(), e.line, e.column),
        ("topology.rooms_per_writer", 10, 1),
        "{e}"
    );
    assert!(
        e.to_string()
            .starts_with("s.toml:10:1: topology.rooms_per_writer: 0 is not in 1..=100"),
        "{e}"
    );
    let e = error(&GOOD.replace(
        "sync_clients = 1",
        "sync_clients = 1\nrooms_per_writer = -1",
    ));
    assert_eq!(e.line, 10, "{e}");
}

#[test]
fn rooms_are_sharded_over_the_writers_config() {
    let scenario = Scenario::parse(Path::new("s.toml"), GOOD).unwrap();
    assert_eq!(scenario.topology.rooms_per_writer, 2);
    assert_eq!(scenario.rooms(), vec!["!r0", "!r1", "!r2", "!r3"]);
    let writers = vec!["w1".to_owned(), "w2".to_owned()];
    let owners: Vec<_> = scenario
        .rooms()
        .iter()
        .map(|room| room_persister(room, &writers).unwrap())
        .collect();
    assert_eq!(owners, vec!["w1", "w2", "w1", "w2"]);
    assert_eq!(room_persister("!r3", &writers[..1]), Some("w1"));
    assert_eq!(room_persister("!r3", &[]), None);
}

#[test]
fn unreadable_files_are_errors_not_panics() {
    let e = Scenario::load(Path::new("/nonexistent/scenario.toml")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/nonexistent/scenario.toml: cannot read: "),
        "{e}"
    );
}

#[test]
fn a_workload_without_batches_is_an_error_not_a_silent_default() {
    let text = GOOD.replace("batches_per_second = 20", "batches_per_second = 0");
    let error = Scenario::parse(Path::new("z.toml"), &text).unwrap_err();
    assert_eq!(error.field, "workload.batches_per_second");
    assert!(error.line > 0, "{error}");
}

#[test]
fn the_default_transport_is_redis() {
    let text = GOOD.replace("transport = \"redis\"\n", "");
    let scenario = Scenario::parse(Path::new("s.toml"), &text).unwrap();
    assert_eq!(scenario.transport, Transport::Redis);
    assert_eq!(scenario.topology.writers, 2);
}

#[test]
fn tcp_with_several_writers_is_refused_and_says_to_use_redis() {
    let e = error(&GOOD.replace("transport = \"redis\"", "transport = \"tcp\""));
    assert_eq!(
        (e.field.as_str(), e.line, e.column),
        ("topology.writers", 7, 1),
        "{e}"
    );
    let text = e.to_string();
    assert!(
        text.starts_with("s.toml:7:1: topology.writers: 2 writers over transport = \"tcp\""),
        "{e}"
    );
    assert!(
        text.contains("only the server sends RDATA and POSITION"),
        "{e}"
    );
    assert!(
        text.contains("use transport = \"redis\" for several writers"),
        "{e}"
    );
    // A late writer is a writer too: it would join as a second one.
    let e = error(
        &GOOD
            .replace("transport = \"redis\"", "transport = \"tcp\"")
            .replace(
                "sync_clients = 1",
                "sync_clients = 1\nlate_hosts = [\"w2\"]",
            ),
    );
    assert_eq!(e.field, "topology.writers", "{e}");
}

#[test]
fn tcp_with_one_writer_loads() {
    let text = GOOD
        .replace("transport = \"redis\"", "transport = \"tcp\"")
        .replace("writers = 2", "writers = 1");
    let scenario = Scenario::parse(Path::new("s.toml"), &text).unwrap();
    assert_eq!(scenario.transport, Transport::Tcp);
    assert_eq!(
        scenario.hosts(),
        vec!["db", "metrics-store", "metrics", "w1", "r1", "c1"]
    );
    // Reconfiguring to the one writer changes nothing, to none leaves no writer: both are
    // refused (every fault acts or is refused).
    for (writers, why) in [
        ("[\"w1\"]", "the writers config is already [w1]"),
        ("[]", "an empty writers config"),
    ] {
        let text = format!(
            "{text}\n[[fault]]\nat_ms = 7000\nkind = \"reconfigure\"\nwriters = {writers}\n[[fault]]\nat_ms = 8000\nkind = \"restart\"\nhost = \"r1\"\n"
        );
        let e = error(&text);
        assert!(e.message.contains(why), "{writers}: {e}");
    }
}

#[test]
fn tcp_refuses_a_reconfigure_that_adds_a_writer() {
    let text = GOOD
        .replace("transport = \"redis\"", "transport = \"tcp\"")
        .replace("writers = 2", "writers = 1")
        + "\n[[fault]]\nat_ms = 7000\nkind = \"reconfigure\"\nwriters = [\"w1\", \"r1\"]\n";
    let e = error(&text);
    assert_eq!((e.field.as_str(), e.line), ("fault[2].writers", 32), "{e}");
    assert!(
        e.to_string().starts_with(
            "s.toml:32:1: fault[2].writers: \"r1\" would be a second writer over transport = \"tcp\""
        ),
        "{e}"
    );
    assert!(e.message.contains("use transport = \"redis\""), "{e}");
    // Over Redis a reader in the writers config is refused as what it is.
    let redis = text.replace("transport = \"tcp\"", "transport = \"redis\"");
    let e = error(&redis);
    assert!(
        e.message
            .starts_with("\"r1\" is a reader, not a writer: the writers config names writers (w1)"),
        "{e}"
    );
}

#[test]
fn to_toml_writes_ranges_inline_and_reads_back_equal() {
    let scenario = Scenario::parse(Path::new("s.toml"), GOOD).unwrap();
    let text = scenario.to_toml();
    assert!(
        text.contains("batch_size = { min = 1, max = 4 }\n"),
        "{text}"
    );
    assert!(
        text.contains("latency_ms = { min = 1, max = 10 }\n"),
        "{text}"
    );
    assert!(
        !text.contains("late_hosts"),
        "empty lists are left out: {text}"
    );
    let again = Scenario::parse(Path::new("again.toml"), &text).unwrap();
    assert_eq!(again, scenario);
}

//! What a scheduled fault can act on: the links of a topology on its transport, and each host
//! role's part in replication. A fault that could change nothing (a partition between two
//! hosts that never exchange a byte, a slow reader that reads no stream, a heal with nothing
//! to heal) is refused as bad input rather than logged and ignored, so a green run always
//! says something about the fault its author meant to test.

use std::collections::{BTreeMap, BTreeSet};

use super::{FaultKind, Scenario, Transport, METRICS_ENDPOINT_HOST, METRICS_STORE_HOST};

/// The part a host plays in the world.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Writer,
    Reader,
    Client,
    Db,
    Redis,
    MetricsStore,
    Metrics,
}

impl Role {
    pub fn describe(self) -> &'static str {
        match self {
            Role::Writer => "a writer",
            Role::Reader => "a reader",
            Role::Client => "a sync client",
            Role::Db => "the database",
            Role::Redis => "the Redis bus",
            Role::MetricsStore => "the metrics store",
            Role::Metrics => "the metrics endpoint",
        }
    }
}

impl Scenario {
    /// The role of `host`, if the topology has it.
    pub fn role(&self, host: &str) -> Option<Role> {
        if !self.hosts().iter().any(|h| h == host) {
            return None;
        }
        Some(match host {
            "db" => Role::Db,
            "redis" => Role::Redis,
            METRICS_STORE_HOST => Role::MetricsStore,
            METRICS_ENDPOINT_HOST => Role::Metrics,
            _ if self.writer_names().iter().any(|w| w == host) => Role::Writer,
            _ if self.reader_names().iter().any(|r| r == host) => Role::Reader,
            _ => Role::Client,
        })
    }

    /// Every pair of hosts that exchange bytes in this scenario, each pair once (sorted).
    ///
    /// Writers and readers (the processes) talk to the database, the metrics store and the
    /// metrics endpoint; over Redis to the bus, over direct TCP to the one writer's
    /// replication port; each sync client to the process it pages (and sends) through; and
    /// with client sends on, each process taking sends to every writer, the rooms'
    /// persisters it forwards to.
    pub fn links(&self) -> BTreeSet<(String, String)> {
        let mut links = BTreeSet::new();
        let mut link = |a: &str, b: &str| {
            if a != b {
                let (a, b) = if a < b { (a, b) } else { (b, a) };
                links.insert((a.to_owned(), b.to_owned()));
            }
        };
        let writers = self.writer_names();
        let processes: Vec<String> = writers
            .iter()
            .chain(&self.reader_names())
            .cloned()
            .collect();
        for process in &processes {
            for infra in ["db", METRICS_STORE_HOST, METRICS_ENDPOINT_HOST] {
                link(process, infra);
            }
            match self.transport {
                Transport::Redis => link(process, "redis"),
                Transport::Tcp => {
                    for writer in &writers {
                        link(process, writer);
                    }
                }
            }
        }
        for (client, through) in self.clients() {
            link(&client, &through);
            if self.workload.sends_per_second > 0 {
                for writer in &writers {
                    link(&through, writer);
                }
            }
        }
        links
    }

    fn linked(&self, links: &BTreeSet<(String, String)>, a: &str, b: &str) -> bool {
        let (a, b) = if a < b { (a, b) } else { (b, a) };
        links.contains(&(a.to_owned(), b.to_owned()))
    }

    /// Whether `host` follows a replication stream written by another process: only then can
    /// reading it slowly (`slow_reader`) or handling it slowly (`busy`) change anything. Over
    /// TCP every process but the writer does; over Redis every process of a world with a
    /// writer other than itself.
    fn follows_a_stream(&self, host: &str) -> bool {
        match self.role(host) {
            Some(Role::Writer | Role::Reader) => {
                self.writer_names().iter().any(|writer| writer != host)
            }
            _ => false,
        }
    }

    /// Refuses a fault that cannot act: `Err((field, why))` naming the first one, in file
    /// order. Scheduled faults are walked in time order to know which hosts are down and
    /// what a heal would repair. Host names are checked first (`validate`).
    pub(super) fn check_faults_act(&self) -> Result<(), (String, String)> {
        let links = self.links();
        // Time order, keeping file order among equal times (the schedule's own merge).
        let mut order: Vec<usize> = (0..self.faults.len()).collect();
        order.sort_by_key(|i| self.faults[*i].at_ms);
        let mut down: BTreeMap<&str, u64> = self
            .topology
            .late_hosts
            .iter()
            .map(|h| (h.as_str(), 0))
            .collect();
        let mut quiesced: BTreeMap<&str, u64> = BTreeMap::new();
        let mut cut_since: Option<u64> = None;
        let mut config = self.initial_writers();
        for index in order {
            let fault = &self.faults[index];
            let at = fault.at_ms;
            let field = |key: &str| format!("fault[{index}].{key}");
            let refuse = |key: &str, why: String| Err((field(key), why));
            match &fault.kind {
                FaultKind::Partition { hosts: [a, b] } => {
                    self.check_cut(&links, a, b)
                        .map_err(|w| (field("hosts"), w))?;
                    cut_since.get_or_insert(at);
                }
                FaultKind::PartitionOneway { from, to } => {
                    self.check_cut(&links, from, to)
                        .map_err(|w| (field("to"), w))?;
                    cut_since.get_or_insert(at);
                }
                FaultKind::Heal {} => {
                    // A heal may also repair the partitions drawn from the seed.
                    let drawn_partitions = self.random_faults.as_ref().is_some_and(|r| {
                        r.kinds.iter().any(|k| {
                            matches!(
                                k,
                                super::RandomFaultKind::Partition
                                    | super::RandomFaultKind::PartitionOneway
                            )
                        })
                    });
                    if cut_since.take().is_none() && !drawn_partitions {
                        return refuse(
                            "kind",
                            format!("heal at {at} ms has nothing to heal: no partition since the start or the last heal (heal repairs partitions; every fault ends at duration_ms anyway)"),
                        );
                    }
                }
                FaultKind::Crash { host } => {
                    if let Some(since) = down.get(host.as_str()) {
                        return refuse(
                            "host",
                            format!("{host} is already down at {at} ms (since {since} ms): restart it first"),
                        );
                    }
                    down.insert(host, at);
                }
                FaultKind::Restart { host } => {
                    // A restart of a running host is a crash and a start; but the metrics
                    // store keeps its data across it (Redis with persistence) and its
                    // clients' connections outlive a bounce in the model, so only a store
                    // that was down comes back differently.
                    if down.remove(host.as_str()).is_none()
                        && self.role(host) == Some(Role::MetricsStore)
                    {
                        return refuse(
                            "host",
                            format!("a restart of the running {host} at {at} ms changes nothing (its data lives on, as Redis's with persistence, and so do its connections): crash it first"),
                        );
                    }
                }
                FaultKind::SlowReader { host, .. } | FaultKind::Busy { host, .. } => {
                    let kind = if matches!(fault.kind, FaultKind::SlowReader { .. }) {
                        "slow_reader"
                    } else {
                        "busy"
                    };
                    if !self.follows_a_stream(host) {
                        let role = self.role(host).map_or("no host", Role::describe);
                        let why = match self.role(host) {
                            Some(Role::Writer) => format!(
                                "{kind} on {host}: {host} follows no other writer's stream over transport = \"{}\" (it is the only writer), so there is nothing to read or handle slowly",
                                transport_name(self.transport)
                            ),
                            _ => format!(
                                "{kind} on {host}: {host} is {role}, which follows no replication stream (only writers and readers do); to slow {host} down use a latency fault with host = \"{host}\""
                            ),
                        };
                        return refuse("host", why);
                    }
                }
                FaultKind::Reconfigure { writers } => {
                    if writers.is_empty() {
                        return refuse(
                            "writers",
                            "an empty writers config: name at least one writer".into(),
                        );
                    }
                    let names = self.writer_names();
                    if let Some(other) = writers.iter().find(|w| !names.contains(w)) {
                        let role = self.role(other).map_or("no host", Role::describe);
                        return refuse(
                            "writers",
                            format!("{other:?} is {role}, not a writer: the writers config names writers ({})", names.join(", ")),
                        );
                    }
                    let mut seen = BTreeSet::new();
                    if let Some(twice) = writers.iter().find(|w| !seen.insert(w.as_str())) {
                        return refuse("writers", format!("{twice:?} is named twice"));
                    }
                    if *writers == config {
                        return refuse(
                            "writers",
                            format!(
                                "the writers config is already [{}] at {at} ms",
                                writers.join(", ")
                            ),
                        );
                    }
                    // Processes read the writers config when they start: without a start
                    // after it, nobody ever reads the new one.
                    let starts_later = self
                        .faults
                        .iter()
                        .any(|f| f.at_ms >= at && matches!(f.kind, FaultKind::Restart { .. }))
                        || self.random_faults.as_ref().is_some_and(|r| {
                            r.kinds.contains(&super::RandomFaultKind::CrashRestart)
                        });
                    if !starts_later {
                        return refuse(
                            "writers",
                            format!("no process starts after this reconfigure at {at} ms, so none reads the new writers config (running processes keep theirs until restarted, as in Synapse): add a restart"),
                        );
                    }
                    config = writers.clone();
                }
                FaultKind::Quiesce { host } => {
                    if self.role(host) != Some(Role::Writer) {
                        let role = self.role(host).map_or("no host", Role::describe);
                        return refuse(
                            "host",
                            format!("quiesce on {host}: {host} is {role}; only a writer has batches to stop taking"),
                        );
                    }
                    if let Some(since) = quiesced.get(host.as_str()) {
                        return refuse(
                            "host",
                            format!("{host} is already quiesced (since {since} ms)"),
                        );
                    }
                    quiesced.insert(host, at);
                }
                FaultKind::Latency { .. }
                | FaultKind::MessageLoss { .. }
                | FaultKind::FutureToken { .. } => {}
            }
        }
        Ok(())
    }

    /// A partition (either kind) between `a` and `b` must cut a link they have.
    fn check_cut(
        &self,
        links: &BTreeSet<(String, String)>,
        a: &str,
        b: &str,
    ) -> Result<(), String> {
        if a == b {
            return Err(format!("{a} cannot be partitioned from itself"));
        }
        if self.linked(links, a, b) {
            return Ok(());
        }
        let peers = |host: &str| -> Vec<String> {
            links
                .iter()
                .filter_map(|(x, y)| {
                    if x == host {
                        Some(y.clone())
                    } else if y == host {
                        Some(x.clone())
                    } else {
                        None
                    }
                })
                .collect()
        };
        let process = |host: &str| matches!(self.role(host), Some(Role::Writer | Role::Reader));
        let hint = if self.transport == Transport::Redis && process(a) && process(b) {
            format!(
                "over transport = \"redis\" replication goes through the bus: cut one of them from \"redis\" instead (hosts = [\"{b}\", \"redis\"])"
            )
        } else {
            format!("{a} talks to {} only", peers(a).join(", "))
        };
        Err(format!("{a} and {b} share no link in this scenario, so a partition between them changes nothing; {hint}"))
    }
}

fn transport_name(transport: Transport) -> &'static str {
    match transport {
        Transport::Redis => "redis",
        Transport::Tcp => "tcp",
    }
}

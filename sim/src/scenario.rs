//! Scenario files: the topology, workload, network and fault schedule of a run, in TOML.
//!
//! Unknown keys and bad values are errors naming the file, line, column and field, never a
//! panic. Values a parser cannot judge alone (a fault naming a host that does not exist, a
//! range whose minimum is above its maximum) are checked after parsing, against the spans the
//! TOML reader kept, so they point at the line too.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use streamsim_models::limits::STREAMER_IDLE_POKE_INTERVAL_MS;

/// The shared metrics store every node flushes to (AWX's Redis).
pub const METRICS_STORE_HOST: &str = "metrics-store";
/// The metrics endpoint that merges every node's broadcast dataset.
pub const METRICS_ENDPOINT_HOST: &str = "metrics";

/// One scenario.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Simulated length of the workload phase, in milliseconds.
    pub duration_ms: u64,
    /// After the last fault heals, every reader must converge within this, in milliseconds.
    pub converge_within_ms: u64,
    #[serde(default)]
    pub transport: Transport,
    pub topology: Topology,
    pub workload: Workload,
    #[serde(default)]
    pub network: Network,
    #[serde(default, rename = "fault", skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<Fault>,
    /// Faults drawn from the seed, on top of the scheduled ones.
    #[serde(default)]
    pub random_faults: Option<RandomFaults>,
    /// The metrics system: how often nodes flush, and how inbound replication is queued.
    #[serde(default, skip_serializing_if = "Metrics::is_default")]
    pub metrics: Metrics,
}

/// The AWX-style metrics aggregation of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// How often each node adds its in-memory metrics to the shared store and broadcasts its
    /// dataset, in milliseconds (AWX's `SUBSYSTEM_METRICS_INTERVAL_SAVE_TO_REDIS`, 2 s).
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// How a process queues inbound RDATA and POSITION: one queue per stream drained by one
    /// background process (Synapse since 1.18), or one background process per command
    /// waiting on a per-stream linearizer (Synapse 1.13 to 1.17).
    #[serde(default)]
    pub replication_queue: ReplicationQueue,
}

fn default_flush_interval_ms() -> u64 {
    2_000
}

/// Smallest accepted flush interval, in milliseconds: AWX warns that flushing in a tight
/// loop is what its design exists to avoid.
pub const FLUSH_INTERVAL_MS_MIN: u64 = 100;

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            flush_interval_ms: default_flush_interval_ms(),
            replication_queue: ReplicationQueue::default(),
        }
    }
}

impl Metrics {
    fn is_default(&self) -> bool {
        *self == Metrics::default()
    }
}

/// See [`Metrics::replication_queue`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicationQueue {
    #[default]
    PerStream,
    Linearizer,
}

/// A fault mix drawn from the seed (swarm-style): each fault is followed by its repair.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomFaults {
    /// Faults start at or after this, in milliseconds.
    #[serde(default)]
    pub from_ms: u64,
    /// Faults start before this, in milliseconds (default: the end of the workload).
    #[serde(default)]
    pub until_ms: Option<u64>,
    /// Time from one fault to the next, in milliseconds.
    pub every_ms: Range,
    /// How long a fault lasts before its repair (heal, restart, latency back), in milliseconds.
    pub lasting_ms: Range,
    /// Which kinds to draw from, uniformly.
    pub kinds: Vec<RandomFaultKind>,
}

/// The kinds of fault a seed may draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RandomFaultKind {
    /// Both ways: over Redis between a writer or reader and the bus (`redis`), over TCP
    /// between the writer and a process that follows it.
    Partition,
    /// One way, between the same pairs as `Partition`, either direction.
    PartitionOneway,
    /// A writer or a reader crashes and restarts.
    CrashRestart,
    /// Every link slows down to 50-500 ms.
    Latency,
    /// A reader stops reading its replication sockets.
    SlowReader,
}

/// How replication commands travel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// Direct TCP connections with the SERVER/NAME handshake, to the one stream writer: in
    /// Synapse 1.163.2 only the server side of a connection may send RDATA and POSITION
    /// (`VALID_SERVER_COMMANDS` in replication/tcp/commands.py; the server answers a client's
    /// RDATA with `ERROR invalid command`), and a worker that writes a stream needs Redis
    /// (the assert in `ReplicationStreamer.__init__`, replication/tcp/resource.py). So a TCP
    /// world has exactly one writer, the process every other one connects to.
    Tcp,
    /// A Redis pub/sub bus, as Synapse 1.163.2 runs between workers (the default).
    #[default]
    Redis,
}

/// Why a direct-TCP world cannot have a second writer, and what to write instead.
pub const TCP_ONE_WRITER: &str = "direct TCP replication carries one writer's streams (in \
    Synapse 1.163.2 only the server sends RDATA and POSITION, and a worker writing a stream \
    needs Redis); use transport = \"redis\" for several writers";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Writer hosts `w1..wN`.
    pub writers: u32,
    /// Reader hosts `r1..rN`.
    pub readers: u32,
    /// Sync-client hosts `c1..cN`, each paging through one reader (`c1` through `r1`, ...).
    #[serde(default)]
    pub sync_clients: u32,
    /// Sync clients that page and send through writer hosts instead (Synapse's event
    /// persisters serve clients too), numbered after the others: with two or more writers
    /// they use `w2`, `w3`, ... in turn, so their sends are forwarded to the room's
    /// persister `w1`.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub writer_clients: u32,
    /// Hosts that are down at the start and join with a `restart` fault. Late writers are not
    /// in the initial writers config; a `reconfigure` fault adds them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub late_hosts: Vec<String>,
    /// Rooms per writer host: the world has `rooms_per_writer × writers` rooms (`!r0`,
    /// `!r1`, ...), sharded over the writers config as `stream_writers.events` shards them
    /// (see [`room_persister`]); every sync client is joined to every room. Default 2.
    #[serde(
        default = "default_rooms_per_writer",
        skip_serializing_if = "is_default_rooms_per_writer"
    )]
    pub rooms_per_writer: u32,
    /// Readers that also send federation (`r1..rN` run `federation_sender_instances`): each
    /// runs Synapse's federation sender loop, a background consumer of the events stream
    /// that follows the minimum persisted position (`streamsim_models::fedsender`), with its
    /// own `federation_stream_position` row. At most `readers`; default 0.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub federation_senders: u32,
}

fn default_rooms_per_writer() -> u32 {
    2
}

fn is_default_rooms_per_writer(value: &u32) -> bool {
    *value == default_rooms_per_writer()
}

/// Largest accepted `topology.rooms_per_writer`: each room is a change-cache entry and a
/// timeline query of every initial /sync.
pub const ROOMS_PER_WRITER_MAX: u32 = 100;

/// The process that persists `room` under a writers config: the room's index modulo the
/// number of writers. Synapse's `ShardedWorkerHandlingConfig._get_instance` takes the room
/// id's sha256 modulo the number of writers (synapse/config/workers.py); an index gives each
/// writer exactly its share and moves rooms on a `reconfigure` just the same way.
pub fn room_persister<'a>(room: &str, writers: &'a [String]) -> Option<&'a str> {
    let index: usize = room.strip_prefix("!r")?.parse().ok()?;
    (!writers.is_empty()).then(|| writers[index % writers.len()].as_str())
}

/// An inclusive range of values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Range {
    pub min: u64,
    pub max: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Batches each writer starts per simulated second.
    pub batches_per_second: u32,
    /// Events per batch.
    pub batch_size: Range,
    /// Time between allocating a batch's ids and committing its rows, in milliseconds; the
    /// spread is what makes batches commit out of order.
    pub persist_delay_ms: Range,
    /// Fraction of batches whose request is cancelled (the client went away) after the
    /// sequence answered but before the ids reached the caller, 0..=1 (default 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cancel_rate: f64,
    /// At most this many events per /sync answer, the earliest first; the client asks again at
    /// once from the partial-read token (`advance_multiwriter_sharded_token_after_partial_read`,
    /// as Synapse pages receipts and sticky events). Unlimited when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_timeline_limit: Option<u32>,
    /// Events each sync client sends per simulated second through the host it syncs with,
    /// which forwards them to the room's persister and waits for its position (default 0).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub sends_per_second: u32,
}

fn is_zero(value: &f64) -> bool {
    *value == 0.0
}

fn is_zero_u32(value: &u32) -> bool {
    *value == 0
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// One-way latency of every message, drawn per message, in milliseconds (default 1..5).
    #[serde(default = "default_latency_ms")]
    pub latency_ms: Range,
    /// Probability that a segment sent on a replication or client link (not the database's)
    /// is lost, 0..=1: TCP then delivers nothing more on that link until it retransmits,
    /// 200 ms later (Linux's minimum RTO; `engine::network`).
    #[serde(default)]
    pub message_loss: f64,
    /// The simulated clock's resolution, in milliseconds: only 1 is accepted (the engine is
    /// event-driven with 1 ms resolution; turmoil 0.7's coarser steps are gone). Kept so that
    /// files written with `tick_ms = 1` still load; never written.
    #[serde(default = "default_tick_ms", skip_serializing)]
    pub tick_ms: u64,
}

fn default_tick_ms() -> u64 {
    1
}

fn default_latency_ms() -> Range {
    Range { min: 1, max: 5 }
}

impl Default for Network {
    fn default() -> Self {
        Network {
            latency_ms: default_latency_ms(),
            message_loss: 0.0,
            tick_ms: default_tick_ms(),
        }
    }
}

/// A scheduled fault. (serde cannot deny unknown fields through `flatten`; the variants of
/// [`FaultKind`] deny them instead, which covers every key but `at_ms`.)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    pub at_ms: u64,
    #[serde(flatten)]
    pub kind: FaultKind,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultKind {
    /// Both directions between two hosts.
    Partition { hosts: [String; 2] },
    /// Only `from` -> `to`.
    PartitionOneway { from: String, to: String },
    /// Repair every partition. (A struct variant, so that `deny_unknown_fields` refuses
    /// stray keys in a heal's table: serde lets a unit variant ignore them.)
    Heal {},
    /// The host dies: memory lost, the database keeps what was committed.
    Crash { host: String },
    /// The host starts again and rebuilds itself from the database.
    Restart { host: String },
    /// New latency on every link of `host` (every link when absent).
    Latency {
        latency_ms: Range,
        #[serde(default)]
        host: Option<String>,
    },
    /// New message loss on every replication and client link: the probability that a segment
    /// is lost, holding its link until TCP retransmits (`engine::network`).
    MessageLoss { rate: f64 },
    /// The writers config (Synapse's `stream_writers.events`) every process reads at its next
    /// start; running processes keep theirs until restarted, as in Synapse.
    Reconfigure { writers: Vec<String> },
    /// The writer stops taking new batches (a clean shutdown begins); in-flight ones finish.
    Quiesce { host: String },
    /// The reader stops reading for `for_ms`, so its peers' queues fill up.
    SlowReader { host: String, for_ms: u64 },
    /// The process is CPU-bound for `for_ms`: each inbound RDATA or POSITION takes
    /// `per_command_ms` to handle, so commands queue up behind one another (what makes a
    /// reader fall behind, and the historical linearizer pile its background processes up).
    Busy {
        host: String,
        for_ms: u64,
        per_command_ms: u64,
    },
    /// The client's next /sync presents its token moved `ahead_by` past every position: what a
    /// client holds after the server's database was restored from an older backup (the
    /// trigger of bug B8, issue #17274). Its tokens are judged afresh from there.
    FutureToken { client: String, ahead_by: i64 },
}

/// Why a scenario file is not a scenario.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ScenarioError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// The dotted key path, e.g. `fault[2].host`, or `-` when the file itself is unreadable.
    pub field: String,
    pub message: String,
}

impl ScenarioError {
    /// `file:line:column: field: message`; `file: field: message` for a key the file leaves
    /// to its default; `file: message` when the file itself is at fault (unreadable).
    fn render(&self) -> String {
        if self.line == 0 && self.field == "-" {
            format!("{}: {}", self.file.display(), self.message)
        } else if self.line == 0 {
            // A key the file does not spell out (a default) has no place to point at.
            format!("{}: {}: {}", self.file.display(), self.field, self.message)
        } else {
            format!(
                "{}:{}:{}: {}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.field,
                self.message
            )
        }
    }
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: path.to_owned(),
            line: 0,
            column: 0,
            field: "-".into(),
            message: format!("cannot read: {e}"),
        })?;
        Scenario::parse(path, &text)
    }

    /// Parses and checks scenario text; `path` names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map_or((0, 0), |span| line_column(text, span.start));
            // A key the message names (`unknown field `x``, `missing field `x``), else the key
            // whose value the span points at: a message about a value quotes the value.
            let message = e.message();
            let names_a_key = ["unknown field", "missing field", "duplicate key"]
                .iter()
                .any(|start| message.trim_start().starts_with(start));
            let quoted = message.split('`').nth(1);
            let key = if names_a_key {
                // Inside an inline table, the key is the table's (`batch_size.avg`).
                quoted.map(|name| {
                    let (mut path, _) = e
                        .span()
                        .map_or_else(Default::default, |span| inline_path(text, span.start));
                    path.push(name.to_owned());
                    path.join(".")
                })
            } else {
                // A value error inside a `[[fault]]` points at its header (the table is read
                // whole for its `kind`): find the line that holds the quoted value.
                e.span().and_then(|span| {
                    key_before(text, span.start)
                        .or_else(|| quoted.and_then(|value| key_holding(text, span.start, value)))
                })
            };
            let key = key.as_deref();
            let field = match (key, e.span().and_then(|span| table_at(text, span.start))) {
                (Some(key), Some(table)) => format!("{table}.{key}"),
                (Some(key), None) => key.to_owned(),
                (None, Some(table)) => table,
                (None, None) => "-".to_owned(),
            };
            ScenarioError {
                file: path.to_owned(),
                line,
                column,
                field,
                message: e.message().trim().to_owned(),
            }
        })?;
        scenario.validate().map_err(|(field, message)| {
            let (line, column) = locate(text, &field);
            ScenarioError {
                file: path.to_owned(),
                line,
                column,
                field,
                message,
            }
        })?;
        Ok(scenario)
    }

    /// The scenario as a person would write the file: ranges as inline tables
    /// (`batch_size = { min = 1, max = 5 }`), empty lists left out. `parse` reads it back
    /// to an equal scenario.
    pub fn to_toml(&self) -> String {
        let text = toml::to_string(self).expect("a scenario serializes");
        let mut document: toml_edit::DocumentMut = text.parse().expect("toml writes what it reads");
        inline_ranges(document.as_table_mut());
        document.to_string()
    }

    /// Every host name the topology creates.
    pub fn hosts(&self) -> Vec<String> {
        let mut hosts = vec!["db".to_owned()];
        if self.transport == Transport::Redis {
            hosts.push("redis".into());
        }
        hosts.extend([
            METRICS_STORE_HOST.to_owned(),
            METRICS_ENDPOINT_HOST.to_owned(),
        ]);
        hosts.extend((1..=self.topology.writers).map(|i| format!("w{i}")));
        hosts.extend((1..=self.topology.readers).map(|i| format!("r{i}")));
        hosts.extend(self.clients().into_iter().map(|(client, _)| client));
        hosts
    }

    pub fn writer_names(&self) -> Vec<String> {
        (1..=self.topology.writers)
            .map(|i| format!("w{i}"))
            .collect()
    }

    pub fn reader_names(&self) -> Vec<String> {
        (1..=self.topology.readers)
            .map(|i| format!("r{i}"))
            .collect()
    }

    /// The readers that run a federation sender (`r1..rN`, N = `topology.federation_senders`).
    pub fn federation_sender_names(&self) -> Vec<String> {
        (1..=self.topology.federation_senders)
            .map(|i| format!("r{i}"))
            .collect()
    }

    /// Each sync client and the reader it pages through (`c1` → `r1`, wrapping around).
    pub fn clients(&self) -> Vec<(String, String)> {
        let readers = self.topology.readers.max(1);
        let reader_clients = (1..=self.topology.sync_clients)
            .map(|i| (format!("c{i}"), format!("r{}", (i - 1) % readers + 1)));
        let first = self.topology.sync_clients;
        let writers = self.topology.writers.max(1);
        let writer_clients = (1..=self.topology.writer_clients).map(move |i| {
            let writer = if writers >= 2 {
                (i - 1) % (writers - 1) + 2
            } else {
                1
            };
            (format!("c{}", first + i), format!("w{writer}"))
        });
        reader_clients.chain(writer_clients).collect()
    }

    /// Every room of the world, `!r0` upwards.
    pub fn rooms(&self) -> Vec<String> {
        (0..self.topology.rooms_per_writer * self.topology.writers)
            .map(|i| format!("!r{i}"))
            .collect()
    }

    /// The writers config at the start: every writer that is not late.
    pub fn initial_writers(&self) -> Vec<String> {
        self.writer_names()
            .into_iter()
            .filter(|w| !self.topology.late_hosts.contains(w))
            .collect()
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let fail = |field: &str, message: String| Err((field.to_owned(), message));
        if self.topology.writers == 0 {
            return fail("topology.writers", "at least one writer is needed".into());
        }
        for (field, range) in [
            ("workload.batch_size", self.workload.batch_size),
            ("workload.persist_delay_ms", self.workload.persist_delay_ms),
            ("network.latency_ms", self.network.latency_ms),
        ] {
            if range.min > range.max {
                return fail(
                    field,
                    format!("min {} is above max {}", range.min, range.max),
                );
            }
        }
        if !(1..=ROOMS_PER_WRITER_MAX).contains(&self.topology.rooms_per_writer) {
            return fail(
                "topology.rooms_per_writer",
                format!(
                    "{} is not in 1..={ROOMS_PER_WRITER_MAX}",
                    self.topology.rooms_per_writer
                ),
            );
        }
        if self.workload.batches_per_second == 0 {
            return fail(
                "workload.batches_per_second",
                "at least one batch per second (use a `quiesce` fault for an idle writer)".into(),
            );
        }
        if self.workload.batch_size.min == 0 {
            return fail(
                "workload.batch_size",
                "a batch holds at least one event".into(),
            );
        }
        if !(0.0..=1.0).contains(&self.workload.cancel_rate) {
            return fail(
                "workload.cancel_rate",
                format!("{} is not a probability", self.workload.cancel_rate),
            );
        }
        if self.workload.sync_timeline_limit == Some(0) {
            return fail(
                "workload.sync_timeline_limit",
                "an answer holds at least one event".into(),
            );
        }
        if !(0.0..=1.0).contains(&self.network.message_loss) {
            return fail(
                "network.message_loss",
                format!("{} is not a probability", self.network.message_loss),
            );
        }
        if self.network.tick_ms != 1 {
            return fail(
                "network.tick_ms",
                format!(
                    "{} cannot act: the engine is event-driven with 1 ms resolution (remove the key)",
                    self.network.tick_ms
                ),
            );
        }
        if self.converge_within_ms < STREAMER_IDLE_POKE_INTERVAL_MS {
            return fail(
                "converge_within_ms",
                format!(
                    "{} is below {STREAMER_IDLE_POKE_INTERVAL_MS}: a quiet writer announces its \
                     position once a second, so a shorter window judges liveness and the \
                     minimum's convergence before they can happen",
                    self.converge_within_ms
                ),
            );
        }
        if self.duration_ms == 0 {
            return fail("duration_ms", "a run lasts at least 1 ms".into());
        }
        if self.metrics.flush_interval_ms > self.duration_ms
            && self.metrics.flush_interval_ms == default_flush_interval_ms()
        {
            // The interval is the default (most files do not set it): blame the short run,
            // which the file does say.
            return fail(
                "duration_ms",
                format!(
                    "{} is shorter than metrics.flush_interval_ms ({}, its default): lengthen \
                     the run or set a shorter metrics.flush_interval_ms",
                    self.duration_ms, self.metrics.flush_interval_ms
                ),
            );
        }
        if !(FLUSH_INTERVAL_MS_MIN..=self.duration_ms.max(FLUSH_INTERVAL_MS_MIN))
            .contains(&self.metrics.flush_interval_ms)
        {
            return fail(
                "metrics.flush_interval_ms",
                format!(
                    "{} is not in {FLUSH_INTERVAL_MS_MIN}..=duration_ms ({})",
                    self.metrics.flush_interval_ms, self.duration_ms
                ),
            );
        }
        let hosts = self.hosts();
        if self.topology.sync_clients > 0 && self.topology.readers == 0 {
            return fail(
                "topology.sync_clients",
                "sync clients need at least one reader".into(),
            );
        }
        if self.topology.federation_senders > self.topology.readers {
            return fail(
                "topology.federation_senders",
                format!(
                    "{} federation senders, but only {} readers run them (r1..rN)",
                    self.topology.federation_senders, self.topology.readers
                ),
            );
        }
        for host in &self.topology.late_hosts {
            if !hosts.contains(host)
                || ["db", "redis", METRICS_STORE_HOST, METRICS_ENDPOINT_HOST]
                    .contains(&host.as_str())
            {
                return fail(
                    "topology.late_hosts",
                    format!("{host:?} is not a writer, reader or client of the topology"),
                );
            }
        }
        if let Some(random) = &self.random_faults {
            for (field, range) in [
                ("random_faults.every_ms", random.every_ms),
                ("random_faults.lasting_ms", random.lasting_ms),
            ] {
                if range.min > range.max || range.min == 0 {
                    return fail(
                        field,
                        format!("{}..{} is not a positive range", range.min, range.max),
                    );
                }
            }
            if random.kinds.is_empty() {
                return fail("random_faults.kinds", "name at least one kind".into());
            }
        }
        if self.transport == Transport::Tcp && self.topology.writers > 1 {
            return fail(
                "topology.writers",
                format!(
                    "{} writers over transport = \"tcp\": {TCP_ONE_WRITER}",
                    self.topology.writers
                ),
            );
        }
        for (index, fault) in self.faults.iter().enumerate() {
            if let (Transport::Tcp, FaultKind::Reconfigure { writers }) =
                (self.transport, &fault.kind)
            {
                // Only the topology's one writer may be configured: any other host named
                // here would become a second writer. (A name that is no host at all is
                // reported as such below.)
                let writer = self.writer_names();
                if let Some(other) = writers
                    .iter()
                    .find(|w| hosts.contains(w) && !writer.contains(w))
                {
                    return fail(
                        &format!("fault[{index}].writers"),
                        format!(
                            "{other:?} would be a second writer over transport = \"tcp\": \
                             {TCP_ONE_WRITER}"
                        ),
                    );
                }
            }
            if fault.at_ms > self.duration_ms {
                return fail(
                    &format!("fault[{index}].at_ms"),
                    format!(
                        "{} is after the end of the run ({} ms)",
                        fault.at_ms, self.duration_ms
                    ),
                );
            }
            let named: Vec<(&str, &String)> = match &fault.kind {
                FaultKind::Partition { hosts } => vec![("hosts", &hosts[0]), ("hosts", &hosts[1])],
                FaultKind::PartitionOneway { from, to } => vec![("from", from), ("to", to)],
                FaultKind::Crash { host }
                | FaultKind::Restart { host }
                | FaultKind::Quiesce { host }
                | FaultKind::SlowReader { host, .. }
                | FaultKind::Busy { host, .. } => vec![("host", host)],
                FaultKind::Reconfigure { writers } => {
                    writers.iter().map(|w| ("writers", w)).collect()
                }
                FaultKind::MessageLoss { rate } => {
                    if !(0.0..=1.0).contains(rate) {
                        return fail(
                            &format!("fault[{index}].rate"),
                            format!("{rate} is not a probability"),
                        );
                    }
                    vec![]
                }
                FaultKind::Latency { latency_ms, host } => {
                    if latency_ms.min > latency_ms.max {
                        return fail(
                            &format!("fault[{index}].latency_ms"),
                            format!("min {} is above max {}", latency_ms.min, latency_ms.max),
                        );
                    }
                    host.iter().map(|h| ("host", h)).collect()
                }
                FaultKind::FutureToken { client, ahead_by } => {
                    if *ahead_by <= 0 {
                        return fail(
                            &format!("fault[{index}].ahead_by"),
                            format!("{ahead_by} is not a positive distance"),
                        );
                    }
                    if !self.clients().iter().any(|(c, _)| c == client) {
                        return fail(
                            &format!("fault[{index}].client"),
                            format!("no sync client {client:?}"),
                        );
                    }
                    vec![("client", client)]
                }
                FaultKind::Heal {} => vec![],
            };
            for (key, host) in named {
                if !hosts.contains(host) {
                    return fail(
                        &format!("fault[{index}].{key}"),
                        format!("no host {host:?}; the topology has {}", hosts.join(", ")),
                    );
                }
            }
        }
        self.check_faults_act()
    }
}

/// Every `{ min, max }` table below `table` becomes an inline table.
fn inline_ranges(table: &mut toml_edit::Table) {
    for (mut key, item) in table.iter_mut() {
        if let Some(sub) = item.as_table_mut() {
            if sub.len() == 2 && sub.contains_key("min") && sub.contains_key("max") {
                let mut inline = sub.clone().into_inline_table();
                inline.fmt();
                *item = toml_edit::Item::Value(toml_edit::Value::InlineTable(inline));
                key.leaf_decor_mut().set_suffix(" ");
            } else {
                inline_ranges(sub);
            }
        } else if let Some(array) = item.as_array_of_tables_mut() {
            for sub in array.iter_mut() {
                inline_ranges(sub);
            }
        }
    }
}

/// The dotted path of the table `offset` is in (`topology`, `fault[2]`), from the last table
/// header at or before its line; `None` for the top level.
fn table_at(text: &str, offset: usize) -> Option<String> {
    let line_end = text[offset.min(text.len())..]
        .find('\n')
        .map_or(text.len(), |i| offset + i);
    let headers: Vec<&str> = text[..line_end]
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with('['))
        .collect();
    let last = headers.last()?;
    if let Some(name) = last.strip_prefix("[[").and_then(|l| l.strip_suffix("]]")) {
        let index = headers.iter().filter(|h| **h == *last).count() - 1;
        Some(format!("{}[{index}]", name.trim()))
    } else {
        let name = last.strip_prefix('[')?.strip_suffix(']')?;
        Some(name.trim().to_owned())
    }
}

/// The inline tables open at `offset` on its line (their keys, outermost first) and the key
/// whose value starts there, if any: `latency_ms = { min = 1, max = ` gives
/// (`[latency_ms]`, `max`).
fn inline_path(text: &str, offset: usize) -> (Vec<String>, Option<String>) {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let mut open: Vec<String> = Vec::new();
    let mut key: Option<String> = None;
    let mut word = String::new();
    let mut in_string = false;
    for c in text[line_start..offset].chars() {
        if in_string {
            if c == '"' {
                in_string = false;
            } else {
                word.push(c);
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '=' => key = Some(std::mem::take(&mut word).trim().to_owned()),
            '{' => {
                open.extend(key.take());
                word.clear();
            }
            '}' => {
                open.pop();
                word.clear();
            }
            ',' => {
                key = None;
                word.clear();
            }
            _ => word.push(c),
        }
    }
    (open, key.filter(|key| !key.is_empty()))
}

/// The dotted key whose value starts at `offset` (within inline tables, their keys too).
fn key_before(text: &str, offset: usize) -> Option<String> {
    let (mut path, key) = inline_path(text, offset);
    path.push(key?);
    Some(path.join("."))
}

/// The key of the line, from `offset` to the next table header, whose value is `value`
/// (quoted or bare).
fn key_holding(text: &str, offset: usize, value: &str) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    text[line_start..]
        .lines()
        .enumerate()
        .take_while(|(index, line)| *index == 0 || !line.trim_start().starts_with('['))
        .find_map(|(_, line)| {
            let (key, rest) = line.split_once('=')?;
            let rest = rest.trim();
            (rest == value || rest.trim_matches('"') == value).then(|| key.trim().to_owned())
        })
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// Where a dotted field (`network.latency_ms`, `fault[2].host`) is written in the file.
fn locate(text: &str, field: &str) -> (usize, usize) {
    // Find the table header, then the key below it; good enough for the shapes we accept.
    let (table, key) = field.rsplit_once('.').unwrap_or(("", field));
    let mut search_from = 0;
    let array_table = ["fault"]
        .into_iter()
        .find_map(|name| Some((name, table.strip_prefix(name)?.strip_prefix('[')?)));
    if let Some((name, rest)) = array_table {
        let index: usize = rest.trim_end_matches(']').parse().unwrap_or(0);
        let header = format!("[[{name}]]");
        let headers: Vec<usize> = text.match_indices(&header).map(|(i, _)| i).collect();
        search_from = headers.get(index).copied().unwrap_or(0);
    } else if !table.is_empty() {
        search_from = text.find(&format!("[{table}]")).unwrap_or(0);
    }
    let found = text[search_from..]
        .match_indices(key)
        .map(|(i, _)| search_from + i)
        .find(|&i| text[..i].ends_with('\n') || text[..i].ends_with(' ') || i == 0);
    found.map_or((0, 0), |offset| line_column(text, offset))
}

mod reach;
pub use reach::Role;

#[cfg(test)]
mod tests;

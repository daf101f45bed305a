//! The history of a run: every observable act, stamped with simulated time, in the order it
//! happened. Hosts append to it; checks judge it; `--trace` writes it as JSON lines.
//!
//! Events are a typed serde enum (never strings to re-parse), so a trace is byte-identical for
//! the same scenario, seed and switches.

use serde::{Deserialize, Serialize};
use streamsim_models::time::SimInstant;
use streamsim_models::token::MultiWriterToken;

/// One observable act.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A writer's id generator handed out stream ids.
    Allocated { host: String, ids: Vec<i64> },
    /// A writer's rows committed: `(stream id, event id)` pairs.
    Committed {
        host: String,
        rows: Vec<(i64, String)>,
    },
    /// A writer's sequence fetch for a batch (`nextval` through `_load_next_mult_id`) came
    /// back, with its ids or (empty) failed: from `requested_at` until now its guard was in
    /// the generator's `_in_flight_fetches`, which holds the writer's own position back
    /// (what finding F3 needs).
    SequenceFetched {
        host: String,
        requested_at: SimInstant,
        ids: Vec<i64>,
    },
    /// A batch failed after allocation: its ids are permanent gaps.
    Aborted { host: String, ids: Vec<i64> },
    /// A replication command went out (its wire line, without the newline).
    Announced { host: String, line: String },
    /// A reader handed an event to its notifier; `caught_up` when a POSITION's catch-up read
    /// it from the database rather than RDATA carrying it.
    Delivered {
        reader: String,
        writer: String,
        stream_id: i64,
        event_id: String,
        #[serde(default, skip_serializing_if = "is_false")]
        caught_up: bool,
    },
    /// A reader handed out a token (to its notifier or a sync client).
    TokenHandedOut {
        reader: String,
        to: String,
        token: MultiWriterToken,
    },
    /// A sync client got one page: the events in `(since, next_batch]`. It asked for it at
    /// `requested_at`; `limited` when the timeline limit cut it short, `timed_out` when the
    /// server gave up waiting for `since`.
    SyncPage {
        client: String,
        reader: String,
        requested_at: SimInstant,
        since: Option<MultiWriterToken>,
        next_batch: MultiWriterToken,
        events: Vec<(String, i64, String)>,
        #[serde(default, skip_serializing_if = "is_false")]
        limited: bool,
        #[serde(default, skip_serializing_if = "is_false")]
        timed_out: bool,
    },
    /// A sync client's next /sync presents `token`, a token from the future (a fault).
    FutureToken {
        client: String,
        reader: String,
        token: MultiWriterToken,
    },
    /// A client's send of `event_id` through `host` was answered: `persisted_at` is the
    /// writer and position the host learned it was persisted at (if it did), `outcome` how
    /// the host's wait for that position ended (`local`, `reached`, `timed_out`) or the error
    /// it answered with.
    SendAnswered {
        client: String,
        host: String,
        event_id: String,
        persisted_at: Option<(String, i64)>,
        outcome: String,
    },
    /// A reader found a gap from a POSITION's prev token and fetched `(from, upto]` of `writer`.
    GapFilled {
        reader: String,
        writer: String,
        from: i64,
        upto: i64,
    },
    /// A host (re)started; `ids_in_flight` of the crashed incarnation were never finished.
    Restarted {
        host: String,
        ids_in_flight: Vec<i64>,
    },
    /// A process started (first start or restart) with its generator at `token`: a reader's
    /// notifier starts there, so what was committed at or below it is not re-announced.
    Started {
        host: String,
        token: MultiWriterToken,
    },
    /// A reader discarded an RDATA row, as already seen (`cmd.token <= current_token`: when
    /// `persisted_upto` had already passed it, its notifier never announces it, findings F1
    /// and F2) or because the stream was not connected (finding F4 when the row's writer's
    /// later RDATA is applied before its `POSITION`).
    RdataDiscarded {
        reader: String,
        writer: String,
        token: i64,
        /// Discarded because the events stream was not connected on this connection (no
        /// `POSITION` processed since it was made: `_process_rdata`'s
        /// `_streams_by_connection` check), not as already seen; the row is left to the
        /// next `POSITION`'s catch-up.
        #[serde(default, skip_serializing_if = "is_false")]
        not_connected: bool,
    },
    /// The first `POSITION` a reader processed on a (new) connection connected the events
    /// stream (`_process_position` adds it to `_streams_by_connection[conn]`): RDATA is
    /// applied from here on. `writer`'s `POSITION prev new` did it; it may have been sent long
    /// before (held by a partition).
    StreamConnected {
        reader: String,
        writer: String,
        prev: i64,
        new: i64,
    },
    /// A replication connection was (re)established after a loss.
    Reconnected { host: String, peer: String },
    /// A replication connection ended, seen from `host`: why (`ping timeout`, `failed to
    /// keep up`, `closed by peer`, ...).
    Disconnected {
        host: String,
        peer: String,
        reason: String,
    },
    /// A federation sender read `(from, upto]` and sent `events` (stream id, event id) from
    /// it; it stores `upto` as its position next (`_process_event_queue_loop`).
    FederationSent {
        host: String,
        from: i64,
        upto: i64,
        events: Vec<(i64, String)>,
    },
    /// A fault from the schedule or the seed.
    Fault { description: String },
    /// The last fault healed: liveness is measured from here.
    Healed,
    /// At the run's end, the room token a running reader's id generator had reached (its
    /// notifier may still be behind it: it announces only when something newer is released).
    PositionAtEnd {
        reader: String,
        token: MultiWriterToken,
    },
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// An event and when it happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub at: SimInstant,
    #[serde(flatten)]
    pub event: Event,
}

/// Records per chunk of a history.
const CHUNK: usize = 8192;

/// The whole history of one run, in chunks of [`CHUNK`] records: a history grows to millions
/// of records in an hour's soak, and one vector would copy them at every doubling and leave
/// up to half its capacity unused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    chunks: Vec<Vec<Record>>,
    len: usize,
}

impl History {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an event; time never runs backwards within a history.
    pub fn record(&mut self, at: SimInstant, event: Event) {
        self.push(Record { at, event });
    }

    /// Appends a record; time never runs backwards within a history.
    pub fn push(&mut self, record: Record) {
        if let Some(last) = self.last() {
            assert!(
                last.at <= record.at,
                "history time went backwards: {} after {}",
                record.at,
                last.at
            );
        }
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < CHUNK => chunk.push(record),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(record);
                self.chunks.push(chunk);
            }
        }
        self.len += 1;
    }

    /// Every record, in the order they happened.
    pub fn records(&self) -> impl DoubleEndedIterator<Item = &Record> + Clone + '_ {
        self.chunks.iter().flatten()
    }

    /// How many records the history holds.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The latest record.
    pub fn last(&self) -> Option<&Record> {
        self.chunks.last().and_then(|chunk| chunk.last())
    }

    /// The history as JSON lines, one record per line.
    pub fn to_json_lines(&self) -> String {
        let mut out = Vec::new();
        self.write_json_lines(&mut out)
            .expect("writing to memory cannot fail");
        String::from_utf8(out).expect("JSON is UTF-8")
    }

    /// Writes the history as JSON lines to `out`, a record at a time (an hour's trace is
    /// hundreds of megabytes). Errors: the writer's.
    pub fn write_json_lines(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        for record in self.records() {
            serde_json::to_writer(&mut *out, record)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    }
}

/// Somewhere records go as they happen, besides the kept history: the online checker
/// (`checks::online`), a trace file written as the run goes ([`TraceWriter`]).
pub trait RecordSink {
    /// Takes one record, in history order.
    fn record(&mut self, record: &Record);
}

/// Writes each record as a JSON line as the run goes (`run --trace`): the same bytes as
/// [`History::write_json_lines`], without keeping the history.
pub struct TraceWriter<W: std::io::Write> {
    out: W,
    /// The first write error; nothing more is written after it.
    error: Option<std::io::Error>,
}

impl<W: std::io::Write> TraceWriter<W> {
    pub fn new(out: W) -> Self {
        Self { out, error: None }
    }

    /// Flushes and hands back the writer. Errors: the first write's or the flush's.
    pub fn finish(mut self) -> std::io::Result<W> {
        if let Some(error) = self.error.take() {
            return Err(error);
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: std::io::Write> RecordSink for TraceWriter<W> {
    fn record(&mut self, record: &Record) {
        if self.error.is_some() {
            return;
        }
        let written = serde_json::to_writer(&mut self.out, record)
            .map_err(std::io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"));
        if let Err(error) = written {
            self.error = Some(error);
        }
    }
}

//! streamsim-models: the system under test, as plain deterministic state machines.
//!
//! Nothing here does I/O, reads a clock, spawns a task or keeps global state: time and messages
//! come in as arguments, and everything a model wants done comes back as a value. That keeps
//! the models fast, unit-testable, and usable both under turmoil and in exhaustive exploration.
//!
//! Code map:
//! - [`time`]: simulated time as a value.
//! - [`limits`]: every limit, with its unit and the reason for its value.
//! - [`db`]: the database (sequence, stream table, `stream_positions`, crash semantics).
//! - [`token`]: stream positions, the multi-writer token and its text forms.
//! - [`bugs`] / [`fixes`]: historical-bug switches and the proposed fixes of F1-F5.
//! - [`idgen`]: Synapse's `MultiWriterIdGenerator`.
//! - [`notifier`]: room-event release, listeners, `wait_for_stream_position`, /sync `since` waits.
//! - [`fedsender`]: the federation sender's event loop, a background consumer of the minimum.
//! - [`persister`]: an event persister; batches commit out of order.
//! - [`replication`]: the writer's announcer and the reader's follower of one stream.
//! - [`changecache`]: `StreamChangeCache`, the per-room `_events_stream_cache`.
//! - [`roomsync`]: the room timelines of an initial or incremental /sync.
//! - [`opscript`]: the ID-generator op-script language run against [`idgen`] and [`db`].
//! - [`wire`]: the replication line protocol codec.
//! - [`connection`]: one direct-TCP replication connection (protocol.py's state machine).
//! - [`metrics`]: Synapse's metrics and background processes, AWX-style aggregation.

pub mod bugs;
pub mod changecache;
pub mod connection;
pub mod db;
pub mod fedsender;
pub mod fixes;
pub mod idgen;
pub mod limits;
pub mod metrics;
pub mod notifier;
pub mod opscript;
pub mod persister;
pub mod replication;
pub mod roomsync;
pub mod time;
pub mod token;
pub mod wire;

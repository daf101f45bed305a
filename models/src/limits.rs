//! Every limit of the modelled system, named with its unit, with the reason for its value.
//!
//! Values copied from Synapse 1.163.2 say where they come from; changing one changes what the
//! model is a model of, so do it only together with the research notes.

/// Longest replication line, in bytes, not counting the `\n`. Twisted's `LineOnlyReceiver`
/// default `MAX_LENGTH`, which Synapse's `BaseReplicationStreamProtocol` inherits: a longer
/// inbound line is answered with `ERROR Line length exceeded`, a longer outbound command raises.
pub const LINE_BYTES_MAX: usize = 16384;

/// Interval between PING commands on a direct TCP replication connection, in milliseconds
/// (`PING_TIME` in synapse/replication/tcp/protocol.py).
pub const PING_INTERVAL_MS: u64 = 5_000;

/// Time without any valid inbound command after which a connection whose peer has pinged is
/// closed with `ERROR ping timeout`, in milliseconds (`PING_TIMEOUT_MS` = 5 × `PING_TIME`).
pub const PING_TIMEOUT_MS: u64 = 25_000;

/// Commands queued while a connection is connecting or paused before it is closed with
/// `ERROR Failed to keep up` (`max_line_buffer` in protocol.py).
pub const PENDING_COMMANDS_MAX: usize = 10_000;

/// Largest number of decimal digits CPython 3.11 converts between `int` and `str`
/// (`sys.int_info.default_max_str_digits`). Synapse's `int(token)` and its JSON decoder raise
/// `ValueError` above it, and so must the codec to stay byte-compatible.
pub const PYTHON_INT_DIGITS_MAX: usize = 4300;

/// Largest number of ids one op-script `alloc` may ask for. Synapse has no such limit, but a
/// script asking for millions would only exhaust memory; real persisters allocate one id per
/// event of a batch (at most a few hundred).
pub const ALLOC_IDS_MAX: u64 = 100_000;

/// Largest number of rows one op-script `preload` may insert, for the same reason.
pub const PRELOAD_ROWS_MAX: u64 = 1_000_000;

/// Nesting depth the JSON reader accepts before reporting an error instead of recursing.
/// CPython's C scanner recurses until `RecursionError` (about 1000 levels by default); a line
/// of at most 16384 bytes can nest at most 8192 levels, so a bound keeps the reader's stack
/// safe without rejecting anything Synapse accepts in practice.
pub const JSON_DEPTH_MAX: usize = 900;

/// How long `wait_for_stream_position` waits for a writer's position before giving up silently,
/// in milliseconds (synapse/replication/tcp/client.py).
pub const WAIT_FOR_STREAM_POSITION_TIMEOUT_MS: u64 = 5_000;

/// How often `/sync` re-checks whether its `since` token has become current, in milliseconds
/// (`wait_for_stream_token` in synapse/notifier.py).
pub const SYNC_TOKEN_POLL_INTERVAL_MS: u64 = 500;

/// How long `/sync` waits for a `since` token from the future before answering with an empty
/// result, in milliseconds (`wait_for_stream_token`).
pub const SYNC_TOKEN_WAIT_MAX_MS: u64 = 10_000;

/// Interval of the replication streamer's timer on a process writing the events stream, in
/// milliseconds: it is what makes an idle writer announce its position (fix of bug B4).
pub const STREAMER_IDLE_POKE_INTERVAL_MS: u64 = 1_000;

/// How long the consumer of a stream's inbound replication queue waits for more commands
/// after draining it before its background process ends, in milliseconds
/// (`BackgroundQueue(timeout_ms=1000)`, synapse/util/background_queue.py).
pub const REPLICATION_QUEUE_IDLE_MS: u64 = 1_000;

/// Rows one catch-up fetch returns before it says `limited` (Synapse's events stream asks for
/// 100 and halves it for event rows).
pub const UPDATES_FETCH_ROWS_MAX: usize = 50;

/// Bytes a connection's transport may hold unsent before it asks its producer to pause
/// (`pauseProducing`): Twisted's `FileDescriptor.bufferSize`, 2**16. Above it Synapse queues
/// commands in the protocol instead, up to [`PENDING_COMMANDS_MAX`].
pub const TRANSPORT_BUFFER_BYTES: usize = 65_536;

/// First delay before reconnecting a lost replication connection, in milliseconds (Twisted's
/// `ReconnectingClientFactory.initialDelay` = 1.0 s).
pub const RECONNECT_DELAY_INITIAL_MS: u64 = 1_000;

/// Longest delay between reconnection attempts, in milliseconds (`SynapseRedisFactory.maxDelay`
/// = 5 s; the delay grows by Twisted's factor e from the initial delay).
pub const RECONNECT_DELAY_MAX_MS: u64 = 5_000;

/// Interval of the Redis client's PING, in milliseconds (`_send_ping`'s `looping_call` of
/// 30 s in synapse/replication/tcp/redis.py).
pub const REDIS_PING_INTERVAL_MS: u64 = 30_000;

/// How long the Redis client waits for any reply before dropping the connection, in
/// milliseconds (txredisapi's `replyTimeout=30`).
pub const REDIS_REPLY_TIMEOUT_MS: u64 = 30_000;

const _: () = assert!(PING_INTERVAL_MS < PING_TIMEOUT_MS);
const _: () = assert!(PYTHON_INT_DIGITS_MAX < LINE_BYTES_MAX);

"""Proposed fixes for findings F1-F4 (tools/synapse/FINDINGS.md), as monkeypatches of
Synapse 1.163.2.

Each fix is one function that patches Synapse's classes in place. The patched functions are
copies of 1.163.2's, with the changed lines marked `# FIX Fn:`; everything else is
Synapse's code as it is. `apply_fixes(names)` applies them; it must run before any
homeserver is built (the oracle's instrumentation binds the handler's methods when a process
starts), and in every Python process that builds homeservers. All Synapse processes of an
oracle run live in one Python process, so patching the classes patches main, the writers
and the sync workers alike. Applying a fix twice is a no-op.

    from fixes import apply_fixes
    apply_fixes(["f1", "f3"])      # or ["all"]

tools/synapse/FIXES.md states each rule change for a reader of the Rust model.
"""

from __future__ import annotations

import contextvars
import heapq
import logging
from typing import Any, Callable, Iterable, cast

from synapse.logging import issue9533_logger
from synapse.replication.tcp.client import ReplicationDataHandler
from synapse.replication.tcp.commands import PositionCommand, RdataCommand
from synapse.replication.tcp.handler import (
    STREAMS_MAP,
    ReplicationCommandHandler,
    _batch_updates,
)
from synapse.replication.tcp.handler import logger as handler_logger
from synapse.replication.tcp.protocol import IReplicationConnection
from synapse.storage.database import LoggingDatabaseConnection, make_in_list_sql_clause
from synapse.storage.engines import PostgresEngine
from synapse.storage.util.id_generators import MultiWriterIdGenerator

FIX_NAMES = ("f1", "f2", "f3", "f4", "f5")

_applied: set[str] = set()


def resolve_fix_names(names: Iterable[str]) -> list[str]:
    """`all` -> every fix; the result is in F1..F4 order, without repeats. Raises
    ValueError on an unknown name."""
    wanted: set[str] = set()
    for name in names:
        if name == "all":
            wanted.update(FIX_NAMES)
        elif name in FIX_NAMES:
            wanted.add(name)
        else:
            raise ValueError("unknown fix %r (known: %s, all)" % (name, ", ".join(FIX_NAMES)))
    return [name for name in FIX_NAMES if name in wanted]


def apply_fixes(names: Iterable[str]) -> list[str]:
    """Applies the named fixes (see `resolve_fix_names`); returns the names applied."""
    resolved = resolve_fix_names(names)
    for name in resolved:
        if name not in _applied:
            _FIXES[name]()
            _applied.add(name)
    return resolved


# ---- F1 ------------------------------------------------------------------------------------


def fix_f1_position_token_is_not_a_persisted_id() -> None:
    """F1: a restarted idle writer's position covers another writer's event in flight.

    F1's fix is F2's rule (`fix_f2_position_token_is_not_a_persisted_id`): a POSITION's
    token moves its writer's position but is not added to `_known_persisted_positions`.
    The restarted writer still claims the sequence's `last_value` at start-up
    (`_load_current_ids`, id_generators.py lines 418-428, PR #17309, unchanged), and every
    process records it as that writer's position; but `persisted_upto` is the minimum over
    the writers' positions plus gapless runs of ids received, so it stays below the other
    writer's in-flight id X until X's RDATA arrives, and readers hand out a vector token
    (`m41~worker2.42`) instead of one covering X.

    An earlier proposal changed the start-up claim instead (own position = max(stored row,
    highest committed id)). It was withdrawn: it re-opens what #17309 fixed. A writer whose
    last ids were cancelled announced them (idle bump) without writing `stream_positions`;
    restarted, it claims the lower committed id, a restarted reader loads that, and a client
    holding the announced token waits 10.5 s and gets an empty /sync on every request until
    some writer writes again (FIXES.md, "F1", the model's b7 shape). It also left the
    committed-but-unpublished route open, which only the reader rule closes.
    """
    fix_f2_position_token_is_not_a_persisted_id()


# ---- F2 ------------------------------------------------------------------------------------

# True while a process handles a POSITION (ReplicationDataHandler.on_position); a context
# variable, so only the coroutine handling that POSITION sees it.
_ADVANCING_FROM_POSITION: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "streamsim_advancing_from_position", default=False
)


def fix_f2_position_token_is_not_a_persisted_id() -> None:
    """F2: a reader that re-subscribes can skip an event when the writers' POSITION answers
    race.

    Changes `MultiWriterIdGenerator.advance` (storage/util/id_generators.py, line 787 of
    1.163.2) when it is called for a POSITION, i.e. from `ReplicationDataHandler.on_position`
    (replication/tcp/client.py, lines 347-354), which now marks that call.

    The change: for a POSITION, `advance(w, T)` still records T as writer w's position
    (and as seen allocated), but no longer adds T to `_known_persisted_positions`: the
    skip-forward of `persisted_upto` only ever steps over ids this process knows are
    persisted and has received (its own finished ids, RDATA rows, rows fetched by a
    POSITION catch-up), never over a POSITION's token.

    Why it is correct: `POSITION w prev T` says "w has written everything it will ever
    write at or below T" (after the catch-up, the reader has all of w's rows <= T). It says
    nothing about T itself: an idle writer's T is the highest id it has *seen* (another
    writer's row, which this reader may not have received: F2, after a re-subscribe), and a
    restarted writer's T may be an id still in flight on another writer (F1). Adding T as a
    persisted id let `persisted_upto` step onto a row the reader had not received; the
    row's own writer's POSITION (or RDATA) was then judged redundant/already seen, the row
    was never fetched, never announced, and its room never marked in the stream-change
    cache. Without it, `persisted_upto` waits for that row (it is the minimum over writers,
    plus gapless runs of received ids), so no /sync can return a token covering it before it
    is fetched, and the row's writer's POSITION is not redundant and fetches it. A POSITION
    whose token is a row already received changes nothing (the row was added when received);
    the only progress lost is stepping over a dead id (allocated, never written) named only
    by a POSITION, which the writers' positions then cover one idle-bump later.
    """
    orig_on_position = ReplicationDataHandler.on_position
    if getattr(orig_on_position, "_streamsim_fix", None) == "f2":
        return

    def advance(self: MultiWriterIdGenerator, instance_name: str, new_id: int) -> None:
        new_id *= self._return_factor

        with self._lock:
            self._current_positions[instance_name] = max(
                new_id, self._current_positions.get(instance_name, 0)
            )

            self._max_seen_allocated_stream_id = max(
                self._max_seen_allocated_stream_id, new_id
            )

            # FIX F2: a POSITION's token bounds its writer; it is not a persisted id. Adding
            # FIX F2: persisted_upto (already known persisted) reruns the same update.
            self._add_persisted_position(
                self._persisted_upto_position  # FIX F2
                if _ADVANCING_FROM_POSITION.get()  # FIX F2
                else new_id
            )

    async def on_position(
        self: ReplicationDataHandler, stream_name: str, instance_name: str, token: int
    ) -> None:
        reset = _ADVANCING_FROM_POSITION.set(True)  # FIX F2
        try:  # FIX F2
            await self.on_rdata(stream_name, instance_name, token, [])
        finally:  # FIX F2
            _ADVANCING_FROM_POSITION.reset(reset)  # FIX F2

        # We poke the generic "replication" notifier to wake anything up that
        # may be streaming.
        self.notifier.notify_replication()

    on_position._streamsim_fix = "f2"  # type: ignore[attr-defined]
    MultiWriterIdGenerator.advance = advance  # type: ignore[method-assign]
    ReplicationDataHandler.on_position = on_position  # type: ignore[method-assign]


# ---- F3 ------------------------------------------------------------------------------------


def fix_f3_local_position_stays_below_own_unabsorbed_rows() -> None:
    """F3: a writer announces POSITION over its own row while one of its sequence fetches is
    held before nextval.

    Changes `MultiWriterIdGenerator._add_persisted_position` (storage/util/id_generators.py,
    lines 837-848 of 1.163.2: the two raises of `_max_position_of_local_instance`).

    The change: neither raise (to `_persisted_upto_position`, and the idle bump to
    `_max_seen_allocated_stream_id`) may take `_max_position_of_local_instance` to or past
    one of the writer's own finished ids that `_current_positions[me]` has not absorbed yet
    (`_finished_ids`, the ids finished above a lower unfinished or in-flight one).

    Why it is correct: the streamer (`Stream.get_updates`, replication/tcp/streams/_base.py)
    publishes `POSITION me last current` *without reading rows* when `last_token >=
    minimal_local_current_token()` (`_current_positions[me]`), i.e. it relies on: no own
    row lies in (`_current_positions[me]`, `_max_position_of_local_instance`]. Readers that
    have `me` at `last` then fetch nothing. The raise to `persisted_upto` broke that: with a
    fetch in flight, B (41) finishes, `_current_positions[me]` must stay below the fetch's
    guard (40), B stays in `_finished_ids`, and the skip-forward takes `persisted_upto` to
    41; the next call raised the local position to 41 over B. The cap restores the
    invariant for every way an own row can be left above `_current_positions[me]`: a fetch
    in flight (F3), a fetch that completed but whose ids are not finished yet (B stays
    unabsorbed until the next `_mark_ids_as_finished`, so guarding only on
    `_in_flight_fetches`, or capping at the lowest in-flight id, is not enough), and a fetch
    that failed (then the idle bump, guarded only by "nothing in flight", would jump over
    B). Once B is absorbed (`_mark_ids_as_finished`) the cap is gone and the writer
    publishes B as RDATA (`last_token < minimal_local`).

    Cost: while an own row waits behind a lower unfinished id or a fetch, this writer's
    announced position does not move; readers' `persisted_upto` (the minimum over writers)
    may wait as long, at most the time it takes that fetch or persist to finish. When
    `_finished_ids` is empty, nothing changes.
    """

    def _add_persisted_position(self: MultiWriterIdGenerator, new_id: int) -> None:
        """Record that we have persisted a position.

        This is used to keep the `_current_positions` up to date.
        """

        # We require that the lock is locked by caller
        assert self._lock.locked()

        heapq.heappush(self._known_persisted_positions, new_id)

        # We move the current min position up if the minimum current positions
        # of all instances is higher (since by definition all positions less
        # that that have been persisted).
        #
        # If we are one of several writers, then we don't need to factor our own
        # `_current_position` into `_persisted_upto_position` unless we have unfinished
        # writes (since we know that any future write that happens locally will have
        # a higher stream ID than any of the other writers' current positions). In other
        # words, when we have no outstanding writes, then the new `_persisted_upto_position`
        # can be the minimum of all *other* writers' current positions,
        #
        our_current_position = self._current_positions.get(self._instance_name, 0)
        min_curr = min(
            (
                token
                for name, token in self._current_positions.items()
                if name != self._instance_name
            ),
            default=our_current_position,
        )
        if our_current_position and (self._unfinished_ids or self._in_flight_fetches):
            min_curr = min(min_curr, our_current_position)

        self._persisted_upto_position = max(min_curr, self._persisted_upto_position)

        # FIX F3: our local position must stay below our own finished ids that
        # FIX F3: `_current_positions` has not absorbed yet (the streamer would otherwise
        # FIX F3: send POSITION over them instead of their RDATA).
        local_cap = (  # FIX F3
            min(self._finished_ids) - 1 if self._finished_ids else None  # FIX F3
        )  # FIX F3

        # Advance our local max position.
        self._max_position_of_local_instance = max(
            self._max_position_of_local_instance,
            _capped(self._persisted_upto_position, local_cap),  # FIX F3
        )

        if not self._unfinished_ids and not self._in_flight_fetches:
            # If we don't have anything in flight, it's safe to advance to the
            # max seen stream ID.
            self._max_position_of_local_instance = max(
                _capped(self._max_seen_allocated_stream_id, local_cap),  # FIX F3
                self._max_position_of_local_instance,
            )

        # We now iterate through the seen positions, discarding those that are
        # less than the current min positions, and incrementing the min position
        # if its exactly one greater.
        #
        # This is also where we discard items from `_known_persisted_positions`
        # (to ensure the list doesn't infinitely grow).
        while self._known_persisted_positions:
            if self._known_persisted_positions[0] <= self._persisted_upto_position:
                heapq.heappop(self._known_persisted_positions)
            elif (
                self._known_persisted_positions[0] == self._persisted_upto_position + 1
            ):
                heapq.heappop(self._known_persisted_positions)
                self._persisted_upto_position += 1
            else:
                # There was a gap in seen positions, so there is nothing more to
                # do.
                break

        self._report_current_position()

        # Hacky debug logging to attempt to trace https://github.com/element-hq/synapse/issues/19795.
        # If this is the to-device stream, and we are a writer for that stream, log some stats
        if (
            issue9533_logger.isEnabledFor(logging.DEBUG)
            and our_current_position > 0
            and self._stream_name == "to_device"
        ):
            issue9533_logger.debug(
                "stream_id=%i now persisted for stream=%s; _current_positions=%s _unfinished_ids=%s, _known_persisted_positions=%s _persisted_upto_position=%i min_curr=%i",
                new_id,
                self._stream_name,
                self._current_positions,
                self._unfinished_ids,
                self._known_persisted_positions,
                self._persisted_upto_position,
                min_curr,
            )

    MultiWriterIdGenerator._add_persisted_position = _add_persisted_position  # type: ignore[method-assign]


def _capped(value: int, cap: int | None) -> int:
    """`value`, but at most `cap` when there is one (F3)."""
    return value if cap is None else min(value, cap)


# ---- F4 ------------------------------------------------------------------------------------


def fix_f4_connected_per_writer() -> None:
    """F4: a re-subscribed reader applies a writer's RDATA before that writer's POSITION,
    over rows it missed.

    Changes `ReplicationCommandHandler` (replication/tcp/handler.py of 1.163.2):
    `__init__` (line 299, a second map beside `_streams_by_connection`), `_process_rdata`
    (lines 585-597, the "unconnected" test), `on_POSITION` and `_process_position` (lines
    653-665 and 676-687: a redundant POSITION also connects its writer; lines 690-691 and
    745: leaving and joining the connected set) and `lost_connection` (line 815); adds
    `is_writer_connected`.

    The change: "connected" is tracked per (connection, stream, writer instance), not only
    per (connection, stream). A writer counts as connected on a connection once a POSITION
    *of that writer* has been handled on it (its answer to REPLICATE, or its announcement at
    start-up): processed (caught up), or dropped as redundant (then the reader already has
    everything of that writer up to its token). Until then its RDATA is dropped, as 1.163.2
    drops RDATA of an unconnected stream ("we'll receive a POSITION soon and catch up
    then"). Redundancy itself is judged as before.

    Why it is correct: a reader that re-subscribes missed whatever each writer published
    while it was away; what a writer published is only caught up by *that writer's* POSITION
    (the catch-up fetches that writer's rows between the reader's position for it and the
    POSITION's token). 1.163.2 let the first POSITION of any writer connect the stream for
    all writers, so another writer's RDATA applied before its own POSITION moved the
    reader's position for it past the rows it had missed, and its POSITION then came too
    late and was redundant. Every writer answers REPLICATE with a POSITION for each of its
    streams whose token is at least that of every RDATA it published before (the streamer
    sends `last_token`), so a dropped RDATA is always covered by that writer's coming
    POSITION: either the POSITION is processed and fetches it, or it is redundant, which
    (with F2's rule) means the reader already has every row of that writer up to the token.

    Cost and visible change: after a (re)subscribe or a start, an RDATA that a writer
    publishes before its POSITION answer is read is fetched by that POSITION's catch-up (one
    query) instead of being applied from the command; the rows and what the notifier
    announces are the same, in the same step. In the corpus this shows (handled lines only:
    `RDATA ... unconnected` then `fetched ...`) in stale_rdata_after_catchup, where
    worker1's RDATA held on the bus reaches the re-subscribed sync1 after worker2's answer
    and before worker1's own.
    """
    if hasattr(ReplicationCommandHandler, "is_writer_connected"):
        return
    orig_init = ReplicationCommandHandler.__init__
    orig_lost_connection = ReplicationCommandHandler.lost_connection

    def __init__(self: ReplicationCommandHandler, hs: Any) -> None:
        orig_init(self, hs)
        # FIX F4: for each connection, the (stream, writer instance) pairs that have had a
        # FIX F4: POSITION of that writer processed on it.
        self._writers_by_connection: dict[  # FIX F4
            IReplicationConnection, set[tuple[str, str]]
        ] = {}

    def is_writer_connected(
        self: ReplicationCommandHandler,
        conn: IReplicationConnection,
        stream_name: str,
        instance_name: str,
    ) -> bool:
        """FIX F4: whether the stream is connected on this connection *and* this writer has
        been caught up on it (a POSITION of the writer processed since the connection began
        or since its last catch-up started)."""
        return self.is_stream_connected(conn, stream_name) and (
            stream_name,
            instance_name,
        ) in self._writers_by_connection.get(conn, ())

    async def _process_rdata(
        self: ReplicationCommandHandler,
        stream_name: str,
        conn: IReplicationConnection,
        cmd: RdataCommand,
    ) -> None:
        """Process an RDATA command

        Called after the command has been popped off the queue of inbound commands
        """
        try:
            row = STREAMS_MAP[stream_name].parse_row(cmd.row)
        except Exception as e:
            raise Exception(
                "Failed to parse RDATA: %r %r" % (stream_name, cmd.row)
            ) from e

        # make sure that we've processed a POSITION for this stream *on this
        # connection*. (A POSITION on another connection is no good, as there
        # is no guarantee that we have seen all the intermediate updates.)
        # FIX F4: ... and a POSITION of *this writer*: another writer's POSITION says nothing
        # FIX F4: of what this writer published while we were not listening.
        if not self.is_writer_connected(conn, stream_name, cmd.instance_name):  # FIX F4
            # Let's drop the row for now, on the assumption we'll receive a
            # `POSITION` soon and we'll catch up correctly then.
            handler_logger.debug(
                "Discarding RDATA for unconnected stream %s -> %s",
                stream_name,
                cmd.token,
            )
            return

        if cmd.token is None:
            # I.e. this is part of a batch of updates for this stream (in
            # which case batch until we get an update for the stream with a non
            # None token).
            self._pending_batches.setdefault(stream_name, []).append(row)
            return

        # Check if this is the last of a batch of updates
        rows = self._pending_batches.pop(stream_name, [])
        rows.append(row)

        stream = self._streams[stream_name]

        # Find where we previously streamed up to.
        current_token = stream.current_token(cmd.instance_name)

        # Discard this data if this token is earlier than the current
        # position. Note that streams can be reset (in which case you
        # expect an earlier token), but that must be preceded by a
        # POSITION command.
        if cmd.token <= current_token:
            handler_logger.debug(
                "Discarding RDATA from stream %s at position %s before previous position %s",
                stream_name,
                cmd.token,
                current_token,
            )
        else:
            await self.on_rdata(stream_name, cmd.instance_name, cmd.token, rows)

    def on_POSITION(
        self: ReplicationCommandHandler, conn: IReplicationConnection, cmd: PositionCommand
    ) -> None:
        if cmd.instance_name == self._instance_name:
            # Ignore POSITION that are just our own echoes
            return

        handler_logger.debug("Handling '%s %s'", cmd.NAME, cmd.to_line())

        # Check if we can early discard this position. We can only do so for
        # connected streams.
        stream = self._streams[cmd.stream_name]
        if stream.can_discard_position(
            cmd.instance_name, cmd.prev_token, cmd.new_token
        ) and self.is_stream_connected(conn, cmd.stream_name):
            # FIX F4: we already have everything of this writer up to its position: its
            # FIX F4: RDATA on this connection may be applied from now on.
            self._writers_by_connection.setdefault(conn, set()).add(  # FIX F4
                (cmd.stream_name, cmd.instance_name)  # FIX F4
            )
            handler_logger.debug(
                "Discarding redundant POSITION %s/%s %s %s",
                cmd.instance_name,
                cmd.stream_name,
                cmd.prev_token,
                cmd.new_token,
            )
            return

        self._add_command_to_stream_queue(conn, cmd)

    async def _process_position(
        self: ReplicationCommandHandler,
        stream_name: str,
        conn: IReplicationConnection,
        cmd: PositionCommand,
    ) -> None:
        """Process a POSITION command

        Called after the command has been popped off the queue of inbound commands
        """
        stream = self._streams[stream_name]

        if stream.can_discard_position(
            cmd.instance_name, cmd.prev_token, cmd.new_token
        ) and self.is_stream_connected(conn, cmd.stream_name):
            # FIX F4: as in on_POSITION: redundant, but it connects this writer.
            self._writers_by_connection.setdefault(conn, set()).add(  # FIX F4
                (cmd.stream_name, cmd.instance_name)  # FIX F4
            )
            handler_logger.debug(
                "Discarding redundant POSITION %s/%s %s %s",
                cmd.instance_name,
                cmd.stream_name,
                cmd.prev_token,
                cmd.new_token,
            )
            return

        # We're about to go and catch up with the stream, so remove from set
        # of connected streams.
        for streams in self._streams_by_connection.values():
            streams.discard(stream_name)
        for writers in self._writers_by_connection.values():  # FIX F4
            writers.discard((stream_name, cmd.instance_name))  # FIX F4

        # We clear the pending batches for the stream as the fetching of the
        # missing updates below will fetch all rows in the batch.
        self._pending_batches.pop(stream_name, [])

        # Find where we previously streamed up to.
        current_token = stream.current_token(cmd.instance_name)

        # If the incoming previous position is less than our current position
        # then we're up to date and there's nothing to do. Otherwise, fetch
        # all updates between then and now.
        #
        # Note: We also have to check that `current_token` is at most the
        # new position, to handle the case where the stream gets "reset"
        # (e.g. for `caches` and `typing` after the writer's restart).
        missing_updates = not (cmd.prev_token <= current_token <= cmd.new_token)
        while missing_updates:
            # Note: There may very well not be any new updates, but we check to
            # make sure. This can particularly happen for the event stream where
            # event persisters continuously send `POSITION`. See `resource.py`
            # for why this can happen.

            handler_logger.info(
                "Fetching replication rows for '%s' / %s between %i and %i",
                stream_name,
                cmd.instance_name,
                current_token,
                cmd.new_token,
            )
            (updates, current_token, missing_updates) = await stream.get_updates_since(
                cmd.instance_name, current_token, cmd.new_token
            )

            # TODO: add some tests for this

            # Some streams return multiple rows with the same stream IDs,
            # which need to be processed in batches.

            for token, rows in _batch_updates(updates):
                await self.on_rdata(
                    stream_name,
                    cmd.instance_name,
                    token,
                    [stream.parse_row(row) for row in rows],
                )

            handler_logger.info(
                "Caught up with stream '%s' to %i", stream_name, current_token
            )

        # We've now caught up to position sent to us, notify handler.
        await self._replication_data_handler.on_position(
            cmd.stream_name, cmd.instance_name, cmd.new_token
        )

        self._streams_by_connection.setdefault(conn, set()).add(stream_name)
        self._writers_by_connection.setdefault(conn, set()).add(  # FIX F4
            (stream_name, cmd.instance_name)  # FIX F4
        )

    def lost_connection(
        self: ReplicationCommandHandler, connection: IReplicationConnection
    ) -> None:
        """Called when a connection is closed/lost."""
        self._writers_by_connection.pop(connection, None)  # FIX F4
        orig_lost_connection(self, connection)

    setattr(ReplicationCommandHandler, "__init__", __init__)
    setattr(ReplicationCommandHandler, "is_writer_connected", is_writer_connected)
    setattr(ReplicationCommandHandler, "_process_rdata", _process_rdata)
    setattr(ReplicationCommandHandler, "on_POSITION", on_POSITION)
    setattr(ReplicationCommandHandler, "_process_position", _process_position)
    setattr(ReplicationCommandHandler, "lost_connection", lost_connection)


# ---- F5 ------------------------------------------------------------------------------------


def _committed_prefix_end(cur: Any, tables: list[tuple[str, str, str]]) -> int:
    """The highest id h such that every id in 2..h is a row of `tables` (id 1, the sequence's
    first value, counts as persisted): the end of the gapless committed prefix."""
    ids = " UNION ALL ".join(
        "SELECT %s AS id FROM %s WHERE %s >= 2" % (id_column, table, id_column)
        for table, _, id_column in tables
    )
    cur.execute(
        "WITH ids AS (%s) SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM ids WHERE id = 2) THEN 1"
        " ELSE (SELECT MIN(a.id) FROM ids a WHERE NOT EXISTS"
        " (SELECT 1 FROM ids b WHERE b.id = a.id + 1)) END" % ids
    )
    row = cur.fetchone()
    assert row is not None
    return int(row[0])


def fix_f5_startup_without_positions_stays_below_the_first_gap() -> None:
    """F5: a process that starts while a running writer has no `stream_positions` row covers
    that writer's ids in flight.

    Changes `MultiWriterIdGenerator._load_current_ids` (storage/util/id_generators.py, lines
    380-484 of 1.163.2; below, a copy with the changed lines marked `# FIX F5:`).

    1.163.2 takes as persisted the minimum of the positions it read (its own claim, the
    sequence's `last_value`, included), or `MAX(id)` when it read none, and sets every
    configured writer without a row to that. A writer has no row until its first persist's
    upsert (a separate transaction after the commit), and none after an operator runs the
    workaround Synapse's own `IncorrectDatabaseSetup` error prints (`DELETE FROM
    stream_positions ...`). Such a writer's ids in flight can be anywhere above the last
    gapless committed id, so the start-up covers them; their RDATA is then discarded as
    already seen and incremental /sync never returns them.

    The change: only while some configured writer other than this process has no row, the
    minimum is capped at the end of the gapless committed prefix, and the writers without a
    row are placed there before the rows above it are read. Correct because every id up to
    that prefix is committed, and nothing above it is taken as persisted until rows or the
    writers' POSITION answers (sent on every REPLICATE, so at once) move the positions on.
    Cost: one gap query at start-up, only in that case; a dead id (allocated, never written)
    below the writers' positions holds the start-up position back until their POSITIONs.
    """

    def _load_current_ids(
        self: MultiWriterIdGenerator,
        db_conn: LoggingDatabaseConnection,
        tables: list[tuple[str, str, str]],
        sequence_name: str,
    ) -> None:
        cur = db_conn.cursor(txn_name="_load_current_ids")

        # Load the current positions of all writers for the stream.
        if self._writers:
            # We delete any stale entries in the positions table. This is
            # important if we add back a writer after a long time; we want to
            # consider that a "new" writer, rather than using the old stale
            # entry here.
            clause, args = make_in_list_sql_clause(
                self._db.engine, "instance_name", self._writers, negative=True
            )

            sql = f"""
                DELETE FROM stream_positions
                WHERE
                    stream_name = ?
                    AND {clause}
            """
            cur.execute(sql, [self._stream_name] + args)

            sql = """
                SELECT instance_name, stream_id FROM stream_positions
                WHERE stream_name = ?
            """
            cur.execute(sql, (self._stream_name,))

            self._current_positions = {
                instance: stream_id * self._return_factor
                for instance, stream_id in cur
                if instance in self._writers
            }

        # If we're a writer, we can assume we're at the end of the stream
        # Usually, we would get that from the stream_positions, but in some cases,
        # like if we rolled back Synapse, the stream_positions table might not be up to
        # date. If we're using Postgres for the sequences, we can just use the current
        # sequence value as our own position.
        if self._instance_name in self._writers:
            if isinstance(self._db.engine, PostgresEngine):
                cur.execute(f"SELECT last_value FROM {sequence_name}")
                row = cur.fetchone()
                assert row is not None
                self._current_positions[self._instance_name] = row[0]

        # We set the `_persisted_upto_position` to be the minimum of all current
        # positions. If empty we use the max stream ID from the DB table.
        min_stream_id = min(self._current_positions.values(), default=None)

        # FIX F5: a configured writer without a stream_positions row may have ids in flight
        # FIX F5: anywhere above the gapless committed prefix (its row is upserted after its
        # FIX F5: commit, or an operator deleted the rows): cap the minimum there, and place
        # FIX F5: such writers at it before the rows are read, so that reading them (and our
        # FIX F5: own claim) cannot lift persisted_upto over their ids in flight.
        if (  # FIX F5
            self._writers  # FIX F5
            and self._positive  # FIX F5
            and any(  # FIX F5
                writer != self._instance_name and writer not in self._current_positions  # FIX F5
                for writer in self._writers  # FIX F5
            )  # FIX F5
        ):  # FIX F5
            cap = _committed_prefix_end(cur, tables)  # FIX F5
            min_stream_id = cap if min_stream_id is None else min(min_stream_id, cap)  # FIX F5
            for writer in self._writers:  # FIX F5
                self._current_positions.setdefault(writer, min_stream_id)  # FIX F5

        if min_stream_id is None:
            # We add a GREATEST here to ensure that the result is always
            # positive. (This can be a problem for e.g. backfill streams where
            # the server has never backfilled).
            greatest_func = (
                "GREATEST" if isinstance(self._db.engine, PostgresEngine) else "MAX"
            )
            max_stream_id = 1
            for table, _, id_column in tables:
                sql = """
                    SELECT %(greatest_func)s(COALESCE(%(agg)s(%(id)s), 1), 1)
                    FROM %(table)s
                """ % {
                    "greatest_func": greatest_func,
                    "id": id_column,
                    "table": table,
                    "agg": "MAX" if self._positive else "-MIN",
                }
                cur.execute(sql)
                result = cur.fetchone()
                assert result is not None
                (stream_id,) = result

                max_stream_id = max(max_stream_id, stream_id)

            self._persisted_upto_position = max_stream_id
        else:
            # If we have a min_stream_id then we pull out everything greater
            # than it from the DB so that we can prefill
            # `_known_persisted_positions` and get a more accurate
            # `_persisted_upto_position`.
            #
            # We also check if any of the later rows are from this instance, in
            # which case we use that for this instance's current position. This
            # is to handle the case where we didn't finish persisting to the
            # stream positions table before restart (or the stream position
            # table otherwise got out of date).

            self._persisted_upto_position = min_stream_id

            rows: list[tuple[str, int]] = []
            for table, instance_column, id_column in tables:
                sql = """
                    SELECT %(instance)s, %(id)s FROM %(table)s
                    WHERE ? %(cmp)s %(id)s
                """ % {
                    "id": id_column,
                    "table": table,
                    "instance": instance_column,
                    "cmp": "<=" if self._positive else ">=",
                }
                cur.execute(sql, (min_stream_id * self._return_factor,))

                # Cast safety: this corresponds to the types returned by the query above.
                rows.extend(cast(Iterable[tuple[str, int]], cur))

            # Sort by stream_id (ascending, lowest -> highest) so that we handle
            # rows in order for each instance because we don't want to overwrite
            # the current_position of an instance to a lower stream ID than
            # we're actually at.
            def sort_by_stream_id_key_func(row: tuple[str, int]) -> int:
                (instance, stream_id) = row
                # If `stream_id` is ever `None`, we will see a `TypeError: '<'
                # not supported between instances of 'NoneType' and 'X'` error.
                return stream_id

            rows.sort(key=sort_by_stream_id_key_func)

            with self._lock:
                for (
                    instance,
                    stream_id,
                ) in rows:
                    stream_id = self._return_factor * stream_id
                    self._add_persisted_position(stream_id)

                    if instance == self._instance_name:
                        self._current_positions[instance] = stream_id

        if self._writers:
            # If we have explicit writers then make sure that each instance has
            # a position.
            for writer in self._writers:
                self._current_positions.setdefault(
                    writer, self._persisted_upto_position
                )

        cur.close()

    MultiWriterIdGenerator._load_current_ids = _load_current_ids  # type: ignore[method-assign]


_FIXES: dict[str, Callable[[], None]] = {
    "f1": fix_f1_position_token_is_not_a_persisted_id,
    "f2": fix_f2_position_token_is_not_a_persisted_id,
    "f3": fix_f3_local_position_stays_below_own_unabsorbed_rows,
    "f4": fix_f4_connected_per_writer,
    "f5": fix_f5_startup_without_positions_stays_below_the_first_gap,
}

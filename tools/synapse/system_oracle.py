#!/usr/bin/env python3
"""Runs choreographies (tools/synapse/CHOREO.md) on REAL Synapse 1.163.2 workers.

A main process, event-persister workers (`stream_writers.events`), reader workers serving
/sync and a fake Redis bus, all in Synapse's own multi-worker test harness
(`tests/replication/_base.py`: `BaseMultiWorkerStreamTestCase`, its fake Redis pub/sub
server, the fake reactor clock), on the PostgreSQL that `.ci/setup-synapse.sh` starts.

    system_oracle.py --out-dir DIR CHOREO.jsonl...     # DIR/<name>.out.jsonl per file
    system_oracle.py CHOREO.jsonl                      # one file, to stdout
    system_oracle.py --fix all CHOREO.jsonl            # with the proposed fixes (fixes.py)

The harness needs six workarounds to serve as an oracle (research/system-oracle.md); each is
marked `WORKAROUND n` below:
1. Synapse's `redis` extra (hiredis, txredisapi) must be installed, or every multi-worker
   test is skipped (`.ci/setup-synapse.sh` installs it).
2. `make_worker_hs` prepares a worker on its own copy of the template database, then swaps
   its pool: a restarted worker would read the wrong database. Workers are built here on
   main's database directly.
3. All homeservers share one `Clock` and `make_worker_hs` shares main's pool, so a worker's
   `shutdown()` would stop everything: each worker gets its own `Clock` and pool.
4. `hs.shutdown()` leaves replication connections open: a killed worker's Redis connections
   are cut at the fake server.
5. The fake transport never reconnects on its own (and Synapse's factory would retry on the
   global reactor, with random jitter): `disconnect` cuts both ends and `reconnect` connects
   the process's own factory again on the fake reactor.
6. The fake Redis server keeps subscribers in a `set` (delivery order follows memory
   addresses): subscribers are kept in subscription order.

Levers that Synapse's harness lacks are built from Synapse's own code paths:
- a held persist: the writer's `persist_events` transaction waits on a Deferred after its
  stream ids were allocated (`PersistEventsStore._persist_events_and_state_updates`);
- a held sequence fetch: `_MultiWriterCtxManager.__aenter__`'s `_load_next_mult_id_txn`
  split at the database round trip, exactly as 1.163.2 orders its steps (guard into
  `_in_flight_fetches`; `nextval`; ids into `_unfinished_ids`; guard out) with the wait put
  before or after `nextval`;
- held publishes: the fake Redis server keeps one process's PUBLISHes, in order;
- held deliveries: the fake Redis server keeps what it would deliver to one process's
  subscription, in order (lost if that subscription is cut meanwhile).

`--fix NAME` (repeatable: f1, f2, f3, f4, all) runs the deployment with the proposed fixes of
tools/synapse/fixes.py applied (FIXES.md); with `--update`/`--check` the expected files are
then DIR/fix-<names>/<name>.expected.jsonl (`fix-all`, `fix-f1+f3`, ...), DIR being the
choreography's folder. Without `--fix` nothing of Synapse is changed.

Exit status: 0, or 2 if a file cannot be read (or an argument is wrong).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from typing import Any


from oracle_env import configure_environment  # noqa: E402
from strict_json import is_blank, strict_loads, trim_white_space  # noqa: E402

configure_environment()
# Synapse logs a great deal (and "Metric ... already registered" at every restart);
# STREAMSIM_ORACLE_LOG=LEVEL shows it on stderr when debugging a choreography.
if os.environ.get("STREAMSIM_ORACLE_LOG"):
    logging.basicConfig(stream=sys.stderr, level=os.environ["STREAMSIM_ORACLE_LOG"])
else:
    logging.disable(logging.CRITICAL)
warnings.simplefilter("ignore")

from unittest.mock import Mock, patch  # noqa: E402

from twisted.internet import defer  # noqa: E402
from twisted.internet.address import IPv4Address  # noqa: E402

from synapse.app.generic_worker import GenericWorkerServer  # noqa: E402
from synapse.config.database import DatabaseConnectionConfig  # noqa: E402
from synapse.replication.http import ReplicationRestResource  # noqa: E402
from synapse.replication.tcp.handler import ReplicationCommandHandler  # noqa: E402
from synapse.rest import admin  # noqa: E402
from synapse.rest.client import login, room, sync  # noqa: E402
from synapse.server import HomeServer  # noqa: E402
from synapse.storage.util import id_generators  # noqa: E402
from synapse.util.clock import Clock  # noqa: E402
from synapse.notifier import Notifier  # noqa: E402
from synapse.http.site import SynapseSite  # noqa: E402
from synapse.logging.context import make_deferred_yieldable  # noqa: E402

from fixes import FIX_NAMES, apply_fixes, resolve_fix_names  # noqa: E402

from tests.replication._base import (  # noqa: E402
    BaseMultiWorkerStreamTestCase,
    FakeRedisPubSubServer,
)
from tests.server import (  # noqa: E402
    FakeTransport,
    make_fake_db_pool,
    make_request,
    start_test_homeserver,
)
from tests.unittest import make_homeserver_config_obj  # noqa: E402

EVENTS = "events"
NAME_RE_FIRST = "abcdefghijklmnopqrstuvwxyz"
NAME_RE_REST = NAME_RE_FIRST + "0123456789"
USER = "alice"
PASSWORD = "pass"
# Ports of the fake HTTP replication listeners (instance_map); any distinct numbers do.
MAIN_PORT = 8765
FIRST_WORKER_PORT = 1001
# A timeline limit no choreography reaches, so /sync never truncates ("limited").
SYNC_FILTER = json.dumps({"room": {"timeline": {"limit": 100}}}, separators=(",", ":"))
MAX_ADVANCE_MS = 600_000
# How long set-up lets every process settle at `base`, in ms (CHOREO.md).
SETTLE_MS = 5_000


class MalformedLine(Exception):
    pass


class StepError(Exception):
    pass


def _rdata_connected(handler: Any, conn: Any, stream_name: str, instance_name: str) -> bool:
    """The handler's own test of whether an RDATA of `instance_name` on `conn` is applied
    (else dropped as "unconnected"): per stream in Synapse 1.163.2, per (stream, writer) with
    fix F4 (`is_writer_connected`, fixes.py)."""
    per_writer = getattr(handler, "is_writer_connected", None)
    if per_writer is not None:
        return per_writer(conn, stream_name, instance_name)
    return handler.is_stream_connected(conn, stream_name)


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


# ---- the fake Redis bus ---------------------------------------------------------------------


class OrderedRedisServer(FakeRedisPubSubServer):
    """Synapse's fake Redis server with subscribers in subscription order (WORKAROUND 6), a
    process's publishes held on request, and the connections of each process known so that
    they can be cut (WORKAROUNDS 4 and 5)."""

    def __init__(self) -> None:
        super().__init__()
        self._ordered: dict[bytes, list] = {}
        # publishing protocol -> instance name, filled in by the oracle
        self.owner_of: dict[int, str] = {}
        self.held: dict[str, list] = {}
        # subscriber name -> deliveries held for its subscription: (conn, channel, msg)
        self.held_to: dict[str, list] = {}

    def add_subscriber(self, conn, channel: bytes) -> None:
        subs = self._ordered.setdefault(channel, [])
        if conn not in subs:
            subs.append(conn)

    def remove_subscriber(self, conn) -> None:
        for subs in self._ordered.values():
            if conn in subs:
                subs.remove(conn)

    def publish(self, conn, channel: bytes, msg: object) -> int:
        owner = self.owner_of.get(id(conn))
        if owner is not None and owner in self.held:
            self.held[owner].append((channel, msg))
            return len(self._ordered.get(channel, []))
        return self._deliver(channel, msg)

    def _deliver(self, channel: bytes, msg: object) -> int:
        subs = list(self._ordered.get(channel, []))
        for sub in subs:
            owner = self.owner_of.get(id(sub))
            if owner in self.held_to:
                self.held_to[owner].append((sub, channel, msg))
            else:
                sub.send(["message", channel, msg])
        return len(subs)

    def release_to(self, owner: str) -> None:
        """Delivers what was held for `owner`'s subscription, in order."""
        for sub, channel, msg in self.held_to.pop(owner, []):
            sub.send(["message", channel, msg])

    def forget_held_for(self, conn) -> None:
        """A cut subscription's held deliveries are lost with it."""
        for owner, items in self.held_to.items():
            self.held_to[owner] = [item for item in items if item[0] is not conn]

    def release(self, owner: str) -> None:
        for channel, msg in self.held.pop(owner, []):
            self._deliver(channel, msg)


# ---- the harness ----------------------------------------------------------------------------


class Process:
    """One Synapse process of the deployment."""

    def __init__(self, name: str, role: str, hs: HomeServer):
        self.name = name
        self.role = role  # main | writer | reader
        self.hs = hs
        self.handled: list[str] = []
        self.announced: list[str] = []


class Held:
    """An event held at its sequence fetch or its persist transaction."""

    def __init__(self, label: str, writer: str, where: str, gate: defer.Deferred):
        self.label = label
        self.writer = writer
        self.where = where  # "fetch" | "persist"
        self.gate = gate


class SystemOracle(BaseMultiWorkerStreamTestCase):
    """The harness (never run as a test): one instance per choreography."""

    servlets = [
        admin.register_servlets_for_client_rest_resource,
        room.register_servlets,
        login.register_servlets,
        sync.register_servlets,
    ]

    writers: list[str] = []
    readers: list[str] = []

    def runTest(self) -> None:  # pragma: no cover - required by the unittest machinery
        pass

    def default_config(self) -> dict:
        conf = super().default_config()
        conf["stream_writers"] = {EVENTS: list(self.writers)}
        instance_map = {"main": {"host": "testserv", "port": MAIN_PORT}}
        for i, name in enumerate(self.writers + self.readers):
            instance_map[name] = {"host": "testserv", "port": FIRST_WORKER_PORT + i}
        conf["instance_map"] = instance_map
        # Presence would wake long-polls and fill /sync; the choreographies are about events.
        conf["presence"] = {"enabled": False}
        return conf

    # ---- start-up ---------------------------------------------------------------------------

    def setUp(self) -> None:  # noqa: D401
        # WORKAROUND 6: the ordered server, in place before anything subscribes.
        with patch("tests.replication._base.FakeRedisPubSubServer", OrderedRedisServer):
            super().setUp()
        assert isinstance(self._redis_server, OrderedRedisServer)
        self.procs: dict[str, Process] = {}
        self.labels: dict[str, str] = {}  # event_id -> label
        self.pos_labels: dict[tuple[str, int], str] = {}  # (writer, stream id) -> label
        self.held: dict[str, Held] = {}
        self.sends: dict[str, Any] = {}  # label -> channel
        self.ids: dict[str, int] = {}  # label -> stream id
        self.hold_persist: set[str] = set()
        self.hold_fetch: dict[str, str] = {}  # writer -> "before_nextval" | "after_nextval"
        self.pending_fetch_label: dict[str, str] = {}
        self.tokens: dict[str, str] = {}  # sync label -> full next_batch
        self.long_polls: dict[str, Any] = {}  # label -> channel
        self.waits: dict[str, Any] = {}  # label -> (finish times, start time in s)
        self.used_labels: set[str] = set()  # sync and wait labels share one namespace
        self.disconnected: set[str] = set()
        self.instance_names: dict[int, str] = {}
        main = Process("main", "main", self.hs)
        self.procs["main"] = main
        self._instrument(main)
        # main connected to the bus during the harness's own set-up.
        self._own_new_protocols("main", set())

    def _main_db_args(self) -> dict:
        return dict(self.hs.config.database.databases[0].config["args"])

    def _make_process_hs(self, name: str) -> HomeServer:
        """A generic worker on main's own database, with its own clock and pool
        (WORKAROUNDS 2 and 3), wired to the fake Redis and HTTP replication like
        `make_worker_hs`."""
        config = self._get_worker_hs_config()
        config["worker_app"] = "synapse.app.generic_worker"
        config["worker_name"] = name
        config_obj = make_homeserver_config_obj(config)
        args = self._main_db_args()
        args["cp_min"], args["cp_max"] = 1, 5
        config_obj.database.databases = [
            DatabaseConnectionConfig("master", {"name": "psycopg2", "args": args})
        ]
        hs = GenericWorkerServer(
            config_obj.server.server_name, config=config_obj, reactor=self.reactor
        )
        hs._clock = Clock(self.reactor, server_name=config_obj.server.server_name)
        hs.tls_server_context_factory = Mock()
        with patch("synapse.storage.database.make_pool", side_effect=make_fake_db_pool):
            hs.setup()
        start_test_homeserver(hs=hs, cleanup_func=self.addCleanup, reactor=self.reactor)

        port = FIRST_WORKER_PORT + (self.writers + self.readers).index(name)
        if not getattr(self, "_http_registered", set()).__contains__(name):
            self._http_registered = getattr(self, "_http_registered", set()) | {name}
            self.reactor.add_tcp_client_callback(
                "1.2.3.4",
                port,
                lambda: self._handle_http_replication_attempt(
                    self.procs[name].hs, port
                ),
            )
        resource = ReplicationRestResource(hs)
        for servlet in self.servlets:
            servlet(hs, resource)
        self._hs_to_site[hs] = SynapseSite(
            logger_name="synapse.access.http.fake",
            site_tag="test-%s" % name,
            config=hs.config.server.listeners[0],
            resource=resource,
            server_version_string="1",
            max_request_body_size=8192,
            reactor=self.reactor,
            hs=hs,
        )
        hs.get_replication_command_handler().start_replication(hs)
        return hs

    def _start_process(self, name: str, role: str) -> Process:
        known = set(self._redis_server_protocols())
        # Its Redis connections are its own from the first byte: a hold on its publishes
        # applies to what it publishes while it starts (REPLICATE, its positions).
        self._connecting_as = name
        try:
            hs = self._make_process_hs(name)
        finally:
            self._connecting_as = None
        proc = Process(name, role, hs)
        if name in self.procs:
            proc.handled = self.procs[name].handled
            proc.announced = self.procs[name].announced
        self.procs[name] = proc
        self._instrument(proc)
        self.pump_quiet()
        self._own_new_protocols(name, known)
        return proc

    # ---- which fake-Redis connection belongs to whom ----------------------------------------

    def _redis_server_protocols(self) -> list:
        return list(getattr(self, "_all_server_protocols", []))

    def connect_any_redis_attempts(self) -> None:
        """As the harness's, remembering each server-side protocol and its client factory."""
        clients = self.reactor.tcpClients
        while clients:
            (host, port, client_factory, _timeout, _bind) = clients.pop(0)
            assert (host, port) == ("localhost", 6379), (host, port)
            client_address = IPv4Address("TCP", "127.0.0.1", 6379)
            client_protocol = client_factory.buildProtocol(client_address)
            server_protocol = self._redis_server.buildProtocol(
                IPv4Address("TCP", host, port)
            )
            c2s = FakeTransport(server_protocol, self.reactor, client_protocol)
            client_protocol.makeConnection(c2s)
            s2c = FakeTransport(client_protocol, self.reactor, server_protocol)
            server_protocol.makeConnection(s2c)
            if not hasattr(self, "_all_server_protocols"):
                self._all_server_protocols = []
                self._client_of = {}
            self._all_server_protocols.append(server_protocol)
            self._client_of[id(server_protocol)] = (client_protocol, client_factory)
            connecting_as = getattr(self, "_connecting_as", None)
            if connecting_as is not None:
                self._redis_server.owner_of[id(server_protocol)] = connecting_as
                self._owned.setdefault(connecting_as, []).append(server_protocol)

    def _own_new_protocols(self, name: str, known: set) -> None:
        for proto in self._redis_server_protocols():
            if proto not in known and id(proto) not in self._redis_server.owner_of:
                self._redis_server.owner_of[id(proto)] = name
                self._owned.setdefault(name, []).append(proto)

    @property
    def _owned(self) -> dict:
        if not hasattr(self, "_owned_map"):
            self._owned_map: dict[str, list] = {}
        return self._owned_map

    def _subscription_protocols(self, name: str) -> list:
        hs = self.procs[name].hs
        factory = hs.get_replication_command_handler()._factory
        return [
            p
            for p in self._owned.get(name, [])
            if self._client_of[id(p)][1] is factory
        ]

    def _cut(self, server_protocol) -> None:
        """Cut one fake Redis connection at both ends (WORKAROUNDS 4 and 5)."""
        from twisted.python.failure import Failure
        from twisted.internet.error import ConnectionDone

        client_protocol, _factory = self._client_of[id(server_protocol)]
        self._redis_server.remove_subscriber(server_protocol)
        self._redis_server.forget_held_for(server_protocol)
        for proto in (server_protocol, client_protocol):
            transport = proto.transport
            if transport is not None:
                transport.disconnecting = True
                transport._protocol = None
        server_protocol.connectionLost(Failure(ConnectionDone()))
        client_protocol.connectionLost(Failure(ConnectionDone()))

    # ---- observation hooks ------------------------------------------------------------------

    def _label_of_row(self, row: Any) -> str:
        data = getattr(row, "data", row)
        event_id = getattr(data, "event_id", None)
        return self.labels.get(event_id, "-")

    def _instrument(self, proc: Process) -> None:
        hs = proc.hs
        handler = hs.get_replication_command_handler()
        oracle = self
        orig_process_rdata = handler._process_rdata
        orig_process_position = handler._process_position
        orig_on_position = handler.on_POSITION
        orig_on_rdata = handler.on_rdata
        state = {"catching_up": False}

        async def _process_rdata(stream_name, conn, cmd):
            if stream_name == EVENTS:
                row = handler._streams[stream_name].parse_row(cmd.row)
                label = oracle._label_of_row(row)
                tok = "batch" if cmd.token is None else str(cmd.token)
                entry = "RDATA %s %s %s" % (cmd.instance_name, tok, label)
                if not _rdata_connected(handler, conn, stream_name, cmd.instance_name):
                    entry += " unconnected"
                elif cmd.token is not None and cmd.token <= handler._streams[
                    stream_name
                ].current_token(cmd.instance_name):
                    entry += " discarded"
                proc.handled.append(entry)
            return await orig_process_rdata(stream_name, conn, cmd)

        async def _process_position(stream_name, conn, cmd):
            if stream_name != EVENTS:
                return await orig_process_position(stream_name, conn, cmd)
            stream = handler._streams[stream_name]
            entry = "POSITION %s %d %d" % (cmd.instance_name, cmd.prev_token, cmd.new_token)
            if stream.can_discard_position(
                cmd.instance_name, cmd.prev_token, cmd.new_token
            ) and handler.is_stream_connected(conn, stream_name):
                proc.handled.append(entry + " dropped")
                return await orig_process_position(stream_name, conn, cmd)
            proc.handled.append(entry)
            state["catching_up"] = True
            try:
                return await orig_process_position(stream_name, conn, cmd)
            finally:
                state["catching_up"] = False

        def on_POSITION(conn, cmd):
            if (
                cmd.stream_name == EVENTS
                and cmd.instance_name != handler._instance_name
            ):
                stream = handler._streams[cmd.stream_name]
                if stream.can_discard_position(
                    cmd.instance_name, cmd.prev_token, cmd.new_token
                ) and handler.is_stream_connected(conn, cmd.stream_name):
                    proc.handled.append(
                        "POSITION %s %d %d dropped"
                        % (cmd.instance_name, cmd.prev_token, cmd.new_token)
                    )
            return orig_on_position(conn, cmd)

        async def on_rdata(stream_name, instance_name, token, rows):
            if stream_name == EVENTS and state["catching_up"]:
                for row in rows:
                    if getattr(row, "type", None) == "ev":
                        proc.handled.append(
                            "fetched %s %d %s"
                            % (instance_name, token, oracle._label_of_row(row))
                        )
            return await orig_on_rdata(stream_name, instance_name, token, rows)

        handler._process_rdata = _process_rdata
        handler._process_position = _process_position
        handler.on_POSITION = on_POSITION
        handler.on_rdata = on_rdata
        # The command dispatcher looks handlers up by name on the instance.
        handler._command_handlers_installed = True

        notifier = hs.get_notifier()
        orig_notify = notifier._notify_pending_new_room_events

        def _notify_pending(max_token):
            for entry in notifier.pending_new_room_events:
                if not entry.event_pos.persisted_after(max_token):
                    pos = entry.event_pos
                    label = oracle.pos_labels.get((pos.instance_name, pos.stream))
                    if label is not None:
                        proc.announced.append(label)
            return orig_notify(max_token)

        notifier._notify_pending_new_room_events = _notify_pending

        if proc.role == "writer":
            self._instrument_writer(proc)

    def _instrument_writer(self, proc: Process) -> None:
        store = proc.hs.get_datastores().main
        persist_store = proc.hs.get_datastores().persist_events
        db_pool = persist_store.db_pool
        orig_run = db_pool.runInteraction
        oracle = self

        async def runInteraction(desc, func, *args, **kwargs):
            if desc == "persist_events":
                # Labels are learnt here, before any process can see the event.
                for ev, _ in kwargs.get("events_and_contexts") or []:
                    label = oracle._label_of_event(ev)
                    if label is not None:
                        oracle.labels[ev.event_id] = label
                        oracle.ids[label] = ev.internal_metadata.stream_ordering
                        oracle.pos_labels[
                            (proc.name, ev.internal_metadata.stream_ordering)
                        ] = label
            if desc == "persist_events" and proc.name in oracle.hold_persist:
                evs = kwargs.get("events_and_contexts") or []
                labels = [oracle._label_of_event(ev) for ev, _ in evs]
                label = next((lb for lb in labels if lb is not None), None)
                if label is not None:
                    for ev, _ in evs:
                        oracle.ids[oracle._label_of_event(ev) or "-"] = (
                            ev.internal_metadata.stream_ordering
                        )
                    gate: defer.Deferred = defer.Deferred()
                    oracle.held[label] = Held(label, proc.name, "persist", gate)
                    await make_deferred_yieldable(gate)
            return await orig_run(desc, func, *args, **kwargs)

        db_pool.runInteraction = runInteraction

        gen = store._stream_id_gen
        orig_get_next_mult = gen.get_next_mult

        def get_next_mult(n):
            ctx = orig_get_next_mult(n)
            at = oracle.hold_fetch.pop(proc.name, None)
            if at is None:
                return ctx
            label = oracle.pending_fetch_label.get(proc.name)
            return HeldFetchCtx(oracle, proc.name, ctx, at, label)

        gen.get_next_mult = get_next_mult

    def _label_of_event(self, ev) -> str | None:
        body = ev.content.get("body") if hasattr(ev, "content") else None
        if isinstance(body, str) and body.startswith("choreo:"):
            return body[len("choreo:") :]
        return None

    # ---- the clock --------------------------------------------------------------------------

    def pump_quiet(self) -> None:
        """Run everything due now, until nothing more is (zero-latency delivery)."""
        for _ in range(200):
            self.reactor.advance(0)
            if not any(c.getTime() <= self.reactor.seconds() for c in self.reactor.getDelayedCalls()):
                # One more round for writes flushed by the last calls.
                self.reactor.advance(0)
                if not any(
                    c.getTime() <= self.reactor.seconds()
                    for c in self.reactor.getDelayedCalls()
                ):
                    return

    def advance_ms(self, ms: int) -> None:
        """Let `ms` simulated milliseconds pass, stopping at every timer that falls due."""
        now = self.reactor.seconds()
        end = now + ms / 1000.0
        self.pump_quiet()
        while True:
            due = [c.getTime() for c in self.reactor.getDelayedCalls() if c.getTime() <= end]
            if not due:
                break
            nxt = min(due)
            self.reactor.advance(max(0.0, nxt - self.reactor.seconds()))
            self.pump_quiet()
        self.reactor.advance(max(0.0, end - self.reactor.seconds()))
        self.pump_quiet()

    # ---- set-up -----------------------------------------------------------------------------

    def do_setup(self, step: dict) -> dict:
        self.user_id = self.register_user(USER, PASSWORD)
        self.access_token = self.login(USER, PASSWORD)
        for name in self.writers:
            self._start_process(name, "writer")
        for name in self.readers:
            self._start_process(name, "reader")
        # Rooms: each created through main, its persister chosen by the choreography.
        self.room_ids: dict[str, str] = {}
        self.room_writer: dict[str, str] = dict(step["rooms"])
        self._next_room_writer: str | None = None
        # Room ids are random (or, in newer room versions, hashes of the create event): the
        # room's persister is fixed the first time the id is routed, to the writer the
        # choreography names for it.
        wanted: dict[str, str] = {}
        oracle = self
        shard_class = type(self.hs.config.worker.events_shard_config)
        had_own = "_get_instance" in shard_class.__dict__
        orig_get_instance = shard_class._get_instance

        def _get_instance(cfg, key: str) -> str:
            # `get_instance` and `should_handle` both route through `_get_instance`.
            if list(cfg.instances) == list(oracle.writers):
                if key not in wanted and oracle._next_room_writer is not None:
                    wanted[key] = oracle._next_room_writer
                if key in wanted:
                    return wanted[key]
            return orig_get_instance(cfg, key)

        shard_class._get_instance = _get_instance
        if had_own:
            self.addCleanup(setattr, shard_class, "_get_instance", orig_get_instance)
        else:
            self.addCleanup(delattr, shard_class, "_get_instance")
        for label in sorted(step["rooms"]):
            self._next_room_writer = step["rooms"][label]
            self.reactor.advance(0.001)
            room_id = self.helper.create_room_as(self.user_id, tok=self.access_token)
            self._next_room_writer = None
            if wanted.get(room_id) != step["rooms"][label]:
                raise StepError("room %s was not routed to its writer" % label)
            self.room_ids[label] = room_id
        self.room_labels = {v: k for k, v in self.room_ids.items()}
        self.pump_quiet()
        # Padding: unlabelled messages until the writers, in order, write the last ids.
        base = step["base"]
        n = len(self.writers)
        first_room = {}
        for label in sorted(self.room_writer):
            first_room.setdefault(self.room_writer[label], label)
        max_id = self._max_stream_id()
        if max_id > base - n:
            raise StepError("set-up already reached stream id %d; base must be at least %d" % (max_id, max_id + n))
        while self._max_stream_id() < base - n:
            self._send_now(first_room[self.writers[0]], None)
        for w in self.writers:
            self._send_now(first_room[w], None)
        if self._max_stream_id() != base:
            raise StepError("set-up ended at %d, not base %d" % (self._max_stream_id(), base))
        self.advance_ms(SETTLE_MS)
        for proc in self.procs.values():
            proc.handled.clear()
            proc.announced.clear()
        return {"processes": {name: self.observe(name) for name in sorted(self.procs)}}

    def _max_stream_id(self) -> int:
        def f(txn):
            txn.execute("SELECT COALESCE(MAX(stream_ordering), 0) FROM events")
            return txn.fetchone()[0]

        return self.get_success(self.database_pool.runInteraction("max", f))

    # ---- sends ------------------------------------------------------------------------------

    def _send_request(self, room_label: str, label: str | None):
        writer = self.room_writer[room_label]
        site = self._hs_to_site[self.procs[writer].hs]
        room_id = self.room_ids[room_label]
        self._txn = getattr(self, "_txn", 0) + 1
        body = {"msgtype": "m.text", "body": ("choreo:%s" % label) if label else "pad"}
        channel = make_request(
            self.reactor,
            site,
            "PUT",
            "/rooms/%s/send/m.room.message/txn%d" % (room_id, self._txn),
            content=body,
            access_token=self.access_token,
            await_result=False,
        )
        return channel

    def _send_now(self, room_label: str, label: str | None) -> None:
        channel = self._send_request(room_label, label)
        self.pump_quiet()
        if not channel.is_finished():
            raise StepError("a set-up send did not finish")
        if channel.code != 200:
            raise StepError("a set-up send failed: %s" % channel.result)

    def _send_status(self, label: str) -> dict:
        channel = self.sends[label]
        out: dict = {}
        if label in self.ids:
            out["id"] = self.ids[label]
        done = channel.is_finished()
        out["done"] = done
        if done:
            if channel.code != 200:
                raise StepError("send %s failed: %s" % (label, channel.result))
            event_id = channel.json_body["event_id"]
            self.labels[event_id] = label
            if label not in self.ids:
                self.ids[label] = self._stream_id_of(event_id)
            out["id"] = self.ids[label]
        return out

    def _stream_id_of(self, event_id: str) -> int:
        def f(txn):
            txn.execute("SELECT stream_ordering FROM events WHERE event_id = ?", (event_id,))
            row = txn.fetchone()
            return row[0] if row else None

        return self.get_success(self.database_pool.runInteraction("sid", f))

    # ---- observation ------------------------------------------------------------------------

    def _instance_name_of(self, instance_id: int) -> str:
        def f(txn):
            txn.execute(
                "SELECT instance_name FROM instance_map WHERE instance_id = ?", (instance_id,)
            )
            row = txn.fetchone()
            return row[0] if row else str(instance_id)

        return self.get_success(self.database_pool.runInteraction("iname", f))

    def room_token_text(self, token) -> str:
        """A RoomStreamToken as Synapse writes it, instance ids replaced by names."""
        if not token.instance_map:
            return "s%d" % token.stream
        parts = ["m%d" % token.stream]
        for name, pos in sorted(token.instance_map.items()):
            parts.append("%s.%d" % (name, pos))
        return "~".join(parts)

    def _normalise_next_batch(self, text: str) -> str:
        room_part = text.split("_", 1)[0]
        if room_part.startswith("m"):
            pieces = room_part[1:].split("~")
            out = ["m" + pieces[0]]
            named = []
            for piece in pieces[1:]:
                if not piece:
                    continue
                iid, pos = piece.split(".")
                named.append((self._instance_name_of(int(iid)), int(pos)))
            for name, pos in sorted(named):
                out.append("%s.%d" % (name, pos))
            return "~".join(out)
        return room_part

    def observe(self, name: str) -> dict:
        proc = self._proc(name)
        store = proc.hs.get_datastores().main
        gen = store._stream_id_gen
        out = {
            "positions": dict(sorted(gen.get_positions().items())),
            "persisted_upto": gen.get_persisted_upto_position(),
            "room_max": self.room_token_text(store.get_room_max_token()),
        }
        if proc.role == "writer":
            out["own"] = gen.get_current_token_for_writer(name)
            out["minimal_local"] = gen.get_minimal_local_current_token()
        return out

    def _proc(self, name: str) -> Process:
        proc = self.procs.get(name)
        if proc is None:
            raise StepError("no process %s" % (name,))
        return proc

    def _sync_result(self, channel) -> dict:
        if channel.code != 200:
            raise StepError("/sync failed: %s" % channel.result)
        body = channel.json_body
        rooms: dict[str, list[str]] = {}
        for room_id, room_body in sorted(body.get("rooms", {}).get("join", {}).items()):
            labels = []
            for ev in room_body.get("timeline", {}).get("events", []):
                label = self.labels.get(ev.get("event_id"))
                if label is None:
                    b = ev.get("content", {}).get("body")
                    if isinstance(b, str) and b.startswith("choreo:"):
                        label = b[len("choreo:") :]
                if label is not None:
                    labels.append(label)
            if labels:
                rooms[self.room_labels.get(room_id, room_id)] = labels
        return {"rooms": dict(sorted(rooms.items())), "next_batch": self._normalise_next_batch(body["next_batch"])}

    # ---- steps ------------------------------------------------------------------------------

    def apply(self, step: dict) -> dict:
        op = step["op"]
        if op == "send":
            label = step["event"]
            if label in self.sends:
                raise StepError("event %s was already sent" % label)
            if step["room"] not in self.room_writer:
                raise StepError("no room %s" % step["room"])
            writer = self.room_writer[step["room"]]
            if writer in self.hold_fetch:
                self.pending_fetch_label[writer] = label
            self.sends[label] = self._send_request(step["room"], label)
            self.pump_quiet()
            return self._send_status(label)
        if op == "hold_persist":
            self._writer(step["writer"])
            if step["writer"] in self.hold_persist:
                raise StepError("%s is already holding persists" % step["writer"])
            self.hold_persist.add(step["writer"])
            return {}
        if op == "unhold_persist":
            self._writer(step["writer"])
            if step["writer"] not in self.hold_persist:
                raise StepError("%s is not holding persists" % step["writer"])
            self.hold_persist.discard(step["writer"])
            return {}
        if op == "hold_fetch":
            self._writer(step["writer"])
            if step["writer"] in self.hold_fetch:
                raise StepError("%s already has a fetch hold waiting" % step["writer"])
            self.hold_fetch[step["writer"]] = step["at"]
            return {}
        if op == "release":
            label = step["event"]
            held = self.held.pop(label, None)
            if held is None:
                raise StepError("event %s is not held" % label)
            held.gate.callback(None)
            self.pump_quiet()
            return self._send_status(label)
        if op == "restart":
            name = step["process"]
            proc = self._proc(name)
            if name == "main":
                raise StepError("main cannot be restarted")
            if any(h.writer == name for h in self.held.values()):
                raise StepError("%s holds an event" % name)
            self._kill(name)
            self.disconnected.discard(name)
            self._start_process(name, proc.role)
            return {}
        if op == "disconnect":
            name = step["process"]
            self._proc(name)
            if name in self.disconnected:
                raise StepError("%s is already disconnected" % name)
            for proto in self._subscription_protocols(name):
                self._cut(proto)
            self.disconnected.add(name)
            self.pump_quiet()
            return {}
        if op == "reconnect":
            name = step["process"]
            if name not in self.disconnected:
                raise StepError("%s is not disconnected" % name)
            self.disconnected.discard(name)
            known = set(self._redis_server_protocols())
            handler = self.procs[name].hs.get_replication_command_handler()
            self._connecting_as = name
            try:
                self.reactor.connectTCP("localhost", 6379, handler._factory)
                self.connect_any_redis_attempts()
            finally:
                self._connecting_as = None
            self._own_new_protocols(name, known)
            self.pump_quiet()
            return {}
        if op == "hold_publishes":
            self._proc(step["process"])
            if step["process"] in self._redis_server.held:
                raise StepError("%s publishes are already held" % step["process"])
            self._redis_server.held[step["process"]] = []
            return {}
        if op == "release_publishes":
            if step["process"] not in self._redis_server.held:
                raise StepError("%s publishes are not held" % step["process"])
            self._redis_server.release(step["process"])
            self.pump_quiet()
            return {}
        if op == "hold_deliveries":
            self._proc(step["process"])
            if step["process"] in self._redis_server.held_to:
                raise StepError("%s deliveries are already held" % step["process"])
            self._redis_server.held_to[step["process"]] = []
            return {}
        if op == "release_deliveries":
            self._proc(step["process"])
            if step["process"] not in self._redis_server.held_to:
                raise StepError("%s deliveries are not held" % step["process"])
            self._redis_server.release_to(step["process"])
            self.pump_quiet()
            return {}
        if op == "advance":
            self.advance_ms(step["ms"])
            return {}
        if op == "forget_positions":
            # The workaround Synapse's IncorrectDatabaseSetup error prints, run by an operator
            # while the processes are up: their memory keeps its positions; a process that
            # starts later reads none.
            def forget(txn):
                txn.execute("DELETE FROM stream_positions WHERE stream_name = 'events'")

            self.get_success(self.database_pool.runInteraction("forget_positions", forget))
            return {}
        if op == "sync":
            return self.do_sync(step)
        if op == "observe":
            return self.observe(step["process"])
        if op == "wait":
            return self.do_wait(step)
        raise StepError("unknown op %s" % op)

    def _writer(self, name: str) -> Process:
        proc = self._proc(name)
        if proc.role != "writer":
            raise StepError("%s is not a writer" % name)
        return proc

    def _kill(self, name: str) -> None:
        """Stop a worker: cut its Redis connections, shut it down (WORKAROUND 4)."""
        proc = self.procs[name]
        for proto in list(self._owned.get(name, [])):
            self._cut(proto)
        self._owned[name] = []
        # Its factory must not reconnect: the new incarnation has its own.
        factory = proc.hs.get_replication_command_handler()._factory
        factory.stopTrying()
        try:
            self.get_success(proc.hs.shutdown())
        except Exception:
            pass
        self.pump_quiet()

    def do_sync(self, step: dict) -> dict:
        name = step["process"]
        proc = self._proc(name)
        if proc.role == "writer":
            raise StepError("/sync is served by main and the readers, not %s" % name)
        label = step["label"]
        if label in self.used_labels:
            raise StepError("label %s is already used" % label)
        since = step.get("since")
        query = "/sync?filter=%s&timeout=%d" % (SYNC_FILTER, step.get("timeout_ms", 0))
        if since is not None:
            if since not in self.tokens:
                raise StepError("no sync labelled %s" % since)
            query += "&since=%s" % self.tokens[since]
        self.used_labels.add(label)
        from urllib.parse import quote

        query = query.replace(SYNC_FILTER, quote(SYNC_FILTER))
        channel = make_request(
            self.reactor,
            self._hs_to_site[proc.hs],
            "GET",
            query,
            access_token=self.access_token,
            await_result=False,
        )
        self.pump_quiet()
        if channel.is_finished():
            result = self._sync_result(channel)
            self.tokens[label] = channel.json_body["next_batch"]
            return result
        self.long_polls[label] = channel
        return {"pending": True}

    def do_wait(self, step: dict) -> dict:
        """`wait_for_stream_position(writer, "events", id of event)` on a process, as the
        HTTP replication endpoints do before they answer (replication/tcp/client.py)."""
        proc = self._proc(step["process"])
        writer = step["writer"]
        if writer not in self.writers:
            raise StepError("%s is not a writer" % writer)
        label = step["label"]
        if label in self.used_labels:
            raise StepError("label %s is already used" % label)
        event = step["event"]
        if event not in self.ids:
            raise StepError("event %s has no stream id yet" % event)
        self.used_labels.add(label)
        handler = proc.hs.get_replication_data_handler()
        started = self.reactor.seconds()
        d = defer.ensureDeferred(
            handler.wait_for_stream_position(writer, EVENTS, self.ids[event])
        )
        finished: list[float] = []

        def _finished(result):
            finished.append(self.reactor.seconds())
            return result

        d.addBoth(_finished)
        self.waits[label] = (finished, started)
        self.pump_quiet()
        if finished:
            del self.waits[label]
            return {"waited_ms": int(round((finished[0] - started) * 1000))}
        return {"pending": True}

    def collect_long_polls(self) -> dict:
        done = {}
        for label in sorted(self.long_polls):
            channel = self.long_polls[label]
            if channel.is_finished():
                done[label] = self._sync_result(channel)
                self.tokens[label] = channel.json_body["next_batch"]
        for label in sorted(self.waits):
            finished, started = self.waits[label]
            if finished:
                done[label] = {"waited_ms": int(round((finished[0] - started) * 1000))}
        for label in done:
            self.long_polls.pop(label, None)
            self.waits.pop(label, None)
        return done


class HeldFetchCtx:
    """`_MultiWriterCtxManager` whose sequence fetch waits at a gate.

    `__aenter__` is 1.163.2's `_load_next_mult_id_txn` with the database round trip made
    visible: guard into `_in_flight_fetches`, `nextval` (its own transaction), ids into
    `_unfinished_ids`, guard out. The wait sits before or after `nextval`. `__aexit__` is the
    real one."""

    def __init__(self, oracle: SystemOracle, writer: str, ctx, at: str, label):
        self.oracle = oracle
        self.writer = writer
        self.ctx = ctx
        self.at = at
        self.label = label

    async def _gate(self) -> None:
        gate: defer.Deferred = defer.Deferred()
        self.oracle.held[self.label] = Held(self.label, self.writer, "fetch", gate)
        await make_deferred_yieldable(gate)

    async def __aenter__(self):
        idg = self.ctx.id_gen
        n = self.ctx.multiple_ids or 1
        with idg._lock:
            current_max = idg._max_seen_allocated_stream_id
            idg._in_flight_fetches.add(current_max)
        try:
            if self.at == "before_nextval":
                await self._gate()
            ids = await idg._db.runInteraction(
                "_load_next_mult_id",
                lambda txn: idg._sequence_gen.get_next_mult_txn(txn, n),
                db_autocommit=True,
            )
            self.ctx.stream_ids = ids
            if self.label is not None:
                self.oracle.ids[self.label] = ids[0]
            if self.at == "after_nextval":
                await self._gate()
            with idg._lock:
                idg._unfinished_ids.update(ids)
                idg._max_seen_allocated_stream_id = max(
                    idg._max_seen_allocated_stream_id, idg._unfinished_ids[-1]
                )
        finally:
            with idg._lock:
                idg._in_flight_fetches.remove(current_max)
        return [i * idg._return_factor for i in ids]

    async def __aexit__(self, exc_type, exc, tb):
        return await self.ctx.__aexit__(exc_type, exc, tb)


# ---- parsing --------------------------------------------------------------------------------


def _is_name(s: Any) -> bool:
    return (
        isinstance(s, str)
        and len(s) > 0
        and s[0] in NAME_RE_FIRST
        and all(c in NAME_RE_REST for c in s)
    )


# Each op's required and optional fields (CHOREO.md's table of fields).
STEP_FIELDS = {
    "setup": ({"writers", "rooms"}, {"readers", "base"}),
    "send": ({"event", "room"}, set()),
    "hold_persist": ({"writer"}, set()),
    "unhold_persist": ({"writer"}, set()),
    "hold_fetch": ({"writer", "at"}, set()),
    "release": ({"event"}, set()),
    "restart": ({"process"}, set()),
    "disconnect": ({"process"}, set()),
    "reconnect": ({"process"}, set()),
    "hold_publishes": ({"process"}, set()),
    "release_publishes": ({"process"}, set()),
    "advance": ({"ms"}, set()),
    "forget_positions": (set(), set()),
    "sync": ({"process", "label"}, {"since", "timeout_ms"}),
    "observe": ({"process"}, set()),
    "wait": ({"process", "writer", "event", "label"}, set()),
    "hold_deliveries": ({"process"}, set()),
    "release_deliveries": ({"process"}, set()),
}


def _int(obj: dict, key: str, lo: int, hi: int) -> int:
    v = obj[key]
    # Integers beyond 64 bits are not integers here (a JSON reader in Rust has none).
    if isinstance(v, bool) or not isinstance(v, int) or not -(2**63) <= v < 2**63:
        raise MalformedLine("field '%s' must be an integer" % key)
    if not lo <= v <= hi:
        raise MalformedLine("field '%s' must be in %d..%d" % (key, lo, hi))
    return v


def parse_step(raw: str) -> dict:
    try:
        obj = strict_loads(trim_white_space(raw))
    except (ValueError, RecursionError):
        raise MalformedLine("not valid JSON")
    if not isinstance(obj, dict):
        raise MalformedLine("not a JSON object")
    op = obj.get("op")
    if not isinstance(op, str):
        raise MalformedLine("missing field 'op'")
    if op not in STEP_FIELDS:
        # The op as JSON, ASCII-escaped (json.dumps), inside the error's own JSON string.
        raise MalformedLine("unknown op %s" % json.dumps(op))
    required, optional = STEP_FIELDS[op]
    for key in sorted(required):
        if key not in obj:
            raise MalformedLine("%s: missing field '%s'" % (op, key))
    for key in sorted(obj):
        if key != "op" and key not in required and key not in optional:
            raise MalformedLine("%s: unknown field '%s'" % (op, key))
    for key in ("writer", "process", "event", "room", "label", "since", "at"):
        if key in obj and (not isinstance(obj[key], str) or obj[key] == ""):
            raise MalformedLine("field '%s' must be a non-empty string" % key)
    if op == "setup":
        writers = obj["writers"]
        readers = obj.get("readers", [])
        for key, names in (("writers", writers), ("readers", readers)):
            if not isinstance(names, list) or not all(_is_name(n) for n in names):
                raise MalformedLine("field '%s' must be a list of names [a-z][a-z0-9]*" % key)
        if not 1 <= len(writers) <= 3:
            raise MalformedLine("field 'writers' must name 1 to 3 writers")
        everyone = writers + readers
        if len(set(everyone)) != len(everyone) or "main" in everyone:
            raise MalformedLine("process names must be distinct and not 'main'")
        rooms = obj["rooms"]
        if not isinstance(rooms, dict) or not rooms:
            raise MalformedLine("field 'rooms' must map room labels to writers")
        for label, writer in rooms.items():
            if not _is_name(label) or writer not in writers:
                raise MalformedLine("room %s must be a name and map to a writer" % json.dumps(label))
        for w in writers:
            if w not in rooms.values():
                raise MalformedLine("writer %s has no room" % w)
        obj["readers"] = readers
        obj["base"] = _int(obj, "base", 30, 1_000_000) if "base" in obj else 40
    if op == "hold_fetch" and obj["at"] not in ("before_nextval", "after_nextval"):
        raise MalformedLine("field 'at' must be before_nextval or after_nextval")
    if op == "advance":
        _int(obj, "ms", 0, MAX_ADVANCE_MS)
    if op == "sync" and "timeout_ms" in obj:
        _int(obj, "timeout_ms", 0, MAX_ADVANCE_MS)
    return obj


# ---- running one file -----------------------------------------------------------------------


def run_choreography(lines: list[str]) -> list[str]:
    out: list[str] = []
    harness: SystemOracle | None = None
    try:
        for lineno, raw in enumerate(lines, start=1):
            if is_blank(raw) or trim_white_space(raw).startswith("#"):
                continue
            try:
                step = parse_step(raw)
            except MalformedLine as e:
                out.append(dumps({"error": "line %d: %s" % (lineno, e)}))
                continue
            if harness is None and step["op"] != "setup":
                out.append(dumps({"error": "line %d: the first step must be setup" % lineno}))
                continue
            if harness is not None and step["op"] == "setup":
                out.append(dumps({"error": "line %d: setup comes once, first" % lineno}))
                continue
            try:
                if step["op"] == "setup":
                    SystemOracle.writers = list(step["writers"])
                    SystemOracle.readers = list(step["readers"])
                    harness = SystemOracle("runTest")
                    harness.setUp()
                    result = harness.do_setup(step)
                else:
                    result = harness.apply(step)
            except StepError as e:
                out.append(dumps({"error": "line %d: %s" % (lineno, e)}))
                continue
            result = dict(result)
            result["step"] = lineno
            result["op"] = step["op"]
            result["handled"] = {
                n: list(p.handled) for n, p in sorted(harness.procs.items()) if p.handled
            }
            result["announced"] = {
                n: list(p.announced)
                for n, p in sorted(harness.procs.items())
                if p.announced and p.role != "writer"
            }
            completed = harness.collect_long_polls()
            if completed:
                result["completed"] = completed
            for p in harness.procs.values():
                p.handled.clear()
                p.announced.clear()
            out.append(dumps(result))
    finally:
        if harness is not None:
            _shutdown(harness)
    return out


def _shutdown(harness: SystemOracle) -> None:
    cleanups = getattr(harness, "_cleanups", [])
    while cleanups:
        func, args, kwargs = cleanups.pop()
        try:
            res = func(*args, **kwargs)
            if res is not None and hasattr(res, "addBoth"):
                harness._wait_for_deferred(res)
        except Exception:
            pass


def fix_dir_name(fixes: list[str]) -> str:
    """The folder of expected files for a set of fixes: `fix-all` when all of them, else
    `fix-` and their names in F1..F4 order joined by `+` (`fix-f1+f3`)."""
    names = resolve_fix_names(fixes)
    return "fix-" + ("all" if names == list(FIX_NAMES) else "+".join(names))


def _expected_path(path: str, fixes: list[str] | None = None) -> str:
    base = path[: -len(".jsonl")] if path.endswith(".jsonl") else path
    if fixes:
        base = os.path.join(os.path.dirname(base), fix_dir_name(fixes), os.path.basename(base))
    return base + ".expected.jsonl"


def _run_files(paths: list[str], fixes: list[str] | None = None) -> list[tuple[str, str]]:
    """Runs each file in this process, with `fixes` applied (before any homeserver is
    built; a process of the pool applies them itself); (path, output text) per file, in
    order."""
    apply_fixes(fixes or [])
    results = []
    for path in paths:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        out = run_choreography(lines)
        results.append((path, "".join(line + "\n" for line in out)))
    return results


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--out-dir", help="write DIR/<name>.out.jsonl per file")
    mode.add_argument(
        "--update", action="store_true", help="write <name>.expected.jsonl beside each file"
    )
    mode.add_argument(
        "--check",
        action="store_true",
        help="compare with <name>.expected.jsonl beside each file; exit 1 on any difference",
    )
    ap.add_argument("--jobs", type=int, default=1, help="processes (each its own harness)")
    ap.add_argument(
        "--fix",
        action="append",
        default=[],
        metavar="NAME",
        help="apply a proposed fix of fixes.py (f1, f2, f3, f4, f5 or all; repeatable); "
        "--update/--check then use DIR/fix-<names>/ (FIXES.md)",
    )
    ap.add_argument("files", nargs="+")
    args = ap.parse_args(argv)
    try:
        fixes = resolve_fix_names(args.fix)
    except ValueError as e:
        ap.error(str(e))
    if not (args.out_dir or args.update or args.check) and len(args.files) != 1:
        print("system_oracle: give --out-dir, --update or --check for several files", file=sys.stderr)
        return 2
    for path in args.files:
        if (args.update or args.check) and path.endswith(".expected.jsonl"):
            print("system_oracle: %s is an expected file, not a choreography" % path, file=sys.stderr)
            return 2
        # A file that cannot be read, or is not UTF-8, is refused whole (as streamsim does).
        try:
            with open(path, "rb") as f:
                f.read().decode("utf-8")
        except OSError as e:
            print("system_oracle: cannot read %s: %s" % (path, e.strerror or e), file=sys.stderr)
            return 2
        except UnicodeDecodeError as e:
            print("system_oracle: cannot read %s: not UTF-8: %s" % (path, e), file=sys.stderr)
            return 2
    jobs = max(1, min(args.jobs, len(args.files)))
    if jobs == 1:
        results = _run_files(args.files, fixes)
    else:
        import functools
        import multiprocessing

        shards = [args.files[i::jobs] for i in range(jobs)]
        with multiprocessing.get_context("spawn").Pool(jobs) as pool:
            parts = pool.map(functools.partial(_run_files, fixes=fixes), shards)
        by_path = {path: text for part in parts for path, text in part}
        results = [(path, by_path[path]) for path in args.files]
    status = 0
    differing = 0
    for path, text in results:
        if args.out_dir:
            os.makedirs(args.out_dir, exist_ok=True)
            base = os.path.basename(path)
            if base.endswith(".jsonl"):
                base = base[: -len(".jsonl")]
            with open(os.path.join(args.out_dir, base + ".out.jsonl"), "w") as f:
                f.write(text)
        elif args.update:
            expected_path = _expected_path(path, fixes)
            os.makedirs(os.path.dirname(expected_path) or ".", exist_ok=True)
            with open(expected_path, "w") as f:
                f.write(text)
        elif args.check:
            try:
                with open(_expected_path(path, fixes)) as f:
                    expected = f.read()
            except OSError:
                expected = None
            if expected != text:
                status = 1
                differing += 1
                print("system_oracle: %s: real Synapse no longer prints %s" % (path, _expected_path(path, fixes)))
                got, want = text.splitlines(), (expected or "").splitlines()
                for i in range(max(len(got), len(want))):
                    g = got[i] if i < len(got) else "<none>"
                    w = want[i] if i < len(want) else "<none>"
                    if g != w:
                        print("  output line %d\n    oracle:   %s\n    expected: %s" % (i + 1, g, w))
                        break
        else:
            sys.stdout.write(text)
    if args.check:
        print(
            "system oracle: %d choreographies, %d differ from their expected files"
            % (len(results), differing)
        )
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

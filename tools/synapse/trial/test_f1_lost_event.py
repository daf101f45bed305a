"""An event is never returned by incremental /sync after a rolling restart of an idle event
persister (Synapse 1.163.2).

Self-contained trial test against Synapse's own multi-worker harness; drop it into Synapse's
`tests/replication/` and run `trial tests.replication.test_f1_lost_event` (on PostgreSQL,
with the `redis` extra). It FAILS on 1.163.2: that failure is the bug.

What happens:
1. worker1 writes the last event of the stream (stream id N).
2. A message X is sent in a room persisted by worker1; it gets N+1 and its `persist_events`
   transaction is slow (held here).
3. worker2, an idle event persister, restarts. `MultiWriterIdGenerator._load_current_ids`
   takes the sequence's `last_value` (N+1) as worker2's own position (PR #17309), since no
   row of worker2 lies above the stored minimum, and worker2 announces `POSITION events
   worker2 N+1 N+1` on connecting.
4. Every other process advances worker2 to N+1; the gapless skip-forward moves
   `persisted_upto` to N+1 while N+1 is uncommitted. A /sync now returns `s{N+1}`.
5. X commits. Its `RDATA events worker1 N+1` is discarded as already seen
   (`ReplicationCommandHandler._process_rdata`: token <= current_token), so the sync
   worker's `_events_stream_cache` never marks X's room changed and its notifier never
   announces X.
6. Incremental /sync on the sync worker never returns X, from any token; an initial sync
   does.

Only a restart of worker2 is harness-specific here: `make_worker_hs` cannot restart a worker
(the worker would be set up on a copy of the template database and share main's clock and
pool), so `_start_worker` builds it on main's database with its own clock and pool, and
`_kill_worker` cuts its fake-Redis connections before `hs.shutdown()`.
"""

from typing import Any
from unittest.mock import Mock, patch

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from synapse.app.generic_worker import GenericWorkerServer
from synapse.config.database import DatabaseConnectionConfig
from synapse.logging.context import make_deferred_yieldable
from synapse.rest import admin
from synapse.rest.client import login, room, sync
from synapse.server import HomeServer
from synapse.util.clock import Clock

from tests.replication._base import BaseMultiWorkerStreamTestCase
from tests.server import FakeTransport, make_fake_db_pool, make_request, start_test_homeserver
from tests.unittest import make_homeserver_config_obj


class RollingRestartLosesEventTestCase(BaseMultiWorkerStreamTestCase):
    servlets = [
        admin.register_servlets_for_client_rest_resource,
        room.register_servlets,
        login.register_servlets,
        sync.register_servlets,
    ]

    def default_config(self) -> dict:
        conf = super().default_config()
        conf["stream_writers"] = {"events": ["worker1", "worker2"]}
        conf["instance_map"] = {
            "main": {"host": "testserv", "port": 8765},
            "worker1": {"host": "testserv", "port": 1001},
            "worker2": {"host": "testserv", "port": 1002},
        }
        conf["presence"] = {"enabled": False}
        return conf

    # ---- a worker that can be killed and started again under its name ------------------

    def _start_worker(self, name: str) -> HomeServer:
        config = self._get_worker_hs_config()
        config["worker_app"] = "synapse.app.generic_worker"
        config["worker_name"] = name
        config_obj = make_homeserver_config_obj(config)
        args = dict(self.hs.config.database.databases[0].config["args"])
        config_obj.database.databases = [
            DatabaseConnectionConfig("master", {"name": "psycopg2", "args": args})
        ]
        hs = GenericWorkerServer("test", config=config_obj, reactor=self.reactor)
        hs._clock = Clock(self.reactor, server_name="test")
        hs.tls_server_context_factory = Mock()
        with patch("synapse.storage.database.make_pool", side_effect=make_fake_db_pool):
            hs.setup()
        start_test_homeserver(hs=hs, cleanup_func=self.addCleanup, reactor=self.reactor)
        self._hs_to_site[hs] = self._site_for(hs)
        port = {"worker1": 1001, "worker2": 1002}[name]
        if name not in self._current:
            # HTTP replication to this instance goes to its current incarnation.
            self.reactor.add_tcp_client_callback(
                "1.2.3.4",
                port,
                lambda: self._handle_http_replication_attempt(self._current[name], port),
            )
        self._current[name] = hs
        self._connections[name] = []
        before = len(self._server_protocols)
        hs.get_replication_command_handler().start_replication(hs)
        self.pump()
        self._connections[name] = self._server_protocols[before:]
        return hs

    def _site_for(self, hs: HomeServer) -> Any:
        from synapse.http.site import SynapseSite
        from synapse.replication.http import ReplicationRestResource

        resource = ReplicationRestResource(hs)
        for servlet in self.servlets:
            servlet(hs, resource)
        return SynapseSite(
            logger_name="synapse.access.http.fake",
            site_tag="test-%s" % hs.get_instance_name(),
            config=hs.config.server.listeners[0],
            resource=resource,
            server_version_string="1",
            max_request_body_size=8192,
            reactor=self.reactor,
            hs=hs,
        )

    def connect_any_redis_attempts(self) -> None:
        # As the harness's, remembering each server-side connection and its client.
        if not hasattr(self, "_server_protocols"):
            self._server_protocols: list = []
            self._client_of: dict = {}
            self._connections: dict = {}
            self._current: dict = {}
        clients = self.reactor.tcpClients
        while clients:
            (host, port, client_factory, _timeout, _bind) = clients.pop(0)
            client = client_factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 6379))
            server = self._redis_server.buildProtocol(IPv4Address("TCP", host, port))
            client.makeConnection(FakeTransport(server, self.reactor, client))
            server.makeConnection(FakeTransport(client, self.reactor, server))
            self._server_protocols.append(server)
            self._client_of[id(server)] = (client, client_factory)

    def _kill_worker(self, name: str, hs: HomeServer) -> None:
        for server in self._connections.pop(name, []):
            client, _factory = self._client_of[id(server)]
            self._redis_server.remove_subscriber(server)
            for proto in (server, client):
                proto.transport.disconnecting = True
                proto.transport._protocol = None
            server.connectionLost(Failure(ConnectionDone()))
            client.connectionLost(Failure(ConnectionDone()))
        hs.get_replication_command_handler()._factory.stopTrying()
        self.get_success(hs.shutdown())

    # ---- the test ---------------------------------------------------------------------

    def test_event_persisted_across_idle_writer_restart_reaches_incremental_sync(
        self,
    ) -> None:
        worker1 = self._start_worker("worker1")
        worker2 = self._start_worker("worker2")
        sync_hs = self.make_worker_hs("synapse.app.generic_worker", {"worker_name": "sync"})
        sync_site = self._hs_to_site[sync_hs]

        user_id = self.register_user("user", "pass")
        tok = self.login("user", "pass")
        room_id = self._generate_rooms_on_worker(
            user_id, tok, ["worker1"], try_at_most_count=30
        )["worker1"]

        # worker1 writes the last event of the stream.
        self.helper.send(room_id, body="before", tok=tok)
        channel = make_request(self.reactor, sync_site, "GET", "/sync", access_token=tok)
        since = channel.json_body["next_batch"]

        # X's persist transaction on worker1 is slow.
        gate: "defer.Deferred[None]" = defer.Deferred()
        db_pool = worker1.get_datastores().persist_events.db_pool
        run_interaction = db_pool.runInteraction

        async def slow_persist(desc: str, func: Any, *args: Any, **kwargs: Any) -> Any:
            if desc == "persist_events":
                await make_deferred_yieldable(gate)
            return await run_interaction(desc, func, *args, **kwargs)

        db_pool.runInteraction = slow_persist  # type: ignore[method-assign]
        x = make_request(
            self.reactor,
            self._hs_to_site[worker1],
            "PUT",
            "/rooms/%s/send/m.room.message/x" % room_id,
            content={"msgtype": "m.text", "body": "X"},
            access_token=tok,
            await_result=False,
        )
        self.pump()

        # A rolling restart of the idle worker2.
        self._kill_worker("worker2", worker2)
        self._start_worker("worker2")

        # X commits.
        gate.callback(None)
        self.pump()
        self.assertEqual(x.code, 200, x.result)
        x_id = x.json_body["event_id"]

        initial = make_request(self.reactor, sync_site, "GET", "/sync", access_token=tok)
        initial_ids = [
            e["event_id"] for e in initial.json_body["rooms"]["join"][room_id]["timeline"]["events"]
        ]
        self.assertIn(x_id, initial_ids, "X is committed: an initial sync shows it")

        incremental = make_request(
            self.reactor, sync_site, "GET", "/sync?since=%s" % since, access_token=tok
        )
        rooms = incremental.json_body.get("rooms", {}).get("join", {})
        incremental_ids = [
            e["event_id"] for e in rooms.get(room_id, {}).get("timeline", {}).get("events", [])
        ]
        self.assertIn(
            x_id,
            incremental_ids,
            "incremental /sync missed X: the sync worker discarded X's RDATA as already "
            "seen, so its stream-change cache never marked the room",
        )

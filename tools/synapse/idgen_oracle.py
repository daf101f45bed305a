#!/usr/bin/env python3
"""Runs ID-generator op scripts against REAL Synapse 1.163.2 on PostgreSQL.

The op language is shared/research/idgen-ops.md. The generators are Synapse's own
`MultiWriterIdGenerator`, built and driven exactly as tests/storage/test_id_generators.py does:
the test case class of that file (a HomeserverTestCase on PostgreSQL, with its synchronous
database pool) provides the homeserver, the DatabasePool and the `_insert_rows` /
`_insert_row_with_id` helpers used by `preload`.

    idgen_oracle.py --out-dir DIR SCRIPT.jsonl...

writes DIR/<script basename without .jsonl>.out.jsonl, one line per non-blank input line.

Environment (target/synapse-env.sh sets these): PYTHONPATH (Synapse's `tests` package),
STREAMSIM_PG_HOST / STREAMSIM_PG_PORT / STREAMSIM_PG_USER. Synapse's test harness creates its own
scratch databases on that server (a schema template per process plus one test database) and
drops them at exit, so several oracle processes may run at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings

I64_MIN = -(2**63)
I64_MAX = 2**63 - 1


from oracle_env import configure_environment  # noqa: E402
from strict_json import (  # noqa: E402
    has_surrogate,
    is_blank,
    no_duplicate_keys,
    parse_float,
    reject_constant,
)

configure_environment()
# Synapse logs warnings (e.g. "sequence is behind table", "db connection from sentinel
# context"); they are expected here and would only clutter stderr.
logging.disable(logging.CRITICAL)
warnings.simplefilter("ignore")

from twisted.internet.defer import ensureDeferred  # noqa: E402
from twisted.python.failure import Failure  # noqa: E402

from synapse.storage.util.id_generators import MultiWriterIdGenerator  # noqa: E402

from tests.storage.test_id_generators import (  # noqa: E402
    WorkerMultiWriterIdGeneratorTestCase,
)


class AbortForTest(Exception):
    """The exception an `abort` op exits the allocation context with."""


class MalformedLine(Exception):
    pass


class OpError(Exception):
    pass


class _Handle:
    __slots__ = ("ctx", "ids", "instance", "incarnation", "state", "written")

    def __init__(self, ctx, ids, instance, incarnation):
        self.ctx = ctx
        self.ids = ids
        self.instance = instance
        self.incarnation = incarnation
        self.state = "open"  # open | finished | aborted | abandoned
        self.written = False


class _Instance:
    __slots__ = ("gen", "writers", "incarnation")

    def __init__(self, gen, writers, incarnation):
        self.gen = gen
        self.writers = writers
        self.incarnation = incarnation


class IdGenOracle(WorkerMultiWriterIdGeneratorTestCase):
    """The test file's own test case class, used as a harness (never run as a test)."""

    def runTest(self) -> None:  # pragma: no cover - required by the unittest machinery
        pass

    # ---- plumbing -------------------------------------------------------------------------

    def _run(self, awaitable):
        """Drive an awaitable to completion on the test reactor; return or raise its result.

        The same as HomeserverTestCase.get_success_or_raise, minus its pumping of the clock.
        """
        d = ensureDeferred(awaitable)
        self._wait_for_deferred(d)
        results: list = []
        d.addBoth(results.append)
        result = results[0]
        if isinstance(result, Failure):
            result.raiseException()
        return result

    def get_success(self, d):  # type: ignore[override]
        """The test file's helpers (`_insert_rows`, ...) call this: raise their real error."""
        return self._run(d)

    def reset_world(self) -> None:
        """A fresh world: new table and sequence, no positions, no instances, no handles."""

        def _reset(txn) -> None:
            txn.execute("DROP TABLE IF EXISTS foobar")
            txn.execute("DROP SEQUENCE IF EXISTS foobar_seq")
            txn.execute("DELETE FROM stream_positions WHERE stream_name = 'test_stream'")
            self._setup_db(txn)  # the test file's CREATE SEQUENCE + CREATE TABLE

        self._run(self.db_pool.runInteraction("_reset_world", _reset))
        self.live: dict[str, _Instance] = {}
        self.handles: dict[str, _Handle] = {}
        self.incarnations = 0

    def shutdown(self) -> None:
        """Run the harness's cleanups (close the pool, shut the homeserver, drop the test DB)."""
        cleanups = getattr(self, "_cleanups", [])
        while cleanups:
            func, args, kwargs = cleanups.pop()
            try:
                res = func(*args, **kwargs)
                if res is not None and hasattr(res, "addBoth"):
                    self._wait_for_deferred(res)
            except Exception:
                pass

    # ---- one script -----------------------------------------------------------------------

    def run_script(self, lines: list[str]) -> list[str]:
        self.reset_world()
        out = []
        for lineno, raw in enumerate(lines, start=1):
            if is_blank(raw):
                continue
            try:
                op = parse_op(raw, lineno)
                result = self.apply(op)
            except MalformedLine as e:
                result = {"error": "line %d: %s" % (lineno, e)}
            except OpError as e:
                result = {"error": str(e)}
            except Exception as e:  # a Synapse or database error: data, not a crash
                result = {"error": "%s: %s" % (type(e).__name__, _first_line(e))}
            out.append(json.dumps(result, sort_keys=True, separators=(",", ":")))
        return out

    def _live(self, name: str) -> _Instance:
        inst = self.live.get(name)
        if inst is None:
            raise OpError("instance %r is not live" % (name,))
        return inst

    def _open_handle(self, name: str) -> _Handle:
        h = self.handles.get(name)
        if h is None:
            raise OpError("handle %r is unknown" % (name,))
        if h.state != "open":
            raise OpError("handle %r is %s" % (name, h.state))
        return h

    def apply(self, op: dict):
        kind = op["op"]
        if kind == "preload":
            if "count" in op:
                # The test file's helper: one transaction, nextval + INSERT + upsert per row.
                self._insert_rows(op["instance"], op["count"])
            else:
                self._insert_row_with_id(op["instance"], op["id"])
            return {"ok": True}

        if kind == "start":
            return self.op_start(op["instance"], op["writers"])

        if kind == "alloc":
            return self.op_alloc(op["instance"], op["n"], op["handle"])

        if kind == "write":
            h = self._open_handle(op["handle"])
            if h.written:
                raise OpError("handle %r was already written" % (op["handle"],))
            ids, instance = list(h.ids), h.instance

            def _write(txn) -> None:
                for i in ids:
                    txn.execute(
                        "INSERT INTO foobar (stream_id, instance_name) VALUES (?, ?)",
                        (i, instance),
                    )

            self._run(self.db_pool.runInteraction("_write_rows", _write))
            h.written = True
            return {"ok": True}

        if kind == "finish":
            h = self._open_handle(op["handle"])
            h.state = "finished"
            self._run(h.ctx.__aexit__(None, None, None))
            return {"ok": True}

        if kind == "abort":
            h = self._open_handle(op["handle"])
            h.state = "aborted"
            e = AbortForTest("abort")
            self._run(h.ctx.__aexit__(type(e), e, None))
            return {"ok": True}

        if kind == "advance":
            inst = self._live(op["instance"])
            inst.gen.advance(op["writer"], op["token"])
            return {"ok": True}

        if kind == "replicate":
            src_name = op["from"]
            src = self._live(src_name)
            token = src.gen.get_current_token_for_writer(src_name)
            for name in sorted(self.live):
                if name != src_name:
                    self.live[name].gen.advance(src_name, token)
            return {"ok": True, "token": token}

        if kind == "observe":
            inst = self._live(op["instance"])
            g = inst.gen
            return {
                "current_token": g.get_current_token(),
                "persisted_upto": g.get_persisted_upto_position(),
                "minimal_local": g.get_minimal_local_current_token(),
                "positions": g.get_positions(),
                "token_for_writer": {
                    w: g.get_current_token_for_writer(w) for w in inst.writers
                },
            }

        raise AssertionError(kind)  # parse_op only lets known ops through

    def op_start(self, name: str, writers: list[str]):
        old = self.live.pop(name, None)
        if old is not None:
            for h in self.handles.values():
                if h.incarnation == old.incarnation and h.state == "open":
                    h.state = "abandoned"

        writers_arg = list(writers)  # verbatim: [] is Synapse's "no explicit writers" mode

        def _create(conn):
            id_gen = MultiWriterIdGenerator(
                db_conn=conn,
                db=self.db_pool,
                notifier=self.hs.get_replication_notifier(),
                stream_name="test_stream",
                server_name=self.hs.hostname,
                instance_name=name,
                tables=[(table, "instance_name", "stream_id") for table in self.tables],
                sequence_name="foobar_seq",
                writers=writers_arg,
                positive=True,
            )
            conn.commit()
            return id_gen

        try:
            gen = self._run(self.db_pool.runWithConnection(_create))
        except Exception as e:
            return {"error": "%s: %s" % (type(e).__name__, _first_line(e))}
        self.incarnations += 1
        self.live[name] = _Instance(gen, list(writers), self.incarnations)
        return {"ok": True}

    def op_alloc(self, name: str, n: int, handle: str):
        if handle in self.handles:
            raise OpError("handle %r is already bound" % (handle,))
        inst = self._live(name)
        # get_next()/get_next_mult() raise "Tried to allocate stream ID on non-writer".
        ctx = inst.gen.get_next() if n == 1 else inst.gen.get_next_mult(n)
        got = self._run(ctx.__aenter__())
        ids = [got] if n == 1 else list(got)
        self.handles[handle] = _Handle(ctx, ids, name, inst.incarnation)
        return {"ids": ids}


def _first_line(e: BaseException) -> str:
    """The first non-blank line of an exception's message, stripped.

    (IncorrectDatabaseSetup's message starts with a newline; its literal first line is empty.)
    """
    for line in str(e).split("\n"):
        if line.strip():
            return line.strip()
    return ""


# ---- parsing (idgen-ops.md, "Malformed lines") ---------------------------------------------






def _str(op: dict, key: str) -> str:
    if key not in op:
        raise MalformedLine("missing field %r" % (key,))
    v = op[key]
    if not isinstance(v, str):
        raise MalformedLine("field %r must be a string" % (key,))
    if v == "":
        raise MalformedLine("field %r must be non-empty" % (key,))
    return v


def _int(op: dict, key: str, minimum: int | None = None) -> int:
    if key not in op:
        raise MalformedLine("missing field %r" % (key,))
    v = op[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise MalformedLine("field %r must be an integer" % (key,))
    if not I64_MIN <= v <= I64_MAX:
        raise MalformedLine("field %r is outside the 64-bit integer range" % (key,))
    if minimum is not None and v < minimum:
        raise MalformedLine("field %r must be >= %d" % (key, minimum))
    return v


def parse_op(raw: str, lineno: int) -> dict:
    try:
        obj = json.loads(
            raw,
            parse_constant=reject_constant,
            parse_float=parse_float,
            object_pairs_hook=no_duplicate_keys,
        )
    except (ValueError, RecursionError) as e:
        raise MalformedLine("not valid JSON: %s" % (e,))
    if not isinstance(obj, dict):
        raise MalformedLine("not a JSON object")
    if has_surrogate(obj):
        raise MalformedLine("not valid JSON: lone surrogate in a string")
    if "op" not in obj:
        raise MalformedLine("missing field 'op'")
    kind = obj["op"]
    op: dict = {"op": kind}
    if kind == "preload":
        op["instance"] = _str(obj, "instance")
        has_count, has_id = "count" in obj, "id" in obj
        if has_count and has_id:
            raise MalformedLine("preload has both 'count' and 'id'")
        if has_count:
            op["count"] = _int(obj, "count", 0)
        elif has_id:
            op["id"] = _int(obj, "id", 1)
        else:
            raise MalformedLine("preload needs 'count' or 'id'")
    elif kind == "start":
        op["instance"] = _str(obj, "instance")
        if "writers" not in obj:
            raise MalformedLine("missing field 'writers'")
        writers = obj["writers"]
        if not isinstance(writers, list):
            raise MalformedLine("field 'writers' must be a list of strings")
        for w in writers:
            if not isinstance(w, str) or w == "":
                raise MalformedLine("field 'writers' must hold non-empty strings")
        op["writers"] = writers
    elif kind == "alloc":
        op["instance"] = _str(obj, "instance")
        op["n"] = _int(obj, "n", 1)
        op["handle"] = _str(obj, "handle")
    elif kind in ("write", "finish", "abort"):
        op["handle"] = _str(obj, "handle")
    elif kind == "advance":
        op["instance"] = _str(obj, "instance")
        op["writer"] = _str(obj, "writer")
        op["token"] = _int(obj, "token")
    elif kind == "replicate":
        op["from"] = _str(obj, "from")
    elif kind == "observe":
        op["instance"] = _str(obj, "instance")
    else:
        raise MalformedLine("unknown op %s" % (json.dumps(kind),))
    return op


# ---- main -----------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("scripts", nargs="+")
    args = ap.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)

    scripts = []
    for path in args.scripts:
        try:
            with open(path, "rb") as f:
                data = f.read()
            text = data.decode("utf-8", errors="surrogateescape")
        except OSError as e:
            print("idgen_oracle: cannot read %s: %s" % (path, e), file=sys.stderr)
            return 2
        base = os.path.basename(path)
        if base.endswith(".jsonl"):
            base = base[: -len(".jsonl")]
        # Lines are split on "\n" only (a final line without a newline still counts).
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        scripts.append((os.path.join(args.out_dir, base + ".out.jsonl"), lines))

    harness = IdGenOracle("runTest")
    harness.setUp()
    try:
        for out_path, lines in scripts:
            out = harness.run_script(lines)
            with open(out_path, "w", encoding="utf-8") as f:
                f.write("".join(line + "\n" for line in out))
    finally:
        harness.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

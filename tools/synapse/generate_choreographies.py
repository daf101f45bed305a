#!/usr/bin/env python3
"""Writes seeded random choreographies (tools/synapse/CHOREO.md) that go after the hard cases.

    generate_choreographies.py --seeds 0..12 --out-dir tests/data/system

writes `gen_<seed>.jsonl` per seed. The same seed always gives the same file (Python's
`random.Random(seed)`, no other source of randomness). Only steps that can act are drawn:
no restart of a writer that holds an event, no release of what is not held, no send into a
room whose earlier event is still held (persistence is serialised per room, so it would
only queue). Each choreography ends by releasing everything, letting 3 s pass, then every
reader's /sync from its first token and an initial one, and an observation of every process.

The mix leans on the shapes where replication loses events: an event held in its persist
transaction or its sequence fetch while another writer restarts or writes, a reader or main
dropped off the bus and rejoining while one writer's publishes are held, idle writers.
"""

from __future__ import annotations

import argparse
import json
import os
import random


def dumps(obj: dict) -> str:
    return json.dumps(obj, separators=(",", ":"))


class Gen:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.seed = seed
        n_writers = self.rng.choice([2, 2, 3])
        n_readers = self.rng.choice([1, 1, 2])
        self.writers = ["worker%d" % (i + 1) for i in range(n_writers)]
        self.readers = ["sync%d" % (i + 1) for i in range(n_readers)]
        self.rooms: dict[str, str] = {}
        for i, w in enumerate(self.writers):
            for suffix in "ab":
                self.rooms["r%d%s" % (i + 1, suffix)] = w
        self.steps: list[dict] = []
        self.held: dict[str, str] = {}  # event label -> writer
        self.held_at: dict[str, str] = {}  # event label -> "fetch" | "persist"
        self.held_room: dict[str, str] = {}  # room -> held event label
        self.hold_persist: set[str] = set()
        self.hold_fetch: set[str] = set()
        self.disconnected: set[str] = set()
        self.held_publishes: set[str] = set()
        self.sent: list[str] = []
        self.with_id: list[str] = []
        self.tokens: dict[str, list[str]] = {}  # process -> sync labels
        self.next_event = 0
        self.next_label = 0

    def processes(self) -> list[str]:
        return ["main"] + self.writers + self.readers

    def syncers(self) -> list[str]:
        return ["main"] + self.readers

    def add(self, step: dict) -> None:
        self.steps.append(step)

    # ---- step kinds ---------------------------------------------------------------------

    def send(self) -> bool:
        rooms = [r for r in sorted(self.rooms) if r not in self.held_room]
        if not rooms:
            return False
        self._send_into(self.rng.choice(rooms))
        return True

    def _send_into(self, room: str) -> None:
        """A send into `room`, held wherever the writer's holds say."""
        writer = self.rooms[room]
        label = "E%d" % self.next_event
        self.next_event += 1
        self.add({"op": "send", "event": label, "room": room})
        self.sent.append(label)
        if writer in self.hold_fetch:
            self.hold_fetch.discard(writer)
            self.held[label] = writer
            self.held_at[label] = "fetch"
            self.held_room[room] = label
        elif writer in self.hold_persist:
            self.held[label] = writer
            self.held_at[label] = "persist"
            self.held_room[room] = label
            self.with_id.append(label)
        else:
            self.with_id.append(label)

    def release(self) -> bool:
        if not self.held:
            return False
        label = self.rng.choice(sorted(self.held))
        writer = self.held.pop(label)
        room = next(r for r, lb in self.held_room.items() if lb == label)
        self.add({"op": "release", "event": label})
        if label not in self.with_id:
            self.with_id.append(label)
        if self.held_at.pop(label) == "fetch" and writer in self.hold_persist:
            # Still under hold_persist: the event is held again at its persist.
            self.held[label] = writer
            self.held_at[label] = "persist"
            return True
        del self.held_room[room]
        return True

    def hold_persist_step(self) -> bool:
        free = [w for w in self.writers if w not in self.hold_persist]
        if not free:
            return False
        w = self.rng.choice(free)
        self.hold_persist.add(w)
        self.add({"op": "hold_persist", "writer": w})
        return True

    def unhold_persist(self) -> bool:
        if not self.hold_persist:
            return False
        w = self.rng.choice(sorted(self.hold_persist))
        self.hold_persist.discard(w)
        self.add({"op": "unhold_persist", "writer": w})
        return True

    def hold_fetch_step(self) -> bool:
        free = [w for w in self.writers if w not in self.hold_fetch and w not in self.hold_persist]
        if not free:
            return False
        w = self.rng.choice(free)
        self.hold_fetch.add(w)
        at = self.rng.choice(["before_nextval", "before_nextval", "after_nextval"])
        self.add({"op": "hold_fetch", "writer": w, "at": at})
        return True

    def restart(self) -> bool:
        held_writers = set(self.held.values())
        cands = [p for p in self.writers + self.readers if p not in held_writers]
        if not cands:
            return False
        p = self.rng.choice(cands)
        self.add({"op": "restart", "process": p})
        self.disconnected.discard(p)
        return True

    def disconnect(self) -> bool:
        cands = [p for p in self.processes() if p not in self.disconnected]
        if not cands:
            return False
        # Readers and main most of the time: that is where catch-up happens.
        weighted = [p for p in cands if p not in self.writers] * 3 + cands
        p = self.rng.choice(weighted)
        self.disconnected.add(p)
        self.add({"op": "disconnect", "process": p})
        return True

    def reconnect(self) -> bool:
        if not self.disconnected:
            return False
        p = self.rng.choice(sorted(self.disconnected))
        # Half the time one writer's publishes are held, so the answers race.
        race = self.rng.random() < 0.5 and len(self.writers) > 1
        w = self.rng.choice(self.writers) if race else None
        if w is not None and w not in self.held_publishes:
            self.add({"op": "hold_publishes", "process": w})
        self.disconnected.discard(p)
        self.add({"op": "reconnect", "process": p})
        if w is not None and w not in self.held_publishes:
            self.add({"op": "release_publishes", "process": w})
        return True

    def hold_publishes(self) -> bool:
        cands = [w for w in self.writers if w not in self.held_publishes]
        if not cands:
            return False
        w = self.rng.choice(cands)
        self.held_publishes.add(w)
        self.add({"op": "hold_publishes", "process": w})
        return True

    def release_publishes(self) -> bool:
        if not self.held_publishes:
            return False
        w = self.rng.choice(sorted(self.held_publishes))
        self.held_publishes.discard(w)
        self.add({"op": "release_publishes", "process": w})
        return True

    def advance(self) -> bool:
        self.add({"op": "advance", "ms": self.rng.choice([100, 500, 1000, 1000, 2500])})
        return True

    def sync(self) -> bool:
        p = self.rng.choice(self.syncers())
        label = "T%d" % self.next_label
        self.next_label += 1
        step = {"op": "sync", "process": p, "label": label}
        earlier = self.tokens.get(p, [])
        if earlier and self.rng.random() < 0.8:
            step["since"] = self.rng.choice(earlier)
        self.tokens.setdefault(p, []).append(label)
        self.add(step)
        return True

    def observe(self) -> bool:
        self.add({"op": "observe", "process": self.rng.choice(self.processes())})
        return True

    def wait(self) -> bool:
        if not self.with_id:
            return False
        ev = self.rng.choice(self.with_id)
        label = "W%d" % self.next_label
        self.next_label += 1
        # The writer of the event's room.
        writer = None
        for s in self.steps:
            if s.get("op") == "send" and s.get("event") == ev:
                writer = self.rooms[s["room"]]
        p = self.rng.choice(self.syncers())
        self.add({"op": "wait", "process": p, "writer": writer, "event": ev, "label": label})
        return True

    # ---- motifs: the shapes of F1, F2 and F3, with whatever the dice put around them ------

    def _send_to(self, writer: str) -> bool:
        rooms = [r for r in sorted(self.rooms) if self.rooms[r] == writer and r not in self.held_room]
        if not rooms:
            return False
        self._send_into(rooms[0])
        return True

    def motif_f1(self) -> bool:
        """A writer writes, its next event is held at persist, another writer restarts."""
        w, other = self.rng.sample(self.writers, 2)
        if other in set(self.held.values()) or w in self.hold_fetch:
            return False
        self._send_to(w)
        if w not in self.hold_persist:
            self.hold_persist.add(w)
            self.add({"op": "hold_persist", "writer": w})
        self._send_to(w)
        self.add({"op": "restart", "process": other})
        self.disconnected.discard(other)
        return True

    def motif_f2(self) -> bool:
        """A reader drops off the bus, a writer writes, the idle one follows, the reader
        rejoins while the writer's publishes are held."""
        cands = [p for p in self.syncers() if p not in self.disconnected]
        if not cands:
            return False
        p = self.rng.choice(cands)
        w = self.rng.choice(self.writers)
        self.disconnected.add(p)
        self.add({"op": "disconnect", "process": p})
        self._send_to(w)
        self.add({"op": "advance", "ms": 2000})
        if w not in self.held_publishes:
            self.add({"op": "hold_publishes", "process": w})
        self.disconnected.discard(p)
        self.add({"op": "reconnect", "process": p})
        if w not in self.held_publishes:
            self.add({"op": "release_publishes", "process": w})
        return True

    def motif_f3(self) -> bool:
        """A fetch held before nextval, the writer's next event in another room, and a
        second persisted-position call from another writer."""
        w, other = self.rng.sample(self.writers, 2)
        if w in self.hold_fetch or w in self.hold_persist or other in self.hold_persist:
            return False
        self.hold_fetch.add(w)
        self.add({"op": "hold_fetch", "writer": w, "at": "before_nextval"})
        self._send_to(w)
        self._send_to(w)
        self._send_to(other)
        return True

    # ---- a whole choreography -----------------------------------------------------------

    def build(self) -> list[str]:
        self.add(
            {
                "op": "setup",
                "writers": self.writers,
                "readers": self.readers,
                "rooms": self.rooms,
            }
        )
        for p in self.syncers():
            self.sync_from_start(p)
        kinds = [
            (self.send, 30),
            (self.release, 10),
            (self.hold_persist_step, 6),
            (self.unhold_persist, 3),
            (self.hold_fetch_step, 5),
            (self.restart, 6),
            (self.disconnect, 5),
            (self.reconnect, 5),
            (self.hold_publishes, 3),
            (self.release_publishes, 3),
            (self.advance, 8),
            (self.sync, 8),
            (self.observe, 4),
            (self.wait, 3),
            (self.motif_f1, 2),
            (self.motif_f2, 2),
            (self.motif_f3, 2),
        ]
        total = sum(w for _, w in kinds)
        n_steps = self.rng.randint(14, 26)
        while len(self.steps) < n_steps:
            r = self.rng.uniform(0, total)
            for fn, weight in kinds:
                r -= weight
                if r <= 0:
                    fn()
                    break
        self.finish()
        header = [
            "# Generated: tools/synapse/generate_choreographies.py --seeds %d..%d"
            % (self.seed, self.seed + 1),
            "# (%d writers, %d readers; ends with everything released, 3 s, and a sync of every"
            % (len(self.writers), len(self.readers)),
            "# reader from its first token)",
        ]
        return header + [dumps(s) for s in self.steps]

    def sync_from_start(self, p: str) -> None:
        label = "S_%s" % p
        self.tokens.setdefault(p, []).append(label)
        self.add({"op": "sync", "process": p, "label": label})

    def finish(self) -> None:
        for w in sorted(self.hold_persist):
            self.hold_persist.discard(w)
            self.add({"op": "unhold_persist", "writer": w})
        for label in sorted(self.held):
            self.add({"op": "release", "event": label})
        self.held.clear()
        self.held_at.clear()
        self.held_room.clear()
        for w in sorted(self.held_publishes):
            self.add({"op": "release_publishes", "process": w})
        self.held_publishes.clear()
        for p in sorted(self.disconnected):
            self.add({"op": "reconnect", "process": p})
        self.disconnected.clear()
        self.add({"op": "advance", "ms": 3000})
        for p in self.syncers():
            label = "F_%s" % p
            self.add({"op": "sync", "process": p, "label": label, "since": "S_%s" % p})
            self.add({"op": "sync", "process": p, "label": "I_%s" % p})
        for p in self.processes():
            self.add({"op": "observe", "process": p})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", required=True, help="A..B")
    ap.add_argument("--out-dir", required=True)
    args = ap.parse_args()
    a, b = (int(x) for x in args.seeds.split(".."))
    os.makedirs(args.out_dir, exist_ok=True)
    for seed in range(a, b):
        lines = Gen(seed).build()
        with open(os.path.join(args.out_dir, "gen_%03d.jsonl" % seed), "w") as f:
            f.write("".join(line + "\n" for line in lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Validates a `streamsim run --timeline` file against the Trace Event Format (the JSON that
chrome://tracing and ui.perfetto.dev load): the JSON object form with `traceEvents`, and for
each event the fields its phase requires.

    python tools/timeline/check_trace_events.py FILE.json [--expect-violation]
Checks, per the format's documentation:
- every event has `ph`, `pid` and `tid` (integers), and all but metadata a numeric `ts`;
- `X` (complete) events have a non-negative `dur`, and the slices of one thread nest (a
  viewer draws overlapping, non-nested slices of one thread wrongly);
- `i` (instant) events have scope `s` in g/p/t;
- `C` (counter) events have `args` of numbers;
- `M` (metadata) events name a process or thread (`args.name`) or give a sort index;
- every pid with events has a `process_name`.
With --expect-violation, at least one instant must be named `violation: ...`.
"""

import json
import sys


def validate(trace):
    problems = []
    if not isinstance(trace, dict) or not isinstance(trace.get("traceEvents"), list):
        return ["top level must be an object with a traceEvents list"]
    named = set()
    used = set()
    slices = {}
    for index, event in enumerate(trace["traceEvents"]):
        where = f"event {index}"
        phase = event.get("ph")
        if phase not in ("X", "i", "C", "M"):
            problems.append(f"{where}: phase {phase!r} not produced by streamsim")
            continue
        if not isinstance(event.get("pid"), int) or not isinstance(event.get("tid"), int):
            problems.append(f"{where}: pid and tid must be integers")
            continue
        if phase == "M":
            if event.get("name") in ("process_name", "thread_name"):
                if not isinstance(event.get("args", {}).get("name"), str):
                    problems.append(f"{where}: metadata without args.name")
                if event["name"] == "process_name":
                    named.add(event["pid"])
            elif event.get("name") != "process_sort_index":
                problems.append(f"{where}: unknown metadata {event.get('name')!r}")
            continue
        used.add(event["pid"])
        if not isinstance(event.get("name"), str):
            problems.append(f"{where}: name must be a string")
        ts = event.get("ts")
        if not isinstance(ts, (int, float)) or ts < 0:
            problems.append(f"{where}: ts must be a non-negative number")
            continue
        if phase == "X":
            dur = event.get("dur")
            if not isinstance(dur, (int, float)) or dur < 0:
                problems.append(f"{where}: X without a non-negative dur")
                continue
            slices.setdefault((event["pid"], event["tid"]), []).append((ts, ts + dur, index))
        elif phase == "i":
            if event.get("s") not in ("g", "p", "t"):
                problems.append(f"{where}: instant scope {event.get('s')!r}")
        elif phase == "C":
            args = event.get("args")
            if not isinstance(args, dict) or not args or not all(
                isinstance(v, (int, float)) for v in args.values()
            ):
                problems.append(f"{where}: counter args must be numbers")
    for (pid, tid), spans in slices.items():
        spans.sort()
        open_ends = []
        for start, end, index in spans:
            while open_ends and open_ends[-1] <= start:
                open_ends.pop()
            if open_ends and end > open_ends[-1]:
                problems.append(f"event {index}: slice overlaps pid {pid} tid {tid} without nesting")
            open_ends.append(end)
    for pid in sorted(used - named):
        problems.append(f"pid {pid} has events but no process_name")
    return problems


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    expect_violation = "--expect-violation" in sys.argv
    failed = False
    for path in args:
        with open(path, encoding="utf-8") as handle:
            trace = json.load(handle)
        problems = validate(trace)
        if expect_violation and not any(
            e.get("ph") == "i" and str(e.get("name", "")).startswith("violation: ")
            for e in trace.get("traceEvents", [])
        ):
            problems.append("no violation instant")
        for problem in problems[:20]:
            print(f"{path}: {problem}")
        if problems:
            failed = True
        else:
            phases = {}
            for event in trace["traceEvents"]:
                phases[event["ph"]] = phases.get(event["ph"], 0) + 1
            print(f"{path}: valid trace-event JSON, {phases}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

"""Checks `streamsim metrics` output with Python's prometheus_client (the library Synapse
exposes its metrics with): every file must parse as Prometheus text, every sample must belong
to a family of a known type (a counter's `_total` sample must not turn into an untyped family
of its own), every series must carry a `node` label, and histogram buckets must be cumulative.

    python tools/metrics/check_exposition.py FILE...
Exit status 0 when every file passes; otherwise one line per problem and status 1.
"""

import sys

from prometheus_client.parser import text_string_to_metric_families


def check(path):
    problems = []
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    families = list(text_string_to_metric_families(text))
    if not families:
        problems.append("no metric families")
    for family in families:
        if family.type not in ("counter", "gauge", "histogram"):
            problems.append(f"{family.name}: type {family.type}")
        if not family.samples:
            problems.append(f"{family.name}: no samples")
        buckets = {}
        for sample in family.samples:
            if "node" not in sample.labels:
                problems.append(f"{sample.name}: no node label")
            if sample.value < 0:
                problems.append(f"{sample.name}{sample.labels}: negative value {sample.value}")
            if sample.name.endswith("_bucket"):
                series = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
                buckets.setdefault(series, []).append(sample.value)
        for series, counts in buckets.items():
            if counts != sorted(counts):
                problems.append(f"{family.name}{dict(series)}: buckets not cumulative {counts}")
    return len(families), problems


def main():
    failed = False
    for path in sys.argv[1:]:
        count, problems = check(path)
        for problem in problems:
            print(f"{path}: {problem}")
        failed = failed or bool(problems)
        if not problems:
            print(f"{path}: {count} families parse")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

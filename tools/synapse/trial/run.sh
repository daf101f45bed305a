#!/usr/bin/env bash
# Runs the F1 trial test (test_f1_lost_event.py) inside a copy of Synapse 1.163.2's own tests
# package, as Synapse's maintainers would (`trial tests.replication.test_f1_lost_event`).
#
#   . target/synapse-env.sh && bash tools/synapse/trial/run.sh
#   . target/synapse-env.sh && bash tools/synapse/trial/run.sh --fix f1
#
# The test asserts what Synapse should do (the event reaches incremental /sync), so on 1.163.2
# it must FAIL, on its last assertion: this script exits 0 exactly when it does, and 1 when it
# passes (F1 gone) or fails anywhere else (the reproduction broke).
#
# With `--fix NAME` (a name tools/synapse/fixes.py knows: f1, f2, f3, f4, f5 or all) the same test
# runs with that proposed fix applied before the test module is loaded (a wrapper module,
# tests/replication/test_f1_lost_event_fixed.py in the copy, applies it and imports the test
# class), and then it must PASS: the script exits 0 exactly when it does, 1 otherwise.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
fix=""
if [ $# -gt 0 ]; then
    if [ $# -eq 2 ] && [ "$1" = "--fix" ] && [[ "$2" =~ ^(f1|f2|f3|f4|f5|all)$ ]]; then
        fix=$2
    else
        echo "usage: run.sh [--fix f1|f2|f3|f4|f5|all]" >&2
        exit 2
    fi
fi
: "${STREAMSIM_SYNAPSE_PYTHON:?source target/synapse-env.sh first}"
: "${STREAMSIM_SYNAPSE_TESTS_DIR:?source target/synapse-env.sh first}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$STREAMSIM_SYNAPSE_TESTS_DIR/tests" "$work/tests"
cp "$here/test_f1_lost_event.py" "$work/tests/replication/"
module=tests.replication.test_f1_lost_event
if [ -n "$fix" ]; then
    cp "$here/../fixes.py" "$work/fixes.py"
    cat > "$work/tests/replication/test_f1_lost_event_fixed.py" <<PY
"""test_f1_lost_event with the proposed fix '$fix' of tools/synapse/fixes.py applied."""
from fixes import apply_fixes

apply_fixes(["$fix"])

from tests.replication.test_f1_lost_event import (  # noqa: E402,F401
    RollingRestartLosesEventTestCase,
)
PY
    module=tests.replication.test_f1_lost_event_fixed
fi
set +e
( cd "$work" && SYNAPSE_POSTGRES=1 SYNAPSE_POSTGRES_HOST="${STREAMSIM_PG_HOST:-127.0.0.1}" \
    SYNAPSE_POSTGRES_PORT="${STREAMSIM_PG_PORT:-54329}" SYNAPSE_POSTGRES_USER="${STREAMSIM_PG_USER:-postgres}" \
    PYTHONPATH="$work" "$STREAMSIM_SYNAPSE_PYTHON" -m twisted.trial "$module" ) \
    > "$work/out.txt" 2>&1
set -e
if [ -n "$fix" ]; then
    if grep -q "^PASSED (successes=1)" "$work/out.txt"; then
        echo "F1 trial test: passes with fix '$fix' applied"
        exit 0
    fi
    echo "F1 trial test: did not pass with fix '$fix'; trial said:" >&2
    tail -30 "$work/out.txt" >&2
    exit 1
fi
if grep -q "FAILED (failures=1)" "$work/out.txt" \
    && grep -q "incremental /sync missed X" "$work/out.txt"; then
    echo "F1 trial test: fails on Synapse 1.163.2 as it should (incremental /sync missed X)"
    exit 0
fi
echo "F1 trial test: did not fail on its F1 assertion; trial said:" >&2
tail -30 "$work/out.txt" >&2
exit 1

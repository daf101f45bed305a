#!/usr/bin/env bash
# Runs the F1 trial test (test_f1_lost_event.py) inside a copy of Synapse 1.163.2's own tests
# package, as Synapse's maintainers would (`trial tests.replication.test_f1_lost_event`).
#
#   . target/synapse-env.sh && bash tools/synapse/trial/run.sh
#
# The test asserts what Synapse should do (the event reaches incremental /sync), so on 1.163.2
# it must FAIL, on its last assertion: this script exits 0 exactly when it does, and 1 when it
# passes (F1 gone) or fails anywhere else (the reproduction broke).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${STREAMSIM_SYNAPSE_PYTHON:?source target/synapse-env.sh first}"
: "${STREAMSIM_SYNAPSE_TESTS_DIR:?source target/synapse-env.sh first}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$STREAMSIM_SYNAPSE_TESTS_DIR/tests" "$work/tests"
cp "$here/test_f1_lost_event.py" "$work/tests/replication/"
set +e
( cd "$work" && SYNAPSE_POSTGRES=1 SYNAPSE_POSTGRES_HOST="${STREAMSIM_PG_HOST:-127.0.0.1}" \
    SYNAPSE_POSTGRES_PORT="${STREAMSIM_PG_PORT:-54329}" SYNAPSE_POSTGRES_USER="${STREAMSIM_PG_USER:-postgres}" \
    PYTHONPATH="$work" "$STREAMSIM_SYNAPSE_PYTHON" -m twisted.trial tests.replication.test_f1_lost_event ) \
    > "$work/out.txt" 2>&1
set -e
if grep -q "FAILED (failures=1)" "$work/out.txt" \
    && grep -q "incremental /sync missed X" "$work/out.txt"; then
    echo "F1 trial test: fails on Synapse 1.163.2 as it should (incremental /sync missed X)"
    exit 0
fi
echo "F1 trial test: did not fail on its F1 assertion; trial said:" >&2
tail -30 "$work/out.txt" >&2
exit 1

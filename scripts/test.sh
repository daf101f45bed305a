#!/usr/bin/env bash
# The whole test suite, as CI runs it: style gates, then every test, with the differential
# tests against real Synapse 1.163.2 on PostgreSQL required (not skipped), the system oracle
# re-run on every choreography (unpatched, and with the proposed fixes) and the F1 trial test,
# then a short
# fixed-seed run of every shipped scenario and regression file (tests/scenarios.rs, seeds
# STREAMSIM_CI_SWEEP_SEEDS, default 0..5), 2,000 generated scenarios on the patched baseline
# (STREAMSIM_CI_GENERATED_SEEDS, default 0..2000), the
# metrics exposition and timeline checks (the bug hunt runs inside `cargo test`).
#
#   bash scripts/test.sh
#
# First run on a fresh machine installs PostgreSQL and a Synapse venv (about a minute).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

started=$(date +%s)
stage() { printf '\n== %s (%ds)\n' "$1" $(( $(date +%s) - started )); }

stage "setup: PostgreSQL and Synapse 1.163.2"
bash .ci/setup-synapse.sh
# shellcheck source=/dev/null
. target/synapse-env.sh
export STREAMSIM_REQUIRE_SYNAPSE=1

stage "cargo fmt --check"
cargo fmt --all -- --check

stage "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
# tests/scenarios.rs is `test = false` (not in a plain `cargo test`), so --all-targets skips it.
cargo clippy --test scenarios --quiet -- -D warnings

# In the release profile (assertions and overflow checks stay on, Cargo.toml): the build is
# the one every later stage uses, where the test profile would be a second full build (about
# three minutes of a clean clone's twenty on 2 cores).
stage "cargo test"
cargo test --workspace --release --quiet

# The system oracle: every choreography of tests/data/system re-run on real Synapse 1.163.2
# workers; any output that differs from its expected file (which `cargo test` compared with
# `streamsim choreo`) fails, so no expectation can drift from real Synapse. Then the F1
# trial test in Synapse's own harness, which must fail on 1.163.2.
stage "system oracle: every choreography on real Synapse"
mapfile -t choreographies < <(find tests/data/system -name '*.jsonl' ! -name '*.expected.jsonl' | sort)
"$STREAMSIM_SYNAPSE_PYTHON" tools/synapse/system_oracle.py --check --jobs 2 "${choreographies[@]}"
bash tools/synapse/trial/run.sh
# The proposed fixes (tools/synapse/FIXES.md) on real Synapse: every choreography with all five
# applied must give exactly tests/data/system/fix-all/ (where no finding loses an event), and
# the F1 trial test must pass with F1's fix.
stage "system oracle: every choreography on real Synapse with the proposed fixes"
"$STREAMSIM_SYNAPSE_PYTHON" tools/synapse/system_oracle.py --fix all --check --jobs 2 "${choreographies[@]}"
bash tools/synapse/trial/run.sh --fix f1

# The scenario regression suite (tests/scenarios.rs): every shipped scenario on both
# baselines, Synapse as it is (a finding's violation is known, not failed) and patched
# (`--fix all`: any violation fails), and every `tests/data/bugs/SWITCH.toml` regression file
# (its switch caught on 90% of the seeds), one test each. Any failure prints the `streamsim
# run` command that replays it.
SWEEP_SEEDS="${STREAMSIM_CI_SWEEP_SEEDS:-0..5}"
stage "scenario tests, seeds $SWEEP_SEEDS, unpatched and --fix all"
cargo build --release --quiet
STREAMSIM_SEEDS="$SWEEP_SEEDS" cargo test --release --quiet --test scenarios

# Generated scenarios on the patched baseline (`--fix all`), where a red seed always means a
# bug: every seed's own topology, workload and faults (what `bugs --hunt` draws), 0 failures
# allowed. 2,000 seeds take about 2.5 minutes on 2 cores; a failure prints its replay command.
GENERATED_SEEDS="${STREAMSIM_CI_GENERATED_SEEDS:-0..2000}"
stage "generated scenarios, seeds $GENERATED_SEEDS, --fix all"
target/release/streamsim sweep --generated --seeds "$GENERATED_SEEDS" --fix all --jobs 2

# The metrics endpoint of every shipped scenario must pass promtool's checks and parse with
# Python's prometheus_client (the library Synapse uses); a known-bug seed's timeline must be
# valid trace-event JSON with its violation on it.
stage "metrics exposition and timeline checks"
out=target/ci-metrics
rm -rf "$out" && mkdir -p "$out"
while IFS= read -r scenario; do
  name=$(basename "$scenario" .toml)
  target/release/streamsim metrics "$scenario" --seed 1 > "$out/$name.prom" 2> "$out/$name.summary"
  promtool check metrics < "$out/$name.prom" || { echo "promtool rejects $scenario"; exit 1; }
done < <(find scenarios -name '*.toml' | sort)
"$STREAMSIM_SYNAPSE_PYTHON" tools/metrics/check_exposition.py "$out"/*.prom
cat "$out"/*.summary
# The regression file fails on at least 18 of seeds 0..20: draw the first failing seed of 0..3.
bug_file=tests/data/bugs/idle-writer-never-announces.toml
bug_failed=
for bug_seed in 0 1 2; do
  if ! target/release/streamsim run "$bug_file" --seed "$bug_seed" --bug idle-writer-never-announces \
      --fix all --timeline "$out/timeline.json" > "$out/timeline.txt"; then
    bug_failed=$bug_seed; break
  fi
done
[ -n "$bug_failed" ] || { echo "$bug_file passed seeds 0..3 with its switch on: it must fail"; exit 1; }
python3 tools/timeline/check_trace_events.py "$out/timeline.json" --expect-violation

# The bug hunt (every switch caught within 30 generated seeds, the clean model passing every
# seed used) runs inside `cargo test` (tests/it/known_bugs.rs), so it is not run twice here.

stage "done"

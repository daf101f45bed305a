#!/usr/bin/env bash
# The whole test suite, as CI runs it: style gates, then every test, with the differential
# tests against real Synapse 1.163.2 on PostgreSQL required (not skipped).
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

stage "cargo test"
cargo test --workspace --quiet

stage "done"

#!/usr/bin/env bash
# Installs what the real-Synapse differential tests need and writes target/synapse-env.sh.
#
#   bash .ci/setup-synapse.sh && . target/synapse-env.sh
#
# Idempotent: a second run only checks and takes seconds. Runs as root on Debian 12.
#   1. Debian's PostgreSQL server (initdb) and libpq-dev (pg_config, to build psycopg2)
#   2. a venv with matrix-synapse[postgres,redis,test]==1.163.2 (redis: the multi-worker
#      harness of the system oracle skips every test without hiredis/txredisapi)
#   3. Synapse's `tests` package, extracted from the sdist (the wheel does not ship it)
#   4. a throwaway PostgreSQL cluster on 127.0.0.1:$STREAMSIM_PG_PORT (trust auth)
#   5. target/synapse-env.sh
#
# Knobs (environment): STREAMSIM_SYNAPSE_VENV, STREAMSIM_SYNAPSE_CACHE, STREAMSIM_PG_PORT,
# STREAMSIM_PG_DATA, STREAMSIM_PYTHON (the interpreter the venv is made from).
set -euo pipefail

SYNAPSE_VERSION=1.163.2
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE_DIR=${STREAMSIM_SYNAPSE_CACHE:-$HOME/.cache/streamsim}
VENV=${STREAMSIM_SYNAPSE_VENV:-$CACHE_DIR/synapse-venv}
TESTS_ROOT=$CACHE_DIR/synapse-tests-$SYNAPSE_VERSION   # holds tests/ (goes on PYTHONPATH)
PG_PORT=${STREAMSIM_PG_PORT:-54329}
PG_DATA=${STREAMSIM_PG_DATA:-/tmp/streamsim-pg-$PG_PORT}
PG_USER=postgres
PG_DB=streamsim
PYTHON=${STREAMSIM_PYTHON:-python3}

export DEBIAN_FRONTEND=noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK=1

T_ALL=$(date +%s%N)
T_STEP=$T_ALL
step_done() {
    local now ms
    now=$(date +%s%N)
    ms=$(( (now - T_STEP) / 1000000 ))
    printf 'setup-synapse: %-34s %4d.%01ds\n' "$1" $((ms / 1000)) $((ms % 1000 / 100))
    T_STEP=$now
}

apt_updated=0
apt_install() {
    if [ "$apt_updated" = 0 ]; then
        apt-get update -qq >/dev/null
        apt_updated=1
    fi
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- 1. PostgreSQL server + libpq-dev -----------------------------------------------------
pg_bin_dir() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
    done
    return 1
}
need=()
pg_bin_dir >/dev/null || need+=(postgresql)
command -v pg_config >/dev/null 2>&1 || need+=(libpq-dev)
# promtool, which checks `streamsim metrics` output (Debian's prometheus package).
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
"$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv python3-dev)
if [ ${#need[@]} -gt 0 ]; then
    apt_install "${need[@]}"
fi
PG_BIN=$(pg_bin_dir)
step_done "apt (postgresql, libpq-dev, prometheus)"

# --- 2. venv with Synapse ------------------------------------------------------------------
VPY=$VENV/bin/python
venv_ok() {
    [ -x "$VPY" ] && "$VPY" - "$SYNAPSE_VERSION" <<'EOF' >/dev/null 2>&1
import sys, importlib.metadata as m
assert m.version("matrix-synapse") == sys.argv[1]
import psycopg2, parameterized, hiredis, txredisapi, synapse.replication.tcp.commands, synapse.storage.util.id_generators
EOF
}
if ! venv_ok; then
    mkdir -p "$(dirname "$VENV")"
    [ -x "$VPY" ] || "$PYTHON" -m venv "$VENV"
    "$VPY" -m pip install -q "matrix-synapse[postgres,redis,test]==$SYNAPSE_VERSION"
    venv_ok || { echo "setup-synapse: venv check failed after install" >&2; exit 1; }
fi
step_done "venv matrix-synapse==$SYNAPSE_VERSION"

# --- 3. Synapse's tests package from the sdist ---------------------------------------------
if [ ! -f "$TESTS_ROOT/tests/storage/test_id_generators.py" ]; then
    sdist_dir=$CACHE_DIR/sdist
    mkdir -p "$sdist_dir"
    sdist=$(ls "$sdist_dir"/matrix_synapse-"$SYNAPSE_VERSION".tar.gz 2>/dev/null || true)
    if [ -z "$sdist" ]; then
        # Straight from the package index: `pip download --no-binary :all:` would build
        # maturin from source just to read the sdist's metadata (minutes).
        url=$(curl -fsS https://pypi.org/simple/matrix-synapse/ \
            | grep -o "https://[^\"]*/matrix_synapse-$SYNAPSE_VERSION.tar.gz#sha256=[0-9a-f]*" | head -1)
        [ -n "$url" ] || { echo "setup-synapse: no sdist of $SYNAPSE_VERSION on the index" >&2; exit 1; }
        curl -fsS -o "$sdist_dir/dl.tmp" "${url%%#*}"
        echo "${url##*sha256=}  $sdist_dir/dl.tmp" | sha256sum -c --quiet - \
            || { echo "setup-synapse: sdist checksum mismatch" >&2; exit 1; }
        mv "$sdist_dir/dl.tmp" "$sdist_dir/matrix_synapse-$SYNAPSE_VERSION.tar.gz"
        sdist=$sdist_dir/matrix_synapse-$SYNAPSE_VERSION.tar.gz
    fi
    tmp=$(mktemp -d "$CACHE_DIR/extract.XXXXXX")
    tar -xzf "$sdist" -C "$tmp" "matrix_synapse-$SYNAPSE_VERSION/tests"
    rm -rf "$TESTS_ROOT"
    mkdir -p "$TESTS_ROOT"
    mv "$tmp/matrix_synapse-$SYNAPSE_VERSION/tests" "$TESTS_ROOT/tests"
    rm -rf "$tmp"
fi
PYTHONPATH="$TESTS_ROOT" "$VPY" -c 'import tests.unittest' \
    || { echo "setup-synapse: cannot import Synapse's tests package" >&2; exit 1; }
step_done "synapse tests package"

# --- 4. throwaway PostgreSQL cluster -------------------------------------------------------
pg_ready() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" >/dev/null 2>&1; }
if ! pg_ready; then
    if [ ! -f "$PG_DATA/PG_VERSION" ]; then
        rm -rf "$PG_DATA"
        mkdir -p "$PG_DATA"
        chown postgres:postgres "$PG_DATA"
        chmod 700 "$PG_DATA"
        runuser -u postgres -- "$PG_BIN/initdb" -D "$PG_DATA" -U "$PG_USER" -A trust \
            -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
    fi
    # Durability does not matter for a throwaway cluster; speed does.
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_DATA/server.log" -w -t 60 \
        -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $PG_DATA -c fsync=off \
            -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
        start >/dev/null
    pg_ready || { echo "setup-synapse: postgres did not come up" >&2; cat "$PG_DATA/server.log" >&2; exit 1; }
fi
if [ "$("$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" != 1 ]; then
    "$PG_BIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres \
        -c "CREATE DATABASE $PG_DB ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
fi
step_done "postgres on 127.0.0.1:$PG_PORT"

# --- 5. env file ---------------------------------------------------------------------------
mkdir -p "$REPO_ROOT/target"
ENV_FILE=$REPO_ROOT/target/synapse-env.sh
cat >"$ENV_FILE.tmp" <<EOF
# Written by .ci/setup-synapse.sh; source it before running the real-Synapse differential tests.
export STREAMSIM_SYNAPSE_PYTHON='$VPY'
export STREAMSIM_SYNAPSE_TESTS_DIR='$TESTS_ROOT'
export PYTHONPATH='$TESTS_ROOT'\${PYTHONPATH:+:\$PYTHONPATH}
export STREAMSIM_PG_HOST=127.0.0.1
export STREAMSIM_PG_PORT='$PG_PORT'
export STREAMSIM_PG_USER='$PG_USER'
export STREAMSIM_PG_DB='$PG_DB'
export STREAMSIM_PG_DSN='host=127.0.0.1 port=$PG_PORT user=$PG_USER dbname=$PG_DB'
EOF
mv "$ENV_FILE.tmp" "$ENV_FILE"
step_done "env file target/synapse-env.sh"

T_STEP=$T_ALL
step_done "total"

#!/usr/bin/env bash
# Re-make the known-bug regression files with `streamsim shrink`: for each switch, from its
# source (scripts/regression-sources/SWITCH.toml if there is one, else its current file), a scenario that catches the switch by its catalogue
# invariant on at least MIN (default 19, then 18) of seeds 0..20 with `--fix all`, and passes
# without the switch on all of them, written to tests/data/bugs/SWITCH.toml.
#
#   bash scripts/remake-regressions.sh [SWITCH...]      # default: every switch
#   STREAMSIM_BIN=/path/to/streamsim bash scripts/...   # use that binary, do not build
#
# Slow (every candidate runs 20 seeds twice): minutes per switch on 2 cores.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -n "${STREAMSIM_BIN:-}" ]; then
  bin=$STREAMSIM_BIN
else
  cargo build --release --quiet
  bin=target/release/streamsim
fi
mapfile -t switches < <(if [ $# -gt 0 ]; then printf '%s\n' "$@"; else $bin bugs | awk '/^proposed fixes/ {exit} {print $1}'; fi)
for name in "${switches[@]}"; do
  line=$($bin bugs | awk -v n="$name" '$1 == n')
  id=$(awk '{print $2}' <<<"$line")
  invariant=$(awk '{print $5}' <<<"$line")
  what=$(sed -E 's/^[^ ]+ +[^ ]+ +caught by +[^ ]+ +//' <<<"$line")
  # Where to start: a hand-written source when the hunt's scenario carries the bug on too
  # few seeds for the shrinker to ratchet up (scripts/regression-sources/), else the old
  # seed-frozen file, else the current file.
  source_file=$(ls "tests/data/bugs/$name".seed-*.toml 2>/dev/null | head -1 || true)
  if [ -f "scripts/regression-sources/$name.toml" ]; then
    source_file="scripts/regression-sources/$name.toml"; seed=0
  elif [ -n "$source_file" ]; then
    seed=${source_file##*.seed-}; seed=${seed%.toml}
  else
    source_file="tests/data/bugs/$name.toml"; seed=0
  fi
  from=("$source_file")
  for min in 19 18; do
    if $bin shrink "${from[@]}" --seed "$seed" --seeds 0..20 --min-failing "$min" \
        --bug "$name" --fix all --invariant "$invariant" \
        --title "Bug $id ($name): $what. Caught by $invariant." \
        -o "tests/data/bugs/$name.toml"; then
      # (shrink writes only on success, after reading its source: the file may be its own.)
      for old in "tests/data/bugs/$name".seed-*.toml; do
        [ -e "$old" ] && { git rm -q --cached --ignore-unmatch "$old"; rm -f "$old"; }
      done
      echo "$name: caught on >= $min of seeds 0..20"
      break
    fi
    echo "$name: not $min of 20; trying fewer" >&2
  done
done

#!/bin/bash
# SPDX-License-Identifier: MIT
# property-seeds.sh N [TEST_PROPERTY]: runs the property suite (tests/test_property.cpp,
# every family, MEMSAVE_PROPERTY_CASES cases each, default 1000) over N fresh seeds, nproc
# at a time (MEMSAVE_SEED_JOBS), and prints the seeds that failed, each with the command
# that replays it, and the time it took. Stand-ins are poisoned (MEMSAVE_POISON, default
# nan; set it to 0 or max for the others), so that a kernel that reads one fails the case.
# property-seeds.sh --replay LIST [TEST_PROPERTY]: runs each "SEED CASES FAMILY" line of
# LIST (tests/property-seeds.txt: the seeds that ever failed) under the same settings.
# TEST_PROPERTY defaults to build/test_property. Exits 1 when a seed fails, 2 on misuse.
set -euo pipefail
usage() { echo "usage: $0 N [TEST_PROPERTY] | --replay LIST [TEST_PROPERTY]" >&2; exit 2; }
[ $# -ge 1 ] || usage
replay=
if [ "$1" = --replay ]; then
  [ $# -ge 2 ] || usage
  replay=$2
  shift 2
else
  [[ "$1" =~ ^[1-9][0-9]*$ ]] || usage
  n=$1
  shift
fi
bin=${1:-build/test_property}
[ -x "$bin" ] || { echo "$0: no test_property at $bin (build it first)" >&2; exit 2; }
jobs=${MEMSAVE_SEED_JOBS:-$(nproc)}  # before OMP_NUM_THREADS, which nproc obeys
export MEMSAVE_POISON=${MEMSAVE_POISON:-nan} MEMSAVE_OPS=all OMP_NUM_THREADS=1
logs=$(mktemp -d /tmp/property-seeds.XXXXXX)
trap 'rm -rf "$logs"' EXIT

# One run: SEED [CASES [FAMILY]]; its log is kept when it fails, or when no family ran.
one() {
  local seed=$1 cases=${2:-${MEMSAVE_PROPERTY_CASES:-1000}} family=${3:-*}
  if MEMSAVE_PROPERTY_SEED=$seed MEMSAVE_PROPERTY_CASES=$cases "$bin" --gtest_filter="Property.$family" \
      >"$logs/$seed.log" 2>&1 && grep -q '^\[ property \] .* cases in ' "$logs/$seed.log"; then
    rm -f "$logs/$seed.log"
  else
    echo "$seed $cases $family" >"$logs/$seed.failed"
  fi
}
export -f one
export bin logs

t0=$(date +%s)
if [ -n "$replay" ]; then
  sed 's/#.*//; s/[[:space:]]*$//' "$replay" | grep . | xargs -P "$jobs" -L 1 bash -c 'one "$@"' _
  what="$(grep -vc '^[[:space:]]*\(#\|$\)' "$replay") listed seeds"
else
  for _ in $(seq "$n"); do od -An -N8 -tu8 /dev/urandom | tr -d ' '; done | xargs -P "$jobs" -L 1 bash -c 'one "$@"' _
  what="$n fresh seeds, ${MEMSAVE_PROPERTY_CASES:-1000} cases per family each"
fi
secs=$(($(date +%s) - t0))
failed=$(cat "$logs"/*.failed 2>/dev/null || true)
echo "property-seeds: $what, MEMSAVE_POISON=$MEMSAVE_POISON, $jobs at a time, ${secs} s ($("$bin" --gtest_list_tests | grep -c '^  ') families)"
if [ -z "$failed" ]; then
  echo "property-seeds: no seed failed"
  exit 0
fi
while read -r seed cases family; do
  echo "== seed $seed failed:"
  grep -E "Failure|differ|property \]|rerun with" "$logs/$seed.log" | head -20 ||
    echo "   no property ran (is $family a family of Property?)" 
  echo "   replay: MEMSAVE_POISON=$MEMSAVE_POISON MEMSAVE_OPS=all MEMSAVE_PROPERTY_SEED=$seed MEMSAVE_PROPERTY_CASES=$cases $bin --gtest_filter='Property.$family'"
done <<<"$failed"
echo "property-seeds: $(wc -l <<<"$failed") seed(s) failed; add each to tests/property-seeds.txt once fixed" >&2
exit 1

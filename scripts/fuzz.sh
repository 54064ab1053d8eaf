#!/bin/bash
# SPDX-License-Identifier: MIT
# fuzz.sh [SECONDS]: builds the libFuzzer targets of tests/fuzz with Debian's clang into
# build-fuzz (MEMSAVE_FUZZ=ON: the C parts only, no LibTorch) and runs them side by side, each
# for SECONDS (default 60, or MEMSAVE_FUZZ_SECONDS) from its corpus, tests/fuzz/corpus/<target>.
# Fails on a crash, ASan or UBSan report, leak or input slower than 10 s; the input is kept as
# build-fuzz/crash-<target>-*: fix the bug and add the input to the corpus. New inputs go to
# build-fuzz/corpus/<target>, never into the tree. Installs clang-14 if missing (as root).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-${MEMSAVE_FUZZ_SECONDS:-60}}
build=${FUZZ_BUILD_DIR:-build-fuzz}
targets=(options report args)

missing=()
for p in clang-14 libclang-rt-14-dev cmake; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "fuzz: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

CC=clang-14 cmake -S . -B "$build" -DMEMSAVE_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" >/dev/null
# The targets run side by side, each for $seconds s of wall time (CI's time: one minute for
# all three on 2 cores, where one after the other took three).
fuzz_one() {
  local t=$1 log="$build/fuzz_$1.log"
  # -close_fd_mask=3: the targets' own messages (usage, warnings) are dropped; libFuzzer's
  # and the sanitizers' reports still come. -max_len: longer than every MEMSAVE_* buffer.
  "$build/fuzz_$t" -max_total_time="$seconds" -max_len=16384 -timeout=10 -rss_limit_mb=2048 -close_fd_mask=3 \
    -print_final_stats=1 -artifact_prefix="$build/crash-$t-" "$build/corpus/$t" "tests/fuzz/corpus/$t" >"$log" 2>&1
}
pids=()
for t in "${targets[@]}"; do
  mkdir -p "$build/corpus/$t"
  echo "fuzz: fuzz_$t for $seconds s"
  fuzz_one "$t" &
  pids+=($!)
done
failed=0
for i in "${!targets[@]}"; do
  t=${targets[$i]}
  log="$build/fuzz_$t.log"
  if ! wait "${pids[$i]}"; then
    grep -v -E '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse)' "$log" | tail -60
    echo "fuzz: fuzz_$t failed; the input is in $build/crash-$t-*" >&2
    failed=1
    continue
  fi
  echo "fuzz: fuzz_$t"
  grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)|INITED' "$log" | sed 's/^/  /'
done
[ "$failed" = 0 ] || exit 1
echo "fuzz: ${#targets[@]} targets, $seconds s each, no crash"

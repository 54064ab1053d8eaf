#!/bin/bash
# SPDX-License-Identifier: MIT
# test_timeline.sh LIBMEMSAVE MEMSAVE_DEMO: MEMSAVE_TIMELINE=PATH. A bad value gives one
# warning and no file; a good one gives a CSV with non-decreasing monotonic times whose
# largest max_bytes is the report's peak; a long run keeps at most MEMSAVE_TIMELINE_SAMPLES
# (65536) samples and still has the peak; stock runs (MEMSAVE=0) record too.
set -u
lib=$1 demo=$2
. "$(dirname "$0")/checks.sh"
small=(--scenario adversarial --model resnet18 --batch 2 --size 32 --steps 1)

# A path in a directory that does not exist: one warning, the host runs, no file.
out=$(MEMSAVE_TIMELINE=$tmp/missing/t.csv LD_PRELOAD=$pre$lib "$demo" "${small[@]}" 2>&1); rc=$?
expect_eq "bad path: host exits 0" "$rc" "0"
expect_eq "bad path: one warning" "$(grep -c 'memsave: warning: MEMSAVE_TIMELINE=' <<<"$out")" "1"
expect_has "bad path: the warning names the value" "$out" "MEMSAVE_TIMELINE=\"$tmp/missing/t.csv\" is not valid"
expect_eq "bad path: no file" "$(ls "$tmp")" ""
out=$(MEMSAVE_TIMELINE=$tmp/ LD_PRELOAD=$pre$lib "$demo" "${small[@]}" 2>&1)
expect_eq "a directory: one warning" "$(grep -c 'memsave: warning: MEMSAVE_TIMELINE=' <<<"$out")" "1"

# rows FILE: the data lines (no comments, no column names).
rows() { grep -v '^#' "$1" | tail -n +2; }
# check NAME FILE REPORT: samples present, times non-decreasing, max_bytes >= bytes, the
# largest max_bytes equal to the report's peak, at most 65536 samples.
check() {
  local name=$1 file=$2 report=$3
  [ -s "$file" ] || { fail "$name: file written" "no $file"; return; }
  pass "$name: file written"
  expect_eq "$name: column names" "$(grep -v '^#' "$file" | head -1)" "ns,t_s,bytes,max_bytes"
  local n; n=$(rows "$file" | wc -l)
  if [ "$n" -ge 100 ] && [ "$n" -le 65536 ]; then pass "$name: $n samples, at most 65536"; else fail "$name: sample count" "got $n"; fi
  expect_eq "$name: header counts the samples" "$(sed -n 's/.*, \([0-9]*\) samples,.*/\1/p' "$file")" "$n"
  expect_eq "$name: monotonic times" "$(rows "$file" | awk -F, 'NR > 1 && $1 < prev { bad++ } { prev = $1 } END { print bad + 0 }')" "0"
  expect_eq "$name: max_bytes >= bytes" "$(rows "$file" | awk -F, '$4 < $3 { bad++ } END { print bad + 0 }')" "0"
  local peak; peak=$(sed -n 's/.*"cpu_peak_total_bytes":\([0-9]*\).*/\1/p' "$report")
  expect_eq "$name: largest max_bytes is the report's peak" "$(rows "$file" | awk -F, '$4 > m { m = $4 } END { printf "%d", m }')" "$peak"
}

MEMSAVE_TIMELINE=$tmp/t-%p.csv MEMSAVE_REPORT=$tmp/r.json LD_PRELOAD=$pre$lib "$demo" "${small[@]}" > /dev/null
f=$(ls "$tmp"/t-*.csv 2>/dev/null | head -1)
check "libmemsave" "${f:-$tmp/t-none.csv}" "$tmp/r.json"
expect_has "%p expands to the pid" "$f" "t-[0-9]"
expect_has "header says active" "$(head -1 "${f:-/dev/null}")" "active"
MEMSAVE=0 MEMSAVE_TIMELINE=$tmp/stock.csv MEMSAVE_REPORT=$tmp/rs.json LD_PRELOAD=$pre$lib "$demo" "${small[@]}" > /dev/null
check "stock" "$tmp/stock.csv" "$tmp/rs.json"
expect_has "header says stock" "$(head -1 "$tmp/stock.csv")" "stock (MEMSAVE=0)"

# Enough allocator events to fill the buffer: merged, bounded, the peak kept.
MEMSAVE_TIMELINE=$tmp/long.csv MEMSAVE_REPORT=$tmp/rl.json LD_PRELOAD=$pre$lib "$demo" --scenario full --model resnet18 \
  --batch 2 --size 16 --steps 40 > /dev/null; rc=$?
expect_eq "long run: exits 0" "$rc" "0"
check "long run" "$tmp/long.csv" "$tmp/rl.json"
events=$(sed -n 's/.* samples, \([0-9]*\) allocator events.*/\1/p' "$tmp/long.csv")
if [ "${events:-0}" -gt 65536 ]; then pass "long run: $events events, more than the buffer"; else fail "long run: events" "got ${events:-none}; make the run longer"; fi
expect_has "long run: merged" "$(head -1 "$tmp/long.csv")" "1 sample per [2-9]"

# Without the variable: no file anywhere near.
(cd "$tmp" && rm -f ./*.csv && LD_PRELOAD=$pre$lib "$demo" "${small[@]}" > /dev/null)
expect_eq "unset: no file" "$(ls "$tmp"/*.csv 2>/dev/null | wc -l)" "0"

echo "$failures failure(s)"
[ "$failures" -eq 0 ]

#!/bin/bash
# SPDX-License-Identifier: MIT
# test_fork.sh LIBMEMSAVE FORK_HOST (issue 15): a child forked after LibTorch is loaded
# keeps substituting with the gradients of stock, and writes a report or timeline only when
# the path has %p (Note [Reports of forked children] in shim/report.c): without %p the
# parent's file is the parent's, whichever exits first; with %p there is one per process.
set -u
lib=$1 host=$2
. "$(dirname "$0")/checks.sh"
run() { LD_PRELOAD=$pre$lib "$host" "$@"; }
field() { sed -n "s/^$1 pid \([0-9]*\) grad_fn \([A-Za-z0-9]*\) checksum \([0-9a-f]*\)$/\\$2/p" <<<"$3"; }

stock=$("$host" child-first)
expect_eq "stock: the child's gradient is the parent's" "$(field child 3 "$stock")" "$(field parent 3 "$stock")"
for order in child-first parent-first; do
  out=$(run $order 2>&1); rc=$?
  expect_eq "$order: exits 0" "$rc" "0"
  expect_eq "$order: the child substitutes" "$(field child 2 "$out")" "MemsaveConvolutionBackward"
  expect_eq "$order: the parent still substitutes" "$(field parent 2 "$out")" "MemsaveConvolutionBackward"
  expect_eq "$order: the child's gradient is stock's" "$(field child 3 "$out")" "$(field child 3 "$stock")"
  expect_eq "$order: the parent's gradient is stock's" "$(field parent 3 "$out")" "$(field parent 3 "$stock")"
  expect_eq "$order: nothing of ours without a report asked" "$(grep -c 'memsave:' <<<"$out")" "0"

  # Without %p: the parent's report only (the child would overwrite it when it exits last).
  out=$(MEMSAVE_REPORT=$tmp/r-$order.txt run $order 2>&1)
  expect_eq "$order, report without %p: one file" "$(ls "$tmp" | grep -c "^r-$order")" "1"
  expect_has "$order, report without %p: the parent's" "$(head -1 "$tmp/r-$order.txt" 2>&1)" \
    "(libmemsave [0-9.]*, pid $(field parent 1 "$out"))"
  out=$(MEMSAVE_REPORT=stderr run $order 2>&1)
  expect_eq "$order, report on stderr: one" "$(grep -c '^memsave: report (' <<<"$out")" "1"
  expect_has "$order, report on stderr: the parent's" "$out" "^memsave: report (.*pid $(field parent 1 "$out"))"
  out=$(MEMSAVE_TIMELINE=$tmp/t-$order.csv run $order 2>&1)
  expect_has "$order, timeline without %p: the parent's" "$(head -1 "$tmp/t-$order.csv" 2>&1)" \
    "pid $(field parent 1 "$out"),"

  # With %p: one per process; the child's counts start from the parent's at the fork.
  mkdir "$tmp/$order"
  out=$(MEMSAVE_REPORT=$tmp/$order/r-%p.json MEMSAVE_TIMELINE=$tmp/$order/t-%p.csv run $order 2>&1)
  parent=$(field parent 1 "$out") child=$(field child 1 "$out")
  expect_eq "$order, %p: a report and a timeline per process" "$(ls "$tmp/$order" | sort | tr '\n' ' ')" \
    "$(printf '%s\n' "r-$child.json" "r-$parent.json" "t-$child.csv" "t-$parent.csv" | sort | tr '\n' ' ')"
  for who in parent child; do
    pid=$(field $who 1 "$out")
    expect_has "$order, %p: the $who's report counts 2 convolutions" "$(cat "$tmp/$order/r-$pid.json" 2>&1)" \
      "\"pid\":$pid,.*\"conv\":{\"state\":\"on\",\"substituted\":2,"
  done
done

echo "$failures failure(s)"
[ "$failures" -eq 0 ]

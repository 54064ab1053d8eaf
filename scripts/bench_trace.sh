#!/bin/bash
# SPDX-License-Identifier: MIT
# bench_trace.sh [BUILD_DIR] [RUNS] -- DEMO ARGS...: the cost of MEMSAVE_TRACE. Runs the
# program RUNS times each without and with MEMSAVE_TRACE=10, alternating, through
# `memsave run --report`, and prints the median CPU time (user + system, from the report's
# process line: CPU, so the machine's load matters little), the difference per substituted
# node, and the tracer's own measure of its CPU time per node.
set -euo pipefail
build=${1:-build} runs=${2:-5}
shift 2
[ "${1:-}" = "--" ] && shift
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for i in $(seq "$runs"); do
  for trace in 0 10; do
    "$build/memsave" run --trace $trace --report "$tmp/t$trace-$i-%p.json" -- "$@" >/dev/null 2>&1
  done
done
/usr/bin/python3 - "$tmp" <<'PY'
import glob, json, statistics, sys
tmp = sys.argv[1]
def load(trace):
    return [json.load(open(p)) for p in sorted(glob.glob(f"{tmp}/t{trace}-*.json"))]
off, on = load(0), load(10)
cpu = lambda d: d["process"]["user_s"] + d["process"]["system_s"]
nodes = on[0]["trace"]["nodes"]
a, b = statistics.median(map(cpu, off)), statistics.median(map(cpu, on))
own = statistics.median(d["trace"]["ns"] / d["trace"]["nodes"] for d in on)
print(f"runs {len(off)}+{len(on)}, substituted nodes per run {nodes}")
print(f"median CPU s: trace off {a:.3f}, trace on {b:.3f}, difference {b - a:+.3f} s "
      f"({(b - a) / a * 100:+.1f} %), {(b - a) / nodes * 1e6:+.1f} us per node")
print(f"tracer's own CPU per node (median of runs, first-time symbol lookups included): {own / 1e3:.1f} us")
PY

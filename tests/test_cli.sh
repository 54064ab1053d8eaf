#!/bin/bash
# SPDX-License-Identifier: MIT
# test_cli.sh MEMSAVE LIBMEMSAVE PRELOAD_HOST TRACE_HOST FOOTPRINT_HOST DEMO SRCDIR FAKE_C10_CUDA
# (issue 5):
# the memsave command (options good and bad, exit statuses, --check-output, --json, a run
# that fails in B only, a CMD without LibTorch), the report at exit for a C++ and a Python
# host against memsave_get_stats, call-site attribution, and the agreement of the peak
# tensor bytes with the arithmetic of a known footprint.
set -u
memsave=$1 lib=$2 host=$3 trace_host=$4 footprint=$5 demo=$6 src=$7 fake_cuda=$8
py=/usr/bin/python3
. "$(dirname "$0")/checks.sh"
# check NAME PYTHON-EXPR FILE: the expression, over d = the JSON object in FILE, is true.
check() {
  local out
  if out=$("$py" -c "import json, sys; d = json.load(open(sys.argv[1])); assert $2, d" "$3" 2>&1); then pass "$1"
  else fail "$1" "assertion: $2" "$(tail -c 600 <<<"$out")"; fi
}

# --- Options, good and bad -------------------------------------------------------------
out=$("$memsave" --help); rc=$?
expect_eq "--help exits 0" "$rc" "0"
expect_has "--help shows both modes" "$out" "memsave ab \[OPTIONS\]"
expect_eq "--version" "$("$memsave" --version)" "memsave 0.1.0"
"$memsave" >/dev/null 2>&1; expect_eq "no mode: exit 2" "$?" "2"
out=$("$memsave" frob 2>&1); rc=$?
expect_eq "unknown mode: exit 2" "$rc" "2"
expect_has "unknown mode: reason" "$out" "memsave: unknown mode 'frob'"
out=$("$memsave" ab --bogus -- true 2>&1); rc=$?
expect_eq "unknown option: exit 2" "$rc" "2"
expect_has "unknown option: getopt's message" "$out" "memsave ab: unrecognized option '--bogus'"
expect_has "unknown option: hint" "$out" "Try 'memsave --help'"
out=$("$memsave" ab -n 2>&1); expect_has "missing argument" "$out" "memsave ab: option requires an argument -- 'n'"
for bad in 0 x 1001; do
  out=$("$memsave" ab -n "$bad" -- true 2>&1); rc=$?
  expect_eq "-n $bad: exit 2" "$rc" "2"
  expect_has "-n $bad: reason" "$out" "invalid number of runs '$bad'"
done
out=$("$memsave" run --ops conv,warp -- true 2>&1); rc=$?
expect_eq "bad --ops: exit 2" "$rc" "2"
expect_has "bad --ops: reason" "$out" "memsave run: invalid --ops list 'conv,warp'"
out=$("$memsave" run --trace 1001 -- true 2>&1); expect_has "bad --trace" "$out" "invalid --trace count '1001'"
out=$("$memsave" run --json -- true 2>&1); rc=$?
expect_eq "--json with run: exit 2" "$rc" "2"
expect_has "--json with run: reason" "$out" "--json is an option of memsave ab"
out=$("$memsave" ab --report x -- true 2>&1); expect_has "--report with ab" "$out" "--report is an option of memsave run"
out=$("$memsave" run 2>&1); rc=$?
expect_eq "missing command: exit 2" "$rc" "2"
expect_has "missing command: reason" "$out" "memsave run: missing command"
out=$("$memsave" run --ops conv,-relu --trace 7 -v -- sh -c 'echo "$MEMSAVE_OPS $MEMSAVE_TRACE $MEMSAVE_VERBOSE"')
expect_eq "options become MEMSAVE_* variables" "$out" "conv,-relu 7 1"
out=$("$memsave" run sh -c 'echo "$LD_PRELOAD"')
expect_eq "LD_PRELOAD set, no -- needed" "$out" "$pre$(realpath "$lib")"
out=$(LD_PRELOAD=${pre}libm.so.6 "$memsave" run -- sh -c 'echo "$LD_PRELOAD"')
expect_eq "an existing LD_PRELOAD is kept after ours" "$out" "$pre$(realpath "$lib"):${pre}libm.so.6"

# --- Exit statuses of memsave run --------------------------------------------------------
"$memsave" run -- sh -c 'exit 7'; expect_eq "run passes exit status 7" "$?" "7"
out=$("$memsave" run -- sh -c 'exit 0' 2>&1); rc=$?
expect_eq "run passes exit status 0" "$rc" "0"
expect_eq "run prints nothing of its own" "$out" ""
out=$("$memsave" run -- sh -c 'kill -TERM $$' 2>&1); rc=$?
expect_eq "killed by a signal: 128 + 15" "$rc" "143"
expect_has "killed by a signal: said" "$out" "memsave run: sh killed by signal 15"
out=$("$memsave" run -- "$tmp/no-such-program" 2>&1); rc=$?
expect_eq "missing program: 127" "$rc" "127"
expect_has "missing program: reason" "$out" "cannot run $tmp/no-such-program: No such file or directory"
out=$("$memsave" run --report "$tmp/run-%p.txt" -- "$host" 2>&1 >/dev/null)
expect_has "run says where the report went" "$out" "memsave run: report written to $tmp/run-[0-9]*.txt"
expect_has "the report is there" "$(cat "$tmp"/run-*.txt)" "memsave: report (libmemsave"
out=$("$memsave" run --report "$tmp/none-%p.json" -- /bin/true 2>&1)
expect_has "run without LibTorch says so" "$out" "no report written: /bin/true never loaded LibTorch"
maps=$(MEMSAVE_TRACE=5 LD_PRELOAD=$pre$lib sh -c 'cat /proc/self/maps')
expect_eq "MEMSAVE_TRACE maps no unwinder or hooks without LibTorch" \
  "$(grep -c -e libunwind -e libmemsave_hooks -e libtorch <<<"$maps")" "0"

# --- memsave ab --------------------------------------------------------------------------
out=$("$memsave" ab --check-output -- "$host" 2>"$tmp/planted.err"); rc=$?
err=$(cat "$tmp/planted.err")
expect_eq "--check-output catches a planted difference: exit 1" "$rc" "1"
expect_has "--check-output: first differing line" "$err" "standard outputs of A1 and B1 differ, first at line 1"
expect_has "--check-output: A's line" "$err" "A1: grad_fn ConvolutionBackward0"
expect_has "--check-output: B's line" "$err" "B1: grad_fn MemsaveConvolutionBackward"
expect_has "--check-output: the table is still printed" "$out" "output of A and B: different"
out=$("$memsave" ab -n 2 --check-output -- "$demo" --model vgg11 --scenario adversarial --steps 2 --batch 2 --size 32); rc=$?
expect_eq "identical outputs: exit 0" "$rc" "0"
expect_has "identical outputs: said" "$out" "output of A and B: identical"
expect_has "table: peak tensor bytes with B/A" "$out" "peak CPU tensor bytes .* 0\.[0-9]*$"
expect_has "table: medians over 2 pairs" "$out" "(medians)"
expect_has "table: conv row (8 convolutions, 2 steps)" "$out" "^conv  *on  *16 "
out=$("$memsave" ab -- sh -c '[ "$MEMSAVE" = 1 ] && { echo boom >&2; exit 3; }; exec "$0"' "$host" 2>&1 >/dev/null); rc=$?
expect_eq "CMD failing in B only: its status" "$rc" "3"
expect_has "CMD failing in B only: which run" "$out" "run B1 (libmemsave, MEMSAVE=1) failed: sh exit status 3"
expect_has "CMD failing in B only: A succeeded" "$out" "A1, succeeded: the failure comes with libmemsave"
expect_has "CMD failing in B only: stderr tail" "$out" "  | boom"
out=$("$memsave" ab -- sh -c 'exit 4' 2>&1); rc=$?
expect_eq "CMD failing in A: its status" "$rc" "4"
expect_has "CMD failing in A: which run" "$out" "run A1 (stock, MEMSAVE=0) failed"
out=$("$memsave" ab -- /bin/true 2>&1); rc=$?
expect_eq "CMD without LibTorch: exit 1" "$rc" "1"
expect_has "CMD without LibTorch: said plainly" "$out" "/bin/true never loaded LibTorch"

# memsave ab reading reports written by a stand-in CMD (issue 11): a shell script that writes
# the report libmemsave would, with figures chosen to catch the defects: B keeps 5 bytes of
# activations against stock's 4 (a 1-element dropout: the saving is negative), linear only
# passed through (stock minimal), and each run's peak since its last reset (cpu_peak_bytes)
# is not the whole run's (cpu_peak_total_bytes, what ab compares).
cat >"$tmp/fake-report.sh" <<'SCRIPT'
#!/bin/sh
f=$(printf '%s' "$MEMSAVE_REPORT" | sed "s/%p/$$/")
if [ "$MEMSAVE" = 1 ]; then a=true k=5 total=800; else a=false k=4 total=1000; fi
fam() { printf '"%s":{"state":"%s","substituted":%s,"passthrough":%s,"fallbacks":0}' "$@"; }
cat >"$f" <<JSON
{"memsave_version":"0.1.0","pid":$$,"torch_loaded":true,"torch_version":"9.9.9","active":$a,"enabled":$a,
"families":{$(fam conv on 0 0),$(fam linear on 0 2),$(fam batchnorm on 0 0),$(fam relu on 0 0),$(fam pool on 0 0),$(fam dropout on 1 0)},
"bytes_kept":$((k + 40)),"bytes_stock":44,"activation_bytes_kept":$k,"activation_bytes_stock":4,
"parameter_bytes_kept":40,"parameter_bytes_stock":40,"activation_bytes_kept_peak":3,"activation_bytes_stock_peak":2,"cpu_current_bytes":0,"cpu_peak_bytes":7,"cpu_peak_total_bytes":$total,
"cuda":{"state":"absent","peak_allocated_bytes":[]},"fallback_reasons":[],"process":{"rss_peak_bytes":1,"user_s":0,"system_s":0}}
JSON
echo same output
SCRIPT
chmod +x "$tmp/fake-report.sh"
out=$("$memsave" ab -- "$tmp/fake-report.sh"); rc=$?
expect_eq "ab, stand-in reports: exit 0" "$rc" "0"
expect_has "ab: the most kept at once leads (issue 25)" "$out" "^kept for backward (run B1): activations at most 3 B at once (stock would keep at most 2 B, 1 B more); summed over the run: "
expect_has "ab: a negative saving does not wrap" "$out" "summed over the run: activations 5 B (stock 4 B, 1 B more)"
expect_eq "ab: no wrapped figure" "$(grep -c 'TiB' <<<"$out")" "0"
expect_has "ab: parameters apart" "$out" ", parameters referenced 40 B$"
expect_has "ab: the whole run's peak (cpu_peak_total_bytes)" "$out" "^peak CPU tensor bytes  *1000 B  *800 B  *0.800$"
expect_has "ab: passthrough only is stock minimal" "$out" "^linear  *on  *0  *2  *0  stock minimal$"
expect_has "ab: verdicts" "$out" "^dropout  *on  *1  *0  *0  ok$"
"$memsave" ab --json -- "$tmp/fake-report.sh" >"$tmp/fake-ab.json"
check "ab --json: activations and parameters apart" "(d['activation_bytes_kept'], d['activation_bytes_stock'], d['parameter_bytes_kept'], d['parameter_bytes_stock'], d['bytes_kept'], d['bytes_stock']) == (5, 4, 40, 40, 45, 44)" "$tmp/fake-ab.json"
check "ab --json: the most kept at once, by its names" "(d['activation_bytes_kept_peak'], d['activation_bytes_stock_peak']) == (3, 2)" "$tmp/fake-ab.json"
check "ab --json: the whole run's peak, by its name" "d['a']['median']['cpu_peak_total_bytes'] == 1000 and d['b']['runs'][0]['cpu_peak_total_bytes'] == 800" "$tmp/fake-ab.json"

# --json, parsed back; and the agreement of the report's peaks with the arithmetic of
# footprint_host (see its comment): A = (N + 3) act + W, B = 4 act + W, within 3 %.
n=16 b=4 c=16 s=64
"$memsave" ab -n 2 --json -- "$footprint" $n $b $c $s >"$tmp/ab.json"; rc=$?
expect_eq "--json: exit 0" "$rc" "0"
check "--json: two runs per side, labelled" "[r['label'] for r in d['a']['runs'] + d['b']['runs']] == ['A1', 'A2', 'B1', 'B2']" "$tmp/ab.json"
check "--json: median and ratio agree" "abs(d['ratio']['cpu_peak_total_bytes'] - d['b']['median']['cpu_peak_total_bytes'] / d['a']['median']['cpu_peak_total_bytes']) < 1e-3" "$tmp/ab.json"
check "--json: conv nodes of B1" "d['families']['conv'] == {'state': 'on', 'substituted': $n, 'passthrough': 0, 'fallbacks': 0}" "$tmp/ab.json"
check "--json: bytes of B1" "d['bytes_stock'] - d['bytes_kept'] == $n * $b * $c * $s * $s * 4" "$tmp/ab.json"
check "--json: one step: the most kept at once is the sum (issue 25)" "d['activation_bytes_stock_peak'] == d['activation_bytes_stock'] == $n * $b * $c * $s * $s * 4 and d['activation_bytes_kept_peak'] == d['activation_bytes_kept']" "$tmp/ab.json"
check "--json: RSS and wall time measured" "all(r['rss_peak_bytes'] > 0 and r['wall_s'] > 0 for r in d['a']['runs'] + d['b']['runs'])" "$tmp/ab.json"
check "--json: output not checked" "d['output'] == 'not_checked' and d['command'][-4:] == ['$n', '$b', '$c', '$s']" "$tmp/ab.json"
act=$((b * c * s * s * 4)) w=$((n * c * c * 4))
check "agreement: A's peak is (N + 3) act + W within 3 %" "abs(d['a']['median']['cpu_peak_total_bytes'] / ($((n + 3)) * $act + $w) - 1) < 0.03" "$tmp/ab.json"
check "agreement: B's peak is 4 act + W within 3 %" "abs(d['b']['median']['cpu_peak_total_bytes'] / (4 * $act + $w) - 1) < 0.03" "$tmp/ab.json"

# --- The report at exit, against memsave_get_stats ---------------------------------------
# The hosts print their own statistics just before they leave; nothing is substituted or
# allocated after that, so the report must show the same numbers.
stats_check() {  # NAME STATS-LINE REPORT.json
  local expr="d['families']['conv']['substituted'] == S['conv_substituted'] and \
d['families']['conv']['passthrough'] == S['conv_passthrough'] and d['families']['conv']['fallbacks'] == S['conv_fallbacks'] and \
d['bytes_kept'] == S['bytes_kept'] and d['bytes_stock'] == S['bytes_stock'] and d['cpu_peak_bytes'] == S['cpu_peak_bytes'] and \
S['conv_substituted'] > 0 and d['torch_version'] != '' and d['families']['conv']['state'] == 'on' and \
d['activation_bytes_kept'] + d['parameter_bytes_kept'] == d['bytes_kept'] and \
d['activation_bytes_stock'] + d['parameter_bytes_stock'] == d['bytes_stock'] and \
d['cuda']['state'] in ('absent', 'unused', 'present', 'unavailable')"
  check "$1" "(lambda S: $expr)({k: int(v) for k, v in (f.split('=') for f in '''$2'''.split()[1:])})" "$3"
}
stats=$(MEMSAVE_REPORT="$tmp/cpp-%p.json" LD_PRELOAD=$pre$lib "$trace_host" | grep '^stats ')
stats_check "C++ host: JSON report agrees with memsave_get_stats" "$stats" "$(ls "$tmp"/cpp-*.json)"
if ! ldd "$trace_host" | grep -q libc10_cuda; then
  check "C++ host: CUDA absent with a CPU-only LibTorch" "d['cuda'] == {'state': 'absent', 'peak_allocated_bytes': []}" "$(ls "$tmp"/cpp-*.json)"
fi
# CUDA through a stand-in libc10_cuda (tests/fake_c10_cuda.cpp): the peak of each device the
# allocator knows, read with dlsym; none initialised: "unused".
FAKE_CUDA_DEVICES=2 MEMSAVE_REPORT="$tmp/cuda-%p.json" LD_PRELOAD="$pre$lib $fake_cuda" "$trace_host" >/dev/null
check "CUDA: the caching allocator's peak per device" "d['cuda'] == {'state': 'present', 'peak_allocated_bytes': [1000000, 2000000]}" "$(ls "$tmp"/cuda-*.json)"
FAKE_CUDA_DEVICES=0 MEMSAVE_REPORT="$tmp/unused-%p.json" LD_PRELOAD="$pre$lib $fake_cuda" "$trace_host" >/dev/null
check "CUDA: loaded but never used" "d['cuda'] == {'state': 'unused', 'peak_allocated_bytes': []}" "$(ls "$tmp"/unused-*.json)"
out=$(FAKE_CUDA_DEVICES=1 LD_PRELOAD=$pre$fake_cuda "$memsave" ab -- "$trace_host")
expect_has "CUDA: ab shows the CUDA row with B/A" "$out" "peak CUDA tensor bytes  *976.6 KiB  *976.6 KiB  *1.000"
MEMSAVE_REPORT="$tmp/cpp-%p.txt" LD_PRELOAD=$pre$lib "$trace_host" >/dev/null
text=$(cat "$tmp"/cpp-*.txt)
substituted=$(sed -n 's/.*conv_substituted=\([0-9]*\).*/\1/p' <<<"$stats")
expect_has "C++ host: text report, conv row" "$text" "^memsave:   conv  *on  *$substituted  *0  *0  ok$"
expect_has "C++ host: text report, families off and unavailable" "$text" "^memsave:   linear  *off .* stock (off)$"
expect_has "C++ host: text report, LibTorch version" "$text" "^memsave:   LibTorch [0-9]"
expect_has "C++ host: text report, process line" "$text" "^memsave:   process: peak RSS"
if "$py" -c 'import torch' 2>/dev/null; then
  "$memsave" run --report "$tmp/py-%p.json" -- "${pyhost[@]}" "$py" "$src/report_python.py" 4 >"$tmp/py.out" 2>"$tmp/py.err"
  rc=$?
  stats=$(grep '^stats ' "$tmp/py.out")
  expect_eq "Python host: sys.exit status through memsave run" "$rc" "4"
  stats_check "Python host: JSON report at exit agrees with memsave_get_stats" "$stats" "$(ls "$tmp"/py-*.json)"
  out=$(MEMSAVE_REPORT=stderr LD_PRELOAD=$pre$lib "${pyhost[@]}" "$py" "$src/report_python.py" 2>&1 >/dev/null)
  expect_has "Python host: text report on stderr" "$out" "^memsave:   conv  *on  *4 "
else
  fail "Python host" "/usr/bin/python3 cannot import torch (install python3-torch)"
fi

# --- Call-site attribution ---------------------------------------------------------------
# trace_host: 3 calls each; a call does not keep its input: 4*8*32*32*4 and 4*8*8*8*4 bytes.
MEMSAVE_TRACE=5 MEMSAVE_REPORT="$tmp/trace-%p.json" LD_PRELOAD=$pre$lib "$trace_host" >/dev/null
report=$(ls "$tmp"/trace-*.json)
check "trace: two call sites, ranked by bytes" "[s['symbol'].split('(anonymous namespace)::')[-1].split('(')[0] for s in d['trace']['sites']] == ['large_frozen_convs', 'small_frozen_convs']" "$report"
check "trace: bytes and nodes per site" "[(s['bytes'], s['nodes']) for s in d['trace']['sites']] == [(3 * 131072, 3), (3 * 8192, 3)]" "$report"
check "trace: module and attribution" "all(s['module'] == 'trace_host' for s in d['trace']['sites']) and d['trace']['attribution'] == 'call_site'" "$report"
check "trace: every node attributed" "d['trace']['nodes'] == 6 and d['trace']['unattributed_nodes'] == 0" "$report"
MEMSAVE_TRACE=1 MEMSAVE_REPORT="$tmp/top1-%p.json" LD_PRELOAD=$pre$lib "$trace_host" >/dev/null
check "trace: top N cuts the list" "len(d['trace']['sites']) == 1 and d['trace']['sites_total'] == 2" "$(ls "$tmp"/top1-*.json)"
out=$("$memsave" ab --trace 2 -- "$trace_host")
expect_has "ab --trace: call sites of B1" "$out" "call sites of run B1"
expect_has "ab --trace: the larger first" "$(grep -A3 'call sites of run B1' <<<"$out" | grep frozen_convs | head -1)" "large_frozen_convs"
if "$py" -c 'import torch' 2>/dev/null; then
  MEMSAVE_TRACE=3 MEMSAVE_REPORT="$tmp/pytrace-%p.json" LD_PRELOAD=$pre$lib "${pyhost[@]}" "$py" "$src/report_python.py" >/dev/null
  check "trace, Python host: attributed to the operator" "d['trace']['attribution'] == 'operator' and [s['symbol'] for s in d['trace']['sites']] == ['aten::convolution'] and d['trace']['sites'][0]['bytes'] == d['bytes_stock'] - d['bytes_kept']" "$(ls "$tmp"/pytrace-*.json)"
fi

[ "$failures" -eq 0 ] && echo "all cli checks passed"
exit $((failures > 0))

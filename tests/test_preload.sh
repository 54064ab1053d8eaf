#!/bin/bash
# SPDX-License-Identifier: MIT
# test_preload.sh LIBMEMSAVE PRELOAD_HOST SRCDIR [FAKE_TORCH [START_MAIN_HOST]]: every
# preload path in its own process: a LibTorch C++ host, Python's late dlopen, processes that
# never load LibTorch, a LibTorch the hooks were not built for, bad environment values, the
# report, a __libc_start_main that cannot be found.
set -u
lib=$1 host=$2 src=$3 fake=${4:-} start_main_host=${5:-}
. "$(dirname "$0")/checks.sh"

# Processes that never load LibTorch: no output, nothing extra mapped, even with bad values.
out=$(LD_PRELOAD=$pre$lib /bin/true 2>&1); rc=$?
expect_eq "/bin/true prints nothing" "$out" ""
expect_eq "/bin/true exits 0" "$rc" "0"
out=$(MEMSAVE_VERBOSE=banana MEMSAVE=maybe LD_PRELOAD=$pre$lib sh -c 'ls / >/dev/null; echo done' 2>&1)
expect_eq "sh -c with bad values prints nothing of ours" "$out" "done"
maps=$(LD_PRELOAD=$pre$lib sh -c 'cat /proc/self/maps')
expect_has "libmemsave is mapped in the child" "$maps" "libmemsave.so"
expect_eq "no LibTorch or hooks mapped in the child" "$(grep -c -e libtorch -e libmemsave_hooks <<<"$maps")" "0"

# A LibTorch C++ host.
stock=$("$host")
expect_has "host without preload" "$stock" "grad_fn ConvolutionBackward0"
out=$(LD_PRELOAD=$pre$lib "$host" 2>&1)
expect_has "host under preload builds our node" "$out" "grad_fn MemsaveConvolutionBackward"
expect_has "host under preload is active" "$out" "active 1"
expect_eq "host under preload: same gradient" "$(grep checksum <<<"$out")" "$(grep checksum <<<"$stock")"
expect_eq "host under preload prints nothing of ours" "$(grep -c memsave: <<<"$out")" "0"
out=$(MEMSAVE=0 LD_PRELOAD=$pre$lib "$host" 2>&1)
expect_has "MEMSAVE=0 is stock" "$out" "grad_fn ConvolutionBackward0"
expect_has "MEMSAVE=0 is not active" "$out" "active 0"
out=$(MEMSAVE_OPS=-conv LD_PRELOAD=$pre$lib "$host" 2>&1)
expect_has "MEMSAVE_OPS=-conv is stock for conv" "$out" "grad_fn ConvolutionBackward0"

# Note [AOTAutograd's cache] (shim/environ.c): on, libmemsave turns torch.compile's on-disk
# AOTAutograd cache off for the process, before the host reads its environment; MEMSAVE=0
# leaves the environment as it is; a value the user set stays, with one warning where it is
# not 0 (once LibTorch shows up).
out=$(env -u TORCHINDUCTOR_AUTOGRAD_CACHE LD_PRELOAD=$pre$lib sh -c 'echo "cache=${TORCHINDUCTOR_AUTOGRAD_CACHE-unset}"')
expect_eq "on: AOTAutograd's cache off for the process" "$out" "cache=0"
out=$(env -u TORCHINDUCTOR_AUTOGRAD_CACHE MEMSAVE=0 LD_PRELOAD=$pre$lib sh -c 'echo "cache=${TORCHINDUCTOR_AUTOGRAD_CACHE-unset}"')
expect_eq "MEMSAVE=0: the environment untouched" "$out" "cache=unset"
out=$(TORCHINDUCTOR_AUTOGRAD_CACHE=1 LD_PRELOAD=$pre$lib sh -c 'echo "cache=${TORCHINDUCTOR_AUTOGRAD_CACHE-unset}"' 2>&1)
expect_eq "the user's value stays, nothing printed without LibTorch" "$out" "cache=1"
out=$(TORCHINDUCTOR_AUTOGRAD_CACHE=1 LD_PRELOAD=$pre$lib "$host" 2>&1)
expect_eq "the user's 1: one warning" "$(grep -c '^memsave: warning: TORCHINDUCTOR_AUTOGRAD_CACHE=1' <<<"$out")" "1"
expect_has "the user's 1: still active" "$out" "active 1"
out=$(TORCHINDUCTOR_AUTOGRAD_CACHE=0 LD_PRELOAD=$pre$lib "$host" 2>&1)
expect_eq "the user's 0: nothing printed" "$(grep -c 'memsave:' <<<"$out")" "0"

# Bad values, with LibTorch present: exactly one warning each, naming the variable; defaults kept.
out=$(MEMSAVE_VERBOSE=banana LD_PRELOAD=$pre$lib "$host" 2>&1)
expect_eq "bad MEMSAVE_VERBOSE: one warning" "$(grep -c '^memsave: warning: MEMSAVE_VERBOSE="banana"' <<<"$out")" "1"
expect_has "bad MEMSAVE_VERBOSE: default used" "$out" "grad_fn MemsaveConvolutionBackward"
out=$(MEMSAVE_OPS=conv,warp LD_PRELOAD=$pre$lib "$host" 2>&1)
expect_eq "bad MEMSAVE_OPS: one warning" "$(grep -c 'memsave: warning: MEMSAVE_OPS=' <<<"$out")" "1"
out=$(MEMSAVE_HOOKS=$tmp/missing.so LD_PRELOAD=$pre$lib "$host" 2>&1); rc=$?
expect_eq "missing hooks: one warning" "$(grep -c 'memsave: warning: could not load the hooks' <<<"$out")" "1"
expect_has "missing hooks: stock, host continues" "$out" "grad_fn ConvolutionBackward0"
expect_eq "missing hooks: exit 0" "$rc" "0"

# The report at exit.
MEMSAVE_REPORT=$tmp/r-%p.json LD_PRELOAD=$pre$lib "$host" >/dev/null 2>&1
report=$(cat "$tmp"/r-*.json 2>/dev/null)
expect_has "JSON report written" "$report" '"cpu_peak_bytes":[1-9]'
expect_has "JSON report counts the conv" "$report" '"conv":{"state":"on","substituted":1'
out=$(MEMSAVE_REPORT=stderr LD_PRELOAD=$pre$lib "$host" 2>&1 >/dev/null)
expect_has "text report on stderr" "$out" "memsave:   CPU tensor bytes: peak"

# A report that cannot be written (issue 11): /dev/full opens and every write fails. One
# warning; the host runs to its end and keeps its status.
out=$(MEMSAVE_REPORT=/dev/full LD_PRELOAD=$pre$lib "$host" 2>&1); rc=$?
expect_eq "report to /dev/full: host exits 0" "$rc" "0"
expect_eq "report to /dev/full: one warning" "$(grep -c '^memsave: warning: could not write the report to /dev/full; the report is lost: No space left on device$' <<<"$out")" "1"
expect_has "report to /dev/full: host ran" "$out" "grad_fn MemsaveConvolutionBackward"

# A LibTorch the hooks were not built for (a stand-in library named libtorch_cpu with
# another soname, loaded late): one warning, no hooks.
if [ -n "$fake" ] && [ -x /usr/bin/python3 ]; then
  out=$(LD_PRELOAD=$pre$lib /usr/bin/python3 -c "import ctypes; ctypes.CDLL('$fake'); print('alive')" 2>&1)
  expect_eq "other LibTorch: one warning" "$(grep -c 'memsave: warning: LibTorch .* is not ' <<<"$out")" "1"
  expect_has "other LibTorch: host continues" "$out" "alive"
fi

# No next __libc_start_main (issue 11): libc's own starts the host's main; we stay
# inactive and say so once. Without libc's either, the truth: the program cannot start.
if [ -n "$start_main_host" ]; then
  out=$("$start_main_host" 3 x 2>&1); rc=$?
  expect_eq "no next __libc_start_main: main's status" "$rc" "3"
  expect_has "no next __libc_start_main: main ran with its arguments" "$out" "main ran with 2 argument(s), last 'x'"
  expect_eq "no next __libc_start_main: one warning" "$(grep -c '^memsave: warning: .*libmemsave stays inactive' <<<"$out")" "1"
  out=$(START_MAIN_NO_LIBC=1 "$start_main_host" 2>&1); rc=$?
  expect_eq "no __libc_start_main at all: 127" "$rc" "127"
  expect_has "no __libc_start_main at all: says the program cannot start" "$out" "the program cannot be started"
fi

# Python: LibTorch arrives with `import torch`, through dlopen, after start-up.
if /usr/bin/python3 -c 'import torch' 2>/dev/null; then
  # Under the sanitizers without LeakSanitizer ($pyhost, tests/checks.sh).
  out=$(LD_PRELOAD=$pre$lib "${pyhost[@]}" /usr/bin/python3 "$src/preload_python.py" 2>&1)
  expect_has "python late load" "$out" "python: ok"
else
  fail "python late load" "/usr/bin/python3 cannot import torch (install python3-torch)"
fi

[ "$failures" -eq 0 ] && echo "all preload checks passed"
exit $((failures > 0))

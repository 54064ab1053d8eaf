#!/bin/bash
# SPDX-License-Identifier: MIT
# test_trace_unavailable.sh LIB HOOKS_NOUNWIND TRACE_HOST: hooks built without libunwind
# (issue 14; Note [Without libunwind] in hooks/core/trace.cpp). The variant is made of the
# same objects as libmemsave_hooks.so but trace.cpp; it is put next to a copy of the shim,
# which loads the hooks from its own directory. MEMSAVE_TRACE must then give one warning and
# a report that says "unavailable", and the host must run as it does with the real hooks.
lib=$1 nounwind=$2 trace_host=$3
. "$(dirname "$0")/checks.sh"

mkdir "$tmp/lib"
cp "$lib" "$tmp/lib/libmemsave.so"
cp "$nounwind" "$tmp/lib/libmemsave_hooks.so"
expect_eq "the variant does not need libunwind" \
  "$(readelf -d "$tmp/lib/libmemsave_hooks.so" | grep -c 'NEEDED.*libunwind')" 0

run() {  # run LIB TRACE: the host's stdout and stderr together, the text report on stderr
  MEMSAVE_TRACE=$2 MEMSAVE_REPORT=stderr LD_PRELOAD=$1 "$trace_host" 2>&1
  echo "exit $?"
}
out=$(run "$tmp/lib/libmemsave.so" 5)
expect_has "the host exits normally" "$out" '^exit 0$'
expect_has "the hooks are active" "$out" 'hooks active'
expect_eq "one warning" "$(grep -c '^memsave: warning: MEMSAVE_TRACE: call-site attribution is unavailable' <<<"$out")" 1
expect_has "the report says unavailable" "$out" '^memsave:   trace: unavailable (the hooks were built without libunwind)$'
expect_eq "no call-site table" "$(grep -c 'call sites by bytes' <<<"$out")" 0
expect_has "nodes are still substituted" "$out" '^memsave:   conv .* [1-9][0-9]* '

MEMSAVE_TRACE=5 MEMSAVE_REPORT="$tmp/r.json" LD_PRELOAD="$tmp/lib/libmemsave.so" "$trace_host" >/dev/null 2>&1
expect_has "the JSON report says unavailable" "$(cat "$tmp/r.json")" '"trace":{"top":5,"attribution":"unavailable"'

out=$(run "$tmp/lib/libmemsave.so" 0)
expect_eq "no warning without MEMSAVE_TRACE" "$(grep -c 'unavailable' <<<"$out")" 0

# The real hooks, the same way: call sites, no warning (so the checks above can fail).
out=$(run "$lib" 5)
expect_eq "real hooks: no warning" "$(grep -c 'unavailable' <<<"$out")" 0
expect_has "real hooks: call sites" "$out" 'call sites by bytes'

[ "$failures" = 0 ] || { echo "$failures check(s) failed"; exit 1; }

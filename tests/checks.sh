# SPDX-License-Identifier: MIT
# checks.sh: what the shell tests share (sourced): a scratch directory $tmp removed at exit,
# an environment without MEMSAVE_* variables or LD_PRELOAD, and the assertions. Each check
# prints one line; a failure shows what was expected and what came, and is counted in
# $failures.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# A sanitized build (MEMSAVE_SANITIZE; tests/CMakeLists.txt) names its ASan runtime in
# MEMSAVE_TEST_PRELOAD: it must come first in the LD_PRELOAD of every uninstrumented host
# that preloads libmemsave.so. $pre is that runtime and a colon, or nothing.
pre=${MEMSAVE_TEST_PRELOAD:+$MEMSAVE_TEST_PRELOAD:}
# Under the sanitizers a preloaded Python host runs without LeakSanitizer: its tracer crashes
# at exit there now and then ("Tracer caught signal 11"; after the unwinder fix rarer, not
# gone: 1 of 3 clean runs of scripts/sanitize.sh ci on 2026-12-01; cause not found), and leaks
# through Python's stacks are suppressed anyway (tests/sanitize/lsan.supp); ASan and UBSan stay
# on. Put "${pyhost[@]}" before the python3 of such a host.
pyhost=()
[ -n "${MEMSAVE_TEST_PRELOAD:-}" ] && pyhost=(env "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0")
for v in $(compgen -e); do case $v in MEMSAVE_TEST_PRELOAD) ;; MEMSAVE*) unset "$v" ;; esac; done
unset LD_PRELOAD
export OMP_NUM_THREADS=1
failures=0
pass() { printf 'ok   %s\n' "$1"; }
fail() { printf 'FAIL %s\n' "$1"; shift; printf '     %s\n' "$@"; failures=$((failures + 1)); }
expect_eq() { if [ "$2" == "$3" ]; then pass "$1"; else fail "$1" "expected: $3" "got:      $2"; fi; }
expect_has() { if grep -q -- "$3" <<<"$2"; then pass "$1"; else fail "$1" "expected to contain: $3" "got: $2"; fi; }

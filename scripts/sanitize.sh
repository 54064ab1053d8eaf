#!/bin/bash
# SPDX-License-Identifier: MIT
# sanitize.sh [all|ci]: builds with MEMSAVE_SANITIZE=address,undefined into build-asan
# (ASAN_BUILD_DIR) and runs the LibTorch 1.13 test suite under it: `all` (the default) builds
# everything and runs every test; `ci` (what CI runs) builds what these tests need and runs
# them: the shim core, every preload path, the command and its reports, install, timeline,
# report write errors, fork and DataLoader workers, and the in-process hooks tests that run
# in seconds under ASan (the node contract, the kernel skeleton, each family's equality
# tests but ReLU's, the masks, the pool windows, the property test, threads, the soak,
# autocast, memory, poison) and the replay of tests/property-seeds.txt; the equality tests
# with poisoned stand-ins (MEMSAVE_SANITIZE_POISON, default nan; empty for none). Left out
# of `ci`: test_relu (83 s under ASan), test_reuse,
# test_scenarios (163 s), torchscript_cpp (398 s), the Python-host tests (LeakSanitizer is
# suppressed there), and those that start a child without the ASan runtime first in
# LD_PRELOAD (trace_names, python_module: they fail under `all` for that reason alone).
# Fails when a test fails or
# when any process left an ASan or LSan report in build-asan/sanitizer/ (reports go there,
# see tests/CMakeLists.txt, so that one in a process whose status no test checks still
# counts) or a UBSan report (fatal, on stderr) shows in the tests' output.
# Preloaded hosts get the ASan runtime first in LD_PRELOAD.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${ASAN_BUILD_DIR:-build-asan}
subset=${1:-all}
case "$subset" in
  all) targets=() tests=() ;;
  ci)
    hooks_tests=(test_skeleton test_contract test_autocast test_batchnorm test_bitmask test_conv test_dropout test_linear
                 test_memory test_pool test_pool_windows test_property test_relu_bounds test_soak test_threads test_poison)
    targets=(--target memsave memsave_hooks memsave_cli test_shim preload_host start_main_host fake_torch_cpu fork_host
             trace_host footprint_host fake_c10_cuda memsave-demo memsave_man "${hooks_tests[@]}")
    tests=(-R "^(shim|preload|cli|install|timeline|report_io|fork|fork_dataloader|property_regressions|$(IFS='|'; echo "${hooks_tests[*]}"))\$")
    ;;
  *) echo "usage: $0 [all|ci]" >&2; exit 2 ;;
esac
# The equality tests with poisoned stand-ins (MEMSAVE_TEST_POISON in tests/CMakeLists.txt):
# the plain suite (scripts/quickstart.sh test) runs them without.
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMEMSAVE_SANITIZE=address,undefined \
  -DMEMSAVE_TEST_POISON="${MEMSAVE_SANITIZE_POISON-nan}" >/dev/null
cmake --build "$build" -j"$(nproc)" "${targets[@]}"
rm -rf "$build/sanitizer"
mkdir -p "$build/sanitizer"
status=0
(cd "$build" && ctest --output-on-failure -j"$(nproc)" --output-log ctest-sanitize.log "${tests[@]}") || status=$?
# UBSan's reports come on stderr (see tests/CMakeLists.txt); the process has stopped.
if grep -n -A8 'runtime error:' "$build/ctest-sanitize.log" >"$build/sanitizer/ubsan-in-test-output"; then :; else
  rm -f "$build/sanitizer/ubsan-in-test-output"
fi
reports=$(find "$build/sanitizer" -type f | sort)
if [ -n "$reports" ]; then
  for f in $reports; do
    echo "== $f"
    head -60 "$f"
  done
  echo "sanitize: $(wc -l <<<"$reports") sanitizer report(s) above" >&2
  exit 1
fi
[ "$status" -eq 0 ] && echo "sanitize: no test failed, no sanitizer report"
exit "$status"

#!/bin/bash
# SPDX-License-Identifier: MIT
# gpu-check.sh: on a GPU machine with a pip-installed torch (and no network), build libmemsave
# against that torch, run the equality tests on CUDA, and run the A/B of torchvision's
# resnet50 on the GPU. Meant to take a few minutes; each step has its own timeout.
#
# Output: everything goes to the terminal and to $OUT/gpu-check-DATE-HOST.log when OUT is
# set (the device runner's output folder), otherwise to bench/gpu-check-DATE-HOST.log.
#
# GoogleTest: if $GTEST_SRC (default .gpu/googletest, then /usr/src/googletest) holds its
# sources, they are built first with torch's C++ ABI; otherwise the system's GTest is used.
# On a machine without it, copy /usr/src/googletest (Debian's googletest package) to
# .gpu/googletest before sending the tree.
#
# LibTorch: torch's own CMake config (torch.utils.cmake_prefix_path) when a CUDA toolkit is
# there, which that config requires for CUDA builds; otherwise the package directory is used
# directly (cmake/TorchPackage.cmake).
set -uo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
cd "$src"
py=${PYTHON:-python3}
build=${BUILD_DIR:-build-gpu}
mkdir -p "$build"
build=$(cd "$build" && pwd)
outdir=${OUT:-bench}
mkdir -p "$outdir"
log="$outdir/gpu-check-$(date -u +%Y%m%dT%H%MZ)-$(hostname -s 2>/dev/null || echo host).log"
exec > >(tee "$log") 2>&1
failures=()
step() { printf '\n== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }
note_fail() { failures+=("$1"); printf 'FAILED: %s\n' "$1"; }
t0=$(date +%s)

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || note_fail "nvidia-smi"
"$py" - <<'EOF' || { note_fail "import torch"; exit 1; }
import sys, torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| CUDA", torch.version.cuda,
      "| cuDNN", torch.backends.cudnn.version(), "| cuda available", torch.cuda.is_available(),
      "| CXX11 ABI", int(torch.compiled_with_cxx11_abi()))
try:
    import torchvision
    print("torchvision", torchvision.__version__)
except Exception as e:
    print("torchvision: not importable (%s)" % e)
EOF
prefix=$("$py" -c 'import torch; print(torch.utils.cmake_prefix_path)')
package=$("$py" -c 'import os, torch; print(os.path.dirname(torch.__file__))')
abi=$("$py" -c 'import torch; print(int(torch.compiled_with_cxx11_abi()))')
jobs=$(nproc)

step "GoogleTest"
gtest_args=()
gsrc=${GTEST_SRC:-}
[ -z "$gsrc" ] && for d in .gpu/googletest /usr/src/googletest; do [ -f "$d/CMakeLists.txt" ] && { gsrc=$d; break; }; done
if [ -n "$gsrc" ]; then
  echo "building GoogleTest from $gsrc with _GLIBCXX_USE_CXX11_ABI=$abi"
  if timeout 300 cmake -S "$gsrc" -B "$build/gtest" -DCMAKE_BUILD_TYPE=Release -DBUILD_GMOCK=OFF -DCMAKE_INSTALL_LIBDIR=lib \
       -DCMAKE_INSTALL_PREFIX="$build/gtest-install" -DCMAKE_CXX_FLAGS="-D_GLIBCXX_USE_CXX11_ABI=$abi" >/dev/null &&
     timeout 300 cmake --build "$build/gtest" -j"$jobs" >/dev/null && cmake --install "$build/gtest" >/dev/null; then
    gtest_args=(-DGTest_DIR="$build/gtest-install/lib/cmake/GTest")
  else
    note_fail "GoogleTest build"
  fi
else
  echo "no GoogleTest sources; using the system's GTest"
fi

step "configure and build against $package"
common=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DMEMSAVE_PYTHON="$(command -v "$py")" "${gtest_args[@]}")
nvcc=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || true)
configured=0
if [ -n "$nvcc" ]; then
  echo "CUDA toolkit: $nvcc; using torch's CMake config"
  timeout 300 cmake -S . -B "$build" "${common[@]}" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_CUDA_COMPILER="$nvcc" \
    >"$build/configure.log" 2>&1 && configured=1 || { tail -n 20 "$build/configure.log"; rm -rf "$build/CMakeCache.txt"; }
fi
if [ $configured = 0 ]; then
  echo "using the package directory without torch's CMake config"
  timeout 300 cmake -S . -B "$build" "${common[@]}" -DMEMSAVE_TORCH_PACKAGE="$package" -DMEMSAVE_TORCH_CXX11_ABI="$abi" \
    >"$build/configure.log" 2>&1 && configured=1 || tail -n 30 "$build/configure.log"
fi
[ $configured = 1 ] || { note_fail "configure"; exit 1; }
grep 'libmemsave:' "$build/configure.log"
timeout 480 cmake --build "$build" -j"$jobs" 2>&1 | grep -E 'error|warning: |Built target' || true
[ -f "$build/libmemsave_hooks.so" ] && [ -x "$build/test_conv" ] || { note_fail "build"; exit 1; }
t1=$(date +%s)
echo "configured and built in $((t1 - t0)) s"

step "equality tests on CUDA (test_conv, MEMSAVE_TEST_DEVICE=cuda)"
if "$py" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
  MEMSAVE_TEST_DEVICE=cuda MEMSAVE_OPS=all timeout 300 "$build/test_conv" 2>&1 |
    grep -E '^\[  (PASSED|FAILED|SKIPPED) |^\[==========\]|Failure|exception|differ|Expected' | cut -c1-300 | head -60
  [ "${PIPESTATUS[0]}" = 0 ] || note_fail "test_conv on CUDA"
else
  note_fail "test_conv on CUDA: torch.cuda.is_available() is false"
fi

step "CPU suite against this torch (without the Python preload and DDP tests)"
(cd "$build" && timeout 300 ctest --output-on-failure -E '^(preload|ddp)$') 2>&1 | tail -n 25
[ "${PIPESTATUS[0]}" = 0 ] || note_fail "CPU ctest"

step "Python host under the preload ($py)"
LD_PRELOAD="$build/libmemsave.so" MEMSAVE_VERBOSE=1 timeout 120 "$py" tests/preload_python.py 2>&1 | tail -n 5
[ "${PIPESTATUS[0]}" = 0 ] || note_fail "preload_python.py"

step "A/B of torchvision's resnet50 on the GPU"
if "$py" -c 'import torchvision' 2>/dev/null; then
  LD_PRELOAD="$build/libmemsave.so" MEMSAVE_REPORT=stderr timeout 300 "$py" scripts/gpu_resnet50_ab.py 64 2>&1 | tail -n 30
  [ "${PIPESTATUS[0]}" = 0 ] || note_fail "resnet50 A/B"
else
  note_fail "resnet50 A/B: torchvision is not installed"
fi

step "summary"
echo "total $(($(date +%s) - t0)) s; log: $log"
if [ ${#failures[@]} -gt 0 ]; then printf 'failed: %s\n' "${failures[@]}"; exit 1; fi
echo "all GPU checks passed"

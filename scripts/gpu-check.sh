#!/bin/bash
# SPDX-License-Identifier: MIT
# gpu-check.sh [--dry-run]: everything libmemsave has to prove on a GPU, in one command, on a
# machine with a pip (virtual environment) torch, nvcc, CMake and ninja, no network, no
# GoogleTest and no libunwind (issue 14). Steps, each under its own timeout and all within
# MEMSAVE_GPU_BUDGET seconds (default 470: the machine's commands get 8 minutes); a step that
# fails is recorded and the next one runs:
#
#   machine     GPU, driver, torch, CUDA, cuDNN, cores, memory
#   build       configure and build the libraries and the GoogleTest suites (ninja, all cores),
#               GoogleTest from .gpu/googletest (scripts/vendor-googletest.sh), torch's ABI
#   suites      every GoogleTest suite with MEMSAVE_TEST_DEVICE=cuda, then the conv, batch
#               norm, contract and memory suites again with cuDNN off (MEMSAVE_TEST_CUDNN=0),
#               then the equality suites again with stand-ins poisoned with NaN (issue 23:
#               MEMSAVE_POISON; peak checks skipped there, Note [Poisoned peaks] in testing.h)
#   preload     the Python host under LD_PRELOAD (tests/preload_python.py)
#   torchvision in-process A/B on CUDA (bench/gpu_ab.py): resnet50 and resnet101 at batch 64,
#               224x224 (full, surgical, bitfit, norm, adversarial); efficientnet_b0,
#               mobilenet_v2, vgg16; peak CUDA bytes, time ratio, identical outputs
#   bert        transformers' BERT-base from a config (random weights, dropout 0.1):
#               bias-only and LayerNorm-only fine-tuning; skipped when transformers is absent
#   compile     torch.compile, stock and preloaded, one process each (recorded, not judged)
#   results     the bench table: results-gpu.md (bench/results-python.md's format)
#
# Everything goes to $OUT (the device runner's output folder; default: a new bench/gpu-check-*
# folder): gpu-check.log, results-gpu.md, summary.txt, the JSON rows and the suites' logs; on
# the GPU machine results-gpu.md is also written to bench/ in the tree.
#
# --dry-run: on this (CPU) machine, as root: re-runs itself in the Debian 13 chroot of
# scripts/trixie.sh, whose python3 and torch 2.6 stand in for the virtual environment, and
# does every step on the CPU with tiny sizes (a few suites, tiny models and batches); the
# CUDA-only steps are skipped. It also checks that the tree and .gpu fit the 64 MiB the
# device runner carries. CI runs it (.ci/run).
#
# Environment: PYTHON (the venv's python; default: the first python3 that imports torch),
# BUILD_DIR (default build-gpu), MEMSAVE_GPU_BUDGET, OUT.
set -uo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
cd "$src"
dry=0
[ "${1:-}" = --dry-run ] && dry=1

# --- dry run, outside the chroot: the size check, GoogleTest's sources, then the chroot. ---
if [ $dry = 1 ] && [ -z "${MEMSAVE_GPU_CHECK_INNER:-}" ]; then
  t0=$(date +%s)
  [ -f .gpu/googletest/CMakeLists.txt ] || ./scripts/vendor-googletest.sh || exit 1
  # What the device runner carries: the tracked and untracked, not ignored, files, and .gpu.
  bytes=$( (git ls-files -z --cached --others --exclude-standard; find .gpu -type f -print0) |
    du -cb --files0-from=- 2>/dev/null | tail -n 1 | cut -f1)
  limit=$((64 * 1024 * 1024))
  echo "gpu-check: tree + .gpu carried to the device: $((bytes / 1024)) KiB of $((limit / 1024)) KiB"
  [ "$bytes" -lt "$limit" ] || { echo "gpu-check: FAILED: the tree and .gpu do not fit 64 MiB" >&2; exit 1; }
  out=${OUT:-$(mktemp -d /tmp/gpu-check-dry.XXXXXX)}
  mkdir -p "$out"
  out=$(cd "$out" && pwd)
  MEMSAVE_TRIXIE_OUT=$out ./scripts/trixie.sh run env MEMSAVE_GPU_CHECK_INNER=1 OUT=/out \
    BUILD_DIR="${MEMSAVE_TRIXIE_BUILD:-/build}" bash /src/scripts/gpu-check.sh --dry-run
  rc=$?
  echo "gpu-check: dry run exit $rc in $(($(date +%s) - t0)) s; output in $out"
  exit $rc
fi

# --- the check itself (the GPU machine, or the chroot for a dry run) ---
t0=$(date +%s)
# The dry run's first build on a small CPU takes longer than the GPU machine's whole budget
# (after scripts/trixie.sh test it has nothing to build): it gets 30 minutes.
budget=${MEMSAVE_GPU_BUDGET:-$([ $dry = 1 ] && echo 1800 || echo 470)}
build_limit=$([ $dry = 1 ] && echo 1500 || echo 260)
if [ -n "${OUT:-}" ]; then out=$OUT; else out="$src/bench/gpu-check-$(date -u +%Y%m%dT%H%MZ)"; fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
exec > >(tee "$out/gpu-check.log") 2>&1
build=${BUILD_DIR:-$src/build-gpu}
mkdir -p "$build"
build=$(cd "$build" && pwd)
summary=()
fails=0
jobs=$(nproc)  # before OMP_NUM_THREADS=1 below, which GNU nproc honours
step() { printf '\n== %s (%s, %d s in)\n' "$1" "$(date -u +%H:%M:%S)" $(($(date +%s) - t0)); }
record() {  # record STEP STATUS DETAIL: one summary line
  summary+=("$(printf '%-12s %-8s %s' "$1" "$2" "${3:-}")")
  [ "$2" = FAILED ] && fails=$((fails + 1))
  printf -- '-> %s: %s %s\n' "$1" "$2" "${3:-}"
}
left() { echo $((budget - ($(date +%s) - t0))); }
# limit SECONDS: the step's timeout, cut to what is left of the budget (0: no time left).
limit() { local l; l=$(left); [ "$l" -gt "$1" ] && l=$1; [ "$l" -gt 5 ] && echo "$l" || echo 0; }
finish() {
  step "summary"
  printf '%s\n' "${summary[@]}" | tee "$out/summary.txt"
  echo "total $(($(date +%s) - t0)) s; $fails step(s) failed; output in $out"
  [ "$fails" = 0 ]
  exit $?
}

if [ $dry = 1 ]; then
  device=cpu
  tv_cases=(resnet18:full,adversarial mobilenet_v2:bitfit)
  tv_args=(--batch 2 --size 32 --steps 1 --pairs 2 --device cpu)
  bert_args=(--batch 2 --seq 16 --steps 1 --pairs 2 --device cpu --tiny)
  compile_args=(resnet18 full --batch 2 --size 32 --steps 1 --device cpu --backend aot_eager)
  suites='^test_(skeleton|memory|pool_windows|poison)$'
  cudnn_off_suites=''
  poison_suites='^test_memory$'
  export OMP_NUM_THREADS=1
else
  device=cuda
  tv_cases=(resnet101:adversarial,full,surgical,bitfit,norm resnet50:full,surgical,bitfit,norm,adversarial)
  tv_cases2=(efficientnet_b0:full,bitfit,norm,adversarial mobilenet_v2:full,bitfit,norm,adversarial
             vgg16:full,bitfit,adversarial)
  tv_args=(--batch 64 --size 224 --steps 2 --pairs 2 --device cuda)
  bert_args=(--batch 32 --seq 128 --steps 2 --pairs 2 --device cuda)
  compile_args=(resnet18 full --batch 32 --size 224 --steps 3 --device cuda --backend inductor)
  suites='^test_'
  cudnn_off_suites='^test_(conv|batchnorm|contract|memory)$'
  poison_suites='^test_(conv|batchnorm|pool|relu|dropout|linear|contract|property|autocast)$'
fi

step "machine"
py=
# The virtual environment's python: PYTHON, the one on PATH, or one in the usual places.
for p in ${PYTHON:-} python3 python /opt/venv/bin/python3 /venv/bin/python3 "${HOME:-/root}"/venv/bin/python3 \
  "${HOME:-/root}"/.venv/bin/python3 /opt/*/bin/python3 /root/*/bin/python3 /workspace/*/bin/python3 /usr/local/bin/python3; do
  command -v "$p" >/dev/null 2>&1 && "$p" -c 'import torch' 2>/dev/null && { py=$(command -v "$p"); break; }
done
if [ -z "$py" ]; then record machine FAILED "no python with torch (set PYTHON)"; finish; fi
echo "python: $py; $jobs cores; $(free -g 2>/dev/null | awk '/^Mem:/ {print $2 " GiB memory"}'); $(uname -r)"
[ $dry = 0 ] && { nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true; }
timeout 60 "$py" - <<'EOF' | tee "$out/machine.txt"
import sys, torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| CUDA", torch.version.cuda,
      "| cuDNN", torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
      "| cuda available", torch.cuda.is_available(), "| CXX11 ABI", int(torch.compiled_with_cxx11_abi()))
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(), torch.cuda.get_device_capability())
for m in ("torchvision", "transformers", "timm"):
    try:
        print(m, __import__(m).__version__)
    except Exception as e:
        print(m, "absent:", type(e).__name__)
EOF
if [ $dry = 0 ] && ! "$py" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
  record machine FAILED "torch.cuda.is_available() is false"
else
  record machine ok "$(head -n 1 "$out/machine.txt")"
fi

step "build"
prefix=$("$py" -c 'import torch; print(torch.utils.cmake_prefix_path)')
package=$("$py" -c 'import os, torch; print(os.path.dirname(torch.__file__))')
abi=$("$py" -c 'import torch; print(int(torch.compiled_with_cxx11_abi()))')
gen=()
command -v ninja >/dev/null && [ ! -f "$build/CMakeCache.txt" ] && gen=(-G Ninja)
nvcc=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || true)
args=(-DMEMSAVE_PYTHON="$py" -DMEMSAVE_GTEST_SOURCE="$src/.gpu/googletest")
# Release on the GPU machine (no debug information: a faster build); the dry run builds as
# scripts/trixie.sh does, so that it can reuse that build folder.
[ -f "$build/CMakeCache.txt" ] || args+=(-DCMAKE_BUILD_TYPE="$([ $dry = 1 ] && echo RelWithDebInfo || echo Release)")
if [ $dry = 1 ]; then
  torch_args=()  # Debian's LibTorch, as scripts/trixie.sh builds it (its build folder is reused)
elif [ -n "$nvcc" ]; then
  torch_args=(-DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_CUDA_COMPILER="$nvcc")
else
  torch_args=(-DMEMSAVE_TORCH_PACKAGE="$package" -DMEMSAVE_TORCH_CXX11_ABI="$abi")
fi
built=0
if [ "$(limit 90)" = 0 ]; then
  record build FAILED "no time left"
elif ! timeout "$(limit 90)" cmake -S . -B "$build" "${gen[@]}" "${args[@]}" "${torch_args[@]}" >"$out/configure.log" 2>&1 &&
   ! { [ $dry = 0 ] && [ -n "$nvcc" ] && echo "retrying without torch's CMake config" && rm -f "$build/CMakeCache.txt" &&
       timeout "$(limit 90)" cmake -S . -B "$build" "${gen[@]}" "${args[@]}" -DMEMSAVE_TORCH_PACKAGE="$package" \
         -DMEMSAVE_TORCH_CXX11_ABI="$abi" >"$out/configure.log" 2>&1; }; then
  tail -n 30 "$out/configure.log"
  record build FAILED "configure (configure.log)"
else
  grep 'libmemsave:' "$out/configure.log"
  # Only what the steps need: the libraries and the GoogleTest suites that run.
  targets=(memsave memsave_hooks)
  for f in tests/test_*.cpp; do
    n=$(basename "$f" .cpp)
    [ "$n" != test_shim ] && [[ $n =~ $suites ]] && targets+=("$n")
  done
  timeout "$(limit "$build_limit")" cmake --build "$build" -j"$jobs" --target "${targets[@]}" >"$out/build.log" 2>&1
  rc=$?
  grep -E 'error|warning: ' "$out/build.log" | head -n 40
  # The tests' CUDA peak code (Note [CUDA peak in tests]) was never compiled against a CUDA
  # LibTorch before this machine: if the build failed, once more without it.
  if [ $rc != 0 ] && [ $rc != 124 ] && grep -q 'CUDACachingAllocator\|c10/cuda\|c10_cuda\|cuda_runtime' "$out/build.log" &&
     [ "$(limit 60)" != 0 ]; then
    record build-peak FAILED "the tests' CUDA peak code does not build (build.log); retrying without it"
    cmake "$build" -DMEMSAVE_TEST_CUDA_PEAK=OFF >>"$out/configure.log" 2>&1
    timeout "$(limit "$build_limit")" cmake --build "$build" -j"$jobs" --target "${targets[@]}" >"$out/build2.log" 2>&1
    rc=$?
    grep -E 'error' "$out/build2.log" | head -n 20
  fi
  if [ $rc = 0 ]; then built=1; record build ok "$(($(date +%s) - t0)) s in, ${#targets[@]} targets"
  else tail -n 20 "$out/build.log"; record build FAILED "exit $rc (build.log)"; fi
fi

# run_suites NAME REGEX ENV...: ctest on the built GoogleTest suites, with ENV.
run_suites() {
  local name=$1 regex=$2 l
  shift 2
  step "$name"
  l=$(limit 150)
  if [ $built = 0 ]; then record "$name" skipped "not built"; return; fi
  if [ "$l" = 0 ]; then record "$name" skipped "out of time"; return; fi
  (cd "$build" && env "$@" timeout "$l" ctest -R "$regex" -j8 --timeout "$l" -V) >"$out/$name.log" 2>&1
  local rc=$?
  grep -E '^ *[0-9]+/[0-9]+ Test|tests passed|\[  (FAILED|SKIPPED) \] [A-Za-z]|Failure|differ' "$out/$name.log" |
    cut -c1-200 | sort -u | head -n 80
  local skipped
  skipped=$(grep -o '\[  SKIPPED \] [A-Za-z0-9_/]*\.[A-Za-z0-9_/]*' "$out/$name.log" | sort -u | wc -l)
  if [ $rc = 0 ]; then record "$name" ok "$(grep -o '[0-9]*% tests passed.*' "$out/$name.log"); $skipped skipped test cases"
  else record "$name" FAILED "ctest exit $rc ($name.log)"; fi
}
run_suites "suites" "$suites" MEMSAVE_TEST_DEVICE=$device
[ -n "$cudnn_off_suites" ] && run_suites "suites-nocudnn" "$cudnn_off_suites" MEMSAVE_TEST_DEVICE=$device MEMSAVE_TEST_CUDNN=0
run_suites "suites-poison" "$poison_suites" MEMSAVE_TEST_DEVICE=$device MEMSAVE_POISON=nan

# preloaded NAME SECONDS CMD...: a Python step under the preload, its output in NAME.log.
preloaded() {
  local name=$1 l
  l=$(limit "$2")
  shift 2
  step "$name"
  if [ $built = 0 ]; then record "$name" skipped "not built"; return 1; fi
  if [ "$l" = 0 ]; then record "$name" skipped "out of time"; return 1; fi
  LD_PRELOAD="$build/libmemsave.so" timeout "$l" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$out/$name.log"
  if [ $rc = 0 ]; then record "$name" ok; else record "$name" FAILED "exit $rc ($name.log)"; fi
  return $rc
}
rows="$out/rows.jsonl"
: >"$rows"
preloaded preload 60 env MEMSAVE_VERBOSE=1 "$py" tests/preload_python.py
preloaded torchvision 150 "$py" bench/gpu_ab.py torchvision "${tv_cases[@]}" "${tv_args[@]}" --jsonl "$rows"
[ $dry = 0 ] && preloaded torchvision2 120 "$py" bench/gpu_ab.py torchvision "${tv_cases2[@]}" "${tv_args[@]}" --jsonl "$rows"
if "$py" -c 'import transformers' 2>/dev/null; then
  preloaded bert 90 "$py" bench/gpu_ab.py bert bitfit,norm "${bert_args[@]}" --jsonl "$rows"
else
  step "bert"
  record bert skipped "transformers is not installed for $py"
  echo '{"model": "bert-base", "scenario": "bitfit,norm", "skipped": "transformers is not installed"}' >>"$rows"
fi
if preloaded compile-stock 100 env MEMSAVE=0 "$py" bench/gpu_ab.py compile "${compile_args[@]}" --jsonl "$rows"; then
  preloaded compile-memsave 100 env MEMSAVE=1 "$py" bench/gpu_ab.py compile "${compile_args[@]}" --jsonl "$rows"
fi

step "results"
meta=("command: \`scripts/gpu-check.sh$([ $dry = 1 ] && echo ' --dry-run')\` (bench/gpu_ab.py: in-process A/B under the preload, libmemsave switched with memsave_set_enabled; a warm-up run, then 2 alternated pairs; medians)"
      "machine: $(head -n 1 "$out/machine.txt" 2>/dev/null); $(sed -n 's/^device \(.*\)/\1, /p' "$out/machine.txt" 2>/dev/null)$jobs cores"
      "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
      "peak: the $([ $dry = 1 ] && echo 'counting CPU allocator' || echo 'CUDA caching allocator (torch.cuda.max_memory_allocated)')'s most bytes allocated during a run, parameters and data included; steps peak: above the bytes allocated when the steps start"
      "outputs identical: every step's loss (17 digits) and a SHA-256 of the last gradients; cuDNN deterministic, benchmark off; where two stock runs differ, bitwise comparison is impossible and the row says so")
[ $dry = 1 ] && meta+=("DRY RUN on the CPU with tiny sizes: these figures test the script, not libmemsave")
if timeout 30 "$py" bench/gpu_ab.py table --out "$out/results-gpu.md" "${meta[@]/#/--meta=}" "$rows"; then
  [ $dry = 0 ] && cp "$out/results-gpu.md" bench/results-gpu.md
  cat "$out/results-gpu.md"
  n=$(($(grep -c '^| ' "$out/results-gpu.md") - 1))  # the header is the other line starting "| "
  if grep -q '| NO |' "$out/results-gpu.md"; then record results FAILED "outputs differ in a row (results-gpu.md)"
  elif [ "$n" -lt 1 ]; then record results FAILED "no rows (results-gpu.md)"
  else record results ok "$n rows"; fi
else
  record results FAILED "table"
fi
finish

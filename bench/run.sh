#!/bin/sh
# SPDX-License-Identifier: MIT
# bench/run.sh: the benchmark table of the selective-differentiation experiment on this
# machine. For each row (model x scenario of memsave-demo) runs
#   memsave ab -n RUNS --json --check-output -- memsave-demo --scenario S --model M ...
# (stock and libmemsave alternated, medians of RUNS runs each) and writes bench/results.csv,
# bench/results.md and the chart bench/memory-ratio.png (gnuplot, from the CSV).
#
#   bench/run.sh [-n RUNS] [--quick] [--python | --torchscript | --transformers] [--build DIR] [--out DIR]
#
# --quick runs a small subset (a few rows, a couple of minutes). --python runs the same
# cases on torchvision's models with /usr/bin/python3 (bench/torchvision_case.py, unmodified
# under the preload) and writes results-python.{csv,md} and memory-ratio-python.png.
# --torchscript runs torchvision's resnet18 saved as TorchScript (traced: resnet18.trace,
# scripted: resnet18.script; bench/export_torchscript.py) and fine-tuned by the C++ demo
# (memsave-demo --torchscript), next to the demo's eager C++ resnet18, and writes
# results-torchscript.{csv,md} and memory-ratio-torchscript.png.
# --transformers runs bench/transformer_case.py (a LLaMA-style MLP stack and a GELU
# transformer encoder, the recipe family's workloads) with /usr/bin/python3, each row also
# with the recipe family off (--ops -recipe: libmemsave as it was before recipes), and the
# C++ demo's transformers (ReLU; the same LLaMA-style stack and GELU encoder in C++) with
# and without it; writes results-transformers.{csv,md}.
# Timings on a machine shared with other work are noisy; the memory columns are exact and
# repeat to the byte.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
runs=3
quick=0
python=0
torchscript=0
transformers=0
build="$root/build"
out="$here"
cmdline="bench/run.sh $*"
while [ $# -gt 0 ]; do
  case "$1" in
    -n|--runs) runs=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    --python) python=1; shift ;;
    --torchscript) torchscript=1; shift ;;
    --transformers) transformers=1; shift ;;
    --build) build=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '3,/^set -eu/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
memsave="$build/memsave"
demo="$build/memsave-demo"
for f in "$memsave" "$demo"; do
  [ -x "$f" ] || { echo "bench/run.sh: $f is missing; build first (cmake --build build -j2)" >&2; exit 2; }
done
case "$root$build" in *[[:space:]]*) echo "bench/run.sh: paths with blanks are not supported" >&2; exit 2 ;; esac
command -v jq >/dev/null || { echo "bench/run.sh: jq is needed" >&2; exit 2; }

# Rows: model scenario batch size steps. Sizes make activations, not parameters, dominate
# the peak (large images, small batches), while one run stays within seconds on 2 cores;
# the adversarial rows at 32x160 show the whole-run ratio where the parameters
# (45 / 98 MiB) are a small part of stock's peak, as at real training sizes.
# Not applicable: adversarial* and style need an image model, style a VGG, norm a model
# with normalisation layers (the VGGs have none).
rows_full="
resnet18 full 8 128 2
resnet18 head 8 128 2
resnet18 surgical 8 128 2
resnet18 bitfit 8 128 2
resnet18 norm 8 128 2
resnet18 adversarial 8 128 2
resnet18 adversarial_train 8 128 2
resnet18 adversarial 32 160 2
resnet50 full 4 128 2
resnet50 surgical 4 128 2
resnet50 bitfit 4 128 2
resnet50 norm 4 128 2
resnet50 adversarial 4 128 2
resnet50 adversarial_train 4 128 2
resnet50 adversarial 32 160 2
vgg11 full 4 128 2
vgg11 surgical 4 128 2
vgg11 bitfit 4 128 2
vgg11 adversarial 4 128 2
vgg11 style 2 128 2
vgg16 full 2 128 2
vgg16 surgical 2 128 2
vgg16 bitfit 2 128 2
vgg16 adversarial 2 128 2
vgg16 style 2 128 2
mobilenet_v2 full 8 128 2
mobilenet_v2 surgical 8 128 2
mobilenet_v2 bitfit 8 128 2
mobilenet_v2 norm 8 128 2
mobilenet_v2 adversarial 8 128 2
transformer full 8 64 2
transformer surgical 8 64 2
transformer bitfit 8 64 2
transformer norm 8 64 2
"
rows_quick="
resnet18 full 8 128 2
resnet18 adversarial 8 128 2
resnet50 adversarial 4 128 2
transformer bitfit 8 64 2
"
# torchvision models (bench/torchvision_case.py): the same cases; vgg11 has no norm layers.
py_rows_full="
resnet18 full 8 128 2
resnet18 surgical 8 128 2
resnet18 bitfit 8 128 2
resnet18 norm 8 128 2
resnet18 adversarial 8 128 2
resnet50 full 4 128 2
resnet50 surgical 4 128 2
resnet50 bitfit 4 128 2
resnet50 norm 4 128 2
resnet50 adversarial 4 128 2
vgg11 full 4 128 2
vgg11 surgical 4 128 2
vgg11 bitfit 4 128 2
vgg11 adversarial 4 128 2
mobilenet_v2 full 8 128 2
mobilenet_v2 surgical 8 128 2
mobilenet_v2 bitfit 8 128 2
mobilenet_v2 norm 8 128 2
mobilenet_v2 adversarial 8 128 2
efficientnet_b0 full 8 128 2
efficientnet_b0 surgical 8 128 2
efficientnet_b0 bitfit 8 128 2
efficientnet_b0 norm 8 128 2
efficientnet_b0 adversarial 8 128 2
"
py_rows_quick="
resnet18 full 8 128 2
resnet18 adversarial 8 128 2
"
# TorchScript modules made from torchvision's resnet18, trained by the C++ demo; the eager
# C++ resnet18 of the demo for comparison.
ts_rows_full="
resnet18 full 8 128 2
resnet18.trace full 8 128 2
resnet18.script full 8 128 2
resnet18 surgical 8 128 2
resnet18.trace surgical 8 128 2
resnet18.script surgical 8 128 2
resnet18 bitfit 8 128 2
resnet18.trace bitfit 8 128 2
resnet18.script bitfit 8 128 2
resnet18 norm 8 128 2
resnet18.trace norm 8 128 2
resnet18.script norm 8 128 2
resnet18 adversarial 8 128 2
resnet18.trace adversarial 8 128 2
resnet18.script adversarial 8 128 2
"
ts_rows_quick="
resnet18 adversarial 8 128 2
resnet18.trace adversarial 8 128 2
resnet18.script adversarial 8 128 2
"
# bench/transformer_case.py (model scenario batch seq steps) and the demo's transformers
# (demo:transformer, ReLU; demo:llama and demo:gelu_encoder, the same two models in C++,
# whose torch::nn::Linear takes addmm/mm; "surgical" trains the embedding only); the last
# column, when present, is the family list given to `memsave ab --ops` (B's MEMSAVE_OPS).
tf_rows_full="
llama-mlp input 8 96 2
llama-mlp input 8 96 2 -recipe
llama-mlp lora 8 96 2
llama-mlp lora 8 96 2 -recipe
llama-mlp full 8 96 2
llama-mlp full 8 96 2 -recipe
gelu-encoder full 8 96 2
gelu-encoder full 8 96 2 -recipe
gelu-encoder lora 8 96 2
gelu-encoder lora 8 96 2 -recipe
gelu-encoder input 8 96 2
gelu-encoder input 8 96 2 -recipe
demo:transformer full 8 64 2
demo:transformer full 8 64 2 -recipe
demo:transformer bitfit 8 64 2
demo:transformer bitfit 8 64 2 -recipe
demo:llama surgical 8 96 2
demo:llama surgical 8 96 2 -recipe
demo:llama full 8 96 2
demo:llama full 8 96 2 -recipe
demo:gelu_encoder full 8 96 2
demo:gelu_encoder full 8 96 2 -recipe
"
tf_rows_quick="
llama-mlp input 8 96 2
gelu-encoder full 8 96 2
"
suffix=""
if [ $((python + torchscript + transformers)) -gt 1 ]; then
  echo "bench/run.sh: --python, --torchscript and --transformers are separate tables; choose one" >&2
  exit 2
fi
if [ "$transformers" = 1 ]; then
  suffix="-transformers"
  python_bin=${MEMSAVE_BENCH_PYTHON:-/usr/bin/python3}
  rows_full=$tf_rows_full
  rows_quick=$tf_rows_quick
fi
if [ "$torchscript" = 1 ]; then
  suffix="-torchscript"
  rows_full=$ts_rows_full
  rows_quick=$ts_rows_quick
fi
if [ "$python" = 1 ]; then
  suffix="-python"
  python_bin=${MEMSAVE_BENCH_PYTHON:-/usr/bin/python3}
  rows_full=$py_rows_full
  rows_quick=$py_rows_quick
fi
if [ "$quick" = 1 ]; then rows=$rows_quick; else rows=$rows_full; fi
if [ -n "${MEMSAVE_BENCH_ROWS:-}" ]; then rows=$MEMSAVE_BENCH_ROWS; fi

# The program of one row.
case_command() { # model scenario batch size steps
  case "$1" in
    *.trace | *.script)
      echo "$demo --scenario $2 --torchscript $tmp/$1.pt --batch $3 --size $4 --steps $5"
      return
      ;;
    demo:*)
      echo "$demo --scenario $2 --model ${1#demo:} --batch $3 --size $4 --steps $5"
      return
      ;;
  esac
  if [ "$transformers" = 1 ]; then
    echo "$python_bin $here/transformer_case.py $1 $2 --batch $3 --seq $4 --steps $5"
    return
  fi
  if [ "$python" = 1 ]; then
    echo "$python_bin $here/torchvision_case.py $1 $2 --batch $3 --size $4 --steps $5"
  else
    echo "$demo --scenario $2 --model $1 --batch $3 --size $4 --steps $5"
  fi
}

mkdir -p "$out"
csv="$out/results$suffix.csv"
md="$out/results$suffix.md"
png="$out/memory-ratio$suffix.png"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ "$torchscript" = 1 ]; then
  for how in trace script; do
    ${MEMSAVE_BENCH_PYTHON:-/usr/bin/python3} "$here/export_torchscript.py" resnet18 "$how" "$tmp/resnet18.$how.pt" --size 128
  done
fi

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
ncpu=$(grep -c '^processor' /proc/cpuinfo)
date=$(date -u '+%Y-%m-%d %H:%M UTC')
torch=""

# The steps peak of one run (memsave-demo's and torchvision_case.py's stderr line): the peak
# CPU tensor bytes above what is alive before the first step. Exact, so one run per side.
steps_peak() { # MEMSAVE value, MEMSAVE_OPS value (or ""), then the program and its arguments
  m=$1
  o=$2
  shift 2
  if [ -n "$o" ]; then export MEMSAVE_OPS="$o"; else unset MEMSAVE_OPS; fi
  MEMSAVE=$m LD_PRELOAD="$build/libmemsave.so" "$@" 2>&1 >/dev/null |
    sed -n 's/.*steps peak above them \([0-9][0-9]*\).*/\1/p' | tail -1
}

echo "model,scenario,batch,size,steps,peak_stock_bytes,peak_memsave_bytes,peak_ratio,time_stock_s,time_memsave_s,time_ratio,outputs_identical,steps_peak_stock_bytes,steps_peak_memsave_bytes,steps_peak_ratio" > "$tmp/rows.csv"
echo "$rows" | while read -r model scenario batch size steps ops; do
  [ -n "$model" ] || continue
  printf 'bench: %-12s %-18s batch %s size %s steps %s %s... ' "$model" "$scenario" "$batch" "$size" "$steps" "${ops:+ops $ops }" >&2
  set +e
  # shellcheck disable=SC2046 # the paths have no blanks (checked above)
  "$memsave" ab -n "$runs" --json --check-output ${ops:+--ops "$ops"} -- $(case_command "$model" "$scenario" "$batch" "$size" "$steps") \
    > "$tmp/ab.json" 2> "$tmp/ab.err"
  rc=$?
  set -e
  if ! [ -s "$tmp/ab.json" ] || ! jq -e .ratio "$tmp/ab.json" >/dev/null 2>&1; then
    echo "failed (exit $rc):" >&2
    tail -5 "$tmp/ab.err" >&2
    echo "$model,$scenario,$batch,$size,$steps,,,,,,,error,,," >> "$tmp/rows.csv"
    continue
  fi
  # shellcheck disable=SC2046
  sa=$(steps_peak 0 "" $(case_command "$model" "$scenario" "$batch" "$size" "$steps"))
  # shellcheck disable=SC2046
  sb=$(steps_peak 1 "$ops" $(case_command "$model" "$scenario" "$batch" "$size" "$steps"))
  [ -z "$ops" ] || model="$model (ops $ops)"
  sr=$(awk -v a="$sa" -v b="$sb" 'BEGIN { if (a > 0 && b != "") printf "%.4g", b / a }')
  jq -r --arg m "$model" --arg s "$scenario" --arg b "$batch" --arg z "$size" --arg k "$steps" \
        --arg sa "$sa" --arg sb "$sb" --arg sr "$sr" '
    [$m, $s, $b, $z, $k, .a.median.cpu_peak_total_bytes, .b.median.cpu_peak_total_bytes, .ratio.cpu_peak_total_bytes,
     .a.median.wall_s, .b.median.wall_s, .ratio.wall_s,
     (if .output == "identical" then "yes" elif .output == "not_checked" then "not checked" else "NO" end),
     $sa, $sb, $sr]
    | map(tostring) | join(",")' "$tmp/ab.json" >> "$tmp/rows.csv"
  jq -r .torch_version "$tmp/ab.json" > "$tmp/torch"
  tail -1 "$tmp/rows.csv" | awk -F, '{printf "memory %s (steps %s), time %s, outputs %s\n", $8, $15, $11, $12}' >&2
done
torch=$(cat "$tmp/torch" 2>/dev/null || echo unknown)

{
  echo "# libmemsave benchmark: $cmdline"
  echo "# LibTorch $torch; CPU: $cpu ($ncpu logical CPUs); $date"
  cat "$tmp/rows.csv"
} > "$csv"

mib() { awk -v b="$1" 'BEGIN { if (b == "") print "-"; else printf "%.1f", b / 1048576 }'; }
{
  if [ "$python" = 1 ]; then
    echo "# Benchmark: stock PyTorch versus libmemsave, torchvision models on the Python host"
    echo
    echo "- command: \`$cmdline\` (each row: \`memsave ab -n $runs --json --check-output -- $python_bin bench/torchvision_case.py M S --batch B --size S --steps K\`; random weights; losses printed with 17 digits and a SHA-256 of the gradients, so equal outputs mean bitwise-equal gradients)"
  elif [ "$transformers" = 1 ]; then
    echo "# Benchmark: stock PyTorch versus libmemsave, transformer blocks (the recipe family)"
    echo
    echo "- command: \`$cmdline\` (each row: \`memsave ab -n $runs --json --check-output [--ops OPS] -- $python_bin bench/transformer_case.py M S --batch B --seq T --steps K\`, or memsave-demo's model for demo:M (transformer, llama, gelu_encoder); random weights; losses printed with 17 digits and a SHA-256 of the gradients, so equal outputs mean bitwise-equal gradients; rows marked (ops -recipe) run libmemsave with the recipe family off, i.e. as it was before it)"
  elif [ "$torchscript" = 1 ]; then
    echo "# Benchmark: stock LibTorch versus libmemsave, TorchScript modules fine-tuned in C++"
    echo
    echo "- command: \`$cmdline\` (each row: \`memsave ab -n $runs --json --check-output -- memsave-demo --scenario S --torchscript M.pt --batch B --size S --steps K\`; M.pt is torchvision's resnet18 with random weights, traced (resnet18.trace) or scripted (resnet18.script) in eval mode by bench/export_torchscript.py and loaded with torch::jit::load; the rows named resnet18 are the demo's eager C++ resnet18; every step prints its loss and a digest of the gradients, so equal outputs mean bitwise-equal gradients; a trace keeps the eval-mode batch norm it was traced with in every scenario)"
  else
    echo "# Benchmark: stock LibTorch versus libmemsave"
    echo
    echo "- command: \`$cmdline\` (each row: \`memsave ab -n $runs --json --check-output -- memsave-demo --scenario S --model M --batch B --size S --steps K\`)"
  fi
  echo "- LibTorch $torch, CPU: $cpu, $ncpu logical CPUs, shared with other work: times are noisy (medians of $runs alternated runs); peak bytes are exact"
  echo "- date: $date"
  echo "- peak: most CPU tensor bytes alive at once (the counting allocator), over the whole run, parameters and data included; ratio = libmemsave / stock"
  echo "- steps peak: the peak above the tensor bytes alive just before the first step (parameters, data, optimiser: the same on both sides), i.e. what the steps' activations and gradients cost; one run per side (exact)"
  echo
  echo "| model | scenario | batch x size | peak stock MiB | peak libmemsave MiB | peak ratio | steps peak stock MiB | steps peak libmemsave MiB | steps peak ratio | time stock s | time libmemsave s | time ratio | outputs identical |"
  echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
  tail -n +2 "$tmp/rows.csv" | while IFS=, read -r model scenario batch size steps pa pb pr ta tb tr same sa sb sr; do
    echo "| $model | $scenario | $batch x $size | $(mib "$pa") | $(mib "$pb") | ${pr:--} | $(mib "$sa") | $(mib "$sb") | ${sr:--} | ${ta:--} | ${tb:--} | ${tr:--} | $same |"
  done
  if command -v gnuplot >/dev/null; then
    echo
    echo "![memory ratio]($(basename "$png"))"
  fi
} > "$md"

if command -v gnuplot >/dev/null; then
  "$here/plot-ratio.sh" "$csv" "$png"
else
  echo "bench: gnuplot not found; no chart" >&2
fi
echo "bench: wrote $csv, $md" >&2

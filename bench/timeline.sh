#!/bin/sh
# SPDX-License-Identifier: MIT
# bench/timeline.sh [DEMO ARGS...]: memory over time of one training step, stock versus
# libmemsave: runs memsave-demo twice under `memsave run` with MEMSAVE_TIMELINE (MEMSAVE=0,
# then MEMSAVE=1) and plots CPU tensor bytes against time into bench/timeline.png, keeping
# the samples in bench/timeline-stock.csv and bench/timeline-memsave.csv.
# Default: --scenario adversarial --model resnet50 --batch 4 --size 128 --steps 1.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
build=${MEMSAVE_BUILD:-$root/build}
out=${MEMSAVE_BENCH_OUT:-$here}
[ $# -gt 0 ] || set -- --scenario adversarial --model resnet50 --batch 4 --size 128 --steps 1
for f in "$build/memsave" "$build/memsave-demo"; do
  [ -x "$f" ] || { echo "bench/timeline.sh: $f is missing; build first" >&2; exit 2; }
done
mkdir -p "$out"
MEMSAVE=0 MEMSAVE_TIMELINE="$out/timeline-stock.csv" "$build/memsave" run -- "$build/memsave-demo" "$@" > /dev/null
MEMSAVE=1 MEMSAVE_TIMELINE="$out/timeline-memsave.csv" "$build/memsave" run -- "$build/memsave-demo" "$@" > /dev/null
# Peaks in MiB for the legend.
peak() { grep -v '^#' "$1" | tail -n +2 | awk -F, 'BEGIN { m = 0 } $4 > m { m = $4 } END { printf "%.1f", m / 1048576 }'; }
ps=$(peak "$out/timeline-stock.csv")
pm=$(peak "$out/timeline-memsave.csv")
term="pngcairo size 900,500 font 'sans,10'"
gnuplot -e "set terminal pngcairo" 2>/dev/null || term="png size 900,500"
gnuplot <<GP
set terminal $term
set output '$out/timeline.png'
set datafile separator ','
set title "CPU tensor bytes over time: memsave-demo $*"
set xlabel 'seconds since the first allocation'
set ylabel 'MiB'
set grid
set key top left
plot '$out/timeline-stock.csv' every ::1 using 2:(\$4/1048576) with steps lw 1.5 lc rgb '#c0504d' title "stock (peak $ps MiB)", \
     '$out/timeline-memsave.csv' every ::1 using 2:(\$4/1048576) with steps lw 1.5 lc rgb '#3b75af' title "libmemsave (peak $pm MiB)"
GP
echo "bench: wrote $out/timeline.png (peak stock $ps MiB, libmemsave $pm MiB)" >&2

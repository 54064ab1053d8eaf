#!/bin/sh
# SPDX-License-Identifier: MIT
# bench/plot-ratio.sh CSV PNG: bar chart of the peak-memory ratio (libmemsave / stock) per
# model and scenario, from bench/results.csv (called by bench/run.sh).
set -eu
csv=$1
png=$2
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
# label (model scenario BxS), whole-run ratio, steps ratio (column 15; "-" when absent), skipping comments, the
# header and failed rows.
grep -v '^#' "$csv" | tail -n +2 |
  awk -F, '$8 != "" { printf "\"%s %s %sx%s\" %s %s\n", $1, $2, $3, $4, $8, ($15 != "" ? $15 : "-") }' > "$tmp"
n=$(wc -l < "$tmp")
[ "$n" -gt 0 ] || { echo "plot-ratio: no rows in $csv" >&2; exit 1; }
width=$((300 + 30 * n))
[ "$width" -ge 900 ] || width=900
term="pngcairo size $width,680 font 'sans,10'"
gnuplot -e "set terminal pngcairo" 2>/dev/null || term="png size $width,680"
gnuplot <<GP
set terminal $term
set output '$png'
set title "Peak CPU tensor bytes, libmemsave / stock (lower is better; 1 = no change): whole run, and the steps above the state before the first step\n$(sed -n 2p "$csv" | sed 's/^# //; s/"/\\"/g')"
set termoption noenhanced
set style fill solid 0.8 border -1
set boxwidth 0.4
set datafile missing '-'
set xrange [-0.6:$n - 0.4]
set yrange [0:1.2]
set ytics 0.1
set grid ytics
set xtics rotate by -60 scale 0 font ',9'
set key top left
set ylabel 'peak ratio'
set bmargin 14
plot '$tmp' using (\$0-0.2):2:xtic(1) with boxes lc rgb '#3b75af' title 'whole run', \\
     '' using (\$0+0.2):3 with boxes lc rgb '#e08a2c' title 'steps (above the state before the first step)', \\
     '' using (\$0-0.2):2:(sprintf('%.2f', \$2)) with labels offset 0,0.7 font ',7' notitle, \\
     '' using (\$0+0.2):3:(sprintf('%.2f', \$3)) with labels offset 0,0.7 font ',7' notitle, \\
     1 with lines dt 2 lc rgb 'black' notitle
GP

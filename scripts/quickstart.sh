#!/bin/bash
# SPDX-License-Identifier: MIT
# quickstart.sh demo|test: on a fresh Debian 12 machine, as root, install what is missing
# from Debian, configure and build (build/), then either run the demo's A/B (stock versus
# libmemsave) or run the whole test suite. The README's two commands call this script.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-demo}
build=${BUILD_DIR:-build}

packages=(build-essential cmake libtorch-dev python3-torch python3-torchvision googletest libgtest-dev
          libunwind-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "quickstart: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)"

case "$mode" in
  demo)
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    for run in A B; do
      enable=$([ $run = A ] && echo 0 || echo 1)
      MEMSAVE=$enable MEMSAVE_REPORT="$tmp/$run.json" LD_PRELOAD="$PWD/$build/libmemsave.so" \
        "$build/memsave-demo" >"$tmp/$run.out"
    done
    peak() { sed -n 's/.*"cpu_peak_bytes":\([0-9]*\).*/\1/p' "$1"; }
    a=$(peak "$tmp/A.json") b=$(peak "$tmp/B.json")
    cat "$tmp/B.out"
    cmp -s "$tmp/A.out" "$tmp/B.out" && same=identical || same=DIFFERENT
    printf 'peak CPU tensor bytes: stock (MEMSAVE=0) %d, libmemsave (MEMSAVE=1) %d, ratio %s\n' "$a" "$b" \
      "$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f", b / a }')"
    echo "losses of the two runs: $same"
    [ "$same" = identical ]
    ;;
  test)
    cd "$build"
    exec ctest --output-on-failure -j1
    ;;
  *)
    echo "usage: $0 demo|test" >&2
    exit 2
    ;;
esac

#!/bin/bash
# SPDX-License-Identifier: MIT
# vendor-googletest.sh [SRC]: copy GoogleTest's sources (default /usr/src/googletest, Debian's
# googletest package) into .gpu/googletest, an ignored folder that travels with the tree to a
# machine without GoogleTest (scripts/gpu-check.sh). tests/CMakeLists.txt builds it from there,
# with torch's C++ ABI, when it is present. Only what a build needs is copied (no googlemock,
# docs, samples or tests): about 1 MiB.
set -euo pipefail
src=${1:-/usr/src/googletest}
dst="$(cd "$(dirname "$0")/.." && pwd)/.gpu/googletest"
[ -f "$src/CMakeLists.txt" ] && [ -d "$src/googletest/src" ] ||
  { echo "vendor-googletest.sh: no GoogleTest sources in $src (Debian: apt-get install googletest)" >&2; exit 1; }
rm -rf "$dst"
mkdir -p "$dst/googletest"
cp "$src/CMakeLists.txt" "$dst/"
cp -r "$src/googletest/CMakeLists.txt" "$src/googletest/cmake" "$src/googletest/include" "$src/googletest/src" "$dst/googletest/"
for f in /usr/share/doc/googletest/copyright "$src/LICENSE"; do [ -f "$f" ] && cp "$f" "$dst/LICENSE" && break; done
echo "vendor-googletest.sh: $src -> $dst ($(du -sh "$dst" | cut -f1))"

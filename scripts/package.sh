#!/bin/bash
# SPDX-License-Identifier: MIT
# package.sh [BUILD_DIR]: the Debian package libmemsave_<version>_<arch>.deb, in BUILD_DIR
# (default build), made by CPack from the install rules (cmake/Package.cmake). Configures
# BUILD_DIR when it has never been, builds only what is installed, and refuses when the
# LibTorch the hooks link is not from a Debian package (the package could not pin it).
# Then, as root: apt install ./build/libmemsave_*.deb
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-${BUILD_DIR:-build}}

[ -e "$build/CMakeCache.txt" ] || cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >&2
cmake --build "$build" -j"$(nproc)" --target memsave memsave_hooks memsave_cli memsave_man >&2  # stdout: the path only
cd "$build"
# A libmemsave_*.deb left by an earlier run is not mistaken for this one.
rm -f libmemsave_*.deb
cpack -G DEB >cpack.log 2>&1 || { cat cpack.log >&2; exit 1; }
deb=$(ls libmemsave_*.deb)
depends=$(dpkg-deb -f "$deb" Depends)
case "$depends" in
  *libtorch*"(= "*) ;;
  *) echo "package.sh: $deb does not pin a LibTorch package (Depends: $depends); see cmake/Package.cmake" >&2
     rm -f "$deb"
     exit 1 ;;
esac
echo "$PWD/$deb"

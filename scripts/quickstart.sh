#!/bin/bash
# SPDX-License-Identifier: MIT
# quickstart.sh demo|test: on a fresh Debian 12 machine, as root, install what is missing
# from Debian, configure and build (build/; for the demo only what it runs), then either run
# the demo's A/B with `memsave ab --check-output` (stock versus libmemsave) or run the whole
# test suite. The README's two commands call this script.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-demo}
build=${BUILD_DIR:-build}

packages=(build-essential cmake libtorch-dev python3-torch python3-torchvision googletest libgtest-dev
          libunwind-dev pkg-config file)  # file: CPack finds shared objects with it (package.sh)
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
# The demo needs only the two libraries, the command and the demo host; the tests need all.
targets=()
[ "$mode" = demo ] && targets=(--target memsave memsave_hooks memsave_cli memsave-demo)
cmake --build "$build" -j"$(nproc)" "${targets[@]}"

case "$mode" in
  demo)
    # Stock (A, MEMSAVE=0) and libmemsave (B) once each; fails if their loss lines differ.
    exec "$build/memsave" ab --check-output -- "$build/memsave-demo"
    ;;
  test)
    cd "$build"
    # In parallel: tests that must run alone say so (RUN_SERIAL in tests/CMakeLists.txt).
    exec ctest --output-on-failure -j"${CTEST_JOBS:-$(nproc)}"
    ;;
  *)
    echo "usage: $0 demo|test" >&2
    exit 2
    ;;
esac

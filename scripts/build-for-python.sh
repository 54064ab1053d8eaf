#!/bin/bash
# SPDX-License-Identifier: MIT
# build-for-python.sh [PYTHON [BUILD_DIR]]: build libmemsave against the torch that PYTHON
# imports (a virtual environment's pip torch, or a distribution's), then check the build on
# that Python: a preloaded training step whose gradients equal stock's, and `memsave ab
# --check-output` on it. No root, no network; needs CMake and a C/C++ compiler.
#
#   PYTHON     default python3 (the first on PATH: an activated venv's)
#   BUILD_DIR  default build-python
#
# CMake asks that torch for its package folder and C++ ABI and reads the C++ standard from its
# own ATen/ATen.h (-DMEMSAVE_TORCH_PYTHON: cmake/TorchFromPython.cmake), as pip's build does
# (pyproject.toml, scripts/pip-check.sh); this is the same build without pip and
# scikit-build-core.
# Only the libraries and the command are built (not the test suite). Prints the two lines to
# use them. CI runs it in the Debian unstable chroot (scripts/sid.sh), whose python3 and torch
# 2.14 stand in for a virtual environment.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
python=${1:-python3}
build=${2:-build-python}
command -v "$python" >/dev/null || { echo "build-for-python: $python not found" >&2; exit 2; }
"$python" -c 'import torch' 2>/dev/null || { echo "build-for-python: $python cannot import torch" >&2; exit 2; }
args=(-DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF -DMEMSAVE_TORCH_PYTHON="$(command -v "$python")")
cmake -S "$src" -B "$build" "${args[@]}" >"$build.configure.log" 2>&1 || { cat "$build.configure.log"; exit 1; }
grep 'libmemsave:' "$build.configure.log" | sed 's/^-- /build-for-python: /'
cmake --build "$build" -j"$(nproc)" --target memsave memsave_hooks memsave_cli

# The check: one training step preloaded, against stock in the same process, then the
# command's A/B on the same script.
build=$(cd "$build" && pwd)
step=$(mktemp /tmp/memsave-step.XXXXXX.py)
trap 'rm -f "$step"' EXIT
cat >"$step" <<'EOF'
import ctypes, os, torch, torch.nn as nn
lib = ctypes.CDLL(None)
stock = os.environ.get("MEMSAVE") == "0"  # memsave ab's run A
assert lib.memsave_is_active() == (0 if stock else 1), "libmemsave is not active under LD_PRELOAD"
torch.manual_seed(0)
net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                    nn.Flatten(), nn.Linear(8 * 8 * 8, 4)).requires_grad_(False)
x = torch.randn(4, 3, 16, 16)
def names(fn, seen):
    if fn is not None and fn not in seen:
        seen.add(fn)
        yield fn.name()
        for f, _ in fn.next_functions:
            yield from names(f, seen)
grads, ours = [], []
for on in (0, 1):
    lib.memsave_set_enabled(on)
    t = x.clone().requires_grad_()
    y = net(t)
    ours.append(sorted(n for n in names(y.grad_fn, set()) if n.startswith("Memsave")))
    y.square().sum().backward()
    grads.append(t.grad)
assert not ours[0] and (stock or ours[1]), f"our nodes: switched off {ours[0]}, on {ours[1]}"
assert torch.equal(grads[0].view(torch.uint8), grads[1].view(torch.uint8)), "gradients differ from stock's"
print("loss", float(net(x).square().sum()))
print("step: gradients bitwise equal to stock's")
if not stock:
    print("our nodes:", ", ".join(ours[1]), file=__import__("sys").stderr)
EOF
LD_PRELOAD="$build/libmemsave.so" MEMSAVE_REPORT=/dev/null "$python" "$step"
"$build/memsave" ab --check-output -- "$python" "$step"
echo "build-for-python: done. Use it with:"
echo "  LD_PRELOAD=$build/libmemsave.so $python train.py"
echo "  $build/memsave ab -- $python train.py"

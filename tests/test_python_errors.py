# SPDX-License-Identifier: MIT
# test_python_errors.py: run with libmemsave preloaded and MEMSAVE_OPS=all. Errors that
# stock raises from inside our kernels and nodes (a forward's shape error, a second backward,
# an in-place change of a tensor a node stands for) reach the Python host as RuntimeError,
# with stock's message, and the host goes on. Note [Two unwinders] in CMakeLists.txt: with
# the hooks' cleanups bound to libunwind's _Unwind_Resume, each of these killed python3 with
# SIGSEGV; so every case runs in a child process of its own, and a child that dies is a
# failure named after its case.
import subprocess
import sys

CASES = {
    # forward errors, raised by stock's kernel below ours
    "conv channels": "F.conv2d(x, torch.randn(4, 5, 3, 3))",
    "batch norm channels": "F.batch_norm(x, torch.zeros(4), torch.ones(4), training=False)",
    "max pool window": "F.max_pool2d(x, 9)",
    "linear shapes": "F.linear(x.flatten(1), torch.randn(3, 7))",
    "relu_ on a leaf": "F.relu_(x)",
    # backward errors, raised by our nodes
    "second backward": "y = F.relu(x * 1).sum(); y.backward(); y.backward()",
    "in-place change": "y = F.relu(x * 1); y.add_(1); y.sum().backward()",
}
PROLOGUE = """
import torch, torch.nn.functional as F
x = torch.randn(2, 3, 6, 6, requires_grad=True)
# ours is in use: this builds our node
assert F.relu(x * 1).grad_fn.name().startswith("Memsave"), F.relu(x * 1).grad_fn.name()
try:
    exec({code!r})
    print("no error")
except RuntimeError as e:
    print("RuntimeError:", str(e).splitlines()[0][:100])
"""


def main():
    failures = []
    for name, code in CASES.items():
        r = subprocess.run([sys.executable, "-c", PROLOGUE.format(code=code)], capture_output=True, text=True)
        line = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
        print(f"{name}: exit {r.returncode}: {line}")
        if r.returncode != 0 or not line.startswith("RuntimeError:"):
            failures.append(name)
            print(r.stderr[-2000:])
    print("python_errors:", f"FAILED {failures}" if failures else "passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

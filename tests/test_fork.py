# SPDX-License-Identifier: MIT
# test_fork.py LIBMEMSAVE (issue 15): DataLoader workers (num_workers=2, fork) of a Python
# host under the preload. Each item's forward and backward run in a worker: the worker's node
# is ours and its input gradient is bitwise the one stock computes in the parent (with
# memsave_set_enabled(0)). Reports: workers leave through os._exit, so with or without %p
# only the parent writes one (Note [Reports of forked children] in shim/report.c).
import glob
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import ctypes, os, sys
import torch
from torch.utils.data import DataLoader, Dataset

if int(torch.__version__.split(".")[0]) >= 2:
    # Debian 13's mkldnn: run-dependent fp32 conv input gradients on some CPUs in stock
    # itself (docs/versions.md); off, stock is deterministic. The workers inherit it.
    torch.backends.mkldnn.enabled = False
torch.manual_seed(0)
W = torch.randn(8, 3, 3, 3)


def grad_of(i):
    g = torch.Generator().manual_seed(i)
    x = torch.randn(2, 3, 16, 16, generator=g).requires_grad_(True)
    y = torch.nn.functional.conv2d(x, W, padding=1)
    y.pow(2).sum().backward()
    return y.grad_fn.name(), x.grad


class Grads(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        name, g = grad_of(i)
        return name, g, os.getpid()


shim = ctypes.CDLL(None)  # the preloaded libmemsave.so answers for the C ABI
assert shim.memsave_is_active() == 1, "not preloaded and active"
# LibTorch used (and our node built) before the workers are forked, without a backward:
# since 2.x a process whose autograd engine has started cannot run backward in a forked
# child, stock or not ("Unable to handle autograd's threading in combination with fork").
x99 = torch.randn(2, 3, 16, 16).requires_grad_(True)
assert torch.nn.functional.conv2d(x99, W, padding=1).grad_fn.name() == "MemsaveConvolutionBackward"
workers = set()
loader = DataLoader(Grads(), batch_size=None, num_workers=2, multiprocessing_context="fork")
for i, (name, g, pid) in enumerate(loader):
    workers.add(pid)
    assert pid != os.getpid()
    assert name == "MemsaveConvolutionBackward", f"item {i}: worker's node is {name}"
    shim.memsave_set_enabled(0)
    stock_name, stock = grad_of(i)
    shim.memsave_set_enabled(1)
    assert stock_name == "ConvolutionBackward0", stock_name
    assert torch.equal(g.view(torch.int32), stock.view(torch.int32)), f"item {i}: gradient differs from stock"
assert len(workers) == 2, workers
print("parent", os.getpid(), "workers", len(workers))
"""


def main():
    lib = sys.argv[1]
    pre = os.environ.get("MEMSAVE_TEST_PRELOAD")  # a sanitized build's ASan runtime comes first
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, report in [("no report", None), ("report without %p", "r.json"), ("report with %p", "r-%p.json")]:
            env = dict(os.environ, LD_PRELOAD=":".join(filter(None, [pre, lib])), OMP_NUM_THREADS="1")
            if pre:  # no LeakSanitizer in a Python host (why: $pyhost in tests/checks.sh)
                env["ASAN_OPTIONS"] = ":".join(filter(None, [env.get("ASAN_OPTIONS"), "detect_leaks=0"]))
            for v in [v for v in env if v.startswith("MEMSAVE") and v != "MEMSAVE_TEST_PRELOAD"]:
                del env[v]
            d = os.path.join(tmp, name.replace(" ", "_").replace("%", ""))
            os.mkdir(d)
            if report:
                env["MEMSAVE_REPORT"] = os.path.join(d, report)
            r = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=240)
            ok = r.returncode == 0 and "workers 2" in r.stdout
            if ok and report:
                files = glob.glob(os.path.join(d, "*"))
                parent = int(r.stdout.split()[1])
                ok = len(files) == 1 and json.load(open(files[0]))["pid"] == parent
                if not ok:
                    print(f"     files {files}, parent {parent}")
            print(f"{'ok  ' if ok else 'FAIL'} DataLoader workers, {name}")
            if not ok:
                failures += 1
                print("     " + (r.stdout + r.stderr)[-2000:].replace("\n", "\n     "))
    print(f"{failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

# SPDX-License-Identifier: MIT
# test_python_module.py MODE LIBRARY [--installed] (issue 16): the memsave Python module
# (python/memsave.py) on the Python host, against what the library really does.
#
#   MODE preloaded  run under LD_PRELOAD=LIBRARY: active() after import torch, counters that
#                   move, disabled() giving stock's nodes and restoring (exceptions, nesting),
#                   reset_peak(), preload_env() that adds the library once; the activations
#                   kept at once over training steps against their sum over the run, and the
#                   report's kept line (issue 25)
#   MODE plain      no preload: the module imports, active() is False, stats() and peak() are
#                   None, disabled() is harmless; preload_env(library=LIBRARY) starts an
#                   active child
#   --installed     the module and the library come from an installed package: memsave is
#                   not imported from the source tree and preload_env() finds LIBRARY alone
import ctypes
import inspect
import os
import re
import subprocess
import sys

mode, library = sys.argv[1], sys.argv[2]
installed = "--installed" in sys.argv[3:]
if not installed:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import memsave  # noqa: E402  (before torch on purpose: the hooks arrive with LibTorch)

failures = []


def check(cond, what, got=None):
    print(("ok   " if cond else "FAIL ") + what + ("" if cond or got is None else f"\n     got: {got!r}"))
    if not cond:
        failures.append(what)


source_tree = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python")
check(installed != (os.path.dirname(os.path.abspath(memsave.__file__)) == os.path.abspath(source_tree)),
      "memsave is imported from " + ("the installed package" if installed else "the source tree"), memsave.__file__)
check(not memsave.active(), "active() is False before import torch")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

torch.set_num_threads(1)
abi_enabled = memsave._abi().memsave_enabled if mode == "preloaded" else None


def relu_node():
    x = torch.randn(64, 64, requires_grad=True)
    return F.relu(x).grad_fn.name()


def child_active(env):
    code = "import sys; sys.path[:0] = sys.argv[1:]; import torch, memsave; print(memsave.active())"
    out = subprocess.run([sys.executable, "-c", code] + ([] if installed else [source_tree]), env=env,
                         capture_output=True, text=True, timeout=120)
    return out.stdout.strip()


def test_preloaded():
    check(memsave.active(), "active() after import torch")
    check(os.path.samefile(memsave.library_path(), library), "library_path() is the preloaded library",
          memsave.library_path())
    before = memsave.stats()
    check(before.size == ctypes.sizeof(memsave._CStats), "stats().size: the library filled the whole struct",
          before.size)
    name = relu_node()
    check(name == "MemsaveReluBackward", "outside disabled(): libmemsave's ReLU node", name)
    after = memsave.stats()
    check(after.substituted["relu"] == before.substituted["relu"] + 1, "stats().substituted counts the ReLU nodes",
          (before.substituted, after.substituted))
    check(after.activation_bytes_stock > before.activation_bytes_stock, "stats(): stock's activation bytes move")
    check(after.activation_bytes_kept < after.activation_bytes_stock, "stats(): we keep less than stock")
    with memsave.disabled():
        name = relu_node()
        check(name == "ReluBackward0", "inside disabled(): stock's ReLU node", name)
        with memsave.disabled():
            pass
        name = relu_node()
        check(name == "ReluBackward0", "a nested disabled() leaves the outer one disabled", name)
    name = relu_node()
    check(name == "MemsaveReluBackward", "after disabled(): libmemsave's ReLU node again", name)
    try:
        with memsave.disabled():
            raise KeyError("inside")
    except KeyError:
        pass
    check(abi_enabled() == 1 and relu_node() == "MemsaveReluBackward", "disabled() restores after an exception")
    memsave._abi().memsave_set_enabled(0)
    with memsave.disabled():
        pass
    check(abi_enabled() == 0, "disabled() restores a state that was already off")
    memsave._abi().memsave_set_enabled(1)

    big = torch.ones(4 << 20)  # 16 MiB
    del big
    check(memsave.peak() >= 16 << 20, "peak() saw the 16 MiB tensor", memsave.peak())
    memsave.reset_peak()
    check(memsave.peak() < 16 << 20, "reset_peak() forgets it", memsave.peak())
    check(memsave.stats().cpu_peak_total_bytes >= 16 << 20, "cpu_peak_total_bytes keeps it")

    env = memsave.preload_env({"PATH": "/usr/bin:/bin"})
    check(env["LD_PRELOAD"] == memsave.library_path(), "preload_env() adds the library", env)
    env = memsave.preload_env({"LD_PRELOAD": "/lib/other.so"})
    check(env["LD_PRELOAD"] == memsave.library_path() + ":/lib/other.so", "preload_env() keeps LD_PRELOAD after it",
          env)
    twice = memsave.preload_env(env)
    check(twice == env, "preload_env() does not add the library twice", twice)
    check(memsave.preload_env()["LD_PRELOAD"] == os.environ["LD_PRELOAD"],
          "preload_env() of this (preloaded) process changes nothing")
    check(child_active(memsave.preload_env()) == "True", "a child started with preload_env() is active")
    check(child_active(dict(memsave.preload_env(), MEMSAVE="0")) == "False", "the same child with MEMSAVE=0 is not")


def train_steps(steps, x, weights):
    """`steps` forwards and backwards of a small frozen net (conv, ReLU, conv, ReLU, max
    pooling); the input requires grad, so the nodes keep ReLU masks and pooling indices."""
    for _ in range(steps):
        h = F.relu(F.conv2d(x, weights[0], padding=1))
        h = F.max_pool2d(F.relu(F.conv2d(h, weights[1], padding=1)), 2)
        h.sum().backward()
        x.grad = None


def test_live_activations():
    """Issue 25: what the nodes keep at once (live, and the largest live figure of the run)
    against the sum over every node of the run, which grows with the steps."""
    torch.manual_seed(0)
    x = torch.randn(4, 8, 32, 32, requires_grad=True)
    weights = [torch.randn(16, 8, 3, 3) * 0.1, torch.randn(16, 16, 3, 3) * 0.1]
    train_steps(1, x, weights)  # warm-up: the first step allocates what later ones reuse
    before = memsave.stats()
    check(before.activation_bytes_kept_live is not None and before.activation_bytes_stock_peak is not None,
          "stats(): the live and peak activation fields are filled", before)
    # One step's forward, held: what it keeps is live until its backward releases it.
    h = F.max_pool2d(F.relu(F.conv2d(F.relu(F.conv2d(x, weights[0], padding=1)), weights[1], padding=1)), 2)
    held = memsave.stats()
    step_kept = held.activation_bytes_kept - before.activation_bytes_kept
    step_stock = held.activation_bytes_stock - before.activation_bytes_stock
    check(step_kept > 0 and step_stock > step_kept, "one step keeps activations, fewer than stock's",
          (step_kept, step_stock))
    check(held.activation_bytes_kept_live - before.activation_bytes_kept_live == step_kept and
          held.activation_bytes_stock_live - before.activation_bytes_stock_live == step_stock,
          "after a forward its activations are live", (held, before))
    check(held.activation_bytes_kept_peak >= held.activation_bytes_kept_live and
          held.activation_bytes_stock_peak >= held.activation_bytes_stock_live, "the peaks are at least the live figures")
    h.sum().backward(retain_graph=True)
    kept = memsave.stats()
    check(kept.activation_bytes_kept_live == held.activation_bytes_kept_live,
          "backward with retain_graph keeps them live", (kept.activation_bytes_kept_live, held.activation_bytes_kept_live))
    del h
    x.grad = None
    dropped = memsave.stats()
    check(dropped.activation_bytes_kept_live == before.activation_bytes_kept_live and
          dropped.activation_bytes_stock_live == before.activation_bytes_stock_live,
          "a graph destroyed without a releasing backward is no longer live",
          (dropped.activation_bytes_kept_live, before.activation_bytes_kept_live))
    # Five steps: the sum grows five steps' worth, the peak stays one step's.
    train_steps(5, x, weights)
    after = memsave.stats()
    summed_kept = after.activation_bytes_kept - dropped.activation_bytes_kept
    summed_stock = after.activation_bytes_stock - dropped.activation_bytes_stock
    check(summed_kept == 5 * step_kept and summed_stock == 5 * step_stock, "the sums count every step",
          (summed_kept, summed_stock, step_kept, step_stock))
    check(after.activation_bytes_kept_live == before.activation_bytes_kept_live and
          after.activation_bytes_stock_live == before.activation_bytes_stock_live,
          "after each backward nothing of the steps is live",
          (after.activation_bytes_kept_live, after.activation_bytes_stock_live, before.activation_bytes_kept_live))
    check(after.activation_bytes_kept_peak == held.activation_bytes_kept_peak and
          after.activation_bytes_stock_peak == held.activation_bytes_stock_peak,
          "the peaks do not grow with the steps",
          (after.activation_bytes_kept_peak, held.activation_bytes_kept_peak,
           after.activation_bytes_stock_peak, held.activation_bytes_stock_peak))
    check(step_kept <= after.activation_bytes_kept_peak and after.activation_bytes_kept_peak * 3 < summed_kept and
          step_stock <= after.activation_bytes_stock_peak and after.activation_bytes_stock_peak * 3 < summed_stock,
          "the peaks are about one step's, well below the sums over five steps",
          (after.activation_bytes_kept_peak, step_kept, summed_kept))
    # The report's kept line leads with what a user can compare with the peak.
    code = ("import torch, torch.nn.functional as F\n"
            "torch.manual_seed(0)\n"
            "x = torch.randn(4, 8, 32, 32, requires_grad=True)\n"
            "weights = [torch.randn(16, 8, 3, 3) * 0.1, torch.randn(16, 16, 3, 3) * 0.1]\n"
            + inspect.getsource(train_steps) + "train_steps(5, x, weights)\n")
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, MEMSAVE_REPORT="stderr"),
                         capture_output=True, text=True, timeout=120)
    line = [l for l in out.stderr.splitlines() if "kept for backward" in l]
    check(out.returncode == 0 and len(line) == 1 and
          re.search(r"kept for backward: activations at most \S+ \S+ at once \(stock would keep at most \S+ \S+, "
                    r"not kept \S+ \S+\); summed over the run: activations \S+ \S+ \(stock \S+ \S+, not kept \S+ \S+\), "
                    r"parameters referenced", line[0]) is not None,
          "the report's kept line: at most ... at once, then summed over the run", out.stderr[-2000:])


def test_plain():
    check(not memsave.active(), "active() is False without the preload, after import torch")
    check(memsave.stats() is None and memsave.peak() is None, "stats() and peak() are None without the library")
    memsave.reset_peak()
    with memsave.disabled():
        check(relu_node() == "ReluBackward0", "disabled() is harmless without the library")
    if installed:
        check(os.path.samefile(memsave.library_path(), library), "library_path() finds the installed library",
              memsave.library_path())
        env = memsave.preload_env(os.environ)
    else:
        check(memsave.library_path() is None, "library_path() is None without preload or install",
              memsave.library_path())
        try:
            memsave.preload_env()
            check(False, "preload_env() without a library raises FileNotFoundError")
        except FileNotFoundError:
            check(True, "preload_env() without a library raises FileNotFoundError")
        env = memsave.preload_env(os.environ, library=library)
    check(os.path.samefile(env["LD_PRELOAD"], library), "preload_env() names the library", env.get("LD_PRELOAD"))
    check("LD_PRELOAD" not in os.environ, "preload_env() leaves os.environ alone")
    check(child_active(env) == "True", "a child started with preload_env() is active")
    check(child_active(dict(os.environ)) == "False", "a child started without it is not")


def test_preloaded_all():
    test_preloaded()
    test_live_activations()


{"preloaded": test_preloaded_all, "plain": test_plain}[mode]()
print(f"{len(failures)} failure(s)" if failures else "all python module checks passed")
sys.exit(1 if failures else 0)

# SPDX-License-Identifier: MIT
# test_python_module.py MODE LIBRARY [--installed] (issue 16): the memsave Python module
# (python/memsave.py) on the Python host, against what the library really does.
#
#   MODE preloaded  run under LD_PRELOAD=LIBRARY: active() after import torch, counters that
#                   move, disabled() giving stock's nodes and restoring (exceptions, nesting),
#                   reset_peak(), preload_env() that adds the library once
#   MODE plain      no preload: the module imports, active() is False, stats() and peak() are
#                   None, disabled() is harmless; preload_env(library=LIBRARY) starts an
#                   active child
#   --installed     the module and the library come from an installed package: memsave is
#                   not imported from the source tree and preload_env() finds LIBRARY alone
import ctypes
import os
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


{"preloaded": test_preloaded, "plain": test_plain}[mode]()
print(f"{len(failures)} failure(s)" if failures else "all python module checks passed")
sys.exit(1 if failures else 0)

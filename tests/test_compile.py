# SPDX-License-Identifier: MIT
# test_compile.py: torch.compile with libmemsave preloaded (MEMSAVE_OPS=all), 2.6 and 2.14;
# exits 77, skipped, where torch has no torch.compile (1.13). Where our kernels do not serve its
# tracing (the releases but 2.6 and 2.14 by default; builds with -DMEMSAVE_COMPILED_AUTOGRAD=OFF)
# it checks only that a compiled call is stock's, bitwise, and counted as a fallback with the
# reason "torch.compile tracing: not served". Note [Compile tracing] in hooks/core/rules.h.
#
# Each case compiles a module twice, stock's (libmemsave switched off while dynamo and
# AOTAutograd trace it) and ours, each after torch._dynamo.reset(), and runs two steps of each
# (the second runs the cached graph, without tracing), with mkldnn off (Note [Compiled
# autograd] in hooks/core/node.h says why):
#   - outputs and the input's gradient (and trainable parameters' gradients) are bitwise
#     stock's under the same backend, on inputs with NaN, inf and -0.0;
#   - the trace took our path: the families' substituted counters grew while ours traced,
#     and not while stock traced; the compiled backward calls memsave::stand_in_like for a
#     frozen convolution (the stand-in of Note [Traced stand-in] in hooks/core/standin.h);
#   - what the compiled forward leaves alive for backward (tensor bytes above the step's
#     start, libmemsave's counting allocator) is at most a tenth of stock's on a frozen
#     conv-BN-ReLU-pool stack, for aot_eager and inductor, and the step's peak is below 0.55
#     of stock's under aot_eager and 0.75 under inductor (docs/compile.md;
#     with mkldnn on, as programs run: only bytes are compared there);
#   - what we do not serve falls back, counted with its reason: hardtanh on the CPU, dropout,
#     a __torch_dispatch__ mode of the user's.
import ctypes
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
import memsave  # noqa: E402

if not hasattr(torch, "compile"):
    print("skipped: this torch has no torch.compile")
    sys.exit(77)

lib = ctypes.CDLL(None)
failures = []

# Note [AOTAutograd's cache] (shim/environ.c): preloaded, libmemsave turned torch.compile's
# on-disk AOTAutograd cache off for this process (where torch has that cache), so that no
# graph traced without us is loaded here, and none traced through us is stored for others.
# With it on (TORCHINDUCTOR_AUTOGRAD_CACHE=1), 2.14's inductor cases below load stock's graphs.
try:
    import torch._functorch.config as functorch_config
except ImportError:
    functorch_config = None
if os.environ.get("TORCHINDUCTOR_AUTOGRAD_CACHE") != "0":
    failures.append(f"TORCHINDUCTOR_AUTOGRAD_CACHE is {os.environ.get('TORCHINDUCTOR_AUTOGRAD_CACHE')!r}, not 0: "
                    "libmemsave's constructor did not turn AOTAutograd's cache off")
if getattr(functorch_config, "enable_autograd_cache", False):
    failures.append("torch._functorch.config.enable_autograd_cache is on under libmemsave")


def set_enabled(on):
    return lib.memsave_set_enabled(1 if on else 0)


def substituted():
    return sum(memsave.stats().substituted.values())


def fallbacks():
    return sum(memsave.stats().fallbacks.values())


def bitwise(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
        a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))


class Fn(nn.Module):
    def __init__(self, fn, *modules):
        super().__init__()
        self.fn = fn
        self.mods = nn.ModuleList(modules)

    def forward(self, x):
        return self.fn(x)


def stack(channels=16, layers=4):
    """Frozen conv(3x3)-BN(eval)-ReLU layers with max pools, adaptive pool and a head."""
    torch.manual_seed(0)
    seq, c = [], 3
    for i in range(layers):
        seq += [nn.Conv2d(c, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU()]
        c = channels
        if i % 2 == 1:
            seq.append(nn.MaxPool2d(2))
    seq += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 10)]
    net = nn.Sequential(*seq).eval().requires_grad_(False)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return net


class Graphs:
    """A backend that records AOTAutograd's backward graphs before compiling them as
    `backend` does (aot_eager: min-cut partitioner, no compiler; inductor)."""

    def __init__(self, backend):
        self.backend = backend
        self.backward = []

    def __call__(self, gm, inputs):
        if self.backend == "inductor":
            from torch._inductor.compile_fx import compile_fx, compile_fx_inner

            def inner(g, i, **kwargs):
                if kwargs.get("is_backward"):
                    self.backward.append(g)
                return compile_fx_inner(g, i, **kwargs)
            return compile_fx(gm, inputs, inner_compile=inner)
        from torch._dynamo.backends.debugging import aot_eager, boxed_nop

        def bw(g, i):
            self.backward.append(g)
            return boxed_nop(g, i)
        return aot_eager(gm, inputs, bw_compiler=bw)

    def calls(self, name):
        return sum(1 for gm in self.backward for n in gm.graph.nodes
                   if n.op == "call_function" and name in str(n.target))


def run(net, x, on, backend, params=()):
    """Two compiled steps; returns (outputs, gradients, counters' growth while tracing,
    the graphs, bytes alive after the forward, peak above the start) of the second step."""
    torch._dynamo.reset()
    previous = set_enabled(on)
    graphs = Graphs(backend)
    compiled = torch.compile(net, backend=graphs)
    try:
        before = substituted()
        for step in range(2):
            xi = x.clone().requires_grad_()
            base = memsave.stats().cpu_current_bytes
            memsave.reset_peak()
            y = compiled(xi)
            alive = memsave.stats().cpu_current_bytes - base
            y.square().sum().backward()
            peak = memsave.stats().cpu_peak_bytes - base
            if step == 0:
                traced = substituted() - before
            grads = [xi.grad] + [p.grad.clone() for p in params]
            for p in params:
                p.grad = None
        return y.detach(), grads, traced, graphs, alive, peak
    finally:
        set_enabled(previous)


def check(label, net, x, backend="aot_eager", params=(), stand_ins=0):
    ys, gs, traced_s, _, alive_s, peak_s = run(net, x, False, backend, params)
    yo, go, traced_o, graphs, alive_o, peak_o = run(net, x, True, backend, params)
    if not bitwise(ys, yo):
        failures.append(f"{label} ({backend}): the output differs from stock's")
    for i, (a, b) in enumerate(zip(gs, go)):
        if not bitwise(a, b):
            diff = (a.double() - b.double()).nan_to_num(0).abs().max().item()
            failures.append(f"{label} ({backend}): gradient {i} differs from stock's (max |diff| {diff:g})")
    if traced_s:
        failures.append(f"{label} ({backend}): switched off, the trace still substituted {traced_s} calls")
    if not traced_o:
        failures.append(f"{label} ({backend}): our kernels did not serve the trace (nothing substituted)")
    if graphs.calls("stand_in_like") < stand_ins:
        failures.append(f"{label} ({backend}): the compiled backward does not call memsave::stand_in_like")
    print(f"{label} ({backend}): equal; traced {traced_o} calls; alive after forward {alive_o} B "
          f"(stock {alive_s} B); peak {peak_o} B (stock {peak_s} B)")
    return alive_o, alive_s, peak_o, peak_s


def special(shape):
    torch.manual_seed(1)
    x = torch.randn(*shape)
    flat = x.view(-1)
    flat[:4] = torch.tensor([float("nan"), -0.0, float("inf"), float("-inf")])
    return x


def served():
    """Whether this build serves compile tracing: it registers memsave::stand_in (2.6 by
    default; MEMSAVE_COMPILED_AUTOGRAD). A build that does and then takes no trace fails
    below, it is not skipped."""
    try:
        torch.ops.memsave.stand_in_like
        return True
    except (AttributeError, RuntimeError):
        return False


def fallback_reasons(fn, x, backend="aot_eager"):
    torch._dynamo.reset()
    before = fallbacks()
    torch.compile(fn, backend=backend)(x.clone().requires_grad_()).sum().backward()
    return fallbacks() - before


class UserMode(torch.utils._python_dispatch.TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def unserved():
    """A build that does not serve the tracing: each traced call goes to stock, bitwise, and
    is counted with its reason, which the report at exit shows (read in a child's report)."""
    if not hasattr(torch, "compile"):
        print("skipped: this torch has no torch.compile")
        return 77
    if os.environ.get("MEMSAVE_TEST_COMPILE_CHILD"):
        torch.backends.mkldnn.enabled = False
        x = special((2, 3, 6, 6))
        net = Fn(lambda t: F.relu(t * 1))
        outs = []
        for on in (False, True):
            previous = lib.memsave_set_enabled(int(on))
            try:
                torch._dynamo.reset()
                t = x.clone().requires_grad_()
                y = torch.compile(net, backend="aot_eager")(t)
                y.sum().backward()
                outs.append((y.detach(), t.grad))
            finally:
                lib.memsave_set_enabled(previous)
        return 0 if all(bitwise(a, b) for a, b in zip(*outs)) else 3
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "report.json")
        env = dict(os.environ, MEMSAVE_TEST_COMPILE_CHILD="1", MEMSAVE_REPORT=report)
        rc = subprocess.run([sys.executable, __file__], env=env).returncode
        if rc != 0:
            failures.append(f"not served: the child exited {rc} (3: a compiled call differs from stock's)")
        reasons = []
        if os.path.exists(report):
            with open(report) as f:
                reasons = [r["reason"] for r in json.load(f)["fallback_reasons"]]
        if not any(r.startswith("torch.compile tracing: not served") for r in reasons):
            failures.append(f"not served: no fallback counted with its reason (reasons: {reasons})")
    for f in failures:
        print("FAIL:", f)
    print("compile:", "FAILED" if failures else "passed (tracing not served in this build; counted: "
          f"{[r for r in reasons if r.startswith('torch.compile')]})")
    return 1 if failures else 0


def main():
    if not served():
        return unserved()
    torch.backends.mkldnn.enabled = False
    torch.manual_seed(2)
    conv = nn.Conv2d(3, 8, 3, padding=1).requires_grad_(False)
    conv_s2 = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False).requires_grad_(False)
    bn = nn.BatchNorm2d(3).eval().requires_grad_(False)
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    lin = nn.Linear(108, 5).requires_grad_(False)
    x = special((2, 3, 6, 6))
    cases = {
        "conv": (Fn(lambda t: conv(t * 1), conv), 1),
        "conv stride 2, no bias": (Fn(lambda t: conv_s2(t * 1), conv_s2), 1),
        "batch norm": (Fn(lambda t: bn(t * 1), bn), 0),
        "relu": (Fn(lambda t: F.relu(t * 1)), 0),
        "relu_": (Fn(lambda t: F.relu_(t * 1)), 0),
        "threshold": (Fn(lambda t: F.threshold(t * 1, 0.1, -1.0)), 0),
        "leaky_relu": (Fn(lambda t: F.leaky_relu(t * 1, 0.02)), 0),
        "max_pool2d": (Fn(lambda t: F.max_pool2d(t * 1, 3, 2, 1)), 0),
        "avg_pool2d": (Fn(lambda t: F.avg_pool2d(t * 1, 2, ceil_mode=True)), 0),
        "adaptive_avg_pool2d": (Fn(lambda t: F.adaptive_avg_pool2d(t * 1, 3)), 0),
        "linear": (Fn(lambda t: lin(t.flatten(1) * 1), lin), 0),
    }
    for name, (net, stand_ins) in cases.items():
        check(name, net, x, stand_ins=stand_ins)
    check("conv, inductor", cases["conv"][0], x, backend="inductor", stand_ins=1)
    check("relu, inductor", cases["relu"][0], x, backend="inductor")

    # Bias-only training: gradients of the trainable biases too.
    net = stack(8, 2)
    biases = [m.bias for m in net.modules() if isinstance(m, nn.Conv2d)]
    for b in biases:
        b.requires_grad_(True)
    check("bitfit stack", net, special((2, 3, 16, 16)), params=biases, stand_ins=2)

    # Memory on the frozen stack (docs/compile.md), with mkldnn on, as programs run:
    # gradients are compared above; here only bytes.
    torch.backends.mkldnn.enabled = True
    big = special((8, 3, 64, 64))
    for backend in ("aot_eager", "inductor"):
        _, _, _, _, alive_s, peak_s = run(stack(32, 4), big, False, backend)
        _, _, _, graphs, alive_o, peak_o = run(stack(32, 4), big, True, backend)
        print(f"frozen stack ({backend}): alive after forward {alive_o} B (stock {alive_s} B); "
              f"peak {peak_o} B (stock {peak_s} B)")
        if alive_o * 10 > alive_s:
            failures.append(f"frozen stack ({backend}): {alive_o} B alive after the forward, "
                            f"more than a tenth of stock's {alive_s} B")
        limit = 0.55 if backend == "aot_eager" else 0.75
        if peak_o >= limit * peak_s:
            failures.append(f"frozen stack ({backend}): peak {peak_o} B, not below {limit} of stock's {peak_s} B")
    torch.backends.mkldnn.enabled = False

    # What falls back, counted: hardtanh on the CPU (its NaN check reads values), dropout,
    # and a mode of the user's around the compiled call.
    for label, fn in (("hardtanh", lambda t: F.hardtanh(t * 1, -0.5, 0.75)),
                      ("dropout", lambda t: F.dropout(t * 1, 0.25, True))):
        if not fallback_reasons(fn, x):
            failures.append(f"{label}: no fallback counted under torch.compile")
    # A grouped convolution from 2.7 on (Note [Traced stand-in] in hooks/core/standin.h: there
    # the stand-in follows the weight, which for a grouped convolution does not say how
    # inductor lays out stock's saved input; mobilenet_v2's depthwise convolutions under
    # inductor gave other bits, bench/results-compile-2.14.md); on 2.6 it takes our path.
    grouped = nn.Conv2d(3, 6, 3, padding=1, groups=3).requires_grad_(False)
    counted = fallback_reasons(lambda t: grouped(t * 1), x)
    after_2_6 = tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 7)
    if counted == 0 and after_2_6:
        failures.append("grouped convolution: no fallback counted under torch.compile")
    if counted and not after_2_6:
        failures.append(f"grouped convolution: {counted} fallbacks counted on 2.6")
    with UserMode():
        if not fallback_reasons(lambda t: F.relu(t * 1), x):
            failures.append("relu under a user's dispatch mode: no fallback counted")

    for f in failures:
        print("FAIL:", f)
    print("compile:", "FAILED" if failures else "passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

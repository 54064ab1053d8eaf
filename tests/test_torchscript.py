# SPDX-License-Identifier: MIT
# test_torchscript.py: run with libmemsave preloaded and MEMSAVE_OPS=all. A frozen
# conv-BN-ReLU-pool-linear model, made with torch.jit.trace and torch.jit.script, saved and
# loaded back (as a C++ program would load it), trained on an input that needs a gradient,
# five steps each:
#   - with the graph executor's optimisation on (the default), every step's convolutions
#     take our node (traced modules record aten::_convolution); batch norm, ReLU and pooling
#     do only on the first, profiling step: afterwards the executor runs them inside a
#     differentiable graph on detached inputs, whose own node keeps what it needs
#     (docs/torchscript.md says so), and each of those calls is counted as a fallback
#     (Note [TorchScript autodiff] in hooks/core/rules.h), so that the report does not call
#     the family fine;
#   - with it off (torch.jit.optimized_execution(False)), every family takes our node on
#     every step;
# and outputs and input gradients are bitwise those of the same steps with libmemsave
# switched off (memsave_set_enabled(0)). The same for the model rewritten by
# torch.fx.symbolic_trace and, on 2.x, the module of a torch.export program, both run
# eagerly: every family takes our node on every step, nothing falls back.
import ctypes
import io
import sys

import torch
import torch.nn as nn

SLOTS = 8
CONV, BATCHNORM, RELU, POOL = 0, 2, 3, 4
lib = ctypes.CDLL(None)
if int(torch.__version__.split(".")[0]) >= 2:
    # Debian 13's LibTorch 2.6: mkldnn's fp32 conv backward-data gives wrong, run-dependent
    # input gradients on some AVX-512 CPUs, in stock itself (Note [mkldnn off on 2.x] in
    # tests/testing.h); the comparison with stock needs a deterministic stock.
    torch.backends.mkldnn.enabled = False


class Stats(ctypes.Structure):
    _fields_ = [("size", ctypes.c_uint64), ("substituted", ctypes.c_uint64 * SLOTS),
                ("fallbacks", ctypes.c_uint64 * SLOTS), ("passthrough", ctypes.c_uint64 * SLOTS)]


def counts():
    """Per family: nodes substituted and calls counted as fallbacks, so far."""
    st = Stats()
    assert lib.memsave_get_stats(ctypes.byref(st), ctypes.sizeof(st)) == 0
    return list(st.substituted), list(st.fallbacks)


def model():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(8, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def loaded(mode, m, x):
    sm = torch.jit.trace(m, x) if mode == "trace" else torch.jit.script(m)
    buf = io.BytesIO()
    torch.jit.save(sm, buf)
    buf.seek(0)
    return torch.jit.load(buf)


def steps(module, x, on):
    """Five steps; per step the output, the input's gradient, the nodes substituted and the
    fallbacks counted."""
    previous = lib.memsave_set_enabled(1 if on else 0)
    out = []
    for _ in range(5):
        xi = x.clone().requires_grad_()
        (sub0, fb0) = counts()
        y = module(xi)
        y.sum().backward()
        (sub1, fb1) = counts()
        out.append((y.detach(), xi.grad, [a - b for a, b in zip(sub1, sub0)], [a - b for a, b in zip(fb1, fb0)]))
    lib.memsave_set_enabled(previous)
    return out


def bitwise(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride() and torch.equal(
        a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))


def main():
    assert lib.memsave_is_active() == 1, "run with libmemsave preloaded"
    m, x = model(), torch.randn(2, 3, 16, 16)
    failures = []
    for optimize in (True, False):
        for mode in ("trace", "script"):
            with torch.jit.optimized_execution(optimize):
                # The same loaded module for both runs: its executor has profiled by then.
                module = loaded(mode, m, x)
                ours, stock = steps(module, x, True), steps(module, x, False)
            where = f"{mode}, optimisation {'on' if optimize else 'off'}"
            for i, ((y, g, n, fb), (ys, gs, _, _)) in enumerate(zip(ours, stock)):
                if not (bitwise(y, ys) and bitwise(g, gs)):
                    failures.append(f"{where}, step {i}: output or gradient differs from stock")
                every_family = i == 0 or not optimize
                # Max pooling, and on 1.13 the global average pool's mean.dim (2.x's stock node
                # for it is minimal: passthrough).
                pools = 2 if torch.__version__.startswith("1.") else 1
                want = {CONV: 2, BATCHNORM: 1 if every_family else 0, RELU: 2 if every_family else 0,
                        POOL: pools if every_family else 0}
                got = {f: n[f] for f in want}
                if got != want:
                    failures.append(f"{where}, step {i}: substituted {got}, expected {want}")
                # Every call the differentiable graph takes from us is counted, none else.
                for f in (CONV, BATCHNORM, RELU, POOL):
                    first = ours[0][2][f]
                    ok = fb[f] == 0 if every_family or f == CONV else fb[f] >= first
                    if not ok:
                        failures.append(f"{where}, step {i}: family {f}: {fb[f]} fallbacks, "
                                        f"{'none' if every_family or f == CONV else f'at least {first}'} expected")
            print(where, "substituted per step:", [[n[f] for f in (CONV, BATCHNORM, RELU, POOL)] for _, _, n, _ in ours],
                  "fallbacks:", [[fb[f] for f in (CONV, BATCHNORM, RELU, POOL)] for _, _, _, fb in ours])
    failures += eager_graphs(m, x)
    for f in failures:
        print("FAIL:", f)
    sys.exit(1 if failures else 0)


def eager_graphs(m, x):
    """torch.fx and torch.export programs run eagerly: the model's own calls, all ours."""
    import torch.fx
    programs = {"fx.symbolic_trace": torch.fx.symbolic_trace(m)}
    if hasattr(torch, "export") and hasattr(torch.export, "export"):
        # Exporting traces with fake tensors (our kernels serve that trace on 2.6, Note
        # [Compile tracing] in hooks/core/rules.h); only the steps below are checked.
        programs["export"] = torch.export.export(m, (x,)).module()
    pools = 2 if torch.__version__.startswith("1.") else 1
    want = {CONV: 2, BATCHNORM: 1, RELU: 2, POOL: pools}
    failures = []
    for name, module in programs.items():
        ours, stock = steps(module, x, True), steps(module, x, False)
        for i, ((y, g, n, fb), (ys, gs, _, _)) in enumerate(zip(ours, stock)):
            if not (bitwise(y, ys) and bitwise(g, gs)):
                failures.append(f"{name}, step {i}: output or gradient differs from stock")
            got = {f: n[f] for f in want}
            if got != want or any(fb):
                failures.append(f"{name}, step {i}: substituted {got}, expected {want}; fallbacks {fb}")
        print(name, "substituted per step:", [[n[f] for f in (CONV, BATCHNORM, RELU, POOL)] for _, _, n, _ in ours])
    return failures


if __name__ == "__main__":
    main()

# SPDX-License-Identifier: MIT
# test_compiled_autograd.py: run with libmemsave preloaded and MEMSAVE_OPS=all, on 2.6 and
# later (exits 77, skipped, where torch has no compiled autograd). Note [Compiled autograd]
# in hooks/core/node.h.
#
# Where our nodes do not serve compiled autograd (1.13 has none; releases other than 2.6 and 2.14 unless built
# with -DMEMSAVE_COMPILED_AUTOGRAD=ON; anywhere with OFF), compiled autograd raises
# "compiled_args not implemented" naming our node; that must be a Python exception, and
# stock's nodes must work in the same process (supported()). Where they do (2.6 and 2.14 by default),
# the rest runs, with mkldnn off (--mkldnn leaves it on; on Debian 13's oneDNN and an AVX-512
# CPU stock's own convolution backward then gives run-dependent NaN, Note [Compiled autograd]
# in hooks/core/node.h):
#
# Eager forwards of small frozen networks that reach every node class of ours (convolution,
# batch norm in eval, the ReLU family with its parameters, max/avg/adaptive pooling, mean,
# dropout and native dropout, linear, the recipe family's multiply and chains, convolutions keeping
# recipes of SiLU made in place and of a squeeze-excitation product), each followed
# by a backward under compiled autograd
# (torch._dynamo.compiled_autograd's _enable, or enable, with torch.compile, backend aot_eager; one network
# again with eager and with inductor), against the same steps with libmemsave switched off
# (memsave_set_enabled(0)), which builds stock's nodes:
#   - the forward built our nodes (grad_fn names), and compiled autograd ran them (the
#     compiled graph's inputs are what our nodes keep: the masks, not the activations);
#   - the input's gradient and every trainable parameter's gradient are bitwise stock's
#     under the same compiled backward, for two steps (the second reuses the cached graph);
#   - networks that differ only in a value our nodes keep outside tensors (a threshold, a
#     pooling stride, a dropout probability) each get their own graph: a graph traced for one
#     node is never run for another (every value is in compiled autograd's cache key);
#   - the compiled graph reads every input it lifted (unused_inputs: a graph computing from
#     an empty tensor instead of a kept mask can pass the comparison by chance);
#   - stock's errors hold: a second backward raises "backward through the graph a second time",
#     an in-place change of a tensor a ReLU node's mask stands for raises stock's version error.
import ctypes
import operator
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

try:
    from torch._dynamo import compiled_autograd
except ImportError:
    compiled_autograd = None
# 2.6 has _enable(compiler_fn); later releases also enable(compiler_fn).
enable = getattr(compiled_autograd, "enable", None) or getattr(compiled_autograd, "_enable", None)
if enable is None:
    print("skipped: this torch has no compiled autograd")
    sys.exit(77)

lib = ctypes.CDLL(None)


class Net(nn.Module):
    """Every family, with the values a graph must not be shared across."""

    def __init__(self, threshold=0.1, slope=0.02, stride=2, p=0.25, native=False):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.fc = nn.Linear(8 * 3 * 3, 5)
        self.threshold, self.slope, self.stride, self.p, self.native = threshold, slope, stride, p, native
        with torch.no_grad():  # eval statistics that are not the identity
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        x = F.relu(self.bn(self.conv1(x)))
        x = F.max_pool2d(x, 3, self.stride, 1)
        x = F.threshold(x, self.threshold, -1.0)
        x = F.leaky_relu(self.conv2(x), self.slope)
        x = F.hardtanh(x, -0.5, 0.75)
        x = F.avg_pool2d(x, 2, ceil_mode=True)
        x = F.adaptive_avg_pool2d(x, 3)
        if self.native:
            x = torch.native_dropout(x, self.p, True)[0]
        else:
            x = F.dropout(x, self.p, True)
        y = self.fc(x.flatten(1))
        return y - y.mean(dim=1, keepdim=True)


def frozen(net, trainable=()):
    for name, p in net.named_parameters():
        p.requires_grad_(name in trainable)
    return net.eval()


def node_names(t):
    seen, todo, names = set(), [t.grad_fn], set()
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.add(fn.name())
        todo.extend(f for f, _ in fn.next_functions)
    return names


def unused_inputs(gm):
    """The graph inputs compiled autograd lifted (saved tensors, the incoming gradients) that
    no operation of the graph reads. For our nodes there must be none: a kept mask the graph
    does not read means a traced backward computed from something else, e.g. an empty
    tensor whose in-place fill the graph lost (the bug behind Note [Compiled autograd]'s
    out-of-place unpack in hooks/core/bitmask.cpp). Such a graph can still give stock's bits
    when the empty tensor reuses a block that held the right values, so comparing gradients
    alone does not catch it."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    inputs = placeholders[0] if placeholders else None
    return [n.name for n in gm.graph.nodes
            if n.op == "call_function" and n.target is operator.getitem and n.args[0] is inputs and not n.users]


def compiler(backend, graphs):
    def compile_graph(gm):
        graphs.append(gm)
        return torch.compile(gm, backend=backend, fullgraph=True)
    return compile_graph


def run(net, x, on, backend):
    """Two steps: the forward eager, the backward compiled. Returns the gradients and the
    names of the nodes the forward built."""
    previous = lib.memsave_set_enabled(1 if on else 0)
    params = [p for p in net.parameters() if p.requires_grad]
    grads, names, graphs = [], set(), []
    try:
        for step in range(2):
            torch.manual_seed(100 + step)  # the same dropout noise on both sides
            xi = x.clone().requires_grad_()
            y = net(xi)
            names |= node_names(y)
            loss = (y * y).sum()
            if backend is None:  # eager backward, for comparison
                loss.backward()
            else:
                with enable(compiler(backend, graphs)):
                    loss.backward()
            grads.append([xi.grad] + [p.grad.clone() for p in params])
            for p in params:
                p.grad = None
    finally:
        lib.memsave_set_enabled(previous)
    return grads, names, graphs


class GatedMLP(nn.Module):
    """The recipe family's chains (hooks/ops/recipe.cpp): a multiply keeping a SiLU output's
    recipe, a dropout of the product and a linear keeping that recipe, a linear keeping a
    GELU (tanh) output's recipe; every parameter trains."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.gate, self.up = nn.Linear(12, 16, bias=False), nn.Linear(12, 16, bias=False)
        self.down, self.fc1, self.fc2 = nn.Linear(16, 12), nn.Linear(12, 16), nn.Linear(16, 12)

    def forward(self, x):
        y = self.down(F.dropout(F.silu(self.gate(x)) * self.up(x), 0.25, True))
        return y + self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Attention(nn.Module):
    """The bmm consumer (hooks/ops/recipe.cpp) of a dropout whose input is softmax's output
    (SoftmaxBackward0 keeps it as its own output: Note [Kept source] in hooks/core/recipe.cpp):
    bmm(dropout(softmax(q k^T)), v), after a layer norm whose output the projections keep as a
    recipe (Note [Layer norm eps] in hooks/core/recipe.h); every parameter trains."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.norm = nn.LayerNorm(12, eps=1e-3)
        self.q, self.k, self.v = nn.Linear(12, 8), nn.Linear(12, 8), nn.Linear(12, 8)

    def forward(self, x):
        x = self.norm(x.flatten(0, 1))
        p = F.dropout(torch.softmax(torch.bmm(self.q(x), self.k(x).transpose(1, 2)), -1), 0.25, True)
        return torch.bmm(p, self.v(x))


class ConvBlocks(nn.Module):
    """The convolution consumer (Note [Convolution consumer] in hooks/ops/conv.cpp) of SiLU's
    output made in place (Note [In-place producer] in hooks/core/recipe.h) and of a
    squeeze-excitation product of hardswish's output; every parameter trains."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.se, self.c3 = nn.Conv2d(8, 8, 1), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        h = F.hardswish(self.c2(F.silu(self.c1(x), inplace=True)))
        return self.c3(h * torch.sigmoid(self.se(h.mean((2, 3), keepdim=True))))


def bitwise(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
        a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))


# Mean is stock's node on 2.x (stock keeps sizes only: a passthrough); hardtanh of a NaN goes
# to stock on the CPU (docs/limits.md).
OURS = {"MemsaveConvolutionBackward", "MemsaveBatchNormBackward", "MemsaveReluBackward", "MemsaveMaxPool2DBackward",
        "MemsaveThresholdBackward", "MemsaveLeakyReluBackward", "MemsaveHardtanhBackward", "MemsaveAvgPool2DBackward",
        "MemsaveAdaptiveAvgPool2DBackward", "MemsaveLinearBackward"}
DROPOUT = {False: "MemsaveDropoutBackward", True: "MemsaveNativeDropoutBackward"}

torch.manual_seed(2)
_conv = nn.Conv2d(3, 8, 3, padding=1).requires_grad_(False)
_bn = nn.BatchNorm2d(3).eval().requires_grad_(False)
with torch.no_grad():
    _bn.running_mean.uniform_(-0.5, 0.5)
    _bn.running_var.uniform_(0.5, 2.0)
_lin = nn.Linear(108, 5).requires_grad_(False)
# One family at a time, on an input holding NaN, inf and -0.0 (`x * 1`: a node of ours on a
# non-leaf, as in a network).
FAMILIES = {
    "conv": lambda x: _conv(x),
    "batch norm": lambda x: _bn(x * 1),
    "relu": lambda x: F.relu(x * 1),
    "threshold": lambda x: F.threshold(x * 1, 0.1, -1.0),
    "leaky_relu": lambda x: F.leaky_relu(x * 1, 0.02),
    "max_pool2d": lambda x: F.max_pool2d(x * 1, 3, 2, 1),
    "avg_pool2d": lambda x: F.avg_pool2d(x * 1, 2, ceil_mode=True),
    "adaptive_avg_pool2d": lambda x: F.adaptive_avg_pool2d(x * 1, 3),
    "dropout": lambda x: F.dropout(x * 1, 0.25, True),
    "native_dropout": lambda x: torch.native_dropout(x * 1, 0.25, True)[0],
    "linear": lambda x: F.linear(x.flatten(1) * 1, _lin.weight, _lin.bias),
}


class Family(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


failures = []


def check(label, net, x, backend="aot_eager", want=None):
    stock, stock_names, _ = run(net, x, False, backend)
    ours, our_names, graphs = run(net, x, True, backend)
    if not graphs:
        failures.append(f"{label}: compiled autograd compiled no graph")
    for gm in graphs:
        if unused_inputs(gm):
            failures.append(f"{label}: the compiled graph does not read its inputs {unused_inputs(gm)}:\n{gm.code}")
    if want is None:
        want = OURS | {DROPOUT[net.native]}
    missing = want - our_names
    if missing:
        failures.append(f"{label}: the forward did not build {sorted(missing)} (built {sorted(our_names)})")
    if any(n.startswith("Memsave") for n in stock_names):
        failures.append(f"{label}: switched off, the forward still built ours: {sorted(stock_names)}")
    for step, (s, o) in enumerate(zip(stock, ours)):
        for i, (a, b) in enumerate(zip(s, o)):
            if not bitwise(a, b):
                ne = (a.contiguous().view(torch.uint8) != b.contiguous().view(torch.uint8)).sum().item()
                both_nan = (a.isnan() & b.isnan()).sum().item()
                diff = (a.double() - b.double()).nan_to_num(0).abs().max().item()
                failures.append(f"{label}: step {step} gradient {i} differs from stock's ({ne} bytes differ, "
                                f"{both_nan} NaN on both sides, max |diff| elsewhere {diff:g})")
    print(f"{label}: {len(stock)} steps, {len(stock[0])} gradients compared")


def supported():
    """Whether our nodes serve compiled autograd (2.6 by default; MEMSAVE_COMPILED_AUTOGRAD).
    Without it, compiled autograd must raise stock's "compiled_args not implemented" naming
    our node, as a Python exception (the host goes on), and stock's nodes must still work."""
    x = torch.randn(4, 4, requires_grad=True)
    y = F.relu(x * 1)
    if not y.grad_fn.name().startswith("Memsave"):
        failures.append(f"relu built {y.grad_fn.name()}, not our node")
        return False
    try:
        with enable(lambda gm: torch.compile(gm, backend="aot_eager", fullgraph=True)):
            y.sum().backward()
        return True
    except RuntimeError as e:
        if "compiled_args not implemented: MemsaveReluBackward" not in str(e):
            failures.append(f"compiled autograd raised something else: {e}")
        print("our nodes do not serve compiled autograd here); it raised:", str(e).splitlines()[0])
    previous = lib.memsave_set_enabled(0)
    try:
        x = torch.randn(4, 4, requires_grad=True)
        with enable(lambda gm: torch.compile(gm, backend="aot_eager", fullgraph=True)):
            F.relu(x * 1).sum().backward()
        if not torch.equal(x.grad, (x > 0).float()):
            failures.append("stock's nodes under compiled autograd gave a wrong gradient")
    finally:
        lib.memsave_set_enabled(previous)
    return False


def main():
    if not supported():
        for f in failures:
            print("FAIL:", f)
        print("compiled_autograd:", "FAILED" if failures else "passed (not served here: the error, as docs/compile.md says)")
        return 1 if failures else 0
    if "--mkldnn" not in sys.argv:
        torch.backends.mkldnn.enabled = False
    torch.manual_seed(1)
    x = torch.randn(2, 3, 12, 12)
    special = torch.randn(2, 3, 6, 6)
    special[0, 0, 0, :3] = torch.tensor([float("nan"), -0.0, float("inf")])
    special[1, 2, 3, 3] = float("-inf")
    nodes = {"conv": "Convolution", "batch norm": "BatchNorm", "relu": "Relu", "threshold": "Threshold",
             "leaky_relu": "LeakyRelu", "max_pool2d": "MaxPool2D", "avg_pool2d": "AvgPool2D",
             "adaptive_avg_pool2d": "AdaptiveAvgPool2D", "dropout": "Dropout", "native_dropout": "NativeDropout",
             "linear": "Linear"}
    for name, fn in FAMILIES.items():
        check(f"{name}, NaN/inf/-0.0 input", Family(fn), special, want={f"Memsave{nodes[name]}Backward"})
    # Adversarial: everything frozen, the input needs its gradient.
    check("adversarial", frozen(Net()), x)
    # The same node classes with other values: each must get its own graph.
    check("threshold 0.3, slope 0.2", frozen(Net(threshold=0.3, slope=0.2)), x)
    check("stride 1", frozen(Net(stride=1)), x)
    check("p 0.6, native_dropout", frozen(Net(p=0.6, native=True)), x)
    # Bias-only and head training: linear keeps its input, batch norm goes to stock's node
    # where its weight trains (a passthrough; ours elsewhere).
    check("bitfit", frozen(Net(), trainable={"conv1.bias", "conv2.bias", "fc.bias", "fc.weight"}), x)
    # Backend "eager" runs the captured graph as it is, so from 2.7 on our functional backward
    # (Note [Functional backward] in hooks/core/compiled.cpp) runs at every step, for the
    # nodes of that step, through a function bound for the first step's nodes: it must
    # compute from what the graph hands it, never from the node it was bound for.
    torch._dynamo.reset()
    check("adversarial, eager", frozen(Net()), x, backend="eager")
    if "--inductor" in sys.argv:
        # Compiled autograd's cache is keyed on the graph, not on the compiler: without the
        # reset, the graph compiled for aot_eager above would run again (compiled no graph).
        torch._dynamo.reset()
        check("adversarial, inductor", frozen(Net()), x, backend="inductor")

    torch._dynamo.reset()
    wide = x.clone()  # the linears' width, with NaN, -0.0, inf and -inf
    wide[0, 0, 0, :3] = torch.tensor([float("nan"), -0.0, float("inf")])
    wide[1, 2, 3, 3] = float("-inf")
    check("recipes", GatedMLP(), wide, want={"MemsaveMulBackward", "MemsaveDropoutBackward", "MemsaveLinearBackward"})
    check("attention", Attention(), wide, want={"MemsaveBmmBackward", "MemsaveDropoutBackward", "MemsaveLinearBackward"})
    check("convolution recipes", ConvBlocks(), wide, want={"MemsaveConvolutionBackward", "MemsaveMulBackward"})

    # Stock's errors, raised by compiled_args before anything is traced.
    net = frozen(Net())
    xi = x.clone().requires_grad_()
    loss = net(xi).square().sum()
    with enable(lambda gm: torch.compile(gm, backend="aot_eager", fullgraph=True)):
        loss.backward()
        try:
            loss.backward()
            failures.append("second backward did not raise")
        except RuntimeError as e:
            if "second time" not in str(e):
                failures.append(f"second backward raised something else: {e}")
        xi = x.clone().requires_grad_()
        y = F.relu(xi * 2)
        y.add_(1)
        try:
            y.sum().backward()
            failures.append("backward after an in-place change of relu's output did not raise")
        except RuntimeError as e:
            if "modified by an inplace operation" not in str(e):
                failures.append(f"in-place change raised something else: {e}")

    for f in failures:
        print("FAIL:", f)
    print("compiled_autograd:", "FAILED" if failures else "passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

# SPDX-License-Identifier: MIT
# test_compiled_autograd.py: run with libmemsave preloaded and MEMSAVE_OPS=all, on 2.6 and
# later (exits 77, skipped, where torch has no compiled autograd). Note [Compiled autograd]
# in hooks/core/node.h.
#
# Eager forwards of small frozen networks that reach every node class of ours (convolution,
# batch norm in eval, the ReLU family with its parameters, max/avg/adaptive pooling, mean,
# dropout and native dropout, linear), each followed by a backward under compiled autograd
# (torch._dynamo.compiled_autograd's _enable, or enable, with torch.compile, backend aot_eager; one network
# again with inductor), against the same steps with libmemsave switched off
# (memsave_set_enabled(0)), which builds stock's nodes:
#   - the forward built our nodes (grad_fn names), and compiled autograd ran them (the
#     compiled graph's inputs are what our nodes keep: the masks, not the activations);
#   - the input's gradient and every trainable parameter's gradient are bitwise stock's
#     under the same compiled backward, for two steps (the second reuses the cached graph);
#   - networks that differ only in a value our nodes keep outside tensors (a threshold, a
#     pooling stride, a dropout probability) each get their own graph: a graph traced for one
#     node is never run for another (every value is in compiled autograd's cache key);
#   - stock's errors hold: a second backward raises "backward through the graph a second time",
#     an in-place change of a tensor a ReLU node's mask stands for raises stock's version error.
import ctypes
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


def run(net, x, on, backend):
    """Two steps: the forward eager, the backward compiled. Returns the gradients and the
    names of the nodes the forward built."""
    previous = lib.memsave_set_enabled(1 if on else 0)
    params = [p for p in net.parameters() if p.requires_grad]
    grads, names = [], set()
    try:
        for step in range(2):
            torch.manual_seed(100 + step)  # the same dropout noise on both sides
            xi = x.clone().requires_grad_()
            y = net(xi)
            names |= node_names(y)
            loss = (y * y).sum()
            with enable(lambda gm: torch.compile(gm, backend=backend, fullgraph=True)):
                loss.backward()
            grads.append([xi.grad] + [p.grad.clone() for p in params])
            for p in params:
                p.grad = None
    finally:
        lib.memsave_set_enabled(previous)
    return grads, names


def bitwise(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
        a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))


OURS = {"MemsaveConvolutionBackward", "MemsaveBatchNormBackward", "MemsaveReluBackward", "MemsaveMaxPool2DBackward",
        "MemsaveThresholdBackward", "MemsaveLeakyReluBackward", "MemsaveHardtanhBackward", "MemsaveAvgPool2DBackward",
        "MemsaveAdaptiveAvgPool2DBackward", "MemsaveLinearBackward", "MemsaveMeanBackward"}
DROPOUT = {False: "MemsaveDropoutBackward", True: "MemsaveNativeDropoutBackward"}

failures = []


def check(label, net, x, backend="aot_eager", want=OURS):
    stock, stock_names = run(net, x, False, backend)
    ours, our_names = run(net, x, True, backend)
    missing = (want | {DROPOUT[net.native]}) - our_names
    if missing:
        failures.append(f"{label}: the forward did not build {sorted(missing)} (built {sorted(our_names)})")
    if any(n.startswith("Memsave") for n in stock_names):
        failures.append(f"{label}: switched off, the forward still built ours: {sorted(stock_names)}")
    for step, (s, o) in enumerate(zip(stock, ours)):
        for i, (a, b) in enumerate(zip(s, o)):
            if not bitwise(a, b):
                diff = (a.double() - b.double()).abs().max().item()
                failures.append(f"{label}: step {step} gradient {i} differs from stock's (max |diff| {diff:g})")
    print(f"{label}: {len(stock)} steps, {len(stock[0])} gradients compared")


def main():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 12, 12)
    x[0, 0, 0, :3] = torch.tensor([float("nan"), -0.0, float("inf")])
    # Adversarial: everything frozen, the input needs its gradient.
    check("adversarial", frozen(Net()), x)
    # The same node classes with other values: each must get its own graph.
    check("threshold 0.3, slope 0.2", frozen(Net(threshold=0.3, slope=0.2)), x)
    check("stride 1", frozen(Net(stride=1)), x)
    check("p 0.6, native_dropout", frozen(Net(p=0.6, native=True)), x)
    # Bias-only and head training: linear keeps its input, batch norm goes to stock's node
    # where its weight trains (a passthrough; ours elsewhere).
    check("bitfit", frozen(Net(), trainable={"conv1.bias", "conv2.bias", "fc.bias", "fc.weight"}), x)
    if "--inductor" in sys.argv:
        check("adversarial, inductor", frozen(Net()), x, backend="inductor")

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

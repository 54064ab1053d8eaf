# SPDX-License-Identifier: MIT
"""torch.compile, stock against libmemsave in one process (2.6; Note [Compile tracing] in
hooks/core/rules.h).

    LD_PRELOAD=build/libmemsave.so /usr/bin/python3 bench/compile.py \
        [--models stack resnet18 mobilenet_v2] [--scenarios adversarial surgical] \
        [--backends eager aot_eager inductor] [--batch 8] [--size 96] [--rounds 3] [--mkldnn]

Each side compiles the model with its own backend object (dynamo keeps one cache entry per
backend): stock's while libmemsave is switched off (memsave.disabled(), so the trace builds
stock's nodes), ours while it is on. The first step of each side traces and compiles (its
time is reported apart, and the counters say whether ours took the trace), then `--rounds`
A/B rounds alternate the sides; both repeat the same step from the same weights and input,
so their gradients must be equal bit for bit (SHA-256 of the input's gradient in the
adversarial scenario, of the trainable parameters' otherwise). `eager` rows run uncompiled.
Figures: the peak CPU tensor bytes of a step above the bytes alive before it (libmemsave's
counting allocator, the same for both sides), the bytes alive between forward and backward,
the median step time, and their ratios. `stack` is the frozen conv(3x3, 32)-BN(eval)-ReLU x 8
network of issue 13 (adversarial only); torchvision models as in bench/torchvision_case.py.
mkldnn is off unless --mkldnn (Note [Compiled autograd] in hooks/core/node.h says why).
Writes a markdown table on stdout."""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
import memsave  # noqa: E402
import torchvision  # noqa: E402
from torchvision_case import digest, trainable  # noqa: E402


def stack():
    layers, c = [], 3
    for i in range(8):
        layers += [nn.Conv2d(c, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU()]
        c = 32
        if i in (1, 3, 5):
            layers.append(nn.MaxPool2d(2))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)]
    net = nn.Sequential(*layers)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    return net


class Backend:
    """One side's backend: a distinct object, so dynamo compiles each side separately."""

    def __init__(self, name):
        self.name, self.calls = name, 0

    def __call__(self, gm, inputs):
        self.calls += 1
        if self.name == "inductor":
            from torch._inductor.compile_fx import compile_fx
            return compile_fx(gm, inputs)
        from torch._dynamo.backends.debugging import aot_eager
        return aot_eager(gm, inputs)


class Case:
    def __init__(self, model, scenario, batch, size, backend):
        torch.manual_seed(0)
        self.model = stack() if model == "stack" else getattr(torchvision.models, model)(weights=None, num_classes=10)
        self.x = torch.randn(batch, 3, size, size)
        self.y = torch.randint(0, 10, (batch,))
        self.scenario = scenario
        if scenario == "adversarial":
            self.model.eval().requires_grad_(False)
            self.params = []
        else:
            self.model.train()
            self.params = trainable(self.model, scenario)
            keep = {id(p) for p in self.params}
            for p in self.model.parameters():
                p.requires_grad_(id(p) in keep)
        self.buffers = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.backends = {side: Backend(backend) for side in (False, True)}
        self.fn = {side: self.model if backend == "eager" else torch.compile(self.model, backend=self.backends[side])
                   for side in (False, True)}

    def step(self, ours):
        """One step; returns (peak bytes above the start, bytes alive after the forward,
        seconds, digest of the gradients, our nodes built)."""
        with torch.no_grad():
            for k, v in self.model.state_dict().items():
                v.copy_(self.buffers[k])
        for p in self.params:
            p.grad = None
        torch.manual_seed(1)
        x = self.x.clone().requires_grad_(self.scenario == "adversarial")
        built = sum(memsave.stats().substituted.values())
        base = memsave.stats().cpu_current_bytes
        memsave.reset_peak()
        t0 = time.perf_counter()
        with (memsave.disabled() if not ours else _Nothing()):
            loss = nn.functional.cross_entropy(self.fn[ours](x), self.y)
            alive = memsave.stats().cpu_current_bytes - base
            loss.backward()
        seconds = time.perf_counter() - t0
        peak = memsave.peak() - base
        grads = [x.grad] if self.scenario == "adversarial" else [p.grad for p in self.params]
        return peak, alive, seconds, digest(grads), sum(memsave.stats().substituted.values()) - built


class _Nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["stack", "resnet18", "mobilenet_v2"])
    ap.add_argument("--scenarios", nargs="+", default=["adversarial", "surgical"])
    ap.add_argument("--backends", nargs="+", default=["eager", "aot_eager", "inductor"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mkldnn", action="store_true")
    a = ap.parse_args()
    if not memsave.active():
        sys.exit("run under LD_PRELOAD=libmemsave.so (memsave.active() is False)")
    torch.backends.mkldnn.enabled = a.mkldnn
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {a.batch}, {a.size}x{a.size}, "
          f"{a.rounds} rounds, mkldnn {'on' if a.mkldnn else 'off'}; peak = CPU tensor bytes of one step above "
          "those alive before it; alive = after the forward")
    print()
    print("| model | scenario | mode | stock peak MB | libmemsave MB | ratio | alive MB stock / ours | time ratio "
          "| compile s stock / ours | our nodes traced | gradients |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    failed = False
    fallbacks0 = sum(memsave.stats().fallbacks.values())
    for model in a.models:
        for scenario in a.scenarios:
            if model == "stack" and scenario != "adversarial":
                continue
            for backend in a.backends:
                torch._dynamo.reset()
                case = Case(model, scenario, a.batch, a.size, backend)
                warm = {side: case.step(side) for side in (False, True)}
                runs = {False: [], True: []}
                for _ in range(a.rounds):
                    for side in (False, True):
                        runs[side].append(case.step(side))
                digests = {side: {r[3] for r in runs[side]} | {warm[side][3]} for side in runs}
                equal = len(digests[False]) == 1 and digests[False] == digests[True]
                compiled = backend == "eager" or all(b.calls for b in case.backends.values())
                failed |= not equal or not compiled
                med = {side: [statistics.median(r[i] for r in runs[side]) for i in range(3)] for side in runs}
                print(f"| {model} | {scenario} | {backend} | {med[False][0] / 1e6:.1f} | {med[True][0] / 1e6:.1f} | "
                      f"{med[True][0] / med[False][0]:.3f} | {med[False][1] / 1e6:.1f} / {med[True][1] / 1e6:.1f} | "
                      f"{med[True][2] / med[False][2]:.2f} | "
                      f"{'-' if backend == 'eager' else f'{warm[False][2]:.1f} / {warm[True][2]:.1f}'} | "
                      f"{warm[True][4]} | {'bitwise equal' if equal else 'DIFFER ' + str(digests)}"
                      f"{'' if compiled else ' (a side did not compile)'} |", flush=True)
    s = memsave.stats()
    print()
    print(f"fallbacks while these ran: {sum(s.fallbacks.values()) - fallbacks0} "
          "(hardtanh on the CPU and dropout under tracing: docs/compile.md)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

# SPDX-License-Identifier: MIT
"""Compiled autograd on torchvision models, stock against libmemsave in one process (2.6).

    LD_PRELOAD=build/libmemsave.so MEMSAVE_OPS=all /usr/bin/python3 bench/compiled_autograd.py \
        [--models resnet18 mobilenet_v2] [--scenarios adversarial surgical] \
        [--backends aot_eager inductor] [--batch 8] [--size 96] [--rounds 3]

Each step runs the forward eagerly and the backward under compiled autograd
(torch._dynamo.compiled_autograd, the graph compiled by torch.compile with the backend).
Stock's steps run with libmemsave switched off (memsave.disabled(): stock's nodes), ours with
it on; both sides start from the same weights and input and repeat the same step (no update),
so their gradients must be equal bit for bit (SHA-256 of the input's gradient in the
adversarial scenario, of the trainable parameters' otherwise). One warm-up step per side
compiles (its time is reported apart), then `--rounds` A/B rounds alternate the sides.
Figures: the peak CPU tensor bytes of a step above the bytes alive before it (libmemsave's
counting allocator, the same for both sides), the median step time, and their ratios.
Scenarios as in bench/torchvision_case.py; mkldnn is off (Note [Compiled autograd] in
hooks/core/node.h says why). Writes a markdown table on stdout."""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
import memsave  # noqa: E402
import torchvision  # noqa: E402
from torchvision_case import digest, trainable  # noqa: E402

try:
    from torch._dynamo import compiled_autograd
except ImportError:
    sys.exit("this torch has no compiled autograd")
enable = getattr(compiled_autograd, "enable", None) or getattr(compiled_autograd, "_enable")


class Case:
    """One model and scenario: the same weights and input for both sides."""

    def __init__(self, model, scenario, batch, size):
        torch.manual_seed(0)
        self.model = getattr(torchvision.models, model)(weights=None, num_classes=10)
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
        # Batch norm in training updates its running statistics: saved and restored around
        # every step, so that every step (either side) starts from the same state.
        self.buffers = {k: v.clone() for k, v in self.model.state_dict().items()}

    def step(self, ours, backend):
        """One forward and compiled backward; returns (peak bytes above the start, seconds,
        digest of the gradients)."""
        with torch.no_grad():
            for k, v in self.model.state_dict().items():
                v.copy_(self.buffers[k])
        for p in self.params:
            p.grad = None
        torch.manual_seed(1)  # the same dropout noise every step, either side (mobilenet_v2's head)
        x = self.x.clone().requires_grad_(self.scenario == "adversarial")
        base = memsave.stats().cpu_current_bytes
        memsave.reset_peak()
        t0 = time.perf_counter()
        ctx = memsave.disabled() if not ours else _Nothing()
        with ctx:
            loss = torch.nn.functional.cross_entropy(self.model(x), self.y)
        with enable(lambda gm: torch.compile(gm, backend=backend, fullgraph=True)):
            loss.backward()
        seconds = time.perf_counter() - t0
        peak = memsave.peak() - base
        grads = [x.grad] if self.scenario == "adversarial" else [p.grad for p in self.params]
        return peak, seconds, digest(grads)


class _Nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"])
    ap.add_argument("--scenarios", nargs="+", default=["adversarial", "surgical"])
    ap.add_argument("--backends", nargs="+", default=["aot_eager", "inductor"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    if not memsave.active():
        sys.exit("run under LD_PRELOAD=libmemsave.so (memsave.active() is False)")
    torch.backends.mkldnn.enabled = False
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {a.batch}, {a.size}x{a.size}, "
          f"{a.rounds} rounds; peak = CPU tensor bytes of one step above those alive before it")
    print()
    print("| model | scenario | backend | stock peak MB | libmemsave MB | ratio | time ratio | compile s stock / ours "
          "| gradients |")
    print("|---|---|---|---:|---:|---:|---:|---:|---|")
    failed = False
    for model in a.models:
        for scenario in a.scenarios:
            for backend in a.backends:
                torch._dynamo.reset()  # compiled autograd's cache is keyed on the graph, not the backend
                case = Case(model, scenario, a.batch, a.size)
                warm = {side: case.step(side, backend) for side in (False, True)}
                runs = {False: [], True: []}
                for _ in range(a.rounds):
                    for side in (False, True):
                        runs[side].append(case.step(side, backend))
                digests = {side: {r[2] for r in runs[side]} | {warm[side][2]} for side in runs}
                equal = len(digests[False]) == 1 and digests[False] == digests[True]
                failed |= not equal
                peak = {side: statistics.median(r[0] for r in runs[side]) for side in runs}
                secs = {side: statistics.median(r[1] for r in runs[side]) for side in runs}
                print(f"| {model} | {scenario} | {backend} | {peak[False] / 1e6:.1f} | {peak[True] / 1e6:.1f} | "
                      f"{peak[True] / peak[False]:.3f} | {secs[True] / secs[False]:.2f} | "
                      f"{warm[False][1]:.1f} / {warm[True][1]:.1f} | "
                      f"{'bitwise equal' if equal else 'DIFFER ' + str(digests)} |", flush=True)
    s = memsave.stats()
    print()
    print(f"our nodes built: {sum(s.substituted.values())}; fallbacks: {sum(s.fallbacks.values())}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

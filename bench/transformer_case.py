# SPDX-License-Identifier: MIT
"""One benchmark case on a transformer-style model, for `memsave ab` (issue 24's rows): run
unmodified under libmemsave's preload.

    transformer_case.py MODEL SCENARIO [--batch B] [--seq T] [--steps K] [--dropout P]

Models:
  llama-mlp    four pre-norm blocks of LLaMA's MLP, x + down(silu(gate(norm(x))) * up(norm(x))),
               d_model 256, hidden 688, no bias, RMS norm written out (mean of squares, rsqrt);
  gelu-encoder nn.TransformerEncoderLayer(d_model 256, 4 heads, ff 1024, activation "gelu",
               batch_first), 4 layers, dropout 0.1 by default.
Scenarios: input (frozen model, the input's gradient: adversarial-style), lora (frozen base,
rank-8 adapters B(A(x)) added to every linear of the MLP), full (every parameter trainable).
Random weights, a fixed seed, synthetic data; prints each step's loss with 17 digits and a
SHA-256 of the gradients' bytes (bench/torchvision_case.py's digest), so that `memsave ab
--check-output` compares the bits, and the steps' peak on stderr."""
import argparse
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torchvision_case import StepsPeak, digest  # noqa: E402

MODELS = ("llama-mlp", "gelu-encoder")
SCENARIOS = ("input", "lora", "full")


class LoRALinear(nn.Module):
    """A frozen linear plus a trainable rank-r adapter: base(x) + b(a(x))."""

    def __init__(self, base, rank=8):
        super().__init__()
        self.base = base
        self.a = nn.Linear(base.in_features, rank, bias=False)
        self.b = nn.Linear(rank, base.out_features, bias=False)
        nn.init.normal_(self.b.weight, std=0.02)

    def forward(self, x):
        return self.base(x) + self.b(self.a(x))


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class LlamaMLPBlock(nn.Module):
    def __init__(self, d=256, hidden=688):
        super().__init__()
        self.norm = RMSNorm(d)
        self.gate = nn.Linear(d, hidden, bias=False)
        self.up = nn.Linear(d, hidden, bias=False)
        self.down = nn.Linear(hidden, d, bias=False)

    def forward(self, x):
        h = self.norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


def build(name, dropout):
    if name == "llama-mlp":
        return nn.Sequential(*[LlamaMLPBlock() for _ in range(4)])
    layer = nn.TransformerEncoderLayer(256, 4, 1024, dropout, activation="gelu", batch_first=True)
    return nn.TransformerEncoder(layer, 4, enable_nested_tensor=False)


def add_adapters(model):
    """Replaces the MLP's linears (LLaMA's gate, up, down; the encoder's linear1, linear2)."""
    for m in list(model.modules()):
        for n in ("gate", "up", "down", "linear1", "linear2"):
            child = getattr(m, n, None)
            if isinstance(child, nn.Linear):
                setattr(m, n, LoRALinear(child))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", choices=MODELS)
    ap.add_argument("scenario", choices=SCENARIOS)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=96)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--dropout", type=float, default=0.1)
    a = ap.parse_args()

    torch.manual_seed(0)
    model = build(a.model, a.dropout)
    for p in model.parameters():
        p.requires_grad_(a.scenario == "full")
    if a.scenario == "lora":
        add_adapters(model)  # the adapters' parameters are new, trainable
    model.train()
    x = torch.randn(a.batch, a.seq, 256)
    target = torch.randn(a.batch, a.seq, 256)
    params = [p for p in model.parameters() if p.requires_grad]
    if a.scenario == "input":
        x.requires_grad_(True)
        params = [x]
    steps_peak = StepsPeak()
    steps_peak.before_first_step()
    for step in range(a.steps):
        torch.manual_seed(100 + step)  # the same dropout noise on both sides
        for p in params:
            p.grad = None
        loss = F.mse_loss(model(x), target)
        loss.backward()
        gdig = digest([p.grad for p in params if p.grad is not None])
        with torch.no_grad():
            for p in params:
                if p is not x:
                    p -= 0.01 * p.grad
        print(f"step {step} loss {loss.item():.17g} grad_sha256 {gdig}")
    steps_peak.print()


if __name__ == "__main__":
    main()

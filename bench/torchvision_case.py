# SPDX-License-Identifier: MIT
"""One benchmark case on a torchvision model, for bench/python.sh: run unmodified under
libmemsave's preload (`memsave ab ... -- /usr/bin/python3 bench/torchvision_case.py ...`).

    torchvision_case.py MODEL SCENARIO [--batch B] [--size S] [--steps K] [--device D]

Random weights (weights=None), a fixed seed, synthetic data; prints the loss of every step
with 17 significant digits and a SHA-256 of the gradients' bytes (the trainable parameters',
or the input's), so that `memsave ab --check-output` compares the bits.
Scenarios: full, head, surgical (first convolution and its batch norm trainable), bitfit
(biases only), norm (normalisation parameters only), adversarial (eval mode, frozen model,
projected-gradient steps on the input). bench/gpu_ab.py imports the models, scenarios and
digests from here for its in-process A/B on CUDA (scripts/gpu-check.sh)."""
import argparse
import ctypes
import hashlib
import sys

import torch
import torchvision

MODELS = ("resnet18", "resnet50", "resnet101", "vgg11", "vgg16", "mobilenet_v2", "efficientnet_b0")
SCENARIOS = ("full", "head", "surgical", "bitfit", "norm", "adversarial")
NORM_TYPES = (torch.nn.BatchNorm2d, torch.nn.LayerNorm, torch.nn.GroupNorm)


def digest(tensors):
    """SHA-256 of the tensors' bytes: equal digests mean bitwise-equal gradients."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class MemsaveStats(ctypes.Structure):
    """struct memsave_stats of shim/memsave.h (MEMSAVE_FAMILY_SLOTS = 8)."""
    _fields_ = [("size", ctypes.c_uint64), ("substituted", ctypes.c_uint64 * 8),
                ("fallbacks", ctypes.c_uint64 * 8), ("passthrough", ctypes.c_uint64 * 8),
                ("bytes_kept", ctypes.c_uint64), ("bytes_stock", ctypes.c_uint64),
                ("cpu_current_bytes", ctypes.c_uint64), ("cpu_peak_bytes", ctypes.c_uint64),
                ("cpu_peak_total_bytes", ctypes.c_uint64)]


class StepsPeak:
    """The CPU tensor bytes alive before the first step and the steps' peak above them, asked
    of libmemsave's C ABI when it is preloaded (also with MEMSAVE=0), as memsave-demo does;
    printed on stderr so that `memsave ab --check-output` compares the losses only."""

    def __init__(self):
        process = ctypes.CDLL(None)
        self.get_stats = getattr(process, "memsave_get_stats", None)
        self.reset_peak = getattr(process, "memsave_reset_peak", None)
        self.base = None

    def stats(self):
        st = MemsaveStats()
        if self.get_stats is None or self.get_stats(ctypes.byref(st), ctypes.sizeof(st)) != 0:
            return None
        return st

    def before_first_step(self):
        st = self.stats()
        if st is not None and self.reset_peak is not None:
            self.reset_peak()
            self.base = st.cpu_current_bytes

    def print(self):
        st = self.stats()
        if st is not None and self.base is not None:
            print(f"torchvision_case: CPU tensor bytes before the first step {self.base}, "
                  f"steps peak above them {st.cpu_peak_bytes - self.base}", file=sys.stderr)


def first_block(model):
    """The first convolution and the batch norm right after it (the stem)."""
    params, conv_seen = [], False
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d) and not conv_seen:
            params += list(m.parameters())
            conv_seen = True
        elif isinstance(m, torch.nn.BatchNorm2d) and conv_seen:
            params += list(m.parameters())
            break
    return params


def head(model):
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    return list(last.parameters())


def trainable(model, scenario):
    if scenario == "full":
        return list(model.parameters())
    if scenario == "head":
        return head(model)
    if scenario == "surgical":
        return first_block(model)
    if scenario == "bitfit":
        return [p for n, p in model.named_parameters() if n.endswith("bias")]
    if scenario == "norm":
        ps = [p for m in model.modules() if isinstance(m, NORM_TYPES) for p in m.parameters()]
        if not ps:
            sys.exit("norm: the model has no normalisation layers")
        return ps
    raise ValueError(scenario)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", choices=MODELS)
    ap.add_argument("scenario", choices=SCENARIOS)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()

    torch.manual_seed(0)
    model = getattr(torchvision.models, a.model)(weights=None, num_classes=10).to(a.device)
    x = torch.randn(a.batch, 3, a.size, a.size).to(a.device)
    y = torch.randint(0, 10, (a.batch,)).to(a.device)
    loss_fn = torch.nn.CrossEntropyLoss()

    steps_peak = StepsPeak()
    if a.scenario == "adversarial":
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        eps, alpha = 8 / 255, 2 / 255
        delta = torch.zeros_like(x, requires_grad=True)
        steps_peak.before_first_step()
        for step in range(a.steps):
            loss = loss_fn(model(x + delta), y)
            loss.backward()
            gdig = digest([delta.grad])
            with torch.no_grad():
                delta += alpha * delta.grad.sign()
                delta.clamp_(-eps, eps)
                delta.grad = None
            print(f"step {step} loss {loss.item():.17g} input_grad_sha256 {gdig}")
        steps_peak.print()
        return

    model.train()
    params = trainable(model, a.scenario)
    keep = {id(p) for p in params}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    steps_peak.before_first_step()
    for step in range(a.steps):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        gdig = digest([p.grad for p in params if p.grad is not None])
        opt.step()
        print(f"step {step} loss {loss.item():.17g} grad_sha256 {gdig}")
    steps_peak.print()


if __name__ == "__main__":
    main()

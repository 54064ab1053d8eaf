# SPDX-License-Identifier: MIT
# gpu_resnet50_ab.py: the A/B of torchvision's resnet50 on a GPU, in the paper's cases (which
# tensors require grad), run under LD_PRELOAD=libmemsave.so by scripts/gpu-check.sh. For each
# case one training step runs with libmemsave switched off (A, stock) and on (B), in one
# process through the C ABI; the figure is the CUDA caching allocator's peak of allocated
# bytes during the step, above what was allocated before it. Losses and gradients of A and B
# must be bitwise identical.
import ctypes
import sys
import time

import torch
import torch.nn.functional as F
import torchvision

BATCH = int(sys.argv[1]) if len(sys.argv) > 1 else 64

abi = ctypes.CDLL(None)
if not hasattr(abi, "memsave_is_active") or abi.memsave_is_active() != 1:
    sys.exit("gpu_resnet50_ab: libmemsave is not active in this process (run it under LD_PRELOAD)")
# Stock may pick nondeterministic cuDNN algorithms, whose results differ between two runs of
# stock itself; deterministic ones make A and B comparable, for both arms alike.
torch.backends.cudnn.deterministic = True
torch.backends.cudnn.benchmark = False

dev = torch.device("cuda")
torch.manual_seed(0)
model = torchvision.models.resnet50().to(dev).train()  # random weights: no download
x0 = torch.randn(BATCH, 3, 224, 224, device=dev)
y0 = torch.randint(0, 1000, (BATCH,), device=dev)
buffers = {k: v.clone() for k, v in model.named_buffers()}


def trainable(case, name, module):
    if case == "all":
        return True
    if case == "input":
        return False
    if case == "conv":
        return isinstance(module, torch.nn.Conv2d)
    if case == "norm":
        return isinstance(module, torch.nn.BatchNorm2d)
    if case == "surgical_first":
        return name.startswith(("conv1", "bn1", "layer1."))
    if case == "surgical_last":
        return name.startswith(("layer4.", "fc"))
    raise ValueError(case)


def step(case, on):
    for name, module in model.named_modules():
        for p in module.parameters(recurse=False):
            p.requires_grad_(trainable(case, name, module))
            p.grad = None
    with torch.no_grad():
        for k, v in model.named_buffers():
            v.copy_(buffers[k])  # the same running statistics for both arms
    x = x0.clone().requires_grad_(case == "input")
    prev = abi.memsave_set_enabled(1 if on else 0)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    t = time.time()
    loss = F.cross_entropy(model(x), y0)
    loss.backward()
    torch.cuda.synchronize()
    seconds = time.time() - t
    peak = torch.cuda.max_memory_allocated() - base
    abi.memsave_set_enabled(prev)
    grads = [p.grad for p in model.parameters() if p.grad is not None] + ([x.grad] if case == "input" else [])
    return loss.detach(), grads, peak, seconds


def bits(t):
    return t.detach().contiguous().view({8: torch.int64, 4: torch.int32, 2: torch.int16}[t.element_size()])


def identical(a, b):
    return a.shape == b.shape and a.stride() == b.stride() and torch.equal(bits(a), bits(b))


print("torch %s, torchvision %s, CUDA %s, cuDNN %s, %s, batch %d" % (
    torch.__version__, torchvision.__version__, torch.version.cuda, torch.backends.cudnn.version(),
    torch.cuda.get_device_name(), BATCH))
step("all", False)  # warm-up: cuDNN handles and workspaces
print("%-15s %14s %14s %7s %10s  %s" % ("case", "stock MiB", "memsave MiB", "ratio", "s (A/B)", "losses and gradients"))
failures = 0
for case in ("all", "input", "conv", "norm", "surgical_first", "surgical_last"):
    la, ga, pa, sa = step(case, False)
    lb, gb, pb, sb = step(case, True)
    same = identical(la, lb) and len(ga) == len(gb) and all(identical(a, b) for a, b in zip(ga, gb))
    failures += not same
    print("%-15s %14.1f %14.1f %7.3f %4.2f/%4.2f  %s" % (case, pa / 2**20, pb / 2**20, pb / pa, sa, sb,
                                                        "identical" if same else "DIFFERENT"), flush=True)
sys.exit(1 if failures else 0)

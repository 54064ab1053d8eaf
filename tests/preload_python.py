# SPDX-License-Identifier: MIT
# Run under LD_PRELOAD=libmemsave.so by test_preload.sh. torch is imported after start-up,
# so libmemsave activates through its dlopen interposition. Checks the substituted node and
# bitwise-equal gradients against stock (switched off through the C ABI with ctypes).
import ctypes
import sys

import torch
import torch.nn.functional as F

if int(torch.__version__.split(".")[0]) >= 2:
    # Debian 13's LibTorch 2.6: mkldnn's fp32 conv backward-data is wrong and varies from run
    # to run in stock itself on some CPUs (issue 7); off, stock is deterministic.
    torch.backends.mkldnn.enabled = False

abi = ctypes.CDLL(None)
assert abi.memsave_is_active() == 1, "hooks not active after import torch"


def step():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    w = torch.randn(8, 3, 3, 3)
    b = torch.randn(8, requires_grad=True)
    y = F.conv2d(x, w, b, padding=1)
    y.pow(2).sum().backward()
    return y, x.grad, b.grad


y, gx, gb = step()
name = y.grad_fn.name()
assert name == "MemsaveConvolutionBackward", name
prev = abi.memsave_set_enabled(0)
ys, gxs, gbs = step()
abi.memsave_set_enabled(prev)
assert ys.grad_fn.name() == "ConvolutionBackward0", ys.grad_fn.name()
for a, b in ((y, ys), (gx, gxs), (gb, gbs)):
    assert a.stride() == b.stride()
    assert torch.equal(a.detach().view(torch.int32), b.detach().view(torch.int32)), "gradients differ"
print("python: ok", file=sys.stderr)

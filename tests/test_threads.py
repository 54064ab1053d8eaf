# SPDX-License-Identifier: MIT
# test_threads.py (run preloaded, MEMSAVE_OPS=all): 4 Python threads train at once, each its
# own small conv, batch norm, ReLU, max pool, dropout, linear network with its own frozen
# parts (issue 15). Every thread's losses and gradients must equal, bit for bit, those of
# the same training run beforehand with substitution off on one thread, and the counters
# must show our nodes built in every family the networks use.
import ctypes
import sys
import threading

import torch
import torch.nn as nn
import torch.nn.functional as F

THREADS, STEPS = 4, 8


class Stats(ctypes.Structure):  # the prefix of struct memsave_stats (shim/memsave.h)
    _fields_ = [("size", ctypes.c_uint64), ("substituted", ctypes.c_uint64 * 8),
                ("fallbacks", ctypes.c_uint64 * 8), ("passthrough", ctypes.c_uint64 * 8)]


abi = ctypes.CDLL(None)
FAMILIES = ["conv", "linear", "batchnorm", "relu", "pool", "dropout"]


def substituted():
    s = Stats()
    assert abi.memsave_get_stats(ctypes.byref(s), ctypes.sizeof(s)) == 0
    return list(s.substituted)


# Odd sizes (3 x 6 x 7 x 7 activations), so that the 1-bit masks end in a partial byte.
class Net(nn.Module):
    def __init__(self, t):
        super().__init__()
        torch.manual_seed(100 + t)
        self.t = t
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.head = nn.Linear(6 * 3 * 3, 10)
        self.conv.weight.requires_grad_(t % 2 == 1)  # frozen in half of the threads
        self.bn.weight.requires_grad_(t >= 2)  # BitFit (bias only) in the others
        if t % 2 == 1:
            self.bn.eval()  # (training batch norm whose input needs a gradient is stock's)

    def forward(self, x, rng_lock, seed):
        h = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)
        with rng_lock:  # the process's generator: seeded and drawn under one lock
            torch.manual_seed(seed)
            h = F.dropout(h, 0.25, self.training)
        return self.head(h.flatten(1))


def train(t, rng_lock, out):
    with rng_lock:  # the initial weights come from the process's generator too
        net = Net(t)
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(t)
    losses, grads = [], []
    for s in range(STEPS):
        x = torch.randn(3, 3, 7, 7, generator=gen)
        y = torch.randint(0, 10, (3,), generator=gen)
        opt.zero_grad()
        loss = F.cross_entropy(net(x, rng_lock, 1000 * t + s), y)
        loss.backward()
        losses.append(loss.detach().clone())
        grads.append([p.grad.clone() for p in net.parameters() if p.requires_grad])
        opt.step()
    out[t] = (losses, grads)


def bits(t):
    return t.detach().contiguous().view(torch.int32 if t.element_size() == 4 else torch.int64)


def same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride() and torch.equal(bits(a), bits(b))


def main():
    torch.set_num_threads(1)
    if int(torch.__version__.split(".")[0]) >= 2:
        torch.backends.mkldnn.enabled = False  # Note [mkldnn off on 2.x] (tests/testing.h)
    if not abi.memsave_is_active():
        print("FAIL: libmemsave is not active (run under LD_PRELOAD)")
        return 1
    rng_lock = threading.Lock()
    stock = {}
    abi.memsave_set_enabled(0)
    for t in range(THREADS):
        train(t, rng_lock, stock)
    abi.memsave_set_enabled(1)

    before = substituted()
    ours = {}
    threads = [threading.Thread(target=train, args=(t, rng_lock, ours)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    after = substituted()
    failures = 0
    for t in range(THREADS):
        if t not in ours:
            print("FAIL thread %d: did not finish" % t)
            failures += 1
            continue
        ok = all(same(a, b) for a, b in zip(stock[t][0], ours[t][0])) and all(
            same(a, b) for ga, gb in zip(stock[t][1], ours[t][1]) for a, b in zip(ga, gb))
        print("%s thread %d: %d steps, losses and gradients bitwise equal to stock" % ("ok  " if ok else "FAIL", t,
                                                                                    STEPS))
        failures += not ok
    for f in ("conv", "batchnorm", "relu", "pool", "dropout", "linear"):
        n = after[FAMILIES.index(f)] - before[FAMILIES.index(f)]
        print("%s %s: %d of our nodes" % ("ok  " if n > 0 else "FAIL", f, n))
        failures += n == 0
    print("all thread checks passed" if not failures else "%d thread checks failed" % failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

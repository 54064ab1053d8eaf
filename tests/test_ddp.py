# SPDX-License-Identifier: MIT
# test_ddp.py LIBMEMSAVE: a 2-process DistributedDataParallel job (gloo, CPU) run three
# times: without the preload, under the preload with MEMSAVE=0 (stock, measured by the same
# counting allocator) and under the preload. Every rank must see bitwise identical losses
# and gradients in the three runs, the same gradients as the other rank, a lower CPU tensor
# peak with libmemsave, and every run must end within its timeout.
#
# The model is a frozen convolution backbone with trainable batch-norm parameters and a
# trainable head. Its blocks are conv -> BN -> SiLU: SiLU keeps its input (the BN output),
# not its output, so each conv's input is kept by nobody but stock's convolution node, and
# substituting convolutions alone saves one activation per block. (After ReLU, stock's
# ReluBackward0 keeps the output, which is the next conv's input, so a ReLU network saves
# nothing from convolutions alone.)
#
# Launch: torchrun on torch >= 2. torch 1.13's torchrun fails at start-up under Python 3.11
# (Debian 12), so there the two ranks are started directly with the env:// variables.
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile

BLOCKS, CHANNELS, BATCH, SIZE, STEPS = 6, 32, 8, 32, 3
RUN_TIMEOUT_S = 240  # per run of two ranks; a hang fails the test instead of blocking ctest



def preload(lib):
    """LD_PRELOAD for lib: a sanitized build's ASan runtime (MEMSAVE_TEST_PRELOAD, set by
    tests/CMakeLists.txt) must come first."""
    return ":".join(filter(None, [os.environ.get("MEMSAVE_TEST_PRELOAD"), lib]))

def worker(outdir):
    import ctypes
    import datetime

    import torch
    import torch.distributed as dist
    import torch.nn as nn

    torch.set_num_threads(1)
    if int(torch.__version__.split(".")[0]) >= 2:
        # Debian 13's LibTorch 2.6: mkldnn's fp32 conv backward-data gives wrong, varying
        # input gradients in stock itself on some CPUs (issue 7). Off, stock is deterministic.
        torch.backends.mkldnn.enabled = False
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo", init_method="env://", timeout=datetime.timedelta(seconds=120))

    torch.manual_seed(0)  # the same initial model on every rank
    layers, cin = [], 3
    for _ in range(BLOCKS):
        layers += [nn.Conv2d(cin, CHANNELS, 3, padding=1, bias=False), nn.BatchNorm2d(CHANNELS), nn.SiLU()]
        cin = CHANNELS
    backbone = nn.Sequential(*layers)
    for m in backbone.modules():
        if isinstance(m, nn.Conv2d):
            m.weight.requires_grad_(False)
    model = nn.Sequential(backbone, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(CHANNELS, 10))
    ddp = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD([p for p in ddp.parameters() if p.requires_grad], lr=0.1, momentum=0.9)

    abi = ctypes.CDLL(None)
    preloaded = hasattr(abi, "memsave_reset_peak")
    if preloaded:
        abi.memsave_reset_peak()  # the report's peak then covers the training steps
    gen = torch.Generator().manual_seed(100 + rank)  # each rank its own shard
    losses, grads = [], []
    for _ in range(STEPS):
        x = torch.randn(BATCH, 3, SIZE, SIZE, generator=gen)
        y = torch.randint(0, 10, (BATCH,), generator=gen)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(ddp(x), y)
        loss.backward()
        losses.append(loss.detach().clone())
        grads.append([p.grad.clone() for p in ddp.parameters() if p.requires_grad])
        opt.step()
    # The node a frozen backbone convolution gets in this process.
    probe = torch.randn(1, CHANNELS, 4, 4, requires_grad=True)
    node = nn.functional.conv2d(probe, backbone[3].weight).grad_fn.name()
    dist.barrier()
    dist.destroy_process_group()
    torch.save({"pid": os.getpid(), "losses": losses, "grads": grads, "node": node, "preloaded": preloaded},
               os.path.join(outdir, "rank%d.pt" % rank))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tcpstore_has_libuv():
    import datetime

    from torch.distributed import TCPStore

    try:
        TCPStore("127.0.0.1", 0, 1, True, datetime.timedelta(seconds=10), use_libuv=True)
        return True
    except RuntimeError as e:
        if "libuv" in str(e):
            return False
        raise


def launch(name, lib, memsave, torch_major, tmp, worker_args=()):
    """Runs `this script --worker OUTDIR WORKER_ARGS` on 2 ranks; the caller's script when
    another test (test_fsdp.py) imports this one."""
    outdir = os.path.join(tmp, name)
    os.mkdir(outdir)
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE="2",
               GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1", MEMSAVE_OPS="all",
               USE_LIBUV="0")  # the TCPStore of env:// without libuv (see launch on torch >= 2)
    env.pop("LD_PRELOAD", None)
    if memsave is not None:
        env.update(LD_PRELOAD=preload(lib), MEMSAVE=memsave, MEMSAVE_REPORT=os.path.join(outdir, "report-%p.json"))
    me = [sys.executable, os.path.abspath(sys.argv[0]), "--worker", outdir] + list(worker_args)
    if torch_major >= 2:
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
                    "--local-addr=127.0.0.1"]
        if tcpstore_has_libuv():
            torchrun += ["--master_addr=127.0.0.1", "--master_port=" + env["MASTER_PORT"]]
        else:
            # Debian's torch 2.6 is built without libuv, and torchrun's TCPStore servers ask
            # for it (pytorch/pytorch#148283). A file rendezvous and an unshared store avoid
            # them; the ranks then make their own TCPStore, which honours USE_LIBUV=0.
            torchrun += ["--rdzv-backend=c10d", "--rdzv-conf=store_type=file",
                         "--rdzv-endpoint=" + os.path.join(outdir, "rendezvous")]
            env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
        cmds, envs = [torchrun + me[1:]], [env]
    else:
        cmds = [me, me]
        envs = [dict(env, RANK=str(r), LOCAL_RANK=str(r)) for r in range(2)]
    procs = [subprocess.Popen(c, env=e, start_new_session=True) for c, e in zip(cmds, envs)]
    ok = True
    for p in procs:
        try:
            ok = p.wait(timeout=RUN_TIMEOUT_S) == 0 and ok
        except subprocess.TimeoutExpired:
            print("FAIL %s: no exit within %d s (hang); killed" % (name, RUN_TIMEOUT_S))
            for q in procs:
                os.killpg(q.pid, signal.SIGKILL)
            return None
    if not ok:
        print("FAIL %s: a process exited with an error" % name)
        return None
    return outdir


def load_rank(outdir, rank):
    import torch

    r = torch.load(os.path.join(outdir, "rank%d.pt" % rank))
    report = os.path.join(outdir, "report-%d.json" % r["pid"])
    r["report"] = json.load(open(report)) if os.path.exists(report) else None
    return r


def bits(t):
    import torch

    return t.detach().contiguous().view(torch.int32 if t.element_size() == 4 else torch.int64)


def same(a, b):
    import torch

    return a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride() and torch.equal(bits(a), bits(b))


def main(lib):
    import torch

    torch_major = int(torch.__version__.split(".")[0])
    failures = []

    def check(cond, what):
        print("%s %s" % ("ok  " if cond else "FAIL", what))
        if not cond:
            failures.append(what)

    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for name, memsave in (("plain", None), ("stock", "0"), ("memsave", "1")):
            outdir = launch(name, lib, memsave, torch_major, tmp)
            check(outdir is not None, "%s: both ranks finished" % name)
            if outdir is None:
                return 1
            runs[name] = [load_rank(outdir, r) for r in range(2)]

        act = BATCH * CHANNELS * SIZE * SIZE * 4
        for rank in range(2):
            plain, stock, ours = (runs[n][rank] for n in ("plain", "stock", "memsave"))
            check(plain["node"] == "ConvolutionBackward0" and stock["node"] == "ConvolutionBackward0",
                  "rank %d: stock nodes without libmemsave and with MEMSAVE=0" % rank)
            check(ours["node"] == "MemsaveConvolutionBackward", "rank %d: our node under the preload (%s)"
                  % (rank, ours["node"]))
            for name, other in (("stock", stock), ("memsave", ours)):
                check(all(same(a, b) for a, b in zip(plain["losses"], other["losses"])),
                      "rank %d: %s losses bitwise equal to the run without preload" % (rank, name))
                check(all(same(a, b) for ga, gb in zip(plain["grads"], other["grads"]) for a, b in zip(ga, gb)),
                      "rank %d: %s gradients bitwise equal to the run without preload" % (rank, name))
            rs, ro = stock["report"], ours["report"]
            check(rs is not None and ro is not None, "rank %d: reports written" % rank)
            if rs is None or ro is None:
                continue
            check(ro["families"]["conv"]["substituted"] >= STEPS * (BLOCKS - 1) and
                  rs["families"]["conv"]["substituted"] == 0,
                  "rank %d: substituted convolutions: memsave %d, MEMSAVE=0 %d" %
                  (rank, ro["families"]["conv"]["substituted"], rs["families"]["conv"]["substituted"]))
            ps, po = rs["cpu_peak_bytes"], ro["cpu_peak_bytes"]
            # Stock keeps the input of each of BLOCKS-1 convolutions that we do not keep.
            check(ps - po >= (BLOCKS - 1) * act // 2,
                  "rank %d: peak CPU tensor bytes stock %d, libmemsave %d (ratio %.3f, one activation %d)"
                  % (rank, ps, po, po / ps, act))
        for name in ("plain", "memsave"):
            g0, g1 = runs[name][0]["grads"], runs[name][1]["grads"]
            check(all(same(a, b) for ga, gb in zip(g0, g1) for a, b in zip(ga, gb)),
                  "%s: gradients identical on both ranks (all-reduced)" % name)
            l0, l1 = runs[name][0]["losses"], runs[name][1]["losses"]
            check(not all(same(a, b) for a, b in zip(l0, l1)), "%s: ranks saw different data" % name)
    print("all DDP checks passed" if not failures else "%d DDP checks failed" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker(sys.argv[2])
    elif len(sys.argv) == 2:
        sys.exit(main(os.path.abspath(sys.argv[1])))
    else:
        sys.exit("usage: test_ddp.py LIBMEMSAVE")

# SPDX-License-Identifier: MIT
# test_fsdp.py LIBMEMSAVE: two more 2-rank jobs (gloo, CPU) in the style of test_ddp.py,
# whose launcher, timeouts and comparisons they share (issue 15). Each job runs twice, under
# the preload with MEMSAVE=0 (stock, measured by the same counting allocator) and with
# libmemsave; every rank must see bitwise identical losses and gradients in both runs, the
# same gradients as the other rank, and (FSDP) a lower CPU tensor peak with libmemsave.
#
#   fsdp      FullyShardedDataParallel(model, device_id=cpu, use_orig_params=True), each
#             convolution its own unit, over a frozen convolution backbone with trainable
#             batch-norm parameters and head;
#             full gradients gathered with summon_full_params(with_grads=True). torch >= 2
#             only: on 1.13 FSDP needs CUDA, and the job is skipped with a line saying so.
#             (The composable fully_shard does not run on CPU in 2.6: 'Stream' object has no
#             attribute 'record_event'.)
#   fsdp2     the composable fully_shard (FSDP2) on each convolution and on the whole model,
#             the same model and checks; full gradients with DTensor.full_tensor(). Where
#             fully_shard does not run on CPU (2.6, above), a line says the job is skipped.
#   ddp_accum DistributedDataParallel with find_unused_parameters=True (an auxiliary head
#             used on odd steps only) and gradient accumulation: the first micro-batch of
#             every step under no_sync(), the second synchronised.
import os
import sys

sys.dont_write_bytecode = True  # importing test_ddp writes no __pycache__ into the source tree
import test_ddp  # noqa: E402
from test_ddp import BATCH, BLOCKS, CHANNELS, SIZE  # noqa: E402

STEPS = 3


def backbone_model(nn):
    layers, cin = [], 3
    for _ in range(BLOCKS):
        layers += [nn.Conv2d(cin, CHANNELS, 3, padding=1, bias=False), nn.BatchNorm2d(CHANNELS), nn.SiLU()]
        cin = CHANNELS
    backbone = nn.Sequential(*layers)
    for m in backbone.modules():
        if isinstance(m, nn.Conv2d):
            m.weight.requires_grad_(False)
    return backbone


def worker(outdir, job):
    import ctypes
    import datetime

    import torch
    import torch.distributed as dist
    import torch.nn as nn
    import torch.nn.functional as F

    torch.set_num_threads(1)
    if int(torch.__version__.split(".")[0]) >= 2:
        torch.backends.mkldnn.enabled = False  # Note [mkldnn off on 2.x] (tests/testing.h)
    rank = int(os.environ["RANK"])
    dist.init_process_group("gloo", init_method="env://", timeout=datetime.timedelta(seconds=120))
    torch.manual_seed(0)  # the same initial model on every rank
    backbone = backbone_model(nn)
    abi = ctypes.CDLL(None)
    gen = torch.Generator().manual_seed(100 + rank)  # each rank its own shard
    losses, grads = [], []

    def train_sharded(model, full_grads):
        """STEPS steps of a sharded model; full_grads() gives the whole gradients after each."""
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
        abi.memsave_reset_peak()
        for _ in range(STEPS):
            x = torch.randn(BATCH, 3, SIZE, SIZE, generator=gen)
            y = torch.randint(0, 10, (BATCH,), generator=gen)
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            losses.append(loss.detach().clone())
            grads.append(full_grads())
            opt.step()

    if job == "fsdp":
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy

        model = nn.Sequential(backbone, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(CHANNELS, 10))
        # Each convolution its own unit: a unit's parameters are views of one flat parameter,
        # which requires grad if any of them does, so a frozen weight sharing a unit with
        # trainable ones requires grad too (and stock's node is already minimal for it).
        wrapped = FSDP(model, device_id=torch.device("cpu"), use_orig_params=True,
                       auto_wrap_policy=ModuleWrapPolicy({nn.Conv2d}))

        def full_grads():
            with FSDP.summon_full_params(wrapped, with_grads=True):
                return [p.grad.clone() for p in wrapped.parameters() if p.requires_grad]
        train_sharded(wrapped, full_grads)
    elif job == "fsdp2":
        from torch.distributed.fsdp import fully_shard

        model = nn.Sequential(backbone, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(CHANNELS, 10))
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fully_shard(m)
        fully_shard(model)
        train_sharded(model, lambda: [p.grad.full_tensor().clone() for p in model.parameters() if p.requires_grad])
    else:
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.backbone = backbone
                self.head = nn.Linear(CHANNELS, 10)
                self.aux = nn.Linear(CHANNELS, 10)  # used on odd steps only

            def forward(self, x, use_aux):
                h = F.adaptive_avg_pool2d(self.backbone(x), 1).flatten(1)
                return self.head(h) + (self.aux(h) if use_aux else 0)

        ddp = nn.parallel.DistributedDataParallel(Net(), find_unused_parameters=True)
        opt = torch.optim.SGD([p for p in ddp.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
        abi.memsave_reset_peak()
        for step in range(STEPS):
            opt.zero_grad()
            for micro in range(2):
                x = torch.randn(BATCH // 2, 3, SIZE, SIZE, generator=gen)
                y = torch.randint(0, 10, (BATCH // 2,), generator=gen)
                if micro == 0:
                    with ddp.no_sync():
                        loss = F.cross_entropy(ddp(x, step % 2 == 1), y)
                        loss.backward()
                else:
                    loss = F.cross_entropy(ddp(x, step % 2 == 1), y)
                    loss.backward()
                losses.append(loss.detach().clone())
            grads.append([p.grad.clone() if p.grad is not None else torch.zeros(0) for p in ddp.parameters()
                          if p.requires_grad])
            opt.step()
    # The node a frozen convolution gets in this process (FSDP's parameters are flat shards
    # outside its forward, so a weight of the same shape stands in).
    probe = torch.randn(1, CHANNELS, 4, 4, requires_grad=True)
    node = nn.functional.conv2d(probe, torch.randn(CHANNELS, CHANNELS, 3, 3)).grad_fn.name()
    dist.barrier()
    dist.destroy_process_group()
    torch.save({"pid": os.getpid(), "losses": losses, "grads": grads, "node": node},
               os.path.join(outdir, "rank%d.pt" % rank))


def fully_shard_runs_on_cpu(torch):
    """FSDP2 on CPU: 2.6's fully_shard needs a device stream ('Stream' object has no attribute
    'record_event'); later releases run it with gloo. Decided by version: 2.6 and earlier no
    (1.13's torch.distributed.fsdp does not even import under Python 3.11)."""
    major, minor = (int(v) for v in torch.__version__.split("+")[0].split(".")[:2])
    if (major, minor) <= (2, 6):
        return False
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError:
        return False
    return True


def main(lib):
    import torch

    torch_major = int(torch.__version__.split(".")[0])
    failures = []

    def check(cond, what):
        print("%s %s" % ("ok  " if cond else "FAIL", what))
        if not cond:
            failures.append(what)

    import tempfile

    same = test_ddp.same
    jobs = ["ddp_accum"] + (["fsdp"] if torch_major >= 2 else [])
    if torch_major < 2:
        print("skip fsdp: FullyShardedDataParallel on CPU needs torch >= 2 (this is %s)" % torch.__version__)
    if fully_shard_runs_on_cpu(torch):
        jobs.append("fsdp2")
    else:
        print("skip fsdp2: fully_shard does not run on CPU in torch %s" % torch.__version__)
    with tempfile.TemporaryDirectory() as tmp:
        for job in jobs:
            runs = {}
            for name, memsave in (("stock", "0"), ("memsave", "1")):
                outdir = test_ddp.launch(job + "-" + name, lib, memsave, torch_major, tmp, [job])
                check(outdir is not None, "%s %s: both ranks finished" % (job, name))
                if outdir is None:
                    return 1
                runs[name] = [test_ddp.load_rank(outdir, r) for r in range(2)]
            act = BATCH * CHANNELS * SIZE * SIZE * 4
            for rank in range(2):
                stock, ours = runs["stock"][rank], runs["memsave"][rank]
                check(stock["node"] == "ConvolutionBackward0" and ours["node"] == "MemsaveConvolutionBackward",
                      "%s rank %d: stock's node with MEMSAVE=0, ours under the preload" % (job, rank))
                check(len(stock["losses"]) == len(ours["losses"]) and
                      all(same(a, b) for a, b in zip(stock["losses"], ours["losses"])),
                      "%s rank %d: losses bitwise equal to stock" % (job, rank))
                check(len(stock["grads"]) == len(ours["grads"]) and
                      all(same(a, b) for ga, gb in zip(stock["grads"], ours["grads"]) for a, b in zip(ga, gb)),
                      "%s rank %d: gradients bitwise equal to stock" % (job, rank))
                rs, ro = stock["report"], ours["report"]
                check(rs is not None and ro is not None, "%s rank %d: reports written" % (job, rank))
                if rs is None or ro is None:
                    continue
                check(ro["families"]["conv"]["substituted"] >= STEPS * (BLOCKS - 1) and
                      rs["families"]["conv"]["substituted"] == 0,
                      "%s rank %d: substituted convolutions: memsave %d, MEMSAVE=0 %d" %
                      (job, rank, ro["families"]["conv"]["substituted"], rs["families"]["conv"]["substituted"]))
                ps, po = rs["cpu_peak_bytes"], ro["cpu_peak_bytes"]
                # Stock keeps the input of each of BLOCKS-1 convolutions that we do not keep
                # (ddp_accum's micro-batches are half as large).
                check(ps - po >= (BLOCKS - 1) * act // (2 if job.startswith("fsdp") else 4),
                      "%s rank %d: peak CPU tensor bytes stock %d, libmemsave %d (ratio %.3f)"
                      % (job, rank, ps, po, po / ps))
            g0, g1 = runs["memsave"][0]["grads"], runs["memsave"][1]["grads"]
            check(all(same(a, b) for ga, gb in zip(g0, g1) for a, b in zip(ga, gb)),
                  "%s: gradients identical on both ranks" % job)
            l0, l1 = runs["memsave"][0]["losses"], runs["memsave"][1]["losses"]
            check(not all(same(a, b) for a, b in zip(l0, l1)), "%s: ranks saw different data" % job)
    print("all distributed checks passed" if not failures else "%d distributed checks failed" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 2:
        sys.exit(main(os.path.abspath(sys.argv[1])))
    else:
        sys.exit("usage: test_fsdp.py LIBMEMSAVE")

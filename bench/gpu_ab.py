# SPDX-License-Identifier: MIT
"""In-process A/B of stock PyTorch and libmemsave on one device, for scripts/gpu-check.sh.
Runs under LD_PRELOAD=libmemsave.so and switches the hooks with memsave_set_enabled between
the arms, so that a model is built (and CUDA started) once for all its rows: a process per
run, as `memsave ab` does on the CPU (bench/run.sh), costs 10-20 s of start-up each on the GPU
machine, more than its whole 8-minute budget allows. The models, scenarios and gradient
digests are bench/torchvision_case.py's.

    gpu_ab.py torchvision MODEL:SCENARIO,...  ... [--batch B] [--size S] [--steps K] [--pairs N] [--device D]
    gpu_ab.py bert SCENARIO,... [--batch B] [--seq L] [--tiny] ...  (transformers, random weights)
    gpu_ab.py compile MODEL SCENARIO [--backend B] ...                (one arm; MEMSAVE picks it)
    gpu_ab.py table --out FILE [--meta LINE]... ROWS.jsonl...        (the bench table, markdown)

Each measuring command appends JSON rows to --jsonl. Per row: a warm-up run of stock, then N
pairs of runs (stock, libmemsave, alternated); every run starts from the same weights,
buffers, data and random seed (dropout draws the same stream). Peaks are the device's
allocator's (CUDA: torch.cuda.max_memory_allocated; CPU: libmemsave's counting allocator):
"peak" over the run, "steps peak" above the bytes alive when the steps start. Times are
medians. Outputs: every step's loss (17 digits) and a SHA-256 of the last step's gradients
(or the adversarial input); libmemsave's must equal stock's. Where two stock runs already
differ (non-deterministic CUDA kernels: some backward kernels add with atomics), bitwise
comparison is impossible and the row says so instead."""
import argparse
import ctypes
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torchvision_case as tc  # noqa: E402

ABI = ctypes.CDLL(None)


def require_preload():
    if not hasattr(ABI, "memsave_is_active") or ABI.memsave_is_active() != 1:
        sys.exit("gpu_ab.py: libmemsave is not active in this process (run it under LD_PRELOAD, MEMSAVE=1)")


class Meter:
    """Bytes alive and peak on the device: the CUDA caching allocator's, or libmemsave's
    counting CPU allocator's (through its C ABI)."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"
        self.cpu = tc.StepsPeak()

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def start(self):
        self.sync()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            return torch.cuda.memory_allocated()
        self.cpu.reset_peak()
        return self.cpu.stats().cpu_current_bytes

    def peak(self):
        self.sync()
        return torch.cuda.max_memory_allocated() if self.cuda else self.cpu.stats().cpu_peak_bytes


def substituted():
    st = tc.StepsPeak().stats()
    return sum(st.substituted) if st is not None else 0


def run_arm(on, meter, body):
    """One run with libmemsave on or off: body() returns the outputs (strings) after the
    timed steps; returns (outputs, peak, steps peak, seconds, nodes substituted)."""
    prev = ABI.memsave_set_enabled(1 if on else 0)
    try:
        nodes = substituted()
        base = meter.start()
        t0 = time.perf_counter()
        outputs, t_end = body()
        peak = meter.peak()
        return outputs, peak, peak - base, t_end - t0, substituted() - nodes
    finally:
        ABI.memsave_set_enabled(prev)


def ab(name, scenario, shape, pairs, meter, body, note=""):
    """Warm-up, then `pairs` alternated pairs; the table row."""
    run_arm(False, meter, body)
    stock, ours = [], []
    for _ in range(pairs):
        stock.append(run_arm(False, meter, body))
        ours.append(run_arm(True, meter, body))
    same_stock = all(r[0] == stock[0][0] for r in stock)
    same = all(r[0] == stock[0][0] for r in ours)
    med = lambda runs, i: statistics.median(r[i] for r in runs)  # noqa: E731
    row = {"model": name, "scenario": scenario, "shape": shape, "device": str(meter_device(meter)),
           "peak_stock": med(stock, 1), "peak_ours": med(ours, 1), "steps_peak_stock": med(stock, 2),
           "steps_peak_ours": med(ours, 2), "time_stock": med(stock, 3), "time_ours": med(ours, 3),
           "nodes": ours[0][4], "stock_deterministic": same_stock,
           "identical": ("yes" if same else "NO") if same_stock else "n/a: two stock runs differ",
           "note": note}
    if not same and same_stock:
        row["diff"] = {"stock": stock[0][0][-2:], "ours": [r[0][-2:] for r in ours if r[0] != stock[0][0]][0]}
    return row


def meter_device(meter):
    return "cuda" if meter.cuda else "cpu"


def emit(a, row):
    """Prints a row and appends it to --jsonl at once: a later crash keeps the rows before."""
    print(json.dumps(row), flush=True)
    if a.jsonl:
        with open(a.jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")


def torchvision_rows(a, device, meter):
    for case in a.cases:
        model_name, _, scenarios = case.partition(":")
        if model_name not in tc.MODELS:
            sys.exit(f"gpu_ab.py: unknown model {model_name} (known: {', '.join(tc.MODELS)})")
        torchvision_model_rows(a, model_name, scenarios or "full", device, meter)


def torchvision_model_rows(a, model_name, scenarios, device, meter):
    import torchvision
    torch.manual_seed(0)
    model = getattr(torchvision.models, model_name)(weights=None, num_classes=10).to(device)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(a.batch, 3, a.size, a.size).to(device)
    y = torch.randint(0, 10, (a.batch,)).to(device)
    loss_fn = torch.nn.CrossEntropyLoss()
    for scenario in scenarios.split(","):
        def body(scenario=scenario):
            model.load_state_dict(state)
            for p in model.parameters():
                p.grad = None
            torch.manual_seed(1)
            out = []
            if scenario == "adversarial":
                model.eval()
                for p in model.parameters():
                    p.requires_grad_(False)
                delta = torch.zeros_like(x, requires_grad=True)
                for _ in range(a.steps):
                    loss = loss_fn(model(x + delta), y)
                    loss.backward()
                    with torch.no_grad():
                        delta += 2 / 255 * delta.grad.sign()
                        delta.clamp_(-8 / 255, 8 / 255)
                    grad = delta.grad
                    delta.grad = None
                    out.append(f"{loss.item():.17g}")
                meter.sync()
                t_end = time.perf_counter()
                return out + [tc.digest([grad, delta])], t_end
            model.train()
            params = tc.trainable(model, scenario)
            keep = {id(p) for p in params}
            for p in model.parameters():
                p.requires_grad_(id(p) in keep)
            opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
            for _ in range(a.steps):
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(x), y)
                loss.backward()
                opt.step()
                out.append(f"{loss.item():.17g}")
            meter.sync()
            t_end = time.perf_counter()
            return out + [tc.digest([p.grad for p in params if p.grad is not None] + params)], t_end
        emit(a, ab(model_name, scenario, f"{a.batch} x {a.size}", a.pairs, meter, body))
    del model, state
    if device.type == "cuda":
        torch.cuda.empty_cache()


def bert_model(a, device):
    try:
        import transformers
    except ImportError as e:
        return None, f"transformers is not installed ({e})"
    if a.tiny:
        cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=64, max_position_embeddings=64)
    else:
        cfg = transformers.BertConfig()  # BERT-base: 12 layers, hidden 768, 12 heads
    cfg.hidden_dropout_prob = cfg.attention_probs_dropout_prob = 0.1
    cfg.num_labels = 2
    # Eager attention: its softmax-dropout-matmul goes through the dispatcher's dropout, which
    # libmemsave substitutes; the fused SDPA kernels would hide it.
    torch.manual_seed(0)
    try:
        model = transformers.AutoModelForSequenceClassification.from_config(cfg, attn_implementation="eager")
    except (TypeError, ValueError):  # older transformers: no attn_implementation argument
        model = transformers.BertForSequenceClassification(cfg)
    return model.to(device), transformers.__version__


def bert_rows(a, device, meter):
    model, info = bert_model(a, device)
    if model is None:
        return emit(a, {"model": "bert-base", "scenario": a.scenarios, "skipped": info})
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (a.batch, a.seq)).to(device)
    labels = torch.randint(0, 2, (a.batch,)).to(device)
    for scenario in a.scenarios.split(","):
        def body(scenario=scenario):
            model.load_state_dict(state)
            model.train()
            if scenario == "bitfit":
                params = [p for n, p in model.named_parameters() if n.endswith("bias")]
            elif scenario == "norm":
                params = [p for m in model.modules() if isinstance(m, torch.nn.LayerNorm) for p in m.parameters()]
            else:
                params = list(model.parameters())
            keep = {id(p) for p in params}
            for p in model.parameters():
                p.grad = None
                p.requires_grad_(id(p) in keep)
            opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
            torch.manual_seed(1)
            out = []
            for _ in range(a.steps):
                opt.zero_grad(set_to_none=True)
                loss = model(input_ids=ids, labels=labels).loss
                loss.backward()
                opt.step()
                out.append(f"{loss.item():.17g}")
            meter.sync()
            t_end = time.perf_counter()
            return out + [tc.digest([p.grad for p in params if p.grad is not None] + params)], t_end
        name = "bert-tiny" if a.tiny else "bert-base"
        emit(a, ab(name, scenario, f"{a.batch} x {a.seq} tokens", a.pairs, meter, body,
                   note=f"transformers {info}, random weights, dropout 0.1, eager attention"))


def compile_arm(a, device, meter):
    """One arm of the torch.compile row, in its own process (Dynamo caches what it traced):
    stock or libmemsave as MEMSAVE says. The first step compiles and is not timed."""
    import torchvision
    torch.manual_seed(0)
    model = getattr(torchvision.models, a.model)(weights=None, num_classes=10).to(device).train()
    x = torch.randn(a.batch, 3, a.size, a.size).to(device)
    y = torch.randint(0, 10, (a.batch,)).to(device)
    params = tc.trainable(model, a.scenario)
    keep = {id(p) for p in params}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    step_fn = torch.compile(model, backend=a.backend)
    loss_fn = torch.nn.CrossEntropyLoss()
    nodes = substituted()
    base = meter.start()
    out, t0 = [], None
    for i in range(a.steps + 1):
        if i == 1:
            meter.sync()
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(step_fn(x), y)
        loss.backward()
        opt.step()
        out.append(f"{loss.item():.17g}")
    meter.sync()
    seconds = time.perf_counter() - t0
    peak = meter.peak()
    row = {"arm": "stock" if os.environ.get("MEMSAVE") == "0" else "libmemsave", "model": a.model,
           "scenario": a.scenario, "shape": f"{a.batch} x {a.size}", "backend": a.backend,
           "outputs": out + [tc.digest(params)], "peak": peak, "steps_peak": peak - base, "seconds": seconds,
           "nodes": substituted() - nodes}
    emit(a, row)


def fmt_mib(b):
    return f"{b / 2**20:.1f}"


def ratio(b, a):
    return f"{b / a:.4g}" if a else "-"


def compile_row(arms):
    """The torch.compile row from its two arms (two processes)."""
    by = {r["arm"]: r for r in arms}
    if set(by) != {"stock", "libmemsave"}:
        return None
    s, o = by["stock"], by["libmemsave"]
    return {"model": f"{s['model']} (torch.compile, {s['backend']})", "scenario": s["scenario"], "shape": s["shape"],
            "peak_stock": s["peak"], "peak_ours": o["peak"], "steps_peak_stock": s["steps_peak"],
            "steps_peak_ours": o["steps_peak"], "time_stock": s["seconds"], "time_ours": o["seconds"],
            "identical": "yes" if s["outputs"] == o["outputs"] else "NO",
            "note": f"one run per arm, each in its own process, the compiling step not timed; nodes "
                    f"libmemsave substituted in its arm: {o['nodes']}"}


def table(a):
    rows, skipped, arms = [], [], []
    for path in a.rows:
        with open(path) as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    (skipped if "skipped" in r else arms if "arm" in r else rows).append(r)
    if arms:
        r = compile_row(arms)
        if r:
            rows.append(r)
        else:
            skipped.append({"model": "torch.compile", "scenario": "", "skipped": "an arm did not finish"})
    with open(a.out, "w") as f:
        f.write(f"# {a.title}\n\n")
        for m in a.meta:
            f.write(f"- {m}\n")
        f.write("\n| model | scenario | batch x size | peak stock MiB | peak libmemsave MiB | peak ratio | "
                "steps peak stock MiB | steps peak libmemsave MiB | steps peak ratio | time stock s | "
                "time libmemsave s | time ratio | outputs identical |\n")
        f.write("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
        for r in rows:
            f.write(f"| {r['model']} | {r['scenario']} | {r['shape']} | {fmt_mib(r['peak_stock'])} | "
                    f"{fmt_mib(r['peak_ours'])} | {ratio(r['peak_ours'], r['peak_stock'])} | "
                    f"{fmt_mib(r['steps_peak_stock'])} | {fmt_mib(r['steps_peak_ours'])} | "
                    f"{ratio(r['steps_peak_ours'], r['steps_peak_stock'])} | {r['time_stock']:.4g} | "
                    f"{r['time_ours']:.4g} | {ratio(r['time_ours'], r['time_stock'])} | {r['identical']} |\n")
        notes = [r for r in rows if r.get("note")]
        if notes or skipped:
            f.write("\n")
        for r in notes:
            f.write(f"- {r['model']} {r['scenario']}: {r['note']}\n")
        for r in skipped:
            f.write(f"- {r['model']} ({r['scenario']}): skipped: {r['skipped']}\n")
    print(f"gpu_ab.py: {len(rows)} rows, {len(skipped)} skipped -> {a.out}")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("torchvision", "bert", "compile"):
        p = sub.add_parser(name)
        if name == "compile":
            p.add_argument("model", choices=tc.MODELS)
            p.add_argument("scenario")
        elif name == "torchvision":
            p.add_argument("cases", nargs="+", help="MODEL:SCENARIO,SCENARIO...")
        else:
            p.add_argument("scenarios")
        p.add_argument("--batch", type=int, default=64)
        p.add_argument("--size", type=int, default=224)
        p.add_argument("--seq", type=int, default=128)
        p.add_argument("--steps", type=int, default=2)
        p.add_argument("--pairs", type=int, default=3)
        p.add_argument("--device", default="cuda")
        p.add_argument("--tiny", action="store_true", help="bert: a 2-layer, 32-wide model (dry runs)")
        p.add_argument("--backend", default="inductor", help="compile: torch.compile's backend")
        p.add_argument("--jsonl", help="append the rows to this file")
    t = sub.add_parser("table")
    t.add_argument("--out", required=True)
    t.add_argument("--title", default="Benchmark: stock PyTorch versus libmemsave on CUDA, Python host")
    t.add_argument("--meta", action="append", default=[])
    t.add_argument("rows", nargs="+")
    a = ap.parse_args()
    if a.cmd == "table":
        return table(a)
    if a.cmd != "compile":
        require_preload()
    device = torch.device(a.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            sys.exit("gpu_ab.py: torch.cuda.is_available() is false")
        # Stock's own choice of cuDNN algorithms may be non-deterministic; deterministic ones
        # (for both arms alike) make the bits comparable wherever stock itself repeats.
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    meter = Meter(device)
    {"torchvision": torchvision_rows, "bert": bert_rows, "compile": compile_arm}[a.cmd](a, device, meter)


if __name__ == "__main__":
    main()

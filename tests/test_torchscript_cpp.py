# SPDX-License-Identifier: MIT
"""test_torchscript_cpp.py MEMSAVE MEMSAVE_DEMO (issue 12): TorchScript modules made in
Python (torchvision's resnet18, traced and scripted, saved) and fine-tuned by a LibTorch C++
program that loads them with torch::jit::load (memsave-demo --torchscript), under
`memsave ab --check-output` for six steps each, so that the graph executor's optimised runs
(from the second step on) are covered:
  - losses and gradient digests of every step identical to stock's;
  - every family's calls take the route they take in the same scenario on the demo's eager
    C++ resnet18 (ours, passthrough or not needed), on every step: the same counts
    (torchvision's in-place ReLU keeps the executor from making differentiable graphs);
  - the peak is below stock's for the selective scenarios, not above for full training;
  - with out-of-place ReLU, the executor's differentiable graphs take batch norm, ReLU and
    pooling from the second step on: outputs still identical, and those calls are counted
    as fallbacks with their reason, so that the report never calls the family fine."""
import json
import os
import subprocess
import sys
import tempfile

memsave, demo = sys.argv[1], sys.argv[2]
here = os.path.dirname(os.path.abspath(__file__))
exporter = os.path.join(here, "..", "bench", "export_torchscript.py")
STEPS, SIZE = 6, 32
failures = []


def check(what, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + what + ("" if ok else f": {detail}"))
    if not ok:
        failures.append(what)


def ab(model, scenario):
    """memsave ab of the demo on a TorchScript file, or on a built-in model by name."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MEMSAVE_OPS="conv,batchnorm,relu,pool,dropout")
    which = ["--torchscript", model] if model.endswith(".pt") else ["--model", model]
    cmd = [memsave, "ab", "--json", "--check-output", "--", demo] + which + ["--scenario", scenario,
           "--batch", "2", "--size", str(SIZE), "--steps", str(STEPS)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    try:
        return json.loads(r.stdout), r
    except ValueError:
        return None, r


with tempfile.TemporaryDirectory() as tmp:
    files = {}
    for how in ("trace", "script"):
        for inplace in ("yes", "no"):
            f = os.path.join(tmp, f"resnet18-{how}-{inplace}.pt")
            subprocess.run([sys.executable, exporter, "resnet18", how, f, "--size", str(SIZE), "--inplace-relu", inplace],
                           check=True, timeout=120)
            files[how, inplace] = f

    # resnet18 per step: 20 convolutions, 20 batch norms, 17 ReLUs, 1 max-pool + 1 adaptive
    # average pool.
    per_step = {"conv": 20, "batchnorm": 20, "relu": 17, "pool": 2}
    for scenario in ("adversarial", "surgical", "norm", "bitfit", "full"):
        eager, r = ab("resnet18", scenario)
        if eager is None:
            check(f"eager resnet18, {scenario}: memsave ab ran", False, r.stderr[-2000:])
            continue
        for how in ("trace", "script"):
            where = f"{how}d resnet18, {scenario}".replace("scriptd", "scripted")
            d, r = ab(files[how, "yes"], scenario)
            if d is None:
                check(f"{where}: memsave ab ran", False, r.stderr[-2000:])
                continue
            check(f"{where}: outputs identical to stock (losses and gradients, {STEPS} steps)", d["output"] == "identical",
                  d["output"])
            for f in per_step:
                if how == "trace" and f == "batchnorm" and scenario != "adversarial":
                    continue  # a trace keeps the training flag it was traced with (eval), whatever train() says
                got = {k: d["families"][f][k] for k in ("substituted", "passthrough", "fallbacks")}
                want = {k: eager["families"][f][k] for k in ("substituted", "passthrough", "fallbacks")}
                check(f"{where}: {f} routed as in the eager model, every step", got == want, f"{got} != eager {want}")
            if scenario == "adversarial":
                for f, n in per_step.items():
                    # Ours, or stock's node already minimal (2.x's mean.dim for the global pool).
                    fam = d["families"][f]
                    check(f"{where}: all {n} {f} calls of each step ours or minimal",
                          fam["substituted"] + fam["passthrough"] == n * STEPS and fam["fallbacks"] == 0, fam)
            ratio = d["ratio"]["cpu_peak_total_bytes"]
            if scenario == "full":
                check(f"{where}: peak not above stock's", ratio <= 1.0, ratio)
            else:
                check(f"{where}: peak below stock's", ratio < 1.0, ratio)

    for how in ("trace", "script"):
        where = f"{how}d resnet18 with out-of-place ReLU, adversarial".replace("scriptd", "scripted")
        d, r = ab(files[how, "no"], "adversarial")
        if d is None:
            check(f"{where}: memsave ab ran", False, r.stderr[-2000:])
            continue
        check(f"{where}: outputs identical to stock", d["output"] == "identical", d["output"])
        fam = d["families"]
        check(f"{where}: convolutions ours on every step", fam["conv"]["substituted"] == 20 * STEPS, fam["conv"])
        reasons = json.dumps(d.get("fallback_reasons"))
        for f in ("batchnorm", "relu"):
            check(f"{where}: {f} calls in differentiable graphs counted as fallbacks",
                  fam[f]["fallbacks"] > 0 and fam[f]["substituted"] + fam[f]["fallbacks"] >= per_step[f] * STEPS, fam[f])
        check(f"{where}: the reason names the differentiable graph", "TorchScript differentiable graph" in reasons, reasons)

print(f"{len(failures)} failure(s)")
sys.exit(1 if failures else 0)

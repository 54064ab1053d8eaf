# SPDX-License-Identifier: MIT
# test_trace_names.py LIBMEMSAVE: on the Python host, MEMSAVE_TRACE attributes the bytes our
# nodes did not keep to the operator (Note [Python attribution] in hooks/core/trace.cpp). Every
# name in the report must be a real dispatcher operator ("aten::mean.dim"), for every family:
# the skeleton passes op.operator_name(). Runs one call of each covered operator in a child
# process with the library preloaded, then reads the JSON report it wrote at exit.
import json
import os
import subprocess
import sys
import tempfile

import torch

CHILD = r"""
import torch, torch.nn.functional as F
torch.manual_seed(0)
x = torch.randn(2, 4, 8, 8, requires_grad=True)
w = torch.randn(4, 4, 3, 3)
y = F.conv2d(x, w, padding=1)
y = F.batch_norm(y, torch.zeros(4), torch.ones(4), torch.ones(4), torch.zeros(4), training=False)
y = F.relu(y) + F.leaky_relu(y, 0.1) + F.hardtanh(y) + F.threshold(y, 0.5, 0.0)
y = F.max_pool2d(y, 2) + F.avg_pool2d(y, 2) + F.adaptive_avg_pool2d(y, 4)
y = F.dropout(y, 0.5, training=True)
z, _ = torch.ops.aten.native_dropout(y, 0.5, True)
z = F.linear(z.mean(dim=(2, 3)), torch.randn(3, 4))
z.sum().backward()
"""

EXPECTED = {"aten::convolution", "aten::native_batch_norm", "aten::relu", "aten::leaky_relu", "aten::hardtanh",
            "aten::threshold", "aten::max_pool2d_with_indices", "aten::avg_pool2d", "aten::_adaptive_avg_pool2d",
            "aten::dropout", "aten::native_dropout", "aten::linear"}
if torch.__version__.startswith("1."):
    EXPECTED.add("aten::mean.dim")  # 2.x's MeanBackward1 is already minimal: passthrough



def preload(lib):
    """LD_PRELOAD for lib: a sanitized build's ASan runtime (MEMSAVE_TEST_PRELOAD, set by
    tests/CMakeLists.txt) must come first."""
    return ":".join(filter(None, [os.environ.get("MEMSAVE_TEST_PRELOAD"), lib]))

def exists(name):
    """True when `name` ("aten::mean.dim", "aten::relu") is an operator of the dispatcher."""
    ns, _, rest = name.partition("::")
    op, _, overload = rest.partition(".")
    packet = getattr(getattr(torch.ops, ns, None), op, None)
    if packet is None:
        return False
    try:
        getattr(packet, overload or "default")
        return True
    except (AttributeError, RuntimeError):
        return False


def main():
    lib = sys.argv[1]
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "report.json")
        env = dict(os.environ, LD_PRELOAD=preload(lib), MEMSAVE_OPS="all", MEMSAVE_TRACE="100", MEMSAVE_REPORT=report,
                   OMP_NUM_THREADS="1")
        subprocess.run([sys.executable, "-c", CHILD], env=env, check=True)
        with open(report) as f:
            trace = json.load(f)["trace"]
    names = {s["symbol"] for s in trace["sites"]}
    bad = sorted(n for n in names if not exists(n))
    missing = sorted(EXPECTED - names)
    print("attribution:", trace["attribution"], "sites:", sorted(names))
    ok = trace["attribution"] == "operator" and not bad and not missing
    if bad:
        print("FAIL: names that are not operators:", bad)
    if missing:
        print("FAIL: operators with no site:", missing)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

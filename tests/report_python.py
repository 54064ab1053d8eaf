# SPDX-License-Identifier: MIT
# Run under libmemsave by test_cli.sh: a Python host whose frozen convolutions are
# substituted. Prints its statistics from memsave_get_stats (ctypes), then leaves through
# sys.exit with the status given as argv[1], so that the test can check the report written
# at exit against these numbers and the status passed through `memsave run`.
import ctypes
import sys

import torch
import torch.nn.functional as F

SLOTS = 8


class Stats(ctypes.Structure):
    _fields_ = [("size", ctypes.c_uint64), ("substituted", ctypes.c_uint64 * SLOTS),
                ("fallbacks", ctypes.c_uint64 * SLOTS), ("passthrough", ctypes.c_uint64 * SLOTS),
                ("bytes_kept", ctypes.c_uint64), ("bytes_stock", ctypes.c_uint64),
                ("cpu_current_bytes", ctypes.c_uint64), ("cpu_peak_bytes", ctypes.c_uint64)]


torch.manual_seed(0)
w = torch.randn(8, 8, 3, 3)
for _ in range(4):
    x = torch.randn(4, 8, 16, 16, requires_grad=True)
    F.conv2d(x, w, padding=1).sum().backward()

st = Stats()
assert ctypes.CDLL(None).memsave_get_stats(ctypes.byref(st), ctypes.sizeof(st)) == 0
print(f"stats conv_substituted={st.substituted[0]} conv_passthrough={st.passthrough[0]} "
      f"conv_fallbacks={st.fallbacks[0]} bytes_kept={st.bytes_kept} bytes_stock={st.bytes_stock} "
      f"cpu_peak_bytes={st.cpu_peak_bytes}", flush=True)
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)

# SPDX-License-Identifier: MIT
"""Save a torchvision model as TorchScript, for memsave-demo --torchscript (issue 12):

    export_torchscript.py MODEL trace|script OUT.pt [--size S] [--inplace-relu yes|no]

Random weights (weights=None) from a fixed seed; traced on a (1, 3, S, S) input. With
--inplace-relu no, every ReLU is made out of place first, which lets TorchScript's executor
put batch norm, ReLU and pooling into differentiable graphs (docs/torchscript.md)."""
import argparse

import torch
import torchvision


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("how", choices=("trace", "script"))
    ap.add_argument("out")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--inplace-relu", choices=("yes", "no"), default="yes")
    a = ap.parse_args()
    torch.manual_seed(0)
    m = getattr(torchvision.models, a.model)(weights=None) if hasattr(torchvision.models, "get_model") \
        else getattr(torchvision.models, a.model)()
    if a.inplace_relu == "no":
        for sub in m.modules():
            if isinstance(sub, torch.nn.ReLU):
                sub.inplace = False
    m.eval()
    sm = torch.jit.trace(m, torch.randn(1, 3, a.size, a.size)) if a.how == "trace" else torch.jit.script(m)
    torch.jit.save(sm, a.out)


if __name__ == "__main__":
    main()

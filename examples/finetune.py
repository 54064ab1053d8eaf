# SPDX-License-Identifier: MIT
"""Norm-only fine-tuning: a new head and the batch norms' scales and shifts are trained, the
convolutions stay frozen. The kind of training libmemsave is for (stock's convolutions keep
their inputs for a weight gradient nobody asked for), in a plain PyTorch script that knows
nothing of it. Runs on the CPU in seconds, with no
download, and prints each step's loss and a checksum of the head's gradient with every digit,
so that `memsave ab --check-output` can compare stock's run with libmemsave's bit for bit:

    memsave ab --check-output -- python examples/finetune.py
    memsave run -- python examples/finetune.py --steps 20
"""
import argparse
import hashlib

import torch
import torch.nn as nn


def backbone(width: int) -> nn.Sequential:
    """Three conv-batchnorm-ReLU-maxpool stages, as a pretrained feature extractor has."""
    layers, channels = [], 3
    for out in (width, 2 * width, 4 * width):
        layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out),
                   nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        channels = out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=64, help="image side, pixels")
    parser.add_argument("--width", type=int, default=32, help="channels of the first stage")
    args = parser.parse_args()

    torch.manual_seed(0)
    features = backbone(args.width).requires_grad_(False)  # frozen, as loaded ...
    norms = [p for m in features if isinstance(m, nn.BatchNorm2d) for p in m.parameters()]
    for p in norms:                                        # ... but for the norms
        p.requires_grad_(True)
    head = nn.Linear(4 * args.width, 10)
    optimizer = torch.optim.SGD(norms + list(head.parameters()), lr=0.01, momentum=0.9)
    images = torch.randn(args.steps, args.batch, 3, args.size, args.size)
    labels = torch.randint(0, 10, (args.steps, args.batch))
    for step in range(args.steps):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(head(features(images[step])), labels[step])
        loss.backward()
        digest = hashlib.sha256(head.weight.grad.numpy().tobytes()).hexdigest()[:16]
        print(f"step {step}: loss {loss.item()!r} head grad sha256 {digest}")
        optimizer.step()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""ref-cnn training throughput in PyTorch, the same model, optimizer and data as
`trainer bench train` (run by it with --pytorch PYTHON, or by hand).

conv3x3x8 (pad 1) -> BN -> ReLU -> maxpool2 -> conv3x3x16 (pad 1) -> BN -> ReLU -> maxpool2
-> flatten -> Linear(784 -> 10); SGD lr 0.05, momentum 0.9, weight decay 0.002; batch 64; the
first 8,000 images of the bundled mnist10k (NHWC u8 / 255, as the trainer reads them).

Prints one line per round: `round R threads T images_per_second X`.
"""
import argparse
import gzip
import os
import struct
import time

import torch
import torch.nn as nn


def read_idx(path):
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return dims, data[4 + 4 * ndim :]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "data", "mnist10k"))
    ap.add_argument("--steps", type=int, default=125)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    (n, h, w), px = read_idx(os.path.join(a.data, "images-idx3-ubyte.gz"))
    _, lb = read_idx(os.path.join(a.data, "labels-idx1-ubyte.gz"))
    x = torch.frombuffer(bytearray(px), dtype=torch.uint8).reshape(n, 1, h, w)[:8000].float() / 255.0
    y = torch.frombuffer(bytearray(lb), dtype=torch.uint8)[:8000].long()
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(784, 10),
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=0.002)
    loss_fn = nn.CrossEntropyLoss()
    batches = 8000 // 64

    def step(k):
        i = (k % batches) * 64
        opt.zero_grad()
        loss = loss_fn(model(x[i : i + 64]), y[i : i + 64])
        loss.backward()
        opt.step()

    for k in range(3):  # warm-up
        step(k)
    for r in range(a.rounds):
        t = time.perf_counter()
        for k in range(a.steps):
            step(k)
        dt = time.perf_counter() - t
        print(f"round {r} threads {a.threads} images_per_second {64 * a.steps / dt:.0f}", flush=True)


if __name__ == "__main__":
    main()

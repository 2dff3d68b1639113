#!/usr/bin/env python3
"""Training throughput in PyTorch, the same model, optimizer and data as `trainer bench
train` (run by it with --pytorch PYTHON, or by hand).

Default: ref-cnn, conv3x3x8 (pad 1) -> BN -> ReLU -> maxpool2 -> conv3x3x16 (pad 1) -> BN ->
ReLU -> maxpool2 -> flatten -> Linear(784 -> 10), on the first 8,000 images of the bundled
mnist10k (NHWC u8 / 255, as the trainer reads them).
With --arch ARCH.json --images IMAGES.bin (what `trainer bench train --arch A` writes): the
architecture as the trainer's JSON (its layer types, PyTorch's modules: depthwise convolutions
are Conv2d(C, C, k, groups=C), one-sided SAME padding a ZeroPad2d, the residual block the
trainer's) and its training images (u32 count, h, w, c little endian, then count * h*w*c u8
pixels, then count u8 labels).
SGD lr 0.05, momentum 0.9, weight decay 0.002; batch 64.

Prints one line per round: `round R threads T images_per_second X`.
"""
import argparse
import gzip
import json
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


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def sides(padding, hw, k, s):
    """[top, left, bottom, right] as the trainer's Padding::sides."""
    if padding == "valid":
        return [0, 0, 0, 0]
    if padding == "same":
        def same(n, kk, ss):
            total = max((-(-n // ss) - 1) * ss + kk - n, 0)
            return total // 2, total - total // 2
        (t, b), (l, r) = same(hw[0], k[0], s[0]), same(hw[1], k[1], s[1])
        return [t, l, b, r]
    return [padding] * 4


def conv(cin, cout, k, s, pads, bias, groups=1):
    t, l, b, r = pads
    if t == b and l == r:
        return nn.Conv2d(cin, cout, k, s, (t, l), bias=bias, groups=groups)
    return nn.Sequential(nn.ZeroPad2d((l, r, t, b)), nn.Conv2d(cin, cout, k, s, 0, bias=bias, groups=groups))


class Residual(nn.Module):
    """The trainer's basic block: conv3x3 (stride) BN ReLU conv3x3 BN + shortcut (1x1 conv +
    BN when the stride or the channel count changes), ReLU; convs without bias."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.a = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.p = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, 0, bias=False), nn.BatchNorm2d(cout))
                  if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        return torch.relu(self.a(x) + self.p(x))


def build(arch):
    """nn.Sequential of the trainer's architecture JSON; shapes tracked as the trainer does."""
    h, w, c = arch["input"]
    mods, flat = [], None
    for L in arch["layers"]:
        t = L["type"]
        if t in ("conv2d", "depthwise_conv2d"):
            k, s = pair(L["kernel"]), pair(L.get("stride", 1))
            pads = sides(L.get("padding", 0), (h, w), k, s)
            out = c if t == "depthwise_conv2d" else L["out_channels"]
            mods.append(conv(c, out, k, s, pads, L.get("bias", True), c if t == "depthwise_conv2d" else 1))
            h = (h + pads[0] + pads[2] - k[0]) // s[0] + 1
            w = (w + pads[1] + pads[3] - k[1]) // s[1] + 1
            c = out
        elif t == "batch_norm2d":
            mods.append(nn.BatchNorm2d(c))
        elif t == "relu":
            mods.append(nn.ReLU())
        elif t == "relu6":
            mods.append(nn.ReLU6())
        elif t in ("max_pool2d", "avg_pool2d"):
            k = L["kernel"]
            s = L.get("stride") or k
            mods.append((nn.MaxPool2d if t == "max_pool2d" else nn.AvgPool2d)(k, s))
            h, w = (h - k) // s + 1, (w - k) // s + 1
        elif t == "global_avg_pool":
            mods += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
            flat = c
        elif t == "flatten":
            mods.append(nn.Flatten())
            flat = h * w * c
        elif t == "dropout":
            mods.append(nn.Dropout(L["p"]))
        elif t == "linear":
            mods.append(nn.Linear(flat, L["out_features"], bias=L.get("bias", True)))
            flat = L["out_features"]
        elif t == "residual":
            mods.append(Residual(c, L["out_channels"], L.get("stride", 1)))
            s = L.get("stride", 1)
            h, w, c = (h + 2 - 3) // s + 1, (w + 2 - 3) // s + 1, L["out_channels"]
        else:
            raise SystemExit(f"layer type {t} is not in this script")
    return nn.Sequential(*mods)


def read_images(path):
    data = open(path, "rb").read()
    n, h, w, c = struct.unpack("<4I", data[:16])
    px = torch.frombuffer(bytearray(data[16:16 + n * h * w * c]), dtype=torch.uint8)
    x = px.reshape(n, h, w, c).permute(0, 3, 1, 2).contiguous().float() / 255.0
    y = torch.frombuffer(bytearray(data[16 + n * h * w * c:]), dtype=torch.uint8).long()
    return x, y


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "data", "mnist10k"))
    ap.add_argument("--steps", type=int, default=125)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--arch", help="the trainer's architecture JSON")
    ap.add_argument("--images", help="the training images (with --arch)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    if a.arch:
        model = build(json.load(open(a.arch)))
        x, y = read_images(a.images)
    else:
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
    batches = max(len(y) // 64, 1)

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

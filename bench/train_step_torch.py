"""PyTorch peer of bench/train-step.ts: the same ViT (pre-norm, fused qkv, exact GELU,
LayerNorm eps 1e-6), batch and optimiser (AdamW, betas (0.9, 0.95), wd 0.05), on the CPU
threads given. Prints one JSON line: train and forward images/s.

  /usr/bin/python3 bench/train_step_torch.py --preset vit-micro-p4 --batch 32 --steps 20 --threads 2
"""
import argparse
import json
import time

import torch
import torch.nn as nn

PRESETS = {
    "vit-micro-p4": dict(img=32, patch=4, dim=128, depth=6, heads=2),
    "vit-tiny-p16": dict(img=224, patch=16, dim=192, depth=12, heads=3),
}


class Block(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q * (c // self.heads) ** -0.5) @ k.transpose(-2, -1)
        x = x + self.proj((attn.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c))
        return x + self.fc2(nn.functional.gelu(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    def __init__(self, img, patch, dim, depth, heads):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + (img // patch) ** 2, dim), requires_grad=False)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


def blas_library():
    """The BLAS this process mapped: Debian's torch uses whichever libblas.so.3 the alternatives
    system points at, and the reference BLAS is ~8x slower than OpenBLAS (libopenblas0-pthread)."""
    with open("/proc/self/maps") as maps:
        libs = {line.split()[-1] for line in maps if "blas" in line.lower() and "/" in line}
    return sorted(libs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="vit-micro-p4")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = PRESETS[a.preset]
    model = ViT(**cfg)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)
    images = torch.randn(a.batch, 3, cfg["img"], cfg["img"])

    def train_step():
        opt.zero_grad(set_to_none=True)
        loss = model(images).square().mean()
        loss.backward()
        opt.step()

    for _ in range(2):
        train_step()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        train_step()
    train = a.batch * a.steps / (time.perf_counter() - t0)
    with torch.no_grad():
        model(images)
        t0 = time.perf_counter()
        for _ in range(a.steps):
            model(images)
        forward = a.batch * a.steps / (time.perf_counter() - t0)
    print(json.dumps({"preset": a.preset, "batch": a.batch, "threads": a.threads, "trainImagesPerS": round(train, 2), "forwardImagesPerS": round(forward, 2), "blas": blas_library()}))


if __name__ == "__main__":
    main()

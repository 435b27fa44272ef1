"""PyTorch peer of bench/train-step.ts: the same ViT (pre-norm, fused qkv, exact GELU,
LayerNorm eps 1e-6), batch and optimiser (AdamW, betas (0.9, 0.95), wd 0.05), on the CPU
threads given or on a CUDA GPU (--device auto takes CUDA where there is one), in strict fp32
(TF32 off), TF32 (--dtype tf32: fp32 tensors, matMuls and convolutions on the tensor cores'
TF32) or with bf16 autocast (--dtype bf16), the references for WebGPU's fp32 and mixed
(f16 subgroup-matrix) paths. Each timed step ends with a device synchronisation. Prints one
JSON line per dtype: train and forward images/s and, on CUDA, the peak memory allocated
(torch.cuda.max_memory_allocated) during each.

  /usr/bin/python3 bench/train_step_torch.py --preset vit-micro-p4 --batch 32 --steps 20 --threads 2
  python3 bench/train_step_torch.py --preset vit-base-p16 --batch 64 --device auto --dtype bf16
"""
import argparse
import contextlib
import json
import os
import time

import torch
import torch.nn as nn

PRESETS = {
    "vit-micro-p4": dict(img=32, patch=4, dim=128, depth=6, heads=2),
    "vit-tiny-p16": dict(img=224, patch=16, dim=192, depth=12, heads=3),
    "vit-small-p16": dict(img=224, patch=16, dim=384, depth=12, heads=6),
    "vit-base-p16": dict(img=224, patch=16, dim=768, depth=12, heads=12),
    "vit-large-p16": dict(img=224, patch=16, dim=1024, depth=24, heads=16),
    "vit-huge-p14": dict(img=224, patch=14, dim=1280, depth=32, heads=16),
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
    if not os.path.exists("/proc/self/maps"):
        return []
    with open("/proc/self/maps") as maps:
        libs = {line.split()[-1] for line in maps if "blas" in line.lower() and "/" in line}
    return sorted(libs)


def timed(step, steps, batch, sync, max_seconds):
    """Images/s over `steps` steps (fewer if the time budget ends first), each synchronised."""
    t0 = time.perf_counter()
    done = 0
    while done < steps:
        step()
        sync()
        done += 1
        if max_seconds > 0 and time.perf_counter() - t0 > max_seconds:
            break
    return batch * done / (time.perf_counter() - t0), done


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="vit-micro-p4")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, or auto (cuda where available)")
    ap.add_argument("--dtype", default="fp32", help="fp32, tf32, bf16 (autocast), or several comma-separated: one JSON line each")
    ap.add_argument("--max-seconds", type=float, default=0)
    a = ap.parse_args()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = PRESETS[a.preset]
    model = ViT(**cfg).to(device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)
    images = torch.randn(a.batch, 3, cfg["img"], cfg["img"], device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for dtype in a.dtype.split(","):
        if dtype not in ("fp32", "tf32", "bf16"):
            raise SystemExit(f"--dtype {dtype}: expected fp32, tf32 or bf16")
        # fp32 is strict (PyTorch lets cuDNN's convolutions use TF32 by default)
        torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
        torch.backends.cudnn.allow_tf32 = dtype == "tf32"
        measure(model, opt, images, a, device, dtype, sync)


def measure(model, opt, images, a, device, dtype, sync):
    autocast = (lambda: torch.autocast(device_type=device, dtype=torch.bfloat16)) if dtype == "bf16" else contextlib.nullcontext

    def train_step():
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = model(images).float().square().mean()
        loss.backward()
        opt.step()

    def forward():
        with torch.no_grad(), autocast():
            model(images)

    cuda = device == "cuda"
    peak = lambda: round(torch.cuda.max_memory_allocated() / 2**20) if cuda else None
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for _ in range(2):
        train_step()
    sync()
    train, train_steps = timed(train_step, a.steps, a.batch, sync, a.max_seconds)
    train_peak = peak()
    forward()
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    fwd, forward_steps = timed(forward, a.steps, a.batch, sync, a.max_seconds)
    print(json.dumps({
        "preset": a.preset, "batch": a.batch, "device": device, "dtype": dtype,
        "gpu": torch.cuda.get_device_name() if device == "cuda" else None, "torch": torch.__version__,
        "threads": a.threads, "trainSteps": train_steps, "forwardSteps": forward_steps,
        "trainImagesPerS": round(train, 2), "forwardImagesPerS": round(fwd, 2), "blas": blas_library() if device == "cpu" else [],
        "trainPeakMiB": train_peak, "forwardPeakMiB": peak(),
    }), flush=True)


if __name__ == "__main__":
    main()

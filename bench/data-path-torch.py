"""torchvision twin of bench/data-path.ts: the same 2-global-view MIM-Refiner augmentation
(docs/method.md "Views", BYOL order) over the same JPEG folder, with a DataLoader of
2 worker processes. Prints one line `torchvision images/s: <rate>` for the TS bench to parse.

usage: /usr/bin/python3 bench/data-path-torch.py <folder> [--size 224] [--batch 64]
       [--workers 2] [--warmup-batches 1]
"""
import argparse
import os
import time

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T


def view(size, blur_p, solarize_p):
    # BYOL kernel: ~10% of the image side, odd (23 at 224).
    kernel = 2 * int(size * 0.1 / 2) + 1
    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.25, 1.0), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(0.5),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
        T.RandomGrayscale(0.2),
        T.RandomApply([T.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=blur_p),
        T.RandomSolarize(128, p=solarize_p),
        T.ToTensor(),
        T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ])


class TwoViews(Dataset):
    def __init__(self, folder, size):
        self.files = sorted(
            os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs if f.lower().endswith((".jpg", ".jpeg", ".png"))
        )
        self.views = [view(size, 1.0, 0.0), view(size, 0.1, 0.2)]

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        with open(self.files[i], "rb") as f:
            img = Image.open(f).convert("RGB")
        return tuple(v(img) for v in self.views)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--warmup-batches", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(1)
    ds = TwoViews(args.folder, args.size)
    loader = DataLoader(ds, batch_size=args.batch, num_workers=args.workers, shuffle=False, drop_last=True)
    n = 0
    it = iter(loader)
    for b, (v0, v1) in enumerate(it):
        if b == args.warmup_batches - 1:
            # Clock starts once the first batches are out (worker start-up excluded).
            start, cpu0, n = time.perf_counter(), cpu_seconds(it), 0
        elif b >= args.warmup_batches:
            n += v0.shape[0]
            end, cpu1 = time.perf_counter(), cpu_seconds(it)  # workers still alive here
    rate = n / (end - start)
    cpu_ms = 1000 * (cpu1 - cpu0) / n
    print(f"torchvision {torch.__version__} images/s: {rate:.1f}  cpu ms/image: {cpu_ms:.1f}  "
          f"({len(ds)} files, {args.workers} workers, batch {args.batch}, size {args.size})")


def cpu_seconds(it):
    """CPU time of this process and of the DataLoader's worker processes (load-independent cost)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = time.process_time()
    for w in getattr(it, "_workers", []):
        try:
            with open(f"/proc/{w.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        except (FileNotFoundError, ValueError):
            pass
    return total


if __name__ == "__main__":
    main()

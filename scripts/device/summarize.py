"""Device kit summary (scripts/device/run.sh calls it last): one JSON object from the parts' logs,
printed as the last line and written to $OUT/summary.json.

WebGPU (tfjs-webgpu's own kernels; with the fused WGSL kernels; with those and the tiled WGSL
matMul) and PyTorch train/forward images/s and effective TFLOP/s per model, the WebGPU/PyTorch
ratios and each WGSL variant's speed-up over tfjs-webgpu's own kernels, the ten most expensive
kernels of one ViT-B train step each way (and the share of the step's wall time the GPU spent in
kernels), a 4096^3 matMul both ways, the refine's images/s and data_wait_share (from its
metrics.jsonl), GPU utilisation sampled by nvidia-smi during each part, the adapter, the
WebGPU-vs-wasm parity each way, and each part's exit status.
"""
import argparse
import datetime
import json
import os
import statistics


def json_lines(path):
    """Every line of a log that parses as a JSON object."""
    out = []
    if not os.path.exists(path):
        return out
    with open(path, errors="replace") as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    return out


def phases(work):
    out = {}
    path = os.path.join(work, "phases.txt")
    if os.path.exists(path):
        for line in open(path):
            name, t0, t1, rc = line.split()
            out[name] = {"start": float(t0), "end": float(t1), "exit": int(rc), "seconds": round(float(t1) - float(t0), 1)}
    return out


def gpu_samples(out_dir):
    """(unix time, utilisation %, memory MiB) from nvidia-smi's csv."""
    path = os.path.join(out_dir, "gpu.csv")
    samples = []
    if not os.path.exists(path):
        return samples
    for line in open(path, errors="replace"):
        cells = [c.strip() for c in line.split(",")]
        if len(cells) < 4:
            continue
        try:
            t = datetime.datetime.strptime(cells[0], "%Y/%m/%d %H:%M:%S.%f").timestamp()
            samples.append((t, float(cells[2]), float(cells[3])))
        except ValueError:
            continue
    return samples


def utilisation(samples, phase):
    inside = [(u, m) for t, u, m in samples if phase["start"] <= t <= phase["end"]]
    if not inside:
        return None
    return {"mean_pct": round(statistics.mean(u for u, _ in inside), 1), "max_pct": max(u for u, _ in inside),
            "max_memory_mib": max(m for _, m in inside), "samples": len(inside)}


def refine_metrics(work):
    """Images/s and data_wait_share over the steps after the first three (shader compilation, queue fill)."""
    path = os.path.join(work, "refine-run", "metrics.jsonl")
    rows = json_lines(path)
    if not rows:
        return {"steps": 0}
    steady = rows[3:] or rows
    # a step's wall time is images / images_per_s; the batch size cancels out of the share
    times = [1 / r["images_per_s"] for r in steady if r.get("images_per_s")]
    waits = [r["data_wait_share"] / r["images_per_s"] for r in steady if r.get("images_per_s")]
    return {
        "steps": rows[-1]["step"],
        "steps_measured": len(steady),
        "images_per_s_median": round(statistics.median(r["images_per_s"] for r in steady), 2),
        "data_wait_share": round(sum(waits) / sum(times), 5) if times else None,
        "loss_first": rows[0].get("loss"),
        "loss_last": rows[-1].get("loss"),
    }


def parity(path):
    """The max relative difference that scripts/check-webgpu.ts prints last, and its adapter line."""
    if not os.path.exists(path):
        return None
    out = {}
    for line in open(path, errors="replace"):
        if line.startswith("webgpu vs wasm: max relative difference"):
            out["max_relative_difference"] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("webgpu adapter:") or line.startswith("loss webgpu"):
            out[line.split(":")[0].split(" ")[0] + "_line"] = line.strip()
    return out or None


# how WebGPU ran (run.sh): tfjs-webgpu's own kernels; the fused WGSL kernels; those and the tiled WGSL matMul
VARIANTS = (("webgpu", ""), ("webgpu_fused", "-fused"), ("webgpu_fused_matmul", "-fused-matmul"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--tiny", default="0")
    a = ap.parse_args()
    parts = phases(a.work)
    samples = gpu_samples(a.out)
    for p in parts.values():
        p["gpu"] = utilisation(samples, p)
    probe = next(iter(json_lines(os.path.join(a.out, "adapter.log"))), {})
    torch_runs = json_lines(os.path.join(a.out, "torch.log"))
    models = {}
    for key, log in (("vit_b16", "webgpu-vit-b"), ("vit_l16", "webgpu-vit-l")):
        entry = {}
        for variant, suffix in VARIANTS:
            rows = json_lines(os.path.join(a.out, f"{log}{suffix}.log"))
            # the last report (the bench prints its train numbers before timing the forward pass)
            ours = next((r for r in reversed(rows) if "trainImagesPerS" in r), None)
            entry[variant] = ours
            if not ours:
                continue
            profile = next((r["profile"] for r in rows if "profile" in r), None)
            if profile:
                step_ms = 1000 * ours["batch"] / ours["trainImagesPerS"] if ours["trainImagesPerS"] else None
                entry[f"{variant}_profile"] = dict(profile, gpu_busy_share_of_step=round(profile["totalMs"] / step_ms, 3) if step_ms else None)
            per_image = ours["trainTflops"] / ours["trainImagesPerS"] if ours["trainImagesPerS"] else 0
            for dtype in ("fp32", "bf16"):
                t = next((r for r in torch_runs if r.get("preset") == ours["preset"] and r.get("batch") == ours["batch"] and r.get("dtype") == dtype), None)
                if t:
                    t = dict(t, trainTflops=round(t["trainImagesPerS"] * per_image, 4),
                             forwardTflops=round(t["forwardImagesPerS"] * per_image / 3, 4))
                    entry[f"torch_{dtype}"] = t
                    entry[f"{variant}_train_ratio_vs_torch_{dtype}"] = round(ours["trainImagesPerS"] / t["trainImagesPerS"], 4)
                    if ours.get("forwardImagesPerS") is not None:
                        entry[f"{variant}_forward_ratio_vs_torch_{dtype}"] = round(ours["forwardImagesPerS"] / t["forwardImagesPerS"], 4)
        plain = entry.get("webgpu")
        for variant, _ in VARIANTS[1:]:
            other = entry.get(variant)
            if plain and other and plain["trainImagesPerS"]:
                entry[f"{variant}_train_speedup"] = round(other["trainImagesPerS"] / plain["trainImagesPerS"], 4)
                if plain.get("forwardImagesPerS") and other.get("forwardImagesPerS") is not None:
                    entry[f"{variant}_forward_speedup"] = round(other["forwardImagesPerS"] / plain["forwardImagesPerS"], 4)
        models[key] = entry
    summary = {
        "parity_webgpu_vs_wasm": parity(os.path.join(a.out, "parity.log")),
        "parity_webgpu_wgsl_vs_wasm": parity(os.path.join(a.out, "parity-wgsl.log")),
        "kit": "mim-refiner-ts device kit", "tiny": a.tiny == "1",
        "adapter": probe.get("adapter"), "backend": probe.get("backend"), "matmul_fp32": probe.get("matMul"),
        "matmul_fp32_wgsl_tiled": next(iter(json_lines(os.path.join(a.out, "adapter-matmul.log"))), {}).get("matMul"),
        "models": models, "refine": dict(refine_metrics(a.work), gpu=parts.get("refine", {}).get("gpu")),
        "parts": parts,
    }
    with open(os.path.join(a.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

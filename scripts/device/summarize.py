"""Device kit summary (scripts/device/run.sh calls it last): one JSON object from the parts' logs,
printed as the last line and written to $OUT/summary.json.

WebGPU (fp32: fused WGSL kernels + tiled matMul; mixed: f16 matMuls; ViT-B fp32 with flash
attention) and PyTorch (fp32, TF32,
bf16 autocast) train/forward images/s, effective TFLOP/s and peak GPU memory per model, the
WebGPU/PyTorch ratios and mixed's and flash's speed-up over fp32, the ten most expensive kernels of one
train step each way (and the share of the step's wall time the GPU spent in kernels), the
adapter's features and matrix configs, the precision path taken, a 4096^3 matMul mixed and
fp32 with their difference, mixed vs fp32 on one ViT-B train step, the refine's images/s (fp32, and with --precision mixed its loss scale and skipped steps) and
data_wait_share (from its metrics.jsonl), GPU utilisation sampled by nvidia-smi during each
part, and each part's exit status.
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


def refine_metrics(work, folder):
    """Images/s and data_wait_share over the steps after the first three (shader compilation, queue
    fill); with --precision mixed also the loss scale at the end and the steps it skipped."""
    path = os.path.join(work, folder, "metrics.jsonl")
    rows = json_lines(path)
    if not rows:
        return {"steps": 0}
    steady = rows[3:] or rows
    mixed = {"loss_scale_last": rows[-1]["loss_scale"], "skipped_steps": sum(1 for r in rows if r.get("skipped"))} if "loss_scale" in rows[-1] else {}
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
        **mixed,
    }


# how WebGPU ran (run.sh): fp32 (fused WGSL kernels + tiled matMul) and mixed (f16 matMuls)
VARIANTS = (("webgpu_fp32", ""), ("webgpu_mixed", "-mixed"), ("webgpu_fp32_flash", "-flash"))
TORCH_DTYPES = ("fp32", "tf32", "bf16")


def model_entry(out_dir, log, torch_runs):
    """One model's WebGPU variants and PyTorch dtypes, with ratios, TFLOP/s, memory and profiles."""
    entry = {}
    per_image = None
    for variant, suffix in VARIANTS:
        rows = json_lines(os.path.join(out_dir, f"{log}{suffix}.log"))
        # the last report (the bench prints its train numbers before timing the forward pass)
        ours = next((r for r in reversed(rows) if "trainImagesPerS" in r), None)
        entry[variant] = ours
        if not ours:
            continue
        if ours["trainImagesPerS"]:
            per_image = ours["trainTflops"] / ours["trainImagesPerS"]
        profile = next((r["profile"] for r in rows if "profile" in r), None)
        if profile:
            step_ms = 1000 * ours["batch"] / ours["trainImagesPerS"] if ours["trainImagesPerS"] else None
            entry[f"{variant}_profile"] = dict(profile, gpu_busy_share_of_step=round(profile["totalMs"] / step_ms, 3) if step_ms else None)
    first = next((entry[v] for v, _ in VARIANTS if entry.get(v)), None)
    for dtype in TORCH_DTYPES:
        t = first and next((r for r in torch_runs if r.get("preset") == first["preset"] and r.get("batch") == first["batch"] and r.get("dtype") == dtype), None)
        if not t:
            continue
        if per_image:
            t = dict(t, trainTflops=round(t["trainImagesPerS"] * per_image, 4), forwardTflops=round(t["forwardImagesPerS"] * per_image / 3, 4))
        entry[f"torch_{dtype}"] = t
        for variant, _ in VARIANTS:
            ours = entry.get(variant)
            if ours and t["trainImagesPerS"]:
                entry[f"{variant}_train_ratio_vs_torch_{dtype}"] = round(ours["trainImagesPerS"] / t["trainImagesPerS"], 4)
                if ours.get("forwardImagesPerS") is not None and t["forwardImagesPerS"]:
                    entry[f"{variant}_forward_ratio_vs_torch_{dtype}"] = round(ours["forwardImagesPerS"] / t["forwardImagesPerS"], 4)
    fp32 = entry.get("webgpu_fp32")
    for name, variant in (("mixed", "webgpu_mixed"), ("flash", "webgpu_fp32_flash")):
        other = entry.get(variant)
        if fp32 and other and fp32["trainImagesPerS"]:
            entry[f"{name}_train_speedup_over_fp32"] = round(other["trainImagesPerS"] / fp32["trainImagesPerS"], 4)
            if fp32.get("forwardImagesPerS") and other.get("forwardImagesPerS") is not None:
                entry[f"{name}_forward_speedup_over_fp32"] = round(other["forwardImagesPerS"] / fp32["forwardImagesPerS"], 4)
    return entry


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--smoke", default="0")
    a = ap.parse_args()
    parts = phases(a.work)
    samples = gpu_samples(a.out)
    for p in parts.values():
        p["gpu"] = utilisation(samples, p)
    probe = next(iter(json_lines(os.path.join(a.out, "adapter.log"))), {})
    torch_runs = json_lines(os.path.join(a.out, "torch.log"))
    models = {key: model_entry(a.out, log, torch_runs) for key, log in (("vit_b16", "webgpu-vit-b"), ("vit_l16", "webgpu-vit-l"))}
    mixed_parity = next(iter(json_lines(os.path.join(a.out, "mixed-parity.log"))), None)
    summary = {
        "kit": "mim-refiner-ts device kit", "smoke": a.smoke == "1",
        "adapter": probe.get("adapter"), "backend": probe.get("backend"), "capabilities": probe.get("capabilities"),
        "precision": probe.get("precision"), "matmul_mixed": probe.get("matMul"), "matmul_fp32_tfjs": probe.get("matMulFp32"),
        "mixed_vs_fp32_matmul": probe.get("mixedVsFp32MatMul"),
        "mixed_vs_fp32_step": mixed_parity,
        "models": models,
        "refine": dict(refine_metrics(a.work, "refine-run"), shards=next(iter(json_lines(os.path.join(a.out, "shards.log"))), None),
                       gpu=parts.get("refine", {}).get("gpu")),
        "refine_mixed": dict(refine_metrics(a.work, "refine-mixed-run"), gpu=parts.get("refine-mixed", {}).get("gpu")),
        "parts": parts,
    }
    with open(os.path.join(a.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

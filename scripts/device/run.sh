#!/usr/bin/env bash
# Device kit run (built by scripts/device/build-kit.sh): one command that measures the WebGPU
# backend on this machine's GPU next to PyTorch on the same GPU, in under 8 minutes:
# - the adapter: features, subgroup sizes, subgroup-matrix configs, limits, the precision path
#   taken and why; a 4096^3 matMul mixed (f16) and fp32, and their largest relative difference;
# - mixed vs fp32 on one ViT-B/16 train step (loss, CLS features, every gradient) and a
#   loss-scaled step (scripts/device/mixed-parity.ts);
# - ViT-B/16 batch 64 and ViT-L/16 batch 32, train step and forward, WebGPU fp32 (fused WGSL
#   kernels + tiled matMul) and mixed (f16 matMuls: subgroup matrices where offered), each with
#   a per-kernel profile (top 10) and the peak GPU memory of tfjs's buffers (pool capped by
#   WEBGPU_POOL_MIB); ViT-B fp32 also with the flash attention (WEBGPU_FLASH=1); PyTorch fp32
#   (strict), TF32 and bf16 autocast with torch.cuda.max_memory_allocated;
# - a refine of a ViT-B/16 at 224 px from JPEG shards made and decoded on this machine's CPUs
#   (images/s, data_wait_share), fp32 for 80 s and with --precision mixed for 60 s (the loss
#   scale and the steps it skipped).
#   bash .kit/run.sh            the NVIDIA machine (about 8 min; every part capped)
#   bash .kit/run.sh --smoke    tiny shapes on a software Vulkan (lavapipe): the kit's dry run
# Each part runs under its own timeout, so a failing part leaves the others' numbers; each
# part's log goes to $OUT (default: .kit/results) as it runs; the last line printed is one JSON
# summary (also $OUT/summary.json). Needs no network; Node comes with the kit, python3 (with
# torch) and nvidia-smi are used where present.
set -uo pipefail
kit="$(cd "$(dirname "$0")" && pwd)"
smoke=0
[[ "${1:-}" == --smoke || "${1:-}" == --tiny ]] && smoke=1
OUT="${OUT:-$kit/results}"
mkdir -p "$OUT"
work="$(mktemp -d /tmp/kit.XXXXXX)"
started=$(date +%s)
phases="$work/phases.txt"
say() { echo "[kit $(($(date +%s) - started))s] $*"; }

say "unpacking into $work"
if command -v xz >/dev/null; then
  xz -T0 -dc "$kit/payload.tar.xz" | tar -C "$work" -xf -
else
  python3 -c "import lzma, tarfile, sys; tarfile.open(fileobj=lzma.open(sys.argv[1])).extractall(sys.argv[2])" "$kit/payload.tar.xz" "$work"
fi
chmod +x "$work/node"
export DAWN_NODE="$work/dawn.node" TFJS_BACKEND=webgpu XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"

# the Vulkan loader and GLVND (NVIDIA's ICD, libGLX_nvidia.so.0, needs GLVND's dispatch
# libraries): the system's where ldconfig knows them, else Debian's from the kit, unpacked here (not into /)
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1' || ! ldconfig -p 2>/dev/null | grep -q 'libGLdispatch\.so\.0'; then
  for deb in "$kit"/*.deb; do
    dpkg -x "$deb" "$work/vulkan" 2>/dev/null || (cd "$work" && mkdir -p vulkan && ar x "$deb" data.tar.xz && tar -C vulkan -xf data.tar.xz && rm -f data.tar.xz)
  done
  export LD_LIBRARY_PATH="$work/vulkan/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  # Dawn also looks beside dawn.node
  cp -P "$work"/vulkan/usr/lib/x86_64-linux-gnu/libvulkan.so.1* "$work/"
  say "Vulkan loader and GLVND from the kit's .debs"
fi
# the NVIDIA driver's ICD, where the loader's default search paths miss it
nvidia_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [[ -z "${VK_ICD_FILENAMES:-}${VK_DRIVER_FILES:-}" && -f "$nvidia_icd" ]] && ! ls /usr/share/vulkan/icd.d/*nvidia* /etc/vulkan/icd.d/*nvidia* >/dev/null 2>&1; then
  export VK_ICD_FILENAMES="$nvidia_icd"
  say "VK_ICD_FILENAMES=$nvidia_icd"
fi
# --smoke on a machine without a GPU: the project's lavapipe (npm run setup:vulkan), if beside the kit
if [[ $smoke == 1 && -z "${SOFTWARE_VULKAN_DIR:-}" && -f "$kit/../.cache/vulkan/icd.json" ]]; then
  export SOFTWARE_VULKAN_DIR="$(cd "$kit/../.cache/vulkan" && pwd)"
fi

# the first python3 that has torch (the GPU machine's python3; Debian's python3-torch here)
python=""
for p in python3 /usr/bin/python3; do
  if command -v "$p" >/dev/null && "$p" -c 'import torch' 2>/dev/null; then python=$(command -v "$p"); break; fi
done
summarize_python=$(command -v python3 || true)
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=timestamp,name,utilization.gpu,memory.used --format=csv,noheader,nounits -lms 500 >"$OUT/gpu.csv" 2>/dev/null &
  smi=$!
fi

# part NAME TIMEOUT_S LOG CMD...: runs CMD under a timeout (SIGINT first, SIGKILL 10 s later), output to $OUT/LOG
part() {
  local name=$1 limit=$2 log=$3
  shift 3
  say "$name (limit ${limit}s)"
  local t0=$(date +%s.%N)
  (cd "$work" && timeout -s INT -k 10 "$limit" "$@") >>"$OUT/$log" 2>&1
  local rc=$?
  echo "$name $t0 $(date +%s.%N) $rc" >>"$phases"
  say "$name: exit $rc"
}

if [[ $smoke == 1 ]]; then
  probe=(--size 256 --reps 2)
  parity=(--preset vit-micro-p4 --batch 2)
  bench_b=(--preset vit-micro-p4 --batch 4 --steps 2)
  bench_l=(--preset vit-micro-p4 --batch 2 --steps 2)
  torch_b=("${bench_b[@]}"); torch_l=("${bench_l[@]}")
  shards=(--count 128 --shards 2 --size 64)
  refine=(--preset vit-micro-p4 --max-steps 3 --batch 8 --local-views 2)
  shards_s=60; probe_s=120; parity_s=150; bench_s=150; torch_s=120; refine_s=240; refine_mixed_s=240
else
  probe=(--size 4096 --reps 10)
  parity=(--preset vit-base-p16 --batch 8)
  bench_b=(--preset vit-base-p16 --batch 64 --steps 20 --max-seconds 8)
  bench_l=(--preset vit-large-p16 --batch 32 --steps 20 --max-seconds 8)
  torch_b=(--preset vit-base-p16 --batch 64 --steps 20 --max-seconds 4)
  torch_l=(--preset vit-large-p16 --batch 32 --steps 20 --max-seconds 4)
  shards=(--count 4096 --shards 8 --size 256)
  refine=(--preset vit-base-p16 --batch 64 --local-views 2)
  # caps: 20 + 25 + 35 + 3 x 40 + 2 x 45 + 30 + 40 + 80 + 60 = 500 s (the H200 ran such parts in
  # 60-75% of these), plus unpacking and the summary
  shards_s=20; probe_s=25; parity_s=35; bench_b_s=40; bench_l_s=45; torch_b_s=30; torch_l_s=40; refine_s=80; refine_mixed_s=60
fi
bench_b_s=${bench_b_s:-$bench_s}; bench_l_s=${bench_l_s:-$bench_s}; torch_b_s=${torch_b_s:-$torch_s}; torch_l_s=${torch_l_s:-$torch_s}
# a per-kernel profile of one train step after each ViT timing (bench/train-step.ts --profile)
bench_b+=(--profile); bench_l+=(--profile)

# WebGPU fp32: the fused WGSL kernels and the tiled matMul; mixed: the same with f16 matMuls
fp32=(env WEBGPU_FUSED=1 WEBGPU_MATMUL=1 WEBGPU_PRECISION=fp32)
mixed=(env WEBGPU_FUSED=1 WEBGPU_MATMUL=1 WEBGPU_PRECISION=mixed)
# JPEG shards for the refine, on this machine's CPUs, first (no GPU part is running)
part shards "$shards_s" shards.log "$work/node" make-shards.js --src "data/cifar10-mini/train-*.tar.gz" --out "$work/shards" "${shards[@]}"
part adapter "$probe_s" adapter.log "${mixed[@]}" "$work/node" adapter.js "${probe[@]}"
part mixed-parity "$parity_s" mixed-parity.log "${mixed[@]}" "$work/node" mixed-parity.js "${parity[@]}"
part webgpu-vit-b "$bench_b_s" webgpu-vit-b.log "${fp32[@]}" "$work/node" train-step.js --no-torch "${bench_b[@]}"
part webgpu-vit-b-mixed "$bench_b_s" webgpu-vit-b-mixed.log "${mixed[@]}" "$work/node" train-step.js --no-torch "${bench_b[@]}"
part webgpu-vit-b-flash "$bench_b_s" webgpu-vit-b-flash.log "${fp32[@]}" WEBGPU_FLASH=1 "$work/node" train-step.js --no-torch "${bench_b[@]}"
part webgpu-vit-l "$bench_l_s" webgpu-vit-l.log "${fp32[@]}" "$work/node" train-step.js --no-torch "${bench_l[@]}"
part webgpu-vit-l-mixed "$bench_l_s" webgpu-vit-l-mixed.log "${mixed[@]}" "$work/node" train-step.js --no-torch "${bench_l[@]}"
if [[ -n "$python" ]]; then
  part torch-vit-b "$torch_b_s" torch.log "$python" train_step_torch.py --device auto --dtype fp32,tf32,bf16 "${torch_b[@]}"
  part torch-vit-l "$torch_l_s" torch.log "$python" train_step_torch.py --device auto --dtype fp32,tf32,bf16 "${torch_l[@]}"
fi
part refine "$refine_s" refine.log "${fp32[@]}" "$work/node" refine.js --checkpoint none --train "$work/shards/train-*.tar" --val none \
  --skip-knn --stages 3 --out "$work/refine-run" "${refine[@]}"
# the same refine with --precision mixed: f16 matMuls and the dynamic loss scale in the real training loop
part refine-mixed "$refine_mixed_s" refine-mixed.log "${fp32[@]}" "$work/node" refine.js --checkpoint none --train "$work/shards/train-*.tar" --val none \
  --skip-knn --stages 3 --precision mixed --out "$work/refine-mixed-run" "${refine[@]}"

[[ -n "${smi:-}" ]] && kill "$smi" 2>/dev/null
say "done in $(($(date +%s) - started))s"
if [[ -n "$summarize_python" ]]; then
  "$summarize_python" "$kit/summarize.py" --out "$OUT" --work "$work" --smoke "$smoke"
else
  "$work/node" -e 'console.log(JSON.stringify({ error: "no python3 here to summarise; see the logs in " + process.argv[1] }))' "$OUT"
fi

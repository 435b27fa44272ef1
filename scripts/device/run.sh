#!/usr/bin/env bash
# Device kit run (built by scripts/device/build-kit.sh): measures the WebGPU backend on this
# machine's GPU next to PyTorch on the same GPU, with tfjs-webgpu's own kernels, with the fused
# WGSL kernels (WEBGPU_FUSED=1, models/kernels-webgpu) and with those and the tiled WGSL matMul
# (WEBGPU_MATMUL=1), a per-kernel profile of one ViT-B train step each way, and a 1-minute refine
# of the bundled default.
#   bash .kit/run.sh            ViT-B/16 224 batch 64 and ViT-L/16 batch 32 (NVIDIA machine, about 6-7 min)
#   bash .kit/run.sh --tiny     tiny shapes, for a software Vulkan (lavapipe) check of the kit
# Every part runs under its own timeout, so a failing part leaves the others' numbers; each
# part's log goes to $OUT (default: .kit/results) as it runs; the last line printed is one JSON
# summary (also $OUT/summary.json). Needs no network; Node comes with the kit, python3 (with
# torch) and nvidia-smi are used where present.
set -uo pipefail
kit="$(cd "$(dirname "$0")" && pwd)"
tiny=0
[[ "${1:-}" == --tiny ]] && tiny=1
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
# --tiny on a machine without a GPU: the project's lavapipe (npm run setup:vulkan), if beside the kit
if [[ $tiny == 1 && -z "${SOFTWARE_VULKAN_DIR:-}" && -f "$kit/../.cache/vulkan/icd.json" ]]; then
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

# part NAME TIMEOUT_S LOG CMD...: runs CMD under a timeout (SIGINT first, SIGKILL 15 s later), output to $OUT/LOG
part() {
  local name=$1 limit=$2 log=$3
  shift 3
  say "$name (limit ${limit}s)"
  local t0=$(date +%s.%N)
  (cd "$work" && timeout -s INT -k 15 "$limit" "$@") >>"$OUT/$log" 2>&1
  local rc=$?
  echo "$name $t0 $(date +%s.%N) $rc" >>"$phases"
  say "$name: exit $rc"
}

if [[ $tiny == 1 ]]; then
  probe=(--size 256 --reps 2)
  bench_b=(--preset vit-micro-p4 --batch 4 --steps 2)
  bench_l=(--preset vit-micro-p4 --batch 2 --steps 2)
  torch_b=("${bench_b[@]}"); torch_l=("${bench_l[@]}")
  refine=(--max-steps 2 --batch 8 --local-views 2)
  refine_s=240; bench_s=240; torch_s=120; parity_s=120
else
  probe=(--size 4096 --reps 10)
  bench_b=(--preset vit-base-p16 --batch 64 --steps 20 --max-seconds 15)
  bench_l=(--preset vit-large-p16 --batch 32 --steps 20 --max-seconds 15)
  torch_b=(--preset vit-base-p16 --batch 64 --steps 20 --max-seconds 8)
  torch_l=(--preset vit-large-p16 --batch 32 --steps 20 --max-seconds 8)
  refine=()
  # measured on an H200 before the WGSL parts, with 25 s timed loops: 6 s parity, 29-33 s ViT-B,
  # 44 s ViT-L, 16-22 s PyTorch. Every part at its limit would take 2 x 30 + 2 x 45 + 5 x 70 + 2 x 45 + 60 s
  refine_s=60; bench_s=70; torch_s=45; parity_s=45
fi
# a per-kernel profile of one ViT-B train step after its timing (bench/train-step.ts --profile)
bench_b+=(--profile)

# the ways WebGPU runs: tfjs-webgpu's own kernels; the fused WGSL kernels; those and the tiled matMul
plain=(env WEBGPU_FUSED=0 WEBGPU_MATMUL=0)
fused=(env WEBGPU_FUSED=1 WEBGPU_MATMUL=0)
all=(env WEBGPU_FUSED=1 WEBGPU_MATMUL=1)
# a square fp32 matMul: tfjs-webgpu's, then the tiled WGSL one
part adapter 30 adapter.log "${plain[@]}" "$work/node" adapter.js "${probe[@]}"
part adapter-matmul 30 adapter-matmul.log "${all[@]}" "$work/node" adapter.js "${probe[@]}"
# the same refine step on this GPU and on wasm (this machine's CPU), compared (scripts/check-webgpu.ts)
part parity "$parity_s" parity.log "${plain[@]}" "$work/node" check-webgpu.js
part parity-wgsl "$parity_s" parity-wgsl.log "${all[@]}" "$work/node" check-webgpu.js
part webgpu-vit-b "$bench_s" webgpu-vit-b.log "${plain[@]}" "$work/node" train-step.js --no-torch "${bench_b[@]}"
part webgpu-vit-b-fused "$bench_s" webgpu-vit-b-fused.log "${fused[@]}" "$work/node" train-step.js --no-torch "${bench_b[@]}"
part webgpu-vit-b-fused-matmul "$bench_s" webgpu-vit-b-fused-matmul.log "${all[@]}" "$work/node" train-step.js --no-torch "${bench_b[@]}"
part webgpu-vit-l "$bench_s" webgpu-vit-l.log "${plain[@]}" "$work/node" train-step.js --no-torch "${bench_l[@]}"
part webgpu-vit-l-fused-matmul "$bench_s" webgpu-vit-l-fused-matmul.log "${all[@]}" "$work/node" train-step.js --no-torch "${bench_l[@]}"
if [[ -n "$python" ]]; then
  part torch-vit-b "$torch_s" torch.log "$python" train_step_torch.py --device auto --dtype fp32,bf16 "${torch_b[@]}"
  part torch-vit-l "$torch_s" torch.log "$python" train_step_torch.py --device auto --dtype fp32,bf16 "${torch_l[@]}"
fi
part refine "$refine_s" refine.log "${plain[@]}" "$work/node" refine.js --skip-knn --out "$work/refine-run" "${refine[@]}"

[[ -n "${smi:-}" ]] && kill "$smi" 2>/dev/null
say "done in $(($(date +%s) - started))s"
if [[ -n "$summarize_python" ]]; then
  "$summarize_python" "$kit/summarize.py" --out "$OUT" --work "$work" --tiny "$tiny"
else
  "$work/node" -e 'console.log(JSON.stringify({ error: "no python3 here to summarise; see the logs in " + process.argv[1] }))' "$OUT"
fi

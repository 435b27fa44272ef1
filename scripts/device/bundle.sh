#!/usr/bin/env bash
# The device kit's JavaScript (scripts/device/build-kit.sh, and spec/device-kit.spec.ts, which loads
# the bundled refine): an esbuild bundle of the kit's entries into OUT, with the fused wasm kernels
# and the one package the kit carries (sharp with its native parts) beside it. dawn.node comes from DAWN_NODE at run time (the `webgpu` package is ESM around it);
# sharp stays a package beside the bundle for its native parts; `require.main === module` would
# hold in every module of a bundle, so it is defined away and refine gets its own entry; koffi
# (MPI) is only required under an MPI launcher, which the kit does not use. Anything else a module
# resolves when it is loaded must be in the bundle: the kit carries no other package.
# Usage: bash scripts/device/bundle.sh OUT
set -euo pipefail
cd "$(dirname "$0")/../.."
out="$1"
mkdir -p "$out"
npx esbuild --bundle --platform=node --target=node20 --format=cjs --log-level=error \
  --external:webgpu --external:sharp --external:koffi --define:require.main=undefined --outdir="$out" \
  refine=scripts/device/refine-main.ts train-step=bench/train-step.ts adapter=scripts/device/adapter.ts \
  mixed-parity=scripts/device/mixed-parity.ts make-shards=scripts/device/make-shards.ts \
  batch-worker=datapath/batch-worker.ts augment-worker=operators/augment-worker.ts
# the fused wasm kernels sit beside the bundle, where models/kernels looks for them (wasm fallback only)
cp models/kernels/*.wasm "$out/"
# sharp and its native parts (the data path decodes images with it)
for pkg in sharp @img/colour @img/sharp-linux-x64 @img/sharp-libvips-linux-x64 detect-libc semver; do
  mkdir -p "$out/node_modules/$pkg"
  cp -r "node_modules/$pkg/." "$out/node_modules/$pkg/"
done

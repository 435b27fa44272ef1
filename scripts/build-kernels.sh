#!/bin/sh
# Assembles models/kernels/*.c into the .wasm files committed beside them (Debian: clang, lld).
# Two builds of each: one importing a plain memory (tfjs-wasm's single-threaded build), one
# importing a shared memory (its threaded build, whose heap is a SharedArrayBuffer).
# spec/attention-kernel.spec.ts checks the committed files match this output when clang is installed.
set -eu
cd "$(dirname "$0")/../models/kernels"
for src in *.c; do
  name="${src%.c}"
  # exports: the file's non-static functions (top-level definitions starting 'void ' or 'f32 ')
  exports=$(sed -n 's/^\(void\|f32\) \([a-z_0-9]*\)(.*/-Wl,--export=\2/p' "$src" | tr '\n' ' ')
  common="--target=wasm32 -O3 -msimd128 -nostdlib -fno-builtin -Wl,--no-entry -Wl,--import-memory $exports"
  # shellcheck disable=SC2086
  clang $common -o "$name.wasm" "$src"
  # shellcheck disable=SC2086
  clang $common -matomics -mbulk-memory -Wl,--shared-memory -Wl,--max-memory=4294967296 -o "$name.shared.wasm" "$src"
done

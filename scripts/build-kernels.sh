#!/bin/sh
# Assembles models/kernels/*.c into the .wasm files committed beside them (Debian: clang-19, lld-19;
# CLANG=... to use another clang with relaxed-SIMD support).
# Two builds of each: one importing a plain memory (tfjs-wasm's single-threaded build), one
# importing a shared memory (its threaded build, whose heap is a SharedArrayBuffer). Sources that
# use MADD (simd-math.h) are built twice more with relaxed SIMD (fused multiply-add), which
# models/kernels/wasm-module.ts loads where the engine accepts it.
# spec/wasm-kernels.spec.ts checks the committed files match this output when the compiler is installed.
set -eu
CLANG="${CLANG:-clang-19}"
case "${1:-}" in
  '') ;;
  -h | --help) sed -n '2,/^set -eu/{/^set -eu/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
  *) echo "error: build-kernels.sh takes no arguments (got '$1'); CLANG=... picks the compiler" >&2; exit 2 ;;
esac
if ! command -v "$CLANG" >/dev/null 2>&1; then
  echo "error: $CLANG not found. Install clang-19 and lld-19 (Debian: apt-get install clang-19 lld-19) or set CLANG to a clang with relaxed-SIMD support. Nothing needs it to run: the built .wasm files are committed." >&2
  exit 1
fi
cd "$(dirname "$0")/../models/kernels"
for src in *.c; do
  name="${src%.c}"
  # exports: the file's non-static functions (top-level definitions starting 'void ' or 'f32 ')
  exports=$(sed -n 's/^\(void\|f32\) \([a-z_0-9]*\)(.*/-Wl,--export=\2/p' "$src" | tr '\n' ' ')
  common="--target=wasm32 -O3 -msimd128 -nostdlib -fno-builtin -Wl,--no-entry -Wl,--import-memory $exports"
  shared="-matomics -mbulk-memory -Wl,--shared-memory -Wl,--max-memory=4294967296"
  variants="plain"
  if grep -q "MADD(" "$src"; then variants="plain relaxed"; fi
  for variant in $variants; do
    if [ "$variant" = relaxed ]; then flags="-mrelaxed-simd"; suffix=".relaxed"; else flags=""; suffix=""; fi
    # shellcheck disable=SC2086
    "$CLANG" $common $flags -o "$name$suffix.wasm" "$src"
    # shellcheck disable=SC2086
    "$CLANG" $common $flags $shared -o "$name$suffix.shared.wasm" "$src"
  done
done

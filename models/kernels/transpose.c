/*
 * 2-D transpose in 4x4 SIMD tiles. The linear layers' gradients transpose every activation
 * matrix once per step (tfjs-wasm's matMul is fast only untransposed), and tfjs-wasm's own
 * Transpose walks the output element by element.
 */
#include "simd-math.h"

/* out[c, r] = x[r, c] for x [rows, cols], for the rows r0 <= r < r1. */
void transpose_2d(const f32 *x, f32 *out, int rows, int cols, int r0, int r1) {
  int r = r0;
  for (; r + 4 <= r1; r += 4) {
    const f32 *x0 = x + r * cols, *x1 = x0 + cols, *x2 = x1 + cols, *x3 = x2 + cols;
    int c = 0;
    for (; c + 4 <= cols; c += 4) {
      v128_t a = wasm_v128_load(x0 + c), b = wasm_v128_load(x1 + c), d = wasm_v128_load(x2 + c), e = wasm_v128_load(x3 + c);
      v128_t ab_lo = wasm_i32x4_shuffle(a, b, 0, 4, 1, 5), ab_hi = wasm_i32x4_shuffle(a, b, 2, 6, 3, 7);
      v128_t de_lo = wasm_i32x4_shuffle(d, e, 0, 4, 1, 5), de_hi = wasm_i32x4_shuffle(d, e, 2, 6, 3, 7);
      f32 *o = out + c * rows + r;
      wasm_v128_store(o, wasm_i32x4_shuffle(ab_lo, de_lo, 0, 1, 4, 5));
      wasm_v128_store(o + rows, wasm_i32x4_shuffle(ab_lo, de_lo, 2, 3, 6, 7));
      wasm_v128_store(o + 2 * rows, wasm_i32x4_shuffle(ab_hi, de_hi, 0, 1, 4, 5));
      wasm_v128_store(o + 3 * rows, wasm_i32x4_shuffle(ab_hi, de_hi, 2, 3, 6, 7));
    }
    for (; c < cols; c++) {
      f32 *o = out + c * rows + r;
      o[0] = x0[c]; o[1] = x1[c]; o[2] = x2[c]; o[3] = x3[c];
    }
  }
  for (; r < r1; r++)
    for (int c = 0; c < cols; c++) out[c * rows + r] = x[r * cols + c];
}

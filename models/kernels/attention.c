/*
 * Multi-head self-attention core, forward and backward, as WebAssembly SIMD kernels that run
 * directly on the tfjs wasm backend's heap (see attention.ts). Why: tfjs-wasm computes
 * batched matMuls ([G,T,d] x [G,d,T]) on a scalar path at ~2 GFLOP/s, and attention is
 * nearly half of a ViT train step there. One call covers the head split, Q K^T, softmax,
 * P V and the head merge, so no transposes or intermediates go through tfjs either.
 *
 * Layouts (row-major float32, B samples, T tokens, H heads, hd = head width, D = H * hd):
 *   qkv  [B, T, 3, H, hd]  the qkv linear's output rows, as timm's reshape(B, N, 3, H, hd)
 *   out  [B, T, H, hd]     ready for the output projection
 *   p    [B, H, T, T]      softmax probabilities, kept for the backward pass
 * Each entry point handles heads g0 <= g < g1 (g = b * H + h), so several threads can split
 * one call. No static data and no stack use: every byte written is in the buffers passed in.
 */
#include "simd-math.h"

/*
 * C[M, N] = A[M, K] @ B[K, N]. A is read through strides (element (i, k) at
 * A[i * ars + k * acs]) so a transposed A costs nothing; B and C rows are contiguous.
 * Register tile: 4 rows x 8 columns, B rows loaded as vectors, A broadcast; MADD is fused
 * with relaxed SIMD (simd-math.h).
 */
static void gemm(int M, int N, int K, const f32 *A, int ars, int acs, const f32 *B, int ldb, f32 *C, int ldc) {
  int i = 0;
  for (; i + 4 <= M; i += 4) {
    const f32 *a0 = A + i * ars, *a1 = a0 + ars, *a2 = a1 + ars, *a3 = a2 + ars;
    int j = 0;
    for (; j + 8 <= N; j += 8) {
      v128_t c00 = wasm_f32x4_splat(0), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
      for (int k = 0; k < K; k++) {
        const f32 *b = B + k * ldb + j;
        v128_t b0 = wasm_v128_load(b), b1 = wasm_v128_load(b + 4);
        v128_t x0 = wasm_f32x4_splat(a0[k * acs]), x1 = wasm_f32x4_splat(a1[k * acs]);
        v128_t x2 = wasm_f32x4_splat(a2[k * acs]), x3 = wasm_f32x4_splat(a3[k * acs]);
        c00 = MADD(x0, b0, c00); c01 = MADD(x0, b1, c01);
        c10 = MADD(x1, b0, c10); c11 = MADD(x1, b1, c11);
        c20 = MADD(x2, b0, c20); c21 = MADD(x2, b1, c21);
        c30 = MADD(x3, b0, c30); c31 = MADD(x3, b1, c31);
      }
      f32 *c = C + i * ldc + j;
      wasm_v128_store(c, c00); wasm_v128_store(c + 4, c01); c += ldc;
      wasm_v128_store(c, c10); wasm_v128_store(c + 4, c11); c += ldc;
      wasm_v128_store(c, c20); wasm_v128_store(c + 4, c21); c += ldc;
      wasm_v128_store(c, c30); wasm_v128_store(c + 4, c31);
    }
    for (; j + 4 <= N; j += 4) {
      v128_t c0 = wasm_f32x4_splat(0), c1 = c0, c2 = c0, c3 = c0;
      for (int k = 0; k < K; k++) {
        v128_t b0 = wasm_v128_load(B + k * ldb + j);
        c0 = MADD(wasm_f32x4_splat(a0[k * acs]), b0, c0);
        c1 = MADD(wasm_f32x4_splat(a1[k * acs]), b0, c1);
        c2 = MADD(wasm_f32x4_splat(a2[k * acs]), b0, c2);
        c3 = MADD(wasm_f32x4_splat(a3[k * acs]), b0, c3);
      }
      f32 *c = C + i * ldc + j;
      wasm_v128_store(c, c0); wasm_v128_store(c + ldc, c1); wasm_v128_store(c + 2 * ldc, c2); wasm_v128_store(c + 3 * ldc, c3);
    }
    for (; j < N; j++) {
      f32 s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (int k = 0; k < K; k++) {
        f32 b = B[k * ldb + j];
        s0 += a0[k * acs] * b; s1 += a1[k * acs] * b; s2 += a2[k * acs] * b; s3 += a3[k * acs] * b;
      }
      C[i * ldc + j] = s0; C[(i + 1) * ldc + j] = s1; C[(i + 2) * ldc + j] = s2; C[(i + 3) * ldc + j] = s3;
    }
  }
  for (; i < M; i++) {
    const f32 *a = A + i * ars;
    int j = 0;
    for (; j + 4 <= N; j += 4) {
      v128_t c0 = wasm_f32x4_splat(0);
      for (int k = 0; k < K; k++) c0 = MADD(wasm_f32x4_splat(a[k * acs]), wasm_v128_load(B + k * ldb + j), c0);
      wasm_v128_store(C + i * ldc + j, c0);
    }
    for (; j < N; j++) {
      f32 s = 0;
      for (int k = 0; k < K; k++) s += a[k * acs] * B[k * ldb + j];
      C[i * ldc + j] = s;
    }
  }
}

/* dst[c, r] = src[r * lds + c] for r < rows, c < cols: dst is [cols, rows]. */
static void transpose(int rows, int cols, const f32 *src, int lds, f32 *dst) {
  for (int r = 0; r < rows; r++)
    for (int c = 0; c < cols; c++) dst[c * rows + r] = src[r * lds + c];
}

/* row[0..n) = softmax(scale * row) in place. */
static void softmax_row(f32 *row, int n, f32 scale) {
  f32 m = row[0];
  for (int j = 1; j < n; j++) m = row[j] > m ? row[j] : m;
  v128_t vs = wasm_f32x4_splat(scale), vm = wasm_f32x4_splat(m * scale), acc = wasm_f32x4_splat(0);
  int j = 0;
  for (; j + 4 <= n; j += 4) {
    v128_t e = exp_nonpositive(wasm_f32x4_sub(wasm_f32x4_mul(wasm_v128_load(row + j), vs), vm));
    wasm_v128_store(row + j, e);
    acc = wasm_f32x4_add(acc, e);
  }
  f32 sum = hsum(acc);
  for (; j < n; j++) {
    row[j] = exp_nonpositive_scalar(row[j] * scale - m * scale);
    sum += row[j];
  }
  f32 inv = 1.0f / sum;
  v128_t vinv = wasm_f32x4_splat(inv);
  for (j = 0; j + 4 <= n; j += 4) wasm_v128_store(row + j, wasm_f32x4_mul(wasm_v128_load(row + j), vinv));
  for (; j < n; j++) row[j] *= inv;
}

/* scratch: hd * T floats. */
void attention_forward(const f32 *qkv, f32 *out, f32 *p, f32 *scratch, int T, int H, int hd, f32 scale, int g0, int g1) {
  const int D = H * hd, row = 3 * D;
  for (int g = g0; g < g1; g++) {
    const int b = g / H, h = g % H;
    const f32 *q = qkv + b * T * row + h * hd, *k = q + D, *v = q + 2 * D;
    f32 *pg = p + g * T * T;
    transpose(T, hd, k, row, scratch);
    gemm(T, T, hd, q, row, 1, scratch, T, pg, T);
    for (int i = 0; i < T; i++) softmax_row(pg + i * T, T, scale);
    gemm(T, hd, T, pg, T, 1, v, row, out + b * T * D + h * hd, D);
  }
}

/* scratch: hd * T + T * T floats. dqkv is fully overwritten. */
void attention_backward(const f32 *qkv, const f32 *p, const f32 *dout, f32 *dqkv, f32 *scratch, int T, int H, int hd, f32 scale, int g0, int g1) {
  const int D = H * hd, row = 3 * D;
  f32 *vt = scratch, *ds = scratch + hd * T;
  for (int g = g0; g < g1; g++) {
    const int b = g / H, h = g % H;
    const f32 *q = qkv + b * T * row + h * hd, *k = q + D, *v = q + 2 * D;
    const f32 *pg = p + g * T * T, *dog = dout + b * T * D + h * hd;
    f32 *dq = dqkv + b * T * row + h * hd, *dk = dq + D, *dv = dq + 2 * D;
    /* dP = dO V^T, then dS = P * (dP - rowsum(dP * P)), with the logits' scale folded in */
    transpose(T, hd, v, row, vt);
    gemm(T, T, hd, dog, D, 1, vt, T, ds, T);
    for (int i = 0; i < T; i++) {
      f32 *dsi = ds + i * T;
      const f32 *pi = pg + i * T;
      f32 dot = 0;
      for (int j = 0; j < T; j++) dot += dsi[j] * pi[j];
      for (int j = 0; j < T; j++) dsi[j] = pi[j] * (dsi[j] - dot) * scale;
    }
    gemm(T, hd, T, ds, T, 1, k, row, dq, row);   /* dQ = dS K */
    gemm(T, hd, T, ds, 1, T, q, row, dk, row);   /* dK = dS^T Q */
    gemm(T, hd, T, pg, 1, T, dog, D, dv, row);   /* dV = P^T dO */
  }
}

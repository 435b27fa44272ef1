/*
 * C = A B (+ bias, or + C) for float32 matrices given by strides, so that A or B may be read
 * transposed in place: A[i,k] = a[i*a_rs + k*a_cs], B[k,j] = b[k*b_rs + j*b_cs]. The linear
 * layers' gradients need X^T dY and dY W^T, which tfjs-wasm runs 10-20x slower than a plain
 * matMul (or after an explicit transpose); here every layout runs at the same speed.
 *
 * GotoBLAS blocking: for each KC-deep slice of K, the slice of B is packed into NR-wide
 * panels; for each MC-row chunk of A, the chunk is packed into MR-tall panels; a 6x8
 * micro-kernel keeps its 12 accumulators in registers. Built twice (scripts/build-kernels.sh):
 * with relaxed SIMD the multiply-add is one fused instruction, which doubles the peak on
 * x86 with FMA; without it, a multiply and an add.
 */
#include "simd-math.h"

#define MR 6
#define NR 8
#define KC 256
#define MC 72

/* Scratch floats gemm() needs for one call (one share). */
f32 gemm_scratch_floats(int m, int n) {
  int n_pad = (n + NR - 1) / NR * NR;
  int m_pad = (m < MC ? (m + MR - 1) / MR * MR : MC);
  return (f32)(KC * n_pad + KC * m_pad + MR * NR + NR);
}

/* Packs B[k0:k0+kc, n0:n1] as panels of NR columns, kc x NR each, zero-padded on the right. */
static void pack_b(const f32 *b, int b_rs, int b_cs, int k0, int kc, int n0, int n1, f32 *bp) {
  for (int j = n0; j < n1; j += NR) {
    int nr = n1 - j < NR ? n1 - j : NR;
    const f32 *src = b + k0 * b_rs + j * b_cs;
    if (b_cs == 1 && nr == NR) {
      for (int k = 0; k < kc; k++, bp += NR) {
        wasm_v128_store(bp, wasm_v128_load(src + k * b_rs));
        wasm_v128_store(bp + 4, wasm_v128_load(src + k * b_rs + 4));
      }
    } else {
      for (int k = 0; k < kc; k++, bp += NR)
        for (int c = 0; c < NR; c++) bp[c] = c < nr ? src[k * b_rs + c * b_cs] : 0.0f;
    }
  }
}

/* Packs A[m0:m1, k0:k0+kc] as panels of MR rows, kc x MR each, zero-padded below. */
static void pack_a(const f32 *a, int a_rs, int a_cs, int k0, int kc, int m0, int m1, f32 *ap) {
  for (int i = m0; i < m1; i += MR) {
    int mr = m1 - i < MR ? m1 - i : MR;
    const f32 *src = a + i * a_rs + k0 * a_cs;
    if (a_rs == 1 && mr == MR) {
      /* A read transposed: the MR values of one k are adjacent */
      for (int k = 0; k < kc; k++, ap += MR)
        for (int r = 0; r < MR; r++) ap[r] = src[k * a_cs + r];
    } else {
      for (int k = 0; k < kc; k++, ap += MR)
        for (int r = 0; r < MR; r++) ap[r] = r < mr ? src[r * a_rs + k * a_cs] : 0.0f;
    }
  }
}

/*
 * c[MR x NR] (row stride ldc) = init + ap bp over kc, where init is c itself when `load`,
 * else the bias row (or zero when bias is null).
 */
static void micro_kernel(int kc, const f32 *ap, const f32 *bp, f32 *c, int ldc, int load, const f32 *bias) {
  v128_t c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
  if (load) {
    c00 = wasm_v128_load(c), c01 = wasm_v128_load(c + 4);
    c10 = wasm_v128_load(c + ldc), c11 = wasm_v128_load(c + ldc + 4);
    c20 = wasm_v128_load(c + 2 * ldc), c21 = wasm_v128_load(c + 2 * ldc + 4);
    c30 = wasm_v128_load(c + 3 * ldc), c31 = wasm_v128_load(c + 3 * ldc + 4);
    c40 = wasm_v128_load(c + 4 * ldc), c41 = wasm_v128_load(c + 4 * ldc + 4);
    c50 = wasm_v128_load(c + 5 * ldc), c51 = wasm_v128_load(c + 5 * ldc + 4);
  } else {
    v128_t b0 = bias ? wasm_v128_load(bias) : wasm_f32x4_splat(0.0f);
    v128_t b1 = bias ? wasm_v128_load(bias + 4) : wasm_f32x4_splat(0.0f);
    c00 = c10 = c20 = c30 = c40 = c50 = b0;
    c01 = c11 = c21 = c31 = c41 = c51 = b1;
  }
  for (int k = 0; k < kc; k++, ap += MR, bp += NR) {
    v128_t b0 = wasm_v128_load(bp), b1 = wasm_v128_load(bp + 4), a;
    a = wasm_v128_load32_splat(ap);
    c00 = MADD(a, b0, c00), c01 = MADD(a, b1, c01);
    a = wasm_v128_load32_splat(ap + 1);
    c10 = MADD(a, b0, c10), c11 = MADD(a, b1, c11);
    a = wasm_v128_load32_splat(ap + 2);
    c20 = MADD(a, b0, c20), c21 = MADD(a, b1, c21);
    a = wasm_v128_load32_splat(ap + 3);
    c30 = MADD(a, b0, c30), c31 = MADD(a, b1, c31);
    a = wasm_v128_load32_splat(ap + 4);
    c40 = MADD(a, b0, c40), c41 = MADD(a, b1, c41);
    a = wasm_v128_load32_splat(ap + 5);
    c50 = MADD(a, b0, c50), c51 = MADD(a, b1, c51);
  }
  wasm_v128_store(c, c00), wasm_v128_store(c + 4, c01);
  wasm_v128_store(c + ldc, c10), wasm_v128_store(c + ldc + 4, c11);
  wasm_v128_store(c + 2 * ldc, c20), wasm_v128_store(c + 2 * ldc + 4, c21);
  wasm_v128_store(c + 3 * ldc, c30), wasm_v128_store(c + 3 * ldc + 4, c31);
  wasm_v128_store(c + 4 * ldc, c40), wasm_v128_store(c + 4 * ldc + 4, c41);
  wasm_v128_store(c + 5 * ldc, c50), wasm_v128_store(c + 5 * ldc + 4, c51);
}

/*
 * The block C[m0:m1, n0:n1] of C = A B (+ bias broadcast over rows, if bias), C row-major with
 * row stride ldc. Shares of disjoint blocks run on separate threads; `scratch` holds
 * gemm_scratch_floats(m1 - m0, n1 - n0) floats.
 */
void gemm(const f32 *a, int a_rs, int a_cs, const f32 *b, int b_rs, int b_cs, f32 *c, int ldc, const f32 *bias,
          int k, int m0, int m1, int n0, int n1, f32 *scratch) {
  int n_pad = (n1 - n0 + NR - 1) / NR * NR;
  f32 *bp = scratch, *ap = scratch + KC * n_pad, *tile = ap + KC * MC;
  if (m1 - m0 < MC) tile = ap + KC * ((m1 - m0 + MR - 1) / MR * MR);
  f32 *bias_pad = tile + MR * NR;
  for (int k0 = 0; k0 < k; k0 += KC) {
    int kc = k - k0 < KC ? k - k0 : KC;
    int load = k0 > 0; /* later K slices add to what the earlier ones wrote */
    pack_b(b, b_rs, b_cs, k0, kc, n0, n1, bp);
    for (int i0 = m0; i0 < m1; i0 += MC) {
      int i1 = m1 - i0 < MC ? m1 : i0 + MC;
      pack_a(a, a_rs, a_cs, k0, kc, i0, i1, ap);
      for (int j = n0; j < n1; j += NR) {
        int nr = n1 - j < NR ? n1 - j : NR;
        const f32 *bpanel = bp + (j - n0) * kc;
        for (int i = i0; i < i1; i += MR) {
          int mr = i1 - i < MR ? i1 - i : MR;
          const f32 *apanel = ap + (i - i0) * kc;
          f32 *cij = c + i * ldc + j;
          if (mr == MR && nr == NR) {
            micro_kernel(kc, apanel, bpanel, cij, ldc, load, bias ? bias + j : 0);
            continue;
          }
          /* an edge tile: through a full MR x NR tile, copying only the valid part */
          for (int cc = 0; cc < NR; cc++) bias_pad[cc] = bias && cc < nr ? bias[j + cc] : 0.0f;
          for (int r = 0; r < mr; r++)
            for (int cc = 0; cc < nr; cc++) tile[r * NR + cc] = load ? cij[r * ldc + cc] : 0.0f;
          micro_kernel(kc, apanel, bpanel, tile, NR, load, bias ? bias_pad : 0);
          for (int r = 0; r < mr; r++)
            for (int cc = 0; cc < nr; cc++) cij[r * ldc + cc] = tile[r * NR + cc];
        }
      }
    }
  }
}

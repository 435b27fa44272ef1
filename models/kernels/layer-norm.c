/*
 * LayerNorm over the last axis of rows x [N, D] (Ba et al. 2016), forward and backward in one
 * pass each: composed from tfjs ops it takes ~10 kernel launches and a transpose per reduction
 * over rows on the wasm backend. The forward keeps only (mean, 1/std) per row for the backward.
 */
#include "simd-math.h"

static f32 row_mean(const f32 *x, int D) {
  v128_t acc = wasm_f32x4_splat(0);
  int j = 0;
  for (; j + 4 <= D; j += 4) acc = wasm_f32x4_add(acc, wasm_v128_load(x + j));
  f32 s = hsum(acc);
  for (; j < D; j++) s += x[j];
  return s / D;
}

/* y = (x - mean) / sqrt(var + eps) * gamma + beta; stats [N, 2] = (mean, 1 / sqrt(var + eps)). */
void layer_norm_forward(const f32 *x, const f32 *gamma, const f32 *beta, f32 *y, f32 *stats, int rows, int D, f32 eps) {
  for (int r = 0; r < rows; r++) {
    const f32 *xr = x + r * D;
    f32 *yr = y + r * D;
    const f32 mean = row_mean(xr, D);
    const v128_t vm = wasm_f32x4_splat(mean);
    v128_t acc = wasm_f32x4_splat(0);
    int j = 0;
    for (; j + 4 <= D; j += 4) {
      v128_t c = wasm_f32x4_sub(wasm_v128_load(xr + j), vm);
      acc = wasm_f32x4_add(acc, wasm_f32x4_mul(c, c));
    }
    f32 var = hsum(acc);
    for (; j < D; j++) var += (xr[j] - mean) * (xr[j] - mean);
    const f32 rstd = 1.0f / __builtin_sqrtf(var / D + eps);
    const v128_t vr = wasm_f32x4_splat(rstd);
    for (j = 0; j + 4 <= D; j += 4) {
      v128_t xhat = wasm_f32x4_mul(wasm_f32x4_sub(wasm_v128_load(xr + j), vm), vr);
      wasm_v128_store(yr + j, wasm_f32x4_add(wasm_f32x4_mul(xhat, wasm_v128_load(gamma + j)), wasm_v128_load(beta + j)));
    }
    for (; j < D; j++) yr[j] = (xr[j] - mean) * rstd * gamma[j] + beta[j];
    stats[2 * r] = mean;
    stats[2 * r + 1] = rstd;
  }
}

/* dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * gamma; dgamma, dbeta: sums over rows. */
void layer_norm_backward(const f32 *x, const f32 *gamma, const f32 *stats, const f32 *dy, f32 *dx, f32 *dgamma, f32 *dbeta, int rows, int D) {
  for (int j = 0; j < D; j++) dgamma[j] = dbeta[j] = 0;
  for (int r = 0; r < rows; r++) {
    const f32 *xr = x + r * D, *dyr = dy + r * D;
    f32 *dxr = dx + r * D;
    const v128_t vm = wasm_f32x4_splat(stats[2 * r]), vr = wasm_f32x4_splat(stats[2 * r + 1]);
    v128_t sum_g = wasm_f32x4_splat(0), sum_gx = sum_g;
    int j = 0;
    for (; j + 4 <= D; j += 4) {
      v128_t xhat = wasm_f32x4_mul(wasm_f32x4_sub(wasm_v128_load(xr + j), vm), vr);
      v128_t d = wasm_v128_load(dyr + j), g = wasm_f32x4_mul(d, wasm_v128_load(gamma + j));
      sum_g = wasm_f32x4_add(sum_g, g);
      sum_gx = wasm_f32x4_add(sum_gx, wasm_f32x4_mul(g, xhat));
      wasm_v128_store(dgamma + j, wasm_f32x4_add(wasm_v128_load(dgamma + j), wasm_f32x4_mul(d, xhat)));
      wasm_v128_store(dbeta + j, wasm_f32x4_add(wasm_v128_load(dbeta + j), d));
    }
    f32 sg = hsum(sum_g), sgx = hsum(sum_gx);
    const f32 mean = stats[2 * r], rstd = stats[2 * r + 1];
    for (int t = j; t < D; t++) {
      f32 xhat = (xr[t] - mean) * rstd, g = dyr[t] * gamma[t];
      sg += g;
      sgx += g * xhat;
      dgamma[t] += dyr[t] * xhat;
      dbeta[t] += dyr[t];
    }
    const v128_t a = wasm_f32x4_splat(sg / D), b = wasm_f32x4_splat(sgx / D);
    for (j = 0; j + 4 <= D; j += 4) {
      v128_t xhat = wasm_f32x4_mul(wasm_f32x4_sub(wasm_v128_load(xr + j), vm), vr);
      v128_t g = wasm_f32x4_mul(wasm_v128_load(dyr + j), wasm_v128_load(gamma + j));
      wasm_v128_store(dxr + j, wasm_f32x4_mul(vr, wasm_f32x4_sub(wasm_f32x4_sub(g, a), wasm_f32x4_mul(xhat, b))));
    }
    for (; j < D; j++) {
      f32 xhat = (xr[j] - mean) * rstd, g = dyr[j] * gamma[j];
      dxr[j] = rstd * (g - sg / D - xhat * sgx / D);
    }
  }
}

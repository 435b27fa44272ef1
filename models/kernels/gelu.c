/*
 * GELU (Hendrycks & Gimpel 2016), the exact form x * Phi(x) of PyTorch's nn.GELU() and timm,
 * forward and backward in one pass each; tfjs-wasm's Erf is a scalar loop and the composed
 * gradient takes ~8 kernel launches. erf as in tfjs's Erf kernel: Abramowitz & Stegun 7.1.26
 * (|error| <= 1.5e-7). The backward recomputes Phi and phi from x instead of storing them.
 */
#include "simd-math.h"

/* Phi(x) = (1 + erf(x / sqrt 2)) / 2 and phi(x) = exp(-x^2 / 2) / sqrt(2 pi), four lanes. */
static inline v128_t normal_cdf(v128_t x, v128_t *pdf) {
  const v128_t z = wasm_f32x4_mul(x, wasm_f32x4_splat(0.70710678118654752f));
  const v128_t a = wasm_f32x4_abs(z);
  const v128_t t = wasm_f32x4_div(wasm_f32x4_splat(1.0f), wasm_f32x4_add(wasm_f32x4_splat(1.0f), wasm_f32x4_mul(a, wasm_f32x4_splat(0.3275911f))));
  v128_t poly = wasm_f32x4_splat(1.061405429f);
  poly = wasm_f32x4_add(wasm_f32x4_mul(poly, t), wasm_f32x4_splat(-1.453152027f));
  poly = wasm_f32x4_add(wasm_f32x4_mul(poly, t), wasm_f32x4_splat(1.421413741f));
  poly = wasm_f32x4_add(wasm_f32x4_mul(poly, t), wasm_f32x4_splat(-0.284496736f));
  poly = wasm_f32x4_add(wasm_f32x4_mul(poly, t), wasm_f32x4_splat(0.254829592f));
  poly = wasm_f32x4_mul(poly, t);
  const v128_t e = exp_nonpositive(wasm_f32x4_neg(wasm_f32x4_mul(a, a)));
  *pdf = wasm_f32x4_mul(e, wasm_f32x4_splat(0.39894228040143268f));
  const v128_t erf_abs = wasm_f32x4_sub(wasm_f32x4_splat(1.0f), wasm_f32x4_mul(poly, e));
  const v128_t erf = wasm_v128_or(erf_abs, wasm_v128_and(z, wasm_i32x4_splat((int)0x80000000)));
  return wasm_f32x4_mul(wasm_f32x4_splat(0.5f), wasm_f32x4_add(wasm_f32x4_splat(1.0f), erf));
}

/* Loads lanes [i, i + 4) of x, or only those below n (the rest zero). */
static inline v128_t load_upto(const f32 *x, int i, int n) {
  if (i + 4 <= n) return wasm_v128_load(x + i);
  v128_t v = wasm_f32x4_splat(0);
  if (i < n) v = wasm_f32x4_replace_lane(v, 0, x[i]);
  if (i + 1 < n) v = wasm_f32x4_replace_lane(v, 1, x[i + 1]);
  if (i + 2 < n) v = wasm_f32x4_replace_lane(v, 2, x[i + 2]);
  return v;
}

static inline void store_upto(f32 *y, int i, int n, v128_t v) {
  if (i + 4 <= n) {
    wasm_v128_store(y + i, v);
    return;
  }
  if (i < n) y[i] = wasm_f32x4_extract_lane(v, 0);
  if (i + 1 < n) y[i + 1] = wasm_f32x4_extract_lane(v, 1);
  if (i + 2 < n) y[i + 2] = wasm_f32x4_extract_lane(v, 2);
}

void gelu_forward(const f32 *x, f32 *y, int n) {
  for (int i = 0; i < n; i += 4) {
    v128_t v = load_upto(x, i, n), pdf;
    store_upto(y, i, n, wasm_f32x4_mul(v, normal_cdf(v, &pdf)));
  }
}

/* dx = dy * (Phi(x) + x * phi(x)) */
void gelu_backward(const f32 *x, const f32 *dy, f32 *dx, int n) {
  for (int i = 0; i < n; i += 4) {
    v128_t v = load_upto(x, i, n), pdf;
    v128_t cdf = normal_cdf(v, &pdf);
    store_upto(dx, i, n, wasm_f32x4_mul(load_upto(dy, i, n), wasm_f32x4_add(cdf, wasm_f32x4_mul(v, pdf))));
  }
}

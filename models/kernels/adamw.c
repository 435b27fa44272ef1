/*
 * AdamW (Loshchilov & Hutter 2019) for one parameter tensor in one pass, PyTorch's update
 * order: p *= 1 - lr * wd, then p -= lr * m_hat / (sqrt(v_hat) + eps). Composed from tfjs ops
 * it is ~14 kernels per parameter tensor per step. New values go to new buffers (the
 * variables are then assigned them): tensors sharing a variable's buffer must not change.
 */
#include "simd-math.h"

void adamw_update(const f32 *p, const f32 *g, const f32 *m, const f32 *v, f32 *p_out, f32 *m_out, f32 *v_out, int n,
                  f32 lr, f32 decay_factor, f32 beta1, f32 beta2, f32 inv_bias1, f32 inv_bias2, f32 eps, f32 grad_scale) {
  const v128_t vb1 = wasm_f32x4_splat(beta1), vb1c = wasm_f32x4_splat(1 - beta1);
  const v128_t vb2 = wasm_f32x4_splat(beta2), vb2c = wasm_f32x4_splat(1 - beta2);
  const v128_t vib1 = wasm_f32x4_splat(inv_bias1), vib2 = wasm_f32x4_splat(inv_bias2);
  const v128_t veps = wasm_f32x4_splat(eps), vlr = wasm_f32x4_splat(lr), vdecay = wasm_f32x4_splat(decay_factor);
  const v128_t vscale = wasm_f32x4_splat(grad_scale);
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    v128_t gi = wasm_f32x4_mul(wasm_v128_load(g + i), vscale);
    v128_t mi = wasm_f32x4_add(wasm_f32x4_mul(wasm_v128_load(m + i), vb1), wasm_f32x4_mul(gi, vb1c));
    v128_t vi = wasm_f32x4_add(wasm_f32x4_mul(wasm_v128_load(v + i), vb2), wasm_f32x4_mul(wasm_f32x4_mul(gi, gi), vb2c));
    v128_t update = wasm_f32x4_div(wasm_f32x4_mul(mi, vib1), wasm_f32x4_add(wasm_f32x4_sqrt(wasm_f32x4_mul(vi, vib2)), veps));
    wasm_v128_store(m_out + i, mi);
    wasm_v128_store(v_out + i, vi);
    wasm_v128_store(p_out + i, wasm_f32x4_sub(wasm_f32x4_mul(wasm_v128_load(p + i), vdecay), wasm_f32x4_mul(update, vlr)));
  }
  for (; i < n; i++) {
    f32 gi = g[i] * grad_scale;
    f32 mi = m[i] * beta1 + gi * (1 - beta1);
    f32 vi = v[i] * beta2 + gi * gi * (1 - beta2);
    m_out[i] = mi;
    v_out[i] = vi;
    p_out[i] = p[i] * decay_factor - lr * (mi * inv_bias1) / (__builtin_sqrtf(vi * inv_bias2) + eps);
  }
}

/* Sum of x[i]^2 (for the global gradient norm). */
f32 sum_squares(const f32 *x, int n) {
  v128_t acc = wasm_f32x4_splat(0);
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    v128_t xi = wasm_v128_load(x + i);
    acc = wasm_f32x4_add(acc, wasm_f32x4_mul(xi, xi));
  }
  f32 s = hsum(acc);
  for (; i < n; i++) s += x[i] * x[i];
  return s;
}

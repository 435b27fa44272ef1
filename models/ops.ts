/**
 * Differentiable building blocks with hand-written gradients, shaped around the fast paths of
 * tfjs's wasm backend (and harmless on the native/GPU ones):
 * - tfjs-wasm's own matMul is fast only in its plain 2-D form; the transposed forms that
 *   tfjs's matMul gradient uses run ~10x slower. With the fused kernels, gemm.c reads
 *   transposed operands in place at full speed (as native/GPU backends do); on wasm without
 *   them, gradients transpose explicitly and then multiply plainly.
 * - exp/erf/tanh run as scalar loops while sigmoid is vectorised, so softmax and GELU are built
 *   on sigmoid (exp(t) = s / (1 - s) with s = sigmoid(t), exact for t <= 0 where 1 - s >= 1/2).
 * - batched matMuls (attention) have no fast path at all, and LayerNorm and GELU take many
 *   small kernels, so these three run as fused SIMD kernels there (models/kernels/*.c).
 *   Composed from ops (other backends), attention splits heads with a 4-D transpose, as 5-D
 *   transposes are slow and 4-D ones fast.
 * On webgpu with WEBGPU_FUSED=1, LayerNorm, GELU, the softmax gradient and column sums run as WGSL kernels
 * (models/kernels-webgpu) registered under the same names, through the same custom ops.
 * Linear weights are kept as [in, out] (the plain-matMul layout); checkpoints store PyTorch's
 * [out, in] and models/vit.ts converts at load/save.
 * Each forward computes inside tf.tidy and keeps only its value and what its gradient needs:
 * under a gradient tape every tensor an op creates otherwise lives until the step ends.
 */
import * as tf from '@tensorflow/tfjs';
import { FUSED_ATTENTION, FUSED_ATTENTION_GRAD } from './kernels/attention';
import { FUSED_GELU, FUSED_GELU_GRAD } from './kernels/gelu';
import { fusedKernel, fusedKernelsActive as fused, runKernel } from './kernels';
import { FUSED_LAYER_NORM, FUSED_LAYER_NORM_GRAD } from './kernels/layer-norm';
import { FUSED_COLUMN_SUMS } from './kernels-webgpu/column-sums';
import { FLASH_ATTENTION } from './kernels-webgpu/flash-attention';
import { FUSED_SOFTMAX_GRAD } from './kernels-webgpu/softmax';

type SavedGrad = (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => tf.Tensor[];

/** tfjs types customGrad's callback loosely (rest args of Tensor | GradSaveFunc); this keeps each op's own signature. */
function custom<A extends unknown[]>(f: (...args: A) => { value: tf.Tensor; gradFunc: SavedGrad }) {
  return tf.customGrad(f as unknown as Parameters<typeof tf.customGrad>[0]);
}

/** Rows: x [N, in] @ w [in, out] + b [out]. */
export const linear = custom((x: tf.Tensor, w: tf.Tensor, b: tf.Tensor, save: tf.GradSaveFunc) => {
  save([x, w]);
  return {
    value: tf.fused.matMul({ a: x as tf.Tensor2D, b: w as tf.Tensor2D, bias: b }),
    gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
      const g = dy as tf.Tensor2D;
      const [xs, ws] = saved as tf.Tensor2D[];
      // only tfjs-wasm's own matMul is slow in the transposed forms
      if (fused() || tf.getBackend() !== 'wasm') return [tf.matMul(g, ws, false, true), tf.matMul(xs, g, true, false), columnSums(g)];
      return [tf.matMul(g, tf.transpose(ws)), tf.matMul(tf.transpose(xs), g), columnSums(g)];
    },
  };
}) as (x: tf.Tensor2D, w: tf.Tensor2D, b: tf.Tensor1D) => tf.Tensor2D;

/**
 * Sums over rows of g [N, M] -> [M]: a WGSL kernel on webgpu with WEBGPU_FUSED=1, else ones
 * [1, N] @ g (wasm reduces a non-last axis by transposing first).
 */
function columnSums(g: tf.Tensor2D): tf.Tensor1D {
  if (fusedKernel(FUSED_COLUMN_SUMS)) return runKernel(FUSED_COLUMN_SUMS, { x: g })[0] as tf.Tensor1D;
  return tf.reshape(tf.matMul(tf.ones([1, g.shape[0]]), g), [g.shape[1]]);
}

/** exp(t) for t <= 0 through the vectorised sigmoid. */
function expNonPositive(t: tf.Tensor): tf.Tensor {
  const s = tf.sigmoid(t);
  return tf.div(s, tf.sub(1, s));
}

/** Softmax over the last axis; gradient y * (dy - sum(dy * y)). */
function softmaxLastAxis<T extends tf.Tensor>(x: T): T {
  return (fusedKernel(FUSED_SOFTMAX_GRAD) ? softmaxFused(x) : softmaxComposed(x)) as T;
}

/** tfjs's own softmax kernel (one workgroup per row on webgpu) and the fused gradient. */
const softmaxFused = custom((x: tf.Tensor, save: tf.GradSaveFunc) => {
  const y = tf.softmax(x);
  save([y]);
  return {
    value: y,
    gradFunc: (dy: tf.Tensor | tf.Tensor[], [ys]: tf.Tensor[]) => runKernel(FUSED_SOFTMAX_GRAD, { y: ys, dy: dy as tf.Tensor }),
  };
});

/** Softmax on sigmoid (tfjs-wasm's exp is a scalar loop, its sigmoid vectorised). */
const softmaxComposed = custom((x: tf.Tensor, save: tf.GradSaveFunc) => {
  const y = tf.tidy(() => {
    const e = expNonPositive(tf.sub(x, tf.max(x, -1, true)));
    return tf.div(e, tf.sum(e, -1, true));
  });
  save([y]);
  return {
    value: y,
    gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
      const [ys] = saved;
      const g = dy as tf.Tensor;
      return [tf.mul(ys, tf.sub(g, tf.sum(tf.mul(g, ys), -1, true)))];
    },
  };
});

/** LayerNorm over the last axis of rows x [N, D]. */
export function layerNorm(x: tf.Tensor2D, gamma: tf.Tensor1D, beta: tf.Tensor1D, eps: number): tf.Tensor2D {
  return fusedKernel(FUSED_LAYER_NORM) ? layerNormFused(x, gamma, beta, eps) : layerNormComposed(x, gamma, beta, eps);
}

function layerNormFused(x: tf.Tensor2D, gamma: tf.Tensor1D, beta: tf.Tensor1D, eps: number): tf.Tensor2D {
  return custom((xs: tf.Tensor, g: tf.Tensor, b: tf.Tensor, save: tf.GradSaveFunc) => {
    const [y, stats] = runKernel(FUSED_LAYER_NORM, { x: xs, gamma: g, beta: b }, { eps });
    save([xs, g, stats]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor | tf.Tensor[], [xv, gv, st]: tf.Tensor[]) =>
        runKernel(FUSED_LAYER_NORM_GRAD, { x: xv, gamma: gv, stats: st, dy: dy as tf.Tensor }),
    };
  })(x, gamma, beta) as tf.Tensor2D;
}

/** layerNorm() from tfjs ops. */
export function layerNormComposed(x: tf.Tensor2D, gamma: tf.Tensor1D, beta: tf.Tensor1D, eps: number): tf.Tensor2D {
  return layerNormOp(x, gamma, beta, tf.scalar(eps)) as tf.Tensor2D;
}

const layerNormOp = custom(
  (x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, eps: tf.Tensor, save: tf.GradSaveFunc) => {
    const [value, xhat, rstd] = tf.tidy(() => {
      const centred = tf.sub(x, tf.mean(x, -1, true));
      const rs = tf.rsqrt(tf.add(tf.mean(tf.square(centred), -1, true), eps));
      const xh = tf.mul(centred, rs);
      return [tf.add(tf.mul(xh, gamma), beta), xh, rs];
    });
    save([xhat, rstd, gamma]);
    return {
      value,
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
        const g = dy as tf.Tensor;
        const [xh, rs, gm] = saved;
        const dxhat = tf.mul(g, gm);
        const dx = tf.mul(
          rs,
          tf.sub(tf.sub(dxhat, tf.mean(dxhat, -1, true)), tf.mul(xh, tf.mean(tf.mul(dxhat, xh), -1, true))),
        );
        return [dx, tf.sum(tf.mul(g, xh), 0), tf.sum(g, 0), tf.zerosLike(eps)];
      },
    };
  },
);

/**
 * Training-mode BatchNorm1d over rows x [N, C] with batch mean and biased variance, handed to
 * `onStats` (for running statistics) while they exist. One custom-gradient op with the
 * backward written out,
 *   dx = rstd (g - mean_rows(g) - xhat mean_rows(g xhat)),  g = dy gamma,
 * instead of tfjs's autodiff through moments and broadcasts, which issues about three times
 * the kernel calls (measured: the two refine heads' forward + backward 67 -> 52 ms per step).
 */
export function batchNormTrain(
  x: tf.Tensor2D,
  gamma: tf.Tensor1D,
  beta: tf.Tensor1D,
  eps: number,
  onStats?: (mean: tf.Tensor1D, variance: tf.Tensor1D) => void,
  /** Column means over the batch's rows (data parallelism passes means over every rank's rows). */
  columnMeans: (...ts: tf.Tensor[]) => tf.Tensor[] = (...ts) => ts.map((t) => tf.mean(t, 0)),
): tf.Tensor2D {
  return custom((xs: tf.Tensor, g: tf.Tensor, b: tf.Tensor, save: tf.GradSaveFunc) => {
    const [value, xhat, rstd] = tf.tidy(() => {
      const [mean] = columnMeans(xs);
      const centred = tf.sub(xs, mean);
      const [variance] = columnMeans(tf.square(centred));
      onStats?.(mean as tf.Tensor1D, variance as tf.Tensor1D);
      const rs = tf.rsqrt(tf.add(variance, eps));
      const xh = tf.mul(centred, rs);
      return [tf.add(tf.mul(xh, g), b), xh, rs];
    });
    save([xhat, rstd, g]);
    return {
      value,
      gradFunc: (dy: tf.Tensor | tf.Tensor[], [xh, rs, gm]: tf.Tensor[]) => {
        const d = dy as tf.Tensor;
        const dxhat = tf.mul(d, gm);
        const [meanDxhat, meanDxhatXhat] = columnMeans(dxhat, tf.mul(dxhat, xh));
        const dx = tf.mul(rs, tf.sub(tf.sub(dxhat, meanDxhat), tf.mul(xh, meanDxhatXhat)));
        return [dx, tf.sum(tf.mul(d, xh), 0), tf.sum(d, 0)];
      },
    };
  })(x, gamma, beta) as tf.Tensor2D;
}

/** x / max(||x||, 1e-12) over the last axis, as torch.nn.functional.normalize. */
export function l2normalize<T extends tf.Tensor>(x: T): T {
  return tf.mul(x, tf.rsqrt(tf.maximum(tf.sum(tf.square(x), -1, true), 1e-24)));
}

export type Activation = 'gelu' | 'gelu_tanh';

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

/**
 * GELU. 'gelu' is the exact erf form (PyTorch nn.GELU(), timm's default); 'gelu_tanh' is the
 * tanh approximation (nn.GELU(approximate='tanh')), written as x * sigmoid(2u) since
 * 0.5 * (1 + tanh(u)) = sigmoid(2u), which runs on the vectorised sigmoid.
 */
export function gelu(x: tf.Tensor, kind: Activation): tf.Tensor {
  if (kind === 'gelu_tanh') return geluTanh(x);
  return fusedKernel(FUSED_GELU) ? geluFused(x) : geluErf(x);
}

const geluFused = custom((x: tf.Tensor, save: tf.GradSaveFunc) => {
  save([x]);
  return {
    value: runKernel(FUSED_GELU, { x })[0],
    gradFunc: (dy: tf.Tensor | tf.Tensor[], [xs]: tf.Tensor[]) => runKernel(FUSED_GELU_GRAD, { x: xs, dy: dy as tf.Tensor }),
  };
});

/** Exact GELU from tfjs ops. */
export const geluComposed = (x: tf.Tensor): tf.Tensor => geluErf(x);

const geluErf = custom((x: tf.Tensor, save: tf.GradSaveFunc) => {
  const cdf = tf.tidy(() => tf.mul(0.5, tf.add(1, tf.erf(tf.mul(x, Math.SQRT1_2)))));
  save([x, cdf]);
  return {
    value: tf.mul(x, cdf),
    gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
      const [xs, c] = saved;
      // d/dx x*Phi(x) = Phi(x) + x * phi(x), phi(x) = exp(-x^2/2) / sqrt(2 pi)
      const pdf = tf.mul(expNonPositive(tf.mul(tf.square(xs), -0.5)), 1 / Math.sqrt(2 * Math.PI));
      return [tf.mul(dy as tf.Tensor, tf.add(c, tf.mul(xs, pdf)))];
    },
  };
});

const geluTanh = custom((x: tf.Tensor, save: tf.GradSaveFunc) => {
  const x2 = tf.square(x);
  const s = tf.tidy(() => tf.sigmoid(tf.mul(x, tf.add(2 * SQRT_2_OVER_PI, tf.mul(x2, 2 * SQRT_2_OVER_PI * 0.044715)))));
  save([x, x2, s]);
  return {
    value: tf.mul(x, s),
    gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
      const [xs, xx, ss] = saved;
      // d/dx x*s(2u) = s + x * s(1-s) * 2u', 2u' = 2c(1 + 3*0.044715 x^2)
      const du = tf.add(2 * SQRT_2_OVER_PI, tf.mul(xx, 2 * SQRT_2_OVER_PI * 3 * 0.044715));
      const ds = tf.mul(tf.mul(ss, tf.sub(1, ss)), tf.mul(xs, du));
      return [tf.mul(dy as tf.Tensor, tf.add(ss, ds))];
    },
  };
});

/**
 * Multi-head self-attention core: qkv rows [B*T, 3*D] in timm's layout (3, heads, headDim per
 * row) -> softmax(q k^T / sqrt(headDim)) v with heads merged, rows [B*T, D]. On the wasm
 * backend this is one fused kernel each way (models/kernels/attention.c): tfjs-wasm's batched
 * matMul has no fast path, and attention was half of a train step there.
 */
export function attention(qkv: tf.Tensor2D, batch: number, heads: number): tf.Tensor2D {
  if (fusedKernel(FUSED_ATTENTION)) return attentionFused(qkv, batch, heads);
  // webgpu with WEBGPU_FLASH=1 (models/kernels-webgpu/flash-attention.ts)
  if (fusedKernel(FLASH_ATTENTION)) return attentionFlash(qkv, batch, heads);
  return attentionComposed(qkv, batch, heads);
}

/** The flash forward (nothing T x T kept); the backward recomputes the probabilities. */
function attentionFlash(qkv: tf.Tensor2D, batch: number, heads: number): tf.Tensor2D {
  return custom((x: tf.Tensor, save: tf.GradSaveFunc) => {
    save([x]);
    return {
      value: runKernel(FLASH_ATTENTION, { qkv: x }, { batch, heads })[0],
      gradFunc: (dy: tf.Tensor | tf.Tensor[], [xs]: tf.Tensor[]) => [attentionGradRecomputed(xs as tf.Tensor2D, dy as tf.Tensor2D, batch, heads)],
    };
  })(qkv) as tf.Tensor2D;
}

/**
 * d attention / d qkv from qkv and dy alone: P = softmax(s q k^T) recomputed, then
 * dv = P^T g, dP = g v^T, dS = P (dP - rowsum(dP P)), dq = s dS k, dk = s dS^T q.
 */
function attentionGradRecomputed(qkv: tf.Tensor2D, dy: tf.Tensor2D, batch: number, heads: number): tf.Tensor2D {
  return tf.tidy(() => {
    const t = qkv.shape[0] / batch;
    const d = qkv.shape[1] / 3;
    const hd = d / heads;
    const scale = hd ** -0.5;
    const split = tf.transpose(tf.reshape(qkv, [batch, t, 3 * heads, hd]), [0, 2, 1, 3]);
    const part = (s: number) => tf.reshape(tf.slice(split, [0, s * heads, 0, 0], [batch, heads, t, hd]), [batch * heads, t, hd]) as tf.Tensor3D;
    const [q, k, v] = [part(0), part(1), part(2)];
    const p = tf.softmax(tf.mul(tf.matMul(q, k, false, true), scale)) as tf.Tensor3D;
    const g = tf.reshape(tf.transpose(tf.reshape(dy, [batch, t, heads, hd]), [0, 2, 1, 3]), [batch * heads, t, hd]) as tf.Tensor3D;
    const dv = tf.matMul(p, g, true, false);
    const dp = tf.matMul(g, v, false, true);
    const ds = (fusedKernel(FUSED_SOFTMAX_GRAD) ? runKernel(FUSED_SOFTMAX_GRAD, { y: p, dy: dp })[0] : tf.mul(p, tf.sub(dp, tf.sum(tf.mul(dp, p), -1, true)))) as tf.Tensor3D;
    const dq = tf.mul(tf.matMul(ds, k), scale);
    const dk = tf.mul(tf.matMul(ds, q, true, false), scale);
    const merged = tf.concat([dq, dk, dv].map((x) => tf.reshape(x, [batch, heads, t, hd])), 1);
    return tf.reshape(tf.transpose(merged, [0, 2, 1, 3]), [batch * t, 3 * d]) as tf.Tensor2D;
  });
}

function attentionFused(qkv: tf.Tensor2D, batch: number, heads: number): tf.Tensor2D {
  const attrs = { batch, heads };
  return custom((x: tf.Tensor, save: tf.GradSaveFunc) => {
    const [out, probs] = runKernel(FUSED_ATTENTION, { qkv: x }, attrs);
    save([x, probs]);
    return {
      value: out,
      gradFunc: (dy: tf.Tensor | tf.Tensor[], [xs, ps]: tf.Tensor[]) =>
        runKernel(FUSED_ATTENTION_GRAD, { qkv: xs, probs: ps, dy: dy as tf.Tensor }, attrs),
    };
  })(qkv) as tf.Tensor2D;
}

/** attention() from tfjs ops: heads split with a 4-D transpose, batched matMuls, softmax on sigmoid. */
export function attentionComposed(qkv: tf.Tensor2D, batch: number, heads: number): tf.Tensor2D {
  const t = qkv.shape[0] / batch;
  const d = qkv.shape[1] / 3;
  const hd = d / heads;
  // [B, T, 3*H, hd] -> [B, 3*H, T, hd]: timm's reshape(B,N,3,H,hd).permute(2,0,3,1,4) as a 4-D transpose
  const split = tf.transpose(tf.reshape(qkv, [batch, t, 3 * heads, hd]), [0, 2, 1, 3]);
  const part = (s: number) =>
    tf.reshape(tf.slice(split, [0, s * heads, 0, 0], [batch, heads, t, hd]), [batch * heads, t, hd]) as tf.Tensor3D;
  const q = tf.mul(part(0), hd ** -0.5) as tf.Tensor3D;
  // webgpu's matMuls read transposed operands in place: q k^T without writing k^T
  const scores = tf.getBackend() === 'webgpu' ? batchMatMulTransposedB(q, part(1)) : batchMatMul(q, tf.transpose(part(1), [0, 2, 1]));
  const probs = softmaxLastAxis(scores);
  const merged = tf.transpose(tf.reshape(batchMatMul(probs, part(2)), [batch, heads, t, hd]), [0, 2, 1, 3]);
  return tf.reshape(merged, [batch * t, d]) as tf.Tensor2D;
}

/**
 * Batched A [G, M, K] @ B [G, K, N]. Its gradient uses the plain form with explicit 3-D
 * transposes (cheap on wasm, where transposed batched matMuls are not), except on webgpu,
 * whose matMuls read transposed operands in place (no transpose written and read back).
 */
const batchMatMul = custom((a: tf.Tensor, b: tf.Tensor, save: tf.GradSaveFunc) => {
  save([a, b]);
  return {
    value: tf.matMul(a as tf.Tensor3D, b as tf.Tensor3D),
    gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
      const g = dy as tf.Tensor3D;
      const [as, bs] = saved as tf.Tensor3D[];
      if (tf.getBackend() === 'webgpu') return [tf.matMul(g, bs, false, true), tf.matMul(as, g, true, false)];
      return [
        tf.matMul(g, tf.transpose(bs, [0, 2, 1])),
        tf.matMul(tf.transpose(as, [0, 2, 1]), g),
      ];
    },
  };
}) as (a: tf.Tensor3D, b: tf.Tensor3D) => tf.Tensor3D;

/** Batched A [G, M, K] @ B [G, N, K]^T with transposed-in-place gradients (webgpu). */
const batchMatMulTransposedB = custom((a: tf.Tensor, b: tf.Tensor, save: tf.GradSaveFunc) => {
  save([a, b]);
  return {
    value: tf.matMul(a as tf.Tensor3D, b as tf.Tensor3D, false, true),
    gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
      const g = dy as tf.Tensor3D;
      const [as, bs] = saved as tf.Tensor3D[];
      // C = A B^T: dA = G B, dB = G^T A
      return [tf.matMul(g, bs), tf.matMul(g, as, true, false)];
    },
  };
}) as (a: tf.Tensor3D, b: tf.Tensor3D) => tf.Tensor3D;

/**
 * Rows of x [N, D] at indices [M] (int32). The gradient scatters back with scatterND, because
 * tfjs's own gather gradient needs UnsortedSegmentSum, which the wasm backend lacks (and
 * gather with batchDims crashes there), so per-sample selections are flattened to row indices.
 */
export const gatherRows = custom((x: tf.Tensor, indices: tf.Tensor, save: tf.GradSaveFunc) => {
  save([indices]);
  const rows = x.shape[0];
  return {
    value: tf.gather(x, indices, 0),
    gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
      const g = dy as tf.Tensor2D;
      return [tf.scatterND(tf.expandDims(saved[0], 1), g, [rows, g.shape[1]]), tf.zerosLike(saved[0])];
    },
  };
}) as (x: tf.Tensor2D, indices: tf.Tensor1D) => tf.Tensor2D;

/** Per-sample selection: x [B, T, D], indices [B, K] -> [B, K, D]. */
export function gatherPerSample(x: tf.Tensor3D, indices: tf.Tensor2D): tf.Tensor3D {
  const [b, t, d] = x.shape;
  const k = indices.shape[1];
  const offsets = tf.range(0, b * t, t, 'int32').reshape([b, 1]);
  const flat = tf.add(indices, offsets).reshape([b * k]) as tf.Tensor1D;
  return tf.reshape(gatherRows(tf.reshape(x, [b * t, d]), flat), [b, k, d]);
}

/** Identity whose gradient is zero (tfjs has no stop_gradient). */
export const stopGradient = custom((x: tf.Tensor) => ({
  value: tf.clone(x),
  gradFunc: (dy: tf.Tensor | tf.Tensor[]) => [tf.zerosLike(dy as tf.Tensor)],
})) as <T extends tf.Tensor>(x: T) => T;

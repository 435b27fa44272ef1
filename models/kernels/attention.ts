/**
 * attention.c's kernels as the wasm backend's 'FusedAttention' (qkv -> out, probs) and
 * 'FusedAttentionGrad' (qkv, probs, dy -> dqkv). Attributes: batch, heads.
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { KernelModules } from './wasm-module';

export const FUSED_ATTENTION = 'FusedAttention';
export const FUSED_ATTENTION_GRAD = 'FusedAttentionGrad';

/** qkv rows [batch * tokens, 3 * heads * headDim]. */
function shapeOf(qkv: tf.TensorInfo, attrs: tf.NamedAttrMap | undefined) {
  const batch = attrs!.batch as number;
  const heads = attrs!.heads as number;
  const [rows, width] = qkv.shape;
  if (qkv.shape.length !== 2 || rows % batch !== 0 || width % (3 * heads) !== 0) {
    throw new Error(`${FUSED_ATTENTION}: qkv [${qkv.shape}] does not split into batch ${batch} x tokens and 3 x ${heads} heads`);
  }
  return { batch, tokens: rows / batch, heads, headDim: width / (3 * heads) };
}

/** Heads (b, h) are independent: kernel threads split them. */
export function registerAttentionKernels(backend: BackendWasm, { offset, parallel }: KernelModules): void {
  tf.registerKernel({
    kernelName: FUSED_ATTENTION,
    backendName: 'wasm',
    kernelFunc: ({ inputs, attrs }) => {
      const { qkv } = inputs as { qkv: tf.TensorInfo };
      const s = shapeOf(qkv, attrs);
      const out = backend.makeOutput([s.batch * s.tokens, s.heads * s.headDim], 'float32');
      const probs = backend.makeOutput([s.batch, s.heads, s.tokens, s.tokens], 'float32');
      const [x, o, p] = [offset(qkv), offset(out), offset(probs)];
      parallel('attention_forward', s.batch * s.heads, s.headDim * s.tokens, (g0, g1, scratch) => [x, o, p, scratch, s.tokens, s.heads, s.headDim, s.headDim ** -0.5, g0, g1]);
      return [out, probs];
    },
  });
  tf.registerKernel({
    kernelName: FUSED_ATTENTION_GRAD,
    backendName: 'wasm',
    kernelFunc: ({ inputs, attrs }) => {
      const { qkv, probs, dy } = inputs as { qkv: tf.TensorInfo; probs: tf.TensorInfo; dy: tf.TensorInfo };
      const s = shapeOf(qkv, attrs);
      const dqkv = backend.makeOutput(qkv.shape, 'float32');
      const [x, p, d, dx] = [offset(qkv), offset(probs), offset(dy), offset(dqkv)];
      parallel('attention_backward', s.batch * s.heads, s.headDim * s.tokens + s.tokens * s.tokens, (g0, g1, scratch) => [x, p, d, dx, scratch, s.tokens, s.heads, s.headDim, s.headDim ** -0.5, g0, g1]);
      return dqkv;
    },
  });
}

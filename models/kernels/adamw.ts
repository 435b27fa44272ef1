/**
 * adamw.c as the wasm backend's 'FusedAdamW' (p, g, m, v -> p', m', v'; attributes: lr,
 * decayFactor, beta1, beta2, invBias1, invBias2, eps, gradScale), and its sum of squares for
 * the global gradient norm, read straight off the heap.
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { KernelModules } from './wasm-module';

export const FUSED_ADAMW = 'FusedAdamW';

/** Registers the kernel; returns the sum of squares of a float32 tensor's elements. */
export function registerAdamWKernels(backend: BackendWasm, { fns, offset }: KernelModules): (t: tf.Tensor) => number {
  tf.registerKernel({
    kernelName: FUSED_ADAMW,
    backendName: 'wasm',
    kernelFunc: ({ inputs, attrs }) => {
      const { p, g, m, v } = inputs as Record<string, tf.TensorInfo>;
      const a = attrs as Record<string, number>;
      const outs = [p, m, v].map((t) => backend.makeOutput(t.shape, 'float32'));
      fns.adamw_update(
        offset(p), offset(g), offset(m), offset(v), ...outs.map(offset), tf.util.sizeFromShape(p.shape),
        a.lr, a.decayFactor, a.beta1, a.beta2, a.invBias1, a.invBias2, a.eps, a.gradScale,
      );
      return outs;
    },
  });
  return (t) => fns.sum_squares(offset(t), t.size);
}

/**
 * layer-norm.c's kernels as the wasm backend's 'FusedLayerNorm' (x, gamma, beta -> y, stats)
 * and 'FusedLayerNormGrad' (x, gamma, stats, dy -> dx, dgamma, dbeta). Attribute: eps.
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { KernelModules } from './wasm-module';

export const FUSED_LAYER_NORM = 'FusedLayerNorm';
export const FUSED_LAYER_NORM_GRAD = 'FusedLayerNormGrad';

/** One thread: LayerNorm is a small share of a step, and its backward sums over all rows. */
export function registerLayerNormKernels(backend: BackendWasm, { fns, offset }: KernelModules): void {
  tf.registerKernel({
    kernelName: FUSED_LAYER_NORM,
    backendName: 'wasm',
    kernelFunc: ({ inputs, attrs }) => {
      const { x, gamma, beta } = inputs as Record<string, tf.TensorInfo>;
      const [rows, d] = x.shape;
      const y = backend.makeOutput([rows, d], 'float32');
      const stats = backend.makeOutput([rows, 2], 'float32');
      fns.layer_norm_forward(offset(x), offset(gamma), offset(beta), offset(y), offset(stats), rows, d, attrs!.eps as number);
      return [y, stats];
    },
  });
  tf.registerKernel({
    kernelName: FUSED_LAYER_NORM_GRAD,
    backendName: 'wasm',
    kernelFunc: ({ inputs }) => {
      const { x, gamma, stats, dy } = inputs as Record<string, tf.TensorInfo>;
      const [rows, d] = x.shape;
      const dx = backend.makeOutput([rows, d], 'float32');
      const dgamma = backend.makeOutput([d], 'float32');
      const dbeta = backend.makeOutput([d], 'float32');
      fns.layer_norm_backward(offset(x), offset(gamma), offset(stats), offset(dy), offset(dx), offset(dgamma), offset(dbeta), rows, d);
      return [dx, dgamma, dbeta];
    },
  });
}

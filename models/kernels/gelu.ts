/** gelu.c's kernels as the wasm backend's 'FusedGelu' (x -> y) and 'FusedGeluGrad' (x, dy -> dx). */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { KernelModules } from './wasm-module';

export const FUSED_GELU = 'FusedGelu';
export const FUSED_GELU_GRAD = 'FusedGeluGrad';

/** Elementwise: kernel threads split the elements. */
export function registerGeluKernels(backend: BackendWasm, { offset, parallel }: KernelModules): void {
  tf.registerKernel({
    kernelName: FUSED_GELU,
    backendName: 'wasm',
    kernelFunc: ({ inputs }) => {
      const { x } = inputs as Record<string, tf.TensorInfo>;
      const y = backend.makeOutput(x.shape, 'float32');
      const [xs, ys] = [offset(x), offset(y)];
      parallel('gelu_forward', tf.util.sizeFromShape(x.shape), 0, (a, b) => [xs + 4 * a, ys + 4 * a, b - a]);
      return y;
    },
  });
  tf.registerKernel({
    kernelName: FUSED_GELU_GRAD,
    backendName: 'wasm',
    kernelFunc: ({ inputs }) => {
      const { x, dy } = inputs as Record<string, tf.TensorInfo>;
      const dx = backend.makeOutput(x.shape, 'float32');
      const [xs, dys, dxs] = [offset(x), offset(dy), offset(dx)];
      parallel('gelu_backward', tf.util.sizeFromShape(x.shape), 0, (a, b) => [xs + 4 * a, dys + 4 * a, dxs + 4 * a, b - a]);
      return dx;
    },
  });
}

/** gelu.c's kernels as the wasm backend's 'FusedGelu' (x -> y) and 'FusedGeluGrad' (x, dy -> dx). */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { loadKernelModule } from './wasm-module';

export const FUSED_GELU = 'FusedGelu';
export const FUSED_GELU_GRAD = 'FusedGeluGrad';

interface GeluExports {
  gelu_forward(x: number, y: number, n: number): void;
  gelu_backward(x: number, dy: number, dx: number, n: number): void;
}

export function registerGeluKernels(backend: BackendWasm): void {
  const { exports: k, offset } = loadKernelModule<GeluExports>(backend, 'gelu');
  tf.registerKernel({
    kernelName: FUSED_GELU,
    backendName: 'wasm',
    kernelFunc: ({ inputs }) => {
      const { x } = inputs as Record<string, tf.TensorInfo>;
      const y = backend.makeOutput(x.shape, 'float32');
      k.gelu_forward(offset(x), offset(y), tf.util.sizeFromShape(x.shape));
      return y;
    },
  });
  tf.registerKernel({
    kernelName: FUSED_GELU_GRAD,
    backendName: 'wasm',
    kernelFunc: ({ inputs }) => {
      const { x, dy } = inputs as Record<string, tf.TensorInfo>;
      const dx = backend.makeOutput(x.shape, 'float32');
      k.gelu_backward(offset(x), offset(dy), offset(dx), tf.util.sizeFromShape(x.shape));
      return dx;
    },
  });
}

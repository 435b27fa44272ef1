/**
 * transpose.c in place of the wasm backend's 'Transpose' for 2-D float32 matrices, split over
 * the kernel threads by row blocks; every other transpose, and all of them while the fused
 * kernels are switched off, goes to the backend's own kernel.
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { KernelModules } from './wasm-module';

/** Elements below which waking a helper thread costs more than it saves. */
const SPLIT_ABOVE = 1 << 18;

export function registerTransposeKernel(backend: BackendWasm, { fns, offset, parallel }: KernelModules, active: () => boolean): void {
  const own = tf.getKernel(tf.Transpose, 'wasm');
  if (!own) throw new Error("tfjs wasm backend: no 'Transpose' kernel to extend");
  tf.unregisterKernel(tf.Transpose, 'wasm');
  tf.registerKernel({
    ...own,
    kernelFunc: (args) => {
      const { x } = args.inputs as { x: tf.TensorInfo };
      const perm = (args.attrs as { perm: number[] }).perm;
      if (x.shape.length !== 2 || perm[0] !== 1 || x.dtype !== 'float32' || !active()) return own.kernelFunc(args);
      const [rows, cols] = x.shape;
      const out = backend.makeOutput([cols, rows], 'float32');
      const [src, dst] = [offset(x), offset(out)];
      if (rows * cols < SPLIT_ABOVE) fns.transpose_2d(src, dst, rows, cols, 0, rows);
      else parallel('transpose_2d', Math.ceil(rows / 4), 0, (a, b) => [src, dst, rows, cols, 4 * a, Math.min(rows, 4 * b)]);
      return out;
    },
  });
}

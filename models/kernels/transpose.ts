/**
 * transpose.c in place of the wasm backend's 'Transpose' for 2-D float32 matrices, split over
 * the kernel threads by row blocks; every other transpose, and all of them while the fused
 * kernels are switched off, goes to the backend's own kernel.
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { overrideWasmKernel, type KernelModules } from './wasm-module';

/** Elements below which waking a helper thread costs more than it saves. */
const SPLIT_ABOVE = 1 << 18;

export function registerTransposeKernel(backend: BackendWasm, { fns, offset, parallel }: KernelModules, active: () => boolean): void {
  overrideWasmKernel(tf.Transpose, active, ({ inputs, attrs }) => {
    const { x } = inputs as { x: tf.TensorInfo };
    const perm = (attrs as { perm: number[] }).perm;
    if (x.shape.length !== 2 || perm[0] !== 1 || x.dtype !== 'float32') return undefined;
    const [rows, cols] = x.shape;
    const out = backend.makeOutput([cols, rows], 'float32');
    const [src, dst] = [offset(x), offset(out)];
    if (rows * cols < SPLIT_ABOVE) fns.transpose_2d(src, dst, rows, cols, 0, rows);
    else parallel('transpose_2d', Math.ceil(rows / 4), 0, (a, b) => [src, dst, rows, cols, 4 * a, Math.min(rows, 4 * b)]);
    return out;
  });
}

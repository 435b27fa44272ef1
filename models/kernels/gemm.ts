/**
 * gemm.c in place of the wasm backend's 'BatchMatMul' and '_FusedMatMul' for float32 (the
 * latter with a bias of one value per column and no activation, which is how the models use
 * it). The transposed forms read their operands in place through strides, so they run as fast
 * as the plain one (tfjs-wasm's own run them ~10x slower), and the work is split over the
 * kernel threads by row or column blocks. Anything else, and everything while the fused
 * kernels are switched off, goes to the backend's own kernels.
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { overrideWasmKernel, type KernelModules } from './wasm-module';

/** Multiply-adds below which waking a helper thread costs more than it saves. */
const SPLIT_ABOVE = 1 << 20;
/** Shares are whole micro-tiles (gemm.c's MR x NR). */
const MR = 6;
const NR = 8;

interface MatMulAttrs {
  transposeA: boolean;
  transposeB: boolean;
  activation?: string;
}

export function registerGemmKernels(backend: BackendWasm, { fns, offset, parallel, withScratch }: KernelModules, active: () => boolean): void {
  /** out = a @ b (+ bias per column) over the batch, or undefined where gemm.c does not apply. */
  const matMul = (a: tf.TensorInfo, b: tf.TensorInfo, bias: tf.TensorInfo | undefined, { transposeA, transposeB }: MatMulAttrs) => {
    const [ra, rb] = [a.shape.length, b.shape.length];
    const [rowsA, colsA] = a.shape.slice(ra - 2);
    const [rowsB, colsB] = b.shape.slice(rb - 2);
    const [m, k] = transposeA ? [colsA, rowsA] : [rowsA, colsA];
    const n = transposeB ? rowsB : colsB;
    const [batchA, batchB] = [tf.util.sizeFromShape(a.shape.slice(0, ra - 2)), tf.util.sizeFromShape(b.shape.slice(0, rb - 2))];
    const batch = Math.max(batchA, batchB);
    if (a.dtype !== 'float32' || b.dtype !== 'float32' || ra !== rb || (batchA !== batchB && Math.min(batchA, batchB) !== 1)) return undefined;
    // one bias value per output column ([n], [1, n], ...); any other broadcast goes to the backend's own kernel
    if (bias && (bias.dtype !== 'float32' || tf.util.sizeFromShape(bias.shape) !== n || bias.shape[bias.shape.length - 1] !== n)) return undefined;
    const outShape = [...(batchA >= batchB ? a : b).shape.slice(0, ra - 2), m, n];
    const out = backend.makeOutput(outShape, 'float32');
    if (m * n === 0) return out;
    // A[i, k] = a[i * aRow + k * aCol], B[k, j] = b[k * bRow + j * bCol]
    const [aRow, aCol] = transposeA ? [1, colsA] : [colsA, 1];
    const [bRow, bCol] = transposeB ? [1, colsB] : [colsB, 1];
    const [a0, b0, c0, biasAt] = [offset(a), offset(b), offset(out), bias ? offset(bias) : 0];
    const scratch = fns.gemm_scratch_floats(m, n); // per share: enough for the whole product
    for (let g = 0; g < batch; g++) {
      const [ag, bg, cg] = [a0 + (batchA > 1 ? 4 * g * m * k : 0), b0 + (batchB > 1 ? 4 * g * k * n : 0), c0 + 4 * g * m * n];
      const call = (m0: number, m1: number, n0: number, n1: number, scratch: number) =>
        [ag, aRow, aCol, bg, bRow, bCol, cg, n, biasAt, k, m0, m1, n0, n1, scratch];
      if (m * n * k < SPLIT_ABOVE) withScratch(scratch, (s) => fns.gemm(...call(0, m, 0, n, s)));
      else if (m >= n) parallel('gemm', Math.ceil(m / MR), scratch, (s0, s1, s) => call(MR * s0, Math.min(m, MR * s1), 0, n, s));
      else parallel('gemm', Math.ceil(n / NR), scratch, (s0, s1, s) => call(0, m, NR * s0, Math.min(n, NR * s1), s));
    }
    return out;
  };

  overrideWasmKernel(tf.BatchMatMul, active, ({ inputs, attrs }) => {
    const { a, b } = inputs as Record<string, tf.TensorInfo>;
    return matMul(a, b, undefined, attrs as unknown as MatMulAttrs);
  });
  overrideWasmKernel(tf._FusedMatMul, active, ({ inputs, attrs }) => {
    const { a, b, bias, preluActivationWeights } = inputs as Record<string, tf.TensorInfo | undefined>;
    const options = attrs as unknown as MatMulAttrs;
    if (preluActivationWeights || (options.activation ?? 'linear') !== 'linear') return undefined;
    return matMul(a!, b!, bias, options);
  });
}

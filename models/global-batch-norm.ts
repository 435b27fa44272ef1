/**
 * Training-mode BatchNorm1d over the global batch of a data-parallel run (PyTorch's
 * SyncBatchNorm semantics, for MIM-Refiner's projector/predictor BatchNorms): mean and biased
 * variance over every rank's rows, and a backward whose row means are global too,
 *   dx = rstd (g - mean_global(g) - xhat mean_global(g xhat)),  g = dy gamma,
 * so that N ranks of n rows compute what one process computes on N x n rows. Two all-reduces
 * forward (mean, then variance around it: the two-pass form keeps float32 accuracy), one
 * backward, each of 1-2 x channels floats. They sit inside the tape and are synchronous (a tape
 * cannot await); reading the column sums there is a host read of a few kilobytes inside the
 * step (a copy from the wasm heap; on a GPU the readback a host-memory collective needs).
 * gamma's and beta's gradients are this rank's rows' share; the gradient all-reduce sums them.
 */
import * as tf from '@tensorflow/tfjs';
import type { Collective } from '../lib/collective';
import { batchNormTrain } from './ops';

/**
 * The global-batch BatchNorm (batchNormTrain itself on one rank). x is this rank's rows [n, C]; `onStats` receives the global mean and biased
 * variance (an unbiased running variance then corrects with the global row count, n x worldSize).
 */
export function globalBatchNormTrain(
  c: Collective,
  x: tf.Tensor2D,
  gamma: tf.Tensor1D,
  beta: tf.Tensor1D,
  eps: number,
  onStats?: (mean: tf.Tensor1D, variance: tf.Tensor1D) => void,
): tf.Tensor2D {
  if (c.worldSize === 1) return batchNormTrain(x, gamma, beta, eps, onStats);
  const rows = x.shape[0] * c.worldSize;
  /** Column sums of the given [n, C] tensors, summed over ranks, divided by the global rows. */
  const globalMeans = (...ts: tf.Tensor[]): tf.Tensor1D[] => {
    const sums = ts.map((t) => tf.sum(t, 0));
    const host = new Float32Array(sums.reduce((s, t) => s + t.size, 0));
    sums.forEach((t, i) => host.set(t.dataSync() as Float32Array, i * t.size));
    tf.dispose(sums);
    c.allreduceSync(host, 'sum');
    const C = ts[0].shape[1]!;
    return ts.map((_, i) => tf.div(tf.tensor1d(host.subarray(i * C, (i + 1) * C)), rows) as tf.Tensor1D);
  };
  // gamma and beta's gradients stay this rank's rows' share, summed over ranks with the other gradients
  return batchNormTrain(x, gamma, beta, eps, onStats, globalMeans);
}

/**
 * Weighted k-nearest-neighbour classifier, the protocol of DINO's eval_knn.py (Caron et al.
 * 2021, "Emerging Properties in Self-Supervised Vision Transformers"), which MIM-Refiner uses
 * for its kNN numbers and per-block curves: features L2-normalised, cosine similarity to every
 * train feature, the top-k neighbours (k = 20) vote for their class with weight exp(sim / T),
 * T = 0.07, and the class with the largest summed weight is the prediction.
 */
import * as tf from '@tensorflow/tfjs';
import { accuracy, checkSplits, FeatureMatrix, l2NormalizeRows, numClassesOf } from './features';

export interface KnnOptions {
  /** Neighbours that vote (DINO: 20). Clamped to the number of train rows. */
  k?: number;
  /** Vote temperature (DINO: 0.07). */
  temperature?: number;
  /** Test rows per similarity matmul; default keeps each [rows, trainRows] block near 64 MB. */
  chunkRows?: number;
  /** Number of classes; default 1 + the largest label seen. */
  numClasses?: number;
}

export interface KnnResult {
  /** Top-1 accuracy in [0, 1]. */
  accuracy: number;
  predictions: Int32Array;
  k: number;
}

/**
 * Summed vote per class for one test sample, from its neighbours' similarities and labels:
 * votes[c] = sum over neighbours n of class c of exp(sim_n / T).
 */
export function weightedVotes(sims: ArrayLike<number>, labels: ArrayLike<number>, numClasses: number, temperature: number): Float64Array {
  const votes = new Float64Array(numClasses);
  for (let n = 0; n < sims.length; n++) votes[labels[n]] += Math.exp(sims[n] / temperature);
  return votes;
}

/** Index of the largest entry; ties go to the smallest class index. */
function argmax(v: Float64Array): number {
  let best = 0;
  for (let c = 1; c < v.length; c++) if (v[c] > v[best]) best = c;
  return best;
}

export function knnClassify(
  train: FeatureMatrix,
  trainLabels: Int32Array,
  test: FeatureMatrix,
  testLabels: Int32Array,
  opts: KnnOptions = {},
): KnnResult {
  checkSplits(train, trainLabels, test, testLabels, 'kNN');
  if (train.rows === 0) throw new Error('kNN: no train features');
  const k = Math.min(opts.k ?? 20, train.rows);
  const temperature = opts.temperature ?? 0.07;
  const numClasses = opts.numClasses ?? numClassesOf(trainLabels, testLabels);
  const chunkRows = opts.chunkRows ?? Math.max(1, Math.min(4096, Math.floor(2 ** 24 / train.rows)));
  const d = train.dim;

  const testUnit = l2NormalizeRows(test);
  // [D, N] once: a plain matMul against it is ~10x faster on wasm than matMul(..., transposeB).
  const trainT = tf.tidy(() => tf.transpose(tf.tensor2d(l2NormalizeRows(train).data, [train.rows, d])));
  const predictions = new Int32Array(test.rows);
  try {
    for (let start = 0; start < test.rows; start += chunkRows) {
      const rows = Math.min(chunkRows, test.rows - start);
      const top = tf.tidy(() => {
        const q = tf.tensor2d(testUnit.data.subarray(start * d, (start + rows) * d), [rows, d]);
        return tf.topk(tf.matMul(q, trainT), k, true);
      });
      const sims = top.values.dataSync() as Float32Array;
      const idx = top.indices.dataSync() as Int32Array;
      tf.dispose([top.values, top.indices]);
      const neighbourLabels = new Int32Array(k);
      for (let r = 0; r < rows; r++) {
        for (let n = 0; n < k; n++) neighbourLabels[n] = trainLabels[idx[r * k + n]];
        predictions[start + r] = argmax(weightedVotes(sims.subarray(r * k, (r + 1) * k), neighbourLabels, numClasses, temperature));
      }
    }
  } finally {
    trainT.dispose();
  }
  return { accuracy: accuracy(predictions, testLabels), predictions, k };
}

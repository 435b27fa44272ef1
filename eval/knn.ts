/**
 * Weighted k-nearest-neighbour classifier as MIM-Refiner computes it (ml-jku/MIM-Refiner,
 * metrics/knn.py and eval_knn_torchhub.py, after DINO's eval_knn.py, Caron et al. 2021):
 *   1. standardise every feature dimension with the TRAIN set's mean and std
 *      (x - mean) / (std + 1e-6), std with Bessel's correction as torch's Tensor.std;
 *   2. L2-normalise the rows; cosine similarity of each test row to every train row;
 *   3. the top-k neighbours (k 20) vote for their class with weight exp(sim / T), T 0.07;
 *      the class with the largest summed weight is the prediction.
 * Step 1 is what the reference adds to DINO's protocol: without it a few large, shared
 * dimensions (MAE's CLS token has some) dominate the cosine. `standardise: false` is the
 * plain DINO variant this project used before; both are reported in docs/evaluation.md.
 * Reads from the device are asynchronous (`await t.data()`), once per chunk of test rows.
 */
import * as tf from '@tensorflow/tfjs';
import { accuracy, checkSplits, FeatureMatrix, l2NormalizeRows, numClassesOf } from './features';

/** The reference's protocol; every kNN in the project (knn.ts, eval.ts, refine) starts from these. */
export const KNN_DEFAULTS = { k: 20, temperature: 0.07, standardise: true } as const;

/** Added to the std, as the reference does (a constant dimension then maps to 0, not NaN). */
const STD_EPS = 1e-6;

export interface KnnOptions {
  /** Neighbours that vote (reference: 20; its paper also reports 10). Clamped to the number of train rows. */
  k?: number;
  /** Vote temperature (reference: 0.07). */
  temperature?: number;
  /** Standardise with the train set's per-dimension mean and std before L2 normalisation (reference: true). */
  standardise?: boolean;
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

/** Per-dimension mean and std (+ eps) of the train rows, std with Bessel's correction (torch's default). */
export function trainStatistics(train: FeatureMatrix): { mean: Float64Array; std: Float64Array } {
  const d = train.dim;
  const mean = new Float64Array(d), sq = new Float64Array(d);
  for (let r = 0; r < train.rows; r++) for (let j = 0; j < d; j++) mean[j] += train.data[r * d + j];
  for (let j = 0; j < d; j++) mean[j] /= Math.max(train.rows, 1);
  for (let r = 0; r < train.rows; r++) for (let j = 0; j < d; j++) sq[j] += (train.data[r * d + j] - mean[j]) ** 2;
  const std = sq.map((s) => Math.sqrt(s / Math.max(train.rows - 1, 1)) + STD_EPS);
  return { mean, std };
}

/** (x - mean) / std per dimension. */
function standardised(m: FeatureMatrix, s: { mean: Float64Array; std: Float64Array }): FeatureMatrix {
  const out = new Float32Array(m.data.length);
  for (let r = 0; r < m.rows; r++) for (let j = 0; j < m.dim; j++) out[r * m.dim + j] = (m.data[r * m.dim + j] - s.mean[j]) / s.std[j];
  return { data: out, rows: m.rows, dim: m.dim };
}

export async function knnClassify(
  train: FeatureMatrix,
  trainLabels: Int32Array,
  test: FeatureMatrix,
  testLabels: Int32Array,
  opts: KnnOptions = {},
): Promise<KnnResult> {
  checkSplits(train, trainLabels, test, testLabels, 'kNN');
  if (train.rows === 0) throw new Error('kNN: no train features');
  const asked = opts.k ?? KNN_DEFAULTS.k;
  // more neighbours than memory: every training image votes; said, so a number is never read as a k it was not
  if (asked > train.rows) console.warn(`[knn] k ${asked} (--knn-k) is more than the ${train.rows} training images of the memory: k ${train.rows} is used, every training image votes`);
  const k = Math.min(asked, train.rows);
  const temperature = opts.temperature ?? KNN_DEFAULTS.temperature;
  const numClasses = opts.numClasses ?? numClassesOf(trainLabels, testLabels);
  const chunkRows = opts.chunkRows ?? Math.max(1, Math.min(4096, Math.floor(2 ** 24 / train.rows)));
  const d = train.dim;

  const stats = (opts.standardise ?? KNN_DEFAULTS.standardise) ? trainStatistics(train) : undefined;
  const [trainUnit, testUnit] = [train, test].map((m) => l2NormalizeRows(stats ? standardised(m, stats) : m));
  // [D, N] once: a plain matMul against it is ~10x faster on wasm than matMul(..., transposeB).
  const trainT = tf.tidy(() => tf.transpose(tf.tensor2d(trainUnit.data, [train.rows, d])));
  const predictions = new Int32Array(test.rows);
  try {
    for (let start = 0; start < test.rows; start += chunkRows) {
      const rows = Math.min(chunkRows, test.rows - start);
      const top = tf.tidy(() => {
        const q = tf.tensor2d(testUnit.data.subarray(start * d, (start + rows) * d), [rows, d]);
        return tf.topk(tf.matMul(q, trainT), k, true);
      });
      let sims: Float32Array, idx: Int32Array;
      try {
        [sims, idx] = (await Promise.all([top.values.data(), top.indices.data()])) as [Float32Array, Int32Array];
      } finally {
        tf.dispose([top.values, top.indices]);
      }
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

/** A flag's 'on' | 'off' as a boolean (for --standardise / --knn-standardise). */
export function onOff(flag: string, value: string): boolean {
  if (value === 'on') return true;
  if (value === 'off') return false;
  throw new Error(`--${flag}: expected on or off, got '${value}'`);
}

/**
 * k-means (Lloyd's algorithm) with k-means++ seeding (Arthur & Vassilvitskii 2007), several
 * seeded restarts, the lowest inertia kept: the clustering behind MIM-Refiner's k-means
 * evaluation (NMI / ACC / ARI of k-means on frozen features, eval/cluster-metrics.ts).
 * Choices, following scikit-learn's KMeans where it matters: squared Euclidean distance;
 * stop when no assignment changes or when the centres move less (summed squared shift) than
 * tol * mean per-dimension variance of the data; an empty cluster is moved to the point
 * farthest from its centre. Plain k-means++ (one candidate per step, not sklearn's greedy
 * variant). Normalise the features first (l2NormalizeRows) for cosine-style clustering.
 * Distances use tfjs matmuls (chunks of rows, bounded memory); sums are float64 in JS.
 */
import * as tf from '@tensorflow/tfjs';
import { Rng } from '../lib/rng';
import { FeatureMatrix, readTensor } from './features';

export interface KMeansOptions {
  k: number;
  seed?: number;
  /** Restarts from different k-means++ seedings (default 5). */
  nInit?: number;
  /** Lloyd iterations per restart (default 100). */
  maxIter?: number;
  /** Relative centre-shift tolerance (default 1e-4, as sklearn). */
  tol?: number;
}

export interface KMeansResult {
  /** Cluster of each row, 0..k-1. */
  assignments: Int32Array;
  centroids: FeatureMatrix;
  /** Sum of squared distances of rows to their centre (float64). */
  inertia: number;
  /** Iterations of the kept restart. */
  iterations: number;
  /** Inertia of every restart, in order; `inertia` is their minimum. */
  restartInertias: number[];
}

export async function kmeans(x: FeatureMatrix, opts: KMeansOptions): Promise<KMeansResult> {
  const { k } = opts;
  const nInit = opts.nInit ?? 5, maxIter = opts.maxIter ?? 100, seed = opts.seed ?? 0;
  if (!(Number.isInteger(k) && k >= 1 && k <= x.rows)) throw new Error(`kmeans: k = ${k} needs 1 <= k <= rows (${x.rows})`);
  const xt = tf.tensor2d(x.data, [x.rows, x.dim]);
  try {
    const tolAbs = (opts.tol ?? 1e-4) * meanVariance(x);
    const xSq = new Float64Array(x.rows);
    for (let i = 0; i < x.rows; i++) for (let j = 0; j < x.dim; j++) xSq[i] += x.data[i * x.dim + j] ** 2;
    let best: Omit<KMeansResult, 'restartInertias'> | undefined;
    const restartInertias: number[] = [];
    for (let r = 0; r < nInit; r++) {
      const run = await lloyd(x, xt, xSq, await kmeansPlusPlus(x, xt, xSq, k, new Rng(seed, r)), maxIter, tolAbs);
      restartInertias.push(run.inertia);
      if (!best || run.inertia < best.inertia) best = run;
    }
    return { ...best!, restartInertias };
  } finally {
    xt.dispose();
  }
}

function meanVariance(x: FeatureMatrix): number {
  let total = 0;
  for (let j = 0; j < x.dim; j++) {
    let s = 0, ss = 0;
    for (let i = 0; i < x.rows; i++) {
      const v = x.data[i * x.dim + j];
      s += v;
      ss += v * v;
    }
    total += ss / x.rows - (s / x.rows) ** 2;
  }
  return total / x.dim;
}

/** k-means++: each next centre is a row drawn with probability ∝ its squared distance to the nearest centre so far. */
async function kmeansPlusPlus(x: FeatureMatrix, xt: tf.Tensor2D, xSq: Float64Array, k: number, rng: Rng): Promise<Float32Array> {
  const d = x.dim;
  const centres = new Float32Array(k * d);
  const closest = new Float64Array(x.rows).fill(Infinity);
  let pick = rng.int(x.rows);
  for (let c = 0; c < k; c++) {
    const centre = x.data.subarray(pick * d, (pick + 1) * d);
    centres.set(centre, c * d);
    if (c === k - 1) break;
    const dist = await squaredDistances(x, xt, xSq, centre, 1);
    let total = 0;
    for (let i = 0; i < x.rows; i++) total += closest[i] = Math.min(closest[i], dist[i]);
    if (total <= 0) {
      pick = rng.int(x.rows); // every row sits on a centre already (duplicates): any row will do
      continue;
    }
    let u = rng.next() * total;
    pick = x.rows - 1;
    for (let i = 0; i < x.rows; i++) {
      u -= closest[i];
      if (u < 0) { pick = i; break; }
    }
  }
  return centres;
}

/**
 * Squared distances of every row of x to each of `count` centres ([count, D] row-major), as
 * |x|^2 - 2 x.c + |c|^2 clamped at 0: tfjs does only the x.c matmul (per row chunk), the
 * norms are added in JS (xSq precomputed once per k-means call). Returns [rows, count].
 */
async function squaredDistances(x: FeatureMatrix, xt: tf.Tensor2D, xSq: Float64Array, centres: Float32Array, count: number): Promise<Float32Array> {
  const d = x.dim;
  const cSq = new Float64Array(count);
  for (let c = 0; c < count; c++) for (let j = 0; j < d; j++) cSq[c] += centres[c * d + j] ** 2;
  const chunk = Math.max(1, Math.floor(2 ** 22 / count));
  const out = new Float32Array(x.rows * count);
  const ct = tf.tidy(() => tf.transpose(tf.tensor2d(centres, [count, d]))); // plain matMul is the fast path on wasm
  try {
    for (let start = 0; start < x.rows; start += chunk) {
      const rows = Math.min(chunk, x.rows - start);
      const dots = await readTensor(() => tf.matMul(rows === x.rows ? xt : tf.slice(xt, [start, 0], [rows, d]), ct));
      for (let r = 0; r < rows; r++) {
        for (let c = 0; c < count; c++) out[(start + r) * count + c] = Math.max(0, xSq[start + r] - 2 * dots[r * count + c] + cSq[c]);
      }
    }
  } finally {
    ct.dispose();
  }
  return out;
}

async function lloyd(x: FeatureMatrix, xt: tf.Tensor2D, xSq: Float64Array, init: Float32Array, maxIter: number, tolAbs: number): Promise<Omit<KMeansResult, 'restartInertias'>> {
  const n = x.rows, d = x.dim, k = init.length / d;
  let centres = init;
  let assignments = new Int32Array(n).fill(-1);
  let iterations = 0;
  let converged = false;
  for (;;) {
    // E-step: nearest centre of every row.
    const dist = await squaredDistances(x, xt, xSq, centres, k);
    const next = new Int32Array(n);
    const own = new Float64Array(n);
    let changed = 0;
    for (let i = 0; i < n; i++) {
      let b = 0;
      for (let c = 1; c < k; c++) if (dist[i * k + c] < dist[i * k + b]) b = c;
      next[i] = b;
      own[i] = dist[i * k + b];
      if (b !== assignments[i]) changed++;
    }
    assignments = next;
    // After an M-step that converged, this E-step made the assignments match the final centres.
    if (changed === 0 || converged || iterations >= maxIter) break;
    // M-step: centres = means of their rows (float64 sums).
    iterations++;
    const sums = new Float64Array(k * d);
    const counts = new Int32Array(k);
    for (let i = 0; i < n; i++) {
      const c = assignments[i];
      counts[c]++;
      for (let j = 0; j < d; j++) sums[c * d + j] += x.data[i * d + j];
    }
    relocateEmpty(x, assignments, own, counts, sums);
    const updated = new Float32Array(k * d);
    let shift = 0;
    for (let c = 0; c < k; c++) {
      for (let j = 0; j < d; j++) {
        updated[c * d + j] = sums[c * d + j] / counts[c];
        shift += (updated[c * d + j] - centres[c * d + j]) ** 2;
      }
    }
    centres = updated;
    converged = shift <= tolAbs;
  }
  return { assignments, centroids: { data: centres, rows: k, dim: d }, inertia: inertia(x, assignments, centres), iterations };
}

/** Gives each empty cluster the row farthest from its centre (taken from a cluster of 2+ rows). */
function relocateEmpty(x: FeatureMatrix, assignments: Int32Array, own: Float64Array, counts: Int32Array, sums: Float64Array): void {
  const d = x.dim;
  const empty: number[] = [];
  for (let c = 0; c < counts.length; c++) if (counts[c] === 0) empty.push(c);
  if (empty.length === 0) return;
  const far = Array.from(own.keys()).sort((a, b) => own[b] - own[a]);
  let f = 0;
  for (const c of empty) {
    while (counts[assignments[far[f]]] < 2) f++; // k <= rows, so such a row exists
    const i = far[f++];
    const from = assignments[i];
    counts[from]--;
    counts[c] = 1;
    for (let j = 0; j < d; j++) {
      sums[from * d + j] -= x.data[i * d + j];
      sums[c * d + j] = x.data[i * d + j];
    }
    assignments[i] = c;
  }
}

function inertia(x: FeatureMatrix, assignments: Int32Array, centres: Float32Array): number {
  let total = 0;
  for (let i = 0; i < x.rows; i++) {
    const c = assignments[i];
    for (let j = 0; j < x.dim; j++) total += (x.data[i * x.dim + j] - centres[c * x.dim + j]) ** 2;
  }
  return total;
}

/**
 * Clustering metrics as MIM-Refiner reports them for k-means on frozen features (NMI, ACC,
 * ARI; the same three as in e.g. SCAN, Van Gansbeke et al. 2020). NMI and ARI follow
 * scikit-learn's normalized_mutual_info_score (arithmetic-mean normalisation, its default) and
 * adjusted_rand_score, special cases included; ACC is the best one-to-one matching of clusters
 * to classes (Hungarian method, as scipy's linear_sum_assignment is used for it).
 * Labels and cluster ids may be any integers; only equality matters.
 */
import { linearSumAssignment } from './hungarian';

interface Contingency {
  /** counts[t * numPred + p]: samples of true class t in predicted cluster p. */
  counts: Float64Array;
  numTrue: number;
  numPred: number;
  n: number;
}

function denseIds(labels: ArrayLike<number>): { ids: Int32Array; count: number } {
  const index = new Map<number, number>();
  const ids = new Int32Array(labels.length);
  for (let i = 0; i < labels.length; i++) {
    let id = index.get(labels[i]);
    if (id === undefined) index.set(labels[i], (id = index.size));
    ids[i] = id;
  }
  return { ids, count: index.size };
}

function contingency(labelsTrue: ArrayLike<number>, labelsPred: ArrayLike<number>): Contingency {
  if (labelsTrue.length !== labelsPred.length) throw new Error(`cluster metrics: ${labelsTrue.length} labels vs ${labelsPred.length} predictions`);
  const t = denseIds(labelsTrue);
  const p = denseIds(labelsPred);
  const counts = new Float64Array(t.count * p.count);
  for (let i = 0; i < t.ids.length; i++) counts[t.ids[i] * p.count + p.ids[i]]++;
  return { counts, numTrue: t.count, numPred: p.count, n: labelsTrue.length };
}

function marginals(c: Contingency): { rows: Float64Array; cols: Float64Array } {
  const rows = new Float64Array(c.numTrue), cols = new Float64Array(c.numPred);
  for (let t = 0; t < c.numTrue; t++) {
    for (let p = 0; p < c.numPred; p++) {
      rows[t] += c.counts[t * c.numPred + p];
      cols[p] += c.counts[t * c.numPred + p];
    }
  }
  return { rows, cols };
}

/** Entropy (nats) of a labelling given its class sizes. */
function entropy(sizes: Float64Array, n: number): number {
  let h = 0;
  for (const s of sizes) if (s > 0) h -= (s / n) * Math.log(s / n);
  return h;
}

/** Mutual information (nats) of two labellings. */
export function mutualInformation(labelsTrue: ArrayLike<number>, labelsPred: ArrayLike<number>): number {
  const c = contingency(labelsTrue, labelsPred);
  const { rows, cols } = marginals(c);
  let mi = 0;
  for (let t = 0; t < c.numTrue; t++) {
    for (let p = 0; p < c.numPred; p++) {
      const nij = c.counts[t * c.numPred + p];
      if (nij > 0) mi += (nij / c.n) * Math.log((nij * c.n) / (rows[t] * cols[p]));
    }
  }
  return Math.max(mi, 0); // rounding can leave a tiny negative where MI is 0
}

/** NMI = MI / mean(H(true), H(pred)) (sklearn's default average_method 'arithmetic'). */
export function normalizedMutualInfo(labelsTrue: ArrayLike<number>, labelsPred: ArrayLike<number>): number {
  const c = contingency(labelsTrue, labelsPred);
  // sklearn: both labellings a single cluster (or empty) is a perfect match.
  if (c.numTrue === c.numPred && c.numTrue <= 1) return 1;
  const mi = mutualInformation(labelsTrue, labelsPred);
  if (mi === 0) return 0;
  const { rows, cols } = marginals(c);
  const normaliser = Math.max((entropy(rows, c.n) + entropy(cols, c.n)) / 2, Number.EPSILON);
  return mi / normaliser;
}

/**
 * Adjusted Rand index (Hubert & Arabie 1985), from the pair confusion matrix as sklearn
 * computes it: 1 for identical partitions, ~0 for independent ones, can be negative.
 */
export function adjustedRandIndex(labelsTrue: ArrayLike<number>, labelsPred: ArrayLike<number>): number {
  const c = contingency(labelsTrue, labelsPred);
  const { rows, cols } = marginals(c);
  let sumSquares = 0;
  for (const nij of c.counts) sumSquares += nij * nij;
  let sumRows = 0, sumCols = 0;
  for (const a of rows) sumRows += a * a;
  for (const b of cols) sumCols += b * b;
  // Ordered pairs: tp same cluster & same class, fp/fn one of the two, tn neither.
  const tp = sumSquares - c.n;
  const fp = sumCols - sumSquares; // same predicted cluster, different class
  const fn = sumRows - sumSquares; // same class, different cluster
  const tn = c.n * c.n - fp - fn - sumSquares;
  if (fn === 0 && fp === 0) return 1; // includes the trivial cases (all one cluster, all singletons)
  return (2 * (tp * tn - fn * fp)) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn));
}

/**
 * Clustering accuracy: the fraction of samples whose cluster maps to their class under the
 * one-to-one cluster -> class mapping that maximises it (Hungarian matching).
 */
export function clusterAccuracy(labelsTrue: ArrayLike<number>, labelsPred: ArrayLike<number>): number {
  const c = contingency(labelsTrue, labelsPred);
  if (c.n === 0) return NaN;
  // Maximise matched counts = minimise (-counts), predicted clusters as rows.
  const cost = new Float64Array(c.numPred * c.numTrue);
  for (let t = 0; t < c.numTrue; t++) for (let p = 0; p < c.numPred; p++) cost[p * c.numTrue + t] = -c.counts[t * c.numPred + p];
  const classOf = linearSumAssignment(cost, c.numPred, c.numTrue);
  let matched = 0;
  classOf.forEach((t, p) => {
    if (t >= 0) matched += c.counts[t * c.numPred + p];
  });
  return matched / c.n;
}

export interface ClusterScores {
  nmi: number;
  ari: number;
  acc: number;
}

export function clusterScores(labelsTrue: ArrayLike<number>, labelsPred: ArrayLike<number>): ClusterScores {
  return {
    nmi: normalizedMutualInfo(labelsTrue, labelsPred),
    ari: adjustedRandIndex(labelsTrue, labelsPred),
    acc: clusterAccuracy(labelsTrue, labelsPred),
  };
}

/**
 * The input every evaluation takes: a feature matrix (one row per image, row-major float32,
 * as eval/extract-features.ts produces per block) plus an Int32Array of class labels.
 */
import * as tf from '@tensorflow/tfjs';

export interface FeatureMatrix {
  /** rows * dim values, row-major. */
  data: Float32Array;
  rows: number;
  dim: number;
}

/**
 * Wraps a row-major array, checking that the sizes agree and that every value is finite: a NaN
 * or an infinity makes every distance, probe and clustering after it meaningless, and an
 * evaluation must refuse rather than report a number computed from it. (Extraction checks
 * first, naming the model and the block; this is the check for any other caller.)
 */
export function featureMatrix(data: Float32Array, rows: number, dim: number): FeatureMatrix {
  if (!Number.isInteger(rows) || !Number.isInteger(dim) || rows < 0 || dim < 1) throw new Error(`bad feature matrix shape [${rows}, ${dim}]`);
  if (data.length !== rows * dim) throw new Error(`feature matrix [${rows}, ${dim}] needs ${rows * dim} values, got ${data.length}`);
  const bad = firstNonFinite(data);
  if (bad >= 0) throw new Error(`feature matrix [${rows}, ${dim}]: value ${data[bad]} at row ${Math.floor(bad / dim)}, column ${bad % dim} (features must be finite)`);
  return { data, rows, dim };
}

/** Index of the first NaN or +-Infinity in values[start, end), or -1. */
export function firstNonFinite(values: ArrayLike<number>, start = 0, end = values.length): number {
  for (let i = start; i < end; i++) {
    const v = values[i];
    if (v - v !== 0) return i; // NaN - NaN and Inf - Inf are NaN; every finite v gives 0
  }
  return -1;
}

/** Throws unless there is one non-negative label per row (evaluation needs every label). */
export function checkLabels(labels: Int32Array, m: FeatureMatrix, what = 'labels'): void {
  if (labels.length !== m.rows) throw new Error(`${what}: ${labels.length} labels for ${m.rows} feature rows`);
  for (let i = 0; i < labels.length; i++) {
    if (labels[i] < 0) throw new Error(`${what}: label ${labels[i]} at row ${i} (unlabelled samples cannot be evaluated)`);
  }
}

/** Checks a train/test pair for a classifier: labels for every row, and the same feature width. */
export function checkSplits(train: FeatureMatrix, trainLabels: Int32Array, test: FeatureMatrix, testLabels: Int32Array, what: string): void {
  checkLabels(trainLabels, train, 'train labels');
  checkLabels(testLabels, test, 'test labels');
  if (train.dim !== test.dim) throw new Error(`${what}: train dim ${train.dim} != test dim ${test.dim}`);
}

/**
 * Throws where a class has evaluation images (test, validation) but no training images: no
 * classifier trained on that set can predict it, so its accuracy is capped below 100% without
 * a word (a 4-class low-shot with one class untrained reports 75% of a perfect model). The
 * message names the classes, their image counts and the cap. `what` names the evaluation.
 */
export function checkEveryClassTrained(trainLabels: Int32Array, evalLabels: Int32Array, what: string, classNames?: string[]): void {
  const trained = new Set(trainLabels);
  const missing = new Map<number, number>();
  for (const l of evalLabels) if (!trained.has(l)) missing.set(l, (missing.get(l) ?? 0) + 1);
  if (missing.size === 0) return;
  const untrained = [...missing.values()].reduce((a, b) => a + b, 0);
  const named = [...missing.keys()]
    .sort((a, b) => a - b)
    .map((c) => `class ${c}${classNames?.[c] ? ` (${classNames[c]})` : ''}: ${missing.get(c)} image${missing.get(c) === 1 ? '' : 's'}`);
  throw new Error(
    `${what}: ${missing.size === 1 ? 'a class has' : `${missing.size} classes have`} evaluation images but no training images (${named.join(', ')}); ` +
      `no classifier can predict ${missing.size === 1 ? 'it' : 'them'}, so accuracy would be capped at ${((100 * (evalLabels.length - untrained)) / evalLabels.length).toFixed(1)}% ` +
      `and reported as if it were a result. Add training images of ${missing.size === 1 ? 'that class' : 'those classes'} or leave ${missing.size === 1 ? 'it' : 'them'} out of the evaluation set`,
  );
}

/** 1 + the largest label over all given label arrays (labels are class indices 0..C-1). */
export function numClassesOf(...labelSets: Int32Array[]): number {
  let max = -1;
  for (const labels of labelSets) for (let i = 0; i < labels.length; i++) if (labels[i] > max) max = labels[i];
  return max + 1;
}

/** The given rows, copied, in the given order. */
export function selectRows(m: FeatureMatrix, rows: ArrayLike<number>): FeatureMatrix {
  const out = new Float32Array(rows.length * m.dim);
  for (let i = 0; i < rows.length; i++) out.set(m.data.subarray(rows[i] * m.dim, (rows[i] + 1) * m.dim), i * m.dim);
  return { data: out, rows: rows.length, dim: m.dim };
}

export function selectLabels(labels: Int32Array, rows: ArrayLike<number>): Int32Array {
  return Int32Array.from({ length: rows.length }, (_, i) => labels[rows[i]]);
}

/** Rows scaled to unit L2 norm (a zero row stays zero, as torch's F.normalize with eps does). */
export function l2NormalizeRows(m: FeatureMatrix): FeatureMatrix {
  const out = new Float32Array(m.data.length);
  for (let r = 0; r < m.rows; r++) {
    const row = m.data.subarray(r * m.dim, (r + 1) * m.dim);
    let ss = 0;
    for (let j = 0; j < m.dim; j++) ss += row[j] * row[j];
    const inv = 1 / Math.max(Math.sqrt(ss), 1e-12);
    for (let j = 0; j < m.dim; j++) out[r * m.dim + j] = row[j] * inv;
  }
  return { data: out, rows: m.rows, dim: m.dim };
}

/** Fraction of equal entries. */
export function accuracy(predictions: Int32Array, labels: Int32Array): number {
  if (predictions.length !== labels.length) throw new Error(`accuracy: ${predictions.length} predictions for ${labels.length} labels`);
  if (labels.length === 0) return NaN;
  let hits = 0;
  for (let i = 0; i < labels.length; i++) if (predictions[i] === labels[i]) hits++;
  return hits / labels.length;
}

/**
 * Runs f in a tf.tidy and reads its result's values asynchronously (`await t.data()`, so
 * evaluation never blocks on a device read and runs on WebGPU as on wasm), disposing the tensor.
 */
export async function readTensor<T extends Float32Array | Int32Array = Float32Array>(f: () => tf.Tensor): Promise<T> {
  const t = tf.tidy(f);
  try {
    return (await t.data()) as T;
  } finally {
    t.dispose();
  }
}

/** Accuracy within each class (index = label; NaN for a class without samples). */
export function perClassAccuracy(predictions: Int32Array, labels: Int32Array, numClasses: number): number[] {
  if (predictions.length !== labels.length) throw new Error(`perClassAccuracy: ${predictions.length} predictions for ${labels.length} labels`);
  const hits = new Array<number>(numClasses).fill(0), totals = new Array<number>(numClasses).fill(0);
  for (let i = 0; i < labels.length; i++) {
    totals[labels[i]]++;
    if (predictions[i] === labels[i]) hits[labels[i]]++;
  }
  return hits.map((h, c) => (totals[c] ? h / totals[c] : NaN));
}

/**
 * Linear probe on frozen features, the protocol MIM-Refiner reports (following MAE / DINO's
 * linear evaluation: a linear classifier on top of frozen features, hyperparameters picked
 * on a held-out part of train, then retrained on all of train and scored on test), made
 * cheap enough for CPU: features are standardised with train mean/std (instead of the MAE
 * probe's BatchNorm without affine, to the same effect), the classifier is multinomial
 * logistic (softmax) regression trained with mini-batch Adam and a cosine learning-rate
 * decay, and the grid of (lr, weight decay) configurations is trained in ONE pass: their
 * weight matrices are stacked column-wise into [D, G*C], so each step is one matmul for all.
 * The default grid sweeps the learning rate (as the MAE and DINO probes do): with a short
 * Adam schedule the lr is what regularises (on synthetic checks it chose within ~1 point of
 * sklearn's best-C LogisticRegression); an L2 weight decay wd/2 |W|^2 sits in the objective
 * (bias not decayed), which Adam's normalisation makes a weak lever.
 * Cost ~ 3 * 2 * N * D * G * C flops per epoch (plus the retrain with G = 1), so large class
 * counts cost most: N 10000, D 1024, C 1000 takes minutes on one wasm thread.
 * Gradients are written out by hand (softmax - one-hot) and X^T is built in JS for a plain
 * matMul, because tfjs autodiff of matMul uses the transposed kernels, ~10x slower on wasm.
 */
import * as tf from '@tensorflow/tfjs';
import { Rng } from '../lib/rng';
import { accuracy, checkLabels, checkSplits, FeatureMatrix, numClassesOf, readTensor as read, selectLabels, selectRows } from './features';

export interface ProbeConfig {
  lr: number;
  weightDecay: number;
}

export interface SoftmaxTrainOptions {
  numClasses: number;
  /** Passes over the data (default 10). */
  epochs?: number;
  /** At least this many steps however small the data, for the low-shot case (default 300). */
  minSteps?: number;
  batchSize?: number;
  seed?: number;
}

export interface LinearProbeOptions extends Partial<SoftmaxTrainOptions> {
  /** Configurations to choose from on the held-out split (default: DEFAULT_GRID, an lr sweep). */
  grid?: ProbeConfig[];
  /** Part of train held out to choose the configuration (default 0.15). */
  valFraction?: number;
  /** A validation set (carved from training images) the final classifier is scored on too, to choose a block. */
  val?: { features: FeatureMatrix; labels: Int32Array };
}

export interface LinearProbeResult {
  /** Test top-1 accuracy in [0, 1], of the chosen configuration retrained on all of train. */
  accuracy: number;
  predictions: Int32Array;
  best: ProbeConfig;
  /** Every configuration's accuracy on the held-out split (empty when the grid has one entry). */
  sweep: (ProbeConfig & { valAccuracy: number })[];
  /** Top-1 on opts.val, of the same classifier as `accuracy` (undefined without opts.val). */
  valAccuracy?: number;
}

export const DEFAULT_GRID: ProbeConfig[] = [1e-3, 3e-3, 1e-2, 3e-2].map((lr) => ({ lr, weightDecay: 1e-4 }));

export interface Standardizer {
  mean: Float32Array;
  std: Float32Array;
}

/** Per-dimension mean and std (population) of x; a constant dimension gets std 1. */
export function fitStandardizer(x: FeatureMatrix): Standardizer {
  const sum = new Float64Array(x.dim), sq = new Float64Array(x.dim);
  for (let i = 0; i < x.rows; i++) {
    for (let j = 0; j < x.dim; j++) {
      const v = x.data[i * x.dim + j];
      sum[j] += v;
      sq[j] += v * v;
    }
  }
  const mean = new Float32Array(x.dim), std = new Float32Array(x.dim);
  for (let j = 0; j < x.dim; j++) {
    mean[j] = sum[j] / x.rows;
    const sd = Math.sqrt(Math.max(sq[j] / x.rows - (sum[j] / x.rows) ** 2, 0));
    std[j] = sd > 1e-6 ? sd : 1;
  }
  return { mean, std };
}

export function standardize(x: FeatureMatrix, s: Standardizer): FeatureMatrix {
  const out = new Float32Array(x.data.length);
  for (let i = 0; i < x.rows; i++) for (let j = 0; j < x.dim; j++) out[i * x.dim + j] = (x.data[i * x.dim + j] - s.mean[j]) / s.std[j];
  return { data: out, rows: x.rows, dim: x.dim };
}

/** G softmax classifiers trained together: weights [D, G*C] (config g owns columns g*C..), bias [G*C]. */
export interface StackedSoftmax {
  configs: ProbeConfig[];
  numClasses: number;
  dim: number;
  weights: Float32Array;
  bias: Float32Array;
}

/** Trains one softmax classifier per config on (already standardised) x, all in the same steps. */
export async function trainSoftmax(x: FeatureMatrix, labels: Int32Array, configs: ProbeConfig[], opts: SoftmaxTrainOptions): Promise<StackedSoftmax> {
  checkLabels(labels, x);
  if (x.rows === 0 || configs.length === 0) throw new Error('trainSoftmax: no data or no configurations');
  const C = opts.numClasses, G = configs.length, D = x.dim, GC = G * C;
  if (numClassesOf(labels) > C) throw new Error(`trainSoftmax: label ${numClassesOf(labels) - 1} with numClasses ${C}`);
  const Dp = D + 1; // the bias is the last row of the parameters, fed by a constant-1 input
  const batch = Math.min(opts.batchSize ?? 256, x.rows);
  const perEpoch = Math.ceil(x.rows / batch);
  const steps = Math.max(opts.minSteps ?? 300, (opts.epochs ?? 10) * perEpoch);
  const rng = new Rng(opts.seed ?? 0, 0x50be);
  const [b1, b2, eps] = [0.9, 0.999, 1e-8];
  const lr = Float64Array.from({ length: GC }, (_, i) => configs[Math.floor(i / C)].lr);
  const wd = Float64Array.from({ length: GC }, (_, i) => configs[Math.floor(i / C)].weightDecay);
  // Parameters and Adam moments live in JS: per step, tfjs does the two matmuls and the
  // softmax; the elementwise update is one JS loop instead of a dozen small wasm ops, whose
  // fixed cost per op dominates at these sizes.
  const W = new Float32Array(Dp * GC), m = new Float32Array(Dp * GC), v = new Float32Array(Dp * GC);
  const xb = new Float32Array(batch * Dp), xbT = new Float32Array(Dp * batch);
  const order = Int32Array.from({ length: x.rows }, (_, i) => i);
  for (let step = 0; step < steps; step++) {
    const pos = step % perEpoch;
    if (pos === 0 && batch < x.rows) rng.shuffle(order);
    const idx = order.subarray(pos * batch, Math.min((pos + 1) * batch, x.rows));
    const B = idx.length;
    // Batch rows [B, D+1] and their transpose scaled by 1/B (the mean over the batch), built
    // here: tf.gather and tf.transpose are slow on wasm, and matMul's transposed forms more so.
    for (let r = 0; r < B; r++) {
      const row = x.data.subarray(idx[r] * D, (idx[r] + 1) * D);
      xb.set(row, r * Dp);
      xb[r * Dp + D] = 1;
      for (let j = 0; j < D; j++) xbT[j * B + r] = row[j] / B;
      xbT[D * B + r] = 1 / B;
    }
    const probs = await read(() => {
      const logits = tf.matMul(tf.tensor2d(xb.subarray(0, B * Dp), [B, Dp]), tf.tensor2d(W, [Dp, GC]));
      return tf.softmax(tf.reshape(logits, [B, G, C]));
    });
    // d(cross-entropy)/d(logits) = softmax - one-hot, for every config at once. A logit that
    // overflowed makes its row's softmax NaN: the loss is then undefined, and so is the probe.
    for (let r = 0; r < B; r++) {
      for (let g = 0; g < G; g++) {
        const at = r * GC + g * C + labels[idx[r]];
        if (Number.isNaN(probs[at])) throw overflow(step, steps, configs[g], `the softmax loss at row ${idx[r]}`);
        probs[at] -= 1;
      }
    }
    const grad = await read(() => tf.matMul(tf.tensor2d(xbT.subarray(0, Dp * B), [Dp, B]), tf.tensor2d(probs, [B, GC])));
    // Adam with bias correction; cosine decay of the step size to ~0 at the end.
    const t = step + 1;
    const scale = (0.5 * (1 + Math.cos((Math.PI * step) / steps)) * Math.sqrt(1 - b2 ** t)) / (1 - b1 ** t);
    let overflowAt = -1;
    for (let j = 0, i = 0; j < Dp; j++) {
      const decayed = j < D; // no weight decay on the bias row
      for (let col = 0; col < GC; col++, i++) {
        const gi = decayed ? grad[i] + wd[col] * W[i] : grad[i];
        m[i] = b1 * m[i] + (1 - b1) * gi;
        v[i] = b2 * v[i] + (1 - b2) * gi * gi;
        // an infinite second moment freezes the weight at its value (m / inf = 0): a probe that silently stops learning
        if (!(v[i] < Infinity)) overflowAt = col;
        W[i] -= (lr[col] * scale * m[i]) / (Math.sqrt(v[i]) + eps);
      }
    }
    if (overflowAt >= 0) throw overflow(step, steps, configs[Math.floor(overflowAt / C)], "the loss's gradient");
  }
  return { configs, numClasses: C, dim: D, weights: W.slice(0, D * GC), bias: W.slice(D * GC) };
}

function overflow(step: number, steps: number, config: ProbeConfig, what: string): Error {
  return new Error(`linear probe: ${what} is not finite in float32 at step ${step + 1} of ${steps} (lr ${config.lr}): the features are too large (standardise them); the classifier would be meaningless`);
}

/** Predicted class of every row of (standardised) x under each config: result[g][row]. */
export async function predictSoftmax(model: StackedSoftmax, x: FeatureMatrix): Promise<Int32Array[]> {
  const G = model.configs.length, C = model.numClasses;
  const out = model.configs.map(() => new Int32Array(x.rows));
  const chunk = Math.max(1, Math.floor(2 ** 22 / (G * C)));
  const [W, b] = [tf.tensor2d(model.weights, [model.dim, G * C]), tf.tensor1d(model.bias)];
  try {
    for (let start = 0; start < x.rows; start += chunk) {
      const rows = Math.min(chunk, x.rows - start);
      const best = await read<Int32Array>(() => {
        const xs = tf.tensor2d(x.data.subarray(start * x.dim, (start + rows) * x.dim), [rows, x.dim]);
        return tf.argMax(tf.reshape(tf.add(tf.matMul(xs, W), b), [rows, G, C]), 2);
      });
      for (let r = 0; r < rows; r++) for (let g = 0; g < G; g++) out[g][start + r] = best[r * G + g];
    }
  } finally {
    tf.dispose([W, b]);
  }
  return out;
}

/** Standardise with train statistics, train, predict: one configuration or the whole grid. */
async function fitPredict(train: FeatureMatrix, trainLabels: Int32Array, evals: FeatureMatrix[], configs: ProbeConfig[], opts: SoftmaxTrainOptions): Promise<Int32Array[][]> {
  const s = fitStandardizer(train);
  const model = await trainSoftmax(standardize(train, s), trainLabels, configs, opts);
  const out: Int32Array[][] = [];
  for (const e of evals) out.push(await predictSoftmax(model, standardize(e, s)));
  return out;
}

export async function linearProbe(
  train: FeatureMatrix,
  trainLabels: Int32Array,
  test: FeatureMatrix,
  testLabels: Int32Array,
  opts: LinearProbeOptions = {},
): Promise<LinearProbeResult> {
  checkSplits(train, trainLabels, test, testLabels, 'linear probe');
  if (opts.val) checkSplits(train, trainLabels, opts.val.features, opts.val.labels, 'linear probe (validation)');
  const grid = opts.grid ?? DEFAULT_GRID;
  const trainOpts: SoftmaxTrainOptions = { ...opts, numClasses: opts.numClasses ?? numClassesOf(trainLabels, testLabels, opts.val?.labels ?? new Int32Array(0)) };
  let best = grid[0];
  const sweep: LinearProbeResult['sweep'] = [];
  if (grid.length > 1) {
    // Held-out split of train, seeded, to choose the configuration.
    const order = new Rng(opts.seed ?? 0, 0x5a1).shuffle(Int32Array.from({ length: train.rows }, (_, i) => i)) as Int32Array;
    const nVal = Math.min(train.rows - 1, Math.max(1, Math.round((opts.valFraction ?? 0.15) * train.rows)));
    const [valIdx, fitIdx] = [order.subarray(0, nVal), order.subarray(nVal)];
    const valLabels = selectLabels(trainLabels, valIdx);
    const [preds] = await fitPredict(selectRows(train, fitIdx), selectLabels(trainLabels, fitIdx), [selectRows(train, valIdx)], grid, trainOpts);
    grid.forEach((c, g) => sweep.push({ ...c, valAccuracy: accuracy(preds[g], valLabels) }));
    best = grid[sweep.reduce((b, s, g) => (s.valAccuracy > sweep[b].valAccuracy ? g : b), 0)]; // ties: first in grid order
  }
  const evals = opts.val ? [test, opts.val.features] : [test];
  const [[predictions], valPredictions] = await fitPredict(train, trainLabels, evals, [best], trainOpts);
  const valAccuracy = opts.val ? accuracy(valPredictions[0], opts.val.labels) : undefined;
  return { accuracy: accuracy(predictions, testLabels), predictions, best, sweep, valAccuracy };
}

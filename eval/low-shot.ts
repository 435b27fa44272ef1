/**
 * Low-shot classification as in MIM-Refiner's low-shot table (1, 2 and 5 labelled images per
 * class, following MSN, Assran et al. 2022): for each seed draw n train images per class, fit
 * a linear classifier on their frozen features, score the full test set; report mean and std
 * over seeds.
 * Classifier: the multinomial logistic regression of eval/linear-probe.ts (standardised with
 * the subset's own statistics, L2-regularised softmax regression, Adam), with ONE fixed
 * configuration: a 1-shot subset cannot spare images for a validation split. (MSN uses
 * cyanure's L2 logistic regression; same model family, a different solver.)
 * The draws are nested: for a given seed the 1-shot images are among the 2-shot ones, which
 * are among the 5-shot ones, so the n-shot curve is not blurred by independent draws.
 */
import { Rng } from '../runtime/rng';
import { accuracy, checkSplits, FeatureMatrix, numClassesOf, selectLabels, selectRows } from './features';
import { fitStandardizer, predictSoftmax, ProbeConfig, SoftmaxTrainOptions, standardize, trainSoftmax } from './linear-probe';

export interface LowShotOptions extends Partial<SoftmaxTrainOptions> {
  /** Images per class (default [1, 2, 5]). */
  shots?: number[];
  /** One draw per seed (default [0, 1, 2]). */
  seeds?: number[];
  /** The classifier's configuration (default LOW_SHOT_CONFIG). */
  config?: ProbeConfig;
}

export interface LowShotResult {
  shots: number;
  /** Test accuracy per seed, in seed order. */
  accuracies: number[];
  mean: number;
  /** Population std over seeds (numpy's default, ddof 0). */
  std: number;
}

/** Stronger L2 than the full-data probe: a handful of images per class overfits anything
 * (on synthetic 1/2/5-shot checks wd 1e-2..1 was a plateau ~8 points above wd 1e-4). */
export const LOW_SHOT_CONFIG: ProbeConfig = { lr: 1e-2, weightDecay: 1e-1 };

/**
 * Row indices of `shots` images per class (all of a class's images where it has fewer), drawn
 * with the seed; for one seed, smaller shot counts give subsets of larger ones.
 */
export function sampleShots(labels: Int32Array, shots: number, seed: number): Int32Array {
  if (!(Number.isInteger(shots) && shots >= 1)) throw new Error(`sampleShots: shots = ${shots}`);
  const byClass = new Map<number, number[]>();
  for (let i = 0; i < labels.length; i++) {
    const list = byClass.get(labels[i]);
    if (list) list.push(i);
    else byClass.set(labels[i], [i]);
  }
  const picked: number[] = [];
  for (const c of [...byClass.keys()].sort((a, b) => a - b)) {
    // One stream per (seed, class), independent of `shots`: that is what nests the draws.
    const order = new Rng(seed, 0x5107, c).shuffle(byClass.get(c)!) as number[];
    picked.push(...order.slice(0, shots));
  }
  return Int32Array.from(picked.sort((a, b) => a - b));
}

export function lowShot(
  train: FeatureMatrix,
  trainLabels: Int32Array,
  test: FeatureMatrix,
  testLabels: Int32Array,
  opts: LowShotOptions = {},
): LowShotResult[] {
  checkSplits(train, trainLabels, test, testLabels, 'low-shot');
  const seeds = opts.seeds ?? [0, 1, 2];
  const config = opts.config ?? LOW_SHOT_CONFIG;
  const trainOpts: SoftmaxTrainOptions = { ...opts, numClasses: opts.numClasses ?? numClassesOf(trainLabels, testLabels) };
  return (opts.shots ?? [1, 2, 5]).map((shots) => {
    const accuracies = seeds.map((seed) => {
      const rows = sampleShots(trainLabels, shots, seed);
      const subset = selectRows(train, rows);
      const s = fitStandardizer(subset);
      const model = trainSoftmax(standardize(subset, s), selectLabels(trainLabels, rows), [config], { ...trainOpts, seed });
      return accuracy(predictSoftmax(model, standardize(test, s))[0], testLabels);
    });
    const mean = accuracies.reduce((a, b) => a + b, 0) / accuracies.length;
    const std = Math.sqrt(accuracies.reduce((a, b) => a + (b - mean) ** 2, 0) / accuracies.length);
    return { shots, accuracies, mean, std };
  });
}

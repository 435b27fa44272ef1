/**
 * Low-shot classification as in MIM-Refiner's low-shot table (1, 2 and 5 labelled images per
 * class and 1% of the labels, following MSN, Assran et al. 2022): for each seed draw n train
 * images per class (for "p%": p% of each class's images, at least one), fit
 * a linear classifier on their frozen features, score the full test set; report mean and std
 * over seeds.
 * Classifier: the multinomial logistic regression of eval/linear-probe.ts (standardised with
 * the subset's own statistics, L2-regularised softmax regression, Adam), with ONE fixed
 * configuration: a 1-shot subset cannot spare images for a validation split. (MSN uses
 * cyanure's L2 logistic regression; same model family, a different solver.)
 * The draws are nested: for a given seed the 1-shot images are among the 2-shot ones, which
 * are among the 5-shot ones, so the n-shot curve is not blurred by independent draws.
 * A setting that asks a class for more images than it has is an error naming the class
 * (quietly taking fewer would report a different setting under the asked-for name), and so is
 * a test class without any train image (its accuracy is 0 by construction: the mean would be
 * a capped number reported as a result).
 */
import { Rng } from '../lib/rng';
import { accuracy, checkEveryClassTrained, checkSplits, FeatureMatrix, numClassesOf, selectLabels, selectRows } from './features';
import { fitStandardizer, predictSoftmax, ProbeConfig, SoftmaxTrainOptions, standardize, trainSoftmax } from './linear-probe';

/** n images per class, or p% of each class's images (at least one): MSN's 1/2/5 shots and 1%. */
export type ShotSetting = { perClass: number } | { percent: number };

/** The paper's low-shot settings: 1, 2 and 5 images per class, and 1% of the labels. */
export const DEFAULT_SHOTS: ShotSetting[] = [{ perClass: 1 }, { perClass: 2 }, { perClass: 5 }, { percent: 1 }];

/** '1,2,5,1%' -> settings (a number is images per class, 'p%' a share of each class); errors name `flag`. */
export function parseShots(spec: string, flag = 'shots'): ShotSetting[] {
  const settings = spec.split(',').map((part): ShotSetting => {
    const t = part.trim();
    const m = /^(\d+(?:\.\d+)?)%$/.exec(t);
    if (m && +m[1] > 0 && +m[1] <= 100) return { percent: +m[1] };
    if (/^\d+$/.test(t) && +t >= 1) return { perClass: +t };
    throw new Error(`--${flag}: '${t}' is neither a whole number of images per class (>= 1) nor a share like 1% (above 0% and at most 100%)`);
  });
  if (settings.length === 0) throw new Error(`--${flag}: expected a list like 1,2,5,1%`);
  return settings;
}

/** '5' or '1%': the setting's name in reports. */
export function shotName(s: ShotSetting): string {
  return 'perClass' in s ? String(s.perClass) : `${s.percent}%`;
}

export interface LowShotOptions extends Partial<SoftmaxTrainOptions> {
  /** Settings (default DEFAULT_SHOTS). */
  shots?: ShotSetting[];
  /** One draw per seed (default [0, 1, 2]). */
  seeds?: number[];
  /** The classifier's configuration (default LOW_SHOT_CONFIG). */
  config?: ProbeConfig;
  /** Class names for error messages (index = label). */
  classNames?: string[];
}

export interface LowShotResult {
  /** '1', '2', '5' (images per class) or '1%'. */
  setting: string;
  /** Labelled train images the classifier saw (per seed; the same for every seed). */
  images: number;
  /** Test accuracy per seed, in seed order. */
  accuracies: number[];
  mean: number;
  /** Population std over seeds (numpy's default, ddof 0). */
  std: number;
}

/** Stronger L2 than the full-data probe: a handful of images per class overfits anything
 * (on synthetic 1/2/5-shot checks wd 1e-2..1 was a plateau ~8 points above wd 1e-4). */
export const LOW_SHOT_CONFIG: ProbeConfig = { lr: 1e-2, weightDecay: 1e-1 };

function rowsByClass(labels: Int32Array): Map<number, number[]> {
  const byClass = new Map<number, number[]>();
  for (let i = 0; i < labels.length; i++) {
    const list = byClass.get(labels[i]);
    if (list) list.push(i);
    else byClass.set(labels[i], [i]);
  }
  return byClass;
}

/** Images per class a setting takes from a class of `size` images. */
function takeFrom(setting: ShotSetting, size: number): number {
  return 'perClass' in setting ? setting.perClass : Math.max(1, Math.round((setting.percent / 100) * size));
}

/** Throws, naming the class, where a setting asks a class for more images than it has. */
export function checkShots(labels: Int32Array, settings: ShotSetting[], classNames?: string[]): void {
  for (const [c, rows] of rowsByClass(labels)) {
    for (const s of settings) {
      if (takeFrom(s, rows.length) > rows.length) {
        const name = classNames?.[c] ? ` (${classNames[c]})` : '';
        throw new Error(`low-shot: ${shotName(s)} images per class asked for, but class ${c}${name} has only ${rows.length} train image${rows.length === 1 ? '' : 's'}`);
      }
    }
  }
}

/**
 * Row indices of the setting's images of every class, drawn with the seed; for one seed,
 * smaller settings give subsets of larger ones. Throws where a class is too small.
 */
export function sampleShots(labels: Int32Array, setting: ShotSetting, seed: number, classNames?: string[]): Int32Array {
  if ('perClass' in setting && !(Number.isInteger(setting.perClass) && setting.perClass >= 1)) throw new Error(`sampleShots: ${setting.perClass} images per class`);
  checkShots(labels, [setting], classNames);
  const byClass = rowsByClass(labels);
  const picked: number[] = [];
  for (const c of [...byClass.keys()].sort((a, b) => a - b)) {
    // One stream per (seed, class), independent of the setting: that is what nests the draws.
    const order = new Rng(seed, 0x5107, c).shuffle(byClass.get(c)!) as number[];
    picked.push(...order.slice(0, takeFrom(setting, order.length)));
  }
  return Int32Array.from(picked.sort((a, b) => a - b));
}

export async function lowShot(
  train: FeatureMatrix,
  trainLabels: Int32Array,
  test: FeatureMatrix,
  testLabels: Int32Array,
  opts: LowShotOptions = {},
): Promise<LowShotResult[]> {
  checkSplits(train, trainLabels, test, testLabels, 'low-shot');
  const settings = opts.shots ?? DEFAULT_SHOTS;
  checkEveryClassTrained(trainLabels, testLabels, 'low-shot', opts.classNames);
  checkShots(trainLabels, settings, opts.classNames); // every setting, before any training
  const seeds = opts.seeds ?? [0, 1, 2];
  const config = opts.config ?? LOW_SHOT_CONFIG;
  const trainOpts: SoftmaxTrainOptions = { ...opts, numClasses: opts.numClasses ?? numClassesOf(trainLabels, testLabels) };
  const results: LowShotResult[] = [];
  for (const setting of settings) {
    const accuracies: number[] = [];
    let images = 0;
    for (const seed of seeds) {
      const rows = sampleShots(trainLabels, setting, seed, opts.classNames);
      images = rows.length;
      const subset = selectRows(train, rows);
      const s = fitStandardizer(subset);
      const model = await trainSoftmax(standardize(subset, s), selectLabels(trainLabels, rows), [config], { ...trainOpts, seed });
      accuracies.push(accuracy((await predictSoftmax(model, standardize(test, s)))[0], testLabels));
    }
    const mean = accuracies.reduce((a, b) => a + b, 0) / accuracies.length;
    const std = Math.sqrt(accuracies.reduce((a, b) => a + (b - mean) ** 2, 0) / accuracies.length);
    results.push({ setting: shotName(setting), images, accuracies, mean, std });
  }
  return results;
}

/**
 * Per-block kNN of a model, as MIM-Refiner computes it (eval/knn.ts: features standardised with
 * the train set's statistics, L2-normalised, k 20, T 0.07): the CLS token after every block for
 * train, validation and test images (eval transform), one kNN per block and set; the summary
 * leads with the last block and with the block chosen on validation (training images held out
 * from training), never a maximum over test. Used by pipelines/knn.ts and by the training
 * pipelines' kNN before and after.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { VisionTransformer } from '../models/vit';
import { writeChart } from '../sinks/charts';
import { ExtractOptions, extractFeatures, FeatureSet, Pooling } from './extract-features';
import { cachedFeatures } from './feature-cache';
import { KNN_DEFAULTS, knnClassify, KnnOptions } from './knn';
import { featureMatrix } from './features';
import { checkValidationDisjoint, defaultValidation } from './validation';
import { writeJsonReport } from './report';

export interface KnnReport {
  label: string;
  blocks: number[];
  /** Test top-1 accuracy per block, in [0, 1]. */
  top1: number[];
  /** Validation top-1 per block (train images held out from training), when a validation split is known. */
  val?: { source: string; count: number; top1: number[] };
  /** The last block (what a user takes off the shelf) and its test top-1. */
  lastBlock: number;
  last: number;
  /** The block with the best VALIDATION kNN and its test top-1 (absent without a validation split). */
  chosenBlock?: number;
  chosen?: number;
  trainCount: number;
  testCount: number;
  k: number;
  temperature: number;
  /** Features standardised with the train set's statistics before L2 normalisation (the reference's kNN). */
  standardise: boolean;
  pooling: Pooling;
}

export interface PerBlockKnnOptions {
  train: string;
  test: string;
  /** Validation images (training images held out from training); default: the val-* shards beside the train shards; null: none. */
  val?: string | null;
  label: string;
  trainLimit?: number;
  testLimit?: number;
  /** Default: all (every pipeline's --eval-val-limit 0). */
  valLimit?: number;
  k?: number;
  temperature?: number;
  standardise?: boolean;
  pooling?: Pooling;
  log?: (line: string) => void;
  /** Reuse/store features in the on-disk cache under this model key (checkpointKey(file)); only for unchanged checkpoints. */
  cacheKey?: string;
  /** Class count of shards without classes.txt (--num-classes). */
  numClasses?: number;
  /** Names the model in errors (non-finite features): the checkpoint file; default `label`. */
  model?: string;
}

const pct = (a: number) => (100 * a).toFixed(1);

/**
 * Features of the train, validation and test sets after every block, then one kNN per block
 * and set. The block a summary leads with besides the last is chosen on validation, never test.
 */
export async function perBlockKnn(model: VisionTransformer, opts: PerBlockKnnOptions): Promise<KnnReport> {
  const log = opts.log ?? console.log;
  const blocks = Array.from({ length: model.cfg.depth }, (_, i) => i);
  const pooling = opts.pooling ?? 'cls';
  const valSource = opts.val === undefined ? defaultValidation(opts.train) : opts.val ?? undefined;
  if (valSource) await checkValidationDisjoint(valSource, [{ name: 'train', spec: opts.train }, { name: 'test', spec: opts.test }]);
  const extract = async (source: string, limit: number | undefined, what: string): Promise<FeatureSet> => {
    const t0 = performance.now();
    let lastLog = t0;
    const extractOpts: ExtractOptions = {
      source,
      blocks,
      pooling,
      limit,
      numClasses: opts.numClasses,
      model: opts.model ?? opts.label,
      onProgress: (done) => {
        const now = performance.now();
        if (now - lastLog > 2000) {
          lastLog = now;
          const rate = (1000 * done) / (now - t0);
          const eta = limit ? ` ETA ${Math.max(0, (limit - done) / rate).toFixed(0)}s` : '';
          log(`[knn] ${opts.label}: ${what} features ${done}${limit ? `/${limit}` : ''} (${rate.toFixed(0)} img/s${eta})`);
        }
      },
    };
    const set = opts.cacheKey ? await cachedFeatures(model, opts.cacheKey, extractOpts) : await extractFeatures(model, extractOpts);
    const cached = 'cached' in set && set.cached ? ' (feature cache)' : '';
    log(`[knn] ${opts.label}: ${set.count} ${what} images in ${((performance.now() - t0) / 1000).toFixed(1)}s${cached}`);
    return set;
  };
  const train = await extract(opts.train, opts.trainLimit, 'train');
  const val = valSource ? await extract(valSource, opts.valLimit, 'validation') : undefined;
  const test = await extract(opts.test, opts.testLimit, 'test');
  const knn = { k: opts.k ?? KNN_DEFAULTS.k, temperature: opts.temperature ?? KNN_DEFAULTS.temperature, standardise: opts.standardise ?? KNN_DEFAULTS.standardise };
  const top1 = await knnTop1PerBlock(train, test, knn);
  const valTop1 = val ? await knnTop1PerBlock(train, val, knn) : undefined;
  const last = blocks.length - 1;
  const report: KnnReport = {
    label: opts.label,
    blocks,
    top1,
    ...(val && valTop1 ? { val: { source: valSource!, count: val.count, top1: valTop1 } } : {}),
    lastBlock: blocks[last],
    last: top1[last],
    trainCount: train.count,
    testCount: test.count,
    ...knn,
    pooling,
  };
  if (valTop1) {
    const chosen = valTop1.indexOf(Math.max(...valTop1));
    Object.assign(report, { chosenBlock: blocks[chosen], chosen: top1[chosen] });
  }
  const curve = (t: number[]) => t.map((a, i) => `${blocks[i]}:${pct(a)}`).join(' ');
  if (valTop1) log(`[knn] ${opts.label}: validation top-1 per block ${curve(valTop1)}`);
  log(`[knn] ${opts.label}: test top-1 per block ${curve(top1)}`);
  log(`[knn] ${opts.label}: last block ${report.lastBlock}: ${pct(report.last)}%` + (report.chosenBlock !== undefined ? ` | block chosen on validation ${report.chosenBlock}: ${pct(report.chosen!)}%` : ' | no validation split: no block chosen'));
  return report;
}

/**
 * kNN top-1 of `queries` against `train`, one per block of the sets (extracted at the same
 * blocks): the one per-block kNN loop, also of eval/evaluate.ts, whose sets serve other tasks too.
 */
export async function knnTop1PerBlock(train: FeatureSet, queries: FeatureSet, knn: KnnOptions): Promise<number[]> {
  const top1: number[] = [];
  for (let i = 0; i < train.features.length; i++) {
    const at = (set: FeatureSet) => featureMatrix(set.features[i], set.count, set.dim);
    top1.push((await knnClassify(at(train), train.labels, at(queries), queries.labels, knn)).accuracy);
  }
  return top1;
}

/**
 * knn.json (or summary.json) plus the per-block curves (test, and validation where measured)
 * as SVG + PNG. With two reports (before, after) the gains of the last block and of the block
 * chosen on validation; never a maximum over test.
 */
export async function writeKnnSummary(
  dir: string,
  reports: KnnReport[],
  opts: { title: string; name?: string; extra?: Record<string, unknown> },
): Promise<void> {
  fs.mkdirSync(dir, { recursive: true });
  const name = opts.name ?? 'summary';
  const summary: Record<string, unknown> = { ...opts.extra };
  if (reports.length === 2) {
    const [before, after] = reports;
    summary.lastBlockGain = after.last - before.last;
    if (before.chosen !== undefined && after.chosen !== undefined) summary.chosenBlockGain = after.chosen - before.chosen;
  }
  summary.knn = reports;
  writeJsonReport(path.join(dir, `${name}.json`), summary);
  await writeChart(path.join(dir, `${name}-knn`), {
    title: opts.title,
    xLabel: 'block',
    yLabel: 'kNN top-1 (%)',
    series: reports.flatMap((r) => [
      { name: `${r.label} (test)`, points: r.blocks.map((b, i) => [b, 100 * r.top1[i]] as [number, number]) },
      ...(r.val ? [{ name: `${r.label} (validation)`, points: r.blocks.map((b, i) => [b, 100 * r.val!.top1[i]] as [number, number]) }] : []),
    ]),
  });
  console.log(`[knn] wrote ${path.join(dir, `${name}.json`)} and ${path.join(dir, `${name}-knn.png`)}`);
}

/** The kNN curve a run wrote so far (knn-during.json), or none. */
export function readKnnCurve(runDir: string): { step: number; report: KnnReport }[] {
  const file = path.join(runDir, 'knn-during.json');
  return fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, 'utf8')).points : [];
}

/** knn-during.json and a per-block kNN-over-steps chart (SVG + PNG): the paper's training-time metric. */
export async function writeKnnCurve(runDir: string, points: { step: number; report: KnnReport }[]): Promise<void> {
  writeJsonReport(path.join(runDir, 'knn-during.json'), { points });
  await writeChart(path.join(runDir, 'knn-during'), {
    title: 'Per-block kNN top-1 during refinement (EMA encoder; step 0 = MIM checkpoint)',
    xLabel: 'step',
    yLabel: 'kNN top-1 (%)',
    series: points[0].report.blocks.map((b, i) => ({ name: `block ${b}`, points: points.map((p) => [p.step, 100 * p.report.top1[i]] as [number, number]) })),
  });
}

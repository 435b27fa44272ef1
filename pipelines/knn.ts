/**
 * Per-block kNN evaluation of a checkpoint, as MIM-Refiner computes it (eval/knn.ts: features
 * standardised with the train set's statistics, L2-normalised, k 20, T 0.07): the CLS token
 * after every block for train, validation and test images (eval transform), one kNN per block,
 * printed, written as JSON and drawn as per-block curves. The result leads with the last block
 * and with the block chosen on validation (training images held out from training).
 *
 *   npx ts-node pipelines/knn.ts --checkpoint checkpoints/mae-vit-micro-p4/encoder.safetensors
 *   npx ts-node pipelines/knn.ts --random-init --preset vit-micro-p4     # the baseline
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { initBackend } from '../runtime/backend';
import { num, parseFlags, runMain } from '../runtime/cli';
import { checkOutDir } from '../runtime/out-dir';
import { evalClassCount } from '../sources/open';
import { LABEL_LIMIT } from '../sources/tar-shards';
import { loadEncoder } from '../runtime/checkpoint';
import { VisionTransformer, VIT_PRESETS } from '../models/vit';
import { ExtractOptions, extractFeatures, FeatureSet, Pooling } from '../eval/extract-features';
import { cachedFeatures, checkpointKey, randomInitKey } from '../eval/feature-cache';
import { KNN_DEFAULTS, knnClassify, onOff } from '../eval/knn';
import { featureMatrix } from '../eval/features';
import { checkValidationDisjoint, defaultValidation } from '../eval/validation';
import { writeChart } from '../sinks/charts';
import { writeJsonReport } from '../eval/report';

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
  /** Default: testLimit (the validation split is read like the test split). */
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
  const val = valSource ? await extract(valSource, opts.valLimit ?? opts.testLimit, 'validation') : undefined;
  const test = await extract(opts.test, opts.testLimit, 'test');
  const knn = { k: opts.k ?? KNN_DEFAULTS.k, temperature: opts.temperature ?? KNN_DEFAULTS.temperature, standardise: opts.standardise ?? KNN_DEFAULTS.standardise };
  const perBlock = async (queries: FeatureSet): Promise<number[]> => {
    const top1: number[] = [];
    for (let i = 0; i < blocks.length; i++) {
      const at = (set: FeatureSet) => featureMatrix(set.features[i], set.count, set.dim);
      top1.push((await knnClassify(at(train), train.labels, at(queries), queries.labels, knn)).accuracy);
    }
    return top1;
  };
  const top1 = await perBlock(test);
  const valTop1 = val ? await perBlock(val) : undefined;
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

const USAGE = 'Per-block kNN top-1 of a ViT checkpoint.\n  npx ts-node pipelines/knn.ts --checkpoint FILE [options]';
const FLAGS = {
  checkpoint: { description: 'encoder safetensors (timm names)', default: 'checkpoints/mae-vit-micro-p4/encoder.safetensors' },
  'random-init': { description: 'evaluate a randomly initialised ViT of --preset instead', boolean: true },
  preset: { description: `ViT size for --random-init or a checkpoint without config: ${Object.keys(VIT_PRESETS).join(', ')}`, default: 'vit-micro-p4' },
  train: { description: 'train (memory) images', default: 'data/cifar10-mini/train-*.tar.gz' },
  test: { description: 'held-out images', default: 'data/cifar10-mini/test-*.tar.gz' },
  'train-limit': { description: 'use the first N train images (0: all)', default: '0' },
  'test-limit': { description: 'use the first N test images (0: all)', default: '0' },
  val: { description: "validation images, training images held out from training (default: the val-* shards beside --train; 'none': no validation)" },
  'val-limit': { description: 'use the first N validation images (0: as --test-limit)', default: '0' },
  k: { description: 'neighbours (reference 20; 10 is the other setting its paper reports)', default: String(KNN_DEFAULTS.k) },
  temperature: { description: 'vote temperature (reference 0.07)', default: String(KNN_DEFAULTS.temperature) },
  standardise: { description: "'on': standardise features with the train set's per-dimension mean and std before L2 normalisation (the reference's kNN); 'off': L2 only (DINO's, this project's earlier kNN)", default: 'on' },
  pooling: { description: "'cls' or 'avg' (mean of patch tokens)", default: 'cls' },
  seed: { description: 'seed of the random init', default: '0' },
  'num-classes': { description: 'class count of tar shards without classes.txt beside them (labels outside it are skipped and counted)' },
  out: { description: 'directory for knn.json and knn-knn.png', default: 'runs/knn' },
} as const;

async function main() {
  const f = parseFlags(USAGE, FLAGS);
  // Every flag and input is checked before the (slow) backend start and model load.
  if (f.pooling !== 'cls' && f.pooling !== 'avg') throw new Error(`--pooling: expected cls or avg, got '${f.pooling}'`);
  const standardise = onOff('standardise', f.standardise!);
  const preset = VIT_PRESETS[f.preset!];
  if (!preset) throw new Error(`--preset: unknown '${f.preset}' (one of ${Object.keys(VIT_PRESETS).join(', ')})`);
  const seed = num('seed', f.seed, { integer: true, min: 0 });
  const trainLimit = num('train-limit', f['train-limit'], { integer: true, min: 0 }) || undefined;
  const testLimit = num('test-limit', f['test-limit'], { integer: true, min: 0 }) || undefined;
  const valLimit = num('val-limit', f['val-limit'], { integer: true, min: 0 }) || undefined;
  const k = num('k', f.k, { integer: true, min: 1, max: 10_000 });
  const temperature = num('temperature', f.temperature, { min: 1e-6, max: 1e6 });
  // the data's own class count (classes.txt, class folders, CIFAR) needs no flag; the flag's is checked against it
  const numClasses = f['num-classes'] === undefined ? undefined : num('num-classes', f['num-classes'], { integer: true, min: 1, max: LABEL_LIMIT });
  evalClassCount(f.train!, f.test!, numClasses);
  if (!f['random-init'] && !fs.statSync(f.checkpoint!, { throwIfNoEntry: false })?.isFile()) throw new Error(`--checkpoint ${f.checkpoint}: no such file`);
  checkOutDir(f.out!);
  const modelKey = f['random-init'] ? randomInitKey(f.preset!, seed) : checkpointKey(f.checkpoint!);
  await initBackend();
  const fallback = { ...preset, act: 'gelu' as const, posEmbed: 'sincos' as const };
  const model = f['random-init'] ? new VisionTransformer(fallback, seed) : loadEncoder(f.checkpoint!, fallback);
  const label = f['random-init'] ? `random init (${f.preset})` : path.basename(path.dirname(path.resolve(f.checkpoint!)));
  const report = await perBlockKnn(model, {
    train: f.train!,
    test: f.test!,
    label,
    trainLimit,
    testLimit,
    val: f.val === 'none' ? null : f.val,
    valLimit,
    k,
    temperature,
    standardise,
    pooling: f.pooling,
    cacheKey: modelKey,
    numClasses,
  });
  await writeKnnSummary(f.out!, [report], { title: `Per-block kNN top-1: ${label}`, name: 'knn', extra: { checkpoint: f['random-init'] ? null : f.checkpoint } });
}

if (require.main === module) runMain(main);

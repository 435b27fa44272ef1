/**
 * Per-block kNN evaluation (DINO's weighted kNN, k = 20, T = 0.07) of a checkpoint: the CLS
 * token after every block for train and test images (eval transform), one kNN per block,
 * printed, written as JSON and drawn as a per-block curve.
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
import { knnClassify } from '../eval/knn';
import { featureMatrix } from '../eval/features';
import { writeChart } from '../sinks/charts';
import { writeJsonReport } from '../eval/report';

export interface KnnReport {
  label: string;
  blocks: number[];
  /** Top-1 accuracy per block, in [0, 1]. */
  top1: number[];
  bestBlock: number;
  best: number;
  trainCount: number;
  testCount: number;
  k: number;
  temperature: number;
  pooling: Pooling;
}

export interface PerBlockKnnOptions {
  train: string;
  test: string;
  label: string;
  trainLimit?: number;
  testLimit?: number;
  k?: number;
  temperature?: number;
  pooling?: Pooling;
  log?: (line: string) => void;
  /** Reuse/store features in the on-disk cache under this model key (checkpointKey(file)); only for unchanged checkpoints. */
  cacheKey?: string;
  /** Class count of shards without classes.txt (--num-classes). */
  numClasses?: number;
}

/** Features of the train and test sets after every block, then one kNN per block. */
export async function perBlockKnn(model: VisionTransformer, opts: PerBlockKnnOptions): Promise<KnnReport> {
  const log = opts.log ?? console.log;
  const blocks = Array.from({ length: model.cfg.depth }, (_, i) => i);
  const pooling = opts.pooling ?? 'cls';
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
  const test = await extract(opts.test, opts.testLimit, 'test');
  const k = opts.k ?? 20;
  const temperature = opts.temperature ?? 0.07;
  const top1 = blocks.map((_, i) =>
    knnClassify(
      featureMatrix(train.features[i], train.count, train.dim),
      train.labels,
      featureMatrix(test.features[i], test.count, test.dim),
      test.labels,
      { k, temperature },
    ).accuracy,
  );
  const bestIdx = top1.indexOf(Math.max(...top1));
  const report: KnnReport = {
    label: opts.label,
    blocks,
    top1,
    bestBlock: blocks[bestIdx],
    best: top1[bestIdx],
    trainCount: train.count,
    testCount: test.count,
    k,
    temperature,
    pooling,
  };
  log(`[knn] ${opts.label}: top-1 per block ${top1.map((a, i) => `${i}:${(100 * a).toFixed(1)}`).join(' ')} | best block ${report.bestBlock}: ${(100 * report.best).toFixed(2)}%`);
  return report;
}

/** knn.json (or summary.json) plus the per-block curve of every report as SVG + PNG. */
export async function writeKnnSummary(
  dir: string,
  reports: KnnReport[],
  opts: { title: string; name?: string; extra?: Record<string, unknown> },
): Promise<void> {
  fs.mkdirSync(dir, { recursive: true });
  const name = opts.name ?? 'summary';
  const summary: Record<string, unknown> = { ...opts.extra, knn: reports };
  if (reports.length === 2) {
    summary.bestBlockGain = reports[1].best - reports[0].best;
    summary.lastBlockGain = reports[1].top1[reports[1].top1.length - 1] - reports[0].top1[reports[0].top1.length - 1];
  }
  writeJsonReport(path.join(dir, `${name}.json`), summary);
  await writeChart(path.join(dir, `${name}-knn`), {
    title: opts.title,
    xLabel: 'block',
    yLabel: 'kNN top-1 (%)',
    series: reports.map((r) => ({ name: r.label, points: r.blocks.map((b, i) => [b, 100 * r.top1[i]] as [number, number]) })),
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
  k: { description: 'neighbours', default: '20' },
  temperature: { description: 'vote temperature', default: '0.07' },
  pooling: { description: "'cls' or 'avg' (mean of patch tokens)", default: 'cls' },
  seed: { description: 'seed of the random init', default: '0' },
  'num-classes': { description: 'class count of tar shards without classes.txt beside them (labels outside it are skipped and counted)' },
  out: { description: 'directory for knn.json and knn-knn.png', default: 'runs/knn' },
} as const;

async function main() {
  const f = parseFlags(USAGE, FLAGS);
  // Every flag and input is checked before the (slow) backend start and model load.
  if (f.pooling !== 'cls' && f.pooling !== 'avg') throw new Error(`--pooling: expected cls or avg, got '${f.pooling}'`);
  const preset = VIT_PRESETS[f.preset!];
  if (!preset) throw new Error(`--preset: unknown '${f.preset}' (one of ${Object.keys(VIT_PRESETS).join(', ')})`);
  const seed = num('seed', f.seed, { integer: true, min: 0 });
  const trainLimit = num('train-limit', f['train-limit'], { integer: true, min: 0 }) || undefined;
  const testLimit = num('test-limit', f['test-limit'], { integer: true, min: 0 }) || undefined;
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
  const report = await perBlockKnn(model, { train: f.train!, test: f.test!, label, trainLimit, testLimit, k, temperature, pooling: f.pooling, cacheKey: modelKey, numClasses });
  await writeKnnSummary(f.out!, [report], { title: `Per-block kNN top-1: ${label}`, name: 'knn', extra: { checkpoint: f['random-init'] ? null : f.checkpoint } });
}

if (require.main === module) runMain(main);

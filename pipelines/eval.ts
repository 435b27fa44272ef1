/**
 * Off-the-shelf evaluation of a ViT checkpoint, the evaluations of MIM-Refiner's tables on
 * frozen features: per-block weighted kNN (DINO: k 20, T 0.07) and linear probe (curves over
 * blocks), low-shot (1/2/5 images per class x 3 seeds, mean ± std) and k-means clustering of
 * the test set (NMI, ARI, ACC). Features come through the on-disk cache (eval/feature-cache.ts),
 * so running another task, or the same model again, skips the backbone pass.
 * Low-shot and k-means run on ONE block: the best kNN block (kNN is cheap next to them, so it
 * runs to choose the block even when not asked for; with a single block, that block).
 * Choosing by test kNN is the protocol of the per-block curves, not a held-out model
 * selection; the report names the block it used.
 *
 *   npx ts-node pipelines/eval.ts --checkpoint checkpoints/mae-vit-micro-p4/encoder.safetensors --out runs/eval/mae
 *   npx ts-node pipelines/eval.ts --random-init --preset vit-micro-p4 --out runs/eval/random
 *   npx ts-node pipelines/eval.ts --compare runs/eval/random/report.json,runs/eval/mae/report.json --out runs/eval/compare
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { initBackend } from '../runtime/backend';
import { intList, num, parseFlags, runMain } from '../runtime/cli';
import { checkOutDir } from '../runtime/out-dir';
import { evalClassCount } from '../sources/open';
import { LABEL_LIMIT } from '../sources/tar-shards';
import { loadEncoder } from '../runtime/checkpoint';
import { VisionTransformer, VIT_PRESETS } from '../models/vit';
import { extractFeatures, FeatureSet, Pooling } from '../eval/extract-features';
import { cachedFeatures, checkpointKey, DEFAULT_CACHE_DIR, randomInitKey } from '../eval/feature-cache';
import { featureMatrix, FeatureMatrix, l2NormalizeRows, numClassesOf } from '../eval/features';
import { knnClassify } from '../eval/knn';
import { linearProbe, ProbeConfig } from '../eval/linear-probe';
import { lowShot, LowShotResult } from '../eval/low-shot';
import { kmeans } from '../eval/kmeans';
import { clusterScores } from '../eval/cluster-metrics';
import { markdownTable, Results, writeFileAtomic, writeJsonReport } from '../eval/report';
import { writeChart } from '../sinks/charts';

export const TASKS = ['knn', 'linear', 'lowshot', 'kmeans'] as const;
export type EvalTask = (typeof TASKS)[number];

export interface EvalOptions {
  /** Row name in tables and charts. */
  label: string;
  /** Cache key of the model: checkpointKey(file) or randomInitKey(preset, seed). */
  modelKey: string;
  train: string;
  test: string;
  tasks: readonly EvalTask[];
  blocks: number[];
  pooling?: Pooling;
  trainLimit?: number;
  testLimit?: number;
  /** Feature cache folder; null extracts every time. */
  cacheDir?: string | null;
  /** Class count of shards without classes.txt (--num-classes). */
  numClasses?: number;
  log?: (line: string) => void;
}

export interface EvalReport {
  label: string;
  model: string;
  train: { source: string; count: number };
  test: { source: string; count: number };
  pooling: Pooling;
  blocks: number[];
  /** Top-1 accuracies in [0, 1], one per entry of `blocks`. */
  knn?: { k: number; temperature: number; top1: number[]; bestBlock: number; best: number };
  linear?: { top1: number[]; config: ProbeConfig[]; bestBlock: number; best: number };
  lowShot?: { block: number; results: LowShotResult[] };
  kmeans?: { block: number; k: number; nmi: number; ari: number; acc: number };
  /** Wall-clock seconds per stage (extraction is ~0 on a cache hit). */
  seconds: Record<string, number>;
}

const KNN = { k: 20, temperature: 0.07 };

/** Runs the requested tasks; features from the cache where possible. */
export async function evaluate(model: VisionTransformer, opts: EvalOptions): Promise<EvalReport> {
  const log = opts.log ?? console.log;
  const pooling = opts.pooling ?? 'cls';
  const seconds: Record<string, number> = {};
  const timed = async <T>(stage: string, f: () => T | Promise<T>): Promise<T> => {
    const t0 = performance.now();
    const out = await f();
    seconds[stage] = +((performance.now() - t0) / 1000).toFixed(2);
    return out;
  };
  const features = (source: string, limit: number | undefined, what: 'train' | 'test') =>
    timed(`${what} features`, async () => {
      const t0 = performance.now();
      let lastLog = t0;
      const extractOpts = {
        source,
        blocks: opts.blocks,
        pooling,
        limit,
        numClasses: opts.numClasses,
        onProgress: (done: number) => {
          const now = performance.now();
          if (now - lastLog < 2000) return;
          lastLog = now;
          const rate = (1000 * done) / (now - t0);
          const eta = limit ? `, ETA ${Math.max(0, (limit - done) / rate).toFixed(0)}s` : '';
          log(`[eval] ${opts.label}: ${what} features ${done}${limit ? `/${limit}` : ''} (${rate.toFixed(0)} img/s${eta})`);
        },
      };
      const set: FeatureSet & { cached?: boolean } =
        opts.cacheDir === null ? await extractFeatures(model, extractOpts) : await cachedFeatures(model, opts.modelKey, extractOpts, opts.cacheDir);
      log(`[eval] ${opts.label}: ${set.count} ${what} features ${set.cached ? 'from the cache' : `extracted in ${((performance.now() - t0) / 1000).toFixed(1)}s`}`);
      return set;
    });
  const train = await features(opts.train, opts.trainLimit, 'train');
  const test = await features(opts.test, opts.testLimit, 'test');
  const at = (set: FeatureSet, i: number): FeatureMatrix => featureMatrix(set.features[i], set.count, set.dim);
  const numClasses = numClassesOf(train.labels, test.labels);
  const blocks = opts.blocks;
  const want = (t: EvalTask) => opts.tasks.includes(t);
  const best = (top1: number[]) => top1.indexOf(Math.max(...top1));
  const report: EvalReport = {
    label: opts.label,
    model: opts.modelKey,
    train: { source: opts.train, count: train.count },
    test: { source: opts.test, count: test.count },
    pooling,
    blocks,
    seconds,
  };
  const pct = (a: number) => `${(100 * a).toFixed(1)}%`;

  // kNN: asked for, or needed to pick the block of low-shot and k-means.
  let chosen = blocks.length - 1;
  if (want('knn') || ((want('lowshot') || want('kmeans')) && blocks.length > 1)) {
    const top1 = await timed('knn', () =>
      blocks.map((_, i) => knnClassify(at(train, i), train.labels, at(test, i), test.labels, { ...KNN, numClasses }).accuracy),
    );
    chosen = best(top1);
    log(`[eval] ${opts.label}: kNN per block ${blocks.map((b, i) => `${b}:${pct(top1[i])}`).join(' ')}`);
    if (want('knn')) report.knn = { ...KNN, top1, bestBlock: blocks[chosen], best: top1[chosen] };
  }
  if (want('linear')) {
    const results = await timed('linear', () =>
      blocks.map((b, i) => {
        const t0 = performance.now();
        const r = linearProbe(at(train, i), train.labels, at(test, i), test.labels, { numClasses });
        log(`[eval] ${opts.label}: linear probe block ${b}: ${pct(r.accuracy)} (lr ${r.best.lr}, ${((performance.now() - t0) / 1000).toFixed(1)}s)`);
        return r;
      }),
    );
    const top1 = results.map((r) => r.accuracy);
    const i = best(top1);
    report.linear = { top1, config: results.map((r) => r.best), bestBlock: blocks[i], best: top1[i] };
  }
  if (want('lowshot')) {
    const results = await timed('lowshot', () => lowShot(at(train, chosen), train.labels, at(test, chosen), test.labels, { numClasses }));
    report.lowShot = { block: blocks[chosen], results };
    log(`[eval] ${opts.label}: low-shot (block ${blocks[chosen]}) ${results.map((r) => `${r.shots}-shot ${pct(r.mean)} ± ${(100 * r.std).toFixed(1)}`).join(', ')}`);
  }
  if (want('kmeans')) {
    // Unit rows: k-means in Euclidean distance then clusters by direction, as kNN compares.
    const k = Math.min(numClasses, test.count);
    const scores = await timed('kmeans', () => clusterScores(test.labels, kmeans(l2NormalizeRows(at(test, chosen)), { k, seed: 0 }).assignments));
    report.kmeans = { block: blocks[chosen], k, ...scores };
    log(`[eval] ${opts.label}: k-means (block ${blocks[chosen]}, k ${k}) NMI ${pct(scores.nmi)} ARI ${pct(scores.ari)} ACC ${pct(scores.acc)}`);
  }
  return report;
}

/** One table row per report: best and last block of the curves, low-shot, clustering. */
export function summaryResults(reports: EvalReport[]): Results {
  const results: Results = {};
  for (const r of reports) {
    const row: Results[string] = {};
    for (const [name, curve] of [['kNN', r.knn], ['linear', r.linear]] as const) {
      if (!curve) continue;
      row[name] = curve.best;
      row[`${name} block`] = curve.bestBlock;
      row[`${name} last`] = curve.top1[curve.top1.length - 1];
    }
    const block = r.lowShot?.block ?? r.kmeans?.block;
    if (block !== undefined) row['low-shot/k-means block'] = block;
    for (const s of r.lowShot?.results ?? []) row[`${s.shots}-shot`] = `${(100 * s.mean).toFixed(1)} ± ${(100 * s.std).toFixed(1)}`;
    if (r.kmeans) Object.assign(row, { NMI: r.kmeans.nmi, ARI: r.kmeans.ari, ACC: r.kmeans.acc });
    results[r.label] = row;
  }
  return results;
}

/** Rows "<label> kNN" / "<label> linear", one column per block. */
export function perBlockResults(reports: EvalReport[]): Results {
  const results: Results = {};
  for (const r of reports) {
    for (const [name, curve] of [['kNN', r.knn], ['linear', r.linear]] as const) {
      if (curve) results[`${r.label} ${name}`] = Object.fromEntries(r.blocks.map((b, i) => [`block ${b}`, curve.top1[i]]));
    }
  }
  return results;
}

/** The summary table and the per-block table, numbers in % (block indices as they are). */
export function reportMarkdown(reports: EvalReport[]): string {
  const percent = (v: number) => (100 * v).toFixed(1);
  const perBlock = perBlockResults(reports);
  const blockColumns = [...new Set(reports.flatMap((r) => r.blocks))].sort((a, b) => a - b).map((b) => `block ${b}`);
  const onBlock = reports.some((r) => r.lowShot || r.kmeans);
  return [
    `Top-1 accuracy${onBlock ? ', NMI, ARI and ACC' : ''} in %${onBlock ? '; low-shot: mean ± std over 3 seeds; low-shot and k-means on the best kNN block' : ''}.`,
    '',
    markdownTable(summaryResults(reports), { format: (v, column) => (column.endsWith(' block') ? String(v) : percent(v)) }),
    ...(Object.keys(perBlock).length ? ['Top-1 (%) per block:', '', markdownTable(perBlock, { format: percent, columns: blockColumns })] : []),
  ].join('\n');
}

/** kNN and linear top-1 over blocks, one line per (model, task). */
export async function writePerBlockChart(file: string, reports: EvalReport[]): Promise<void> {
  const series = reports.flatMap((r) =>
    (['knn', 'linear'] as const).flatMap((task) => {
      const curve = r[task];
      const name = `${reports.length > 1 ? `${r.label}: ` : ''}${task === 'knn' ? 'kNN' : 'linear'}`;
      return curve ? [{ name, points: r.blocks.map((b, i) => [b, 100 * curve.top1[i]] as [number, number]) }] : [];
    }),
  );
  if (series.length === 0) return;
  const title = reports.length === 1 ? `Per-block top-1: ${reports[0].label}` : 'Per-block top-1';
  await writeChart(file, { title, xLabel: 'block', yLabel: 'top-1 (%)', series });
}

/** report.json, report.md and per-block.{svg,png} in `dir`; returns the markdown. */
export async function writeEvalOutputs(dir: string, report: EvalReport): Promise<string> {
  const md = reportMarkdown([report]);
  writeJsonReport(path.join(dir, 'report.json'), report);
  writeFileAtomic(path.join(dir, 'report.md'), md);
  await writePerBlockChart(path.join(dir, 'per-block'), [report]);
  return md;
}

/** Several report.json files merged: compare.md, compare.json and compare-per-block.{svg,png}. */
export async function compareReports(files: string[], dir: string): Promise<string> {
  const reports = files.map((file): EvalReport => {
    if (!fs.existsSync(file)) throw new Error(`--compare: ${file} not found`);
    const r = JSON.parse(fs.readFileSync(file, 'utf8'));
    if (typeof r?.label !== 'string' || !Array.isArray(r?.blocks)) throw new Error(`--compare: ${file} is not an eval report (no label/blocks)`);
    return r;
  });
  const md = reportMarkdown(reports);
  writeFileAtomic(path.join(dir, 'compare.md'), md);
  writeJsonReport(path.join(dir, 'compare.json'), { files, reports });
  await writePerBlockChart(path.join(dir, 'compare-per-block'), reports);
  return md;
}

/** 'all' | 'last' | '4,5' -> block indices, checked against the model's depth. */
export function parseBlocks(spec: string, depth: number): number[] {
  if (spec === 'all') return Array.from({ length: depth }, (_, i) => i);
  if (spec === 'last') return [depth - 1];
  const blocks = [...new Set(intList('blocks', spec))];
  if (blocks.length === 0) throw new Error(`--blocks: expected all, last or a list like 4,5, got '${spec}'`);
  for (const b of blocks) if (b < 0 || b >= depth) throw new Error(`--blocks: block ${b} does not exist (the model has blocks 0..${depth - 1})`);
  return blocks;
}

export function parseTasks(spec: string): EvalTask[] {
  const tasks = spec.split(',').map((t) => t.trim());
  for (const t of tasks) if (!(TASKS as readonly string[]).includes(t)) throw new Error(`--tasks: unknown task '${t}' (expected some of ${TASKS.join(',')})`);
  return [...new Set(tasks)] as EvalTask[];
}

const USAGE = [
  'Frozen-feature evaluation of a ViT checkpoint: per-block kNN and linear probe, low-shot, k-means.',
  '  npx ts-node pipelines/eval.ts --checkpoint FILE [--tasks knn,linear,lowshot,kmeans] [--out DIR]',
  '  npx ts-node pipelines/eval.ts --random-init --preset vit-micro-p4',
  '  npx ts-node pipelines/eval.ts --compare a/report.json,b/report.json --out DIR',
].join('\n');
const FLAGS = {
  checkpoint: { description: 'encoder safetensors (timm names)', default: 'checkpoints/mae-vit-micro-p4/encoder.safetensors' },
  'random-init': { description: 'evaluate a randomly initialised ViT of --preset instead', boolean: true },
  preset: { description: `ViT size for --random-init or a checkpoint without config: ${Object.keys(VIT_PRESETS).join(', ')}`, default: 'vit-micro-p4' },
  seed: { description: 'seed of the random init', default: '0' },
  tasks: { description: `comma-separated subset of ${TASKS.join(',')}`, default: TASKS.join(',') },
  train: { description: 'train images', default: 'data/cifar10-mini/train-*.tar.gz' },
  test: { description: 'test images', default: 'data/cifar10-mini/test-*.tar.gz' },
  blocks: { description: "'all', 'last' or block indices like 4,5", default: 'all' },
  pooling: { description: "'cls' or 'avg' (mean of patch tokens)", default: 'cls' },
  'train-limit': { description: 'use the first N train images (0: all)', default: '0' },
  'test-limit': { description: 'use the first N test images (0: all)', default: '0' },
  'num-classes': { description: 'class count of tar shards without classes.txt beside them (labels outside it are skipped and counted)' },
  label: { description: 'model name in tables and charts (default: checkpoint folder, or "random init")' },
  'cache-dir': { description: 'feature cache folder', default: DEFAULT_CACHE_DIR },
  'no-cache': { description: 'extract features without reading or writing the cache', boolean: true },
  compare: { description: 'comma-separated report.json files to merge into one table and chart (no evaluation)' },
  out: { description: 'output folder (default runs/eval/<label>, or runs/eval/compare)' },
} as const;

const slug = (s: string) => s.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '') || 'model';

async function main() {
  const f = parseFlags(USAGE, FLAGS);
  if (f.compare !== undefined) {
    const files = f.compare.split(',').filter(Boolean);
    if (files.length === 0) throw new Error('--compare: expected report.json files separated by commas');
    checkOutDir(f.out ?? 'runs/eval/compare');
    const md = await compareReports(files, f.out ?? 'runs/eval/compare');
    console.log(md);
    console.log(`[eval] wrote compare.md, compare.json, compare-per-block.png in ${f.out ?? 'runs/eval/compare'}`);
    return;
  }
  // Every flag is checked before the (slow) backend start and model load.
  if (f.pooling !== 'cls' && f.pooling !== 'avg') throw new Error(`--pooling: expected cls or avg, got '${f.pooling}'`);
  const preset = VIT_PRESETS[f.preset!];
  if (!preset) throw new Error(`--preset: unknown '${f.preset}' (one of ${Object.keys(VIT_PRESETS).join(', ')})`);
  const tasks = parseTasks(f.tasks!);
  const seed = num('seed', f.seed, { integer: true, min: 0 });
  const trainLimit = num('train-limit', f['train-limit'], { integer: true, min: 0 }) || undefined;
  const testLimit = num('test-limit', f['test-limit'], { integer: true, min: 0 }) || undefined;
  const random = f['random-init'];
  if (!random && !fs.statSync(f.checkpoint!, { throwIfNoEntry: false })?.isFile()) {
    throw new Error(
      `checkpoint ${f.checkpoint} not found: pass --checkpoint FILE, or --random-init for the baseline` +
        ' (the default checkpoint is written by pipelines/pretrain-mae.ts)',
    );
  }
  // the data's own class count (classes.txt, class folders, CIFAR) needs no flag; the flag's is checked against it
  const numClasses = f['num-classes'] === undefined ? undefined : num('num-classes', f['num-classes'], { integer: true, min: 1, max: LABEL_LIMIT });
  evalClassCount(f.train!, f.test!, numClasses);
  const label = f.label ?? (random ? `random init (${f.preset})` : path.basename(path.dirname(path.resolve(f.checkpoint!))));
  const out = f.out ?? path.join('runs/eval', slug(label));
  checkOutDir(out);
  await initBackend();
  const fallback = { ...preset, act: 'gelu' as const, posEmbed: 'sincos' as const };
  const model = random ? new VisionTransformer(fallback, seed) : loadEncoder(f.checkpoint!, fallback);
  const blocks = parseBlocks(f.blocks!, model.cfg.depth);
  const report = await evaluate(model, {
    label,
    modelKey: random ? randomInitKey(f.preset!, seed) : checkpointKey(f.checkpoint!),
    train: f.train!,
    test: f.test!,
    tasks,
    blocks,
    pooling: f.pooling,
    trainLimit,
    testLimit,
    cacheDir: f['no-cache'] ? null : f['cache-dir']!,
    numClasses,
  });
  const md = await writeEvalOutputs(out, report);
  console.log(`\n${md}`);
  console.log(`[eval] wrote report.json, report.md, per-block.png in ${out}`);
}

if (require.main === module) runMain(main);

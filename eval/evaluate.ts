/**
 * Off-the-shelf evaluation of a ViT on frozen features, the evaluations of MIM-Refiner's
 * tables, any subset of:
 *   knn       per-block kNN as the reference computes it (eval/knn.ts: train-standardised, k 20, T 0.07)
 *   linear    per-block linear probe (lr chosen on a held-out part of train)
 *   lowshot   1/2/5 images per class and 1% of the labels, x 3 seeds, mean ± std
 *   kmeans    k-means clustering of the test set (NMI, ARI, ACC)
 *   longtail  kNN and linear probe trained on CIFAR-10-LT, per-class test accuracy
 * Every choice is made on the VALIDATION split (training images held out from training; default
 * the val-* shards beside the train shards, refused if its keys overlap train or test): low-shot,
 * k-means and long-tail run on the block with the best validation kNN (the last block when no
 * validation split is known), and the curves lead with the last block (what a user takes off
 * the shelf) and the block chosen on validation. Test is measured, never chosen on.
 * The train, validation and test features are extracted once, at the asked blocks, and serve
 * every task; they come through the on-disk cache (eval/feature-cache.ts), so running another
 * task, or the same model again, skips the backbone pass. eval/reports.ts writes the report.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import fg from 'fast-glob';
import { intList } from '../runtime/cli';
import { VisionTransformer } from '../models/vit';
import { readClassesTxt } from '../sources/open';
import { extractFeatures, FeatureSet, Pooling } from './extract-features';
import { cachedFeatures } from './feature-cache';
import { accuracy, checkEveryClassTrained, featureMatrix, FeatureMatrix, l2NormalizeRows, numClassesOf, perClassAccuracy } from './features';
import { KNN_DEFAULTS, knnClassify } from './knn';
import { knnTop1PerBlock } from './per-block-knn';
import { linearProbe } from './linear-probe';
import { DEFAULT_SHOTS, lowShot, ShotSetting } from './low-shot';
import { kmeans } from './kmeans';
import { clusterScores } from './cluster-metrics';
import { BlockCurve, EvalReport, PerClassResult } from './report';
import { checkValidationDisjoint, defaultValidation } from './validation';

export const TASKS = ['knn', 'linear', 'lowshot', 'kmeans', 'longtail'] as const;
export type EvalTask = (typeof TASKS)[number];

/** Where `make-cifar10-splits.ts` writes CIFAR-10-LT. */
export const DEFAULT_LT_TRAIN = 'data/cifar10-lt/train-*.tar';

export interface EvalOptions {
  /** Row name in tables and charts. */
  label: string;
  /** Cache key of the model: checkpointKey(file) or randomInitKey(preset, seed). */
  modelKey: string;
  /** The checkpoint file, which errors about the model's features name (default: the label). */
  checkpoint?: string;
  /** Recorded in the report: the random init's seed, or the training seed of a checkpoint. */
  seed?: number;
  train: string;
  test: string;
  /** Validation images (training images held out from training); default: val-* beside train; null: none. */
  val?: string | null;
  /** Long-tailed train images for the longtail task (default DEFAULT_LT_TRAIN). */
  ltTrain?: string;
  tasks: readonly EvalTask[];
  blocks: number[];
  pooling?: Pooling;
  /** First N images of each split; undefined: all. */
  trainLimit?: number;
  testLimit?: number;
  valLimit?: number;
  /** kNN settings (default KNN_DEFAULTS: the reference's). */
  knn?: { k?: number; temperature?: number; standardise?: boolean };
  /** Low-shot settings (default DEFAULT_SHOTS: 1, 2, 5 images per class and 1%). */
  shots?: ShotSetting[];
  /** Class names for messages and charts (default: classes.txt beside the train shards). */
  classNames?: string[];
  /** Feature cache folder; null extracts every time; undefined: the default cache. */
  cacheDir?: string | null;
  /** Class count of shards without classes.txt (--num-classes). */
  numClasses?: number;
  log?: (line: string) => void;
}

/** What every task reads: the features at `blocks`, the class count, and the report being filled. */
interface Context {
  opts: EvalOptions;
  blocks: number[];
  train: FeatureSet;
  val?: FeatureSet;
  test: FeatureSet;
  numClasses: number;
  classNames?: string[];
  knn: { k: number; temperature: number; standardise: boolean };
  report: EvalReport;
  log: (line: string) => void;
  timed: <T>(stage: string, f: () => T | Promise<T>) => Promise<T>;
  features: (source: string, limit: number | undefined, what: string) => Promise<FeatureSet>;
}

const pct = (a: number) => `${(100 * a).toFixed(1)}%`;
const at = (set: FeatureSet, i: number): FeatureMatrix => featureMatrix(set.features[i], set.count, set.dim);

/** Runs the requested tasks on features extracted once (from the cache where possible). */
export async function evaluate(model: VisionTransformer, opts: EvalOptions): Promise<EvalReport> {
  const want = (t: EvalTask) => opts.tasks.includes(t);
  const valSource = opts.val === undefined ? defaultValidation(opts.train) : opts.val ?? undefined;
  const ltTrain = opts.ltTrain ?? DEFAULT_LT_TRAIN;
  if (valSource) {
    const others = [{ name: 'train', spec: opts.train }, { name: 'test', spec: opts.test }];
    if (want('longtail')) others.push({ name: 'long-tailed train', spec: ltTrain });
    await checkValidationDisjoint(valSource, others);
  }
  const seconds: Record<string, number> = {};
  const timed = async <T>(stage: string, f: () => T | Promise<T>): Promise<T> => {
    const t0 = performance.now();
    const out = await f();
    seconds[stage] = +((performance.now() - t0) / 1000).toFixed(2);
    return out;
  };
  const features = (source: string, limit: number | undefined, what: string) => timed(`${what} features`, () => extract(model, opts, source, limit, what));
  const blocks = opts.blocks;
  // the validation kNN chooses the block of low-shot, k-means and long-tail when there is a choice
  const onBlock = want('lowshot') || want('kmeans') || want('longtail');
  const chooses = onBlock && blocks.length > 1;
  const train = await features(opts.train, opts.trainLimit, 'train');
  const val = valSource && (want('knn') || want('linear') || chooses) ? await features(valSource, opts.valLimit, 'validation') : undefined;
  const test = await features(opts.test, opts.testLimit, 'test');
  const report: EvalReport = {
    label: opts.label,
    model: opts.modelKey,
    ...(opts.seed !== undefined ? { seed: opts.seed } : {}),
    train: { source: opts.train, count: train.count },
    test: { source: opts.test, count: test.count },
    ...(val ? { val: { source: valSource!, count: val.count } } : {}),
    pooling: opts.pooling ?? 'cls',
    blocks,
    seconds,
  };
  const ctx: Context = {
    opts, blocks, train, val, test, report, timed, features,
    log: opts.log ?? console.log,
    numClasses: numClassesOf(train.labels, test.labels, ...(val ? [val.labels] : [])),
    classNames: opts.classNames ?? readClassesTxtBeside(opts.train),
    knn: { k: opts.knn?.k ?? KNN_DEFAULTS.k, temperature: opts.knn?.temperature ?? KNN_DEFAULTS.temperature, standardise: opts.knn?.standardise ?? KNN_DEFAULTS.standardise },
  };
  const valKnn = val && (want('knn') || chooses) ? await validationKnn(ctx, val) : undefined;
  if (want('knn')) await knnTask(ctx, valKnn);
  const chosen = onBlock ? chooseBlock(ctx, valKnn) : blocks.length - 1;
  if (want('linear')) await linearTask(ctx);
  if (want('lowshot')) await lowShotTask(ctx, chosen);
  if (want('kmeans')) await kmeansTask(ctx, chosen);
  if (want('longtail')) await longTailTask(ctx, chosen, ltTrain);
  return report;
}

/** One split's features at opts.blocks, through the cache unless cacheDir is null, with progress lines. */
async function extract(model: VisionTransformer, opts: EvalOptions, source: string, limit: number | undefined, what: string): Promise<FeatureSet> {
  const log = opts.log ?? console.log;
  const t0 = performance.now();
  let lastLog = t0;
  const extractOpts = {
    source,
    blocks: opts.blocks,
    pooling: opts.pooling ?? 'cls',
    limit,
    numClasses: opts.numClasses,
    model: opts.checkpoint ?? opts.label,
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
}

/** The curve's summary: last block, and the block the validation numbers choose (ties: the earlier block). */
function blockCurve(blocks: number[], top1: number[], val: number[] | undefined): BlockCurve {
  const last = blocks.length - 1;
  const curve: BlockCurve = { top1, ...(val ? { val } : {}), lastBlock: blocks[last], last: top1[last] };
  if (val) {
    const i = val.indexOf(Math.max(...val));
    Object.assign(curve, { chosenBlock: blocks[i], chosen: top1[i] });
  }
  return curve;
}

const curveLine = (blocks: number[], top1: number[]) => blocks.map((b, i) => `${b}:${pct(top1[i])}`).join(' ');
const knnOptions = (ctx: Context) => ({ ...ctx.knn, numClasses: ctx.numClasses });

/** Validation kNN per block: reported with the kNN task, and what chooses the block of the others. */
async function validationKnn(ctx: Context, val: FeatureSet): Promise<number[]> {
  const top1 = await ctx.timed('knn (validation)', () => knnTop1PerBlock(ctx.train, val, knnOptions(ctx)));
  ctx.log(`[eval] ${ctx.opts.label}: kNN on validation per block ${curveLine(ctx.blocks, top1)}`);
  return top1;
}

async function knnTask(ctx: Context, valKnn: number[] | undefined): Promise<void> {
  const top1 = await ctx.timed('knn', () => knnTop1PerBlock(ctx.train, ctx.test, knnOptions(ctx)));
  ctx.log(`[eval] ${ctx.opts.label}: kNN on test per block ${curveLine(ctx.blocks, top1)}`);
  ctx.report.knn = { ...ctx.knn, ...blockCurve(ctx.blocks, top1, valKnn) };
}

/** The block of low-shot, k-means and long-tail: the best validation kNN, else the last block. */
function chooseBlock(ctx: Context, valKnn: number[] | undefined): number {
  const { blocks } = ctx;
  const i = valKnn ? valKnn.indexOf(Math.max(...valKnn)) : blocks.length - 1;
  ctx.report.block = { block: blocks[i], by: blocks.length === 1 ? 'the only block' : valKnn ? 'validation kNN' : 'last block (no validation split)' };
  ctx.log(`[eval] ${ctx.opts.label}: low-shot / k-means / long-tail on block ${blocks[i]} (${ctx.report.block.by})`);
  return i;
}

async function linearTask(ctx: Context): Promise<void> {
  const { blocks, train, val, test } = ctx;
  const results = await ctx.timed('linear', async () => {
    const out = [];
    for (let i = 0; i < blocks.length; i++) {
      const t0 = performance.now();
      const r = await linearProbe(at(train, i), train.labels, at(test, i), test.labels, { numClasses: ctx.numClasses, ...(val ? { val: { features: at(val, i), labels: val.labels } } : {}) });
      const valText = r.valAccuracy !== undefined ? `, validation ${pct(r.valAccuracy)}` : '';
      ctx.log(`[eval] ${ctx.opts.label}: linear probe block ${blocks[i]}: test ${pct(r.accuracy)}${valText} (lr ${r.best.lr}, ${((performance.now() - t0) / 1000).toFixed(1)}s)`);
      out.push(r);
    }
    return out;
  });
  const valTop1 = val ? results.map((r) => r.valAccuracy!) : undefined;
  ctx.report.linear = { ...blockCurve(blocks, results.map((r) => r.accuracy), valTop1), config: results.map((r) => r.best) };
}

async function lowShotTask(ctx: Context, chosen: number): Promise<void> {
  const { train, test } = ctx;
  const results = await ctx.timed('lowshot', () =>
    lowShot(at(train, chosen), train.labels, at(test, chosen), test.labels, { numClasses: ctx.numClasses, shots: ctx.opts.shots ?? DEFAULT_SHOTS, classNames: ctx.classNames }),
  );
  ctx.report.lowShot = { block: ctx.blocks[chosen], results };
  ctx.log(`[eval] ${ctx.opts.label}: low-shot (block ${ctx.blocks[chosen]}) ${results.map((r) => `${r.setting}-shot ${pct(r.mean)} ± ${(100 * r.std).toFixed(1)}`).join(', ')}`);
}

async function kmeansTask(ctx: Context, chosen: number): Promise<void> {
  const { test } = ctx;
  // Unit rows: k-means in Euclidean distance then clusters by direction, as kNN compares.
  const k = Math.min(ctx.numClasses, test.count);
  const scores = await ctx.timed('kmeans', async () => clusterScores(test.labels, (await kmeans(l2NormalizeRows(at(test, chosen)), { k, seed: 0 })).assignments));
  ctx.report.kmeans = { block: ctx.blocks[chosen], k, ...scores };
  ctx.log(`[eval] ${ctx.opts.label}: k-means (block ${ctx.blocks[chosen]}, k ${k}) NMI ${pct(scores.nmi)} ARI ${pct(scores.ari)} ACC ${pct(scores.acc)}`);
}

/** kNN and linear probe trained on the long-tailed set, per-class accuracy on test. */
async function longTailTask(ctx: Context, chosen: number, ltTrain: string): Promise<void> {
  const { test } = ctx;
  const lt = await ctx.features(ltTrain, undefined, 'long-tailed train');
  checkEveryClassTrained(lt.labels, test.labels, `long-tail (${ltTrain})`, ctx.classNames);
  const ltClasses = numClassesOf(lt.labels, test.labels);
  const counts = Array.from({ length: ltClasses }, () => 0);
  for (const l of lt.labels) counts[l]++;
  const perClassOf = (predictions: Int32Array): PerClassResult => ({ top1: accuracy(predictions, test.labels), perClass: perClassAccuracy(predictions, test.labels, ltClasses) });
  const [knnR, linR] = await ctx.timed('longtail', async () => [
    await knnClassify(at(lt, chosen), lt.labels, at(test, chosen), test.labels, { ...ctx.knn, numClasses: ltClasses }),
    await linearProbe(at(lt, chosen), lt.labels, at(test, chosen), test.labels, { numClasses: ltClasses }),
  ]);
  const result = {
    block: ctx.blocks[chosen],
    train: { source: ltTrain, count: lt.count, perClass: counts },
    knn: perClassOf(knnR.predictions),
    linear: perClassOf(linR.predictions),
    ...(ctx.classNames ? { classNames: ctx.classNames } : {}),
  };
  ctx.report.longTail = result;
  const perClass = `${lt.count} train images, ${counts.join('/')} per class; block ${ctx.blocks[chosen]}`;
  ctx.log(`[eval] ${ctx.opts.label}: long-tailed (${perClass}) kNN ${pct(result.knn.top1)}, linear ${pct(result.linear.top1)} on test`);
}

/** classes.txt beside the first train shard, if any. */
function readClassesTxtBeside(spec: string): string[] | undefined {
  const first = fs.existsSync(spec) ? spec : fg.sync(spec, { onlyFiles: true })[0];
  return first ? readClassesTxt(fs.statSync(first).isDirectory() ? first : path.dirname(first)) : undefined;
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

/** 'knn,kmeans' -> the tasks, each checked against TASKS. */
export function parseTasks(spec: string): EvalTask[] {
  const tasks = spec.split(',').map((t) => t.trim());
  for (const t of tasks) if (!(TASKS as readonly string[]).includes(t)) throw new Error(`--tasks: unknown task '${t}' (expected some of ${TASKS.join(',')})`);
  return [...new Set(tasks)] as EvalTask[];
}

/**
 * Off-the-shelf evaluation of a ViT checkpoint, the evaluations of MIM-Refiner's tables on
 * frozen features, any subset by --tasks:
 *   knn       per-block kNN as the reference computes it (eval/knn.ts: train-standardised, k 20, T 0.07)
 *   linear    per-block linear probe (lr chosen on a held-out part of train)
 *   lowshot   1/2/5 images per class and 1% of the labels (--shots), x 3 seeds, mean ± std
 *   kmeans    k-means clustering of the test set (NMI, ARI, ACC)
 *   longtail  kNN and linear probe trained on CIFAR-10-LT (--lt-train), per-class test accuracy + chart
 * Every choice is made on the VALIDATION split (training images held out from training; default
 * the val-* shards beside --train, refused if its keys overlap train or test): low-shot,
 * k-means and long-tail run on the block with the best validation kNN (the last block when no
 * validation split is known), and summaries lead with the last block (what a user takes off the
 * shelf) and the block chosen on validation. Test is measured, never chosen on.
 * Features come through the on-disk cache (eval/feature-cache.ts), so running another task, or
 * the same model again, skips the backbone pass.
 *
 *   npx ts-node pipelines/eval.ts --checkpoint checkpoints/mae-vit-micro-p4/encoder.safetensors --out runs/eval/mae
 *   npx ts-node pipelines/eval.ts --random-init --preset vit-micro-p4 --out runs/eval/random
 *   npx ts-node pipelines/eval.ts --compare runs/eval/random/report.json,runs/eval/mae/report.json --out runs/eval/compare
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import fg from 'fast-glob';
import { initBackend } from '../runtime/backend';
import { intList, num, parseFlags, runMain } from '../runtime/cli';
import { checkOutDir } from '../runtime/out-dir';
import { evalClassCount } from '../sources/open';
import { LABEL_LIMIT } from '../sources/tar-shards';
import { loadEncoder } from '../runtime/checkpoint';
import { VisionTransformer, VIT_PRESETS } from '../models/vit';
import { readClassesTxt } from '../sources/open';
import { extractFeatures, FeatureSet, Pooling } from '../eval/extract-features';
import { cachedFeatures, checkpointKey, DEFAULT_CACHE_DIR, randomInitKey } from '../eval/feature-cache';
import { accuracy, featureMatrix, FeatureMatrix, l2NormalizeRows, numClassesOf, perClassAccuracy } from '../eval/features';
import { KNN_DEFAULTS, knnClassify, onOff } from '../eval/knn';
import { linearProbe } from '../eval/linear-probe';
import { DEFAULT_SHOTS, lowShot, parseShots, shotName, ShotSetting } from '../eval/low-shot';
import { kmeans } from '../eval/kmeans';
import { clusterScores } from '../eval/cluster-metrics';
import { BlockCurve, EvalReport, markdownTable, PerClassResult, Results, writeFileAtomic, writeJsonReport } from '../eval/report';
export type { BlockCurve, EvalReport, PerClassResult };
import { checkValidationDisjoint, defaultValidation } from '../eval/validation';
import {
  checkSameData,
  comparePerBlockChart,
  compareMarkdown,
  comparisonChart,
  groupByLabel,
  headlines,
  readFinetuneSummary,
  readReport,
  settingsOf,
} from '../eval/compare';
import { writeChart } from '../sinks/charts';

export const TASKS = ['knn', 'linear', 'lowshot', 'kmeans', 'longtail'] as const;
export type EvalTask = (typeof TASKS)[number];

/** Where `make-cifar10-splits.ts` writes CIFAR-10-LT. */
export const DEFAULT_LT_TRAIN = 'data/cifar10-lt/train-*.tar';

export interface EvalOptions {
  /** Row name in tables and charts. */
  label: string;
  /** Cache key of the model: checkpointKey(file) or randomInitKey(preset, seed). */
  modelKey: string;
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
  trainLimit?: number;
  testLimit?: number;
  /** Default: testLimit. */
  valLimit?: number;
  /** kNN settings (default KNN_DEFAULTS: the reference's). */
  knn?: { k?: number; standardise?: boolean };
  /** Low-shot settings (default DEFAULT_SHOTS: 1, 2, 5 images per class and 1%). */
  shots?: ShotSetting[];
  /** Class names for messages and charts (default: classes.txt beside the train shards). */
  classNames?: string[];
  /** Feature cache folder; null extracts every time. */
  cacheDir?: string | null;
  /** Class count of shards without classes.txt (--num-classes). */
  numClasses?: number;
  log?: (line: string) => void;
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

/** Runs the requested tasks; features from the cache where possible. */
export async function evaluate(model: VisionTransformer, opts: EvalOptions): Promise<EvalReport> {
  const log = opts.log ?? console.log;
  const pooling = opts.pooling ?? 'cls';
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
  const features = (source: string, limit: number | undefined, what: string) =>
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
  const blocks = opts.blocks;
  const onBlock = want('lowshot') || want('kmeans') || want('longtail');
  const train = await features(opts.train, opts.trainLimit, 'train');
  const val = valSource && (want('knn') || want('linear') || (onBlock && blocks.length > 1)) ? await features(valSource, opts.valLimit ?? opts.testLimit, 'validation') : undefined;
  const test = await features(opts.test, opts.testLimit, 'test');
  const at = (set: FeatureSet, i: number): FeatureMatrix => featureMatrix(set.features[i], set.count, set.dim);
  const numClasses = numClassesOf(train.labels, test.labels, ...(val ? [val.labels] : []));
  const classNames = opts.classNames ?? readClassesTxtBeside(opts.train);
  const report: EvalReport = {
    label: opts.label,
    model: opts.modelKey,
    ...(opts.seed !== undefined ? { seed: opts.seed } : {}),
    train: { source: opts.train, count: train.count },
    test: { source: opts.test, count: test.count },
    ...(val ? { val: { source: valSource!, count: val.count } } : {}),
    pooling,
    blocks,
    seconds,
  };
  const pct = (a: number) => `${(100 * a).toFixed(1)}%`;
  const curveLine = (top1: number[]) => blocks.map((b, i) => `${b}:${pct(top1[i])}`).join(' ');
  const knnSettings = { k: opts.knn?.k ?? KNN_DEFAULTS.k, temperature: KNN_DEFAULTS.temperature, standardise: opts.knn?.standardise ?? KNN_DEFAULTS.standardise };
  const knnPerBlock = async (queries: FeatureSet) => {
    const top1: number[] = [];
    for (let i = 0; i < blocks.length; i++) top1.push((await knnClassify(at(train, i), train.labels, at(queries, i), queries.labels, { ...knnSettings, numClasses })).accuracy);
    return top1;
  };

  // Validation kNN: reported with the kNN task, and what chooses the block of the others.
  const valKnn = val && (want('knn') || (onBlock && blocks.length > 1)) ? await timed('knn (validation)', () => knnPerBlock(val)) : undefined;
  if (valKnn) log(`[eval] ${opts.label}: kNN on validation per block ${curveLine(valKnn)}`);
  if (want('knn')) {
    const top1 = await timed('knn', () => knnPerBlock(test));
    log(`[eval] ${opts.label}: kNN on test per block ${curveLine(top1)}`);
    report.knn = { ...knnSettings, ...blockCurve(blocks, top1, valKnn) };
  }
  if (onBlock) {
    const i = valKnn ? valKnn.indexOf(Math.max(...valKnn)) : blocks.length - 1;
    report.block = { block: blocks[i], by: blocks.length === 1 ? 'the only block' : valKnn ? 'validation kNN' : 'last block (no validation split)' };
    log(`[eval] ${opts.label}: low-shot / k-means / long-tail on block ${report.block.block} (${report.block.by})`);
  }
  const chosen = report.block ? blocks.indexOf(report.block.block) : blocks.length - 1;
  if (want('linear')) {
    const results = await timed('linear', async () => {
      const out = [];
      for (let i = 0; i < blocks.length; i++) {
        const t0 = performance.now();
        const r = await linearProbe(at(train, i), train.labels, at(test, i), test.labels, { numClasses, ...(val ? { val: { features: at(val, i), labels: val.labels } } : {}) });
        log(`[eval] ${opts.label}: linear probe block ${blocks[i]}: test ${pct(r.accuracy)}${r.valAccuracy !== undefined ? `, validation ${pct(r.valAccuracy)}` : ''} (lr ${r.best.lr}, ${((performance.now() - t0) / 1000).toFixed(1)}s)`);
        out.push(r);
      }
      return out;
    });
    const valTop1 = val ? results.map((r) => r.valAccuracy!) : undefined;
    report.linear = { ...blockCurve(blocks, results.map((r) => r.accuracy), valTop1), config: results.map((r) => r.best) };
  }
  if (want('lowshot')) {
    const results = await timed('lowshot', () =>
      lowShot(at(train, chosen), train.labels, at(test, chosen), test.labels, { numClasses, shots: opts.shots ?? DEFAULT_SHOTS, classNames }),
    );
    report.lowShot = { block: blocks[chosen], results };
    log(`[eval] ${opts.label}: low-shot (block ${blocks[chosen]}) ${results.map((r) => `${r.setting}-shot ${pct(r.mean)} ± ${(100 * r.std).toFixed(1)}`).join(', ')}`);
  }
  if (want('kmeans')) {
    // Unit rows: k-means in Euclidean distance then clusters by direction, as kNN compares.
    const k = Math.min(numClasses, test.count);
    const scores = await timed('kmeans', async () => clusterScores(test.labels, (await kmeans(l2NormalizeRows(at(test, chosen)), { k, seed: 0 })).assignments));
    report.kmeans = { block: blocks[chosen], k, ...scores };
    log(`[eval] ${opts.label}: k-means (block ${blocks[chosen]}, k ${k}) NMI ${pct(scores.nmi)} ARI ${pct(scores.ari)} ACC ${pct(scores.acc)}`);
  }
  if (want('longtail')) {
    const lt = await features(ltTrain, undefined, 'long-tailed train');
    const ltClasses = numClassesOf(lt.labels, test.labels);
    const counts = Array.from({ length: ltClasses }, () => 0);
    for (const l of lt.labels) counts[l]++;
    const perClassOf = (predictions: Int32Array): PerClassResult => ({ top1: accuracy(predictions, test.labels), perClass: perClassAccuracy(predictions, test.labels, ltClasses) });
    const [knnR, linR] = await timed('longtail', async () => [
      await knnClassify(at(lt, chosen), lt.labels, at(test, chosen), test.labels, { ...knnSettings, numClasses: ltClasses }),
      await linearProbe(at(lt, chosen), lt.labels, at(test, chosen), test.labels, { numClasses: ltClasses }),
    ]);
    report.longTail = {
      block: blocks[chosen],
      train: { source: ltTrain, count: lt.count, perClass: counts },
      knn: perClassOf(knnR.predictions),
      linear: perClassOf(linR.predictions),
      ...(classNames ? { classNames } : {}),
    };
    log(`[eval] ${opts.label}: long-tailed (${lt.count} train images, ${counts.join('/')} per class; block ${blocks[chosen]}) kNN ${pct(report.longTail.knn.top1)}, linear ${pct(report.longTail.linear.top1)} on test`);
  }
  return report;
}

/** classes.txt beside the first train shard, if any. */
function readClassesTxtBeside(spec: string): string[] | undefined {
  const first = fs.existsSync(spec) ? spec : fg.sync(spec, { onlyFiles: true })[0];
  return first ? readClassesTxt(fs.statSync(first).isDirectory() ? first : path.dirname(first)) : undefined;
}

/**
 * One table row per report: the last block and the block chosen on validation for the curves
 * (never the best block on test), low-shot, clustering, long-tail.
 */
export function summaryResults(reports: EvalReport[]): Results {
  const results: Results = {};
  for (const r of reports) {
    const row: Results[string] = {};
    for (const [name, curve] of [['kNN', r.knn], ['linear', r.linear]] as const) {
      if (!curve) continue;
      row[`${name} last`] = curve.last;
      if (curve.chosenBlock !== undefined) {
        row[`${name} val-chosen`] = curve.chosen;
        row[`${name} val-chosen block`] = curve.chosenBlock;
      }
    }
    const block = r.lowShot?.block ?? r.kmeans?.block ?? r.longTail?.block;
    if (block !== undefined) row['low-shot/k-means block'] = block;
    for (const s of r.lowShot?.results ?? []) row[`${s.setting}-shot`] = `${(100 * s.mean).toFixed(1)} ± ${(100 * s.std).toFixed(1)}`;
    if (r.kmeans) Object.assign(row, { NMI: r.kmeans.nmi, ARI: r.kmeans.ari, ACC: r.kmeans.acc });
    if (r.longTail) Object.assign(row, { 'LT kNN': r.longTail.knn.top1, 'LT linear': r.longTail.linear.top1 });
    results[r.label] = row;
  }
  return results;
}

/** Rows "<label> kNN" / "<label> linear" (test) and "... (validation)", one column per block. */
export function perBlockResults(reports: EvalReport[]): Results {
  const results: Results = {};
  for (const r of reports) {
    for (const [name, curve] of [['kNN', r.knn], ['linear', r.linear]] as const) {
      if (!curve) continue;
      results[`${r.label} ${name}`] = Object.fromEntries(r.blocks.map((b, i) => [`block ${b}`, curve.top1[i]]));
      if (curve.val) results[`${r.label} ${name} (validation)`] = Object.fromEntries(r.blocks.map((b, i) => [`block ${b}`, curve.val![i]]));
    }
  }
  return results;
}

/** The summary table and the per-block table, numbers in % (block indices as they are). */
export function reportMarkdown(reports: EvalReport[]): string {
  const percent = (v: number) => (100 * v).toFixed(1);
  const perBlock = perBlockResults(reports);
  const blockColumns = [...new Set(reports.flatMap((r) => r.blocks))].sort((a, b) => a - b).map((b) => `block ${b}`);
  const onBlock = reports.some((r) => r.lowShot || r.kmeans || r.longTail);
  const knn = reports.find((r) => r.knn)?.knn;
  return [
    `Top-1 accuracy${onBlock ? ', NMI, ARI and ACC' : ''} in % on the test set; "last": the last block, "val-chosen": the block with the best validation top-1 (training images held out from training).` +
      (knn ? ` kNN: k ${knn.k}, T ${knn.temperature}, ${knn.standardise ? 'features standardised with train statistics (the reference)' : 'L2 only (not standardised)'}.` : '') +
      (onBlock ? ' Low-shot (mean ± std over 3 seeds), k-means and long-tail (LT) on the block chosen by validation kNN.' : ''),
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

/** Per-class test top-1 of the long-tailed kNN and linear probe, classes from most to fewest train images. */
export async function writeLongTailChart(file: string, report: EvalReport): Promise<void> {
  const lt = report.longTail;
  if (!lt) return;
  const order = lt.train.perClass.map((n, c) => ({ n, c })).sort((a, b) => b.n - a.n || a.c - b.c);
  const name = (c: number) => lt.classNames?.[c] ?? `class ${c}`;
  await writeChart(file, {
    title: `Long-tailed (${lt.train.count} train images, block ${lt.block}): per-class test top-1, ${report.label}`,
    xLabel: `class, most to fewest train images: ${order.map(({ n, c }) => `${name(c)} ${n}`).join(', ')}`,
    yLabel: 'test top-1 (%)',
    yDomain: [0, 100],
    width: 720,
    series: (['knn', 'linear'] as const).map((task) => ({
      name: task === 'knn' ? `kNN (${(100 * lt.knn.top1).toFixed(1)}% overall)` : `linear (${(100 * lt.linear.top1).toFixed(1)}% overall)`,
      points: order.map(({ c }, rank) => [rank, 100 * lt[task].perClass[c]] as [number, number]),
    })),
  });
}

/** report.json, report.md, per-block.{svg,png} (and long-tail-per-class.{svg,png}) in `dir`; returns the markdown. */
export async function writeEvalOutputs(dir: string, report: EvalReport): Promise<string> {
  const md = reportMarkdown([report]);
  writeJsonReport(path.join(dir, 'report.json'), report);
  writeFileAtomic(path.join(dir, 'report.md'), md);
  await writePerBlockChart(path.join(dir, 'per-block'), [report]);
  await writeLongTailChart(path.join(dir, 'long-tail-per-class'), report);
  return md;
}

/** A label as a folder name: 'random init (vit-micro-p4)' -> 'random-init-vit-micro-p4'. */
const slug = (s: string) => s.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '') || 'model';

/** Where pipelines/finetune.ts writes a model's summary: runs/finetune/<label as a folder name>/summary.json. */
export const DEFAULT_FINETUNE_DIR = 'runs/finetune';

/**
 * Several report.json files side by side (eval/compare.ts): compare.md (tables), compare.json,
 * compare.{svg,png} (every headline metric, the models side by side) and
 * compare-per-block.{svg,png}. Reports with the same label are runs of one model (seeds).
 * Fine-tuning summaries: `finetune` maps a label to its summary.json; a label without one
 * takes `<finetuneDir>/<label as a folder name>/summary.json` where that exists.
 */
export async function compareReports(
  files: string[],
  dir: string,
  opts: { finetune?: Record<string, string>; finetuneDir?: string | null } = {},
): Promise<string> {
  const reports = files.map(readReport);
  checkSameData(reports, files);
  const models = groupByLabel(reports, files);
  for (const label of Object.keys(opts.finetune ?? {})) {
    if (!models.some((m) => m.label === label)) throw new Error(`--finetune-summaries: no report has the label '${label}' (labels: ${models.map((m) => `'${m.label}'`).join(', ')})`);
  }
  for (const m of models) {
    const byLabel = opts.finetuneDir === null ? undefined : path.join(opts.finetuneDir ?? DEFAULT_FINETUNE_DIR, slug(m.label), 'summary.json');
    const file = opts.finetune?.[m.label] ?? (byLabel && fs.existsSync(byLabel) ? byLabel : undefined);
    if (file) m.finetune = { file, summary: readFinetuneSummary(file, reports[0]) };
  }
  const md = compareMarkdown(models);
  writeFileAtomic(path.join(dir, 'compare.md'), md);
  writeJsonReport(path.join(dir, 'compare.json'), {
    files,
    models: models.map((m) => ({ label: m.label, files: m.files, finetune: m.finetune?.file, headline: headlines(m, settingsOf(models)) })),
    reports,
  });
  await writeChart(path.join(dir, 'compare'), comparisonChart(models));
  await writeChart(path.join(dir, 'compare-per-block'), comparePerBlockChart(models));
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
  'Frozen-feature evaluation of a ViT checkpoint: per-block kNN and linear probe, low-shot, k-means, long-tailed.',
  'Choices (the block of low-shot/k-means/long-tail, the block a summary names) are made on --val, never on test.',
  '  npx ts-node pipelines/eval.ts --checkpoint FILE [--tasks knn,linear,lowshot,kmeans,longtail] [--out DIR]',
  '  npx ts-node pipelines/eval.ts --checkpoint none --preset vit-micro-p4 --seed 0     # random init (also: --random-init)',
  '  npx ts-node pipelines/eval.ts --compare a/report.json,b/report.json[,...] [--finetune-summaries LABEL=summary.json,...] --out DIR',
].join('\n');
const FLAGS = {
  checkpoint: { description: "encoder safetensors (timm names), or 'none' for a random init of --preset", default: 'checkpoints/mae-vit-micro-p4/encoder.safetensors' },
  'random-init': { description: "evaluate a randomly initialised ViT of --preset instead (the same as --checkpoint none)", boolean: true },
  preset: { description: `ViT size for a random init or a checkpoint without config: ${Object.keys(VIT_PRESETS).join(', ')}`, default: 'vit-micro-p4' },
  seed: { description: 'seed of the random init (default 0); with a checkpoint, the seed that trained it, recorded in the report for --compare' },
  tasks: { description: `comma-separated subset of ${TASKS.join(',')} (longtail needs CIFAR-10-LT at --lt-train)`, default: 'knn,linear,lowshot,kmeans' },
  train: { description: 'train images', default: 'data/cifar10-mini/train-*.tar.gz' },
  test: { description: 'test images', default: 'data/cifar10-mini/test-*.tar.gz' },
  val: { description: "validation images: training images held out from training, disjoint from train and test (default: the val-* shards beside --train; 'none': no validation, choices fall back to the last block)" },
  'val-limit': { description: 'use the first N validation images (0: as --test-limit)', default: '0' },
  'lt-train': { description: 'long-tailed train images for --tasks longtail (CIFAR-10-LT, ratio 100: npx ts-node scripts/make-cifar10-splits.ts)', default: DEFAULT_LT_TRAIN },
  'knn-k': { description: 'kNN neighbours (reference 20; 10 is the other setting its paper reports)', default: String(KNN_DEFAULTS.k) },
  'knn-standardise': { description: "'on': kNN on features standardised with the train set's per-dimension mean and std, then L2-normalised (the reference's); 'off': L2 only (DINO's, this project's earlier kNN)", default: 'on' },
  shots: { description: "low-shot settings: images per class, or a share of each class's images like 1%", default: DEFAULT_SHOTS.map(shotName).join(',') },
  blocks: { description: "'all', 'last' or block indices like 4,5", default: 'all' },
  pooling: { description: "'cls' or 'avg' (mean of patch tokens)", default: 'cls' },
  'train-limit': { description: 'use the first N train images (0: all)', default: '0' },
  'test-limit': { description: 'use the first N test images (0: all)', default: '0' },
  'num-classes': { description: 'class count of tar shards without classes.txt beside them (labels outside it are skipped and counted)' },
  label: { description: 'model name in tables and charts (default: checkpoint folder, or "random init")' },
  'cache-dir': { description: 'feature cache folder', default: DEFAULT_CACHE_DIR },
  'no-cache': { description: 'extract features without reading or writing the cache', boolean: true },
  compare: { description: 'comma-separated report.json files to put side by side in one table and chart (no evaluation); reports with the same label are runs (seeds) of one model, shown as mean ± std' },
  'finetune-summaries': { description: `with --compare: fine-tuning summaries (pipelines/finetune.ts) as LABEL=summary.json,... (default: ${DEFAULT_FINETUNE_DIR}/<label as a folder name>/summary.json where it exists)` },
  'finetune-dir': { description: `with --compare: where to look for fine-tuning summaries by label ('none': only --finetune-summaries)`, default: DEFAULT_FINETUNE_DIR },
  out: { description: 'output folder (default runs/eval/<label>, or runs/eval/compare)' },
} as const;

/** `LABEL=FILE,...` -> { LABEL: FILE }. */
function parseFinetuneSummaries(spec: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of spec.split(',').filter(Boolean)) {
    const at = item.lastIndexOf('=');
    if (at <= 0 || at === item.length - 1) throw new Error(`--finetune-summaries: expected LABEL=summary.json, got '${item}'`);
    out[item.slice(0, at)] = item.slice(at + 1);
  }
  return out;
}

/** Runs the evaluation (or --compare) with command-line style arguments; resolves to the output folder. */
export async function runEval(argv: string[]): Promise<string> {
  const f = parseFlags(USAGE, FLAGS, argv);
  if (f.compare !== undefined) {
    const files = f.compare.split(',').filter(Boolean);
    if (files.length === 0) throw new Error('--compare: expected report.json files separated by commas');
    const out = f.out ?? 'runs/eval/compare';
    const finetune = f['finetune-summaries'] === undefined ? undefined : parseFinetuneSummaries(f['finetune-summaries']);
    checkOutDir(out);
    const md = await compareReports(files, out, { finetune, finetuneDir: f['finetune-dir'] === 'none' ? null : f['finetune-dir'] });
    console.log(md);
    console.log(`[eval] wrote compare.md, compare.json, compare.png (the models side by side), compare-per-block.png in ${out}`);
    return out;
  }
  // Every flag is checked before the (slow) backend start and model load.
  if (f.pooling !== 'cls' && f.pooling !== 'avg') throw new Error(`--pooling: expected cls or avg, got '${f.pooling}'`);
  const preset = VIT_PRESETS[f.preset!];
  if (!preset) throw new Error(`--preset: unknown '${f.preset}' (one of ${Object.keys(VIT_PRESETS).join(', ')})`);
  const tasks = parseTasks(f.tasks!);
  const knn = { k: num('knn-k', f['knn-k'], { integer: true, min: 1 }), standardise: onOff('knn-standardise', f['knn-standardise']!) };
  const shots = parseShots(f.shots!);
  const valLimit = num('val-limit', f['val-limit'], { integer: true, min: 0 }) || undefined;
  if (tasks.includes('longtail') && fg.sync(f['lt-train']!, { onlyFiles: true }).length === 0 && !fs.existsSync(f['lt-train']!)) {
    throw new Error(`--lt-train ${f['lt-train']}: no such files; build CIFAR-10-LT with: npx ts-node scripts/make-cifar10-splits.ts`);
  }
  const random = f['random-init'] || f.checkpoint === 'none';
  const seed = f.seed === undefined ? (random ? 0 : undefined) : num('seed', f.seed, { integer: true, min: 0 });
  const trainLimit = num('train-limit', f['train-limit'], { integer: true, min: 0 }) || undefined;
  const testLimit = num('test-limit', f['test-limit'], { integer: true, min: 0 }) || undefined;
  if (!random && !fs.statSync(f.checkpoint!, { throwIfNoEntry: false })?.isFile()) {
    throw new Error(
      `checkpoint ${f.checkpoint} not found: pass --checkpoint FILE, or --checkpoint none for the random-init baseline` +
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
  try {
    const blocks = parseBlocks(f.blocks!, model.cfg.depth);
    const report = await evaluate(model, {
      label,
      modelKey: random ? randomInitKey(f.preset!, seed!) : checkpointKey(f.checkpoint!),
      seed,
      train: f.train!,
      test: f.test!,
      val: f.val === 'none' ? null : f.val,
      valLimit,
      ltTrain: f['lt-train'],
      knn,
      shots,
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
    console.log(`[eval] wrote report.json, report.md, per-block.png${report.longTail ? ', long-tail-per-class.png' : ''} in ${out}`);
    return out;
  } finally {
    model.dispose();
  }
}

if (require.main === module) runMain(() => runEval(process.argv.slice(2)).then(() => undefined));

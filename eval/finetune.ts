/**
 * Fine-tuning as an evaluation (pipelines/finetune.ts): the labelled subsets, the classifier's
 * accuracy, one run's result and the summary over shares, lrs and seeds.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { hostTensors, loadEncoder } from '../runtime/checkpoint';
import { ClassifierHead, Pooling, VisionTransformer } from '../models/vit';
import { HostTensor } from '../models/params';
import { readSafetensors } from '../models/safetensors';
import { SkipLog } from '../datapath/batches';
import { openSource } from '../sources/open';
import { writeChart } from '../sinks/charts';
import { extractFeatures } from './extract-features';
import { sampleShots, shotName, ShotSetting } from './low-shot';
import { markdownTable } from './report';

/** One fine-tuning run's outcome, in result.json. */
export interface RunResult {
  share: string;
  lr: number;
  seed: number;
  images: number;
  steps: number;
  stepsPerEpoch: number;
  /** Validation top-1 at each evaluation. */
  curve: { step: number; epoch: number; val: number }[];
  /** Validation images evaluated. */
  valImages: number;
  /** The evaluation chosen (best validation top-1; ties: the earlier). */
  best: { step: number; epoch: number; val: number };
  /** Test top-1 of the chosen checkpoint and the images scored, once the run's lr is the chosen one. */
  test?: number;
  testImages?: number;
}

/** What summary.json holds per share (accuracies in [0, 1]). */
export interface FinetuneShareResult {
  share: string;
  /** Labelled train images per seed. */
  images: number;
  epochs: number;
  steps: number;
  /** The lr chosen on validation (or the only one). */
  lr: number;
  seeds: number[];
  /** Best validation top-1 per seed (of the checkpoint chosen on it). */
  val: number[];
  /** Test top-1 of that checkpoint per seed. */
  test: number[];
  bestEpoch: number[];
  valMean: number;
  valStd: number;
  testMean: number;
  testStd: number;
  /** Each lr's validation top-1 (mean and std over seeds); test is never measured for the others. */
  sweep: { lr: number; valMean: number; valStd: number }[];
  /** The chosen checkpoints, relative to the run directory. */
  models: string[];
}

export interface FinetuneSummary {
  kind: 'finetune';
  label: string;
  model: string;
  train: { source: string; count: number };
  val: { source: string; count: number };
  test: { source: string; count: number };
  settings: Record<string, unknown>;
  results: FinetuneShareResult[];
}

/** Every training image's label by stable index; an unlabelled image is an error naming it. */
export async function trainLabels(spec: string, numClasses: number): Promise<Int32Array> {
  const labels: number[] = [];
  const skips = new SkipLog();
  for await (const sample of openSource(spec, { numClasses, onSkip: (origin, reason) => skips.record(origin, reason) }).samples) {
    if (sample.label < 0) throw new Error(`${sample.origin}: no class label; fine-tuning needs one for every training image`);
    labels[sample.index] = sample.label;
  }
  if (skips.total > 0) console.warn(`[data] ${spec}: skipped ${skips.total} samples (${skips.summary()})`);
  return Int32Array.from(labels);
}

/**
 * The labelled subset of a share for a seed (eval/low-shot.ts's nested per-class draw; at least
 * one image per class); undefined for all of them. A class left without images is an error.
 */
export function shareSubset(labels: Int32Array, share: ShotSetting, seed: number, numClasses: number, classNames?: string[]): Int32Array | undefined {
  const all = 'percent' in share && share.percent === 100;
  const rows = all ? undefined : sampleShots(labels, share, seed, classNames);
  const counts = new Int32Array(numClasses);
  for (const i of rows ?? labels.keys()) counts[labels[i]]++;
  const empty = counts.findIndex((n) => n === 0);
  if (empty >= 0) throw new Error(`--label-share ${shotName(share)} leaves class ${empty}${classNames?.[empty] ? ` (${classNames[empty]})` : ''} without images: it has none among the training images`);
  return rows;
}

/** '10%' -> '10pct', '5' -> '5-per-class': the share's folder. */
export function shareDir(share: ShotSetting): string {
  return 'percent' in share ? `${share.percent}pct` : `${share.perClass}-per-class`;
}

export function readResult(runDir: string): RunResult | undefined {
  const file = path.join(runDir, 'result.json');
  return fs.existsSync(file) && fs.existsSync(path.join(runDir, 'model.safetensors')) ? (JSON.parse(fs.readFileSync(file, 'utf8')) as RunResult) : undefined;
}

/** Encoder and classifier weights under timm's names, read from the device asynchronously. */
export async function classifierWeights(encoder: VisionTransformer, head: ClassifierHead): Promise<Record<string, HostTensor>> {
  const [e, h] = await Promise.all([encoder.params.exportTimm(), head.params.exportTimm()]);
  return { ...e, ...h };
}

/** Top-1 of the classifier on pooled last-block features (one asynchronous read). */
export async function classifierAccuracy(head: ClassifierHead, set: Awaited<ReturnType<typeof extractFeatures>>): Promise<number> {
  const predictions = tf.tidy(() => tf.argMax(head.logits(tf.tensor2d(set.features[0], [set.count, set.dim])), 1));
  const predicted = (await predictions.data()) as Int32Array;
  predictions.dispose();
  let correct = 0;
  for (let i = 0; i < set.count; i++) if (predicted[i] === set.labels[i]) correct++;
  return correct / set.count;
}

/** Test top-1 of a saved model.safetensors. */
export async function testAccuracy(file: string, numClasses: number, pooling: Pooling, evaluate: (encoder: VisionTransformer) => ReturnType<typeof extractFeatures>) {
  const encoder = loadEncoder(file);
  const head = new ClassifierHead(encoder, numClasses, pooling);
  try {
    // the file holds the encoder's keys too: only the classifier's are the head's
    head.params.importTimm(hostTensors(readSafetensors(file).tensors), file, /^(?!head\.|fc_norm\.)/);
    const set = await evaluate(encoder);
    return { top1: await classifierAccuracy(head, set), count: set.count };
  } finally {
    head.dispose();
    encoder.dispose();
  }
}

/**
 * One row per share: images, epochs, lr, validation and test top-1 (mean ± std over seeds); with
 * an lr sweep also every lr's validation mean, so the choice can be read (and seen at a grid edge).
 */
export function summaryMarkdown(summary: FinetuneSummary): string {
  const pm = (mean: number, std: number) => `${(100 * mean).toFixed(1)} ± ${(100 * std).toFixed(1)}`;
  const rows = Object.fromEntries(summary.results.map((r) => [r.share, {
    images: r.images, epochs: r.epochs, lr: String(r.lr), seeds: r.seeds.join(','),
    ...(r.sweep.length > 1 ? { 'validation per lr': r.sweep.map((w) => `${w.lr}: ${(100 * w.valMean).toFixed(1)}`).join(', ') } : {}),
    'validation top-1': pm(r.valMean, r.valStd), 'test top-1': pm(r.testMean, r.testStd), 'test per seed': r.test.map((t) => (100 * t).toFixed(1)).join(' / '),
  }]));
  return [
    `Fine-tuning of ${summary.label}${summary.model !== summary.label ? ` (${summary.model})` : ''}: top-1 in % on ${summary.test.source} (${summary.test.count} images), mean ± std over seeds; ` +
      `the checkpoint (and the lr, where several were swept) chosen on ${summary.val.source} (${summary.val.count} images).`,
    '',
    markdownTable(rows, { rowHeader: 'labels' }),
  ].join('\n');
}

/** Validation top-1 per epoch, one line per run. */
export async function writeValCurves(file: string, label: string, runs: RunResult[], withLr: boolean): Promise<void> {
  await writeChart(file, {
    title: `Fine-tuning ${label}: validation top-1`,
    xLabel: 'epoch',
    yLabel: 'validation top-1 (%)',
    series: runs.map((r) => ({ name: `${r.share}${withLr ? ` lr ${r.lr}` : ''} seed ${r.seed}`, points: r.curve.map((c) => [c.epoch, 100 * c.val] as [number, number]) })),
  });
}


/**
 * Fine-tuning evaluation of any ViT checkpoint (or a random init): full fine-tuning and
 * low-data fine-tuning on a per-class share of the labels, with the MAE / BEiT recipe (AdamW,
 * layer-wise lr decay, warm-up + cosine, label smoothing 0.1, drop path 0.1, a timm classifier
 * head on the mean of the patch tokens with fc_norm), on the shared training driver.
 * Every (share, lr, seed) is one driver run; the validation split picks its checkpoint (the
 * best of --val-evals evaluations) and, where --lr lists several, the lr (best mean over
 * seeds); test is measured once, at the end, for the chosen checkpoints only.
 *
 *   npx ts-node pipelines/finetune.ts --label-share 1%,10% --epochs 15,3 --seeds 0,1,2
 *   npx ts-node pipelines/finetune.ts --checkpoint none --preset vit-micro-p4 --label-share 10%
 *   npx ts-node pipelines/finetune.ts --resume runs/finetune/mae-vit-micro-p4
 *
 * Output in --out (default runs/finetune/<label>): summary.json / summary.md (validation and
 * test top-1 per seed, mean ± std, the settings), val-curve.{svg,png}, and per run
 * <share>/lr-<lr>/seed-<s>/: model.safetensors (the checkpoint chosen on validation: encoder,
 * fc_norm and head under timm's names), result.json, metrics.jsonl, checkpoint/ (for --resume).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../runtime/backend';
import { explicitFlags, intList, mergeResumeFlags, num, numRange, parseFlags, runMain } from '../runtime/cli';
import { hostTensors, loadEncoder, prefixKeys, readTrainState, withoutPrefix } from '../runtime/checkpoint';
import { checkOutDir } from '../runtime/out-dir';
import { lockRunDir } from '../runtime/run-lock';
import { vitPresetFallback } from '../runtime/vit-flag';
import { writeFileAtomic } from '../lib/atomic-file';
import { ClassifierHead, Pooling, VisionTransformer, VIT_PRESETS } from '../models/vit';
import { HostTensor } from '../models/params';
import { readSafetensors, writeSafetensors } from '../models/safetensors';
import { classifyObjective } from '../objectives/classify';
import { maeViews } from '../operators/multi-view';
import { epochBatches, SkipLog } from '../datapath/batches';
import { evalClassCount, openSource } from '../sources/open';
import { LABEL_LIMIT } from '../sources/tar-shards';
import { extractFeatures } from '../eval/extract-features';
import { parseShots, sampleShots, shotName, ShotSetting } from '../eval/low-shot';
import { checkValidationDisjoint, defaultValidation } from '../eval/validation';
import { markdownTable, writeJsonReport } from '../eval/report';
import { writeChart } from '../sinks/charts';
import { train } from '../train/driver';
import { checkpointFiles } from '../train/checkpoint-files';
import { DRIVER_FLAGS, driverFlags } from '../train/flags';

const USAGE = 'Fine-tuning evaluation (MAE/BEiT recipe): full and low-data, choices on --val, test once at the end.\n  npx ts-node pipelines/finetune.ts [options]';
const FLAGS = {
  checkpoint: { description: "encoder safetensors (timm names), or 'none' for a random init of --preset", default: 'checkpoints/mae-vit-micro-p4/encoder.safetensors' },
  preset: { description: `ViT size of --checkpoint none or of a file without config: ${Object.keys(VIT_PRESETS).join(', ')}` },
  train: { description: 'training images', default: 'data/cifar10-mini/train-*.tar.gz' },
  val: { description: 'validation images (training images held out from training; default: the val-* shards beside --train)' },
  test: { description: 'test images', default: 'data/cifar10-mini/test-*.tar.gz' },
  'num-classes': { description: 'class count of tar shards without classes.txt beside them' },
  'label-share': { description: "labelled training images: shares of each class like 1%,10%,100%, or images per class like 5 (a seeded per-class draw per seed)", default: '1%,10%' },
  epochs: { description: 'epochs over the labelled images: one for every share, or one per share (40,16 for the bundled data\'s 1%,10%, chosen on validation: 1% gained nothing from 80, 10% rose from 3 to 8 to 16 and still rose at the end; README)', default: '40,16' },
  seeds: { description: 'seeds (head init, label draw, augmentation, drop path, order); mean ± std over them', default: '0,1,2' },
  batch: { description: 'batch size', default: '32' },
  lr: { description: 'peak lr; several are swept and one chosen per share on validation (best mean over seeds); of 3e-4, 1e-3, 3e-3, 1e-2 on the bundled data (seed 0) 1% chose 3e-3 and 10% 1e-3 (README)', default: '1e-3,3e-3' },
  'min-lr': { description: 'lr at the end of the cosine', default: '1e-6' },
  warmup: { description: 'share of the schedule in linear warm-up', default: '0.1' },
  'weight-decay': { description: 'AdamW weight decay (weights only; not biases, norms, tokens)', default: '0.05' },
  'layer-decay': { description: 'layer-wise lr decay: block i gets lr x decay^(depth - i), the embeddings decay^(depth + 1)', default: '0.75' },
  'label-smoothing': { description: 'label smoothing of the cross-entropy', default: '0.1' },
  'drop-path': { description: "stochastic depth: timm's drop_path_rate, rising linearly over the blocks", default: '0.1' },
  pooling: { description: "classifier input: 'avg' (mean of the patch tokens + fc_norm, MAE's fine-tuning) or 'cls' (CLS after the final norm, timm's default)", default: 'avg' },
  'crop-scale': { description: 'RandomResizedCrop area range lo,hi', default: '0.25,1' },
  jitter: { description: 'colour jitter strength (brightness, contrast, saturation; timm color_jitter), 0 for none', default: '0.4' },
  'val-evals': { description: 'validation evaluations per run, evenly spaced, the last at the end: the candidates for the checkpoint', default: '3' },
  'val-limit': { description: 'use the first N validation images (0: all)', default: '0' },
  'test-limit': { description: 'use the first N test images (0: all)', default: '0' },
  label: { description: 'model name in the summary (default: the checkpoint folder, or "random init (<preset>)")' },
  out: { description: 'run directory (default runs/finetune/<label>)' },
  resume: { description: 'continue the fine-tuning run in this directory' },
  ...DRIVER_FLAGS,
} as const;
type FinetuneFlags = ReturnType<typeof parseFlags<typeof FLAGS>>;

/** Flags a resumed run may give anew: logging, checkpointing, --max-steps; the rest define the table. */
const FREE_ON_RESUME = new Set<string>(Object.keys(DRIVER_FLAGS));
const OPTIMISER = { beta1: 0.9, beta2: 0.999, eps: 1e-8 };

/** One fine-tuning run's outcome, in result.json. */
interface RunResult {
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

/** Runs the fine-tuning table; resolves to summary.json's path (or undefined when stopped early). */
export async function finetune(argv: string[]): Promise<string | undefined> {
  const given = parseFlags(USAGE, FLAGS, argv);
  const f = given.resume ? resumedFlags(given, argv) : given;
  const random = f.checkpoint === 'none';
  const fallback = vitPresetFallback('preset', f.preset);
  if (random && !fallback) throw new Error('--checkpoint none: pass --preset for the random init');
  if (f.pooling !== 'avg' && f.pooling !== 'cls') throw new Error(`--pooling: expected avg or cls, got '${f.pooling}'`);
  const shares = parseShots(f['label-share']!, 'label-share');
  const epochList = f.epochs!.split(',').map((e) => num('epochs', e, { min: 0.001 }));
  if (epochList.length !== 1 && epochList.length !== shares.length) throw new Error(`--epochs: give one value or one per --label-share (${shares.length}), got ${epochList.length} (the default ${FLAGS.epochs.default} goes with the default --label-share ${FLAGS['label-share'].default})`);
  const seeds = [...new Set(intList('seeds', f.seeds))];
  if (seeds.length === 0 || seeds.some((s) => s < 0)) throw new Error(`--seeds: expected seeds >= 0 like 0,1,2, got '${f.seeds}'`);
  const lrs = [...new Set(f.lr!.split(',').map((v) => num('lr', v, { min: 0 })))];
  const s = {
    batch: num('batch', f.batch, { integer: true, min: 1, max: 65536 }),
    minLr: num('min-lr', f['min-lr'], { min: 0 }),
    warmup: num('warmup', f.warmup, { min: 0, max: 1 }),
    weightDecay: num('weight-decay', f['weight-decay'], { min: 0 }),
    layerDecay: num('layer-decay', f['layer-decay'], { min: 0, max: 1 }),
    labelSmoothing: num('label-smoothing', f['label-smoothing'], { min: 0, max: 0.999 }),
    dropPath: num('drop-path', f['drop-path'], { min: 0, max: 0.999 }),
    pooling: f.pooling as Pooling,
    cropScale: numRange('crop-scale', f['crop-scale'], { min: 0.01, max: 1 }),
    jitter: num('jitter', f.jitter, { min: 0, max: 1 }),
    valEvals: num('val-evals', f['val-evals'], { integer: true, min: 1, max: 10000 }),
  };
  const valLimit = num('val-limit', f['val-limit'], { integer: true, min: 0 }) || undefined;
  const testLimit = num('test-limit', f['test-limit'], { integer: true, min: 0 }) || undefined;
  const driver = driverFlags(f);
  const numClasses = evalClassCount(f.train!, f.test!, f['num-classes'] === undefined ? undefined : num('num-classes', f['num-classes'], { integer: true, min: 2, max: LABEL_LIMIT }));
  const val = f.val ?? defaultValidation(f.train!);
  if (!val) throw new Error(`no validation split beside ${f.train}: fine-tuning picks its checkpoint on one; pass --val (training images held out from training)`);
  evalClassCount(f.train!, val, numClasses);
  if (!random && !fs.statSync(f.checkpoint!, { throwIfNoEntry: false })?.isFile()) throw new Error(`--checkpoint ${f.checkpoint}: not found (or 'none' for a random init)`);
  const label = f.label ?? (random ? `random init (${f.preset})` : path.basename(path.dirname(path.resolve(f.checkpoint!))));
  const out = given.resume ?? f.out ?? path.join('runs/finetune', label.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, ''));
  if (!given.resume) {
    checkOutDir(out);
    if (fs.existsSync(path.join(out, 'flags.json'))) throw new Error(`--out ${out} holds an earlier fine-tuning run: continue it with --resume ${out}, or pass another --out`);
  }
  await checkValidationDisjoint(val, [{ name: 'train', spec: f.train! }, { name: 'test', spec: f.test! }]);
  await initBackend();
  using _lock = lockRunDir(out);
  if (!given.resume) writeFileAtomic(path.join(out, 'flags.json'), JSON.stringify(f, null, 1));

  const classNames = openSource(f.train!, { numClasses }).classes;
  const labels = await trainLabels(f.train!, numClasses);
  const newEncoder = (seed: number) => (random ? new VisionTransformer(fallback!, seed) : loadEncoder(f.checkpoint!, fallback));
  const probe = newEncoder(0);
  const { depth, imgSize } = probe.cfg;
  probe.dispose();
  // RandomResizedCrop + flip (MAE's view) with timm's colour jitter (brightness, contrast, saturation)
  const views = [{ ...maeViews(imgSize, s.cropScale)[0], jitterP: s.jitter > 0 ? 1 : 0, jitter: { brightness: s.jitter, contrast: s.jitter, saturation: s.jitter, hue: 0 } }];
  const evalSet = (source: string, limit: number | undefined) => (encoder: VisionTransformer) => extractFeatures(encoder, { source, blocks: [depth - 1], pooling: s.pooling, limit, numClasses });
  // every share's labelled subset per seed, drawn (and checked) before any training
  const subsets = shares.map((share) => seeds.map((seed) => shareSubset(labels, share, seed, numClasses, classNames)));
  let stepsLeft = driver.maxSteps > 0 ? driver.maxSteps : Infinity;

  // train every (share, lr, seed): each run keeps its best checkpoint on validation
  const runs = new Map<string, RunResult>();
  const runDirOf = (share: ShotSetting, lr: number, seed: number) => path.join(out, shareDir(share), `lr-${lr}`, `seed-${seed}`);
  for (const [i, share] of shares.entries()) {
    for (const lr of lrs) {
      for (const [j, seed] of seeds.entries()) {
        const runDir = runDirOf(share, lr, seed);
        const done = readResult(runDir);
        if (done) {
          runs.set(runDir, done);
          continue;
        }
        if (stepsLeft <= 0) return stopped(runDir);
        const subset = subsets[i][j];
        const images = subset?.length ?? labels.length;
        const stepsPerEpoch = Math.floor(images / s.batch);
        if (stepsPerEpoch < 1) throw new Error(`--label-share ${shotName(share)}: ${images} labelled images, fewer than one batch of ${s.batch}; lower --batch`);
        const steps = Math.max(1, Math.round((epochList[i] ?? epochList[0]) * stepsPerEpoch));
        const encoder = newEncoder(seed);
        const head = new ClassifierHead(encoder, numClasses, s.pooling, seed);
        try {
          const result = await fineTuneRun({ runDir, share, lr, seed, images, steps, stepsPerEpoch, subset, encoder, head, maxSteps: stepsLeft, evaluate: evalSet(val, valLimit) });
          if (!result.done) return stopped(runDir);
          stepsLeft -= result.stepsTaken;
          runs.set(runDir, result.result);
        } finally {
          head.dispose();
          encoder.dispose();
        }
      }
    }
  }

  // choose the lr on validation, then measure test once for the chosen checkpoints
  const results: FinetuneShareResult[] = [];
  let testImages = 0;
  for (const [i, share] of shares.entries()) {
    const perLr = lrs.map((lr) => seeds.map((seed) => runs.get(runDirOf(share, lr, seed))!));
    const sweep = perLr.map((rs, j) => ({ lr: lrs[j], ...meanStd(rs.map((r) => r.best.val), 'val') }));
    const chosen = sweep.reduce((a, b, j) => (b.valMean > sweep[a].valMean ? j : a), 0);
    const test: number[] = [];
    for (const r of perLr[chosen]) {
      const runDir = runDirOf(share, r.lr, r.seed);
      if (r.test === undefined) {
        const measured = await testAccuracy(path.join(runDir, 'model.safetensors'), numClasses, s.pooling, evalSet(f.test!, testLimit));
        r.test = measured.top1;
        r.testImages = measured.count;
        writeJsonReport(path.join(runDir, 'result.json'), r);
      }
      test.push(r.test);
      testImages = r.testImages!;
      console.log(`[finetune] ${shotName(share)} lr ${r.lr} seed ${r.seed}: validation ${pct(r.best.val)} (epoch ${r.best.epoch.toFixed(2)}), test ${pct(r.test)}`);
    }
    const rs = perLr[chosen];
    results.push({
      share: shotName(share),
      images: rs[0].images,
      epochs: epochList[i] ?? epochList[0],
      steps: rs[0].steps,
      lr: lrs[chosen],
      seeds,
      val: rs.map((r) => r.best.val),
      test,
      bestEpoch: rs.map((r) => r.best.epoch),
      ...meanStd(rs.map((r) => r.best.val), 'val'),
      ...meanStd(test, 'test'),
      sweep,
      models: rs.map((r) => path.relative(out, path.join(runDirOf(share, r.lr, r.seed), 'model.safetensors'))),
    });
  }
  const summary: FinetuneSummary = {
    kind: 'finetune',
    label,
    model: random ? `random init (${f.preset})` : f.checkpoint!,
    train: { source: f.train!, count: labels.length },
    val: { source: val, count: runs.values().next().value!.valImages },
    test: { source: f.test!, count: testImages },
    settings: { ...s, epochs: epochList, lrs, seeds, optimiser: { name: 'AdamW', ...OPTIMISER }, augmentation: views[0], numClasses },
    results,
  };
  writeJsonReport(path.join(out, 'summary.json'), summary);
  const md = summaryMarkdown(summary);
  writeFileAtomic(path.join(out, 'summary.md'), md);
  await writeValCurves(path.join(out, 'val-curve'), label, [...runs.values()], lrs.length > 1);
  console.log(`\n${md}\n[finetune] wrote summary.json, summary.md, val-curve.png in ${out}`);
  return path.join(out, 'summary.json');

  function stopped(runDir: string): undefined {
    console.log(`[finetune] stopped in ${runDir}; resume with: npx ts-node pipelines/finetune.ts --resume ${out}`);
    return undefined;
  }

  /** One (share, lr, seed): the driver's run with validation at the evaluation points, the best kept. */
  async function fineTuneRun(r: {
    runDir: string; share: ShotSetting; lr: number; seed: number; images: number; steps: number; stepsPerEpoch: number;
    subset: Int32Array | undefined; encoder: VisionTransformer; head: ClassifierHead; maxSteps: number;
    evaluate: (encoder: VisionTransformer) => ReturnType<typeof extractFeatures>;
  }): Promise<{ done: false } | { done: true; result: RunResult; stepsTaken: number }> {
    const { runDir, encoder, head, steps, stepsPerEpoch } = r;
    const name = `${shotName(r.share)} lr ${r.lr} seed ${r.seed}`;
    const evalAt = new Set(Array.from({ length: s.valEvals }, (_, k) => Math.max(1, Math.round(((k + 1) * steps) / s.valEvals))));
    let curve: RunResult['curve'] = [];
    let valImages = 0;
    let best: { entry: RunResult['best']; weights: Record<string, HostTensor> } | undefined;
    const resume = fs.existsSync(runDir) && fs.readdirSync(runDir).some((n) => n.startsWith('checkpoint')) ? readTrainState(runDir) : undefined;
    if (resume) {
      const tensors = hostTensors(resume.tensors);
      encoder.params.importTimm(withoutPrefix(tensors, 'encoder.'), resume.file);
      head.params.importTimm(withoutPrefix(tensors, 'classifier.'), resume.file);
      curve = resume.meta.curve as RunResult['curve'];
      valImages = resume.meta.valImages as number;
      const entry = resume.meta.best as RunResult['best'] | undefined;
      if (entry) best = { entry, weights: Object.fromEntries(withoutPrefix(tensors, 'best.')) };
      console.log(`[finetune] ${name}: resuming ${runDir} at step ${resume.meta.step}`);
    }
    const validate = async (step: number) => {
      if (!evalAt.has(step) || curve.some((c) => c.step === step)) return;
      const set = await r.evaluate(encoder);
      const top1 = await classifierAccuracy(head, set);
      valImages = set.count;
      const entry = { step, epoch: step / stepsPerEpoch, val: top1 };
      curve.push(entry);
      const better = !best || top1 > best.entry.val;
      if (better) best = { entry, weights: await classifierWeights(encoder, head) };
      console.log(`[finetune] ${name}: epoch ${entry.epoch.toFixed(2)} validation top-1 ${pct(top1)}${better ? ' (best so far)' : ''}`);
    };
    const startStep = (resume?.meta.step as number | undefined) ?? 0;
    const { step, done } = await train({
      name: 'finetune',
      runDir,
      stages: [{
        label: `fine-tuning ${name} (${r.images} images, ${stepsPerEpoch} steps an epoch)`,
        objective: classifyObjective({ head, labelSmoothing: s.labelSmoothing, dropPath: s.dropPath, seed: r.seed }),
        schedule: { steps, peakLr: r.lr, minLr: s.minLr, warmupSteps: Math.round(s.warmup * steps) },
        params: () => [...encoder.paramGroups('encoder.', { weightDecay: s.weightDecay, layerDecay: s.layerDecay }), ...head.paramGroups('classifier.', s.weightDecay)],
      }],
      resume: resume && { step: startStep, tensors: hostTensors(resume.tensors), file: resume.file, optimiserStep: resume.meta.optimiserStep as number | undefined },
      batches: (fromStep) => epochBatches({ source: f.train!, seed: r.seed, batchSize: s.batch, stepsPerEpoch, fromStep, views, skips: new SkipLog(), subset: r.subset }),
      optimiser: OPTIMISER,
      ...driver,
      maxSteps: Number.isFinite(r.maxSteps) ? r.maxSteps : 0,
      sinks: { lossKeys: ['loss'], title: `Fine-tuning loss, ${name}` },
      // a checkpoint at an evaluation point holds that evaluation (afterStep runs after the checkpoint)
      checkpointFiles: async (at, optimiser) => {
        await validate(at);
        return checkpointFiles({
          encoder,
          parts: { 'classifier.': head.params },
          extra: best ? prefixKeys('best.', best.weights) : {},
          optimiser,
          state: { step: at, flags: f, curve, valImages, best: best?.entry },
        });
      },
      afterStep: (at) => validate(at),
    });
    if (!done) return { done: false };
    const result: RunResult = { share: shotName(r.share), lr: r.lr, seed: r.seed, images: r.images, steps, stepsPerEpoch, curve, valImages, best: best!.entry };
    writeSafetensors(path.join(runDir, 'model.safetensors'), best!.weights, {
      format: 'pt',
      vit: JSON.stringify(encoder.cfg),
      classifier: JSON.stringify({ numClasses, pooling: s.pooling, ...(classNames ? { classes: classNames } : {}) }),
      chosen: JSON.stringify({ on: 'validation top-1', ...best!.entry }),
    });
    writeJsonReport(path.join(runDir, 'result.json'), result);
    return { done: true, result, stepsTaken: step - startStep };
  }
}

/** The flags of a resumed run: flags.json's, with the driver's flags free to change. */
function resumedFlags(given: FinetuneFlags, argv: string[]): FinetuneFlags {
  const file = path.join(given.resume!, 'flags.json');
  if (!fs.existsSync(file)) throw new Error(`--resume ${given.resume}: not a fine-tuning run directory (no flags.json)`);
  const saved = JSON.parse(fs.readFileSync(file, 'utf8')) as FinetuneFlags;
  const fixed = Object.keys(FLAGS).filter((k) => !FREE_ON_RESUME.has(k));
  const merged = mergeResumeFlags(saved, given, explicitFlags(USAGE, FLAGS, argv), fixed, given.resume!);
  merged.lines.forEach((line) => console.log(`[finetune] ${line}`));
  return merged.flags;
}

/** Every training image's label by stable index; an unlabelled image is an error naming it. */
async function trainLabels(spec: string, numClasses: number): Promise<Int32Array> {
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
function shareSubset(labels: Int32Array, share: ShotSetting, seed: number, numClasses: number, classNames?: string[]): Int32Array | undefined {
  const all = 'percent' in share && share.percent === 100;
  const rows = all ? undefined : sampleShots(labels, share, seed, classNames);
  const counts = new Int32Array(numClasses);
  for (const i of rows ?? labels.keys()) counts[labels[i]]++;
  const empty = counts.findIndex((n) => n === 0);
  if (empty >= 0) throw new Error(`--label-share ${shotName(share)} leaves class ${empty}${classNames?.[empty] ? ` (${classNames[empty]})` : ''} without images: it has none among the training images`);
  return rows;
}

/** '10%' -> '10pct', '5' -> '5-per-class': the share's folder. */
function shareDir(share: ShotSetting): string {
  return 'percent' in share ? `${share.percent}pct` : `${share.perClass}-per-class`;
}

function readResult(runDir: string): RunResult | undefined {
  const file = path.join(runDir, 'result.json');
  return fs.existsSync(file) && fs.existsSync(path.join(runDir, 'model.safetensors')) ? (JSON.parse(fs.readFileSync(file, 'utf8')) as RunResult) : undefined;
}

/** Encoder and classifier weights under timm's names, read from the device asynchronously. */
async function classifierWeights(encoder: VisionTransformer, head: ClassifierHead): Promise<Record<string, HostTensor>> {
  const [e, h] = await Promise.all([encoder.params.exportTimm(), head.params.exportTimm()]);
  return { ...e, ...h };
}

/** Top-1 of the classifier on pooled last-block features (one asynchronous read). */
async function classifierAccuracy(head: ClassifierHead, set: Awaited<ReturnType<typeof extractFeatures>>): Promise<number> {
  const predictions = tf.tidy(() => tf.argMax(head.logits(tf.tensor2d(set.features[0], [set.count, set.dim])), 1));
  const predicted = (await predictions.data()) as Int32Array;
  predictions.dispose();
  let correct = 0;
  for (let i = 0; i < set.count; i++) if (predicted[i] === set.labels[i]) correct++;
  return correct / set.count;
}

/** Test top-1 of a saved model.safetensors. */
async function testAccuracy(file: string, numClasses: number, pooling: Pooling, evaluate: (encoder: VisionTransformer) => ReturnType<typeof extractFeatures>) {
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

/** Mean and population std (numpy's default, as eval's low-shot). */
function meanStd<K extends string>(values: number[], key: K): Record<`${K}Mean` | `${K}Std`, number> {
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  const std = Math.sqrt(values.reduce((a, b) => a + (b - mean) ** 2, 0) / values.length);
  return { [`${key}Mean`]: mean, [`${key}Std`]: std } as Record<`${K}Mean` | `${K}Std`, number>;
}

const pct = (v: number) => `${(100 * v).toFixed(1)}%`;

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
async function writeValCurves(file: string, label: string, runs: RunResult[], withLr: boolean): Promise<void> {
  await writeChart(file, {
    title: `Fine-tuning ${label}: validation top-1`,
    xLabel: 'epoch',
    yLabel: 'validation top-1 (%)',
    series: runs.map((r) => ({ name: `${r.share}${withLr ? ` lr ${r.lr}` : ''} seed ${r.seed}`, points: r.curve.map((c) => [c.epoch, 100 * c.val] as [number, number]) })),
  });
}

if (require.main === module) runMain(() => finetune(process.argv.slice(2)).then(() => undefined));

/**
 * Fine-tuning evaluation of any ViT checkpoint (or a random init): full and low-data fine-tuning
 * on a per-class share of the labels with the MAE / BEiT recipe (AdamW, layer-wise lr decay,
 * warm-up + cosine, label smoothing 0.1, drop path 0.1, timm's head on the mean patch token with
 * fc_norm), on the shared training driver. Every (share, lr, seed) is one driver run; validation
 * picks its checkpoint (the best of --val-evals) and, where --lr lists several, the lr (best mean
 * over seeds); test is measured once, at the end, for the chosen checkpoints only.
 *
 *   npx ts-node pipelines/finetune.ts --label-share 1%,10% --epochs 15,3 --seed 0,1,2
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
import { intList, mergeResumeFlags, num, numRange, oneOf, readFlags, resumeCommand, runMain } from '../runtime/cli';
import { writeRunStatus } from '../runtime/run-status';
import { checkOutDir } from '../runtime/out-dir';
import { lockRunDir } from '../runtime/run-lock';
import { initBackend } from '../runtime/backend';
import { meanStd, pct, slug } from '../lib/format';
import { ClassifierHead, VisionTransformer } from '../models/vit';
import { maeViews } from '../operators/multi-view';
import { evalClassCount, openSource } from '../sources/open';
import { extractFeatures } from '../eval/extract-features';
import { parseShots, shotName, ShotSetting } from '../eval/low-shot';
import { checkValidationDisjoint, defaultValidation } from '../eval/validation';
import { writeJsonReport } from '../eval/report';
import { FinetuneShareResult, FinetuneSummary, readResult, RunResult, shareDir, shareSubset, summaryMarkdown, testAccuracy, trainLabels, writeValCurves } from '../eval/finetune';
import { writeFileAtomic } from '../lib/atomic-file';
import { Context, fineTuneRun, OPTIMISER } from '../train/fine-tune-run';
import { BUNDLED, dataFlags, driverFlags, LR_SCALINGS, mixedPrecision, modelFlags, numClassesFlag, optimiserFlags, precisionFlag, RENAMED, TRAINING_RUN_FLAGS } from '../train/flags';
import { checkOwner, failedUnlessEnded, writeRunFiles } from '../train/run';
import { loadModel } from '../train/model';

const USAGE = 'Fine-tuning evaluation (MAE/BEiT recipe): full and low-data, choices on --val, test once at the end.\n  npx ts-node pipelines/finetune.ts [options]';
const { resume, 'allow-data-change': _a, overwrite: _o, ...RUN_FLAGS } = TRAINING_RUN_FLAGS;
const FLAGS = {
  config: { description: 'YAML or JSON file of flags (keys are flag names); flags on the command line win' },
  out: { description: 'run folder (default: runs/finetune/<label>)' },
  resume: { description: 'continue the fine-tuning run in this folder' },
  ...RUN_FLAGS,
  ...dataFlags(),
  ...modelFlags({ checkpoint: BUNDLED.mae }),
  'label-share': { description: 'labelled training images: shares of each class (1%,10%,100%) or images per class (5)', default: '1%,10%' },
  epochs: { description: 'epochs over the labelled images: one for every share, or one per share', default: '40,16' },
  seed: { description: 'seeds (head init, label draw, augmentation, drop path, order); mean ± std over them', default: '0,1,2' },
  ...optimiserFlags({ batch: '32', lrScaling: 'none', weightDecay: '0.05', warmupShare: '0.1', layerDecay: '0.75' }),
  lr: { description: 'peak lrs: several are swept and one chosen per share on validation', default: '1e-3,3e-3' },
  'label-smoothing': { description: 'label smoothing of the cross-entropy (0-0.999)', default: '0.1' },
  'drop-path': { description: "stochastic depth: timm's drop_path_rate, rising linearly over the blocks (0-0.999)", default: '0.1' },
  pooling: { description: "classifier input: 'avg' (mean patch token + fc_norm, MAE's) or 'cls' (timm's default)", default: 'avg' },
  'crop-scale': { description: 'RandomResizedCrop area range lo,hi', default: '0.25,1' },
  'jitter-strength': { description: 'colour jitter strength (brightness, contrast, saturation; timm color_jitter; 0-1)', default: '0.4' },
  'val-evals': { description: 'validation evaluations per run, evenly spaced, the last at the end (1-10000)', default: '3' },
  'eval-val-limit': { description: 'validation images the evaluation uses (0: all)', default: '0' },
  'eval-test-limit': { description: 'test images the evaluation uses (0: all)', default: '0' },
  label: { description: 'model name in the summary (default: the checkpoint folder, or "random init (<preset>)")' },
} as const;
export const DEFINITION = { name: 'finetune', script: 'pipelines/finetune.ts', usage: USAGE, flags: FLAGS };
type FinetuneFlags = ReturnType<typeof readFlags<typeof FLAGS>>['flags'];

/** Flags a resumed run may give anew: logging, checkpointing, --max-steps; the rest define the table. */
const FREE_ON_RESUME = new Set<string>(['config', ...Object.keys(RUN_FLAGS)]);

function settings(f: FinetuneFlags) {
  const shares = parseShots(f['label-share']!, 'label-share');
  const epochs = f.epochs!.split(',').map((e) => num('epochs', e, { min: 0.001 }));
  if (epochs.length !== 1 && epochs.length !== shares.length) throw new Error(`--epochs: give one value or one per --label-share (${shares.length}), got ${epochs.length} (the default ${FLAGS.epochs.default} goes with --label-share ${FLAGS['label-share'].default})`);
  const seeds = intList('seed', f.seed);
  if (seeds.length === 0 || seeds.some((s) => s < 0) || new Set(seeds).size !== seeds.length) throw new Error(`--seed: expected distinct seeds >= 0 like 0,1,2, got '${f.seed}'`);
  const lrs = f.lr!.split(',').map((v) => num('lr', v, { min: 0 }));
  if (new Set(lrs).size !== lrs.length) throw new Error(`--lr ${f.lr}: an lr is named twice`);
  return {
    shares, epochs, seeds, lrs,
    batch: num('batch', f.batch, { integer: true, min: 1, max: 65536 }),
    minLr: num('min-lr', f['min-lr'], { min: 0 }),
    warmupShare: num('warmup-share', f['warmup-share'], { min: 0, max: 1 }),
    weightDecay: num('weight-decay', f['weight-decay'], { min: 0 }),
    layerDecay: num('layer-decay', f['layer-decay'], { min: 1e-6, max: 1 }),
    labelSmoothing: num('label-smoothing', f['label-smoothing'], { min: 0, max: 0.999 }),
    dropPath: num('drop-path', f['drop-path'], { min: 0, max: 0.999 }),
    pooling: oneOf('pooling', f.pooling, ['avg', 'cls'] as const),
    cropScale: numRange('crop-scale', f['crop-scale'], { min: 0.01, max: 1 }),
    jitter: num('jitter-strength', f['jitter-strength'], { min: 0, max: 1 }),
    valEvals: num('val-evals', f['val-evals'], { integer: true, min: 1, max: 10000 }),
    valLimit: num('eval-val-limit', f['eval-val-limit'], { integer: true, min: 0 }) || undefined,
    testLimit: num('eval-test-limit', f['eval-test-limit'], { integer: true, min: 0 }) || undefined,
    lrScaling: oneOf('lr-scaling', f['lr-scaling'], LR_SCALINGS),
  };
}

/** Runs the fine-tuning table; resolves to summary.json's path (or undefined when stopped early). */
export async function finetune(argv: string[]): Promise<string | undefined> {
  const given = readFlags(USAGE, FLAGS, argv, RENAMED);
  const f = given.flags.resume ? resumedFlags(given.flags, given.explicit) : given.flags;
  const s = settings(f);
  const driver = driverFlags(f);
  const precision = precisionFlag(f);
  const random = f.checkpoint === 'none';
  if (random && f.preset === undefined) throw new Error('--checkpoint none: pass --preset for the random init');
  const numClasses = evalClassCount(f.train!, f.test!, numClassesFlag(f));
  const val = f.val ?? defaultValidation(f.train!);
  if (!val) throw new Error(`no validation split beside ${f.train}: fine-tuning picks its checkpoint on one; pass --val (training images held out from training)`);
  evalClassCount(f.train!, val, numClasses);
  evalClassCount(f.train!, f.test!, numClasses);
  if (!random && !fs.statSync(f.checkpoint!, { throwIfNoEntry: false })?.isFile()) throw new Error(`--checkpoint ${f.checkpoint}: not a file (or 'none' for a random init)`);
  const label = f.label ?? (random ? `random init (${f.preset})` : path.basename(path.dirname(path.resolve(f.checkpoint!))));
  const out = given.flags.resume ?? f.out ?? path.join('runs/finetune', slug(label));
  if (!given.flags.resume) {
    checkOutDir(out);
    if (fs.existsSync(path.join(out, 'flags.json'))) throw new Error(`--out ${out} holds an earlier fine-tuning run: continue it with --resume ${out}, or pass another --out`);
  }
  checkOwner(out, 'finetune');
  await checkValidationDisjoint(val, [{ name: 'train', spec: f.train! }, { name: 'test', spec: f.test! }]);
  const backend = await initBackend(console.log, { precision });
  const mixed = mixedPrecision(backend, precision, console.log);
  const classNames = openSource(f.train!, { numClasses }).classes;
  const labels = await trainLabels(f.train!, numClasses);
  const newEncoder = (seed: number) => loadModel({ flag: 'checkpoint', file: f.checkpoint!, presetFlag: 'preset', preset: f.preset, seed });
  const probe = newEncoder(0);
  const { depth, imgSize } = probe.cfg;
  probe.dispose();
  // RandomResizedCrop + flip (MAE's view) with timm's colour jitter (brightness, contrast, saturation)
  const views = [{ ...maeViews(imgSize, s.cropScale)[0], jitterP: s.jitter > 0 ? 1 : 0, jitter: { brightness: s.jitter, contrast: s.jitter, saturation: s.jitter, hue: 0 } }];
  const evalSet = (source: string, limit: number | undefined) => (encoder: VisionTransformer) => extractFeatures(encoder, { source, blocks: [depth - 1], pooling: s.pooling, limit, numClasses });
  // every share's labelled subset per seed, drawn (and checked) before any training
  const subsets = s.shares.map((share) => s.seeds.map((seed) => shareSubset(labels, share, seed, numClasses, classNames)));
  s.shares.forEach((share, i) => {
    const images = Math.min(...subsets[i].map((subset) => subset?.length ?? labels.length));
    if (images < s.batch) throw new Error(`--label-share ${shotName(share)}: ${images} labelled images, fewer than one batch of ${s.batch}; lower --batch`);
  });
  // every input checked: the run's first write
  using _lock = lockRunDir(out);
  if (!given.flags.resume) writeFileAtomic(path.join(out, 'flags.json'), JSON.stringify(f, null, 1));
  writeRunFiles(out, { name: 'finetune', script: 'pipelines/finetune.ts' }, f, { resumed: given.flags.resume !== undefined, ranks: 1, backend: backend.tfBackend });
  writeRunStatus(out, { state: 'running', pipeline: 'finetune', backend: backend.tfBackend, ranks: 1, flags: f });
  using _status = failedUnlessEnded(out, () => resumeCommand('pipelines/finetune.ts', out));
  const c = { f, s, driver, views, numClasses, classNames, mixed };
  let stepsLeft = driver.maxSteps > 0 ? driver.maxSteps : Infinity;

  // train every (share, lr, seed): each run keeps its best checkpoint on validation
  const runs = new Map<string, RunResult>();
  const runDirOf = (share: ShotSetting, lr: number, seed: number) => path.join(out, shareDir(share), `lr-${lr}`, `seed-${seed}`);
  const resume = resumeCommand('pipelines/finetune.ts', out);
  const stopped = (runDir: string): undefined => void (writeRunStatus(out, { state: 'stopped', resume }), console.log(`[finetune] stopped in ${runDir}; resume with: ${resume}`));
  for (const [i, share] of s.shares.entries()) {
    for (const lr of s.lrs) {
      for (const [j, seed] of s.seeds.entries()) {
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
        const steps = Math.max(1, Math.round((s.epochs[i] ?? s.epochs[0]) * stepsPerEpoch));
        const encoder = newEncoder(seed);
        const head = new ClassifierHead(encoder, numClasses, s.pooling, seed);
        try {
          const result = await fineTuneRun(c, { runDir, share, lr, seed, images, steps, stepsPerEpoch, subset, encoder, head, maxSteps: stepsLeft, evaluate: evalSet(val, s.valLimit) });
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
  const summary = await summarise(c, { out, label, val, labels: labels.length, runs, runDirOf, evaluateTest: evalSet(f.test!, s.testLimit) });
  await writeValCurves(path.join(out, 'val-curve'), label, [...runs.values()], s.lrs.length > 1);
  writeRunStatus(out, { state: 'finished' });
  console.log(`\n${summaryMarkdown(summary)}\n[finetune] wrote summary.json, summary.md, val-curve.png in ${out}`);
  return path.join(out, 'summary.json');
}

/** Chooses the lr on validation, measures test once for the chosen checkpoints, writes summary.json and summary.md. */
async function summarise(c: Context & { f: FinetuneFlags; s: ReturnType<typeof settings> }, o: {
  out: string; label: string; val: string; labels: number; runs: Map<string, RunResult>;
  runDirOf: (share: ShotSetting, lr: number, seed: number) => string; evaluateTest: (encoder: VisionTransformer) => ReturnType<typeof extractFeatures>;
}): Promise<FinetuneSummary> {
  const { f, s } = c;
  const results: FinetuneShareResult[] = [];
  let testImages = 0;
  for (const [i, share] of s.shares.entries()) {
    const perLr = s.lrs.map((lr) => s.seeds.map((seed) => o.runs.get(o.runDirOf(share, lr, seed))!));
    const sweep = perLr.map((rs, j) => ({ lr: s.lrs[j], ...meanStd(rs.map((r) => r.best.val), 'val') }));
    const chosen = sweep.reduce((a, b, j) => (b.valMean > sweep[a].valMean ? j : a), 0);
    const test: number[] = [];
    for (const r of perLr[chosen]) {
      const runDir = o.runDirOf(share, r.lr, r.seed);
      if (r.test === undefined) {
        const measured = await testAccuracy(path.join(runDir, 'model.safetensors'), c.numClasses, s.pooling, o.evaluateTest);
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
      share: shotName(share), images: rs[0].images, epochs: s.epochs[i] ?? s.epochs[0], steps: rs[0].steps, lr: s.lrs[chosen], seeds: s.seeds,
      val: rs.map((r) => r.best.val), test, bestEpoch: rs.map((r) => r.best.epoch),
      ...meanStd(rs.map((r) => r.best.val), 'val'), ...meanStd(test, 'test'), sweep,
      models: rs.map((r) => path.relative(o.out, path.join(o.runDirOf(share, r.lr, r.seed), 'model.safetensors'))),
    });
  }
  const summary: FinetuneSummary = {
    kind: 'finetune',
    label: o.label,
    model: f.checkpoint === 'none' ? `random init (${f.preset})` : f.checkpoint!,
    train: { source: f.train!, count: o.labels },
    val: { source: o.val, count: o.runs.values().next().value!.valImages },
    test: { source: f.test!, count: testImages },
    settings: { ...s, shares: undefined, epochs: s.epochs, lrs: s.lrs, seeds: s.seeds, optimiser: { name: 'AdamW', ...OPTIMISER }, augmentation: c.views[0], numClasses: c.numClasses },
    results,
  };
  writeJsonReport(path.join(o.out, 'summary.json'), summary);
  writeFileAtomic(path.join(o.out, 'summary.md'), summaryMarkdown(summary));
  return summary;
}

/** The flags of a resumed run: flags.json's, with the driver's flags free to change. */
function resumedFlags(given: FinetuneFlags, explicit: Set<string>): FinetuneFlags {
  const file = path.join(given.resume!, 'flags.json');
  if (!fs.existsSync(file)) throw new Error(`--resume ${given.resume}: not a fine-tuning run folder (no flags.json)`);
  let saved: FinetuneFlags;
  try {
    saved = JSON.parse(fs.readFileSync(file, 'utf8')) as FinetuneFlags;
  } catch (err) {
    throw new Error(`--resume ${given.resume}: ${file} is not valid JSON (${(err as Error).message}); the run's flags cannot be read`);
  }
  const fixed = Object.keys(FLAGS).filter((k) => !FREE_ON_RESUME.has(k));
  const merged = mergeResumeFlags(saved, given, explicit, fixed, given.resume!);
  merged.lines.forEach((line) => console.log(`[finetune] ${line}`));
  return merged.flags;
}

if (require.main === module) runMain(() => finetune(process.argv.slice(2)).then(() => undefined));

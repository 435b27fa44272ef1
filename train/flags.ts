/**
 * One flag vocabulary: the groups every pipeline draws its flags from (run, data, model,
 * optimiser and schedule, kNN and evaluation), so one concept has one name and one meaning
 * everywhere; a pipeline sets its defaults, never its own spelling. docs/flags.md is generated
 * from the pipelines' --help (scripts/make-flags-doc.ts) and lists the renamed flags.
 */
import { num, RenamedFlags } from '../runtime/cli';
import { LABEL_LIMIT } from '../sources/tar-shards';
import { DEFAULT_KEEP_CHECKPOINTS } from '../runtime/checkpoint';
import type { BackendInfo } from '../runtime/backend';

/** Where the bundled demonstration's files are: the defaults of every pipeline. */
export const BUNDLED = {
  mae: 'checkpoints/mae-vit-micro-p4/encoder.safetensors',
  refined: 'checkpoints/refined-vit-micro-p4/encoder.safetensors',
  train: 'data/cifar10-mini/train-*.tar.gz',
  test: 'data/cifar10-mini/test-*.tar.gz',
} as const;

/** Old names of flags and what replaced them; a command with one is refused naming the new name. */
export const RENAMED: RenamedFlags = {
  lr2: '--stage2-lr',
  lr3: '--stage3-lr',
  topk2: '--stage2-topk',
  topk3: '--stage3-topk',
  'encoder-wd': '--weight-decay',
  'head-wd': '--head-weight-decay',
  'global-scale': '--crop-scale',
  'local-scale': '--local-crop-scale',
  warmup: '--warmup-share (a share of the schedule)',
  'warmup-epochs': '--warmup-share (a share of the schedule: 5 of 100 epochs is 0.05)',
  blr: '--lr (the lr of a batch of 256 under --lr-scaling linear, this pipeline\'s default)',
  k: '--knn-k',
  'knn-train-limit': '--eval-train-limit',
  'knn-val-limit': '--eval-val-limit',
  'knn-test-limit': '--eval-test-limit',
  'train-limit': '--eval-train-limit',
  'val-limit': '--eval-val-limit (0: all)',
  'test-limit': '--eval-test-limit',
  'random-init': '--checkpoint none',
  init: '--checkpoint (the student\'s starting weights; none for a random init)',
  seeds: '--seed (a list runs one run per seed)',
  jitter: '--jitter-strength',
  steps: '--epochs',
};

/** Every pipeline: where it writes, and a config file of flags. */
export function runFlags(pipeline: string) {
  return {
    config: { description: 'YAML or JSON file of flags (keys are flag names); flags on the command line win' },
    out: { description: 'run folder: everything this run writes goes here', default: `runs/${pipeline}` },
  } as const;
}

/** Every training pipeline: continuing, replacing and checkpointing a run. */
export const TRAINING_RUN_FLAGS = {
  resume: { description: 'continue the run in this folder from its newest checkpoint' },
  overwrite: { description: 'start anew in an --out that holds another run, moving that run aside (never deleted)', boolean: true },
  'allow-data-change': { description: 'with --resume: continue although the training data changed since the run began', boolean: true },
  view: { description: 'serve the live dashboard of this run on this port of 127.0.0.1 (docs/dashboard.md)' },
  'checkpoint-minutes': { description: 'write a checkpoint at least this often, minutes (>= 0)', default: '5' },
  'keep-checkpoints': { description: 'checkpoints kept: the newest in checkpoint/, older ones beside it (1-1000)', default: String(DEFAULT_KEEP_CHECKPOINTS) },
  'max-steps': { description: 'stop after this many steps in this invocation, checkpointed (0: no limit)', default: '0' },
  'log-every': { description: 'read the step metrics from the device every this many steps (>= 1)', default: '10' },
  'on-nonfinite': { description: "on a NaN/Inf loss or gradient: 'stop', or 'skip' the update (one host sync a step)", default: 'stop' },
  precision: { description: "'fp32', or 'mixed': f16 matMuls, loss scaled (WebGPU; default WEBGPU_PRECISION or fp32)" },
} as const;

/** --precision, where given (initBackend's default otherwise: WEBGPU_PRECISION, else fp32). */
export function precisionFlag(f: { precision?: string }): 'fp32' | 'mixed' | undefined {
  if (f.precision === undefined) return undefined;
  if (f.precision !== 'fp32' && f.precision !== 'mixed') throw new Error(`--precision: expected fp32 or mixed, got '${f.precision}'`);
  return f.precision;
}

/**
 * Whether the backend took f16 matMuls (a run then trains with a loss scale, models/loss-scale.ts);
 * where --precision mixed was asked on a backend without them, says so (the run trains in fp32).
 */
export function mixedPrecision(backend: BackendInfo, asked: 'fp32' | 'mixed' | undefined, log: (line: string) => void): boolean {
  if (backend.precision && backend.precision.matMul !== 'fp32') return true;
  if (asked === 'mixed') log(`[precision] --precision mixed: no f16 matMuls on ${backend.tfBackend} here (${backend.precision?.reason ?? 'they run on WebGPU only'}): training runs in fp32`);
  return false;
}

/** Images: tar shards (globs, brace ranges), an image folder or CIFAR .bin files. */
export function dataFlags(d: { train?: string; val?: boolean; test?: string | false } = {}) {
  return {
    train: { description: 'training images: shards (glob/URL/pipe:), folder, CIFAR bin', default: d.train ?? BUNDLED.train },
    ...(d.val === false
      ? {}
      : { val: { description: "validation images held out from --train (default: val-* beside it; 'none': none)" } }),
    ...(d.test === false ? {} : { test: { description: 'test images: measured once, at the end', default: d.test ?? BUNDLED.test } }),
    'num-classes': { description: 'class count of shards without a classes.txt beside them (URLs, pipe:)' },
  } as const;
}

/** The model a run starts from. */
export function modelFlags(d: { checkpoint: string; what?: string }) {
  return {
    checkpoint: { description: `${d.what ?? 'start encoder'}: timm/HF/.pth, or 'none'`, default: d.checkpoint },
    preset: { description: "ViT size for 'none' or a file without config, e.g. vit-base-p16 (all sizes: docs/flags.md)" },
  } as const;
}

/** The optimiser (AdamW) and its schedule (linear warm-up, then cosine). */
export function optimiserFlags(d: { batch: string; lr?: string; lrScaling: 'none' | 'linear'; weightDecay: string; warmupShare: string; layerDecay?: string; minLr?: string }) {
  return {
    batch: { description: 'global batch size (split over the ranks under mpirun; >= 2)', default: d.batch },
    ...(d.lr === undefined ? {} : { lr: { description: 'peak lr; under --lr-scaling linear the lr of a batch of 256', default: d.lr } }),
    'lr-scaling': { description: "'none': the lr flags are peak lrs; 'linear': peak = lr x batch / 256 (Goyal et al.)", default: d.lrScaling },
    'min-lr': { description: 'lr at the end of the cosine (>= 0)', default: d.minLr ?? '1e-6' },
    'warmup-share': { description: 'share of the schedule (of each stage) in linear warm-up (0-1)', default: d.warmupShare },
    'weight-decay': { description: 'AdamW weight decay of the encoder (not on biases, norms, tokens; >= 0)', default: d.weightDecay },
    ...(d.layerDecay === undefined ? {} : { 'layer-decay': { description: 'layer-wise lr decay: block i gets lr x decay^(depth - i) (0-1; 1: none)', default: d.layerDecay } }),
    'clip-grad': { description: 'clip the global gradient norm to this (0: off)', default: '0' },
  } as const;
}

/** kNN and the evaluation sizes, for the pipelines that evaluate. */
export function evalFlags(d: { trainLimit: string; testLimit: string; skip?: boolean }) {
  return {
    'knn-k': { description: 'kNN neighbours (reference 20)', default: '20' },
    'knn-temperature': { description: 'kNN vote temperature (reference 0.07)', default: '0.07' },
    'eval-train-limit': { description: 'training images the evaluation uses as its memory (0: all)', default: d.trainLimit },
    'eval-val-limit': { description: 'validation images the evaluation uses (0: all)', default: '0' },
    'eval-test-limit': { description: 'test images the evaluation uses (0: all)', default: d.testLimit },
    ...(d.skip ? { 'skip-knn': { description: 'skip the kNN evaluations', boolean: true } } : {}),
  } as const;
}

export type TrainingRunFlagValues = { [K in keyof typeof TRAINING_RUN_FLAGS]?: string | boolean };

/** The driver's options from the run flags (train/driver.ts). */
export function driverFlags(f: { 'checkpoint-minutes'?: string; 'keep-checkpoints'?: string; 'max-steps'?: string; 'log-every'?: string; 'on-nonfinite'?: string }) {
  const onNonFinite = f['on-nonfinite'];
  if (onNonFinite !== 'stop' && onNonFinite !== 'skip') throw new Error(`--on-nonfinite: expected stop or skip, got '${onNonFinite}'`);
  return {
    checkpointMinutes: num('checkpoint-minutes', f['checkpoint-minutes'], { min: 0 }),
    keepCheckpoints: num('keep-checkpoints', f['keep-checkpoints'], { integer: true, min: 1, max: 1000 }),
    maxSteps: num('max-steps', f['max-steps'], { integer: true, min: 0 }),
    logEvery: num('log-every', f['log-every'], { integer: true, min: 1 }),
    onNonFinite: onNonFinite as 'stop' | 'skip',
  };
}

/** The kNN options of a pipeline's evaluation flags (eval/per-block-knn.ts). */
export function knnFlags(f: { 'knn-k'?: string; 'knn-temperature'?: string; 'eval-train-limit'?: string; 'eval-val-limit'?: string; 'eval-test-limit'?: string; 'num-classes'?: string }) {
  return {
    numClasses: numClassesFlag(f),
    k: num('knn-k', f['knn-k'], { integer: true, min: 1, max: 10000 }),
    temperature: num('knn-temperature', f['knn-temperature'], { min: 1e-4 }),
    trainLimit: num('eval-train-limit', f['eval-train-limit'], { integer: true, min: 0 }) || undefined,
    valLimit: num('eval-val-limit', f['eval-val-limit'], { integer: true, min: 0 }) || undefined,
    testLimit: num('eval-test-limit', f['eval-test-limit'], { integer: true, min: 0 }) || undefined,
  };
}

/** --num-classes, where given: shards behind a URL or a command carry no classes.txt to read it from. */
export function numClassesFlag(f: { 'num-classes'?: string }): number | undefined {
  return f['num-classes'] === undefined ? undefined : num('num-classes', f['num-classes'], { integer: true, min: 2, max: LABEL_LIMIT });
}

/** How an lr flag relates to the batch: as given, or the lr of a batch of 256 scaled linearly (Goyal et al. 2017; MAE, MIM-Refiner). */
export const LR_SCALINGS = ['none', 'linear'] as const;
export type LrScaling = (typeof LR_SCALINGS)[number];

/** The peak lr a run uses: `lr` itself ('none') or lr x batch / 256 ('linear'), batch the global batch. */
export function scaledLr(lr: number, batch: number, scaling: LrScaling): number {
  return scaling === 'linear' ? (lr * batch) / 256 : lr;
}

/**
 * The run setup of the evaluation pipelines (pipelines/knn.ts, pipelines/eval.ts), beside
 * train/run.ts's for training: the model flags read into the model evaluated, and a run folder
 * that holds one pipeline's results of one model, with its lock, run.json and config.yaml.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { initBackend } from '../runtime/backend';
import { configYaml, num } from '../runtime/cli';
import { checkOutDir } from '../runtime/out-dir';
import { lockRunDir } from '../runtime/run-lock';
import { vitPresetFallback } from '../runtime/vit-flag';
import { writeFileAtomic } from '../lib/atomic-file';
import { slug } from '../lib/format';
import type { VisionTransformer } from '../models/vit';
import { evalClassCount } from '../sources/open';
import { checkpointKey, randomInitKey } from '../eval/feature-cache';
import { BUNDLED, dataFlags, evalFlags, modelFlags, numClassesFlag, runFlags } from './flags';
import { CONFIG_FILE, RUN_FILE } from './run';
import { loadModel } from './model';

/**
 * The data and model flags of both evaluation pipelines: the shared vocabulary's, with
 * descriptions short enough for help lines within 120 characters beside their long defaults.
 */
const EVAL_DATA_FLAGS = {
  ...dataFlags(),
  train: { description: 'training images: shards, folder or CIFAR .bin', default: BUNDLED.train },
  val: { description: "validation images (default: the val-* shards beside --train; 'none': no validation)" },
} as const;
const EVAL_MODEL_FLAGS = {
  ...modelFlags({ checkpoint: BUNDLED.mae }),
  checkpoint: { description: "encoder file or 'none'", default: BUNDLED.mae },
  preset: { description: "ViT size of 'none', or of a checkpoint without config (e.g. vit-micro-p4)" },
  seed: { description: "seed of 'none' (default 0); of a checkpoint, the seed that trained it, for the report" },
  label: { description: 'model name in tables, charts and the default --out (default: the checkpoint folder)' },
} as const;
const KNN_STANDARDISE_FLAG = { description: "'on': standardised with train statistics (the reference); 'off': L2 only", default: 'on' } as const;
const POOLING_FLAG = { description: "'cls' or 'avg' (mean of patch tokens)", default: 'cls' } as const;
export const POOLINGS = ['cls', 'avg'] as const;

/** The flags both evaluation pipelines take: the run's, the data, the model, the kNN's. */
export function evalRunFlags(pipeline: string) {
  return {
    ...runFlags(pipeline),
    out: { description: `run folder (default: runs/${pipeline}/<label>(-s<seed> for none))` },
    ...EVAL_DATA_FLAGS,
    ...EVAL_MODEL_FLAGS,
    ...evalFlags({ trainLimit: '0', testLimit: '0' }),
    'knn-standardise': KNN_STANDARDISE_FLAG,
    pooling: POOLING_FLAG,
  } as const;
}

/** What an evaluation evaluates, from its model flags. */
export interface EvaluatedModel {
  /** The checkpoint file, or 'none' (a random init of `preset`). */
  checkpoint: string;
  preset?: string;
  /** The random init's seed; of a checkpoint, the seed that trained it where --seed says so. */
  seed?: number;
  label: string;
  /** The feature cache's model key: checkpointKey(file) or randomInitKey(preset, seed). */
  cacheKey: string;
  /** The model as run.json names it: a run folder holds one model's results. */
  id: string;
}

/** The model flags checked (the file exists, 'none' has a preset), before the backend starts. */
function evaluatedModel(f: { checkpoint?: string; preset?: string; seed?: string; label?: string }): EvaluatedModel {
  const checkpoint = f.checkpoint!;
  const random = checkpoint === 'none';
  vitPresetFallback('preset', f.preset);
  if (random && f.preset === undefined) throw new Error('--checkpoint none: pass --preset to say which ViT to initialise at random');
  if (!random && !fs.statSync(checkpoint, { throwIfNoEntry: false })?.isFile()) {
    throw new Error(`--checkpoint ${checkpoint}: no such file (--checkpoint none evaluates a random init of --preset)`);
  }
  const seed = f.seed === undefined ? (random ? 0 : undefined) : num('seed', f.seed, { integer: true, min: 0 });
  return {
    checkpoint,
    preset: f.preset,
    seed,
    label: f.label ?? (random ? `random init (${f.preset})` : checkpointLabel(checkpoint)),
    cacheKey: random ? randomInitKey(f.preset!, seed!) : checkpointKey(checkpoint),
    id: random ? `random init of ${f.preset}, seed ${seed}` : path.resolve(checkpoint),
  };
}

/** runs/<pipeline>/<label as a folder name>; a random init's with its seed, so seeds do not share a folder. */
function defaultRunDir(pipeline: string, m: EvaluatedModel): string {
  return path.join('runs', pipeline, slug(m.checkpoint === 'none' ? `${m.label} s${m.seed}` : m.label));
}

function loadEvaluatedModel(m: EvaluatedModel): VisionTransformer {
  return loadModel({ flag: 'checkpoint', file: m.checkpoint, presetFlag: 'preset', preset: m.preset, seed: m.seed });
}

/**
 * A checkpoint's name: its folder ('checkpoints/mae-vit-micro-p4/encoder.safetensors' ->
 * 'mae-vit-micro-p4'); in a run's checkpoint folder the run's, with the step and the file where
 * they tell checkpoints apart ('runs/refine/checkpoint/encoder-ema.safetensors' -> 'refine encoder-ema').
 */
export function checkpointLabel(file: string): string {
  const dir = path.dirname(path.resolve(file));
  const folder = path.basename(dir);
  const stem = path.basename(file).replace(/\.(safetensors|pth|pt|bin)$/, '');
  if (folder !== 'checkpoint' && !folder.startsWith('checkpoint.')) return folder;
  const step = folder === 'checkpoint' ? [] : [folder.slice('checkpoint.'.length)];
  return [path.basename(path.dirname(dir)), ...step, ...(stem === 'encoder' ? [] : [stem])].join(' ');
}

/** The folder's run.json, if it has one. */
function readRunJson(runDir: string): { pipeline?: string; model?: string } | undefined {
  const file = path.join(runDir, RUN_FILE);
  if (!fs.existsSync(file)) return undefined;
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch {
    throw new Error(`${file}: not valid JSON; the folder's owner is unknown (move the file away, or choose another --out)`);
  }
}

/**
 * An evaluation's run folder holds one pipeline's results of one model (a re-run of that model
 * replaces them): a folder of another pipeline, or of another model, is refused, as nothing
 * already written may be lost. Writes nothing.
 */
export function checkEvalFolder(runDir: string, pipeline: string, model: string): void {
  checkOutDir(runDir);
  const run = readRunJson(runDir);
  if (run?.pipeline !== undefined && run.pipeline !== pipeline) {
    throw new Error(`--out ${runDir} holds a run of another pipeline (${run.pipeline}, says its ${RUN_FILE}), not of ${pipeline}: choose another --out`);
  }
  if (run?.model !== undefined && run.model !== model) {
    throw new Error(`--out ${runDir} holds the ${pipeline} results of ${run.model}, not of ${model}: choose another --out (or --label)`);
  }
}

/** Locks the run folder (released on dispose), then writes run.json and config.yaml. */
function startEvalRun(runDir: string, def: { name: string; script: string }, flags: Record<string, string | boolean | undefined>, info: EvalRunInfo): Disposable {
  const lock = lockRunDir(runDir);
  writeEvalRunFiles(runDir, def, flags, info);
  return lock;
}

/** What run.json says of an evaluation, besides its pipeline. */
interface EvalRunInfo {
  /** EvaluatedModel.id, or what a comparison compares. */
  model: string;
  label?: string;
  /** The tfjs backend of a run that evaluates. */
  backend?: string;
}

/** run.json (the folder's pipeline and model) and config.yaml, which repeats the run. */
export function writeEvalRunFiles(runDir: string, def: { name: string; script: string }, flags: Record<string, string | boolean | undefined>, info: EvalRunInfo): void {
  const run = { pipeline: def.name, script: def.script, started: new Date().toISOString(), ...info };
  writeFileAtomic(path.join(runDir, RUN_FILE), JSON.stringify(run, null, 2) + '\n');
  const repeat = `npx ts-node ${def.script} --config ${path.join(runDir, CONFIG_FILE)}`;
  writeFileAtomic(path.join(runDir, CONFIG_FILE), configYaml(flags, [`${def.name} run, flags resolved; repeat it with: ${repeat}`], ['config']));
}

/** An evaluation run opened: its data's class count, model and folder checked, the backend up and the model loaded. */
export interface OpenedEvalRun {
  model: EvaluatedModel;
  runDir: string;
  numClasses?: number;
  encoder: VisionTransformer;
  /** The run's first write: the lock (released on dispose), run.json and config.yaml. */
  claim(): Disposable;
}

/**
 * Opens an evaluation of the model the flags name; every input is checked before the (slow)
 * backend start and model load, and nothing is written until claim(). The caller disposes the encoder.
 */
export async function openEvalRun(
  def: { name: string; script: string },
  f: { train?: string; test?: string; out?: string; 'num-classes'?: string; checkpoint?: string; preset?: string; seed?: string; label?: string } & Record<string, string | boolean | undefined>,
): Promise<OpenedEvalRun> {
  const numClasses = numClassesFlag(f);
  evalClassCount(f.train!, f.test!, numClasses);
  const model = evaluatedModel(f);
  const runDir = f.out ?? defaultRunDir(def.name, model);
  checkEvalFolder(runDir, def.name, model.id);
  const backend = await initBackend();
  const encoder = loadEvaluatedModel(model);
  return { model, runDir, numClasses, encoder, claim: () => startEvalRun(runDir, def, { ...f, out: runDir }, { model: model.id, label: model.label, backend: backend.tfBackend }) };
}

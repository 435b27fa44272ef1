/**
 * Opening a run, once for every training pipeline: flags (command line over --config over the
 * defaults), the run folder's owner, resume, then (start) ranks, backend, lock, run.json and
 * config.yaml. A pipeline reads and checks all of its flags between open and start, so a bad
 * flag is refused before any work and before anything is written.
 *
 *   const run = openRun(DEFINITION, argv);          // flags, folder check, resume merge
 *   const f = run.flags; ...check every flag...
 *   const ctx = await run.start({ batch });         // ranks, backend
 *   ...load the models, check them against the flags...
 *   using _claim = run.claim(ctx);                  // lock, run.json, config.yaml: the first write
 *
 * A run folder belongs to one run: a new run into a folder that holds another run's checkpoint
 * or metrics is refused (continue it with --resume, pick a new --out, or --overwrite, which
 * moves the old run aside and never deletes it), and --resume refuses another pipeline's run.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { configYaml, Flags, FlagSpec, num, onFatalError, readFlags, resumeCommand } from '../runtime/cli';
import { checkOutDir } from '../runtime/out-dir';
import { lockRunDir } from '../runtime/run-lock';
import { BackendInfo, initBackend } from '../runtime/backend';
import { adapterLine } from '../runtime/webgpu';
import { serveRuns, RunsServer } from '../view/server';
import { readRunStatus, writeRunStatus } from '../runtime/run-status';
import { localBatchSize, openCollective, pinLocalGpu } from '../runtime/collective';
import { broadcastHostTensors, broadcastVariables, checkSameOnAllRanks } from '../runtime/data-parallel';
import { writeFileAtomic } from '../lib/atomic-file';
import type { Collective } from '../lib/collective';
import type { ParamSet } from '../models/params';
import { DynamicLossScale } from '../models/loss-scale';
import { countSamples } from '../sources/count';
import type { LabelPolicy } from '../sources/tar-shards';
import { DataFingerprint, describeDataChange } from '../lib/fingerprint';
import { sourceFingerprint } from '../eval/feature-cache';
import { driverFlags, mixedPrecision, precisionFlag, RENAMED } from './flags';
import { Resumed, resumeRun } from './resume';

export interface RunDefinition<S extends Record<string, FlagSpec>> {
  /** The pipeline's name: log prefix, and the owner recorded in run.json ("refine"). */
  name: string;
  /** The script, for the commands a run prints (pipelines/refine.ts). */
  script: string;
  usage: string;
  flags: S;
  /** Flags a resumed run keeps from its checkpoint: what defines shapes, data and its order. */
  fixedOnResume: readonly string[];
}

/** The run's identity: which pipeline owns the folder, and how it was started. */
export const RUN_FILE = 'run.json';
/** The resolved flags; `--config RUN/config.yaml` repeats the run. */
export const CONFIG_FILE = 'config.yaml';
/** Flags of one invocation, never written into config.yaml (a repeat must not resume or stop early). */
const NOT_REPEATED = ['config', 'resume', 'overwrite', 'allow-data-change', 'max-steps', 'view'];

export interface RunContext {
  dp: Collective;
  /** This rank's rows of each global batch. */
  localBatch: number;
  backend: BackendInfo;
}

export interface OpenedRun<S extends Record<string, FlagSpec>> {
  /** The flags to run with: on --resume, merged with the checkpoint's. */
  flags: Flags<S>;
  /** Flags given on the command line or in --config. */
  explicit: Set<string>;
  runDir: string;
  resumed?: Resumed<Flags<S>>;
  /** The driver's options shared by every training pipeline (spread into train()); after start(), the loss scaler of a mixed-precision run. */
  driver(): { name: string; script: string; runDir: string; resume?: Resumed<Flags<S>>; lossScale?: DynamicLossScale } & ReturnType<typeof driverFlags>;
  /** Ranks and backend; nothing is written yet. */
  start(opts?: { batch?: number }): Promise<RunContext>;
  /**
   * The run's first write (rank 0): the folder's lock, run.json, config.yaml and status.json
   * ('running'). On dispose the lock is released, the dashboard closed, and a run that did not
   * reach finish() is marked 'failed' in status.json.
   */
  claim(ctx: RunContext): Disposable;
  /** The run's end in status.json: 'finished', or 'stopped' (--max-steps, a signal) with the command that resumes it. */
  finish(done: boolean): void;
  /** Samples an epoch of `source` and the steps an epoch of `batch` makes (at least one). */
  dataSize(source: string, batch: number, opts?: { numClasses?: number; labels?: LabelPolicy }): Promise<{ samplesPerEpoch: number; stepsPerEpoch: number }>;
  /** With several ranks: rank 0's host state (NN queues) on every rank. */
  shareState<T extends Record<string, { shape: number[]; data: Float32Array | Int32Array }>>(ctx: RunContext, what: string, exportState: () => Promise<T>, importState: (state: T) => void): Promise<void>;
  /** With several ranks: the same flags and data everywhere, then rank 0's parameters on every rank. */
  shareFromRank0(ctx: RunContext, sets: ParamSet[], what: string, check?: Record<string, unknown>): Promise<void>;
}

// runs of this process that failed outside the driver's steps: the error that ends the process is their status's message
const failedOutsideSteps = new Set<string>();
onFatalError((err) => failedOutsideSteps.forEach((runDir) => writeRunStatus(runDir, { state: 'failed', message: err.message })));

/**
 * On dispose, a run whose status.json still says 'running' (it neither finished nor stopped)
 * is marked 'failed', with the command that resumes it where there is one. The message is the
 * driver's for a failed step, else the error that ends the process (runMain, onFatalError).
 */
export function failedUnlessEnded(runDir: string, resume: () => string | undefined): Disposable {
  return { [Symbol.dispose]: () => markFailedUnlessEnded(runDir, resume) };
}

function markFailedUnlessEnded(runDir: string, resume: () => string | undefined): void {
  const state = readRunStatus(runDir)?.state;
  if (state === 'finished' || state === 'stopped') return;
  const fromDriver = state === 'failed';
  writeRunStatus(runDir, { state: 'failed', ...(fromDriver ? {} : { message: "ended with an error (the run's log has it)" }), resume: resume() });
  if (!fromDriver) failedOutsideSteps.add(runDir);
}

/** Reads the flags, checks the run folder and merges a resumed run's flags; writes nothing. */
export function openRun<S extends Record<string, FlagSpec>>(def: RunDefinition<S>, argv: string[]): OpenedRun<S> {
  const given = readFlags(def.usage, def.flags, argv, RENAMED);
  const g = given.flags as Record<string, string | boolean | undefined>;
  const runDir = (g.resume as string | undefined) ?? (g.out as string);
  if (g.resume !== undefined) {
    if (given.explicit.has('overwrite')) throw new Error('--overwrite: a resumed run continues in its folder; give --resume or --overwrite, not both');
    checkOwner(runDir, def.name);
  } else {
    if (given.explicit.has('allow-data-change')) throw new Error('--allow-data-change: only a resumed run (--resume) can meet changed data');
    checkOutDir(runDir);
    claimFolder(runDir, def, g.overwrite === true);
  }
  const resumed = g.resume !== undefined ? resumeRun(def.name, runDir, { flags: given.flags, explicit: given.explicit }, def.fixedOnResume) : undefined;
  const flags = resumed?.flags ?? given.flags;
  const f = flags as Record<string, string | boolean | undefined>;
  const driver = driverFlags(f);
  const precision = precisionFlag(f);
  const viewPort = f.view === undefined ? undefined : num('view', f.view as string, { integer: true, min: 0, max: 65535 });
  let data: RunData | undefined;
  let view: RunsServer | undefined;
  let lossScale: DynamicLossScale | undefined;
  let statusOwner = false;
  return {
    flags,
    explicit: given.explicit,
    runDir,
    resumed,
    driver: () => ({ name: def.name, script: def.script, runDir, resume: resumed, ...driver, lossScale }),
    async start(opts = {}) {
      pinLocalGpu();
      const dp = openCollective();
      const localBatch = opts.batch === undefined ? 0 : localBatchSize(opts.batch, dp.worldSize);
      if (dp.rank === 0 && typeof f.train === 'string') data = await checkData(runDir, f.train, resumed !== undefined, f['allow-data-change'] === true);
      const backend = await initBackend(console.log, { precision });
      lossScale = mixedPrecision(backend, precision, console.log) ? new DynamicLossScale() : undefined;
      if (viewPort !== undefined && dp.rank === 0) {
        fs.mkdirSync(runDir, { recursive: true });
        view = await serveRuns({ runsDir: runDir, port: viewPort });
      }
      return { dp, localBatch, backend };
    },
    claim(ctx) {
      // one run at a time in a run folder; every file of the run is rank 0's
      if (ctx.dp.rank !== 0) return { [Symbol.dispose]: () => undefined };
      const lock = lockRunDir(runDir);
      statusOwner = true;
      writeRunFiles(runDir, def, f, { resumed: resumed !== undefined, ranks: ctx.dp.worldSize, backend: ctx.backend.tfBackend, data });
      writeRunStatus(runDir, { state: 'running', pipeline: def.name, backend: ctx.backend.tfBackend, adapter: ctx.backend.adapter ? adapterLine(ctx.backend.adapter) : undefined, ranks: ctx.dp.worldSize, flags: f });
      return {
        [Symbol.dispose]: () => {
          markFailedUnlessEnded(runDir, () => (hasCheckpoint(runDir) ? resumeCommand(def.script, runDir) : undefined));
          lock();
          void view?.close();
        },
      };
    },
    finish(done) {
      if (statusOwner) writeRunStatus(runDir, done ? { state: 'finished' } : { state: 'stopped', resume: resumeCommand(def.script, runDir) });
    },
    async dataSize(source, batch, opts = {}) {
      const samplesPerEpoch = await countSamples(source, opts);
      const stepsPerEpoch = Math.floor(samplesPerEpoch / batch);
      if (stepsPerEpoch < 1) throw new Error(`--train ${source}: ${samplesPerEpoch} samples, fewer than one batch of ${batch} (lower --batch)`);
      return { samplesPerEpoch, stepsPerEpoch };
    },
    async shareState(ctx, what, exportState, importState) {
      if (ctx.dp.worldSize <= 1) return;
      const state = await exportState();
      await broadcastHostTensors(ctx.dp, state, what);
      importState(state);
    },
    async shareFromRank0(ctx, sets, what, check = {}) {
      if (ctx.dp.worldSize <= 1) return;
      await checkSameOnAllRanks(ctx.dp, { flags: f, step: resumed?.step ?? 0, ...check });
      const variables = sets.flatMap((ps) => ps.names().map((n) => [n, ps.get(n)] as [string, tf.Variable]));
      await broadcastVariables(ctx.dp, variables, what);
      console.log(`[${def.name}] rank ${ctx.dp.rank} of ${ctx.dp.worldSize}: ${ctx.localBatch} rows of each global batch`);
    },
  };
}

/** run.json (the folder's owner, when it started) and config.yaml (the resolved flags, to repeat the run). */
export function writeRunFiles(
  runDir: string,
  def: { name: string; script: string },
  flags: Record<string, string | boolean | undefined>,
  info: { resumed: boolean; ranks: number; backend: string; data?: RunData },
): void {
  const earlier = info.resumed ? readRunFile(runDir) : undefined;
  const started = info.resumed ? earlier?.started ?? null : new Date().toISOString();
  // the data the run began on stays its reference, also after a resume with --allow-data-change
  const data = earlier?.data ?? info.data;
  const run = { pipeline: def.name, script: def.script, started, resumedAt: info.resumed ? new Date().toISOString() : undefined, ranks: info.ranks, backend: info.backend, data };
  writeFileAtomic(path.join(runDir, RUN_FILE), JSON.stringify(run, null, 2) + '\n');
  const repeat = `npx ts-node ${def.script} --config ${path.join(runDir, CONFIG_FILE)}`;
  writeFileAtomic(path.join(runDir, CONFIG_FILE), configYaml(flags, [`${def.name} run, flags resolved; repeat it with: ${repeat} --out NEW_FOLDER`], NOT_REPEATED));
}

/**
 * The training data's content fingerprint (lib/fingerprint.ts); on --resume, compared with the
 * one the run began on (run.json): changed data is refused, naming what changed, unless the
 * user says --allow-data-change. Hashing costs about 1.2 s per GiB (lib/fingerprint.ts).
 */
async function checkData(runDir: string, train: string, resumed: boolean, allowChange: boolean): Promise<RunData> {
  const now = await sourceFingerprint(train);
  const before = resumed ? readRunFile(runDir)?.data : undefined;
  const change =
    before && (before.omittedFiles === undefined ? describeDataChange(before, now) : before.digest === now.digest ? undefined : `the content of its ${before.omittedFiles} files differs`);
  if (change && !allowChange) {
    throw new Error(`--resume ${runDir}: the training data changed since the run began (${change}); its sample order would not continue. Start a new run, or pass --allow-data-change to continue on the new data`);
  }
  if (change) console.log(`[run] --allow-data-change: continuing on changed data (${change})`);
  // beyond 10,000 files (an image folder of ImageNet) run.json keeps the digest, not the list
  return now.files.length <= 10_000 ? now : { ...now, files: [], omittedFiles: now.files.length };
}

/** The data fingerprint run.json keeps: the file list only up to 10,000 files. */
type RunData = DataFingerprint & { omittedFiles?: number };

function readRunFile(runDir: string): { pipeline?: string; started?: string; data?: RunData } | undefined {
  const file = path.join(runDir, RUN_FILE);
  if (!fs.existsSync(file)) return undefined;
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch {
    throw new Error(`${file}: not valid JSON; the folder's owner is unknown (move the file away to continue)`);
  }
}

/** A resumed run must be this pipeline's. */
export function checkOwner(runDir: string, pipeline: string): void {
  const owner = readRunFile(runDir)?.pipeline;
  if (owner !== undefined && owner !== pipeline) throw new Error(`--resume ${runDir}: the folder holds a ${owner} run, not a ${pipeline} run; resume it with its own pipeline`);
}

function hasCheckpoint(runDir: string): boolean {
  return fs.existsSync(path.join(runDir, 'checkpoint'));
}

/** What in `runDir` belongs to an earlier run (a checkpoint, metrics), or [] when nothing would be lost. */
function earlierRun(runDir: string): string[] {
  if (!fs.existsSync(runDir)) return [];
  return fs.readdirSync(runDir).filter((name) => name === 'metrics.jsonl' || name === 'checkpoint' || name.startsWith('checkpoint.'));
}

/**
 * A fresh run may only write into a folder that holds no other run; --overwrite moves the
 * other run aside (to <folder>.replaced-<time>) once nothing holds its lock.
 */
function claimFolder(runDir: string, def: RunDefinition<Record<string, FlagSpec>>, overwrite: boolean): void {
  const found = earlierRun(runDir);
  if (found.length === 0) return;
  const owner = readRunFile(runDir)?.pipeline ?? 'earlier';
  if (!overwrite) {
    throw new Error(
      `--out ${runDir} holds ${owner === 'earlier' ? 'an earlier' : `a ${owner}`} run (${found.join(', ')}): ` +
        `${owner === def.name || owner === 'earlier' ? `continue it with ${resumeCommand(def.script, runDir)}, ` : ''}choose another --out, or pass --overwrite to move it aside`,
    );
  }
  // a live run keeps its folder: taking the lock is the check, and it is released at once
  lockRunDir(runDir, () => {})();
  const aside = `${runDir.replace(/\/+$/, '')}.replaced-${new Date().toISOString().replace(/[:.]/g, '-')}`;
  fs.renameSync(runDir, aside);
  console.log(`[${def.name}] --overwrite: the earlier run in ${runDir} is now ${aside}`);
}

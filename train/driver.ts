/**
 * The training driver every pipeline shares: stages run one after another, each with its own
 * objective, parameter groups, AdamW and warm-up + cosine schedule; the step stream is
 *
 *   batches (pulled with credits) -> trainStep -> ema -> enqueue -> readMetrics -> sinks
 *     -> checkpointEvery
 *
 * with one batch in the chain at a time (the data path prepares a bounded number ahead). Metrics are read once per
 * `logEvery` steps (and before every checkpoint). A non-finite loss, loss term or gradient
 * norm stops the run before the next checkpoint, naming the step, the term and the last good
 * checkpoint; `onNonFinite: 'skip'` instead drops that step's update (one host sync a step).
 * Checkpoints are written through one function (save: runtime/checkpoint.ts, the last
 * `keepCheckpoints` kept). A first SIGINT/SIGTERM (runtime/signals.ts, looked at after every
 * step) ends the run after that step with a checkpoint, exit 0 and the command that resumes it.
 *
 * Data parallelism (runtime/collective.ts, runtime/data-parallel.ts): with `dataParallel` each
 * rank runs this same loop on its share of every global batch; the step's gradients are
 * all-reduced before the optimiser (as the pipeline's objective needs: 'sum' of each rank's share
 * of the global loss, refine's NNA; 'mean' of per-rank losses), a stop is taken at the same step
 * on every rank, and only rank 0 writes metrics and checkpoints. A world of one (the default)
 * skips all of it.
 */
import * as tf from '@tensorflow/tfjs';
import { concatMap, finalize, lastValueFrom, Observer, Subject, takeWhile, tap } from 'rxjs';
import { fromPull, Valve } from '../lib/flow';
import { CheckpointFiles, DEFAULT_KEEP_CHECKPOINTS, latestCheckpoint, writeCheckpoint } from '../runtime/checkpoint';
import { resumeCommand } from '../runtime/cli';
import { destroyDeviceIfAsked, deviceFailure } from '../runtime/backend';
import { Collective, SingleProcess } from '../lib/collective';
import { allreduceGradients } from '../runtime/collective';
import { anyRank } from '../runtime/data-parallel';
import { stopRequests } from '../runtime/signals';
import { AdamW, AdamWOptions, warmupCosine } from '../models/adamw';
import { Ema } from '../models/ema';
import { HostTensor, ParamGroupEntry } from '../models/params';
import { Objective } from '../objectives/objective';
import { StepValues, trainStep } from '../operators/train-step';
import { ema } from '../operators/ema';
import { enqueue } from '../operators/enqueue';
import { readMetrics } from '../operators/read-metrics';
import { checkpointEvery } from '../operators/checkpoint-every';
import { StepRecord, trainingSinks } from '../sinks/training';
import { memorySink } from '../sinks/memory-jsonl';
import { readRunStatus, writeRunStatus } from '../runtime/run-status';
import { BatchItem, OpenSteps } from '../objectives/step';
import { DynamicLossScale, LOSS_SCALE_KEY } from '../models/loss-scale';

export interface StageSchedule {
  steps: number;
  peakLr: number;
  minLr: number;
  warmupSteps: number;
}

export interface Stage {
  /** Shown in the log ("stage 2: heads only"). */
  label: string;
  schedule: StageSchedule;
  objective: Objective<any, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  /** The parameters this stage trains, built when it starts. */
  params: () => ParamGroupEntry[];
  ema?: Ema;
  /** Logged with every step of the stage. */
  values?: Record<string, number>;
}

export interface ResumeFrom {
  step: number;
  /** state.safetensors' tensors (optimiser moments among them) and the file, for errors. */
  tensors: Map<string, HostTensor>;
  file: string;
  /** Updates the current stage's optimiser has applied (differs from the steps after a skip). */
  optimiserStep?: number;
}

export interface TrainOptions {
  /** Log prefix ("refine"). */
  name: string;
  /** The pipeline's script (pipelines/refine.ts), for the resume command a stopped run prints; absent where the pipeline takes no --resume. */
  script?: string;
  runDir: string;
  stages: Stage[];
  resume?: ResumeFrom;
  /** The data: batches from a given step on, without end. */
  batches: (fromStep: number) => AsyncGenerator<BatchItem>;
  optimiser: AdamWOptions;
  /** Stop after this many steps in this invocation (0: no limit). */
  maxSteps: number;
  checkpointMinutes: number;
  /** Checkpoints kept (--keep-checkpoints; default DEFAULT_KEEP_CHECKPOINTS). */
  keepCheckpoints?: number;
  logEvery: number;
  onNonFinite: 'stop' | 'skip';
  /** `extra`: the user's own observers of the step records (rank 0's, as the files), subscribed before the first step. */
  sinks: { lossKeys: string[]; title: string; extra?: Partial<Observer<StepRecord>>[] };
  /** The checkpoint's files at `step`, given the optimiser's moments and its step count. */
  checkpointFiles: (step: number, optimiser: { state: Record<string, HostTensor>; step: number }) => Promise<CheckpointFiles>;
  /** Runs once all stages are done, before the final checkpoint. */
  beforeFinalCheckpoint?: () => void;
  /** Runs after each step (after its checkpoint, if any). */
  afterStep?: (step: number, stage: Stage, stageStart: number) => Promise<void>;
  /**
   * Data-parallel training: this rank's collective and how the ranks' gradients combine
   * ('sum' where every rank differentiates the global batch's loss through its own rows,
   * 'mean' where every rank differentiates its own rows' loss). Under 'sum', `whole` names the
   * gradients every rank computes whole rather than its share (parameters applied to the whole
   * global batch on every rank): those are averaged. Default: a world of one.
   */
  dataParallel?: { collective: Collective; gradients: 'sum' | 'mean'; whole?: (gradient: string) => boolean };
  /** Mixed precision (--precision mixed on an f16 backend): the loss scaler, kept in the checkpoints. */
  lossScale?: DynamicLossScale;
}

/** Runs the stages from opts.resume's step (or 0); resolves to the step reached and whether the schedule is done. */
export async function train(opts: TrainOptions): Promise<{ step: number; done: boolean }> {
  const totalSteps = opts.stages.reduce((s, st) => s + st.schedule.steps, 0);
  let step = opts.resume?.step ?? 0;
  const resumedScale = opts.resume?.tensors.get(LOSS_SCALE_KEY);
  if (opts.lossScale && resumedScale) opts.lossScale.importHost(resumedScale, opts.resume!.file);
  const stopAt = Math.min(totalSteps, opts.maxSteps > 0 ? step + opts.maxSteps : Infinity);
  const dp = opts.dataParallel?.collective ?? new SingleProcess();
  // every file of the run is rank 0's
  const writes = dp.rank === 0;
  let lastGood = opts.resume ? { step: opts.resume.step } : undefined;
  let optimiser: AdamW | undefined;
  let lastCheckpointAt = performance.now();
  const save = async (at: number): Promise<void> => {
    if (writes) {
      const state = { ...(optimiser ? await optimiser.exportState() : {}), ...(opts.lossScale ? { [LOSS_SCALE_KEY]: opts.lossScale.exportHost() } : {}) };
      const files = await opts.checkpointFiles(at, { state, step: optimiser?.step ?? 0 });
      writeCheckpoint(opts.runDir, files, { step: at, keep: opts.keepCheckpoints ?? DEFAULT_KEEP_CHECKPOINTS });
    }
    lastGood = { step: at };
    lastCheckpointAt = performance.now();
  };
  const checkpointMs = opts.checkpointMinutes * 60_000;
  // decided once per step: readMetrics flushes before the checkpoint that checkpointEvery then writes
  const dueAt = new Map<number, boolean>();
  const checkpointDue = (at: number): boolean => {
    if (!dueAt.has(at)) {
      dueAt.clear();
      dueAt.set(at, performance.now() - lastCheckpointAt > checkpointMs);
    }
    return dueAt.get(at)!;
  };
  // a signal is looked at once per step (check() lets the event loop deliver it), on every rank at the same step
  using stop = stopRequests();
  let stopping = false;
  const reduce = opts.dataParallel && dp.worldSize > 1 ? acrossRanks(dp, opts.dataParallel.gradients, opts.dataParallel.whole) : undefined;

  const records = new Subject<StepRecord>();
  const sinksDone = writes
    ? trainingSinks(records, { runDir: opts.runDir, total: totalSteps, lossKeys: opts.sinks.lossKeys, title: opts.sinks.title, resumedAtStep: opts.resume?.step ?? 0 })
    : lastValueFrom(records, { defaultValue: undefined }).then(() => undefined);
  if (writes) {
    // memory.jsonl for the dashboard's memory curve, and the schedule's length for its ETA
    records.subscribe(memorySink(opts.runDir, { resumedAtStep: opts.resume?.step ?? 0 }));
    if (readRunStatus(opts.runDir)) writeRunStatus(opts.runDir, { state: 'running', totalSteps });
    opts.sinks.extra?.forEach((sink) => records.subscribe(sink));
  }
  const data = opts.batches(step);
  try {
    let stageStart = 0;
    for (const stage of opts.stages) {
      const stageEnd = stageStart + stage.schedule.steps;
      if (step >= stageEnd || step >= stopAt || stopping) {
        stageStart = stageEnd;
        continue;
      }
      optimiser?.dispose();
      optimiser = new AdamW(stage.params(), opts.optimiser);
      if (opts.resume && step > stageStart) optimiser.importState(opts.resume.tensors, opts.resume.optimiserStep ?? step - stageStart, opts.resume.file);
      console.log(`[${opts.name}] ${stage.label}: ${stage.schedule.steps} steps, lr ${stage.schedule.peakLr}`);
      const last = Math.min(stageEnd, stopAt);
      const { steps, peakLr, minLr, warmupSteps } = stage.schedule;
      const start = stageStart;
      // one credit: the next batch enters the chain when the last one has left it (checkpoint
      // included); the data path (datapath/batches.ts) prepares a bounded number ahead meanwhile
      const valve = new Valve(1);
      const open = new OpenSteps();
      const steps$ = fromPull(take(data, last - step), valve).pipe(
        trainStep(stage.objective, optimiser, {
          open,
          fromStep: step,
          lr: (s) => warmupCosine(s - start, steps, warmupSteps, peakLr, minLr),
          values: stage.values,
          onNonFinite: opts.onNonFinite,
          onSkip: (s, why) => console.warn(`[${opts.name}] step ${s}: skipped ${why}`),
          lossScale: opts.lossScale,
          reduce,
        }),
        ema(stage.ema),
        enqueue(stage.objective),
        concatMap(async (s) => {
          stopping = await anyRank(dp, await stop.check());
          return s;
        }),
        readMetrics({ every: opts.logEvery, flush: (s) => s === last || checkpointDue(s) || stopping }),
        tap((r) => {
          r.records.forEach((rec) => records.next({ ...rec, images: rec.images * dp.worldSize }));
          if (r.nonFinite) throw new Error(`step ${r.nonFinite.step}: not finite: ${r.nonFinite.terms.join(', ')}; stopped without writing a checkpoint. Last good checkpoint: ${goodCheckpoint(opts.runDir, lastGood)}. Lower the lr, clip gradients, or pass --on-nonfinite skip.`);
        }),
        checkpointEvery({ due: checkpointDue, write: save }),
        concatMap(async (r) => {
          step = r.step;
          await opts.afterStep?.(r.step, stage, start);
          destroyDeviceIfAsked(r.step);
          valve.release(1);
          return r;
        }),
        takeWhile(() => !stopping, true),
        finalize(() => open.disposeAll()),
      );
      await lastValueFrom(steps$, { defaultValue: undefined });
      stageStart = stageEnd;
    }
  } catch (err) {
    records.complete();
    await sinksDone;
    const failure = deviceFailure(err, { step, checkpoint: goodCheckpoint(opts.runDir, lastGood), resume: opts.script && resumeCommand(opts.script, opts.runDir) }) ?? err;
    // the dashboard shows why the run failed, not only that it did
    if (writes && readRunStatus(opts.runDir)) writeRunStatus(opts.runDir, { state: 'failed', message: failure instanceof Error ? failure.message : String(failure) });
    throw failure;
  } finally {
    await data.return(undefined);
  }
  const done = step >= totalSteps;
  if (done) opts.beforeFinalCheckpoint?.();
  await save(step);
  optimiser?.dispose();
  records.complete();
  await sinksDone;
  if (!done) {
    const why = stop.signal ?? (stopping ? 'a stop on another rank' : '--max-steps');
    // any world size that divides the global batch resumes it; the same one by default
    const launcher = dp.worldSize > 1 ? `mpirun -np ${dp.worldSize} ` : '';
    console.log(`[${opts.name}] stopped at step ${step} of ${totalSteps} (${why})${opts.script ? `; resume with: ${launcher}${resumeCommand(opts.script, opts.runDir)}` : ''}`);
  }
  return { step, done };
}

/**
 * The step's all-reduce over the ranks. 'sum': every rank already holds the global batch's loss
 * and metrics, only the gradient shares add up (and the `whole` ones average). 'mean': each rank's loss and metrics are its own
 * rows', and their mean (ranks hold equal rows) is the global batch's, reduced with the gradients.
 */
function acrossRanks(dp: Collective, op: 'sum' | 'mean', whole?: (gradient: string) => boolean): (step: StepValues) => Promise<StepValues> {
  return async ({ grads, loss, metrics }) => {
    if (op === 'sum') return { grads: await allreduceGradients(dp, grads, { op: whole ? (n) => (whole(n) ? 'mean' : 'sum') : op }), loss, metrics };
    const names = Object.keys(metrics);
    const reduced = await allreduceGradients(dp, { ...grads, 'step:loss': loss, ...Object.fromEntries(names.map((n) => [`step:${n}`, metrics[n]])) }, { op });
    const metricsOut = Object.fromEntries(names.map((n) => [n, reduced[`step:${n}`] as tf.Scalar]));
    const lossOut = reduced['step:loss'] as tf.Scalar;
    for (const k of ['step:loss', ...names.map((n) => `step:${n}`)]) delete reduced[k];
    return { grads: reduced, loss: lossOut, metrics: metricsOut };
  };
}

/** The run's newest complete checkpoint and its step, for the stop messages (non-finite, failed device). */
function goodCheckpoint(runDir: string, lastGood: { step: number } | undefined): string {
  if (!lastGood) return 'none written yet';
  try {
    return `${latestCheckpoint(runDir)} (step ${lastGood.step})`;
  } catch {
    return `none readable in ${runDir}`;
  }
}

/** The next n items of a shared iterator; ending early leaves the iterator open for the next stage. */
async function* take<T>(source: AsyncIterator<T>, n: number): AsyncGenerator<T> {
  for (let i = 0; i < n; i++) {
    const next = await source.next();
    if (next.done) return;
    yield next.value;
  }
}

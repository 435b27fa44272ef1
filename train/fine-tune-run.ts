/**
 * One fine-tuning run (a share, an lr, a seed) of pipelines/finetune.ts: the driver's run with
 * validation at evenly spaced points, the best checkpoint on validation kept and written as
 * model.safetensors; a stopped run resumes from its own checkpoint folder.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { hostTensors, prefixKeys, readTrainState, withoutPrefix } from '../runtime/checkpoint';
import { pct } from '../lib/format';
import { ClassifierHead, Pooling, VisionTransformer } from '../models/vit';
import { HostTensor } from '../models/params';
import { DynamicLossScale } from '../models/loss-scale';
import { writeSafetensors } from '../models/safetensors';
import { classifyObjective } from '../objectives/classify';
import type { ViewConfig } from '../operators/multi-view';
import { epochBatches, SkipLog } from '../datapath/batches';
import { extractFeatures } from '../eval/extract-features';
import { shotName, ShotSetting } from '../eval/low-shot';
import { writeJsonReport } from '../eval/report';
import { classifierAccuracy, classifierWeights, RunResult } from '../eval/finetune';
import { train } from './driver';
import { checkpointFiles } from './checkpoint-files';
import { driverFlags, LrScaling, scaledLr } from './flags';

export const OPTIMISER = { beta1: 0.9, beta2: 0.999, eps: 1e-8 };

/** What every (share, lr, seed) run shares. */
export interface Context {
  f: { train?: string; [flag: string]: string | boolean | undefined };
  s: { batch: number; lrScaling: LrScaling; minLr: number; warmupShare: number; weightDecay: number; layerDecay: number; labelSmoothing: number; dropPath: number; pooling: Pooling; valEvals: number };
  driver: ReturnType<typeof driverFlags>;
  views: ViewConfig[];
  numClasses: number;
  classNames?: string[];
  /** f16 matMuls (--precision mixed on WebGPU): every run trains with a loss scale. */
  mixed: boolean;
}

/** One (share, lr, seed): the driver's run with validation at the evaluation points, the best kept. */
export async function fineTuneRun(c: Context, r: {
  runDir: string; share: ShotSetting; lr: number; seed: number; images: number; steps: number; stepsPerEpoch: number;
  subset: Int32Array | undefined; encoder: VisionTransformer; head: ClassifierHead; maxSteps: number;
  evaluate: (encoder: VisionTransformer) => ReturnType<typeof extractFeatures>;
}): Promise<{ done: false } | { done: true; result: RunResult; stepsTaken: number }> {
  const { runDir, encoder, head, steps, stepsPerEpoch } = r;
  const { s, f } = c;
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
      schedule: { steps, peakLr: scaledLr(r.lr, s.batch, s.lrScaling), minLr: s.minLr, warmupSteps: Math.round(s.warmupShare * steps) },
      params: () => [...encoder.paramGroups('encoder.', { weightDecay: s.weightDecay, layerDecay: s.layerDecay }), ...head.paramGroups('classifier.', s.weightDecay)],
    }],
    resume: resume && { step: startStep, tensors: hostTensors(resume.tensors), file: resume.file, optimiserStep: resume.meta.optimiserStep as number | undefined },
    batches: (fromStep) => epochBatches({ source: f.train!, seed: r.seed, batchSize: s.batch, stepsPerEpoch, fromStep, views: c.views, skips: new SkipLog(), subset: r.subset }),
    optimiser: OPTIMISER,
    ...c.driver,
    // each run its own scale, from the start (a resumed run's comes from its checkpoint)
    lossScale: c.mixed ? new DynamicLossScale() : undefined,
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
    classifier: JSON.stringify({ numClasses: c.numClasses, pooling: s.pooling, ...(c.classNames ? { classes: c.classNames } : {}) }),
    chosen: JSON.stringify({ on: 'validation top-1', ...best!.entry }),
  });
  writeJsonReport(path.join(runDir, 'result.json'), result);
  return { done: true, result, stepsTaken: step - startStep };
}


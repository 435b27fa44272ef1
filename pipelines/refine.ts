/**
 * MIM-Refiner (Alkin et al. 2024, arXiv 2402.10093): contrastive heads with nearest-neighbour
 * alignment (NNA) on the CLS token of several late blocks of a masked-image-modelling ViT,
 * trained briefly so that the last block ends up holding the best off-the-shelf features.
 *
 * Per step: two global views (+ local views) of a batch -> one backbone pass returning every
 * head's block -> per head: projector z, predictor p, nearest neighbour of z in the head's
 * queue -> NNA loss summed over heads -> backward -> AdamW -> EMA -> enqueue z of view 0.
 * Stage 2 trains the heads on a frozen encoder; stage 3 trains encoder and heads.
 * The defaults fit the bundled CPU demonstration into ~10 minutes on 2 cores (0.3 epoch of head
 * warm-up, 1.1 epochs of refinement, short EMA horizon, first blocks frozen, local crops sized
 * for 32 px images); REFERENCE.md lists the paper's values.
 *
 *   npx ts-node pipelines/refine.ts                      # bundled MAE checkpoint and data
 *   npx ts-node pipelines/refine.ts --checkpoint my-mae.safetensors --train 'shards/*.tar' --test 'val/*.tar'
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { Subject } from 'rxjs';
import { initBackend } from '../runtime/backend';
import { intList, num, numRange, parseFlags, runMain } from '../runtime/cli';
import { Rng } from '../runtime/rng';
import { hostTensors, loadEncoder, prefixKeys, readTrainState, withoutPrefix, writeCheckpointDir } from '../runtime/checkpoint';
import { VisionTransformer } from '../models/vit';
import { HEAD_PRESETS, NnaHead } from '../models/nna-head';
import { NnQueue } from '../models/nn-queue';
import { AdamW, ParamGroupEntry, warmupCosine } from '../models/adamw';
import { Ema } from '../models/ema';
import { stopGradient } from '../models/ops';
import { nnaLoss } from '../operators/nna-loss';
import { refinerViews } from '../operators/multi-view';
import { epochBatches, SkipLog } from '../sources/batches';
import { countSamples } from '../sources/count';
import { StepRecord, trainingSinks } from '../sinks/training';
import { checkpointKey } from '../eval/feature-cache';
import { perBlockKnn, writeKnnSummary, KnnReport } from './knn';
import { writeChart } from '../sinks/charts';
import { writeJsonReport } from '../eval/report';

const USAGE = 'MIM-Refiner: refine a MIM-pretrained ViT with NNA heads on intermediate blocks.\n  npx ts-node pipelines/refine.ts [options]';
const FLAGS = {
  checkpoint: { description: 'encoder to refine (safetensors, timm names)', default: 'checkpoints/mae-vit-micro-p4/encoder.safetensors' },
  train: { description: 'training images: tar shards glob, image folder or CIFAR .bin', default: 'data/cifar10-mini/train-*.tar.gz' },
  test: { description: 'held-out images for the kNN evaluation before and after', default: 'data/cifar10-mini/test-*.tar.gz' },
  out: { description: 'run directory', default: 'runs/refine' },
  resume: { description: 'continue the run in this directory from its checkpoint' },
  blocks: { description: 'head blocks, 0-based, comma-separated (default: last block + the rest of the last third)' },
  'head-preset': { description: `head sizes: ${Object.keys(HEAD_PRESETS).join(', ')}`, default: 'micro' },
  'queue-size': { description: 'NN queue entries per head', default: '4096' },
  stages: { description: "stages to run: '2,3', '2' (heads warm-up) or '3' (refine)", default: '2,3' },
  'stage2-epochs': { description: 'stage 2 length in epochs (fractions allowed)', default: '0.3' },
  'stage3-epochs': { description: 'stage 3 length in epochs (fractions allowed)', default: '1.1' },
  batch: { description: 'batch size (samples; each gives 2 global + local views)', default: '32' },
  'lr2': { description: 'stage 2 peak lr (heads)', default: '1e-3' },
  'lr3': { description: 'stage 3 peak lr', default: '1e-3' },
  'min-lr': { description: 'lr at the end of each cosine', default: '1e-6' },
  'warmup-share': { description: 'share of each stage spent in linear warm-up', default: '0.1' },
  'layer-decay': { description: 'layer-wise lr decay over encoder blocks (reference 0.65 over 24 blocks)', default: '0.8' },
  'freeze-blocks': { description: 'stage 3 keeps the embeddings and the first N blocks frozen (no backward through them)', default: '2' },
  'encoder-wd': { description: 'encoder weight decay', default: '0.05' },
  'head-wd': { description: 'head weight decay', default: '1e-5' },
  'clip-grad': { description: 'clip the global gradient norm (0: off)', default: '0' },
  'topk2': { description: 'NN top-k in stage 2', default: '1' },
  'topk3': { description: 'NN top-k in stage 3 (reference 20 with a 65k queue on ImageNet; 1 suits a short run on weak features)', default: '1' },
  temperature: { description: 'NNA temperature', default: '0.2' },
  ema: { description: 'EMA momentum of the encoder (reference 0.9999 over ~37k steps; keep the horizon a fraction of the run)', default: '0.8' },
  'global-size': { description: 'global view size (default: the model image size)' },
  'local-size': { description: 'local view size (default: half the global size)' },
  'local-views': { description: 'local views per sample (reference 10)', default: '6' },
  'jitter-p': { description: 'colour-jitter probability of every view (reference 0.8; 1.0 with grayscale 0.3 measured +0.45 kNN over 3 seeds against the reference pair on 32 px CIFAR)', default: '1.0' },
  'jitter-strength': { description: 'colour-jitter strength, a multiple of the reference (brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1)', default: '1' },
  'grayscale-p': { description: 'grayscale probability of every view (reference 0.2; 0.7 measured +0.69 kNN over 3 seeds against 0.3 on 32 px CIFAR)', default: '0.7' },
  'global-scale': { description: "global crops' RandomResizedCrop area range lo,hi (reference 0.25,1)", default: '0.25,1' },
  'local-scale': {
    description: "local crops' RandomResizedCrop area range lo,hi (reference 0.05,0.25, for 96 px crops of 224 px images whose object fills part of the frame; on 32 px CIFAR images that leaves 7-16 px scraps)",
    default: '0.14,0.5',
  },
  seed: { description: 'seed of heads, queues, augmentation, order and NN picks', default: '0' },
  'knn-train-limit': { description: 'train images for the before/after kNN (0: all)', default: '5000' },
  'knn-test-limit': { description: 'test images for the before/after kNN (0: all)', default: '2000' },
  'skip-knn': { description: 'skip the kNN evaluations', boolean: true },
  'knn-every': { description: 'also track the EMA encoder\'s per-block kNN every this many epochs of stage 3 (0: off); knn-during.json + .png', default: '0' },
  'checkpoint-minutes': { description: 'write a checkpoint at least this often', default: '5' },
  'max-steps': { description: 'stop after this many steps in this invocation (checkpointed; continue with --resume)', default: '0' },
} as const;

type Stage = { id: 2 | 3; steps: number; lr: number; topK: number; trainEncoder: boolean };

/** Runs the refine pipeline with command-line style arguments; resolves to the run directory. */
export async function refine(argv: string[]): Promise<string> {
  const flags = parseFlags(USAGE, FLAGS, argv);
  const runDir = flags.resume ?? flags.out!;
  const resumeState = flags.resume ? readTrainState(path.join(runDir, 'checkpoint')) : undefined;
  const f = resumeState ? { ...flags, ...(resumeState.meta.flags as typeof flags) } : flags;
  const seed = num('seed', f.seed, { integer: true });
  const batch = num('batch', f.batch, { integer: true, min: 2 });
  const headSizes = HEAD_PRESETS[f['head-preset']!];
  if (!headSizes) throw new Error(`--head-preset: unknown '${f['head-preset']}', expected one of ${Object.keys(HEAD_PRESETS).join(', ')}`);
  const stageIds = intList('stages', f.stages);
  if (stageIds.length === 0 || stageIds.some((s) => s !== 2 && s !== 3)) throw new Error(`--stages: expected '2,3', '2' or '3', got '${f.stages}'`);
  const numLocal = num('local-views', f['local-views'], { integer: true, min: 0 });
  const jitterP = num('jitter-p', f['jitter-p'], { min: 0, max: 1 });
  const jitterStrength = num('jitter-strength', f['jitter-strength'], { min: 0, max: 5 });
  const grayscaleP = num('grayscale-p', f['grayscale-p'], { min: 0, max: 1 });
  const globalScale = numRange('global-scale', f['global-scale'], { min: 0.01, max: 1 });
  const localScale = numRange('local-scale', f['local-scale'], { min: 0.01, max: 1 });
  const temperature = num('temperature', f.temperature, { min: 1e-4 });

  // ---- model: the MIM encoder, one head + queue per chosen block, an EMA copy
  const backend = await initBackend();
  const encoder = loadEncoder(f.checkpoint!);
  const { depth, embedDim, imgSize } = encoder.cfg;
  const headBlocks = f.blocks ? intList('blocks', f.blocks) : defaultHeadBlocks(depth);
  for (const b of headBlocks) {
    if (!Number.isInteger(b) || b < 0 || b >= depth) throw new Error(`--blocks: block ${b} does not exist in ${f.checkpoint} (blocks 0..${depth - 1})`);
  }
  const heads = headBlocks.map((_, i) => new NnaHead(embedDim, headSizes, encoder.cfg.act, seed * 100 + i));
  const queueSize = num('queue-size', f['queue-size'], { integer: true, min: 1 });
  const queues = headBlocks.map((_, i) => new NnQueue(queueSize, headSizes.out, seed * 100 + 50 + i));
  const emaEncoder = new VisionTransformer(encoder.cfg);
  const ema = new Ema(emaEncoder.params, encoder.params, num('ema', f.ema, { min: 0, max: 0.999999 }));
  const globalSize = f['global-size'] ? num('global-size', f['global-size'], { integer: true }) : imgSize;
  const localSize = f['local-size'] ? num('local-size', f['local-size'], { integer: true }) : Math.max(encoder.cfg.patchSize, Math.round(imgSize / 2 / encoder.cfg.patchSize) * encoder.cfg.patchSize);
  if (globalSize !== imgSize) throw new Error(`--global-size ${globalSize}: the encoder takes ${imgSize} px images`);
  console.log(`[refine] ${f.checkpoint}: ViT depth ${depth}, width ${embedDim}; heads on blocks ${headBlocks.join(', ')}; backend ${backend.tfBackend}`);

  // ---- schedule
  const samplesPerEpoch = await countSamples(f.train!);
  const stepsPerEpoch = Math.floor(samplesPerEpoch / batch);
  if (stepsPerEpoch < 1) throw new Error(`${f.train}: ${samplesPerEpoch} samples, fewer than one batch of ${batch}`);
  const stages: Stage[] = stageIds.map((id) => ({
    id: id as 2 | 3,
    steps: Math.max(1, Math.round(num(`stage${id}-epochs`, f[`stage${id}-epochs` as 'stage2-epochs'], { min: 0 }) * stepsPerEpoch)),
    lr: num(`lr${id}`, f[`lr${id}` as 'lr2'], { min: 0 }),
    topK: num(`topk${id}`, f[`topk${id}` as 'topk2'], { integer: true, min: 1 }),
    trainEncoder: id === 3,
  }));
  const totalSteps = stages.reduce((s, st) => s + st.steps, 0);
  const minLr = num('min-lr', f['min-lr'], { min: 0 });
  const warmupShare = num('warmup-share', f['warmup-share'], { min: 0, max: 1 });
  const knnEverySteps = Math.round(num('knn-every', f['knn-every'], { min: 0 }) * stepsPerEpoch);

  // ---- kNN of the MIM checkpoint, before anything changes
  const knnOpts = {
    train: f.train!,
    test: f.test!,
    trainLimit: num('knn-train-limit', f['knn-train-limit'], { integer: true, min: 0 }) || undefined,
    testLimit: num('knn-test-limit', f['knn-test-limit'], { integer: true, min: 0 }) || undefined,
  };
  fs.mkdirSync(runDir, { recursive: true });
  // the starting checkpoint's features come from the feature cache when it has seen this file
  const knnOfCheckpoint = (model: VisionTransformer) => perBlockKnn(model, { ...knnOpts, label: 'MIM checkpoint', cacheKey: checkpointKey(f.checkpoint!) });
  const knnBefore: KnnReport | undefined = f['skip-knn'] || resumeState ? undefined : await knnOfCheckpoint(encoder);
  // kNN tracked during stage 3 (the paper's training-time metric), as a curve over steps
  const duringFile = path.join(runDir, 'knn-during.json');
  const knnDuring: { step: number; report: KnnReport }[] = resumeState && fs.existsSync(duringFile) ? JSON.parse(fs.readFileSync(duringFile, 'utf8')).points : knnBefore ? [{ step: 0, report: knnBefore }] : [];
  const trackKnn = async () => {
    knnDuring.push({ step, report: await perBlockKnn(emaEncoder, { ...knnOpts, label: `refined (EMA), step ${step}` }) });
    await writeKnnCurve(runDir, knnDuring);
  };

  // ---- resume
  let step = 0;
  const savedState = resumeState ? hostTensors(resumeState.tensors) : undefined;
  if (resumeState) {
    const file = path.join(runDir, 'checkpoint', 'state.safetensors');
    const sub = (prefix: string) => withoutPrefix(savedState!, prefix);
    encoder.params.importTimm(sub('encoder.'), file);
    emaEncoder.params.importTimm(sub('ema.'), file);
    heads.forEach((h, i) => h.params.importTimm(sub(`heads.${i}.`), file));
    queues.forEach((q, i) => q.importState((k) => resumeState.tensors.get(k), `queues.${i}`, file));
    step = resumeState.meta.step as number;
    console.log(`[refine] resumed ${runDir} at step ${step}`);
  }

  const records = new Subject<StepRecord>();
  const sinksDone = trainingSinks(records, { runDir, total: totalSteps, lossKeys: ['loss', 'loss_global', 'loss_local'], title: 'NNA loss', resumed: resumeState !== undefined });
  const skips = new SkipLog();
  const views = refinerViews({ globalSize, localSize, numLocal, globalScale, localScale, jitterP, jitterStrength, grayscaleP });

  // batches forever, epoch after epoch; a resumed run starts where the step count says
  const data = epochBatches({ source: f.train!, seed, batchSize: batch, stepsPerEpoch, fromStep: step, views, skips });

  const maxSteps = num('max-steps', flags['max-steps'], { integer: true, min: 0 });
  const stopAt = maxSteps > 0 ? step + maxSteps : Infinity;
  let stageStart = 0;
  let optimiser: AdamW | undefined;
  let lastCheckpoint = performance.now();
  const checkpointEvery = num('checkpoint-minutes', f['checkpoint-minutes'], { min: 0 }) * 60_000;
  const saveCheckpoint = async () => {
    const encoderWeights = await encoder.params.exportTimm();
    const emaWeights = await emaEncoder.params.exportTimm();
    const metadata = { format: 'pt', vit: JSON.stringify(encoder.cfg) };
    writeCheckpointDir(path.join(runDir, 'checkpoint'), {
      'encoder-ema.safetensors': { tensors: emaWeights, metadata },
      'encoder.safetensors': { tensors: encoderWeights, metadata },
      'state.safetensors': {
        tensors: {
          ...prefixKeys('encoder.', encoderWeights),
          ...prefixKeys('ema.', emaWeights),
          ...Object.assign({}, ...(await Promise.all(heads.map(async (h, i) => prefixKeys(`heads.${i}.`, await h.params.exportTimm()))))),
          ...Object.assign({}, ...(await Promise.all(queues.map((q, i) => q.exportState(`queues.${i}`))))),
          ...(optimiser ? await optimiser.exportState() : {}),
        },
        metadata: { state: JSON.stringify({ step, flags: f, headBlocks }) },
      },
    });
    lastCheckpoint = performance.now();
  };

  // the data worker must end however the loop ends
  try {
    for (const stage of stages) {
      const stageEnd = stageStart + stage.steps;
      if (step >= stageEnd) {
        stageStart = stageEnd;
        continue;
      }
      if (step >= stopAt) break;
      // Stage 2: heads only, no encoder gradients at all. Stage 3: encoder with layer-wise lr decay.
      const groups: ParamGroupEntry[] = heads.flatMap((h, i) =>
        h.params.trainable().map((p) => ({ ...p, name: `heads.${i}.${p.name}`, lrScale: 1, weightDecay: p.decay ? num('head-wd', f['head-wd']) : 0 })),
      );
      if (stage.trainEncoder) {
        const decay = num('layer-decay', f['layer-decay'], { min: 0, max: 1 });
        const wd = num('encoder-wd', f['encoder-wd'], { min: 0 });
        const frozenBlocks = num('freeze-blocks', f['freeze-blocks'], { integer: true, min: 0, max: depth });
        for (const p of encoder.params.trainable()) {
          if (layerId(p.name, depth) <= frozenBlocks) continue;
          groups.push({ ...p, name: `encoder.${p.name}`, lrScale: decay ** (depth + 1 - layerId(p.name, depth)), weightDecay: p.decay ? wd : 0 });
        }
      }
      optimiser?.dispose();
      optimiser = new AdamW(groups, { beta1: 0.9, beta2: 0.95, eps: 1e-8, clipGradNorm: num('clip-grad', f['clip-grad'], { min: 0 }) });
      if (resumeState && step > stageStart && savedState) optimiser.importState(savedState, step - stageStart, 'state.safetensors');
      const varList = groups.map((g) => g.variable);
      console.log(`[refine] stage ${stage.id}: ${stage.steps} steps, lr ${stage.lr}, top-k ${stage.topK}, ${stage.trainEncoder ? 'encoder + heads' : 'heads only (encoder frozen)'}`);

      while (step < stageEnd && step < stopAt) {
        const { value: next, done } = await data.next();
        if (done) break;
        const { batch: b, waitMs, epoch } = next;
        const t0 = performance.now();
        const lr = warmupCosine(step - stageStart, stage.steps, Math.round(warmupShare * stage.steps), stage.lr, minLr);
        const rng = new Rng(seed, 0x4e4e, step);
        const n = b.indices.length;
        const metrics: Record<string, number> = {};
        // device scalars, read together after the step (no synchronous read inside it)
        const pending: Record<string, tf.Scalar[]> = {};
        const track = (key: string, t: tf.Scalar) => (pending[key] ??= []).push(tf.keep(t));

        // one backbone pass for all head blocks: globals together, locals together
        const globals = tf.concat([0, 1].map((v) => tf.tensor4d(b.views[v], [n, globalSize, globalSize, 3])));
        const locals = numLocal > 0 ? tf.concat(b.views.slice(2).map((v) => tf.tensor4d(v, [n, localSize, localSize, 3]))) : undefined;
        const encode = () => ({
          g: encoder.clsFeatures(globals as tf.Tensor4D, headBlocks),
          l: locals ? encoder.clsFeatures(locals as tf.Tensor4D, headBlocks) : [],
        });
        const frozen = stage.trainEncoder ? undefined : tf.tidy(() => encode());
        const enqueue: tf.Tensor2D[] = [];

        const { value: loss, grads } = tf.variableGrads(() => {
          const cls = frozen ?? encode();
          const perHead = heads.map((head, h) => {
            const zGlobal = head.project(cls.g[h], true);
            const pGlobal = tf.split(head.predict(zGlobal, true), 2);
            const z = tf.split(zGlobal, 2).map((zi) => stopGradient(zi)) as tf.Tensor2D[];
            const nn = z.map((zi) => queues[h].lookup(zi, b.indices, b.labels, stage.topK, rng));
            const pLocal = numLocal > 0 ? splitViews(head.predict(head.project(cls.l[h], true), true), numLocal) : [];
            const l = nnaLoss({ projections: z, swapped: nn.map((x) => x.swapped), predictions: [...pGlobal, ...pLocal] as tf.Tensor2D[], numGlobal: 2, temperature });
            enqueue[h] = tf.keep(z[0].clone());
            track(`block${headBlocks[h]}_loss`, l.total.clone());
            track(`block${headBlocks[h]}_nn_sim`, tf.div(tf.add(nn[0].similarity, nn[1].similarity), 2));
            track(`block${headBlocks[h]}_nn_acc`, tf.div(tf.add(nn[0].accuracy, nn[1].accuracy), 2));
            track('loss_global', l.global);
            track('loss_local', l.local);
            tf.dispose(nn.map((x) => x.swapped));
            return l.total;
          });
          return tf.addN(perHead) as tf.Scalar;
        }, varList);
        track('grad_norm', optimiser.apply(grads, lr));
        track('loss', loss.clone());
        if (stage.trainEncoder) ema.update();
        enqueue.forEach((z, h) => queues[h].push(z, b.indices, b.labels));
        tf.dispose([loss, grads, globals, ...(locals ? [locals] : []), ...enqueue, ...(frozen ? [...frozen.g, ...frozen.l] : [])]);
        const keys = Object.keys(pending);
        const stacked = tf.tidy(() => tf.stack(keys.map((key) => tf.addN(pending[key]))));
        tf.dispose(Object.values(pending).flat());
        const read = await stacked.data();
        stacked.dispose();
        keys.forEach((key, i) => (metrics[key] = read[i]));
        if (!Number.isFinite(metrics.loss)) throw new Error(`loss became ${metrics.loss} at step ${step}; lower --lr${stage.id}`);

        step++;
        records.next({ step, epoch, lr, values: { stage: stage.id, ...metrics }, images: n, stepMs: performance.now() - t0, waitMs });
        if (performance.now() - lastCheckpoint > checkpointEvery) await saveCheckpoint();
        if (stage.trainEncoder && knnEverySteps > 0 && !f['skip-knn'] && (step - stageStart) % knnEverySteps === 0 && step < stageEnd) await trackKnn();
      }
      stageStart = stageEnd;
    }
  } finally {
    await data.return(undefined);
  }
  if (step < totalSteps) {
    await saveCheckpoint();
    records.complete();
    await sinksDone;
    console.log(`[refine] stopped at step ${step} of ${totalSteps} (--max-steps); continue with --resume ${runDir}`);
    return runDir;
  }
  // stage 2 alone leaves the encoder untouched; the EMA then equals it
  if (!stageIds.includes(3)) emaEncoder.params.copyFrom(encoder.params);
  await saveCheckpoint();
  records.complete();
  await sinksDone;
  if (skips.total > 0) console.log(`[data] skipped ${skips.total} samples: ${JSON.stringify(Object.fromEntries(skips.counts))}`);

  // ---- kNN of the refined (EMA) encoder, and the before/after summary
  if (!f['skip-knn']) {
    // a resumed run measures the starting point at the end, from the original checkpoint
    const before = knnBefore ?? (await knnOfCheckpoint(loadEncoder(f.checkpoint!)));
    const knnAfter = await perBlockKnn(emaEncoder, { ...knnOpts, label: 'refined (EMA)' });
    if (knnEverySteps > 0) {
      knnDuring.push({ step, report: knnAfter });
      await writeKnnCurve(runDir, knnDuring);
    }
    await writeKnnSummary(runDir, [before, knnAfter], {
      title: 'Per-block kNN top-1 before and after refinement',
      extra: { checkpoint: f.checkpoint, headBlocks, steps: totalSteps, flags: f },
    });
  }
  console.log(`[refine] done: ${path.join(runDir, 'checkpoint', 'encoder-ema.safetensors')}`);
  return runDir;
}

/** knn-during.json and a per-block kNN-over-steps chart (SVG + PNG). */
async function writeKnnCurve(runDir: string, points: { step: number; report: KnnReport }[]): Promise<void> {
  writeJsonReport(path.join(runDir, 'knn-during.json'), { points });
  const blocks = points[0].report.blocks;
  await writeChart(path.join(runDir, 'knn-during'), {
    title: 'Per-block kNN top-1 during refinement (EMA encoder; step 0 = MIM checkpoint)',
    xLabel: 'step',
    yLabel: 'kNN top-1 (%)',
    series: blocks.map((b, i) => ({ name: `block ${b}`, points: points.map((p) => [p.step, 100 * p.report.top1[i]] as [number, number]) })),
  });
}

/** Rows of n stacked views -> one tensor per view (tfjs's split has no gradient for one piece). */
function splitViews(x: tf.Tensor2D, n: number): tf.Tensor2D[] {
  return n === 1 ? [x] : (tf.split(x, n) as tf.Tensor2D[]);
}

/** The last block plus the rest of the last third of the blocks (reference: 16..23 of 24). */
export function defaultHeadBlocks(depth: number): number[] {
  const first = Math.max(0, depth - Math.ceil(depth / 3));
  return Array.from({ length: depth - first }, (_, i) => first + i);
}

/** BEiT-style layer id for layer-wise lr decay: embeddings 0, block i -> i + 1, final norm depth + 1. */
function layerId(name: string, depth: number): number {
  const m = /^blocks\.(\d+)\./.exec(name);
  if (m) return Number(m[1]) + 1;
  return /^(patch_embed|cls_token|pos_embed)/.test(name) ? 0 : depth + 1;
}

if (require.main === module) runMain(() => refine(process.argv.slice(2)).then(() => undefined));

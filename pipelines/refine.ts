/**
 * MIM-Refiner (Alkin et al. 2024, arXiv 2402.10093): contrastive heads with nearest-neighbour
 * alignment (NNA) on the CLS token of several late blocks of a masked-image-modelling ViT,
 * trained briefly so that the last block ends up holding the best off-the-shelf features.
 *
 * Per step: two global views (+ local views) of a batch -> one backbone pass returning every
 * head's block -> per head: projector z, predictor p, nearest neighbour of z in the head's
 * queue -> NNA loss summed over heads -> backward -> AdamW -> EMA -> enqueue z of view 0.
 * Stage 2 trains the heads on a frozen encoder; stage 3 trains encoder and heads.
 * The defaults fit the bundled CPU demonstration (docs/screens.md has the validation screens
 * behind each; docs/deviations.md the reference's values; recipes/ the reference's settings).
 *
 *   npx ts-node pipelines/refine.ts                      # bundled MAE checkpoint and data
 *   npx ts-node pipelines/refine.ts --config recipes/mae-vit-b16-in1k.yaml --train 'in1k/train-{000000..001281}.tar'
 */
import * as path from 'node:path';
import { intList, num, numRange, oneOf, runMain } from '../runtime/cli';
import { withoutPrefix } from '../runtime/checkpoint';
import { exchangeMode, filesFingerprint } from '../runtime/data-parallel';
import type { Collective } from '../lib/collective';
import { VisionTransformer } from '../models/vit';
import { defaultHeadBlocks, HEAD_PRESETS, NnaHead } from '../models/nna-head';
import { NnQueue } from '../models/nn-queue';
import { Ema } from '../models/ema';
import { nnaRefineObjective } from '../objectives/nna-refine';
import { refinerViews } from '../operators/multi-view';
import { epochBatches, SkipLog } from '../datapath/batches';
import { Stage, train } from '../train/driver';
import { checkpointFiles } from '../train/checkpoint-files';
import { BUNDLED, dataFlags, evalFlags, knnFlags, LR_SCALINGS, modelFlags, optimiserFlags, runFlags, scaledLr, TRAINING_RUN_FLAGS } from '../train/flags';
import { openRun } from '../train/run';
import type { Resumed } from '../train/resume';
import { loadModel } from '../train/model';
import { checkpointKey } from '../eval/feature-cache';
import { perBlockKnn, readKnnCurve, writeKnnCurve, writeKnnSummary, KnnReport } from '../eval/per-block-knn';

const FLAGS = {
  ...runFlags('refine'),
  ...TRAINING_RUN_FLAGS,
  ...dataFlags(),
  ...modelFlags({ checkpoint: BUNDLED.mae, what: 'MIM encoder' }),
  blocks: { description: 'head blocks, 0-based, comma-separated (default: the last third, as the reference)' },
  'head-preset': { description: `head sizes: ${Object.keys(HEAD_PRESETS).join(', ')} (reference: base)`, default: 'micro' },
  'queue-size': { description: 'NN queue entries per head (reference 65536)', default: '4096' },
  stages: { description: "stages to run: '2,3', '2' (heads warm-up) or '3' (refine)", default: '2,3' },
  'stage2-epochs': { description: 'stage 2 (heads only) length in epochs, fractions allowed (> 0)', default: '0.3' },
  'stage3-epochs': { description: 'stage 3 (encoder and heads) length in epochs, fractions allowed (> 0)', default: '1.1' },
  'stage2-lr': { description: 'stage 2 peak lr (see --lr-scaling)', default: '1e-3' },
  'stage3-lr': { description: 'stage 3 peak lr (see --lr-scaling)', default: '1e-3' },
  'stage2-topk': { description: 'NN top-k in stage 2 (>= 1)', default: '1' },
  'stage3-topk': { description: 'NN top-k in stage 3 (>= 1; reference 20)', default: '1' },
  ...optimiserFlags({ batch: '32', lrScaling: 'none', weightDecay: '0.05', warmupShare: '0.1', layerDecay: '0.8' }),
  'head-weight-decay': { description: 'AdamW weight decay of the heads (>= 0)', default: '1e-5' },
  'freeze-blocks': { description: 'stage 3 keeps the embeddings and the first N blocks frozen (0..depth)', default: '2' },
  temperature: { description: 'NNA temperature (> 0)', default: '0.2' },
  ema: { description: 'EMA momentum of the encoder in stage 3; horizon 1/(1-m) steps (0-0.999999)', default: '0.8' },
  'ema-share': { description: "the EMA's horizon as a share of stage 3's steps, instead of --ema (0.001-1)" },
  'last-head-norm': { description: "'on': the last block's head takes the CLS after the final norm; 'off': the raw block", default: 'off' },
  'bn-views': { description: "heads' BatchNorm over 'separate' global and local views, or 'joint' (reference)", default: 'separate' },
  'local-pairs': { description: "'local': each global projection with each local prediction; 'reference-code': its loop", default: 'local' },
  'global-size': { description: "global view size, px; the encoder's position embedding is resampled to it (default: its own)" },
  'local-size': { description: 'local view size, px (default: half the global size)' },
  'local-views': { description: 'local views per sample (0-64; reference 10)', default: '6' },
  'jitter-p': { description: 'colour-jitter probability of every view (0-1; reference 0.8)', default: '1.0' },
  'jitter-strength': { description: 'colour-jitter strength, a multiple of the reference (0-5)', default: '1' },
  'grayscale-p': { description: 'grayscale probability of every view (0-1; reference 0.2)', default: '0.7' },
  'crop-scale': { description: "global crops' RandomResizedCrop area range lo,hi", default: '0.25,1' },
  'local-crop-scale': { description: "local crops' RandomResizedCrop area range lo,hi (reference 0.05,0.25)", default: '0.14,0.5' },
  seed: { description: 'seed of heads, queues, augmentation, order and NN picks', default: '0' },
  ...evalFlags({ trainLimit: '5000', testLimit: '2000', skip: true }),
  'knn-every': { description: "also track the EMA encoder's per-block kNN every this many epochs of stage 3 (0: off)", default: '0' },
} as const;

export const DEFINITION = {
  name: 'refine',
  script: 'pipelines/refine.ts',
  usage: 'MIM-Refiner: refine a MIM-pretrained ViT with NNA heads on intermediate blocks.\n  npx ts-node pipelines/refine.ts [options]',
  flags: FLAGS,
  fixedOnResume: [
    'checkpoint', 'preset', 'train', 'blocks', 'head-preset', 'queue-size', 'stages', 'batch', 'seed', 'local-views', 'global-size', 'local-size',
    'jitter-p', 'jitter-strength', 'grayscale-p', 'crop-scale', 'local-crop-scale', 'freeze-blocks', 'last-head-norm', 'bn-views', 'local-pairs',
  ],
};

type Flags = ReturnType<typeof openRun<typeof FLAGS>>['flags'];
type Settings = ReturnType<typeof settings>;

/** The flags as settings, every one checked before any work. */
function settings(f: Flags, explicit: Set<string>) {
  const headSizes = HEAD_PRESETS[f['head-preset']!];
  if (!headSizes) throw new Error(`--head-preset: unknown '${f['head-preset']}', expected one of ${Object.keys(HEAD_PRESETS).join(', ')}`);
  const stageIds = intList('stages', f.stages);
  if (stageIds.length === 0 || new Set(stageIds).size !== stageIds.length || stageIds.some((s) => s !== 2 && s !== 3)) throw new Error(`--stages: expected '2,3', '2' or '3', got '${f.stages}'`);
  if (f['ema-share'] !== undefined && explicit.has('ema')) throw new Error('--ema-share: give either --ema or --ema-share, not both');
  const stage = (id: 2 | 3) => ({ id, epochs: num(`stage${id}-epochs`, f[`stage${id}-epochs`], { above: 0 }),
    lr: num(`stage${id}-lr`, f[`stage${id}-lr`], { min: 0 }), topK: num(`stage${id}-topk`, f[`stage${id}-topk`], { integer: true, min: 1, max: 4096 }) });
  return {
    seed: num('seed', f.seed, { integer: true }), batch: num('batch', f.batch, { integer: true, min: 2, max: 65536 }), headSizes,
    blocks: f.blocks === undefined ? undefined : intList('blocks', f.blocks),
    stages: stageIds.map((id) => stage(id as 2 | 3)), numLocal: num('local-views', f['local-views'], { integer: true, min: 0, max: 64 }),
    jitterP: num('jitter-p', f['jitter-p'], { min: 0, max: 1 }), jitterStrength: num('jitter-strength', f['jitter-strength'], { min: 0, max: 5 }),
    grayscaleP: num('grayscale-p', f['grayscale-p'], { min: 0, max: 1 }), globalScale: numRange('crop-scale', f['crop-scale'], { min: 0.01, max: 1 }),
    localScale: numRange('local-crop-scale', f['local-crop-scale'], { min: 0.01, max: 1 }), temperature: num('temperature', f.temperature, { min: 1e-4 }),
    lrScaling: oneOf('lr-scaling', f['lr-scaling'], LR_SCALINGS), minLr: num('min-lr', f['min-lr'], { min: 0 }),
    warmupShare: num('warmup-share', f['warmup-share'], { min: 0, max: 1 }), weightDecay: num('weight-decay', f['weight-decay'], { min: 0 }),
    headWeightDecay: num('head-weight-decay', f['head-weight-decay'], { min: 0 }),
    layerDecay: num('layer-decay', f['layer-decay'], { min: 1e-6, max: 1 }),
    freezeBlocks: num('freeze-blocks', f['freeze-blocks'], { integer: true, min: 0 }), clipGradNorm: num('clip-grad', f['clip-grad'], { min: 0 }),
    lastHeadNorm: oneOf('last-head-norm', f['last-head-norm'], ['on', 'off'] as const) === 'on',
    bnViews: oneOf('bn-views', f['bn-views'], ['joint', 'separate'] as const),
    localPairs: oneOf('local-pairs', f['local-pairs'], ['local', 'reference-code'] as const), emaMomentum: num('ema', f.ema, { min: 0, max: 0.999999 }),
    emaShare: f['ema-share'] === undefined ? undefined : num('ema-share', f['ema-share'], { min: 0.001, max: 1 }),
    knnEvery: num('knn-every', f['knn-every'], { min: 0 }),
    globalSize: f['global-size'] === undefined ? undefined : num('global-size', f['global-size'], { integer: true, min: 8, max: 4096 }),
    knn: { train: f.train!, test: f.test!, val: f.val === 'none' ? null : f.val, ...knnFlags(f) },
  };
}

/** Runs the refine pipeline with command-line style arguments; resolves to the run folder. */
export async function refine(argv: string[]): Promise<string> {
  const run = openRun(DEFINITION, argv);
  const { flags: f, runDir, resumed } = run;
  const s = settings(f, run.explicit);
  const ctx = await run.start({ batch: s.batch });
  const { dp } = ctx;

  // ---- model: the MIM encoder, one head + queue per chosen block, an EMA copy
  const exchange = exchangeMode(ctx.backend.tfBackend);
  const model = buildModel(f, s, dp, exchange);
  const { encoder, emaEncoder, headBlocks, heads, headGradients, queues, globalSize, localSize } = model;
  const { depth, embedDim } = encoder.cfg;
  console.log(`[refine] ${f.checkpoint}: ViT depth ${depth}, width ${embedDim}; heads on blocks ${headBlocks.join(', ')}; backend ${ctx.backend.tfBackend}`);

  // ---- schedule: the stages, each a schedule, an objective and the parameters it trains
  const { samplesPerEpoch, stepsPerEpoch } = await run.dataSize(f.train!, s.batch, { numClasses: s.knn.numClasses });
  using _claim = run.claim(ctx);
  const { stages, stage3 } = refineStages(s, model, stepsPerEpoch, dp, exchange);
  if (resumed) importResumed(model, resumed); // after the EMA was made: it starts as a copy of the encoder
  const knnEverySteps = Math.round(s.knnEvery * stepsPerEpoch);
  const evaluating = !f['skip-knn'] && dp.rank === 0;

  // ---- kNN of the MIM checkpoint, before anything changes (from the feature cache when it has seen this file)
  const knnOfCheckpoint = (model: VisionTransformer) => perBlockKnn(model, { ...s.knn, label: 'MIM checkpoint', cacheKey: checkpointKey(f.checkpoint!) });
  const knnBefore: KnnReport | undefined = evaluating && !resumed ? await knnOfCheckpoint(encoder) : undefined;
  const knnDuring = resumed ? readKnnCurve(runDir) : knnBefore ? [{ step: 0, report: knnBefore }] : [];

  // every rank starts from rank 0's weights and queues, with the same flags and data
  await run.shareFromRank0(ctx, [encoder.params, emaEncoder.params, ...heads.map((h) => h.params)], 'encoder, EMA and head parameters', { samplesPerEpoch, exchange, checkpoint: f.checkpoint === 'none' ? 'none' : filesFingerprint([f.checkpoint!]) });
  for (const [i, q] of queues.entries()) await run.shareState(ctx, `queue ${i}`, () => q.exportState(`queues.${i}`), (state) => q.importState((k) => state[k], `queues.${i}`, 'rank 0'));

  const skips = new SkipLog();
  const views = refinerViews({ globalSize, localSize, numLocal: s.numLocal, globalScale: s.globalScale, localScale: s.localScale, jitterP: s.jitterP, jitterStrength: s.jitterStrength, grayscaleP: s.grayscaleP });
  const { step, done } = await train({
    ...run.driver(),
    stages,
    // batches forever, epoch after epoch; a resumed run starts where the step count says; each rank its rows of every global batch
    batches: (fromStep) => epochBatches({ source: f.train!, seed: s.seed, batchSize: ctx.localBatch, stepsPerEpoch, fromStep, views, skips, rank: dp.rank, worldSize: dp.worldSize }),
    optimiser: { beta1: 0.9, beta2: 0.95, eps: 1e-8, clipGradNorm: s.clipGradNorm },
    // each rank differentiates the global batch's loss through its own rows: the shares add up
    // (before-tape: the heads' gradients are whole on every rank, and average)
    dataParallel: { collective: dp, gradients: 'sum', whole: exchange === 'before-tape' ? (g) => headGradients.has(g) : undefined },
    sinks: { lossKeys: ['loss', 'loss_global', 'loss_local'], title: 'NNA loss' },
    checkpointFiles: async (at, optimiser) => checkpointFiles({
      encoder, ema: emaEncoder, optimiser, parts: Object.fromEntries(heads.map((h, i) => [`heads.${i}.`, h.params])), state: { step: at, flags: f, headBlocks },
      extra: Object.assign({}, ...(await Promise.all(queues.map((q, i) => q.exportState(`queues.${i}`))))) }),
    // stage 2 alone leaves the encoder untouched; the EMA then equals it
    beforeFinalCheckpoint: () => void (stage3 || emaEncoder.params.copyFrom(encoder.params)),
    // the paper's training-time metric: the EMA encoder's per-block kNN during stage 3, as a curve over steps
    afterStep: async (at, stage, stageStart) => {
      if (stage.ema && knnEverySteps > 0 && evaluating && (at - stageStart) % knnEverySteps === 0 && at < stageStart + stage.schedule.steps) {
        knnDuring.push({ step: at, report: await perBlockKnn(emaEncoder, { ...s.knn, label: `refined (EMA), step ${at}` }) });
        await writeKnnCurve(runDir, knnDuring);
      }
    },
  });
  if (skips.total > 0) console.log(`[data] skipped ${skips.total} samples: ${skips.summary()}`);
  if (!done) return (run.finish(false), runDir);
  // ---- kNN of the refined (EMA) encoder, and the before/after summary; a resumed run measures the starting point now
  if (evaluating) {
    const before = knnBefore ?? (await knnOfCheckpoint(loadModel({ flag: 'checkpoint', file: f.checkpoint!, presetFlag: 'preset', preset: f.preset, seed: s.seed, imgSize: s.globalSize })));
    const knnAfter = await perBlockKnn(emaEncoder, { ...s.knn, label: 'refined (EMA)' });
    if (knnEverySteps > 0) await writeKnnCurve(runDir, [...knnDuring, { step, report: knnAfter }]);
    await writeKnnSummary(runDir, [before, knnAfter], {
      title: 'Per-block kNN top-1 before and after refinement',
      extra: { checkpoint: f.checkpoint, headBlocks, steps: stages.reduce((n, st) => n + st.schedule.steps, 0), flags: f },
    });
  }
  // the other ranks wait for rank 0's kNN here, without spinning: a rank that exits first waits in
  // MPI_Finalize, which gives up after 60 s and so would stop the job (runtime/collective.ts)
  await dp.barrier();
  run.finish(true);
  console.log(`[refine] done: ${path.join(runDir, 'checkpoint', 'encoder-ema.safetensors')}`);
  return runDir;
}

/** The encoder, its EMA copy, one head and NN queue per head block, and the view sizes; checked against the flags. */
function buildModel(f: Flags, s: Settings, dp: Collective, exchange: 'in-tape' | 'before-tape') {
  const encoder = loadModel({ flag: 'checkpoint', file: f.checkpoint!, presetFlag: 'preset', preset: f.preset, seed: s.seed, imgSize: s.globalSize });
  const { depth, embedDim, imgSize, patchSize } = encoder.cfg;
  const headBlocks = s.blocks ?? defaultHeadBlocks(depth);
  if (new Set(headBlocks).size !== headBlocks.length) throw new Error(`--blocks ${headBlocks.join(',')}: a block is named twice`);
  for (const b of headBlocks) if (b < 0 || b >= depth) throw new Error(`--blocks: block ${b} does not exist in ${f.checkpoint} (blocks 0..${depth - 1})`);
  if (s.freezeBlocks > depth) throw new Error(`--freeze-blocks ${s.freezeBlocks}: ${f.checkpoint} has ${depth} blocks`);
  // with several ranks the heads' BatchNorm normalises over the global batch: its moments
  // all-reduced in the tape, or (before-tape) the heads see the whole global batch on every rank
  const heads = headBlocks.map((_, i) => new NnaHead(embedDim, s.headSizes, encoder.cfg.act, s.seed * 100 + i, dp.worldSize > 1 && exchange === 'in-tape' ? dp : undefined));
  const headGradients = new Set(heads.flatMap((h) => h.params.names().map((n) => h.params.get(n).name)));
  const queueSize = num('queue-size', f['queue-size'], { integer: true, min: 1, bytesEach: 4 * s.headSizes.out * headBlocks.length });
  const queues = headBlocks.map((_, i) => new NnQueue(queueSize, s.headSizes.out, s.seed * 100 + 50 + i));
  const emaEncoder = new VisionTransformer(encoder.cfg);
  const globalSize = imgSize;
  const localSize = f['local-size'] ? num('local-size', f['local-size'], { integer: true, min: patchSize, max: imgSize }) : Math.max(patchSize, Math.round(imgSize / 2 / patchSize) * patchSize);
  return { encoder, emaEncoder, headBlocks, heads, headGradients, queues, globalSize, localSize };
}

/** Stage 2 trains the heads on the frozen encoder; stage 3 the encoder (layer-wise lr decay, first blocks frozen) and heads, the EMA encoder following. */
function refineStages(s: Settings, m: ReturnType<typeof buildModel>, stepsPerEpoch: number, dp: Collective, exchange: 'in-tape' | 'before-tape') {
  const { encoder, emaEncoder, headBlocks, heads, queues, globalSize, localSize } = m;
  const stageSteps = (epochs: number) => Math.max(1, Math.round(epochs * stepsPerEpoch));
  const stage3 = s.stages.find((st) => st.id === 3);
  // the horizon 1/(1-m) as a share of stage 3; under one step: no EMA
  const ema = new Ema(emaEncoder.params, encoder.params, s.emaShare === undefined ? s.emaMomentum : Math.max(0, 1 - 1 / (s.emaShare * stageSteps(stage3?.epochs ?? 0))));
  const headGroups = () => heads.flatMap((h, i) => h.params.groups(`heads.${i}.`, s.headWeightDecay));
  const encoderGroups = () => encoder.paramGroups('encoder.', { weightDecay: s.weightDecay, layerDecay: s.layerDecay, frozenLayers: s.freezeBlocks });
  const stages: Stage[] = s.stages.map(({ id, epochs, lr, topK }) => {
    const steps = stageSteps(epochs);
    const trainEncoder = id === 3;
    return {
      label:
        `stage ${id}: top-k ${topK}, ${trainEncoder ? `encoder + heads, EMA ${+ema.momentum.toPrecision(6)} (horizon ${+(1 / (1 - ema.momentum)).toPrecision(4)} steps)` : 'heads only (encoder frozen)'}, ` +
        `peak lr ${s.lrScaling === 'linear' ? `--stage${id}-lr ${lr} x batch ${s.batch} / 256 (--lr-scaling linear)` : `--stage${id}-lr`}`,
      schedule: { steps, peakLr: scaledLr(lr, s.batch, s.lrScaling), minLr: s.minLr, warmupSteps: Math.round(s.warmupShare * steps) },
      objective: nnaRefineObjective({ encoder, headBlocks, heads, queues, globalSize, localSize, numLocal: s.numLocal, topK, temperature: s.temperature, trainEncoder, seed: s.seed, collective: dp, lastHeadNorm: s.lastHeadNorm, bnViews: s.bnViews, localPairs: s.localPairs, exchange }),
      params: () => (trainEncoder ? [...headGroups(), ...encoderGroups()] : headGroups()),
      ema: trainEncoder ? ema : undefined,
      values: { stage: id },
    };
  });
  return { stages, stage3 };
}

function importResumed(m: ReturnType<typeof buildModel>, resumed: Resumed<Flags>): void {
  const sub = (prefix: string) => withoutPrefix(resumed.tensors, prefix);
  m.encoder.params.importTimm(sub('encoder.'), resumed.file);
  m.emaEncoder.params.importTimm(sub('ema.'), resumed.file);
  m.heads.forEach((h, i) => h.params.importTimm(sub(`heads.${i}.`), resumed.file));
  m.queues.forEach((q, i) => q.importState((k) => resumed.tensors.get(k), `queues.${i}`, resumed.file));
}

if (require.main === module) runMain(() => refine(process.argv.slice(2)).then(() => undefined));

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
import { initBackend } from '../runtime/backend';
import { localBatchSize, openCollective, pinLocalGpu } from '../runtime/collective';
import { broadcastHostTensors, broadcastVariables, checkSameOnAllRanks, exchangeMode, filesFingerprint } from '../runtime/data-parallel';
import { explicitFlags, intList, num, numRange, oneOf, parseFlags, runMain } from '../runtime/cli';
import { loadEncoder, withoutPrefix } from '../runtime/checkpoint';
import { checkOutDir } from '../runtime/out-dir';
import { lockRunDir } from '../runtime/run-lock';
import { vitPresetFallback, vitPresetFlag } from '../runtime/vit-flag';
import { VisionTransformer } from '../models/vit';
import { HEAD_PRESETS, NnaHead } from '../models/nna-head';
import { NnQueue } from '../models/nn-queue';
import { Ema } from '../models/ema';
import { nnaRefineObjective } from '../objectives/nna-refine';
import { refinerViews } from '../operators/multi-view';
import { epochBatches, SkipLog } from '../datapath/batches';
import { countSamples } from '../sources/count';
import { Stage, train } from '../train/driver';
import { checkpointFiles } from '../train/checkpoint-files';
import { DRIVER_FLAGS, driverFlags, LR_SCALINGS, scaledLr } from '../train/flags';
import { resumeRun } from '../train/resume';
import { checkpointKey } from '../eval/feature-cache';
import { perBlockKnn, writeKnnSummary, KnnReport } from '../eval/per-block-knn';
import { writeChart } from '../sinks/charts';
import { writeJsonReport } from '../eval/report';

const USAGE = 'MIM-Refiner: refine a MIM-pretrained ViT with NNA heads on intermediate blocks.\n  npx ts-node pipelines/refine.ts [options]';
const FLAGS = {
  checkpoint: { description: 'encoder to refine (safetensors, timm names)', default: 'checkpoints/mae-vit-micro-p4/encoder.safetensors' },
  train: { description: 'training images: tar shards glob, image folder or CIFAR .bin', default: 'data/cifar10-mini/train-*.tar.gz' },
  test: { description: 'held-out images for the kNN evaluation before and after', default: 'data/cifar10-mini/test-*.tar.gz' },
  out: { description: 'run directory', default: 'runs/refine' },
  preset: vitPresetFlag('--checkpoint'),
  resume: { description: 'continue the run in this directory from its checkpoint' },
  blocks: { description: 'head blocks, 0-based, comma-separated (default: last block + the rest of the last third, the reference\'s rule; 3,4,5 scored 41.05 validation kNN against 4,5\'s 41.55, seed 0; README)' },
  'head-preset': { description: `head sizes: ${Object.keys(HEAD_PRESETS).join(', ')} (reference base for ViT-L/H)`, default: 'micro' },
  'queue-size': { description: 'NN queue entries per head (reference 65536, 5% of ImageNet-1K)', default: '4096' },
  stages: { description: "stages to run: '2,3', '2' (heads warm-up) or '3' (refine)", default: '2,3' },
  'stage2-epochs': { description: 'stage 2 length in epochs (fractions allowed; reference 20 of ImageNet-1K)', default: '0.3' },
  'stage3-epochs': { description: 'stage 3 length in epochs (fractions allowed; reference 30 of ImageNet-1K, 20 for some models; 2.2 scored 42.32 ± 0.33 validation kNN against 1.1\'s 41.35 ± 0.48 over 3 seeds at twice the time: 1.1 is the demonstration\'s budget; README)', default: '1.1' },
  batch: { description: 'batch size (samples; each gives 2 global + local views); under mpirun the global batch, split over the ranks (reference 1024, 512 for ViT-H)', default: '32' },
  'lr2': { description: 'stage 2 peak lr (heads); with --lr-scaling linear the lr of a batch of 256 (reference 2e-4, scaled linearly)', default: '1e-3' },
  'lr3': { description: 'stage 3 peak lr; with --lr-scaling linear the lr of a batch of 256 (reference 4e-4, scaled linearly; validation kNN, seed 0: 41.55 at 1e-3, 39.30 at 5e-4 and at 2e-3; README)', default: '1e-3' },
  'lr-scaling': {
    description:
      "'none': --lr2/--lr3 are the peak lrs; 'linear': peak = lr x batch / 256, batch the global batch (reference: linear; its --lr2 2e-4 / --lr3 4e-4 give peaks 8e-4 / 1.6e-3 at its batch 1024, 2.5e-5 / 5e-5 at batch 32, which barely moves the MAE in the bundled run: validation kNN 38.70 against 41.55 unscaled, seed 0; README)",
    default: 'none',
  },
  'min-lr': { description: 'lr at the end of each cosine', default: '1e-6' },
  'warmup-share': { description: 'share of each stage spent in linear warm-up (reference 4 epochs: 0.2 of stage 2, 0.13 of a 30-epoch stage 3; 0.2 scored 40.85 validation kNN against 0.1\'s 41.55, seed 0; README)', default: '0.1' },
  'layer-decay': { description: 'layer-wise lr decay over encoder blocks (reference 0.65 over 24 blocks; 0.65 scored 40.85 validation kNN against 0.8\'s 41.55, seed 0; README)', default: '0.8' },
  'freeze-blocks': { description: 'stage 3 keeps the embeddings and the first N blocks frozen (no backward through them; reference 0: all train, which scored 38.05 validation kNN against 2\'s 41.55, seed 0; README)', default: '2' },
  'encoder-wd': { description: 'encoder weight decay', default: '0.05' },
  'head-wd': { description: 'head weight decay', default: '1e-5' },
  'clip-grad': { description: 'clip the global gradient norm (0: off)', default: '0' },
  'topk2': { description: 'NN top-k in stage 2', default: '1' },
  'topk3': { description: 'NN top-k in stage 3 (reference 20 with a 65k queue on ImageNet; 1 suits a short run on weak features: validation kNN 39.65 with 20 against 41.55, seed 0; README)', default: '1' },
  temperature: { description: 'NNA temperature', default: '0.2' },
  ema: {
    description:
      'EMA momentum m of the encoder in stage 3; its horizon is 1/(1-m) steps: 0.8 is 5 steps, in effect no EMA; 0.99 is 100 steps, ~30% of the bundled default stage 3 (343 steps); reference 0.9999, 10,000 steps, 27% of its 37.5k-step ViT-L/16 stage 3 (30 epochs, batch 1024), 40% of its 20-epoch runs; validation kNN over 3 seeds: 0.99 41.10 against 0.8 41.35 (README)',
    default: '0.8',
  },
  'ema-share': { description: "the EMA's horizon as a share of stage 3's steps instead of --ema: m = 1 - 1/(share x steps) (reference ~0.27-0.4); give it or --ema, not both" },
  'last-head-norm': {
    description: "'on': the head on the last block takes its CLS token after the encoder's final LayerNorm (norm), as the reference's main head, which pools the encoder's normed output; 'off': the raw block output, as the other heads (reference: on; validation kNN over 3 seeds 41.47 ± 0.87 on against 41.35 ± 0.48 off, a tie; README)",
    default: 'off',
  },
  'bn-views': {
    description: "'joint': each head's BatchNorms normalise the global and local views of a step as one batch, as the reference (all views concatenated before the heads); 'separate': the global views and the local views apart (reference: joint; validation kNN 39.90 joint against 41.55 separate, seed 0; README)",
    default: 'separate',
  },
  'local-pairs': {
    description:
      "'local': each global view's projection pairs with every local view's prediction, as the paper; 'reference-code': as the reference code's loop indexes them (nnclr_loss.py, predicted[:, ii] for ii < number of local views): the first views, i.e. each global view once with itself and with the other, then local views 0..L-3, the last 2 local views in no pair (reference paper: local)",
    default: 'local',
  },
  'global-size': { description: 'global view size (default: the model image size)' },
  'local-size': { description: 'local view size (default: half the global size)' },
  'local-views': { description: 'local views per sample (reference 10: validation kNN 41.82 ± 0.15 against 6\'s 41.35 ± 0.48 over 3 seeds, under the README\'s bar for a change, at 1.6 times the step time)', default: '6' },
  'jitter-p': { description: 'colour-jitter probability of every view (reference 0.8; 1.0 with --grayscale-p 0.7: validation kNN 41.35 ± 0.48 against the reference pair\'s 40.67 ± 0.13 over 3 seeds, ahead in each; README)', default: '1.0' },
  'jitter-strength': { description: 'colour-jitter strength, a multiple of the reference (brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1)', default: '1' },
  'grayscale-p': { description: 'grayscale probability of every view (reference 0.2; see --jitter-p)', default: '0.7' },
  'global-scale': { description: "global crops' RandomResizedCrop area range lo,hi (reference 0.25,1)", default: '0.25,1' },
  'local-scale': {
    description: "local crops' RandomResizedCrop area range lo,hi (reference 0.05,0.25, for 96 px crops of 224 px images whose object fills part of the frame; on 32 px CIFAR images that leaves 7-16 px scraps)",
    default: '0.14,0.5',
  },
  seed: { description: 'seed of heads, queues, augmentation, order and NN picks', default: '0' },
  'knn-train-limit': { description: 'train images for the before/after kNN (0: all)', default: '5000' },
  'knn-test-limit': { description: 'test images for the before/after kNN (0: all)', default: '2000' },
  'knn-val-limit': { description: 'validation images for the before/after kNN (0: as --knn-test-limit, so a small test limit also shrinks validation unless this is set)', default: '0' },
  val: { description: "validation images for the kNN's block choice, training images held out from training (default: the val-* shards beside --train; 'none': no validation)" },
  'skip-knn': { description: 'skip the kNN evaluations', boolean: true },
  'knn-every': { description: 'also track the EMA encoder\'s per-block kNN every this many epochs of stage 3 (0: off); knn-during.json + .png', default: '0' },
  ...DRIVER_FLAGS,
} as const;

/** Flags a resumed run keeps from its checkpoint: they define shapes, data and its order. */
const FIXED_ON_RESUME = [
  'checkpoint', 'preset', 'train', 'blocks', 'head-preset', 'queue-size', 'stages', 'batch', 'seed', 'local-views', 'global-size', 'local-size',
  'jitter-p', 'jitter-strength', 'grayscale-p', 'global-scale', 'local-scale', 'freeze-blocks', 'last-head-norm', 'bn-views', 'local-pairs',
];

/** Runs the refine pipeline with command-line style arguments; resolves to the run directory. */
export async function refine(argv: string[]): Promise<string> {
  const flags = parseFlags(USAGE, FLAGS, argv);
  const runDir = flags.resume ?? flags.out!;
  if (!flags.resume) checkOutDir(runDir); // a resumed run's folder is checked by reading its checkpoint
  const resumed = flags.resume ? resumeRun('refine', runDir, { usage: USAGE, spec: FLAGS, flags, argv }, FIXED_ON_RESUME) : undefined;
  const f = resumed?.flags ?? flags;
  const seed = num('seed', f.seed, { integer: true });
  const batch = num('batch', f.batch, { integer: true, min: 2, max: 65536 });
  const headSizes = HEAD_PRESETS[f['head-preset']!];
  if (!headSizes) throw new Error(`--head-preset: unknown '${f['head-preset']}', expected one of ${Object.keys(HEAD_PRESETS).join(', ')}`);
  const stageIds = intList('stages', f.stages);
  if (stageIds.length === 0 || stageIds.some((s) => s !== 2 && s !== 3)) throw new Error(`--stages: expected '2,3', '2' or '3', got '${f.stages}'`);
  const numLocal = num('local-views', f['local-views'], { integer: true, min: 0, max: 64 });
  const jitterP = num('jitter-p', f['jitter-p'], { min: 0, max: 1 });
  const jitterStrength = num('jitter-strength', f['jitter-strength'], { min: 0, max: 5 });
  const grayscaleP = num('grayscale-p', f['grayscale-p'], { min: 0, max: 1 });
  const globalScale = numRange('global-scale', f['global-scale'], { min: 0.01, max: 1 });
  const localScale = numRange('local-scale', f['local-scale'], { min: 0.01, max: 1 });
  const temperature = num('temperature', f.temperature, { min: 1e-4 });
  const lrScaling = oneOf('lr-scaling', f['lr-scaling'], LR_SCALINGS);
  const lastHeadNorm = oneOf('last-head-norm', f['last-head-norm'], ['on', 'off'] as const) === 'on';
  const bnViews = oneOf('bn-views', f['bn-views'], ['joint', 'separate'] as const);
  const localPairs = oneOf('local-pairs', f['local-pairs'], ['local', 'reference-code'] as const);
  const emaMomentum = num('ema', f.ema, { min: 0, max: 0.999999 });
  const emaShare = f['ema-share'] === undefined ? undefined : num('ema-share', f['ema-share'], { min: 0.001, max: 1 });
  if (emaShare !== undefined && explicitFlags(USAGE, FLAGS, argv).has('ema')) throw new Error('--ema-share: give either --ema or --ema-share, not both');
  const driver = driverFlags(f);

  // ---- data parallelism: a world of one unless started by an MPI launcher (README, MPI section)
  pinLocalGpu();
  const dp = openCollective();
  const localBatch = localBatchSize(batch, dp.worldSize);

  // ---- model: the MIM encoder, one head + queue per chosen block, an EMA copy
  const backend = await initBackend();
  const encoder = loadEncoder(f.checkpoint!, vitPresetFallback('preset', f.preset));
  const { depth, embedDim, imgSize } = encoder.cfg;
  const headBlocks = f.blocks ? intList('blocks', f.blocks) : defaultHeadBlocks(depth);
  for (const b of headBlocks) {
    if (!Number.isInteger(b) || b < 0 || b >= depth) throw new Error(`--blocks: block ${b} does not exist in ${f.checkpoint} (blocks 0..${depth - 1})`);
  }
  // with several ranks the heads' BatchNorm normalises over the global batch: its moments
  // all-reduced in the tape, or (before-tape) the heads see the whole global batch on every rank
  const exchange = exchangeMode(backend.tfBackend);
  const heads = headBlocks.map((_, i) => new NnaHead(embedDim, headSizes, encoder.cfg.act, seed * 100 + i, dp.worldSize > 1 && exchange === 'in-tape' ? dp : undefined));
  const headGradients = new Set(heads.flatMap((h) => h.params.names().map((n) => h.params.get(n).name)));
  const queueSize = num('queue-size', f['queue-size'], { integer: true, min: 1, bytesEach: 4 * headSizes.out * headBlocks.length });
  const queues = headBlocks.map((_, i) => new NnQueue(queueSize, headSizes.out, seed * 100 + 50 + i));
  const emaEncoder = new VisionTransformer(encoder.cfg);
  const globalSize = f['global-size'] ? num('global-size', f['global-size'], { integer: true, min: imgSize, max: imgSize }) : imgSize;
  const localSize = f['local-size'] ? num('local-size', f['local-size'], { integer: true, min: encoder.cfg.patchSize, max: imgSize }) : Math.max(encoder.cfg.patchSize, Math.round(imgSize / 2 / encoder.cfg.patchSize) * encoder.cfg.patchSize);
  if (globalSize !== imgSize) throw new Error(`--global-size ${globalSize}: the encoder takes ${imgSize} px images`);
  console.log(`[refine] ${f.checkpoint}: ViT depth ${depth}, width ${embedDim}; heads on blocks ${headBlocks.join(', ')}; backend ${backend.tfBackend}`);

  // ---- schedule
  const samplesPerEpoch = await countSamples(f.train!);
  const stepsPerEpoch = Math.floor(samplesPerEpoch / batch);
  if (stepsPerEpoch < 1) throw new Error(`${f.train}: ${samplesPerEpoch} samples, fewer than one batch of ${batch}`);
  const minLr = num('min-lr', f['min-lr'], { min: 0 });
  const warmupShare = num('warmup-share', f['warmup-share'], { min: 0, max: 1 });
  const knnEverySteps = Math.round(num('knn-every', f['knn-every'], { min: 0 }) * stepsPerEpoch);
  // Stage 2: heads only, the encoder outside the tape. Stage 3: encoder (layer-wise lr decay,
  // first blocks frozen) and heads, with the EMA encoder following.
  const stageSteps = (id: number) => Math.max(1, Math.round(num(`stage${id}-epochs`, f[`stage${id}-epochs` as 'stage2-epochs'], { min: 0 }) * stepsPerEpoch));
  // the horizon 1/(1-m) as a share of stage 3; under one step: no EMA
  const ema = new Ema(emaEncoder.params, encoder.params, emaShare === undefined ? emaMomentum : Math.max(0, 1 - 1 / (emaShare * stageSteps(3))));
  const headGroups = () => heads.flatMap((h, i) => h.params.groups(`heads.${i}.`, num('head-wd', f['head-wd'])));
  const stages: Stage[] = stageIds.map((id) => {
    const steps = stageSteps(id);
    const lrFlag = num(`lr${id}`, f[`lr${id}` as 'lr2'], { min: 0 });
    const peakLr = scaledLr(lrFlag, batch, lrScaling);
    const topK = num(`topk${id}`, f[`topk${id}` as 'topk2'], { integer: true, min: 1 });
    const trainEncoder = id === 3;
    const encoderGroups = () =>
      encoder.paramGroups('encoder.', {
        weightDecay: num('encoder-wd', f['encoder-wd'], { min: 0 }),
        layerDecay: num('layer-decay', f['layer-decay'], { min: 0, max: 1 }),
        frozenLayers: num('freeze-blocks', f['freeze-blocks'], { integer: true, min: 0, max: depth }),
      });
    return {
      label:
        `stage ${id}: top-k ${topK}, ${trainEncoder ? `encoder + heads, EMA ${+ema.momentum.toPrecision(6)} (horizon ${+(1 / (1 - ema.momentum)).toPrecision(4)} steps)` : 'heads only (encoder frozen)'}, ` +
        `peak lr ${lrScaling === 'linear' ? `--lr${id} ${lrFlag} x batch ${batch} / 256 (--lr-scaling linear)` : `--lr${id}`}`,
      schedule: { steps, peakLr, minLr, warmupSteps: Math.round(warmupShare * steps) },
      objective: nnaRefineObjective({ encoder, headBlocks, heads, queues, globalSize, localSize, numLocal, topK, temperature, trainEncoder, seed, collective: dp, lastHeadNorm, bnViews, localPairs, exchange }),
      params: () => (trainEncoder ? [...headGroups(), ...encoderGroups()] : headGroups()),
      ema: trainEncoder ? ema : undefined,
      values: { stage: id },
    };
  });
  const totalSteps = stages.reduce((s, st) => s + st.schedule.steps, 0);

  // ---- kNN of the MIM checkpoint, before anything changes
  const knnOpts = {
    train: f.train!,
    test: f.test!,
    trainLimit: num('knn-train-limit', f['knn-train-limit'], { integer: true, min: 0 }) || undefined,
    testLimit: num('knn-test-limit', f['knn-test-limit'], { integer: true, min: 0 }) || undefined,
    valLimit: num('knn-val-limit', f['knn-val-limit'], { integer: true, min: 0 }) || undefined,
    val: f.val === 'none' ? null : f.val,
  };
  // one run at a time in a run directory; every file of the run is rank 0's
  using _runLock = dp.rank === 0 ? lockRunDir(runDir) : undefined;
  // the starting checkpoint's features come from the feature cache when it has seen this file
  const knnOfCheckpoint = (model: VisionTransformer) => perBlockKnn(model, { ...knnOpts, label: 'MIM checkpoint', cacheKey: checkpointKey(f.checkpoint!) });
  const knnBefore: KnnReport | undefined = f['skip-knn'] || resumed || dp.rank !== 0 ? undefined : await knnOfCheckpoint(encoder);
  // kNN tracked during stage 3 (the paper's training-time metric), as a curve over steps
  const duringFile = path.join(runDir, 'knn-during.json');
  const knnDuring: { step: number; report: KnnReport }[] = resumed && fs.existsSync(duringFile) ? JSON.parse(fs.readFileSync(duringFile, 'utf8')).points : knnBefore ? [{ step: 0, report: knnBefore }] : [];
  const trackKnn = async (step: number) => {
    knnDuring.push({ step, report: await perBlockKnn(emaEncoder, { ...knnOpts, label: `refined (EMA), step ${step}` }) });
    await writeKnnCurve(runDir, knnDuring);
  };

  // ---- resume
  if (resumed) {
    const sub = (prefix: string) => withoutPrefix(resumed.tensors, prefix);
    encoder.params.importTimm(sub('encoder.'), resumed.file);
    emaEncoder.params.importTimm(sub('ema.'), resumed.file);
    heads.forEach((h, i) => h.params.importTimm(sub(`heads.${i}.`), resumed.file));
    queues.forEach((q, i) => q.importState((k) => resumed.tensors.get(k), `queues.${i}`, resumed.file));
  }
  if (dp.worldSize > 1) {
    // every rank starts from rank 0's weights and queues, with the same flags and data
    await checkSameOnAllRanks(dp, { flags: f, step: resumed?.step ?? 0, samplesPerEpoch, checkpoint: filesFingerprint([f.checkpoint!]), exchange });
    const variables = [encoder.params, emaEncoder.params, ...heads.map((h) => h.params)].flatMap((ps) => ps.names().map((n) => [n, ps.get(n)] as [string, tf.Variable]));
    await broadcastVariables(dp, variables, 'encoder, EMA and head parameters');
    for (const [i, q] of queues.entries()) {
      const state = await q.exportState(`queues.${i}`);
      await broadcastHostTensors(dp, state, `queue ${i}`);
      q.importState((k) => state[k], `queues.${i}`, 'rank 0');
    }
    console.log(`[refine] rank ${dp.rank} of ${dp.worldSize}: ${localBatch} of each global batch of ${batch}; rows exchanged ${exchange}`);
  }

  const skips = new SkipLog();
  const views = refinerViews({ globalSize, localSize, numLocal, globalScale, localScale, jitterP, jitterStrength, grayscaleP });
  const { step, done } = await train({
    name: 'refine',
    script: 'pipelines/refine.ts',
    runDir,
    stages,
    resume: resumed,
    // batches forever, epoch after epoch; a resumed run starts where the step count says; each rank its rows of every global batch
    batches: (fromStep) => epochBatches({ source: f.train!, seed, batchSize: localBatch, stepsPerEpoch, fromStep, views, skips, rank: dp.rank, worldSize: dp.worldSize }),
    optimiser: { beta1: 0.9, beta2: 0.95, eps: 1e-8, clipGradNorm: num('clip-grad', f['clip-grad'], { min: 0 }) },
    ...driver,
    // each rank differentiates the global batch's loss through its own rows: the shares add up
    // (before-tape: the heads' gradients are whole on every rank, and average)
    dataParallel: { collective: dp, gradients: 'sum', whole: exchange === 'before-tape' ? (g) => headGradients.has(g) : undefined },
    sinks: { lossKeys: ['loss', 'loss_global', 'loss_local'], title: 'NNA loss' },
    checkpointFiles: async (at, optimiser) =>
      checkpointFiles({
        encoder, ema: emaEncoder, optimiser,
        parts: Object.fromEntries(heads.map((h, i) => [`heads.${i}.`, h.params])),
        extra: Object.assign({}, ...(await Promise.all(queues.map((q, i) => q.exportState(`queues.${i}`))))),
        state: { step: at, flags: f, headBlocks },
      }),
    // stage 2 alone leaves the encoder untouched; the EMA then equals it
    beforeFinalCheckpoint: () => {
      if (!stageIds.includes(3)) emaEncoder.params.copyFrom(encoder.params);
    },
    afterStep: async (at, stage, stageStart) => {
      const stageEnd = stageStart + stage.schedule.steps;
      if (stage.ema && knnEverySteps > 0 && !f['skip-knn'] && dp.rank === 0 && (at - stageStart) % knnEverySteps === 0 && at < stageEnd) await trackKnn(at);
    },
  });
  if (skips.total > 0) console.log(`[data] skipped ${skips.total} samples: ${JSON.stringify(Object.fromEntries(skips.counts))}`);
  if (!done) return runDir;

  // ---- kNN of the refined (EMA) encoder, and the before/after summary
  if (!f['skip-knn'] && dp.rank === 0) {
    // a resumed run measures the starting point at the end, from the original checkpoint
    const before = knnBefore ?? (await knnOfCheckpoint(loadEncoder(f.checkpoint!, vitPresetFallback('preset', f.preset))));
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
  // the other ranks wait for rank 0's kNN here, without spinning: a rank that exits first waits in
  // MPI_Finalize, which gives up after 60 s and so would stop the job (runtime/collective.ts)
  await dp.barrier();
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

/** The last block plus the rest of the last third of the blocks (reference: 16..23 of 24). */
export function defaultHeadBlocks(depth: number): number[] {
  const first = Math.max(0, depth - Math.ceil(depth / 3));
  return Array.from({ length: depth - first }, (_, i) => first + i);
}

if (require.main === module) runMain(() => refine(process.argv.slice(2)).then(() => undefined));

/**
 * MAE pretraining (He et al. 2022): random 75% of patches masked per sample, the encoder sees
 * the rest, a light decoder reconstructs per-patch normalised pixels, MSE on masked patches.
 * AdamW (0.9, 0.95), wd 0.05, lr = --lr x batch / 256, linear warm-up then cosine.
 *
 *   npx ts-node pipelines/pretrain-mae.ts --epochs 100 --out runs/mae
 *   npx ts-node pipelines/pretrain-mae.ts --resume runs/mae   # continues from runs/mae/checkpoint
 */
import * as path from 'node:path';
import { intList, num, numRange, oneOf, runMain } from '../runtime/cli';
import { withoutPrefix, writeEncoder } from '../runtime/checkpoint';
import { VisionTransformer, VitConfig } from '../models/vit';
import { MaeDecoder } from '../models/mae';
import { maeObjective } from '../objectives/mae';
import { epochBatches, SkipLog } from '../datapath/batches';
import { maeViews } from '../operators/multi-view';
import { train } from '../train/driver';
import { checkpointFiles } from '../train/checkpoint-files';
import { dataFlags, evalFlags, knnFlags, LR_SCALINGS, optimiserFlags, runFlags, scaledLr, TRAINING_RUN_FLAGS } from '../train/flags';
import { perBlockKnn, writeKnnSummary } from '../eval/per-block-knn';
import { openRun } from '../train/run';
import { vitPresetFallback } from '../runtime/vit-flag';

const FLAGS = {
  ...runFlags('mae'),
  ...TRAINING_RUN_FLAGS,
  ...dataFlags(),
  preset: { description: 'ViT size to pretrain from scratch (sizes: docs/flags.md)', default: 'vit-micro-p4' },
  act: { description: "MLP activation: 'gelu' (exact, timm's) or 'gelu_tanh'", default: 'gelu' },
  'decoder-dim': { description: 'decoder width (4-8192)', default: '64' },
  'decoder-depth': { description: 'decoder blocks (1-64)', default: '2' },
  'decoder-heads': { description: 'decoder attention heads (divides --decoder-dim)', default: '2' },
  'mask-ratio': { description: 'share of patches masked per sample (0.01-0.99)', default: '0.75' },
  epochs: { description: 'epochs over the training data (an integer >= 1)', default: '100' },
  ...optimiserFlags({ batch: '64', lr: '1.5e-4', lrScaling: 'linear', weightDecay: '0.05', warmupShare: '0.05' }),
  'crop-scale': { description: 'RandomResizedCrop area range lo,hi', default: '0.2,1.0' },
  seed: { description: 'seed of init, masking, augmentation and order', default: '0' },
  'snapshot-epochs': { description: 'comma-separated epochs after which to keep a copy of the encoder', default: '' },
  ...evalFlags({ trainLimit: '5000', testLimit: '2000', skip: true }),
} as const;

export const DEFINITION = {
  name: 'mae',
  script: 'pipelines/pretrain-mae.ts',
  usage: 'MAE pretraining of a ViT.\n  npx ts-node pipelines/pretrain-mae.ts [options]',
  flags: FLAGS,
  fixedOnResume: ['train', 'preset', 'act', 'decoder-dim', 'decoder-depth', 'decoder-heads', 'mask-ratio', 'batch', 'crop-scale', 'seed'],
};

/** Runs MAE pretraining with command-line style arguments; resolves to the run folder. */
export async function pretrainMae(argv: string[]): Promise<string> {
  const run = openRun(DEFINITION, argv);
  const { flags: f, runDir, resumed } = run;
  const act = oneOf('act', f.act, ['gelu', 'gelu_tanh'] as const);
  const cfg: VitConfig = { ...vitPresetFallback('preset', f.preset)!, act };
  const seed = num('seed', f.seed, { integer: true });
  const batch = num('batch', f.batch, { integer: true, min: 2, max: 65536 });
  const epochs = num('epochs', f.epochs, { integer: true, min: 1 });
  const maskRatio = num('mask-ratio', f['mask-ratio'], { min: 0.01, max: 0.99 });
  const cropScale = numRange('crop-scale', f['crop-scale'], { min: 0.01, max: 1 });
  const snapshotEpochs = new Set(intList('snapshot-epochs', f['snapshot-epochs']));
  const decoderCfg = {
    dim: num('decoder-dim', f['decoder-dim'], { integer: true, min: 4, max: 8192 }),
    depth: num('decoder-depth', f['decoder-depth'], { integer: true, min: 1, max: 64 }),
    numHeads: num('decoder-heads', f['decoder-heads'], { integer: true, min: 1, max: 64 }),
  };
  if (decoderCfg.dim % decoderCfg.numHeads !== 0) throw new Error(`--decoder-heads ${decoderCfg.numHeads}: must divide --decoder-dim ${decoderCfg.dim}`);
  const lr = num('lr', f.lr, { min: 0 });
  const lrScaling = oneOf('lr-scaling', f['lr-scaling'], LR_SCALINGS);
  const minLr = num('min-lr', f['min-lr'], { min: 0 });
  const warmupShare = num('warmup-share', f['warmup-share'], { min: 0, max: 1 });
  const wd = num('weight-decay', f['weight-decay'], { min: 0 });
  const clipGradNorm = num('clip-grad', f['clip-grad'], { min: 0 });
  const knn = { train: f.train!, test: f.test!, val: f.val === 'none' ? null : f.val, ...knnFlags(f) };

  const ctx = await run.start({ batch });
  using _claim = run.claim(ctx);
  const { dp } = ctx;
  // MAE reconstructs pixels: labels are never read, so unlabelled shards train as they are
  const { samplesPerEpoch, stepsPerEpoch } = await run.dataSize(f.train!, batch, { labels: 'ignored' });
  const totalSteps = epochs * stepsPerEpoch;
  const peakLr = scaledLr(lr, batch, lrScaling);

  const encoder = new VisionTransformer(cfg, seed);
  const decoder = new MaeDecoder(encoder, decoderCfg, seed + 1);
  if (resumed) {
    encoder.params.importTimm(withoutPrefix(resumed.tensors, 'encoder.'), resumed.file);
    decoder.params.importTimm(withoutPrefix(resumed.tensors, 'decoder.'), resumed.file);
  }
  // every rank starts from rank 0's weights, with the same flags and data
  await run.shareFromRank0(ctx, [encoder.params, decoder.params], 'encoder and decoder parameters', { samplesPerEpoch });

  console.log(`[mae] ${samplesPerEpoch} samples/epoch, ${stepsPerEpoch} steps/epoch, ${totalSteps} steps, peak lr ${peakLr.toExponential(2)}, backend ${ctx.backend.tfBackend}`);
  const skips = new SkipLog();
  const views = maeViews(cfg.imgSize, cropScale);
  const { done } = await train({
    ...run.driver(),
    stages: [
      {
        label: 'MAE',
        schedule: { steps: totalSteps, peakLr, minLr, warmupSteps: Math.round(warmupShare * totalSteps) },
        objective: maeObjective({ encoder, decoder, maskRatio, seed, collective: dp }),
        params: () => [...encoder.paramGroups('', { weightDecay: wd }), ...decoder.params.groups('decoder:', wd)],
      },
    ],
    // a resumed run starts mid-epoch with the samples of the steps not yet taken; each rank its rows of every global batch
    batches: (fromStep) => epochBatches({ source: f.train!, seed, batchSize: ctx.localBatch, stepsPerEpoch, fromStep, views, skips, rank: dp.rank, worldSize: dp.worldSize, labels: 'ignored' }),
    optimiser: { beta1: 0.9, beta2: 0.95, eps: 1e-8, clipGradNorm },
    // each rank's loss is the mean over its own rows: the ranks' gradients (and losses) average
    dataParallel: { collective: dp, gradients: 'mean' },
    sinks: { lossKeys: ['loss'], title: 'MAE reconstruction loss' },
    checkpointFiles: (at, optimiser) => checkpointFiles({ encoder, parts: { 'decoder.': decoder.params }, optimiser, state: { step: at, flags: f } }),
    afterStep: async (at) => {
      if (dp.rank === 0 && at % stepsPerEpoch === 0 && snapshotEpochs.has(at / stepsPerEpoch)) {
        // the epoch's encoder, exported now (the latest checkpoint may be older)
        await writeEncoder(path.join(runDir, `encoder-epoch${at / stepsPerEpoch}.safetensors`), encoder);
      }
    },
  });
  if (skips.total > 0) console.log(`[data] skipped ${skips.total} samples: ${skips.summary()}`);
  if (!done) return (run.finish(false), runDir);
  // ---- per-block kNN of the pretrained encoder (validation picks the block, test is read once)
  if (!f['skip-knn'] && dp.rank === 0) {
    const report = await perBlockKnn(encoder, { ...knn, label: 'MAE encoder' });
    await writeKnnSummary(runDir, [report], { title: 'Per-block kNN top-1 of the MAE encoder', extra: { steps: totalSteps, flags: f } });
  }
  // the other ranks wait for rank 0's kNN without spinning (runtime/collective.ts: MPI_Finalize gives up after 60 s)
  await dp.barrier();
  run.finish(true);
  console.log(`[mae] done: ${path.join(runDir, 'checkpoint', 'encoder.safetensors')}`);
  return runDir;
}

if (require.main === module) runMain(() => pretrainMae(process.argv.slice(2)).then(() => undefined));

/**
 * MAE pretraining (He et al. 2022): random 75% of patches masked per sample, the encoder sees
 * the rest, a light decoder reconstructs per-patch normalised pixels, MSE on masked patches.
 * AdamW (0.9, 0.95), wd 0.05, lr = blr * batch / 256, linear warm-up then cosine.
 *
 *   npx ts-node pipelines/pretrain-mae.ts --epochs 100 --out runs/mae
 *   npx ts-node pipelines/pretrain-mae.ts --resume runs/mae   # continues from runs/mae/checkpoint
 */
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../runtime/backend';
import { localBatchSize, openCollective, pinLocalGpu } from '../runtime/collective';
import { broadcastVariables, checkSameOnAllRanks } from '../runtime/data-parallel';
import { intList, num, numRange, parseFlags, runMain } from '../runtime/cli';
import { withoutPrefix, writeEncoder } from '../runtime/checkpoint';
import { checkOutDir } from '../runtime/out-dir';
import { lockRunDir } from '../runtime/run-lock';
import { VisionTransformer, VIT_PRESETS, VitConfig } from '../models/vit';
import { MaeDecoder } from '../models/mae';
import { maeObjective } from '../objectives/mae';
import { epochBatches, SkipLog } from '../datapath/batches';
import { countSamples } from '../sources/count';
import { maeViews } from '../operators/multi-view';
import { train } from '../train/driver';
import { checkpointFiles } from '../train/checkpoint-files';
import { DRIVER_FLAGS, driverFlags, scaledLr } from '../train/flags';
import { resumeRun } from '../train/resume';

const USAGE = 'MAE pretraining of a ViT.\n  npx ts-node pipelines/pretrain-mae.ts [options]';
const FLAGS = {
  train: { description: 'training data: tar shards glob, image folder or CIFAR .bin files', default: 'data/cifar10-mini/train-*.tar.gz' },
  out: { description: 'run directory (checkpoint/, metrics.jsonl, loss.png)', default: 'runs/mae' },
  resume: { description: 'continue the run in this directory from its checkpoint' },
  preset: { description: `ViT size: ${Object.keys(VIT_PRESETS).join(', ')}`, default: 'vit-micro-p4' },
  act: { description: "MLP activation: 'gelu' (exact, timm's) or 'gelu_tanh'", default: 'gelu' },
  'decoder-dim': { description: 'decoder width', default: '64' },
  'decoder-depth': { description: 'decoder blocks', default: '2' },
  'decoder-heads': { description: 'decoder attention heads', default: '2' },
  'mask-ratio': { description: 'share of patches masked per sample', default: '0.75' },
  epochs: { description: 'epochs over the training data', default: '100' },
  'warmup-epochs': { description: 'linear lr warm-up epochs', default: '5' },
  batch: { description: 'batch size', default: '64' },
  blr: { description: 'base lr; lr = blr * batch / 256', default: '1.5e-4' },
  'min-lr': { description: 'lr at the end of the cosine', default: '1e-6' },
  'weight-decay': { description: 'AdamW weight decay (not on biases, norms, tokens)', default: '0.05' },
  'crop-scale': { description: 'RandomResizedCrop scale range lo,hi', default: '0.2,1.0' },
  seed: { description: 'seed of init, masking, augmentation and order', default: '0' },
  'snapshot-epochs': { description: 'comma-separated epochs after which to keep a copy of the encoder', default: '' },
  ...DRIVER_FLAGS,
} as const;

/** Flags a resumed run keeps from its checkpoint: they define shapes, data and its order. */
const FIXED_ON_RESUME = ['train', 'preset', 'act', 'decoder-dim', 'decoder-depth', 'decoder-heads', 'mask-ratio', 'batch', 'crop-scale', 'seed'];

/** Runs MAE pretraining with command-line style arguments; resolves to the run directory. */
export async function pretrainMae(argv: string[]): Promise<string> {
  const flags = parseFlags(USAGE, FLAGS, argv);
  const runDir = flags.resume ?? flags.out!;
  if (!flags.resume) checkOutDir(runDir); // a resumed run's folder is checked by reading its checkpoint
  const resumed = flags.resume ? resumeRun('mae', runDir, { usage: USAGE, spec: FLAGS, flags, argv }, FIXED_ON_RESUME) : undefined;
  const f = resumed?.flags ?? flags;
  const preset = VIT_PRESETS[f.preset!];
  if (!preset) throw new Error(`--preset: unknown '${f.preset}', expected one of ${Object.keys(VIT_PRESETS).join(', ')}`);
  if (f.act !== 'gelu' && f.act !== 'gelu_tanh') throw new Error(`--act: expected gelu or gelu_tanh, got '${f.act}'`);
  const cfg: VitConfig = { ...preset, act: f.act, posEmbed: 'sincos' };
  const seed = num('seed', f.seed, { integer: true });
  const batch = num('batch', f.batch, { integer: true, min: 2, max: 65536 });
  const epochs = num('epochs', f.epochs, { integer: true, min: 1 });
  const maskRatio = num('mask-ratio', f['mask-ratio'], { min: 0.01, max: 0.99 });
  const cropScale = numRange('crop-scale', f['crop-scale'], { min: 0.01, max: 1 });
  const snapshotEpochs = new Set(intList('snapshot-epochs', f['snapshot-epochs']));
  const driver = driverFlags(f);

  // data parallelism: a world of one unless started by an MPI launcher (README, MPI section)
  pinLocalGpu();
  const dp = openCollective();
  const localBatch = localBatchSize(batch, dp.worldSize);
  const backend = await initBackend();
  // one run at a time in a run directory; every file of the run is rank 0's
  using _runLock = dp.rank === 0 ? lockRunDir(runDir) : undefined;
  const samplesPerEpoch = await countSamples(f.train!);
  const stepsPerEpoch = Math.floor(samplesPerEpoch / batch);
  if (stepsPerEpoch < 1) throw new Error(`${f.train}: ${samplesPerEpoch} samples, fewer than one batch of ${batch}`);
  const totalSteps = epochs * stepsPerEpoch;
  const warmupSteps = num('warmup-epochs', f['warmup-epochs'], { min: 0 }) * stepsPerEpoch;
  const peakLr = scaledLr(num('blr', f.blr, { min: 0 }), batch, 'linear');
  const minLr = num('min-lr', f['min-lr'], { min: 0 });

  const encoder = new VisionTransformer(cfg, seed);
  const decoder = new MaeDecoder(
    encoder,
    {
      dim: num('decoder-dim', f['decoder-dim'], { integer: true, min: 4, max: 8192 }),
      depth: num('decoder-depth', f['decoder-depth'], { integer: true, min: 1, max: 64 }),
      numHeads: num('decoder-heads', f['decoder-heads'], { integer: true, min: 1, max: 64 }),
    },
    seed + 1,
  );
  const wd = num('weight-decay', f['weight-decay'], { min: 0 });
  if (resumed) {
    encoder.params.importTimm(withoutPrefix(resumed.tensors, 'encoder.'), resumed.file);
    decoder.params.importTimm(withoutPrefix(resumed.tensors, 'decoder.'), resumed.file);
  }
  if (dp.worldSize > 1) {
    // every rank starts from rank 0's weights, with the same flags and data
    await checkSameOnAllRanks(dp, { flags: f, step: resumed?.step ?? 0, samplesPerEpoch });
    const variables = [encoder.params, decoder.params].flatMap((ps) => ps.names().map((n) => [n, ps.get(n)] as [string, tf.Variable]));
    await broadcastVariables(dp, variables, 'encoder and decoder parameters');
    console.log(`[mae] rank ${dp.rank} of ${dp.worldSize}: ${localBatch} of each global batch of ${batch}`);
  }

  console.log(`[mae] ${samplesPerEpoch} samples/epoch, ${stepsPerEpoch} steps/epoch, ${totalSteps} steps, peak lr ${peakLr.toExponential(2)}, backend ${backend.tfBackend}`);
  const skips = new SkipLog();
  const views = maeViews(cfg.imgSize, cropScale);
  const checkpointFile = path.join(runDir, 'checkpoint', 'encoder.safetensors');
  const { done } = await train({
    name: 'mae',
    script: 'pipelines/pretrain-mae.ts',
    runDir,
    stages: [
      {
        label: 'MAE',
        schedule: { steps: totalSteps, peakLr, minLr, warmupSteps },
        objective: maeObjective({ encoder, decoder, maskRatio, seed, collective: dp }),
        params: () => [...encoder.paramGroups('', { weightDecay: wd }), ...decoder.params.groups('decoder:', wd)],
      },
    ],
    resume: resumed,
    // a resumed run starts mid-epoch with the samples of the steps not yet taken
    // each rank its rows of every global batch
    batches: (fromStep) => epochBatches({ source: f.train!, seed, batchSize: localBatch, stepsPerEpoch, fromStep, views, skips, rank: dp.rank, worldSize: dp.worldSize }),
    optimiser: { beta1: 0.9, beta2: 0.95, eps: 1e-8 },
    ...driver,
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
  if (skips.total > 0) console.log(`[data] skipped ${skips.total} samples: ${JSON.stringify(Object.fromEntries(skips.counts))}`);
  if (done) console.log(`[mae] done: ${checkpointFile}`);
  return runDir;
}

if (require.main === module) runMain(() => pretrainMae(process.argv.slice(2)).then(() => undefined));

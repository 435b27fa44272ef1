/**
 * MAE pretraining (He et al. 2022): random 75% of patches masked per sample, the encoder sees
 * the rest, a light decoder reconstructs per-patch normalised pixels, MSE on masked patches.
 * AdamW (0.9, 0.95), wd 0.05, lr = blr * batch / 256, linear warm-up then cosine.
 *
 *   npx ts-node pipelines/pretrain-mae.ts --epochs 100 --out runs/mae
 *   npx ts-node pipelines/pretrain-mae.ts --resume runs/mae   # continues from runs/mae/checkpoint
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { Subject } from 'rxjs';
import { initBackend } from '../runtime/backend';
import { intList, num, numRange, parseFlags, runMain } from '../runtime/cli';
import { Rng } from '../runtime/rng';
import { hostTensors, prefixKeys, readTrainState, withoutPrefix, writeCheckpointDir } from '../runtime/checkpoint';
import { VisionTransformer, VIT_PRESETS, VitConfig } from '../models/vit';
import { MaeDecoder, maeLoss, randomMasking } from '../models/mae';
import { AdamW, warmupCosine } from '../models/adamw';
import { epochBatches, SkipLog } from '../sources/batches';
import { countSamples } from '../sources/count';
import { maeViews } from '../operators/multi-view';
import { StepRecord, trainingSinks } from '../sinks/training';

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
  'checkpoint-minutes': { description: 'write a checkpoint at least this often', default: '5' },
  'snapshot-epochs': { description: 'comma-separated epochs after which to keep a copy of the encoder', default: '' },
} as const;

async function main() {
  const flags = parseFlags(USAGE, FLAGS);
  const runDir = flags.resume ?? flags.out!;
  const resumeState = flags.resume ? readTrainState(path.join(runDir, 'checkpoint')) : undefined;
  // a resumed run keeps the flags it started with
  const f = resumeState ? { ...flags, ...(resumeState.meta.flags as typeof flags) } : flags;
  const preset = VIT_PRESETS[f.preset!];
  if (!preset) throw new Error(`--preset: unknown '${f.preset}', expected one of ${Object.keys(VIT_PRESETS).join(', ')}`);
  if (f.act !== 'gelu' && f.act !== 'gelu_tanh') throw new Error(`--act: expected gelu or gelu_tanh, got '${f.act}'`);
  const cfg: VitConfig = { ...preset, act: f.act, posEmbed: 'sincos' };
  const seed = num('seed', f.seed, { integer: true });
  const batch = num('batch', f.batch, { integer: true, min: 2 });
  const epochs = num('epochs', f.epochs, { integer: true, min: 1 });
  const maskRatio = num('mask-ratio', f['mask-ratio'], { min: 0.01, max: 0.99 });
  const cropScale = numRange('crop-scale', f['crop-scale'], { min: 0.01, max: 1 });
  const snapshotEpochs = new Set(intList('snapshot-epochs', f['snapshot-epochs']));

  const backend = await initBackend();
  fs.mkdirSync(runDir, { recursive: true });
  const samplesPerEpoch = await countSamples(f.train!);
  const stepsPerEpoch = Math.floor(samplesPerEpoch / batch);
  if (stepsPerEpoch < 1) throw new Error(`${f.train}: ${samplesPerEpoch} samples, fewer than one batch of ${batch}`);
  const totalSteps = epochs * stepsPerEpoch;
  const warmupSteps = num('warmup-epochs', f['warmup-epochs'], { min: 0 }) * stepsPerEpoch;
  const peakLr = (num('blr', f.blr, { min: 0 }) * batch) / 256;
  const minLr = num('min-lr', f['min-lr'], { min: 0 });

  const encoder = new VisionTransformer(cfg, seed);
  const decoder = new MaeDecoder(
    encoder,
    {
      dim: num('decoder-dim', f['decoder-dim'], { integer: true, min: 4 }),
      depth: num('decoder-depth', f['decoder-depth'], { integer: true, min: 1 }),
      numHeads: num('decoder-heads', f['decoder-heads'], { integer: true, min: 1 }),
    },
    seed + 1,
  );
  const wd = num('weight-decay', f['weight-decay'], { min: 0 });
  const optimiser = new AdamW(
    [...encoder.params.trainable(), ...decoder.params.trainable().map((p) => ({ ...p, name: `decoder:${p.name}` }))].map((p) => ({
      ...p,
      lrScale: 1,
      weightDecay: p.decay ? wd : 0,
    })),
  );
  let step = 0;
  if (resumeState) {
    const host = hostTensors(resumeState.tensors);
    const file = path.join(runDir, 'checkpoint', 'state.safetensors');
    encoder.params.importTimm(withoutPrefix(host, 'encoder.'), file);
    decoder.params.importTimm(withoutPrefix(host, 'decoder.'), file);
    step = resumeState.meta.step as number;
    optimiser.importState(host, step, file);
    console.log(`[mae] resumed ${runDir} at step ${step}`);
  }

  console.log(`[mae] ${samplesPerEpoch} samples/epoch, ${stepsPerEpoch} steps/epoch, ${totalSteps} steps, peak lr ${peakLr.toExponential(2)}, backend ${backend.tfBackend}`);
  const records = new Subject<StepRecord>();
  const sinksDone = trainingSinks(records, { runDir, total: totalSteps, lossKeys: ['loss'], title: 'MAE reconstruction loss', resumed: resumeState !== undefined });
  const skips = new SkipLog();
  let lastCheckpoint = performance.now();
  const checkpointEvery = num('checkpoint-minutes', f['checkpoint-minutes'], { min: 0 }) * 60_000;
  const saveCheckpoint = async () => {
    const encoderWeights = await encoder.params.exportTimm();
    writeCheckpointDir(path.join(runDir, 'checkpoint'), {
      'encoder.safetensors': { tensors: encoderWeights, metadata: { format: 'pt', vit: JSON.stringify(cfg) } },
      'state.safetensors': {
        tensors: {
          ...prefixKeys('encoder.', encoderWeights),
          ...prefixKeys('decoder.', await decoder.params.exportTimm()),
          ...(await optimiser.exportState()),
        },
        metadata: { state: JSON.stringify({ step, flags: f }) },
      },
    });
    lastCheckpoint = performance.now();
  };

  const views = maeViews(cfg.imgSize, cropScale);
  // a resumed run starts mid-epoch with the samples of the steps not yet taken
  if (step < totalSteps) {
    for await (const { batch: b, epoch, waitMs } of epochBatches({ source: f.train!, seed, batchSize: batch, stepsPerEpoch, fromStep: step, views, skips })) {
      const t0 = performance.now();
      const lr = warmupCosine(step, totalSteps, warmupSteps, peakLr, minLr);
      const masking = new Rng(seed, 0x3a5c, step);
      const loss = tf.tidy(() => {
        const images = tf.tensor4d(b.views[0], [batch, cfg.imgSize, cfg.imgSize, 3]);
        const plan = randomMasking(batch, encoder.numPatches, maskRatio, masking);
        const { value, grads } = tf.variableGrads(() => maeLoss(encoder, decoder, images, plan));
        optimiser.apply(grads, lr);
        return value;
      });
      const lossValue = (await loss.data())[0];
      loss.dispose();
      if (!Number.isFinite(lossValue)) throw new Error(`loss became ${loss} at step ${step}; lower --blr`);
      step++;
      records.next({ step, epoch, lr, values: { loss: lossValue }, images: batch, stepMs: performance.now() - t0, waitMs });
      if (performance.now() - lastCheckpoint > checkpointEvery) await saveCheckpoint();
      if (step % stepsPerEpoch === 0 && snapshotEpochs.has(step / stepsPerEpoch)) {
        await saveCheckpoint();
        fs.copyFileSync(path.join(runDir, 'checkpoint', 'encoder.safetensors'), path.join(runDir, `encoder-epoch${step / stepsPerEpoch}.safetensors`));
      }
      if (step >= totalSteps) break;
    }
  }
  await saveCheckpoint();
  records.complete();
  await sinksDone;
  if (skips.total > 0) console.log(`[data] skipped ${skips.total} samples: ${JSON.stringify(Object.fromEntries(skips.counts))}`);
  console.log(`[mae] done: ${path.join(runDir, 'checkpoint', 'encoder.safetensors')}`);
}

runMain(main);

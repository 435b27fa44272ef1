/**
 * Compose your own: NNCLR (Dwibedi et al. 2021, arXiv 2104.14548) with one head on the last
 * block of a MIM checkpoint, built from the pieces refine.ts uses (NNA head, NN queue, views,
 * data path, driver) with another loss (losses/nnclr.ts) and a step function of a few lines.
 *   npx ts-node pipelines/nnclr.ts --steps 200 --out runs/nnclr
 */
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../runtime/backend';
import { num, parseFlags, runMain } from '../runtime/cli';
import { Rng } from '../lib/rng';
import { loadEncoder } from '../runtime/checkpoint';
import { HEAD_PRESETS, NnaHead } from '../models/nna-head';
import { NnQueue } from '../models/nn-queue';
import { stopGradient } from '../models/ops';
import { nnclrLoss } from '../losses/nnclr';
import type { Objective } from '../objectives/objective';
import type { Batch } from '../sources/types';
import { refinerViews } from '../operators/multi-view';
import { epochBatches, SkipLog } from '../datapath/batches';
import { countSamples } from '../sources/count';
import { train } from '../train/driver';
import { checkpointFiles } from '../train/checkpoint-files';
import { DRIVER_FLAGS, driverFlags } from '../train/flags';

const FLAGS = {
  checkpoint: { description: 'encoder (safetensors, timm names)', default: 'checkpoints/mae-vit-micro-p4/encoder.safetensors' },
  train: { description: 'training images', default: 'data/cifar10-mini/train-*.tar.gz' },
  out: { description: 'run directory', default: 'runs/nnclr' },
  steps: { description: 'training steps', default: '200' },
  batch: { description: 'batch size', default: '32' },
  lr: { description: 'peak lr (warm-up 10%, then cosine)', default: '1e-3' },
  'queue-size': { description: 'NN queue entries', default: '4096' },
  temperature: { description: 'InfoNCE temperature', default: '0.1' },
  seed: { description: 'seed of head, queue, views and NN picks', default: '0' },
  ...DRIVER_FLAGS,
} as const;

export async function nnclr(argv: string[]): Promise<string> {
  const f = parseFlags('NNCLR on the last block.\n  npx ts-node pipelines/nnclr.ts [options]', FLAGS, argv);
  const [seed, batch, steps] = (['seed', 'batch', 'steps'] as const).map((k) => num(k, f[k], { integer: true, min: k === 'seed' ? 0 : 1 }));
  await initBackend();
  const encoder = loadEncoder(f.checkpoint!);
  const { depth, embedDim, imgSize: size, act } = encoder.cfg;
  const head = new NnaHead(embedDim, HEAD_PRESETS.tiny, act, seed);
  const queue = new NnQueue(num('queue-size', f['queue-size'], { integer: true, min: 1 }), HEAD_PRESETS.tiny.out, seed + 1);

  // the step: both views through the encoder, project, predict, look up neighbours, NNCLR loss
  const objective: Objective<{ b: Batch; rng: Rng; views: tf.Tensor4D }, tf.Tensor2D> = {
    prepare: (b, step) => ({ b, rng: new Rng(seed, 0x4e4e, step), views: tf.concat([0, 1].map((v) => tf.tensor4d(b.views[v], [b.indices.length, size, size, 3]))) as tf.Tensor4D }),
    loss: ({ b, rng, views }) => {
      const z = head.project(encoder.clsFeatures(views, [depth - 1])[0], true);
      const p = tf.split(head.predict(z, true), 2) as [tf.Tensor2D, tf.Tensor2D];
      const zs = tf.split(z, 2).map((zi) => stopGradient(zi)) as tf.Tensor2D[];
      const nn = zs.map((zi) => queue.lookup(zi, b.indices, b.labels, 1, rng));
      return { loss: nnclrLoss([nn[0].swapped, nn[1].swapped], p, num('temperature', f.temperature, { min: 1e-4 })), metrics: { nn_acc: nn[0].accuracy }, updates: zs[0] };
    },
    afterStep: (z, b) => queue.push(z, b.indices, b.labels),
  };
  const views = refinerViews({ globalSize: size, localSize: size / 2, numLocal: 0, globalScale: [0.25, 1] });
  const stepsPerEpoch = Math.floor((await countSamples(f.train!)) / batch);
  await train({
    name: 'nnclr',
    runDir: f.out!,
    stages: [{ label: 'NNCLR', objective, schedule: { steps, peakLr: num('lr', f.lr, { min: 0 }), minLr: 1e-6, warmupSteps: Math.round(0.1 * steps) },
      params: () => [...head.params.groups('head.', 1e-5), ...encoder.paramGroups('encoder.', { weightDecay: 0.05, layerDecay: 0.8 })] }],
    batches: (fromStep) => epochBatches({ source: f.train!, seed, batchSize: batch, stepsPerEpoch, fromStep, views, skips: new SkipLog() }),
    optimiser: { beta1: 0.9, beta2: 0.95, eps: 1e-8 },
    ...driverFlags(f),
    sinks: { lossKeys: ['loss'], title: 'NNCLR loss' },
    checkpointFiles: (at, optimiser) => checkpointFiles({ encoder, parts: { 'head.': head.params }, optimiser, state: { step: at, flags: f } }),
  });
  return f.out!;
}

if (require.main === module) runMain(() => nnclr(process.argv.slice(2)).then(() => undefined));

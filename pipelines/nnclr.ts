/**
 * Compose your own: NNCLR (Dwibedi et al. 2021, arXiv 2104.14548) with one head on the last
 * block of a MIM checkpoint, built from the pieces refine.ts uses (NNA head, NN queue, views,
 * data path, run setup, driver) with another loss (losses/nnclr.ts) and a step function of a few lines.
 *   npx ts-node pipelines/nnclr.ts --epochs 2 --out runs/nnclr
 */
import * as tf from '@tensorflow/tfjs';
import { num, runMain } from '../runtime/cli';
import { withoutPrefix } from '../runtime/checkpoint';
import { Rng } from '../lib/rng';
import { HEAD_PRESETS, NnaHead } from '../models/nna-head';
import { NnQueue } from '../models/nn-queue';
import { stopGradient } from '../models/ops';
import { nnclrLoss } from '../losses/nnclr';
import type { Objective } from '../objectives/objective';
import type { Batch } from '../sources/types';
import { refinerViews } from '../operators/multi-view';
import { epochBatches, SkipLog } from '../datapath/batches';
import { train } from '../train/driver';
import { checkpointFiles } from '../train/checkpoint-files';
import { BUNDLED, dataFlags, evalFlags, knnFlags, modelFlags, runFlags, TRAINING_RUN_FLAGS } from '../train/flags';
import { perBlockKnn, writeKnnSummary } from '../eval/per-block-knn';
import { openRun } from '../train/run';
import { loadModel } from '../train/model';

const FLAGS = {
  ...runFlags('nnclr'), ...TRAINING_RUN_FLAGS, ...dataFlags(), ...modelFlags({ checkpoint: BUNDLED.mae }),
  epochs: { description: 'epochs over the training data, fractions allowed (> 0)', default: '1.3' },
  batch: { description: 'batch size (>= 2: each sample needs another as its negative)', default: '32' },
  lr: { description: 'peak lr (warm-up 10%, then cosine)', default: '1e-3' },
  'queue-size': { description: 'NN queue entries', default: '4096' },
  temperature: { description: 'InfoNCE temperature (> 0)', default: '0.1' },
  seed: { description: 'seed of head, queue, views and NN picks', default: '0' },
  ...evalFlags({ trainLimit: '5000', testLimit: '2000', skip: true }),
} as const;
export const DEFINITION = { name: 'nnclr', script: 'pipelines/nnclr.ts', usage: 'NNCLR on the last block.\n  npx ts-node pipelines/nnclr.ts [options]', flags: FLAGS, fixedOnResume: ['checkpoint', 'preset', 'train', 'batch', 'queue-size', 'seed'] };

export async function nnclr(argv: string[]): Promise<string> {
  const run = openRun(DEFINITION, argv);
  const { flags: f, resumed } = run;
  const [seed, batch] = [num('seed', f.seed, { integer: true, min: 0 }), num('batch', f.batch, { integer: true, min: 2, max: 65536 })];
  const [epochs, lr, temperature] = [num('epochs', f.epochs, { above: 0 }), num('lr', f.lr, { min: 0 }), num('temperature', f.temperature, { min: 1e-4 })];
  const knn = { train: f.train!, test: f.test!, val: f.val === 'none' ? null : f.val, ...knnFlags(f) };
  using _claim = run.claim(await run.start({ batch }));
  const encoder = loadModel({ flag: 'checkpoint', file: f.checkpoint!, presetFlag: 'preset', preset: f.preset, seed });
  const { depth, embedDim, imgSize: size, act } = encoder.cfg;
  const head = new NnaHead(embedDim, HEAD_PRESETS.tiny, act, seed);
  const queue = new NnQueue(num('queue-size', f['queue-size'], { integer: true, min: 1, bytesEach: 4 * HEAD_PRESETS.tiny.out }), HEAD_PRESETS.tiny.out, seed + 1);
  if (resumed) {
    encoder.params.importTimm(withoutPrefix(resumed.tensors, 'encoder.'), resumed.file);
    head.params.importTimm(withoutPrefix(resumed.tensors, 'head.'), resumed.file);
    queue.importState((k) => resumed.tensors.get(k), 'queue', resumed.file);
  }

  // the step: both views through the encoder, project, predict, look up neighbours, NNCLR loss
  const objective: Objective<{ b: Batch; rng: Rng; views: tf.Tensor4D }, tf.Tensor2D> = {
    prepare: (b, step) => ({ b, rng: new Rng(seed, 0x4e4e, step), views: tf.concat([0, 1].map((v) => tf.tensor4d(b.views[v], [b.indices.length, size, size, 3]))) as tf.Tensor4D }),
    loss: ({ b, rng, views }) => {
      const z = head.project(encoder.clsFeatures(views, [depth - 1])[0], true);
      const p = tf.split(head.predict(z, true), 2) as [tf.Tensor2D, tf.Tensor2D];
      const zs = tf.split(z, 2).map((zi) => stopGradient(zi)) as tf.Tensor2D[];
      const nn = zs.map((zi) => queue.lookup(zi, b.indices, b.labels, 1, rng));
      return { loss: nnclrLoss([nn[0].swapped, nn[1].swapped], p, temperature), metrics: { nn_acc: nn[0].accuracy }, updates: zs[0] };
    },
    afterStep: (z, b) => queue.push(z, b.indices, b.labels),
  };
  const views = refinerViews({ globalSize: size, localSize: size / 2, numLocal: 0, globalScale: [0.25, 1] });
  const { stepsPerEpoch } = await run.dataSize(f.train!, batch, { numClasses: knn.numClasses });
  const steps = Math.max(1, Math.round(epochs * stepsPerEpoch));
  const { done } = await train({
    ...run.driver(),
    stages: [{ label: 'NNCLR', objective, schedule: { steps, peakLr: lr, minLr: 1e-6, warmupSteps: Math.round(0.1 * steps) },
      params: () => [...head.params.groups('head.', 1e-5), ...encoder.paramGroups('encoder.', { weightDecay: 0.05, layerDecay: 0.8 })] }],
    batches: (fromStep) => epochBatches({ source: f.train!, seed, batchSize: batch, stepsPerEpoch, fromStep, views, skips: new SkipLog() }),
    optimiser: { beta1: 0.9, beta2: 0.95, eps: 1e-8 },
    sinks: { lossKeys: ['loss'], title: 'NNCLR loss' },
    checkpointFiles: async (at, optimiser) =>
      checkpointFiles({ encoder, parts: { 'head.': head.params }, extra: await queue.exportState('queue'), optimiser, state: { step: at, flags: f } }),
  });
  // the encoder's per-block kNN: the same evaluation as refine's
  if (done && !f['skip-knn']) await writeKnnSummary(run.runDir, [await perBlockKnn(encoder, { ...knn, label: 'NNCLR encoder' })], { title: 'Per-block kNN top-1 after NNCLR', extra: { flags: f } });
  run.finish(done);
  return run.runDir;
}

if (require.main === module) runMain(() => nnclr(process.argv.slice(2)).then(() => undefined));

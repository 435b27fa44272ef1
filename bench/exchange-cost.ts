/**
 * What DP_EXCHANGE=before-tape adds to a data-parallel refine step (runtime/data-parallel.ts):
 * one forward pass of the training encoder without the tape, to have the heads' inputs before
 * it. Times, on one process, a stage-3 NNA refine step (prepare, loss under the tape, gradients
 * read back with await) and that extra forward on the same rows (CLS of the head blocks, every
 * view, read back), interleaved; prints the medians and their ratio. The rows are one rank's.
 *
 *   WASM_THREADS=1 npx ts-node bench/exchange-cost.ts --rows 16 --local-views 6 --head-preset micro
 */
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../runtime/backend';
import { parseFlags } from '../runtime/cli';
import { loadEncoder } from '../runtime/checkpoint';
import { Rng } from '../lib/rng';
import { HEAD_PRESETS, NnaHead } from '../models/nna-head';
import { NnQueue } from '../models/nn-queue';
import { nnaRefineObjective } from '../objectives/nna-refine';
import { OpenSteps } from '../objectives/step';
import { forwardBackward } from '../operators/train-step';

const FLAGS = {
  checkpoint: { description: 'encoder (safetensors, timm names)', default: 'checkpoints/mae-vit-micro-p4/encoder.safetensors' },
  rows: { description: "one rank's rows of the global batch", default: '16' },
  'local-views': { description: 'local views per image (plus 2 global)', default: '6' },
  'head-preset': { description: `NNA head sizes: ${Object.keys(HEAD_PRESETS).join(', ')}`, default: 'micro' },
  blocks: { description: 'head blocks, comma-separated', default: '4,5' },
  reps: { description: 'timed repetitions of each (after one warm-up)', default: '6' },
} as const;

function median(xs: number[]): number {
  return [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
}

async function main(): Promise<void> {
  const f = parseFlags('The cost of the before-tape exchange: an encoder forward against a refine step.\n  npx ts-node bench/exchange-cost.ts [options]', FLAGS);
  await initBackend(() => undefined);
  const rows = Number(f.rows);
  const numLocal = Number(f['local-views']);
  const blocks = f.blocks!.split(',').map(Number);
  const sizes = HEAD_PRESETS[f['head-preset']!];
  const encoder = loadEncoder(f.checkpoint!, undefined);
  const { imgSize, embedDim } = encoder.cfg;
  const localSize = imgSize / 2;
  const heads = blocks.map((_, i) => new NnaHead(embedDim, sizes, encoder.cfg.act, i));
  const queues = blocks.map((_, i) => new NnQueue(4096, sizes.out, 50 + i));
  const objective = nnaRefineObjective({ encoder, headBlocks: blocks, heads, queues, globalSize: imgSize, localSize, numLocal, topK: 1, temperature: 0.2, trainEncoder: true, seed: 0 });
  const rng = new Rng(1);
  const viewSizes = [imgSize, imgSize, ...Array<number>(numLocal).fill(localSize)];
  const batch = { indices: Int32Array.from({ length: rows }, (_, i) => i), labels: new Int32Array(rows), views: viewSizes.map((s) => Float32Array.from({ length: rows * s * s * 3 }, () => rng.uniform(-1, 1))), viewSizes };
  const vars = [encoder.params, ...heads.map((h) => h.params)].flatMap((ps) => ps.trainable().map((p) => p.variable));
  const open = new OpenSteps();
  const step = async () => {
    const scope = open.open();
    const out = await forwardBackward(objective, { batch, epoch: 0, waitMs: 0 }, 0, vars, scope);
    await Promise.all(Object.values(out.grads).map((g) => g.data()));
    scope.dispose();
  };
  const forward = async () => {
    const features = tf.tidy(() => {
      const views = (from: number, to: number, size: number) => tf.concat(batch.views.slice(from, to).map((v) => tf.tensor4d(v, [rows, size, size, 3]))) as tf.Tensor4D;
      return [...encoder.clsFeatures(views(0, 2, imgSize), blocks), ...(numLocal > 0 ? encoder.clsFeatures(views(2, 2 + numLocal, localSize), blocks) : [])];
    });
    await Promise.all(features.map((t) => t.data()));
    tf.dispose(features);
  };
  const timed = async (fn: () => Promise<void>) => {
    const t0 = performance.now();
    await fn();
    return performance.now() - t0;
  };
  await step();
  await forward();
  const steps: number[] = [];
  const forwards: number[] = [];
  for (let i = 0; i < Number(f.reps); i++) {
    steps.push(await timed(step));
    forwards.push(await timed(forward));
  }
  const [s, fw] = [median(steps), median(forwards)];
  console.log(`${rows} rows, 2 + ${numLocal} views, ${f['head-preset']} heads on blocks ${blocks.join(',')}: refine step ${s.toFixed(0)} ms, encoder forward without the tape ${fw.toFixed(0)} ms = ${((100 * fw) / s).toFixed(0)}% of the step (medians of ${steps.length})`);
}

void main();

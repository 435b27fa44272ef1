/**
 * The objectives called directly with small tensors: what they return (a loss, device-scalar
 * metrics, after-step updates), how the pieces relate, and that they draw their per-step
 * randomness from (seed, step) alone.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../runtime/backend';
import { Rng } from '../lib/rng';
import { VisionTransformer, VitConfig } from '../models/vit';
import { NnaHead, HEAD_PRESETS } from '../models/nna-head';
import { NnQueue } from '../models/nn-queue';
import { MaeDecoder, maeLoss, randomMasking } from '../models/mae';
import { MimcoHeads } from '../models/mimco';
import { nnaRefineObjective } from '../objectives/nna-refine';
import { maeObjective } from '../objectives/mae';
import { mimcoObjective } from '../objectives/mimco';
import { Objective, tensorsIn } from '../objectives/objective';
import type { Batch } from '../sources/types';

const cfg: VitConfig = { imgSize: 16, patchSize: 4, embedDim: 32, depth: 3, numHeads: 2, mlpRatio: 2, act: 'gelu', posEmbed: 'sincos' };

function batch(sizes: number[], seed: number): Batch {
  const rng = new Rng(seed);
  return {
    indices: Int32Array.of(3, 8, 1, 5),
    labels: Int32Array.of(0, 1, 0, 1),
    views: sizes.map((s) => Float32Array.from({ length: 4 * s * s * 3 }, () => rng.uniform(-1, 1))),
    viewSizes: sizes,
  };
}

/** One step's values, read (tests only) and every tensor freed. */
function run<P, U>(objective: Objective<P, U>, b: Batch, step: number): { loss: number; metrics: Record<string, number>; updates: number[][] } {
  return tf.tidy(() => {
    const out = objective.loss(objective.prepare(b, step), step);
    for (const t of Object.values(out.metrics)) assert.instance(t, tf.Tensor, 'metrics are device scalars');
    const updates = tensorsIn(out.updates);
    return {
      loss: out.loss.dataSync()[0],
      metrics: Object.fromEntries(Object.entries(out.metrics).map(([k, t]) => [k, t.dataSync()[0]])),
      updates: updates.map((u) => u.shape),
    };
  });
}

test.before(async () => {
  await initBackend(() => undefined);
});

test('NNA refine: per-head losses sum to the loss, (global + local) / 2 with one local view; z of view 0 is enqueued', () => {
  const encoder = new VisionTransformer(cfg, 1);
  const sizes = HEAD_PRESETS.tiny;
  const heads = [1, 2].map((_, i) => new NnaHead(32, sizes, 'gelu', 10 + i));
  const queues = [1, 2].map((_, i) => new NnQueue(16, sizes.out, 20 + i));
  const objective = nnaRefineObjective({ encoder, headBlocks: [1, 2], heads, queues, globalSize: 16, localSize: 8, numLocal: 1, topK: 2, temperature: 0.2, trainEncoder: false, seed: 3 });
  const b = batch([16, 16, 8], 4);
  const before = tf.memory().numTensors;
  const a = run(objective, b, 7);
  assert.is(tf.memory().numTensors, before, 'tensors left by the step');
  assert.equal(a.updates, [[4, sizes.out], [4, sizes.out]]);
  assert.ok(Math.abs(a.loss - (a.metrics.block1_loss + a.metrics.block2_loss)) < 1e-5);
  assert.ok(Math.abs(a.loss - (a.metrics.loss_global + a.metrics.loss_local) / 2) < 1e-5);
  assert.is(a.metrics.block1_nn_sim, -1, 'an empty queue offers no neighbour');
  // the same step draws the same NN picks; the after-step update fills the queues
  assert.equal(run(objective, b, 7), a);
  tf.tidy(() => {
    const out = objective.loss(objective.prepare(b, 7), 7);
    objective.afterStep!(out.updates, b);
  });
  const c = run(objective, b, 8);
  assert.ok(c.metrics.block1_nn_sim > -1 && c.metrics.block1_nn_acc >= 0, 'no neighbour found after the update');
  [encoder, ...heads].forEach((m) => m.params.dispose());
  queues.forEach((q) => q.dispose());
});

test('MAE: the loss of step s is maeLoss under the mask drawn from (seed, s)', () => {
  const encoder = new VisionTransformer(cfg, 1);
  const decoder = new MaeDecoder(encoder, { dim: 16, depth: 1, numHeads: 2 }, 2);
  const b = batch([16], 5);
  const got = run(maeObjective({ encoder, decoder, maskRatio: 0.75, seed: 9 }), b, 4).loss;
  const want = tf.tidy(() => maeLoss(encoder, decoder, tf.tensor4d(b.views[0], [4, 16, 16, 3]), randomMasking(4, 16, 0.75, new Rng(9, 0x3a5c, 4))).dataSync()[0]);
  assert.is(got, want);
  encoder.dispose();
  decoder.params.dispose();
});

test('MimCo: loss = patch + image terms, reported as metrics', () => {
  const teacher = new VisionTransformer(cfg, 1);
  const student = new VisionTransformer({ ...cfg, embedDim: 16 }, 2);
  const heads = new MimcoHeads(16, 32, 32, 'gelu', 3);
  const objective = mimcoObjective({ teacher, teacherBlock: 2, student, heads, maskRatio: 0.5, temperature: 0.2, seed: 1 });
  const r = run(objective, batch([16], 6), 0);
  assert.equal(Object.keys(r.metrics).sort(), ['loss_image', 'loss_patch']);
  assert.ok(Math.abs(r.loss - r.metrics.loss_patch - r.metrics.loss_image) < 1e-5);
  assert.not.equal(run(objective, batch([16], 6), 1).loss, r.loss, 'step 1 masks as step 0');
  [teacher, student].forEach((m) => m.dispose());
  heads.params.dispose();
});

test.run();

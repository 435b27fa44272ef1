/**
 * The refine objective's reference options (docs/deviations.md), called
 * directly on a small ViT: --last-head-norm feeds the last block's head the encoder's normed
 * output (get_intermediate_layers with norm) and no other head; --bn-views joint normalises a
 * head's BatchNorms over the global and local views together, which is the same computation as
 * 'separate' with the global views alone and, with local views, matches a projector written out
 * here with batch statistics over every row (and 'separate' the same over the global rows);
 * --local-pairs reference-code pairs the global views with the first views, as the reference
 * code's loop indexes them.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../runtime/backend';
import { Rng } from '../lib/rng';
import { VisionTransformer, VitConfig } from '../models/vit';
import { NnaHead, HEAD_PRESETS } from '../models/nna-head';
import { NnQueue } from '../models/nn-queue';
import { BnViews, LocalPairs, nnaRefineObjective } from '../objectives/nna-refine';
import type { Batch } from '../sources/types';

const cfg: VitConfig = { imgSize: 16, patchSize: 4, embedDim: 32, depth: 3, numHeads: 2, mlpRatio: 2, act: 'gelu', posEmbed: 'sincos' };
const N = 4;
const BLOCKS = [1, 2];

function batch(sizes: number[]): Batch {
  const rng = new Rng(11);
  return {
    indices: Int32Array.of(3, 8, 1, 5),
    labels: Int32Array.of(0, 1, 0, 1),
    views: sizes.map((s) => Float32Array.from({ length: N * s * s * 3 }, () => rng.uniform(-1, 1))),
    viewSizes: sizes,
  };
}

const images = (b: Batch, from: number, to: number, size: number) =>
  tf.concat(b.views.slice(from, to).map((v) => tf.tensor4d(v, [N, size, size, 3]))) as tf.Tensor4D;

/** One step of the objective (frozen encoder): the loss and each head's enqueued z (view 0's projections). */
function step(encoder: VisionTransformer, b: Batch, opts: { numLocal: number; localSize?: number; lastHeadNorm?: boolean; bnViews?: BnViews; localPairs?: LocalPairs }) {
  const heads = BLOCKS.map((_, i) => new NnaHead(cfg.embedDim, HEAD_PRESETS.tiny, 'gelu', 10 + i));
  const queues = BLOCKS.map((_, i) => new NnQueue(16, HEAD_PRESETS.tiny.out, 20 + i));
  const objective = nnaRefineObjective({ encoder, headBlocks: BLOCKS, heads, queues, globalSize: 16, localSize: 8, topK: 1, temperature: 0.2, trainEncoder: false, seed: 3, ...opts });
  const out = tf.tidy(() => {
    const r = objective.loss(objective.prepare(b, 0), 0);
    const metrics = Object.fromEntries(Object.entries(r.metrics).map(([k, t]) => [k, t.dataSync()[0]]));
    return { loss: r.loss.dataSync()[0], metrics, z: r.updates.z.map((t) => t.arraySync() as number[][]) };
  });
  queues.forEach((q) => q.dispose());
  return { ...out, heads };
}

function maxDiff(a: number[][], b: number[][]): number {
  assert.equal([a.length, a[0].length], [b.length, b[0].length]);
  return Math.max(...a.flatMap((row, i) => row.map((v, j) => Math.abs(v - b[i][j]))));
}

/** A head's projector written out: Linear, BatchNorm with this batch's mean and biased variance (eps 1e-5), exact GELU. */
function projectByHand(head: NnaHead, x: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => {
    let h: tf.Tensor = x;
    for (const [linear, bn, act] of [['projector.0', 'projector.1', true], ['projector.3', 'projector.4', true], ['projector.6', 'projector.7', false]] as const) {
      h = tf.add(tf.matMul(h, head.params.get(`${linear}.weight`)), head.params.get(`${linear}.bias`));
      const { mean, variance } = tf.moments(h, 0);
      h = tf.add(tf.mul(tf.div(tf.sub(h, mean), tf.sqrt(tf.add(variance, 1e-5))), head.params.get(`${bn}.weight`)), head.params.get(`${bn}.bias`));
      if (act) h = tf.mul(tf.mul(h, 0.5), tf.add(1, tf.erf(tf.div(h, Math.SQRT2))));
    }
    return h as tf.Tensor2D;
  });
}

let encoder: VisionTransformer;
test.before(async () => {
  await initBackend(() => undefined);
  encoder = new VisionTransformer(cfg, 1);
  // a final norm that is not the identity, so that normed and raw features differ by more than a standardisation
  const rng = new Rng(7);
  encoder.params.get('norm.weight').assign(tf.tensor1d(Array.from({ length: cfg.embedDim }, () => rng.uniform(0.5, 1.5))));
  encoder.params.get('norm.bias').assign(tf.tensor1d(Array.from({ length: cfg.embedDim }, () => rng.uniform(-0.5, 0.5))));
});

test("--last-head-norm on: the last block's head takes the encoder's normed CLS token, the other heads the raw block output", () => {
  const b = batch([16, 16]);
  const [on, off] = [true, false].map((lastHeadNorm) => step(encoder, b, { numLocal: 0, lastHeadNorm }));
  // what the head on block b projects from features f: view 0's rows of its projection
  const expected = (h: number, norm: boolean) =>
    tf.tidy(() => {
      const f = encoder.clsFeatures(images(b, 0, 2, 16), [BLOCKS[h]], norm)[0];
      return tf.slice(on.heads[h].project(f, true), 0, N).arraySync() as number[][];
    });
  const last = BLOCKS.indexOf(cfg.depth - 1);
  assert.ok(maxDiff(on.z[last], expected(last, true)) < 1e-6, 'on: not the normed output');
  assert.ok(maxDiff(off.z[last], expected(last, false)) < 1e-6, 'off: not the raw block output');
  assert.ok(maxDiff(on.z[0], expected(0, false)) < 1e-6, 'on: an intermediate head got the final norm');
  assert.ok(maxDiff(on.z[last], off.z[last]) > 1e-2, 'the final norm changed nothing');
  assert.not.equal(on.loss, off.loss);
  [...on.heads, ...off.heads].forEach((h) => h.params.dispose());
});

test('--bn-views: joint = separate without local views; with local views joint normalises over all views, separate over each group', () => {
  const globalsOnly = batch([16, 16]);
  const [j0, s0] = (['joint', 'separate'] as const).map((bnViews) => step(encoder, globalsOnly, { numLocal: 0, bnViews }));
  assert.is(j0.loss, s0.loss);
  assert.equal(j0.z, s0.z);

  const b = batch([16, 16, 8]);
  const [joint, separate] = (['joint', 'separate'] as const).map((bnViews) => step(encoder, b, { numLocal: 1, bnViews }));
  for (const [h, block] of BLOCKS.entries()) {
    const [want, wantSeparate] = tf.tidy(() => {
      const g = encoder.clsFeatures(images(b, 0, 2, 16), [block])[0];
      const l = encoder.clsFeatures(images(b, 2, 3, 8), [block])[0];
      return [tf.concat([g, l]), g].map((x) => tf.slice(projectByHand(joint.heads[h], x), 0, N).arraySync() as number[][]);
    });
    assert.ok(maxDiff(joint.z[h], want) < 1e-5, `block ${block}: joint is not BatchNorm over all views (${maxDiff(joint.z[h], want)})`);
    assert.ok(maxDiff(separate.z[h], wantSeparate) < 1e-5, `block ${block}: separate is not BatchNorm over the global views (${maxDiff(separate.z[h], wantSeparate)})`);
    assert.ok(maxDiff(joint.z[h], separate.z[h]) > 1e-3, `block ${block}: joint and separate agree`);
  }
  assert.not.equal(joint.loss, separate.loss);
  [...j0.heads, ...s0.heads, ...joint.heads, ...separate.heads].forEach((h) => h.params.dispose());
});

test("--local-pairs reference-code: the 'local' pairs are the first views, as if the local views were the global ones", () => {
  // two local views at the global size: with separate BatchNorm the reference code's local pairs
  // are (global i, global 0) and (global i, global 1), whatever the local views hold; 'local'
  // with local views that copy the global views computes the same pairs
  const b = batch([16, 16, 16, 16]);
  const copies: Batch = { ...b, views: [b.views[0], b.views[1], b.views[0], b.views[1]] };
  const opts = { numLocal: 2, localSize: 16, bnViews: 'separate' as const };
  const code = step(encoder, b, { ...opts, localPairs: 'reference-code' });
  const asCopies = step(encoder, copies, { ...opts, localPairs: 'local' });
  const local = step(encoder, b, { ...opts, localPairs: 'local' });
  assert.ok(Math.abs(code.loss - asCopies.loss) < 1e-6, `${code.loss} vs ${asCopies.loss}`);
  assert.ok(Math.abs(code.metrics.loss_local - asCopies.metrics.loss_local) < 1e-6);
  assert.is(code.metrics.loss_global, local.metrics.loss_global, 'the global pairs are the same');
  assert.ok(Math.abs(code.metrics.loss_local - local.metrics.loss_local) > 1e-3, 'reference-code pairs the local views');
  [...code.heads, ...asCopies.heads, ...local.heads].forEach((h) => h.params.dispose());
});

test.after(() => encoder.dispose());

test.run();

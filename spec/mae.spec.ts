import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../runtime/backend';
import { Rng } from '../lib/rng';
import { maskedMse, normalisePatches, patchify, randomMasking, MaeDecoder, maeLoss } from '../models/mae';
import { VisionTransformer } from '../models/vit';

test.before(async () => {
  await initBackend(() => undefined);
});

test('random masking keeps (1 - ratio) of the patches, disjoint from the masked ones, per sample', () => {
  const plan = randomMasking(4, 16, 0.75, new Rng(3));
  const keep = plan.keep.arraySync() as number[][];
  const mask = plan.mask.arraySync() as number[][];
  const restore = plan.restore.arraySync() as number[][];
  assert.equal(plan.keep.shape, [4, 4]);
  for (let b = 0; b < 4; b++) {
    assert.is(mask[b].reduce((s, v) => s + v, 0), 12);
    assert.is(new Set(keep[b]).size, 4);
    for (const k of keep[b]) assert.is(mask[b][k], 0, 'kept patch marked masked');
    // restore[p] < K exactly for kept patches, and restore is a permutation
    assert.equal([...restore[b]].sort((x, y) => x - y), [...Array(16).keys()]);
    for (let p = 0; p < 16; p++) assert.is(restore[b][p] < 4, mask[b][p] === 0);
  }
  assert.not.equal(keep[0], keep[1], 'samples share a mask');
  const again = randomMasking(4, 16, 0.75, new Rng(3));
  assert.equal(again.keep.arraySync(), keep, 'same seed, different mask');
  tf.dispose([plan.keep, plan.mask, plan.restore, again.keep, again.mask, again.restore]);
});

test('patchify flattens each patch row-major with channels last', () => {
  // 1 image 4x4x3, patch 2: value = 100*y + 10*x + c
  const data = new Float32Array(48);
  for (let y = 0; y < 4; y++) for (let x = 0; x < 4; x++) for (let c = 0; c < 3; c++) data[(y * 4 + x) * 3 + c] = 100 * y + 10 * x + c;
  const p = patchify(tf.tensor4d(data, [1, 4, 4, 3]), 2).arraySync()[0];
  assert.equal(p[1], [20, 21, 22, 30, 31, 32, 120, 121, 122, 130, 131, 132]); // patch (row 0, col 1)
  assert.equal(p[2].slice(0, 3), [200, 201, 202]); // patch (row 1, col 0)
});

test('normalised-pixel MSE on masked patches equals the hand-computed value', () => {
  // two patches of 4 values; target normalised with unbiased variance (torch.var) and eps 1e-6
  const target = tf.tensor3d([[[1, 2, 3, 4], [2, 2, 2, 6]]]);
  const normed = normalisePatches(target).arraySync()[0];
  const sd = Math.sqrt(5 / 3 + 1e-6);
  assert.ok(Math.abs(normed[0][0] - (1 - 2.5) / sd) < 1e-5);
  const pred = tf.zeros([1, 2, 4]) as tf.Tensor3D;
  // only patch 1 masked: loss = mean(normed[1]^2) = (n-1)/n * var/(var+eps) = 0.75
  const loss = maskedMse(pred, normalisePatches(target), tf.tensor2d([[0, 1]])).dataSync()[0];
  assert.ok(Math.abs(loss - 0.75) < 1e-4, `loss ${loss}`);
});

test('MAE loss trains down on a fixed batch without leaking tensors', () => {
  const enc = new VisionTransformer({ imgSize: 16, patchSize: 4, embedDim: 32, depth: 2, numHeads: 2, mlpRatio: 2, act: 'gelu', posEmbed: 'sincos' });
  const dec = new MaeDecoder(enc, { dim: 16, depth: 1, numHeads: 2 });
  const images = tf.randomNormal([4, 16, 16, 3], 0, 1, 'float32', 1) as tf.Tensor4D;
  const opt = tf.train.adam(3e-3);
  const losses: number[] = [];
  let tensors = 0;
  for (let s = 0; s < 25; s++) {
    const plan = randomMasking(4, 16, 0.75, new Rng(0, s % 2));
    const loss = opt.minimize(() => maeLoss(enc, dec, images, plan), true)!;
    losses.push(loss.dataSync()[0]);
    tf.dispose([loss, plan.keep, plan.mask, plan.restore]);
    if (s === 2) tensors = tf.memory().numTensors;
  }
  assert.is(tf.memory().numTensors, tensors, 'tensor count grew across steps');
  assert.ok(losses[24] < 0.8 * losses[0], `loss ${losses[0]} -> ${losses[24]}`);
  opt.dispose();
  enc.dispose();
  dec.params.dispose();
});

test.run();

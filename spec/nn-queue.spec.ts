import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../runtime/backend';
import { Rng } from '../lib/rng';
import { NnQueue } from '../models/nn-queue';

test.before(async () => {
  await initBackend(() => undefined);
});

test('lookup returns the most similar entry of another sample, never the sample itself', async () => {
  const q = new NnQueue(4, 2, 0);
  // entries: sample 10 at angle 0, sample 11 at 10 deg, sample 12 at 90 deg, sample 13 at 180 deg
  const deg = (a: number) => [Math.cos((a * Math.PI) / 180), Math.sin((a * Math.PI) / 180)];
  q.push(tf.tensor2d([deg(0), deg(10), deg(90), deg(180)].flat(), [4, 2]), Int32Array.of(10, 11, 12, 13), Int32Array.of(0, 0, 1, 2));
  // query sample 10 at 1 deg: its own entry (0 deg) is masked, so the NN is sample 11 (10 deg)
  const r = q.lookup(tf.tensor2d([deg(1), deg(95)].flat(), [2, 2]), Int32Array.of(10, 99), Int32Array.of(0, 1), 1, new Rng(0));
  const picked = await r.swapped.array();
  assert.ok(Math.abs(picked[0][0] - deg(10)[0]) < 1e-6 && Math.abs(picked[0][1] - deg(10)[1]) < 1e-6);
  assert.ok(Math.abs(picked[1][1] - 1) < 1e-6, 'query at 95 deg should pick the 90 deg entry');
  assert.ok(Math.abs((await r.similarity.data())[0] - (Math.cos((9 * Math.PI) / 180) + Math.cos((5 * Math.PI) / 180)) / 2) < 1e-5);
  assert.is((await r.accuracy.data())[0], 1);
  tf.dispose([r.swapped, r.similarity, r.accuracy]);
  q.dispose();
});

test('top-k picks uniformly among the k nearest; push wraps around FIFO', async () => {
  const q = new NnQueue(3, 2, 0);
  q.push(tf.tensor2d([1, 0, 0, 1, -1, 0], [3, 2]), Int32Array.of(0, 1, 2), Int32Array.of(0, 1, 2));
  const seen = new Set<string>();
  for (let s = 0; s < 40; s++) {
    const r = q.lookup(tf.tensor2d([1, 0.1], [1, 2]), Int32Array.of(7), Int32Array.of(-1), 2, new Rng(s));
    seen.add((await r.swapped.array())[0].map((v) => v.toFixed(3)).join(','));
    assert.ok(Number.isNaN((await r.accuracy.data())[0]), 'no labels, no accuracy');
    tf.dispose([r.swapped, r.similarity, r.accuracy]);
  }
  assert.equal([...seen].sort(), ['0.000,1.000', '1.000,0.000'], 'top-2 of [1, 0.1] are entries 0 and 1');
  // two more pushes overwrite the two oldest entries (0 and 1); entry 2 survives
  q.push(tf.tensor2d([0, -2, 3, 4], [2, 2]), Int32Array.of(5, 6), Int32Array.of(5, 6));
  const state = await q.exportState('q');
  assert.equal(Array.from(state['q.indices'].data), [5, 6, 2]);
  assert.equal(Array.from(state['q.vectors'].data).map((v) => +v.toFixed(3)), [0, -1, 0.6, 0.8, -1, 0]);
  assert.equal(Array.from(state['q.pointer'].data), [2]);
  q.dispose();
});

test('top-k on a larger queue equals a full sort with same-sample and empty entries masked', async () => {
  const size = 300, dim = 8, b = 5, k = 4;
  const q = new NnQueue(size, dim, 3);
  const rng = new Rng(9);
  // 250 filled entries over 40 samples (repeats), the last 50 slots still empty (index -1)
  const entryIdx = Int32Array.from({ length: 250 }, () => rng.int(40));
  q.push(tf.randomNormal([250, dim], 0, 1, 'float32', 4) as tf.Tensor2D, entryIdx, Int32Array.from(entryIdx, (i) => i % 10));
  const z = tf.randomNormal([b, dim], 0, 1, 'float32', 5) as tf.Tensor2D;
  const samples = Int32Array.of(3, 17, 17, 39, 1000);
  const vectors = (await q.exportState('q'))['q.vectors'].data as Float32Array;
  const zs = await z.array();
  for (let i = 0; i < b; i++) {
    const norm = Math.hypot(...zs[i]);
    const scored = Array.from({ length: size }, (_, e) => {
      const masked = e >= 250 || entryIdx[e] === samples[i];
      let dot = 0;
      for (let d = 0; d < dim; d++) dot += vectors[e * dim + d] * zs[i][d];
      return { e, v: masked ? -1 : dot / norm };
    }).sort((x, y) => y.v - x.v || x.e - y.e);
    const expected = new Set(scored.slice(0, k).map((x) => x.e));
    const seen = new Set<number>();
    for (let s = 0; s < 60; s++) {
      const r = q.lookup(z, samples, Int32Array.from(samples, () => -1), k, new Rng(s));
      const row = Array.from((await r.swapped.array())[i]);
      tf.dispose([r.swapped, r.similarity, r.accuracy]);
      const hit = scored.slice(0, k).find(({ e }) => row.every((v, d) => Math.abs(v - vectors[e * dim + d]) < 1e-6));
      assert.ok(hit, `row ${i}: picked vector is not among the ${k} nearest`);
      seen.add(hit!.e);
    }
    assert.equal([...seen].sort((x, y) => x - y), [...expected].sort((x, y) => x - y), `row ${i}`);
  }
  z.dispose();
  q.dispose();
});

test('state round-trips exactly', async () => {
  const a = new NnQueue(5, 3, 1);
  a.push(tf.randomNormal([4, 3], 0, 1, 'float32', 2) as tf.Tensor2D, Int32Array.of(1, 2, 3, 4), Int32Array.of(0, 1, 0, 1));
  const state = await a.exportState('x');
  const b = new NnQueue(5, 3, 9);
  b.importState((k) => state[k], 'x', 'test');
  assert.equal(await b.exportState('x'), state);
  assert.throws(() => new NnQueue(6, 3, 0).importState((k) => state[k], 'x', 'file.safetensors'), /file.safetensors: queue state x.vectors/);
  a.dispose();
  b.dispose();
});

test('lookup and push read nothing back and leak nothing; accuracy comes from device-side labels, also after import', async () => {
  const q = new NnQueue(6, 2, 0);
  q.push(tf.tensor2d([1, 0, 0, 1, -1, 0], [3, 2]), Int32Array.of(0, 1, 2), Int32Array.of(4, 5, 6));
  // the user-level synchronous reads (a wasm kernel's own heap reads are no device reads)
  const proto = tf.Tensor.prototype;
  const [dataSync, arraySync] = [proto.dataSync, proto.arraySync];
  let syncReads = 0;
  proto.dataSync = function (this: tf.Tensor) { syncReads++; return dataSync.call(this); } as typeof dataSync;
  proto.arraySync = function (this: tf.Tensor) { syncReads++; return arraySync.call(this); } as typeof arraySync;
  const z = tf.tensor2d([0.9, 0.1, 0.1, 0.9], [2, 2]);
  const before = tf.memory().numTensors;
  const r = q.lookup(z, Int32Array.of(7, 8), Int32Array.of(4, 6), 1, new Rng(0));
  q.push(z, Int32Array.of(7, 8), Int32Array.of(4, 6));
  Object.assign(proto, { dataSync, arraySync });
  assert.is(syncReads, 0, 'lookup/push made a synchronous read');
  assert.is(tf.memory().numTensors, before + 3, 'lookup returns three tensors and keeps nothing else');
  // row 0 picks entry 0 (label 4 = its label), row 1 entry 1 (label 5, not 6)
  assert.is((await r.accuracy.data())[0], 0.5);
  tf.dispose([r.swapped, r.similarity, r.accuracy]);
  const copy = new NnQueue(6, 2, 1);
  const state = await q.exportState('q');
  copy.importState((k) => state[k], 'q', 'test');
  const r2 = copy.lookup(tf.tensor2d([0, 1], [1, 2]), Int32Array.of(99), Int32Array.of(5), 1, new Rng(0));
  assert.is((await r2.accuracy.data())[0], 1, 'entry 1 (label 5) after import');
  tf.dispose([r2.swapped, r2.similarity, r2.accuracy, z]);
  q.dispose();
  copy.dispose();
});

test.run();

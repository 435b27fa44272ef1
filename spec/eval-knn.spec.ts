import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { initBackend } from '../runtime/backend';
import { Rng } from '../lib/rng';
import { featureMatrix, FeatureMatrix } from '../eval/features';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { KNN_DEFAULTS, knnClassify, onOff, trainStatistics, weightedVotes } from '../eval/knn';
import { rejects } from './eval-helpers';

test.before(async () => {
  await initBackend(() => {});
});

// Five train points in 2-D (norms vary on purpose: only directions count).
const train = featureMatrix(new Float32Array([2, 0, 0.8, 0.6, 4, -3, 0, 1, -1, -0.1]), 5, 2);
const trainLabels = new Int32Array([0, 1, 1, 0, 2]);
const test_ = featureMatrix(new Float32Array([1, 0, 0, 3, -2, 0.1]), 3, 2);
const testLabels = new Int32Array([0, 0, 2]);

test('weightedVotes sums exp(sim / T) per class', async () => {
  const v = weightedVotes([1, 0.8, 0.8], [0, 1, 1], 3, 0.07);
  assert.ok(Math.abs(v[0] - Math.exp(1 / 0.07)) < 1e-6 * v[0]);
  assert.ok(Math.abs(v[1] - 2 * Math.exp(0.8 / 0.07)) < 1e-6 * v[1]);
  assert.is(v[2], 0);
});

test('hand-computed example (L2 only, the DINO rule): one close neighbour outvotes two farther ones at T = 0.07', async () => {
  // Test row 0 = (1, 0): cosine 1 to train 0 (class 0), 0.8 to train 1 and 2 (class 1).
  // Votes at T = 0.07: class 0 e^14.29 > class 1 2 e^11.43, so class 0 (a plain majority says 1).
  // Row 1 = (0, 3): neighbours train 3 (1.0, class 0), train 1 (0.6, class 1), train 0 (0, class 0).
  // Row 2 = (-2, 0.1): nearest is train 4 (0.989, class 2), then train 3 (0.05) and train 1 (-0.77).
  const r = await knnClassify(train, trainLabels, test_, testLabels, { k: 3, standardise: false });
  assert.equal(Array.from(r.predictions), [0, 0, 2]);
  assert.is(r.accuracy, 1);
  assert.is(r.k, 3);
});

test('temperature matters: at T = 1 the two class-1 neighbours win row 0', async () => {
  // class 0: e^1 = 2.718; class 1: 2 e^0.8 = 4.451.
  const r = await knnClassify(train, trainLabels, test_, testLabels, { k: 3, temperature: 1, standardise: false });
  assert.equal(Array.from(r.predictions), [1, 0, 2]);
  assert.ok(Math.abs(r.accuracy - 2 / 3) < 1e-12);
});

test('k larger than the train set is clamped', async () => {
  const r = await knnClassify(train, trainLabels, test_, testLabels, { k: 50 });
  assert.is(r.k, 5);
});

/** float64 brute force of the same rule. */
function reference(tr: FeatureMatrix, trL: Int32Array, te: FeatureMatrix, k: number, T: number, classes: number): Int32Array {
  const unit = (m: FeatureMatrix, r: number) => {
    const row = Array.from(m.data.subarray(r * m.dim, (r + 1) * m.dim));
    const n = Math.hypot(...row);
    return row.map((x) => x / n);
  };
  const trU = Array.from({ length: tr.rows }, (_, r) => unit(tr, r));
  return Int32Array.from({ length: te.rows }, (_, r) => {
    const q = unit(te, r);
    const sims = trU.map((t, i) => ({ s: t.reduce((a, x, j) => a + x * q[j], 0), i }));
    sims.sort((a, b) => b.s - a.s);
    const top = sims.slice(0, k);
    const v = weightedVotes(top.map((x) => x.s), top.map((x) => trL[x.i]), classes, T);
    return v.indexOf(Math.max(...v));
  });
}

test('matches a float64 brute force on random data, whatever the chunk size', async () => {
  const rng = new Rng(7);
  const rand = (rows: number, dim: number) => featureMatrix(Float32Array.from({ length: rows * dim }, () => rng.normal()), rows, dim);
  const tr = rand(300, 16);
  const te = rand(57, 16);
  const trL = Int32Array.from({ length: 300 }, () => rng.int(5));
  const teL = Int32Array.from({ length: 57 }, () => rng.int(5));
  const ref = reference(tr, trL, te, 20, 0.07, 5);
  for (const chunkRows of [1, 10, 1000]) {
    const r = await knnClassify(tr, trL, te, teL, { chunkRows, standardise: false });
    let mismatches = 0;
    for (let i = 0; i < te.rows; i++) if (r.predictions[i] !== ref[i]) mismatches++;
    // float32 vs float64 similarities could only flip an exact near-tie.
    assert.ok(mismatches <= 1, `chunkRows ${chunkRows}: ${mismatches} predictions differ`);
  }
});

test('rejects mismatched shapes and missing labels', async () => {
  await rejects(() => knnClassify(train, trainLabels, featureMatrix(new Float32Array(3), 1, 3), new Int32Array([0])), /dim/);
  await rejects(() => knnClassify(train, new Int32Array([0, 1, -1, 0, 2]), test_, testLabels), /unlabelled/);
});

/** PyTorch's predictions (scripts/make-knn-fixture.py) of the reference rule and of the L2-only rule, k 20 and 10. */
const fixture = JSON.parse(fs.readFileSync(path.join(__dirname, 'fixtures', 'knn.json'), 'utf8'));
const fx = {
  train: featureMatrix(Float32Array.from(fixture.train.x), fixture.train.y.length, fixture.dim),
  trainLabels: Int32Array.from(fixture.train.y),
  test: featureMatrix(Float32Array.from(fixture.test.x), fixture.test.y.length, fixture.dim),
  testLabels: Int32Array.from(fixture.test.y),
};

test('the defaults are the reference\'s: standardised, k 20, T 0.07', () => {
  assert.equal({ ...KNN_DEFAULTS }, { k: 20, temperature: 0.07, standardise: true });
});

for (const c of fixture.cases as { standardise: boolean; k: number; temperature: number; predictions: number[]; accuracy: number }[]) {
  test(`matches PyTorch: standardise ${c.standardise}, k ${c.k}`, async () => {
    const r = await knnClassify(fx.train, fx.trainLabels, fx.test, fx.testLabels, { k: c.k, temperature: c.temperature, standardise: c.standardise });
    assert.equal(Array.from(r.predictions), c.predictions);
    assert.ok(Math.abs(r.accuracy - c.accuracy) < 1e-12, `${r.accuracy} vs ${c.accuracy}`);
  });
}

test('the default is the standardised rule, and standardising changes the answer on this data', async () => {
  const byDefault = await knnClassify(fx.train, fx.trainLabels, fx.test, fx.testLabels);
  const ref = fixture.cases.find((c: { standardise: boolean; k: number }) => c.standardise && c.k === 20);
  const plain = fixture.cases.find((c: { standardise: boolean; k: number }) => !c.standardise && c.k === 20);
  assert.equal(Array.from(byDefault.predictions), ref.predictions);
  const differ = ref.predictions.filter((p: number, i: number) => p !== plain.predictions[i]).length;
  assert.ok(differ > 10, `only ${differ} rows differ between the two rules`);
});

test('trainStatistics: torch\'s mean and std with Bessel\'s correction, plus 1e-6', () => {
  const s = trainStatistics(featureMatrix(new Float32Array([1, 10, 3, 10, 5, 10]), 3, 2));
  assert.equal(Array.from(s.mean), [3, 10]);
  assert.ok(Math.abs(s.std[0] - (2 + 1e-6)) < 1e-12, `${s.std[0]}`); // sqrt(((1-3)^2 + 0 + (5-3)^2) / 2) = 2
  assert.is(s.std[1], 1e-6);
});

test('onOff parses on/off and names the flag otherwise', () => {
  assert.is(onOff('knn-standardise', 'on'), true);
  assert.is(onOff('knn-standardise', 'off'), false);
  assert.throws(() => onOff('knn-standardise', 'yes'), /--knn-standardise: expected on or off, got 'yes'/);
});

test.run();

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { initBackend } from '../runtime/backend';
import { Rng } from '../lib/rng';
import { featureMatrix } from '../eval/features';
import { rejects } from './eval-helpers';
import { DEFAULT_GRID, fitStandardizer, linearProbe, predictSoftmax, standardize, trainSoftmax } from '../eval/linear-probe';

test.before(async () => {
  await initBackend(() => {});
});

/** Class prototypes plus noise, with an offset and uneven scales per dimension (what standardising is for). */
function dataset(rows: number, dim: number, classes: number, noise: number, seed: number, protoSeed = 99) {
  const pr = new Rng(protoSeed);
  const proto = Float32Array.from({ length: classes * dim }, () => pr.normal());
  const scale = Float32Array.from({ length: dim }, () => 0.1 + 10 * pr.next());
  const rng = new Rng(seed);
  const data = new Float32Array(rows * dim);
  const labels = new Int32Array(rows);
  for (let i = 0; i < rows; i++) {
    labels[i] = rng.int(classes);
    for (let j = 0; j < dim; j++) data[i * dim + j] = (proto[labels[i] * dim + j] + noise * rng.normal()) * scale[j] + 3;
  }
  return { x: featureMatrix(data, rows, dim), labels };
}

test('standardize: train mean 0, std 1 per dimension', async () => {
  const { x } = dataset(500, 8, 3, 0.5, 1);
  const z = standardize(x, fitStandardizer(x));
  for (let j = 0; j < 8; j++) {
    let s = 0, ss = 0;
    for (let i = 0; i < 500; i++) { s += z.data[i * 8 + j]; ss += z.data[i * 8 + j] ** 2; }
    assert.ok(Math.abs(s / 500) < 1e-4 && Math.abs(ss / 500 - 1) < 1e-3);
  }
});

test('linearly separable data: ~100% test accuracy', async () => {
  const train = dataset(2000, 32, 6, 0.15, 1);
  const testSet = dataset(600, 32, 6, 0.15, 2);
  const r = await linearProbe(train.x, train.labels, testSet.x, testSet.labels, { seed: 0 });
  assert.ok(r.accuracy >= 0.99, `accuracy ${r.accuracy}`);
  assert.is(r.sweep.length, DEFAULT_GRID.length);
  assert.ok(DEFAULT_GRID.includes(r.best));
  assert.is(r.predictions.length, 600);
});

test('random labels: test accuracy stays near chance', async () => {
  const classes = 4;
  const train = dataset(2000, 64, classes, 1, 3);
  const testSet = dataset(1000, 64, classes, 1, 4);
  const rng = new Rng(5);
  const shuffled = (n: number) => Int32Array.from({ length: n }, () => rng.int(classes));
  const r = await linearProbe(train.x, shuffled(2000), testSet.x, shuffled(1000), { seed: 0 });
  assert.ok(Math.abs(r.accuracy - 1 / classes) < 0.06, `accuracy ${r.accuracy}`);
});

test('one configuration: no sweep, same result as training it directly', async () => {
  const train = dataset(300, 8, 3, 0.8, 6);
  const testSet = dataset(200, 8, 3, 0.8, 7);
  const config = { lr: 1e-2, weightDecay: 1e-3 };
  const r = await linearProbe(train.x, train.labels, testSet.x, testSet.labels, { grid: [config], seed: 1 });
  assert.equal(r.sweep, []);
  assert.is(r.best, config);
  const s = fitStandardizer(train.x);
  const model = await trainSoftmax(standardize(train.x, s), train.labels, [config], { numClasses: 3, seed: 1 });
  assert.equal(Array.from((await predictSoftmax(model, standardize(testSet.x, s)))[0]), Array.from(r.predictions));
});

test('stacked configurations train exactly as if trained one by one', async () => {
  const { x, labels } = dataset(400, 12, 5, 1, 8);
  const z = standardize(x, fitStandardizer(x));
  const grid = [{ lr: 1e-3, weightDecay: 0 }, { lr: 3e-2, weightDecay: 1e-2 }];
  const opts = { numClasses: 5, seed: 2, epochs: 3, minSteps: 20, batchSize: 64 };
  const stacked = await trainSoftmax(z, labels, grid, opts);
  for (const [g, config] of grid.entries()) {
    const alone = await trainSoftmax(z, labels, [config], opts);
    for (let j = 0; j < 12; j++) {
      for (let c = 0; c < 5; c++) {
        const a = stacked.weights[j * 10 + g * 5 + c], b = alone.weights[j * 5 + c];
        assert.ok(Math.abs(a - b) <= 1e-4 * (1 + Math.abs(b)), `config ${g} W[${j},${c}]: ${a} vs ${b}`);
      }
    }
    for (let c = 0; c < 5; c++) assert.ok(Math.abs(stacked.bias[g * 5 + c] - alone.bias[c]) <= 1e-4);
  }
});

test('a validation set is scored with the same classifier as test', async () => {
  const train = dataset(600, 16, 4, 0.8, 11);
  const testSet = dataset(300, 16, 4, 0.8, 12);
  const r = await linearProbe(train.x, train.labels, testSet.x, testSet.labels, { seed: 3, val: { features: testSet.x, labels: testSet.labels } });
  assert.is(r.valAccuracy, r.accuracy);
  const other = await linearProbe(train.x, train.labels, testSet.x, testSet.labels, { seed: 3 });
  assert.is(other.valAccuracy, undefined);
  assert.is(other.accuracy, r.accuracy);
});

test('rejects mismatched dims', async () => {
  const a = dataset(20, 4, 2, 1, 1), b = dataset(20, 5, 2, 1, 1);
  await rejects(() => linearProbe(a.x, a.labels, b.x, b.labels), /dim/);
});

test.run();

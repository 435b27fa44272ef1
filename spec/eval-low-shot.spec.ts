import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { initBackend } from '../runtime/backend';
import { Rng } from '../runtime/rng';
import { featureMatrix } from '../eval/features';
import { lowShot, sampleShots } from '../eval/low-shot';

test.before(async () => {
  await initBackend(() => {});
});

const labels = Int32Array.from({ length: 60 }, (_, i) => (i < 3 ? 4 : i % 4)); // class 4 has only 3 images

test('sampleShots: n per class (all of a smaller class), nested over n, seeded', () => {
  for (const shots of [1, 2, 5]) {
    const rows = sampleShots(labels, shots, 0);
    const perClass = [0, 0, 0, 0, 0];
    for (const r of rows) perClass[labels[r]]++;
    assert.equal(perClass, [shots, shots, shots, shots, Math.min(shots, 3)]);
    assert.is(new Set(rows).size, rows.length);
  }
  const one = sampleShots(labels, 1, 7), two = sampleShots(labels, 2, 7), five = sampleShots(labels, 5, 7);
  assert.ok([...one].every((r) => two.includes(r)) && [...two].every((r) => five.includes(r)), 'draws not nested');
  assert.equal(Array.from(sampleShots(labels, 2, 7)), Array.from(two));
  assert.not.equal(Array.from(sampleShots(labels, 2, 8)), Array.from(two));
});

function dataset(rows: number, dim: number, classes: number, noise: number, seed: number) {
  const pr = new Rng(42);
  const proto = Float32Array.from({ length: classes * dim }, () => pr.normal());
  const rng = new Rng(seed);
  const y = Int32Array.from({ length: rows }, () => rng.int(classes));
  const data = Float32Array.from({ length: rows * dim }, (_, k) => proto[y[Math.floor(k / dim)] * dim + (k % dim)] + noise * rng.normal());
  return { x: featureMatrix(data, rows, dim), y };
}

test('lowShot: accuracy per shot count with mean and std over seeds, improving with more shots', () => {
  const train = dataset(1000, 64, 8, 1.5, 1);
  const testSet = dataset(500, 64, 8, 1.5, 2);
  const r = lowShot(train.x, train.y, testSet.x, testSet.y, { seeds: [0, 1, 2, 3], minSteps: 100 });
  assert.equal(r.map((x) => x.shots), [1, 2, 5]);
  for (const x of r) {
    assert.is(x.accuracies.length, 4);
    const mean = x.accuracies.reduce((a, b) => a + b) / 4;
    assert.ok(Math.abs(x.mean - mean) < 1e-12);
    assert.ok(Math.abs(x.std - Math.sqrt(x.accuracies.reduce((a, b) => a + (b - mean) ** 2, 0) / 4)) < 1e-12);
    assert.ok(x.mean > 0.3, `${x.shots}-shot mean ${x.mean} (chance 0.125)`);
  }
  assert.ok(r[2].mean > r[0].mean, `5-shot ${r[2].mean} <= 1-shot ${r[0].mean}`);
  assert.ok(r[2].mean > 0.9, `5-shot ${r[2].mean}`);
});

test.run();

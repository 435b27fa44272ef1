import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { initBackend } from '../runtime/backend';
import { Rng } from '../lib/rng';
import { checkEveryClassTrained, featureMatrix } from '../eval/features';
import { checkShots, lowShot, parseShots, sampleShots, shotName } from '../eval/low-shot';
import { rejects } from './eval-helpers';

test.before(async () => {
  await initBackend(() => {});
});

const labels = Int32Array.from({ length: 60 }, (_, i) => (i < 3 ? 4 : i % 4)); // class 4 has only 3 images

test('sampleShots: n per class, nested over n, seeded', () => {
  for (const shots of [1, 2, 3]) {
    const rows = sampleShots(labels, { perClass: shots }, 0);
    const perClass = [0, 0, 0, 0, 0];
    for (const r of rows) perClass[labels[r]]++;
    assert.equal(perClass, [shots, shots, shots, shots, shots]);
    assert.is(new Set(rows).size, rows.length);
  }
  const one = sampleShots(labels, { perClass: 1 }, 7), two = sampleShots(labels, { perClass: 2 }, 7), three = sampleShots(labels, { perClass: 3 }, 7);
  assert.ok([...one].every((r) => two.includes(r)) && [...two].every((r) => three.includes(r)), 'draws not nested');
  assert.equal(Array.from(sampleShots(labels, { perClass: 2 }, 7)), Array.from(two));
  assert.not.equal(Array.from(sampleShots(labels, { perClass: 2 }, 8)), Array.from(two));
});

test('a setting larger than a class is an error naming the class', () => {
  assert.throws(() => sampleShots(labels, { perClass: 5 }, 0, ['a', 'b', 'c', 'd', 'elk']), /5 images per class .* class 4 \(elk\) has only 3 train images/);
  assert.throws(() => checkShots(labels, [{ perClass: 1 }, { perClass: 4 }]), /class 4 has only 3/);
  checkShots(labels, [{ perClass: 3 }, { percent: 100 }]);
});

test('p%: that share of each class (rounded, at least one), nested with the per-class settings', () => {
  const big = Int32Array.from({ length: 1000 }, (_, i) => (i < 700 ? 0 : i < 950 ? 1 : 2)); // 700 / 250 / 50
  const rows = sampleShots(big, { percent: 1 }, 4);
  const perClass = [0, 0, 0];
  for (const r of rows) perClass[big[r]]++;
  assert.equal(perClass, [7, 3, 1]); // 1% of 700, of 250 (2.5 rounds to 3), of 50 (0.5 -> at least 1)
  const one = sampleShots(big, { perClass: 1 }, 4);
  assert.ok([...one].every((r) => rows.includes(r)), '1-shot draw not inside the 1% draw');
});

test('parseShots: numbers and shares; anything else names the bad part', () => {
  assert.equal(parseShots('1,2,5,1%'), [{ perClass: 1 }, { perClass: 2 }, { perClass: 5 }, { percent: 1 }]);
  assert.equal(parseShots(' 10 , 0.5% '), [{ perClass: 10 }, { percent: 0.5 }]);
  for (const bad of ['0', '-1', '1.5', '0%', '101%', 'x', '']) assert.throws(() => parseShots(bad), /--shots/, bad);
  assert.equal(parseShots('1,1%').map(shotName), ['1', '1%']);
});

function dataset(rows: number, dim: number, classes: number, noise: number, seed: number) {
  const pr = new Rng(42);
  const proto = Float32Array.from({ length: classes * dim }, () => pr.normal());
  const rng = new Rng(seed);
  const y = Int32Array.from({ length: rows }, () => rng.int(classes));
  const data = Float32Array.from({ length: rows * dim }, (_, k) => proto[y[Math.floor(k / dim)] * dim + (k % dim)] + noise * rng.normal());
  return { x: featureMatrix(data, rows, dim), y };
}

test('lowShot: accuracy per shot count with mean and std over seeds, improving with more shots', async () => {
  const train = dataset(1000, 64, 8, 1.5, 1);
  const testSet = dataset(500, 64, 8, 1.5, 2);
  const r = await lowShot(train.x, train.y, testSet.x, testSet.y, { seeds: [0, 1, 2, 3], minSteps: 100 });
  assert.equal(r.map((x) => x.setting), ['1', '2', '5', '1%']);
  assert.equal(r.slice(0, 3).map((x) => x.images), [8, 16, 40]);
  assert.ok(r[3].images >= 8 && r[3].images <= 12, `1% of ~125 per class: ${r[3].images} images`);
  for (const x of r) {
    assert.is(x.accuracies.length, 4);
    const mean = x.accuracies.reduce((a, b) => a + b) / 4;
    assert.ok(Math.abs(x.mean - mean) < 1e-12);
    assert.ok(Math.abs(x.std - Math.sqrt(x.accuracies.reduce((a, b) => a + (b - mean) ** 2, 0) / 4)) < 1e-12);
    assert.ok(x.mean > 0.3, `${x.setting}-shot mean ${x.mean} (chance 0.125)`);
  }
  assert.ok(r[2].mean > r[0].mean, `5-shot ${r[2].mean} <= 1-shot ${r[0].mean}`);
  assert.ok(r[2].mean > 0.9, `5-shot ${r[2].mean}`);
});

test('lowShot: a class too small for a setting fails before any training, naming the class', async () => {
  const train = dataset(100, 8, 4, 1, 1);
  const testSet = dataset(50, 8, 4, 1, 2);
  const y = train.y.map((l, i) => (l === 2 && i > 10 ? 3 : l)) as Int32Array; // class 2 keeps a few images
  const left = y.filter((l) => l === 2).length;
  await rejects(() => lowShot(train.x, y, testSet.x, testSet.y, { shots: [{ perClass: 1 }, { perClass: left + 1 }], classNames: ['a', 'b', 'cat', 'd'] }), new RegExp(`class 2 \\(cat\\) has only ${left}`));
});

test('lowShot: a test class without any train image is refused, naming it and the accuracy cap, before any training', async () => {
  const train = dataset(200, 8, 4, 0.3, 1);
  const testSet = dataset(100, 8, 4, 0.3, 2);
  const keep = Array.from(train.y.keys()).filter((i) => train.y[i] !== 3); // class 3 (grey) loses every train image
  const x = featureMatrix(Float32Array.from(keep.flatMap((i) => Array.from(train.x.data.subarray(i * 8, (i + 1) * 8)))), keep.length, 8);
  const y = Int32Array.from(keep, (i) => train.y[i]);
  const untrained = testSet.y.filter((l) => l === 3).length;
  const cap = ((100 * (testSet.y.length - untrained)) / testSet.y.length).toFixed(1);
  const t0 = performance.now();
  await rejects(
    () => lowShot(x, y, testSet.x, testSet.y, { shots: [{ perClass: 1 }], classNames: ['red', 'green', 'blue', 'grey'] }),
    new RegExp(`^low-shot: a class has evaluation images but no training images \\(class 3 \\(grey\\): ${untrained} images\\); no classifier can predict it, so accuracy would be capped at ${cap.replace('.', '\\.')}%`),
  );
  assert.ok(performance.now() - t0 < 500, 'refused before training');
  // the same sets with class 3's train images: a result, and near perfect (so the cap above is real)
  const [r] = await lowShot(train.x, train.y, testSet.x, testSet.y, { shots: [{ perClass: 5 }], seeds: [0], minSteps: 100 });
  assert.ok(r.mean > 0.9, `5-shot with every class trained: ${r.mean}`);
});

test('checkEveryClassTrained (the long-tail path): several untrained classes named with their counts', () => {
  const train = Int32Array.from([0, 0, 1, 1]);
  checkEveryClassTrained(train, Int32Array.from([1, 0, 1]), 'long-tail');
  assert.throws(
    () => checkEveryClassTrained(train, Int32Array.from([0, 2, 2, 5, 1]), 'long-tail (data/lt/train-*.tar)', ['a', 'b', 'c']),
    /^long-tail \(data\/lt\/train-\*\.tar\): 2 classes have evaluation images but no training images \(class 2 \(c\): 2 images, class 5: 1 image\); no classifier can predict them, so accuracy would be capped at 40\.0%/,
  );
});

test.run();

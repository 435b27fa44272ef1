import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { initBackend } from '../runtime/backend';
import { Rng } from '../lib/rng';
import { featureMatrix } from '../eval/features';
import { kmeans } from '../eval/kmeans';
import { rejects } from './eval-helpers';
import { clusterScores } from '../eval/cluster-metrics';

test.before(async () => {
  await initBackend(() => {});
});

test('1-D hand example: {0, 1} and {10, 11}', async () => {
  const r = await kmeans(featureMatrix(new Float32Array([0, 10, 1, 11]), 4, 1), { k: 2, seed: 3 });
  assert.is(r.assignments[0], r.assignments[2]);
  assert.is(r.assignments[1], r.assignments[3]);
  assert.is.not(r.assignments[0], r.assignments[1]);
  assert.equal(Array.from(r.centroids.data).sort((a, b) => a - b), [0.5, 10.5]);
  assert.is(r.inertia, 1); // 4 * 0.5^2
});

/** `classes` Gaussian blobs (std 0.3) around random centres 10 apart on average, in `dim` dims. */
function blobs(classes: number, perClass: number, dim: number, seed: number) {
  const rng = new Rng(seed);
  const centres = Array.from({ length: classes * dim }, () => rng.normal() * 10);
  const data = new Float32Array(classes * perClass * dim);
  const labels = new Int32Array(classes * perClass);
  for (let i = 0; i < labels.length; i++) {
    labels[i] = i % classes;
    for (let j = 0; j < dim; j++) data[i * dim + j] = centres[labels[i] * dim + j] + 0.3 * rng.normal();
  }
  return { x: featureMatrix(data, labels.length, dim), labels };
}

test('recovers well-separated blobs; keeps the restart with the lowest inertia', async () => {
  const { x, labels } = blobs(8, 50, 16, 1);
  const r = await kmeans(x, { k: 8, seed: 0, nInit: 4 });
  assert.is(r.restartInertias.length, 4);
  assert.is(r.inertia, Math.min(...r.restartInertias));
  const s = clusterScores(labels, r.assignments);
  assert.is(s.acc, 1);
  assert.ok(Math.abs(s.ari - 1) < 1e-12 && Math.abs(s.nmi - 1) < 1e-12);
  // Within-blob scatter: about rows * dim * 0.3^2.
  assert.ok(Math.abs(r.inertia / (400 * 16 * 0.09) - 1) < 0.1, `inertia ${r.inertia}`);
});

test('seeded: the same seed gives the same clustering', async () => {
  const { x } = blobs(5, 30, 4, 2);
  const a = await kmeans(x, { k: 7, seed: 11, nInit: 2 });
  const b = await kmeans(x, { k: 7, seed: 11, nInit: 2 });
  assert.equal(Array.from(a.assignments), Array.from(b.assignments));
  assert.is(a.inertia, b.inertia);
});

test('duplicate points: no empty or NaN clusters', async () => {
  const x = featureMatrix(new Float32Array([0, 0, 0, 0, 0, 1, 2]), 7, 1);
  for (let seed = 0; seed < 10; seed++) {
    const r = await kmeans(x, { k: 3, seed, nInit: 1 });
    assert.is(new Set(r.assignments).size, 3);
    assert.ok(r.centroids.data.every(Number.isFinite));
    assert.is(r.inertia, 0);
  }
});

test('rejects k outside 1..rows', async () => {
  await rejects(() => kmeans(featureMatrix(new Float32Array(4), 2, 2), { k: 3 }), /k = 3/);
});

test.run();

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'fs';
import * as path from 'path';
import { adjustedRandIndex, clusterAccuracy, clusterScores, normalizedMutualInfo } from '../eval/cluster-metrics';
import { linearSumAssignment } from '../eval/hungarian';

interface Case { name: string; labels_true: number[]; labels_pred: number[]; nmi: number; ari: number; acc: number }
// Reference values from scikit-learn / scipy: scripts/make-cluster-fixture.py.
const fixture: { cases: Case[] } = JSON.parse(fs.readFileSync(path.join(__dirname, 'fixtures', 'cluster-metrics.json'), 'utf8'));

for (const c of fixture.cases) {
  test(`matches sklearn: ${c.name}`, () => {
    const got = clusterScores(c.labels_true, c.labels_pred);
    for (const key of ['nmi', 'ari', 'acc'] as const) {
      assert.ok(Math.abs(got[key] - c[key]) <= 1e-9, `${key}: ${got[key]} vs sklearn ${c[key]}`);
    }
  });
}

test('metrics are symmetric where they should be (NMI, ARI)', () => {
  const c = fixture.cases.find((x) => x.name.startsWith('noisy'))!;
  assert.ok(Math.abs(normalizedMutualInfo(c.labels_pred, c.labels_true) - c.nmi) < 1e-12);
  assert.ok(Math.abs(adjustedRandIndex(c.labels_pred, c.labels_true) - c.ari) < 1e-12);
  assert.throws(() => clusterAccuracy([0, 1], [0]), /labels vs/);
});

/** Brute force over all injective row -> column maps. */
function bruteMin(cost: number[], rows: number, cols: number): number {
  let best = Infinity;
  const used = new Array(cols).fill(false);
  const go = (r: number, acc: number): void => {
    if (r === rows) { best = Math.min(best, acc); return; }
    for (let c = 0; c < cols; c++) if (!used[c]) { used[c] = true; go(r + 1, acc + cost[r * cols + c]); used[c] = false; }
  };
  go(0, 0);
  return best;
}

test('Hungarian: optimal on random square and rectangular matrices', () => {
  let s = 12345;
  const rand = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) % 1000) / 10;
  for (const [rows, cols] of [[1, 1], [3, 3], [5, 5], [6, 6], [3, 6], [6, 3], [4, 7], [7, 4]]) {
    for (let trial = 0; trial < 5; trial++) {
      const cost = Array.from({ length: rows * cols }, rand);
      const colOf = linearSumAssignment(cost, rows, cols);
      const assigned = Array.from(colOf).filter((c) => c >= 0);
      assert.is(assigned.length, Math.min(rows, cols));
      assert.is(new Set(assigned).size, assigned.length, 'a column used twice');
      const total = Array.from(colOf).reduce((a, c, r) => (c >= 0 ? a + cost[r * cols + c] : a), 0);
      const expected = rows <= cols ? bruteMin(cost, rows, cols) : bruteMin(Array.from({ length: rows * cols }, (_, i) => cost[(i % rows) * cols + Math.floor(i / rows)]), cols, rows);
      assert.ok(Math.abs(total - expected) < 1e-9, `${rows}x${cols}: ${total} vs optimum ${expected}`);
    }
  }
});

test.run();

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../runtime/backend';
import { AdamW, warmupCosine } from '../models/adamw';

test.before(async () => {
  await initBackend(() => undefined);
});

/** PyTorch's AdamW step, in doubles, for one scalar parameter. */
function reference(p: number, grads: number[], lr: number, wd: number, b1 = 0.9, b2 = 0.95, eps = 1e-8): number {
  let m = 0;
  let v = 0;
  grads.forEach((g, i) => {
    const t = i + 1;
    p *= 1 - lr * wd;
    m = b1 * m + (1 - b1) * g;
    v = b2 * v + (1 - b2) * g * g;
    p -= (lr * (m / (1 - b1 ** t))) / (Math.sqrt(v / (1 - b2 ** t)) + eps);
  });
  return p;
}

test('AdamW matches PyTorch semantics: decoupled decay, bias correction, per-group lr scale', () => {
  const w = tf.variable(tf.tensor1d([0.5, -1.5]), true, 'adamw-spec-w');
  const b = tf.variable(tf.tensor1d([2.0]), true, 'adamw-spec-b');
  const opt = new AdamW([
    { name: 'w', variable: w, lrScale: 1, weightDecay: 0.1 },
    { name: 'b', variable: b, lrScale: 0.5, weightDecay: 0 },
  ]);
  const gw = [[0.3, -0.2], [0.1, 0.4], [-0.5, 0.05]];
  const gb = [[1.0], [-2.0], [0.5]];
  for (let t = 0; t < 3; t++) opt.apply({ [w.name]: tf.tensor1d(gw[t]), [b.name]: tf.tensor1d(gb[t]) }, 0.01);
  const got = [...w.dataSync(), ...b.dataSync()];
  const want = [
    reference(0.5, gw.map((g) => g[0]), 0.01, 0.1),
    reference(-1.5, gw.map((g) => g[1]), 0.01, 0.1),
    reference(2.0, gb.map((g) => g[0]), 0.005, 0),
  ];
  got.forEach((g, i) => assert.ok(Math.abs(g - want[i]) < 1e-6, `param ${i}: ${g} vs ${want[i]}`));
  opt.dispose();
  w.dispose();
  b.dispose();
});

test('gradient clipping scales by max_norm / total_norm and reports the pre-clip norm', () => {
  const w = tf.variable(tf.tensor1d([0, 0]), true, 'adamw-spec-clip');
  const opt = new AdamW([{ name: 'w', variable: w, lrScale: 1, weightDecay: 0 }], { beta1: 0.9, beta2: 0.95, eps: 1e-8, clipGradNorm: 1 });
  const norm = opt.apply({ [w.name]: tf.tensor1d([3, 4]) }, 0.1);
  assert.ok(Math.abs(norm.dataSync()[0] - 5) < 1e-6);
  // Adam's first step moves each coordinate by ~lr * sign(g) whatever the scale
  assert.ok(Math.abs(w.dataSync()[0] + 0.1) < 1e-4 && Math.abs(w.dataSync()[1] + 0.1) < 1e-4);
  opt.dispose();
  w.dispose();
});

test('warm-up is linear to the peak, then cosine to the minimum', () => {
  assert.ok(Math.abs(warmupCosine(0, 100, 10, 1, 0) - 0.1) < 1e-12);
  assert.ok(Math.abs(warmupCosine(9, 100, 10, 1, 0) - 1) < 1e-12);
  assert.ok(Math.abs(warmupCosine(55, 100, 10, 1, 0) - 0.5) < 1e-12);
  assert.ok(Math.abs(warmupCosine(100, 100, 10, 1, 1e-6) - 1e-6) < 1e-12);
});

test.run();

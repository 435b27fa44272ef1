import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../runtime/backend';
import { mimcoLoss, MimcoLossArgs } from '../losses/mimco';

// Reference values from PyTorch: scripts/make-mimco-fixture.py (B=3, T=5, P=6; tau 0.2 and 0.05).
interface Case {
  B: number;
  T: number;
  P: number;
  temperature: number;
  studentPatches: number[];
  teacherPatches: number[];
  mask: number[];
  studentGlobal: number[];
  teacherGlobal: number[];
  loss: { total: number; patch: number; image: number };
  grad_total: { studentPatches: number[]; studentGlobal: number[] };
}
const fixture: { cases: Case[] } = JSON.parse(fs.readFileSync(path.join(__dirname, 'fixtures', 'mimco-loss.json'), 'utf8'));

function args(c: Case): MimcoLossArgs {
  return {
    studentPatches: tf.tensor3d(c.studentPatches, [c.B, c.T, c.P]),
    teacherPatches: tf.tensor3d(c.teacherPatches, [c.B, c.T, c.P]),
    mask: tf.tensor2d(c.mask, [c.B, c.T]),
    studentGlobal: tf.tensor2d(c.studentGlobal, [c.B, c.P]),
    teacherGlobal: tf.tensor2d(c.teacherGlobal, [c.B, c.P]),
    temperature: c.temperature,
  };
}

/** Within 1e-5, relative to the value where it exceeds 1 (the tau 0.05 loss is ~18). */
function assertClose(actual: tf.Tensor | number, expected: number[] | number, label: string): void {
  const a = typeof actual === 'number' ? [actual] : Array.from(actual.dataSync());
  const e = typeof expected === 'number' ? [expected] : expected;
  assert.is(a.length, e.length, `${label}: size`);
  let worst = 0;
  for (let i = 0; i < e.length; i++) worst = Math.max(worst, Math.abs(a[i] - e[i]) / Math.max(1, Math.abs(e[i])));
  assert.ok(worst <= 1e-5, `${label}: max error ${worst.toExponential(2)} > 1e-5`);
}

test.before(async () => {
  await initBackend(() => undefined);
});

for (const c of fixture.cases) {
  test(`values and gradients w.r.t. the student inputs match PyTorch (tau ${c.temperature})`, () => {
    const a = args(c);
    const r = mimcoLoss(a);
    assertClose(r.total, c.loss.total, 'total');
    assertClose(r.patch, c.loss.patch, 'patch');
    assertClose(r.image, c.loss.image, 'image');
    const { value, grads } = tf.valueAndGrads((sp: tf.Tensor, sg: tf.Tensor) =>
      mimcoLoss({ ...a, studentPatches: sp as tf.Tensor3D, studentGlobal: sg as tf.Tensor2D }).total,
    )([a.studentPatches, a.studentGlobal]);
    assertClose(value, c.loss.total, 'total under the tape');
    assertClose(grads[0], c.grad_total.studentPatches, 'd total / d studentPatches');
    assertClose(grads[1], c.grad_total.studentGlobal, 'd total / d studentGlobal');
    tf.dispose([r.total, r.patch, r.image, value, grads, Object.values(a).filter((t): t is tf.Tensor => t instanceof tf.Tensor)]);
  });
}

test('unmasked patches get no gradient and do not change the loss', () => {
  const a = args(fixture.cases[0]);
  const grad = tf.grad((sp: tf.Tensor) => mimcoLoss({ ...a, studentPatches: sp as tf.Tensor3D }).patch)(a.studentPatches);
  const mask = a.mask.dataSync();
  const g = grad.dataSync();
  const P = a.studentPatches.shape[2];
  for (let k = 0; k < mask.length; k++) {
    const rowMax = Math.max(...Array.from(g.subarray(k * P, (k + 1) * P), Math.abs));
    if (mask[k] === 0) assert.is(rowMax, 0, `unmasked patch ${k} got a gradient`);
    else assert.ok(rowMax > 0, `masked patch ${k} got no gradient`);
  }
  tf.dispose([grad, Object.values(a).filter((t): t is tf.Tensor => t instanceof tf.Tensor)]);
});

test('no gradient reaches the teacher features, and nothing leaks', () => {
  const a = args(fixture.cases[0]);
  const before = tf.memory().numTensors;
  const r = mimcoLoss(a);
  assert.is(tf.memory().numTensors, before + 3, 'returns exactly 3 tensors');
  tf.dispose([r.total, r.patch, r.image]);
  const [dt, dh] = tf.grads((t: tf.Tensor, h: tf.Tensor) =>
    mimcoLoss({ ...a, teacherPatches: t as tf.Tensor3D, teacherGlobal: h as tf.Tensor2D }).total,
  )([a.teacherPatches, a.teacherGlobal]);
  assert.is(tf.max(tf.abs(dt)).dataSync()[0], 0);
  assert.is(tf.max(tf.abs(dh)).dataSync()[0], 0);
  tf.dispose([dt, dh, Object.values(a).filter((t): t is tf.Tensor => t instanceof tf.Tensor)]);
  assert.ok(tf.memory().numTensors <= before, 'tensors left behind');
});

test('rejects inconsistent arguments', () => {
  const a = args(fixture.cases[0]);
  assert.throws(() => mimcoLoss({ ...a, teacherPatches: tf.zeros([3, 4, 6]) as tf.Tensor3D }), /teacherPatches has shape \[3,4,6\], expected \[3,5,6\]/);
  assert.throws(() => mimcoLoss({ ...a, mask: tf.zeros([3, 4]) as tf.Tensor2D }), /mask has shape/);
  assert.throws(() => mimcoLoss({ ...a, teacherGlobal: tf.zeros([3, 7]) as tf.Tensor2D }), /teacherGlobal has shape/);
  assert.throws(() => mimcoLoss({ ...a, temperature: 0 }), /temperature must be positive/);
  assert.throws(() => mimcoLoss({ ...a, teacherGlobalBatch: tf.zeros([2, 6]) as tf.Tensor2D }), /teacherGlobalBatch has shape \[2,6\], expected \[N >= 3, 6\]/);
  tf.dispose(Object.values(a).filter((t): t is tf.Tensor => t instanceof tf.Tensor));
});

test('image loss of parts of a batch against the whole batch\'s teacher CLS: the parts\' row-weighted mean is the whole\'s (data-parallel MimCo)', () => {
  const a = args(fixture.cases[0]);
  const whole = mimcoLoss(a);
  // rows 0-1 on one rank, row 2 on another; each contrasts against all 3 teacher CLS
  const part = (from: number, n: number) => {
    let image = 0;
    tf.tidy(() => {
      image = mimcoLoss({
        ...a,
        studentPatches: tf.slice(a.studentPatches, [from, 0, 0], [n, -1, -1]),
        teacherPatches: tf.slice(a.teacherPatches, [from, 0, 0], [n, -1, -1]),
        mask: tf.slice(a.mask, [from, 0], [n, -1]),
        studentGlobal: tf.slice(a.studentGlobal, [from, 0], [n, -1]),
        teacherGlobal: tf.slice(a.teacherGlobal, [from, 0], [n, -1]),
        teacherGlobalBatch: a.teacherGlobal,
      }).image.dataSync()[0];
    });
    return image;
  };
  assertClose((2 * part(0, 2) + part(2, 1)) / 3, whole.image.dataSync()[0], 'parts vs whole');
  // and the batch as its own keys is the default
  assertClose(mimcoLoss({ ...a, teacherGlobalBatch: a.teacherGlobal }).total, whole.total.dataSync()[0], 'explicit keys');
  tf.dispose([whole.total, whole.patch, whole.image, Object.values(a).filter((t): t is tf.Tensor => t instanceof tf.Tensor)]);
});

test.run();

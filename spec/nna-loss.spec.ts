import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../runtime/backend';
import { readSafetensors } from '../models/safetensors';
import { nnaLoss } from '../losses/nna';

// Reference values from PyTorch: scripts/make-nna-fixture.py (B=6, P=8, 2 global + 3 local views, tau 0.2).
const fixture = readSafetensors(path.join(__dirname, 'fixtures', 'nna-loss.safetensors')).tensors;
const NUM_GLOBAL = 2;
const NUM_VIEWS = 5;
const TOL = 1e-5;

function host(key: string): { shape: number[]; data: Float32Array } {
  const t = fixture.get(key);
  if (!t) throw new Error(`fixture lacks ${key}`);
  return { shape: t.shape, data: t.data as Float32Array };
}
const t2 = (key: string): tf.Tensor2D => tf.tensor2d(host(key).data, host(key).shape as [number, number]);
const scalarOf = (key: string): number => host(key).data[0];

function inputs(numViews: number): { z: tf.Tensor2D[]; s: tf.Tensor2D[]; p: tf.Tensor2D[] } {
  const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);
  return {
    z: range(NUM_GLOBAL).map((i) => t2(`z.${i}`)),
    s: range(NUM_GLOBAL).map((i) => t2(`s.${i}`)),
    p: range(numViews).map((j) => t2(`p.${j}`)),
  };
}

function assertClose(actual: tf.Tensor | number, expected: Float32Array | number, label: string): void {
  const a = typeof actual === 'number' ? [actual] : Array.from(actual.dataSync());
  const e = typeof expected === 'number' ? [expected] : Array.from(expected);
  assert.is(a.length, e.length, `${label}: size`);
  let worst = 0;
  for (let i = 0; i < e.length; i++) worst = Math.max(worst, Math.abs(a[i] - e[i]));
  assert.ok(worst <= TOL, `${label}: max abs error ${worst.toExponential(2)} > ${TOL}`);
}

test.before(async () => {
  await initBackend(() => {});
});

test('loss values and gradients w.r.t. every prediction match PyTorch (2 global + 3 local views)', () => {
  const { z, s, p } = inputs(NUM_VIEWS);
  const result = nnaLoss({ projections: z, swapped: s, predictions: p, numGlobal: NUM_GLOBAL, temperature: 0.2 });
  assertClose(result.total, scalarOf('loss.total'), 'total');
  assertClose(result.global, scalarOf('loss.global'), 'global');
  assertClose(result.local, scalarOf('loss.local'), 'local');
  assert.equal(result.total.shape, []);
  for (const part of ['total', 'global', 'local'] as const) {
    // The global loss ignores the local predictions and the local loss the global ones (the
    // fixture holds zeros there); tf.grads refuses unconnected inputs, so vary only the others.
    const [lo, hi] = part === 'global' ? [0, NUM_GLOBAL] : part === 'local' ? [NUM_GLOBAL, NUM_VIEWS] : [0, NUM_VIEWS];
    const grads = tf.grads((...ps: tf.Tensor[]) =>
      nnaLoss({ projections: z, swapped: s, predictions: [...p.slice(0, lo), ...ps, ...p.slice(hi)] as tf.Tensor2D[], numGlobal: NUM_GLOBAL })[part],
    )(p.slice(lo, hi));
    grads.forEach((g, k) => assertClose(g, host(`grad_${part}.p.${lo + k}`).data, `d${part}/dp${lo + k}`));
    for (let j = 0; j < NUM_VIEWS; j++) {
      if (j < lo || j >= hi) assertClose(0, tf.tidy(() => tf.max(tf.abs(t2(`grad_${part}.p.${j}`)))).dataSync()[0], `PyTorch d${part}/dp${j} = 0`);
    }
    tf.dispose(grads);
  }
  tf.dispose([result.total, result.global, result.local, z, s, p]);
});

test('no local views: local is 0, total equals global', () => {
  const { z, s, p } = inputs(NUM_GLOBAL);
  const { value, grads } = tf.valueAndGrads((...ps: tf.Tensor[]) =>
    nnaLoss({ projections: z, swapped: s, predictions: ps as tf.Tensor2D[], numGlobal: NUM_GLOBAL }).total,
  )(p);
  assertClose(value, scalarOf('noloc.loss.total'), 'total');
  grads.forEach((g, j) => assertClose(g, host(`noloc.grad_total.p.${j}`).data, `dtotal/dp${j}`));
  const r = nnaLoss({ projections: z, swapped: s, predictions: p, numGlobal: NUM_GLOBAL });
  assertClose(r.global, scalarOf('noloc.loss.global'), 'global');
  assert.is(r.local.dataSync()[0], 0);
  tf.dispose([value, grads, r.total, r.global, r.local, z, s, p]);
});

test('no gradient reaches projections or swapped vectors, even when they are computed from variables', () => {
  const { z, s, p } = inputs(NUM_VIEWS);
  // The refiner's shape of things: z = projector(x), p = predictor(z), both from the same variables.
  const a = tf.variable(tf.tensor2d(host('z.0').data, [6, 8]), true, 'nna-spec-a');
  const w = tf.variable(tf.eye(8).add(tf.randomNormal([8, 8], 0, 0.3, 'float32', 7)), true, 'nna-spec-w');
  const sVar = tf.variable(s[0], true, 'nna-spec-s');
  const lossWith = (detach: boolean) => () => {
    const zFromA = tf.mul(a, 2) as tf.Tensor2D;
    const zArg = detach ? tf.tensor2d(zFromA.dataSync(), [6, 8]) : zFromA;
    const sArg = detach ? tf.tensor2d(sVar.dataSync(), [6, 8]) : (tf.mul(sVar, 1) as tf.Tensor2D);
    const p0 = tf.matMul(zFromA, w) as tf.Tensor2D;
    return nnaLoss({ projections: [zArg, z[1]], swapped: [sArg, s[1]], predictions: [p0, ...p.slice(1)], numGlobal: 2 }).total;
  };
  const attached = tf.variableGrads(lossWith(false), [a, w, sVar]);
  const detached = tf.variableGrads(lossWith(true), [a, w]);
  assertClose(attached.value, detached.value.dataSync()[0], 'value');
  assertClose(attached.grads[a.name], detached.grads[a.name].dataSync() as Float32Array, 'd/da (only through p)');
  assertClose(attached.grads[w.name], detached.grads[w.name].dataSync() as Float32Array, 'd/dw');
  const sGrad = attached.grads[sVar.name];
  assert.ok(sGrad === undefined || tf.max(tf.abs(sGrad)).dataSync()[0] === 0, 'swapped vectors get no gradient');
  tf.dispose([attached.value, detached.value, Object.values(attached.grads), Object.values(detached.grads)]);
  tf.dispose([a, w, sVar, z, s, p]);
});

test('does not leak tensors, with or without gradients', () => {
  const { z, s, p } = inputs(NUM_VIEWS);
  const args = { projections: z, swapped: s, predictions: p, numGlobal: NUM_GLOBAL };
  const before = tf.memory().numTensors;
  tf.tidy(() => {
    nnaLoss(args);
  });
  assert.is(tf.memory().numTensors, before, 'forward inside tidy');
  const r = nnaLoss(args);
  assert.is(tf.memory().numTensors, before + 3, 'forward returns exactly 3 tensors');
  tf.dispose([r.total, r.global, r.local]);
  const { value, grads } = tf.valueAndGrads((...ps: tf.Tensor[]) => nnaLoss({ ...args, predictions: ps as tf.Tensor2D[] }).total)(p);
  assert.is(tf.memory().numTensors, before + 1 + NUM_VIEWS, 'value and gradients only');
  tf.dispose([value, grads]);
  assert.is(tf.memory().numTensors, before);
  tf.dispose([z, s, p]);
});

test('small temperature stays finite and matches a plain autodiff formulation', () => {
  const tau = 0.01; // logits up to 100: exp overflows without a shift
  const { z, s, p } = inputs(NUM_VIEWS);
  const norm = (x: tf.Tensor2D): tf.Tensor2D => tf.div(x, tf.norm(x, 2, 1, true));
  const plain = (...ps: tf.Tensor[]): tf.Scalar => {
    const losses: tf.Scalar[] = [];
    const eye = tf.eye(6);
    for (let i = 0; i < NUM_GLOBAL; i++) {
      for (let j = 0; j < NUM_VIEWS; j++) {
        if (i === j) continue;
        const pj = norm(ps[j] as tf.Tensor2D);
        const zp = tf.matMul(norm(z[i]), pj, false, true);
        const sp = tf.matMul(norm(s[i]), pj, false, true);
        const logits = tf.div(tf.add(tf.mul(zp, tf.sub(1, eye)), tf.mul(sp, eye)), tau);
        losses.push(tf.losses.softmaxCrossEntropy(eye, logits) as tf.Scalar);
      }
    }
    return tf.div(tf.addN(losses), losses.length);
  };
  const ours = tf.valueAndGrads((...ps: tf.Tensor[]) =>
    nnaLoss({ projections: z, swapped: s, predictions: ps as tf.Tensor2D[], numGlobal: NUM_GLOBAL, temperature: tau }).total,
  )(p);
  const ref = tf.valueAndGrads(plain)(p);
  const v = ours.value.dataSync()[0];
  assert.ok(Number.isFinite(v) && v > 1, `loss ${v}`);
  assert.ok(Math.abs(v - ref.value.dataSync()[0]) < 1e-3 * Math.abs(v), `loss ${v} vs plain ${ref.value.dataSync()[0]}`);
  ours.grads.forEach((g, j) => {
    const worst = tf.tidy(() => tf.max(tf.abs(tf.sub(g, ref.grads[j]))).dataSync()[0]);
    const scale = tf.tidy(() => tf.max(tf.abs(ref.grads[j])).dataSync()[0]);
    assert.ok(worst <= 1e-3 * scale + 1e-6, `d/dp${j}: ${worst} (scale ${scale})`);
  });
  tf.dispose([ours.value, ours.grads, ref.value, ref.grads, z, s, p]);
});

test('rejects inconsistent arguments', () => {
  const { z, s, p } = inputs(NUM_VIEWS);
  const call = (over: Partial<Parameters<typeof nnaLoss>[0]>) => () =>
    nnaLoss({ projections: z, swapped: s, predictions: p, numGlobal: NUM_GLOBAL, ...over });
  assert.throws(call({ numGlobal: 3 }), /3 projections/);
  assert.throws(call({ swapped: [s[0]] }), /swapped/);
  assert.throws(call({ predictions: [p[0], tf.zeros([5, 8]) as tf.Tensor2D] }), /predictions\[1\] has shape \[5,8\]/);
  assert.throws(call({ temperature: 0 }), /temperature/);
  assert.throws(call({ projections: [z[0]], swapped: [s[0]], predictions: [p[0]], numGlobal: 1 }), /no view pairs/);
  // One global view with local views is allowed: only global-local pairs, global = 0.
  const r = nnaLoss({ projections: [z[0]], swapped: [s[0]], predictions: [p[0], p[2]], numGlobal: 1 });
  assert.is(r.global.dataSync()[0], 0);
  assertClose(r.total, r.local.dataSync()[0], 'total = local');
  tf.dispose([r.total, r.global, r.local, z, s, p]);
});

test.run();

/**
 * Training-mode BatchNorm1d (models/ops.ts batchNormTrain, used by the NNA heads): its written-out
 * gradient against tfjs's autodiff of the composed form, and the heads' running statistics
 * against PyTorch's update rule (momentum 0.1, unbiased variance).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../runtime/backend';
import { batchNormTrain } from '../models/ops';
import { HEAD_PRESETS, NnaHead } from '../models/nna-head';

test.before(async () => {
  await initBackend(() => undefined);
});

function maxAbsDiff(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]);
}

test('value and gradients equal autodiff through the composed form', () => {
  const x = tf.add(tf.mul(tf.randomNormal([48, 20], 0, 1, 'float32', 1), 3), 2) as tf.Tensor2D;
  const gamma = tf.randomNormal([20], 1, 0.3, 'float32', 2) as tf.Tensor1D;
  const beta = tf.randomNormal([20], 0, 0.3, 'float32', 3) as tf.Tensor1D;
  const upstream = tf.randomNormal([48, 20], 0, 1, 'float32', 4);
  const composed = (xs: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => {
    const { mean, variance } = tf.moments(xs, 0);
    return tf.add(tf.mul(tf.div(tf.sub(xs, mean), tf.sqrt(tf.add(variance, 1e-5))), g), b);
  };
  const fused = (xs: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => batchNormTrain(xs as tf.Tensor2D, g as tf.Tensor1D, b as tf.Tensor1D, 1e-5);
  const before = tf.memory().numTensors;
  const [want, got] = [composed, fused].map((f) => tf.tidy(() => {
    const { value, grads } = tf.valueAndGrads((xs: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(f(xs, g, b), upstream)))([x, gamma, beta]);
    return [tf.keep(f(x, gamma, beta)), value, ...grads];
  }));
  ['y', 'loss', 'dx', 'dgamma', 'dbeta'].forEach((name, i) => {
    const d = maxAbsDiff(want[i], got[i]);
    assert.ok(d < 2e-5 * Math.max(1, tf.tidy(() => tf.max(tf.abs(want[i])).dataSync()[0])), `${name}: max difference ${d}`);
  });
  const stats: tf.Tensor[] = [];
  tf.dispose(batchNormTrain(x, gamma, beta, 1e-5, (mu, v) => stats.push(tf.keep(mu.clone()), tf.keep(v.clone()))));
  const [mean, variance] = stats;
  const m = tf.moments(x, 0);
  assert.ok(maxAbsDiff(mean, m.mean) < 1e-5 && maxAbsDiff(variance, m.variance) < 1e-4, 'batch statistics');
  tf.dispose([...want, ...got, mean, variance, m.mean, m.variance]);
  assert.is(tf.memory().numTensors, before, 'no tensor leaks');
  tf.dispose([x, gamma, beta, upstream]);
});

test('head running statistics follow PyTorch: momentum 0.1, unbiased variance', () => {
  const head = new NnaHead(8, HEAD_PRESETS.tiny, 'gelu', 0);
  const x = tf.randomNormal([10, 8], 0, 2, 'float32', 7) as tf.Tensor2D;
  // the first BatchNorm sees projector.0's output
  const h = tf.tidy(() => tf.add(tf.matMul(x, head.params.get('projector.0.weight')), head.params.get('projector.0.bias')));
  tf.dispose(head.project(x, true));
  const { mean, variance } = tf.moments(h, 0);
  const unbiased = tf.mul(variance, 10 / 9);
  assert.ok(maxAbsDiff(head.params.get('projector.1.running_mean'), tf.mul(mean, 0.1)) < 1e-5, 'running_mean');
  assert.ok(maxAbsDiff(head.params.get('projector.1.running_var'), tf.add(0.9, tf.mul(unbiased, 0.1))) < 1e-4, 'running_var');
  tf.dispose([x, h, mean, variance, unbiased]);
  head.params.dispose();
});

test.run();

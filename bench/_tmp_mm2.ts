import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../runtime/backend';
async function main() {
  await initBackend();
  const bench = (name: string, f: () => tf.Tensor|tf.Tensor[], flops: number) => {
    const run = () => { const r = f(); const rs = Array.isArray(r) ? r : [r]; rs.forEach(t => t.dataSync()); tf.dispose(rs); };
    for (let i = 0; i < 3; i++) run();
    const n = 10; const t0 = performance.now();
    for (let i = 0; i < n; i++) run();
    const dt = (performance.now() - t0) / n;
    console.log(name, dt.toFixed(2), 'ms', (flops / dt / 1e6).toFixed(2), 'GFLOP/s');
  };
  const x = tf.randomNormal([2080, 512]);
  bench('exp', () => tf.exp(x), 2080*512);
  bench('sigmoid', () => tf.sigmoid(x), 2080*512);
  bench('softmax 128x65x65', () => tf.softmax(tf.randomNormal([128,65,65])), 1);
  const q = tf.randomNormal([128, 65, 32]); const kT = tf.randomNormal([128, 32, 65]); const k = tf.randomNormal([128, 65, 32]);
  const F = 2 * 128 * 65 * 65 * 32;
  bench('batched qk', () => tf.matMul(q, kT), F);
  bench('batched qk transB', () => tf.matMul(q, k, false, true), F);
  const qs = tf.unstack(q), ks = tf.unstack(kT);
  bench('loop 2d', () => qs.map((qi, i) => tf.matMul(qi, ks[i])), F);
  const x4 = tf.randomNormal([32, 65, 4, 32]);
  bench('4d transpose 0213', () => tf.transpose(x4, [0, 2, 1, 3]), 1);
  const x3 = tf.randomNormal([128, 65, 32]);
  bench('3d transpose 021', () => tf.transpose(x3, [0, 2, 1]), 1);
  bench('gather cols', () => tf.gather(x, tf.range(0, 128, 1, 'int32'), 1), 1);
  bench('slice cols', () => tf.slice(x, [0, 128], [-1, 128]), 1);
  bench('split 4', () => tf.split(x, 4, 1), 1);
  bench('sum axis1 (LN)', () => tf.sum(x, 1, true), 1);
  bench('moments', () => { const m = tf.moments(x, 1, true); return [m.mean, m.variance]; }, 1);
  bench('add bias', () => tf.add(x, tf.ones([512])), 1);
  bench('sum axis0 (bias grad)', () => tf.sum(x, 0), 1);
}
main();

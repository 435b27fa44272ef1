/**
 * Device kit probe: starts the backend (TFJS_BACKEND=webgpu in the kit), prints the adapter,
 * its features, subgroup sizes, subgroup-matrix configs and limits, the precision path taken
 * and why, and times a square matMul as a ceiling for what the train step can reach: the
 * kernel the environment selects (tfjs-webgpu's own, WEBGPU_MATMUL=1 the tiled WGSL one,
 * WEBGPU_PRECISION=mixed the f16 one), and under mixed also the fp32 one with the largest
 * relative difference between the two (the mixed kernel's parity on this device). One JSON line.
 *   TFJS_BACKEND=webgpu npx ts-node scripts/device/adapter.ts [--size 4096] [--reps 10]
 */
import * as tf from '@tensorflow/tfjs';
import { parseArgs } from 'node:util';
import { setFusedKernels } from '../../models/kernels';
import { initBackend } from '../../runtime/backend';

const { values: args } = parseArgs({ options: { size: { type: 'string', default: '4096' }, reps: { type: 'string', default: '10' } } });

async function main() {
  const backend = await initBackend();
  const n = Number(args.size);
  const reps = Number(args.reps);
  const a = tf.randomNormal([n, n]) as tf.Tensor2D;
  const b = tf.randomNormal([n, n]) as tf.Tensor2D;
  const time = async () => {
    const run = async (count: number) => {
      const outs = Array.from({ length: count }, () => tf.matMul(a, b));
      await outs[count - 1].data();
      tf.dispose(outs);
    };
    await run(1);
    const t0 = performance.now();
    await run(reps);
    const s = (performance.now() - t0) / 1000;
    return { size: n, reps, seconds: +s.toFixed(4), tflops: +((2 * n ** 3 * reps) / s / 1e12).toFixed(3) };
  };
  const matMul = await time();
  const out: Record<string, unknown> = { backend: backend.tfBackend, adapter: backend.adapter, capabilities: backend.capabilities, precision: backend.precision, matMul };
  if (backend.precision && backend.precision.matMul !== 'fp32') {
    const mixed = tf.matMul(a, b);
    // the WGSL kernels off: tfjs-webgpu's own fp32 matMul
    setFusedKernels(false);
    out.matMulFp32 = await time();
    const ref = tf.matMul(a, b);
    setFusedKernels(true);
    const [diff, scale] = await Promise.all([tf.max(tf.abs(tf.sub(mixed, ref))).data(), tf.max(tf.abs(ref)).data()]);
    out.mixedVsFp32MatMul = { maxRelativeDifference: diff[0] / scale[0] };
    tf.dispose([mixed, ref]);
  }
  out.pool = backend.pool?.();
  console.log(JSON.stringify(out));
  tf.dispose([a, b]);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});

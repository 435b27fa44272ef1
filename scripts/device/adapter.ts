/**
 * Device kit probe: starts the backend (TFJS_BACKEND=webgpu in the kit), prints the adapter and
 * its limits, and times a square fp32 matMul (tfjs-webgpu's own kernel) as a ceiling for what
 * the train step can reach. One JSON line.
 *   TFJS_BACKEND=webgpu npx ts-node scripts/device/adapter.ts [--size 4096] [--reps 10]
 */
import * as tf from '@tensorflow/tfjs';
import { parseArgs } from 'node:util';
import { initBackend } from '../../runtime/backend';

const { values: args } = parseArgs({ options: { size: { type: 'string', default: '4096' }, reps: { type: 'string', default: '10' } } });

async function main() {
  const backend = await initBackend();
  const n = Number(args.size);
  const reps = Number(args.reps);
  const a = tf.randomNormal([n, n]) as tf.Tensor2D;
  const b = tf.randomNormal([n, n]) as tf.Tensor2D;
  const run = async (count: number) => {
    const outs = Array.from({ length: count }, () => tf.matMul(a, b));
    await outs[count - 1].data();
    tf.dispose(outs);
  };
  await run(1);
  const t0 = performance.now();
  await run(reps);
  const s = (performance.now() - t0) / 1000;
  console.log(JSON.stringify({
    backend: backend.tfBackend,
    adapter: backend.adapter,
    matMul: { size: n, reps, seconds: +s.toFixed(4), tflops: +((2 * n ** 3 * reps) / s / 1e12).toFixed(3) },
  }));
  tf.dispose([a, b]);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});

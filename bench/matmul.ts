/**
 * Backend throughput, mainly wasm thread counts (one process per count, since the pool is
 * fixed at backend init); reads are asynchronous, so it runs on WebGPU too:
 *   WASM_THREADS=1 TFJS_BACKEND=wasm npx ts-node bench/matmul.ts
 *   WASM_THREADS=2 TFJS_BACKEND=wasm npx ts-node bench/matmul.ts
 * Prints ms per call and GFLOP/s (matMuls) or M elements/s (the rest), median and best run;
 * matMuls and the 2-D transpose twice, with the fused kernels (gemm.c, transpose.c) and with
 * tfjs-wasm's own kernels ("own").
 * The shapes are the ViT ones: 2080 = 32 images x 65 tokens, width 128..768, attention
 * [heads*batch, 65, 32].
 */
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../runtime/backend';
import { fusedKernelsActive, setFusedKernels } from '../models/kernels';

/**
 * ms per call of f after warm-up: median, and best (the machine is shared, and contention only
 * ever slows a run down, so the best run is the closest to what the code itself can do).
 */
async function time(f: () => tf.Tensor): Promise<{ median: number; best: number }> {
  const once = async () => {
    const t0 = performance.now();
    const out = f();
    await out.data(); // read back to be sure the work is done (a GPU runs it asynchronously)
    out.dispose();
    return performance.now() - t0;
  };
  for (let i = 0; i < 3; i++) await once();
  const runs: number[] = [];
  const until = performance.now() + 1500;
  while (runs.length < 5 || (performance.now() < until && runs.length < 200)) runs.push(await once());
  runs.sort((a, b) => a - b);
  return { median: runs[runs.length >> 1], best: runs[0] };
}

function report(name: string, { median, best }: { median: number; best: number }, work: number, unit: 'GFLOP/s' | 'Melem/s'): void {
  const rate = (ms: number) => (unit === 'GFLOP/s' ? work / ms / 1e6 : work / ms / 1e3).toFixed(1).padStart(7);
  console.log(`${name.padEnd(44)} median ${median.toFixed(3).padStart(9)} ms ${rate(median)}   best ${best.toFixed(3).padStart(9)} ms ${rate(best)} ${unit}`);
}

async function main(): Promise<void> {
  await initBackend();
  const r = (...shape: number[]) => tf.randomNormal(shape);

  const matmuls: [string, tf.Tensor, tf.Tensor, boolean, boolean, number][] = [
    ['matMul [2080,128]x[128,512]', r(2080, 128), r(128, 512), false, false, 2 * 2080 * 128 * 512],
    ['matMul [2080,768]x[768,768]', r(2080, 768), r(768, 768), false, false, 2 * 2080 * 768 * 768],
    ['matMul transposeB [2080,768]x[768,768]T', r(2080, 768), r(768, 768), false, true, 2 * 2080 * 768 * 768],
    ['matMul transposeA [768,2080]Tx[768,768]', r(768, 2080), r(768, 768), true, false, 2 * 2080 * 768 * 768],
    ['batched matMul [128,65,32]x[128,32,65]', r(128, 65, 32), r(128, 32, 65), false, false, 2 * 128 * 65 * 32 * 65],
  ];
  /** f timed with the fused kernels and, where they are registered, with the backend's own. */
  const both = async (name: string, f: () => tf.Tensor, work: number, unit: 'GFLOP/s' | 'Melem/s') => {
    report(name, await time(f), work, unit);
    if (!fusedKernelsActive()) return;
    setFusedKernels(false);
    report(`  own: ${name}`, await time(f), work, unit);
    setFusedKernels(true);
  };
  for (const [name, a, b, ta, tb, flops] of matmuls) await both(name, () => tf.matMul(a, b, ta, tb), flops, 'GFLOP/s');
  // The workaround for the slow transposed kernels: an explicit transpose, then a plain matMul.
  const [, a2, b2] = matmuls[2];
  await both('transpose(b) + matMul [2080,768]x[768,768]', () => tf.tidy(() => tf.matMul(a2, tf.transpose(b2))), 2 * 2080 * 768 * 768, 'GFLOP/s');

  const x = r(2080, 768), y = r(2080, 768), att = r(128, 65, 65), heads = r(32, 65, 4, 32);
  const n = 2080 * 768;
  report('sigmoid [2080,768]', await time(() => tf.sigmoid(x)), n, 'Melem/s');
  report('exp [2080,768]', await time(() => tf.exp(x)), n, 'Melem/s');
  report('add [2080,768]', await time(() => tf.add(x, y)), n, 'Melem/s');
  report('mul [2080,768]', await time(() => tf.mul(x, y)), n, 'Melem/s');
  report('softmax [128,65,65]', await time(() => tf.softmax(att)), 128 * 65 * 65, 'Melem/s');
  await both('transpose [2080,768] -> [768,2080]', () => tf.transpose(x), n, 'Melem/s');
  report('transpose [32,65,4,32] perm 0213', await time(() => tf.transpose(heads, [0, 2, 1, 3])), heads.size, 'Melem/s');
}

void main();

/**
 * Threaded wasm backend (runtime/wasm-threads.ts). Each configuration runs in a child process
 * (this same file, with WASM_THREADS_SPEC_CHILD=1): a process can hold only one wasm backend,
 * other spec files may already have picked this process's backend, and a child that does not
 * exit by itself is exactly the bug (live pthread workers) this should catch.
 */
import { spawnSync } from 'child_process';
import * as os from 'os';
import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { BackendInfo } from '../runtime/backend';

/** Deterministic inputs in [-1, 1) (an LCG, so both children and the JS reference agree). */
function inputs(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}

// Shapes big enough that XNNPACK splits the work over its pool.
const M = 200, K = 96, N = 130;
const B = 16, T = 65, D = 32;
type Shape4 = [number, number, number, number];
const IMG: Shape4 = [2, 16, 16, 8], FILT: Shape4 = [3, 3, 8, 16];

/** The ops under test, on whatever backend is active; results as raw float32. */
function runOps(): Record<string, Float32Array> {
  const a = tf.tensor2d(inputs(M * K, 1), [M, K]);
  const b = tf.tensor2d(inputs(K * N, 2), [K, N]);
  const q = tf.tensor3d(inputs(B * T * D, 3), [B, T, D]);
  const k = tf.tensor3d(inputs(B * D * T, 4), [B, D, T]);
  const x = tf.tensor4d(inputs(IMG.reduce((p, v) => p * v, 1), 5), IMG);
  const f = tf.tensor4d(inputs(FILT.reduce((p, v) => p * v, 1), 6), FILT);
  const logits = tf.mul(tf.tensor2d(inputs(T * T, 7), [T, T]), 4);
  const ops: Record<string, () => tf.Tensor> = {
    matMul: () => tf.matMul(a, b),
    matMulTransposeB: () => tf.matMul(a, tf.transpose(b), false, true),
    batchedMatMul: () => tf.matMul(q, k),
    conv2d: () => tf.conv2d(x, f, 1, 'same'),
    softmax: () => tf.softmax(logits),
    sigmoid: () => tf.sigmoid(a),
  };
  return Object.fromEntries(Object.entries(ops).map(([name, op]) => [name, tf.tidy(op).dataSync() as Float32Array]));
}

/** Plain-JS reference (float64 accumulation) for the ops with a simple definition. */
function reference(): Record<string, Float64Array> {
  const matMul = (a: Float32Array, b: Float32Array, m: number, kk: number, n: number, aOff = 0, bOff = 0, out = new Float64Array(m * n), oOff = 0) => {
    for (let i = 0; i < m; i++)
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let p = 0; p < kk; p++) s += a[aOff + i * kk + p] * b[bOff + p * n + j];
        out[oOff + i * n + j] = s;
      }
    return out;
  };
  const a = inputs(M * K, 1), b = inputs(K * N, 2);
  const q = inputs(B * T * D, 3), k = inputs(B * D * T, 4);
  const batched = new Float64Array(B * T * T);
  for (let i = 0; i < B; i++) matMul(q, k, T, D, T, i * T * D, i * D * T, batched, i * T * T);

  const [n, h, w, c] = IMG, [fh, fw, , co] = FILT;
  const x = inputs(n * h * w * c, 5), f = inputs(fh * fw * c * co, 6);
  const conv = new Float64Array(n * h * w * co);
  for (let bi = 0; bi < n; bi++)
    for (let y = 0; y < h; y++)
      for (let xx = 0; xx < w; xx++)
        for (let o = 0; o < co; o++) {
          let s = 0;
          for (let dy = 0; dy < fh; dy++)
            for (let dx = 0; dx < fw; dx++) {
              const yy = y + dy - 1, xi = xx + dx - 1; // 'same' padding of a 3x3 filter: 1
              if (yy < 0 || yy >= h || xi < 0 || xi >= w) continue;
              for (let ci = 0; ci < c; ci++) s += x[((bi * h + yy) * w + xi) * c + ci] * f[((dy * fw + dx) * c + ci) * co + o];
            }
          conv[((bi * h + y) * w + xx) * co + o] = s;
        }

  const logits = inputs(T * T, 7).map((v) => v * 4);
  const softmax = new Float64Array(T * T);
  for (let i = 0; i < T; i++) {
    const row = logits.subarray(i * T, (i + 1) * T);
    const mx = Math.max(...row);
    let z = 0;
    for (let j = 0; j < T; j++) z += Math.exp(row[j] - mx);
    for (let j = 0; j < T; j++) softmax[i * T + j] = Math.exp(row[j] - mx) / z;
  }
  const mm = matMul(a, b, M, K, N);
  return { matMul: mm, matMulTransposeB: mm, batchedMatMul: batched, conv2d: conv, softmax, sigmoid: Float64Array.from(a, (v) => 1 / (1 + Math.exp(-v))) };
}

interface ChildResult {
  /** tfjs-wasm's own pool (getThreadsCount()) */
  threads: number;
  info: BackendInfo;
  results: Record<string, string>; // base64 of the float32 bytes, for exact comparison
}

/** Child mode: init the backend as the pipelines do, run the ops, print one JSON line. */
async function child(): Promise<void> {
  const { initBackend } = await import('../runtime/backend');
  const { getThreadsCount } = await import('@tensorflow/tfjs-backend-wasm');
  const info = await initBackend(() => {});
  const results = Object.fromEntries(Object.entries(runOps()).map(([name, v]) => [name, Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64')]));
  console.log(JSON.stringify({ threads: getThreadsCount(), info, results } satisfies ChildResult));
  // No process.exit: the test checks that the process ends by itself.
}

function runChild(threads: number, fusedKernels: boolean): ChildResult {
  const r = spawnSync(process.execPath, ['-r', 'ts-node/register', __filename], {
    env: { ...process.env, WASM_THREADS_SPEC_CHILD: '1', TFJS_BACKEND: 'wasm', WASM_THREADS: String(threads), FUSED_KERNELS: fusedKernels ? '1' : '0' },
    encoding: 'utf8',
    timeout: 120_000,
  });
  if (r.error || r.status !== 0) {
    throw new Error(`child WASM_THREADS=${threads} failed (${r.error?.message ?? `exit ${r.status}`}; a hang means workers kept node alive):\n${r.stderr}`);
  }
  const last = r.stdout.trim().split('\n').pop() ?? '';
  return JSON.parse(last) as ChildResult;
}

const toF32 = (b64: string) => new Float32Array(new Uint8Array(Buffer.from(b64, 'base64')).buffer);

if (process.env.WASM_THREADS_SPEC_CHILD) {
  void child();
} else {
  // tfjs-wasm's own kernels on its thread pool (FUSED_KERNELS=0: the pool gets every thread)
  test('threaded wasm: 2 threads, same bits as 1 thread, close to a plain-JS reference', () => {
    const single = runChild(1, false);
    assert.is(single.threads, 1);
    if (os.cpus().length < 2) {
      console.log('[wasm-threads.spec] 1 core: skipping the 2-thread checks');
      return;
    }
    const dual = runChild(2, false);
    assert.is(dual.threads, 2, 'getThreadsCount() with WASM_THREADS=2');

    const ref = reference();
    for (const [name, b64] of Object.entries(single.results)) {
      // Threads split the output into tiles but each value is summed in the same order,
      // so results must be bit-identical, not just close.
      assert.ok(b64 === dual.results[name], `${name}: 2-thread result differs from 1-thread`);
      const got = toF32(b64), want = ref[name];
      assert.is(got.length, want.length, `${name}: length`);
      let maxErr = 0, maxRef = 0;
      for (let i = 0; i < got.length; i++) {
        maxErr = Math.max(maxErr, Math.abs(got[i] - want[i]));
        maxRef = Math.max(maxRef, Math.abs(want[i]));
      }
      assert.ok(maxErr <= 1e-5 * Math.max(1, maxRef), `${name}: max error ${maxErr} vs reference (scale ${maxRef})`);
    }
  });

  test('with the fused kernels on, they get every thread and tfjs-wasm\'s own pool one; same bits as 1 thread', () => {
    if (os.cpus().length < 2) return;
    const single = runChild(1, true);
    const dual = runChild(2, true);
    assert.equal([dual.threads, dual.info.poolThreads, dual.info.fusedKernels, dual.info.threads], [1, 1, 2, 2]);
    for (const [name, b64] of Object.entries(single.results)) assert.ok(b64 === dual.results[name], `${name}: 2-thread result differs from 1-thread`);
  });

  test.run();
}

/**
 * The fused wasm kernels (models/kernels/*.c) against the same computations composed from
 * tfjs ops: values and gradients, on shapes that exercise every SIMD/register-tile remainder,
 * with no tensors left behind. vit-parity.spec.ts runs the ViT through them against PyTorch.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../runtime/backend';
import { attention, attentionComposed, gelu, geluComposed, layerNorm, layerNormComposed } from '../models/ops';
import { AdamW } from '../models/adamw';
import { setFusedKernels } from '../models/kernels';
import { KernelThreads } from '../models/kernels/threads';

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function maxAbs(a: ArrayLike<number>): number {
  return maxAbsDiff(a, new Float32Array(a.length));
}

/**
 * f and its composed reference on the same inputs: values, and gradients of a random linear
 * loss w.r.t. every input, equal to `tol` relative to their scale (both are float32 with
 * different summation orders and exp/erf approximations).
 */
function assertSame(f: (...xs: tf.Tensor[]) => tf.Tensor, ref: (...xs: tf.Tensor[]) => tf.Tensor, inputs: tf.Tensor[], tol = 1e-5) {
  const before = tf.memory().numTensors;
  const probe = tf.tidy(() => f(...inputs));
  const weights = tf.randomNormal(probe.shape, 0, 1, 'float32', 3);
  const loss = (g: typeof f) => (...xs: tf.Tensor[]) => tf.sum(tf.mul(g(...xs), weights)) as tf.Scalar;
  const got = tf.valueAndGrads(loss(f))(inputs);
  const want = tf.valueAndGrads(loss(ref))(inputs);
  const refOut = tf.tidy(() => ref(...inputs));
  const outErr = maxAbsDiff(probe.dataSync(), refOut.dataSync());
  assert.ok(outErr < tol * Math.max(1, maxAbs(refOut.dataSync())), `output max abs error ${outErr}`);
  got.grads.forEach((g, i) => {
    const w = want.grads[i].dataSync();
    const err = maxAbsDiff(g.dataSync(), w);
    assert.ok(err < tol * Math.max(1, maxAbs(w)), `gradient ${i}: max abs error ${err} (scale ${maxAbs(w)})`);
  });
  tf.dispose([probe, weights, refOut, got.value, want.value, ...got.grads, ...want.grads]);
  assert.is(tf.memory().numTensors, before, 'tensors leaked');
}

test('the wasm backend registers the fused kernels', async () => {
  const info = await initBackend(() => undefined);
  assert.is(info.tfBackend, 'wasm');
  assert.ok(info.fusedKernels > 0, 'fused kernels were not registered');
  // on the threaded build the kernels split their work over as many threads as tfjs's pool
  assert.is(info.fusedKernels, info.threads);
});

// [batch, tokens, heads, headDim]: tokens 1..3 mod 8 and fewer than 4 rows, odd head widths
for (const [batch, tokens, heads, headDim] of [[2, 65, 2, 64], [3, 17, 3, 12], [1, 5, 1, 3], [2, 3, 4, 8], [1, 50, 2, 5]]) {
  test(`attention: batch ${batch}, tokens ${tokens}, heads ${heads}, head width ${headDim}`, () => {
    const qkv = tf.randomNormal([batch * tokens, 3 * heads * headDim], 0, 1.5, 'float32', 7);
    assertSame(
      (x) => attention(x as tf.Tensor2D, batch, heads),
      (x) => attentionComposed(x as tf.Tensor2D, batch, heads),
      [qkv],
    );
    qkv.dispose();
  });
}

for (const [rows, width] of [[130, 128], [7, 13], [1, 3], [33, 192]]) {
  test(`layerNorm: rows ${rows}, width ${width}`, () => {
    const x = tf.add(tf.randomNormal([rows, width], 0, 2, 'float32', 1), 0.5);
    const gamma = tf.randomNormal([width], 1, 0.3, 'float32', 2);
    const beta = tf.randomNormal([width], 0, 0.3, 'float32', 4);
    const eps = 1e-6;
    assertSame(
      (a, g, b) => layerNorm(a as tf.Tensor2D, g as tf.Tensor1D, b as tf.Tensor1D, eps),
      (a, g, b) => layerNormComposed(a as tf.Tensor2D, g as tf.Tensor1D, b as tf.Tensor1D, eps),
      [x, gamma, beta],
    );
    tf.dispose([x, gamma, beta]);
  });
}

for (const shape of [[64, 512], [3, 7], [1, 1], [2, 5, 3]]) {
  test(`gelu: shape [${shape}], including |x| up to 12`, () => {
    const x = tf.randomNormal(shape, 0, 4, 'float32', 5);
    assertSame((a) => gelu(a, 'gelu'), (a) => geluComposed(a), [x]);
    x.dispose();
  });
}

test('2-D transpose: every row/column remainder, equal to the backend\'s own', () => {
  for (const [rows, cols] of [[2080, 512], [7, 13], [1, 5], [4, 4], [130, 3]]) {
    const x = tf.randomNormal([rows, cols], 0, 1, 'float32', rows);
    const got = tf.transpose(x);
    setFusedKernels(false);
    const want = tf.transpose(x);
    setFusedKernels(true);
    assert.equal(got.shape, [cols, rows]);
    assert.is(maxAbsDiff(got.dataSync(), want.dataSync()), 0, `[${rows}, ${cols}]`);
    tf.dispose([x, got, want]);
  }
});

test('matMul (gemm.c): every transpose form, tile/K-block remainders, batches, bias, split over threads; equal to the backend\'s own matMul (+ add)', () => {
  const before = tf.memory().numTensors;
  // [m, k, n]: micro-tile (6x8) and K-block (256) remainders, a single row/column, and sizes split over threads
  const shapes = [[1, 1, 1], [7, 13, 9], [6, 256, 8], [13, 300, 17], [65, 128, 384], [2080, 128, 512], [128, 2080, 24], [5, 700, 3]];
  for (const [m, k, n] of shapes) {
    for (const [ta, tb] of [[false, false], [false, true], [true, false], [true, true]]) {
      const a = tf.randomNormal(ta ? [k, m] : [m, k], 0, 1, 'float32', m + k);
      const b = tf.randomNormal(tb ? [n, k] : [k, n], 0, 1, 'float32', k + n);
      const bias = tf.randomNormal([n], 0, 1, 'float32', n);
      const got = [tf.matMul(a, b, ta, tb), tf.fused.matMul({ a, b, transposeA: ta, transposeB: tb, bias })];
      setFusedKernels(false);
      // the backend's own _FusedMatMul adds the bias wrongly with transposeB (rows after the first), so matMul + add
      const want = [tf.matMul(a, b, ta, tb), tf.tidy(() => tf.add(tf.matMul(a, b, ta, tb), bias))];
      setFusedKernels(true);
      got.forEach((g, i) => {
        assert.equal(g.shape, [m, n]);
        const scale = Math.sqrt(k) + 1;
        assert.ok(maxAbsDiff(g.dataSync(), want[i].dataSync()) < 1e-5 * scale, `[${m}, ${k}, ${n}] ${ta} ${tb} ${i ? 'fused' : 'plain'}`);
      });
      tf.dispose([a, b, bias, ...got, ...want]);
    }
  }
  // batched, with one side broadcast over the batch
  const a = tf.randomNormal([3, 20, 30], 0, 1, 'float32', 1);
  const b = tf.randomNormal([1, 30, 11], 0, 1, 'float32', 2);
  const got = tf.matMul(a, b);
  setFusedKernels(false);
  const want = tf.matMul(a, b);
  setFusedKernels(true);
  assert.equal(got.shape, [3, 20, 11]);
  assert.ok(maxAbsDiff(got.dataSync(), want.dataSync()) < 1e-4);
  tf.dispose([a, b, got, want]);
  assert.is(tf.memory().numTensors, before);
});

test('AdamW: fused = composed over steps with decay, per-group lr scale and clipping', async () => {
  const run = async (fused: boolean) => {
    setFusedKernels(fused);
    try {
      const w = tf.variable(tf.randomNormal([37, 5], 0, 1, 'float32', 11), true, `adamw-fused-${fused}-w`);
      const b = tf.variable(tf.randomNormal([5], 0, 1, 'float32', 12), true, `adamw-fused-${fused}-b`);
      const before = tf.memory().numTensors;
      const opt = new AdamW(
        [
          { name: 'w', variable: w, lrScale: 1, weightDecay: 0.05 },
          { name: 'b', variable: b, lrScale: 0.3, weightDecay: 0 },
        ],
        { beta1: 0.9, beta2: 0.95, eps: 1e-8, clipGradNorm: 3 },
      );
      const norms = [0, 1, 2].map((t) => {
        const grads = { [w.name]: tf.randomNormal([37, 5], 0, 1, 'float32', 20 + t), [b.name]: tf.randomNormal([5], 0, 1, 'float32', 30 + t) };
        const n = opt.apply(grads, 0.01);
        tf.dispose(Object.values(grads));
        const value = n.dataSync()[0];
        n.dispose();
        return value;
      });
      const out = { norms, w: w.dataSync().slice(), b: b.dataSync().slice(), state: await opt.exportState() };
      opt.dispose();
      assert.is(tf.memory().numTensors, before, 'tensors leaked');
      tf.dispose([w, b]);
      return out;
    } finally {
      setFusedKernels(true);
    }
  };
  const fused = await run(true);
  const composed = await run(false);
  fused.norms.forEach((n, i) => assert.ok(Math.abs(n - composed.norms[i]) < 1e-5 * n, `norm ${i}: ${n} vs ${composed.norms[i]}`));
  assert.ok(maxAbsDiff(fused.w, composed.w) < 1e-6, 'weights differ');
  assert.ok(maxAbsDiff(fused.b, composed.b) < 1e-6, 'biases differ');
  for (const key of Object.keys(composed.state)) {
    assert.ok(maxAbsDiff(fused.state[key].data, composed.state[key].data) < 1e-6, `${key} differs`);
  }
});

test('a kernel helper thread that cannot start is reported by the first job, not waited on', () => {
  // a module importing a function nobody provides: instantiating it on the helper fails
  const bytes = Uint8Array.from([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0, 1, 4, 1, 0x60, 0, 0, 2, 9, 1, 3, 0x65, 0x6e, 0x76, 1, 0x66, 0, 0]);
  const wasm = (globalThis as unknown as { WebAssembly: { Module: new (b: Uint8Array) => object; Memory: new (d: object) => object } }).WebAssembly;
  const memory = new wasm.Memory({ initial: 1, maximum: 1, shared: true });
  const pool = new KernelThreads(memory, [new wasm.Module(bytes)], 1);
  let local = 0;
  assert.throws(() => pool.run(2, 0, () => [], () => local++), /helper thread could not start/);
});

test('the committed .wasm files are the .c files assembled, using no stack or static data (when clang-19 and wabt are installed)', () => {
  if (spawnSync('clang-19', ['--version']).status !== 0 || spawnSync('wasm2wat', ['--version']).status !== 0) return;
  const dir = path.join(__dirname, '../models/kernels');
  const copy = fs.mkdtempSync(path.join(os.tmpdir(), 'mimref-kernels-'));
  fs.mkdirSync(path.join(copy, 'scripts'));
  fs.mkdirSync(path.join(copy, 'models/kernels'), { recursive: true });
  fs.copyFileSync(path.join(__dirname, '../scripts/build-kernels.sh'), path.join(copy, 'scripts/build-kernels.sh'));
  for (const f of fs.readdirSync(dir).filter((f) => /\.(c|h)$/.test(f))) fs.copyFileSync(path.join(dir, f), path.join(copy, 'models/kernels', f));
  const run = spawnSync('sh', [path.join(copy, 'scripts/build-kernels.sh')]);
  assert.is(run.status, 0, String(run.stderr));
  const built = fs.readdirSync(path.join(copy, 'models/kernels')).filter((f) => f.endsWith('.wasm'));
  assert.equal(built.sort(), fs.readdirSync(dir).filter((f) => f.endsWith('.wasm')).sort());
  for (const f of built) {
    const file = path.join(dir, f);
    assert.ok(fs.readFileSync(file).equals(fs.readFileSync(path.join(copy, 'models/kernels', f))), `${f} differs from a fresh build`);
    // the kernels share tfjs's heap: a shadow stack or data segment would write into it
    const wat = spawnSync('wasm2wat', ['--enable-threads', '--enable-relaxed-simd', file]).stdout.toString();
    assert.not.match(wat, /global\.get \$__stack_pointer|\(data /, `${f} uses the shadow stack or static data`);
  }
});

test.run();

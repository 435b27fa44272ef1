/**
 * The fused wasm attention kernels (models/kernels/attention.c) against the same attention
 * composed from tfjs ops: outputs and gradients w.r.t. qkv, on shapes that exercise every
 * register-tile remainder. The ViT's PyTorch parity (vit-parity.spec.ts) runs through them too.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../runtime/backend';
import { attention, attentionComposed } from '../models/ops';

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

test('the wasm backend runs attention as the fused kernels', async () => {
  const info = await initBackend(() => undefined);
  assert.is(info.tfBackend, 'wasm');
  assert.ok(info.fusedAttention, 'fused attention kernels were not registered');
});

// [batch, tokens, heads, headDim]: tokens 1..3 mod 8 and < 4 rows, odd head widths
const SHAPES = [
  [2, 65, 2, 64],
  [3, 17, 3, 12],
  [1, 5, 1, 3],
  [2, 3, 4, 8],
  [1, 50, 2, 5],
];

for (const [batch, tokens, heads, headDim] of SHAPES) {
  test(`fused = composed, values and qkv gradients: batch ${batch}, tokens ${tokens}, heads ${heads}, head width ${headDim}`, () => {
    const width = 3 * heads * headDim;
    const qkv = tf.randomNormal([batch * tokens, width], 0, 1.5, 'float32', 7) as tf.Tensor2D;
    const weights = tf.randomNormal([batch * tokens, heads * headDim], 0, 1, 'float32', 8);
    const loss = (f: typeof attention) => (x: tf.Tensor) => tf.sum(tf.mul(f(x as tf.Tensor2D, batch, heads), weights));
    const before = tf.memory().numTensors;
    const fused = tf.valueAndGrad(loss(attention))(qkv);
    const composed = tf.valueAndGrad(loss(attentionComposed))(qkv);
    const out = tf.tidy(() => attention(qkv, batch, heads));
    const outRef = tf.tidy(() => attentionComposed(qkv, batch, heads));
    assert.equal(out.shape, [batch * tokens, heads * headDim]);
    // both are float32 with different summation orders and exp implementations
    const outErr = maxAbsDiff(out.dataSync(), outRef.dataSync());
    assert.ok(outErr < 1e-5, `output max abs error ${outErr}`);
    const gradErr = maxAbsDiff(fused.grad.dataSync(), composed.grad.dataSync());
    const gradScale = Math.max(...Array.from(composed.grad.dataSync(), Math.abs));
    assert.ok(gradErr < 1e-5 * Math.max(1, gradScale), `gradient max abs error ${gradErr} (scale ${gradScale})`);
    tf.dispose([fused.value, fused.grad, composed.value, composed.grad, out, outRef]);
    assert.is(tf.memory().numTensors, before, 'tensors leaked');
    tf.dispose([qkv, weights]);
  });
}

test('the committed kernels are attention.c assembled (when clang is installed)', () => {
  if (spawnSync('clang', ['--version']).status !== 0) return;
  const dir = path.join(__dirname, '../models/kernels');
  const copy = fs.mkdtempSync(path.join(os.tmpdir(), 'mimref-kernels-'));
  fs.mkdirSync(path.join(copy, 'scripts'));
  fs.mkdirSync(path.join(copy, 'models/kernels'), { recursive: true });
  fs.copyFileSync(path.join(__dirname, '../scripts/build-kernels.sh'), path.join(copy, 'scripts/build-kernels.sh'));
  fs.copyFileSync(path.join(dir, 'attention.c'), path.join(copy, 'models/kernels/attention.c'));
  const run = spawnSync('sh', [path.join(copy, 'scripts/build-kernels.sh')]);
  assert.is(run.status, 0, String(run.stderr));
  for (const f of ['attention.wasm', 'attention.shared.wasm']) {
    assert.ok(fs.readFileSync(path.join(dir, f)).equals(fs.readFileSync(path.join(copy, 'models/kernels', f))), `${f} differs from a fresh build`);
  }
});

test.run();

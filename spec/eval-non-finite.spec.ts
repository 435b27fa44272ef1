/**
 * Non-finite numbers in evaluation are errors, never results: the bundled MAE checkpoint with one
 * weight set to 1e38 (blocks.0.norm1.weight[0]: finite, but the forward pass overflows float32)
 * makes extraction refuse, naming the checkpoint, the block, the data and the weight; a cache
 * file holding NaN features is not served; feature matrices and the linear probe refuse NaN.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { initBackend } from '../runtime/backend';
import { loadEncoder } from '../runtime/checkpoint';
import { VisionTransformer } from '../models/vit';
import { readSafetensors, writeSafetensors } from '../models/safetensors';
import { cachedFeatures, checkpointKey } from '../eval/feature-cache';
import { featureMatrix } from '../eval/features';
import { trainSoftmax } from '../eval/linear-probe';
import { BUNDLED_CHECKPOINT, overflowing } from '../scripts/make-bad-input-corpus';
import { rejects } from './eval-helpers';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'eval-non-finite-'));
const overflowFile = path.join(dir, 'overflow.safetensors');
const source = 'data/cifar10-mini/test-*.tar.gz';
let bad: VisionTransformer;
let good: VisionTransformer;

test.before(async () => {
  await initBackend(() => {});
  const { tensors, metadata } = readSafetensors(BUNDLED_CHECKPOINT);
  const weights: Record<string, { shape: number[]; data: Float32Array }> = {};
  for (const [name, t] of tensors) weights[name] = { shape: t.shape, data: t.data as Float32Array };
  writeSafetensors(overflowFile, overflowing(weights), metadata);
  bad = loadEncoder(overflowFile); // loads: every weight is finite
  good = loadEncoder(BUNDLED_CHECKPOINT);
});

test.after(() => {
  bad.dispose();
  good.dispose();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('a checkpoint whose weights overflow: extraction refuses, naming the checkpoint, the block, the data and the weight; nothing cached', async () => {
  const cacheDir = path.join(dir, 'cache-bad');
  await rejects(
    () => cachedFeatures(bad, checkpointKey(overflowFile), { source, blocks: [5, 2], limit: 8, model: overflowFile }, cacheDir),
    new RegExp(
      `^${overflowFile.replace(/[.]/g, '\\.')}: the features of block 2 are not finite \\(NaN or infinity\\) for 8 of the 8 images 1\\.\\.8 of ${source.replace(/[.*]/g, '\\$&')}; ` +
        'the activations first stop being finite at the output of block 0; its largest weight is blocks\\.0\\.norm1\\.weight \\(\\|w\\| up to 1\\.00e\\+38\\)',
    ),
  );
  assert.equal(fs.existsSync(cacheDir) ? fs.readdirSync(cacheDir).filter((f) => f.endsWith('.safetensors')) : [], []);
});

test('the healthy checkpoint extracts finite features; a cache file holding NaN is not served but extracted again', async () => {
  const cacheDir = path.join(dir, 'cache-good');
  const opts = { source, blocks: [0, 5], limit: 8 };
  const first = await cachedFeatures(good, checkpointKey(BUNDLED_CHECKPOINT), opts, cacheDir);
  assert.not.ok(first.cached);
  assert.ok(first.features.every((f) => f.every(Number.isFinite)));
  // a file with NaN features under the right key, as a version without the check could have written
  const [file] = fs.readdirSync(cacheDir).filter((f) => f.endsWith('.safetensors')).map((f) => path.join(cacheDir, f));
  const { tensors, metadata } = readSafetensors(file);
  const poisoned = Object.fromEntries([...tensors].map(([name, t]) => [name, { shape: t.shape, data: t.data as Float32Array | Int32Array }]));
  poisoned['features.5'] = { shape: tensors.get('features.5')!.shape, data: new Float32Array(tensors.get('features.5')!.data.length).fill(NaN) };
  writeSafetensors(file, poisoned, metadata);
  const warnings: string[] = [];
  const warn = console.warn;
  console.warn = (line: string) => warnings.push(line);
  try {
    const again = await cachedFeatures(good, checkpointKey(BUNDLED_CHECKPOINT), opts, cacheDir);
    assert.not.ok(again.cached, 'the NaN file was served');
    assert.equal(again.features, first.features);
  } finally {
    console.warn = warn;
  }
  assert.ok(warnings.some((w) => /unusable \(features\.5 holds NaN or infinity\); extracting again/.test(w)), warnings.join('\n'));
});

test('feature matrices refuse NaN and infinity, naming the row and column', () => {
  featureMatrix(new Float32Array([1, 2, 3, 4]), 2, 2);
  assert.throws(() => featureMatrix(new Float32Array([1, 2, NaN, 4]), 2, 2), /value NaN at row 1, column 0/);
  assert.throws(() => featureMatrix(new Float32Array([1, -Infinity, 3, 4]), 2, 2), /value -Infinity at row 0, column 1/);
});

test('linear probe: a loss or gradient that overflows float32 is an error, not a classifier that stopped learning', async () => {
  // unstandardised features of 1e36: the gradient's square overflows float32, Adam's step becomes 0
  const rows = 32;
  const labels = Int32Array.from({ length: rows }, (_, i) => i % 2);
  const data = (scale: number) => featureMatrix(Float32Array.from({ length: rows * 4 }, (_, i) => (labels[Math.floor(i / 4)] === 0 ? 1 : -1) * (1 + (i % 4)) * scale), rows, 4);
  await rejects(() => trainSoftmax(data(1e36), labels, [{ lr: 1, weightDecay: 0 }], { numClasses: 2, minSteps: 20 }), /^linear probe: the loss's gradient is not finite in float32 at step 1 of 20 \(lr 1\): the features are too large/);
  // the same data at a sane scale trains, and learns
  const model = await trainSoftmax(data(1), labels, [{ lr: 0.1, weightDecay: 0 }], { numClasses: 2, minSteps: 20 });
  assert.ok(model.weights.some((w) => Math.abs(w) > 0.1), 'the sane probe learned nothing');
});

test.run();

/**
 * The composition example (pipelines/nnclr.ts) runs a few steps on the bundled images, and its
 * loss (losses/nnclr.ts) equals the hand-computed InfoNCE value.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../runtime/backend';
import { writeEncoder } from '../runtime/checkpoint';
import { readSafetensors } from '../models/safetensors';
import { VisionTransformer } from '../models/vit';
import { nnclrLoss } from '../losses/nnclr';
import { nnclr } from '../pipelines/nnclr';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nnclr-spec-'));
const checkpoint = path.join(dir, 'mim.safetensors');

test.before(async () => {
  await initBackend(() => undefined);
  const model = new VisionTransformer({ imgSize: 16, patchSize: 4, embedDim: 32, depth: 2, numHeads: 2, mlpRatio: 2, act: 'gelu', posEmbed: 'sincos' }, 1);
  await writeEncoder(checkpoint, model);
  model.dispose();
});

test('InfoNCE with neighbour anchors: orthonormal pairs at tau 1 give log(1 + e) - 1', () => {
  const e = tf.tensor2d([[1, 0], [0, 2]]);
  const loss = nnclrLoss([e, e], [e, e], 1);
  assert.ok(Math.abs(loss.dataSync()[0] - (Math.log(1 + Math.E) - 1)) < 1e-6);
  tf.dispose([e, loss]);
});

test('NNCLR on the last block, composed from the same operators, trains a few steps on the bundled data', async () => {
  const out = path.join(dir, 'run');
  await nnclr(['--checkpoint', checkpoint, '--train', 'data/cifar10-mini/test-*.tar.gz', '--out', out, '--epochs', '0.032', '--batch', '16', '--queue-size', '64', '--log-every', '2', '--skip-knn']);
  const rows = fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(rows.map((r) => r.step), [1, 2, 3, 4]);
  assert.ok(rows.every((r) => Number.isFinite(r.loss) && r.loss > 0 && Number.isFinite(r.grad_norm) && r.nn_acc >= 0));
  const start = readSafetensors(checkpoint).tensors.get('blocks.1.mlp.fc2.weight')!.data;
  const end = readSafetensors(path.join(out, 'checkpoint', 'encoder.safetensors')).tensors.get('blocks.1.mlp.fc2.weight')!.data;
  assert.ok(end.some((v, i) => v !== start[i]), 'the encoder did not move');
});

test.run();

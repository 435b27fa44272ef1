/**
 * The ViT against PyTorch: a timm-layout model's weights, input, per-block tokens and the
 * gradients of a scalar loss w.r.t. every parameter, written by scripts/make-vit-fixture.py.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../runtime/backend';
import { readSafetensors } from '../models/safetensors';
import { hostTensors } from '../runtime/checkpoint';
import { VisionTransformer } from '../models/vit';

const FIXTURE = 'spec/fixtures/vit-parity.safetensors';

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.is(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function load(): { model: VisionTransformer; ref: Map<string, { shape: number[]; data: Float32Array }> } {
  const ref = hostTensors(readSafetensors(FIXTURE).tensors);
  const model = new VisionTransformer({ imgSize: 16, patchSize: 4, embedDim: 32, depth: 3, numHeads: 2, mlpRatio: 4, act: 'gelu', posEmbed: 'learned' });
  model.params.importTimm(ref, FIXTURE, /^(input|output|grad)\./);
  return { model, ref };
}

test('every block and the final norm match PyTorch to 1e-4', async () => {
  await initBackend(() => undefined);
  const { model, ref } = load();
  const images = tf.tensor4d(ref.get('input.images')!.data, [2, 16, 16, 3]);
  const outs = model.getIntermediateLayers(images, { blocks: [0, 1, 2] });
  const normed = model.getIntermediateLayers(images, { blocks: [2], norm: true })[0];
  for (let i = 0; i < 3; i++) {
    const err = maxAbsDiff(outs[i].dataSync(), ref.get(`output.block${i}`)!.data);
    assert.ok(err < 1e-4, `block ${i}: max abs error ${err}`);
  }
  const err = maxAbsDiff(normed.dataSync(), ref.get('output.final_norm')!.data);
  assert.ok(err < 1e-4, `final norm: max abs error ${err}`);
  tf.dispose([images, ...outs, normed]);
  model.dispose();
});

test('parameter gradients match PyTorch', async () => {
  await initBackend(() => undefined);
  const { model, ref } = load();
  const images = tf.tensor4d(ref.get('input.images')!.data, [2, 16, 16, 3]);
  const r = tf.tensor3d(ref.get('input.grad_weights')!.data, [2, 17, 32]);
  const { value, grads } = tf.variableGrads(() =>
    tf.sum(tf.mul(model.getIntermediateLayers(images, { blocks: [2], norm: true })[0], r)) as tf.Scalar,
  );
  assert.ok(Math.abs(value.dataSync()[0] - 13.189178764469533) < 1e-3, `loss ${value.dataSync()[0]}`);
  // write each gradient into its variable, so exportTimm brings it to PyTorch layout
  let checked = 0;
  for (const { name, variable } of model.params.trainable()) {
    const g = grads[variable.name];
    assert.ok(g, `no gradient for ${name}`);
    variable.assign(g);
    checked++;
  }
  const exported = await model.params.exportTimm();
  for (const { name } of model.params.trainable()) {
    const want = ref.get(`grad.${name}`)!;
    const got = exported[name];
    assert.equal(got.shape, want.shape, name);
    const scale = Math.max(1e-3, ...Array.from(want.data, Math.abs));
    const err = maxAbsDiff(got.data, want.data);
    assert.ok(err / scale < 1e-4, `${name}: max abs error ${err} (max |grad| ${scale})`);
  }
  assert.is(checked, 4 + 12 * 3 + 2);
  tf.dispose([images, r, value, grads]);
  model.dispose();
});

test.run();

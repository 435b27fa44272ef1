/**
 * MimCo end to end: the student's masked forward, a few optimiser steps on a fixed batch, and
 * the pipeline on real bundled images with a tiny teacher (checkpoint, metrics, determinism,
 * exact resume) plus its refusals before training.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../runtime/backend';
import { Rng } from '../lib/rng';
import { loadEncoder, writeEncoder } from '../runtime/checkpoint';
import { readSafetensors } from '../models/safetensors';
import { VisionTransformer, VitConfig, VIT_PRESETS } from '../models/vit';
import { randomMasking } from '../models/mae';
import { AdamW } from '../models/adamw';
import { maskedEncode, MimcoHeads, splitCls, studentProjections } from '../models/mimco';
import { mimcoLoss } from '../losses/mimco';
import { mimco } from '../pipelines/mimco';
import { withFlags } from './argv';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mimco-spec-'));
const tiny = (over: Partial<VitConfig> = {}): VitConfig => ({ imgSize: 16, patchSize: 4, embedDim: 32, depth: 2, numHeads: 2, mlpRatio: 2, act: 'gelu', posEmbed: 'sincos', ...over });
// a teacher on vit-micro-p4's grid (32 px, patch 4) and one on another grid (patch 8)
const teacherFile = path.join(dir, 'teacher.safetensors');
const coarseTeacherFile = path.join(dir, 'teacher-p8.safetensors');
// 2000 bundled test images, batch 8: 250 steps per epoch, 4 steps in all
const base = ['--teacher', teacherFile, '--head-warmup-epochs', '0', '--train', 'data/cifar10-mini/test-*.tar.gz', '--batch', '8', '--epochs', '0.016', '--warmup-share', '0.25', '--lr', '1e-2', '--skip-knn', '--seed', '3'];
const common = [...base, '--checkpoint', 'none', '--preset', 'vit-micro-p4'];

function rows(run: string): Record<string, number>[] {
  return fs.readFileSync(path.join(run, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
}

function weights(run: string): Map<string, Float32Array> {
  const { tensors } = readSafetensors(path.join(run, 'checkpoint', 'encoder.safetensors'));
  return new Map([...tensors].map(([k, t]) => [k, t.data as Float32Array]));
}

test.before(async () => {
  await initBackend(() => undefined);
  for (const [file, cfg] of [[teacherFile, tiny({ imgSize: 32 })], [coarseTeacherFile, tiny({ imgSize: 32, patchSize: 8 })]] as const) {
    const model = new VisionTransformer(cfg, 7);
    await writeEncoder(file, model);
    model.dispose();
  }
});

test('masked patches enter as the mask token: their pixels do not reach any output', () => {
  const enc = new VisionTransformer(tiny(), 1);
  const token = tf.randomNormal([1, 1, 32], 0, 1, 'float32', 2);
  const images = tf.randomNormal([2, 16, 16, 3], 0, 1, 'float32', 3) as tf.Tensor4D;
  const mask = tf.tensor2d([[1, 0, ...Array(14).fill(0)], [0, 0, ...Array(14).fill(1)]]);
  // patch 0 (rows 0-3, columns 0-3) of image 0 is masked, patch 1 (columns 4-7) is not
  const poke = (x0: number) => tf.tidy(() => tf.add(images, tf.pad(tf.ones([1, 4, 4, 3]), [[0, 1], [0, 12], [x0, 12 - x0], [0, 0]])) as tf.Tensor4D);
  const out = (x: tf.Tensor4D) => tf.tidy(() => Array.from(maskedEncode(enc, x, mask, token).dataSync()));
  const base = out(images);
  assert.equal(out(poke(0)), base, 'a masked patch changed the output');
  assert.not.equal(out(poke(4)), base, 'an unmasked patch did not change the output');
  const shapes = tf.tidy(() => {
    const { cls, patches } = splitCls(maskedEncode(enc, images, mask, token));
    return [cls.shape, patches.shape];
  });
  assert.equal(shapes, [[2, 32], [2, 16, 32]]);
  enc.dispose();
});

test('the loss trains down on a fixed batch, with a flat tensor count', () => {
  const teacher = new VisionTransformer(tiny(), 11);
  const student = new VisionTransformer(tiny({ embedDim: 16 }), 12);
  const heads = new MimcoHeads(16, 32, 32, 'gelu', 13);
  const opt = new AdamW([...student.params.trainable(), ...heads.params.trainable().map((p) => ({ ...p, name: `h:${p.name}` }))].map((p) => ({ ...p, lrScale: 1, weightDecay: 0 })));
  const images = tf.randomNormal([4, 16, 16, 3], 0, 1, 'float32', 4) as tf.Tensor4D;
  const plan = randomMasking(4, 16, 0.5, new Rng(5));
  const target = tf.tidy(() => splitCls(teacher.getIntermediateLayers(images, { blocks: [1], norm: true })[0]));
  const losses: number[] = [];
  let tensors = 0;
  for (let s = 0; s < 30; s++) {
    tf.tidy(() => {
      const { value, grads } = tf.variableGrads(() => {
        const p = studentProjections(student, heads, images, plan.mask);
        return mimcoLoss({ studentPatches: p.patches, teacherPatches: target.patches, mask: plan.mask, studentGlobal: p.global, teacherGlobal: target.cls, temperature: 0.2 }).total;
      }, opt.params.map((p) => p.variable));
      opt.apply(grads, 3e-3);
      losses.push(value.dataSync()[0]);
    });
    if (s === 2) tensors = tf.memory().numTensors;
  }
  assert.is(tf.memory().numTensors, tensors, 'tensor count grew across steps');
  assert.ok(losses[29] < 0.7 * losses[0], `loss ${losses[0]} -> ${losses[29]}`);
  const maskTokenGrad = tf.tidy(() => {
    const { grads } = tf.variableGrads(() => {
      const p = studentProjections(student, heads, images, plan.mask);
      return mimcoLoss({ studentPatches: p.patches, teacherPatches: target.patches, mask: plan.mask, studentGlobal: p.global, teacherGlobal: target.cls, temperature: 0.2 }).total;
    }, opt.params.map((p) => p.variable));
    return tf.max(tf.abs(grads[heads.maskToken.name])).dataSync()[0];
  });
  assert.ok(maskTokenGrad > 0, 'the mask token gets no gradient');
  tf.dispose([images, plan.keep, plan.mask, plan.restore, target.cls, target.patches]);
  opt.dispose();
  [teacher, student].forEach((m) => m.dispose());
  heads.params.dispose();
});

test('a short real run writes a loadable student checkpoint and finite per-step losses', async () => {
  const run = await mimco([...common, '--out', path.join(dir, 'a')]);
  const student = loadEncoder(path.join(run, 'checkpoint', 'encoder.safetensors'));
  assert.equal(student.cfg, { ...VIT_PRESETS['vit-micro-p4'], act: 'gelu', posEmbed: 'sincos' });
  student.dispose();
  assert.ok(fs.existsSync(path.join(run, 'checkpoint', 'state.safetensors')));
  assert.ok(fs.existsSync(path.join(run, 'loss.png')));
  const r = rows(run);
  assert.equal(r.map((x) => x.step), [1, 2, 3, 4]);
  for (const x of r) {
    assert.ok(Number.isFinite(x.loss) && x.loss > 0, `loss ${x.loss}`);
    assert.ok(Math.abs(x.loss - x.loss_patch - x.loss_image) < 1e-4, 'loss = patch + image');
    // InfoNCE starts near log(number of candidates): 64 positions, 8 images
    assert.ok(x.loss_patch < 2 * Math.log(64) && x.loss_image < 2 * Math.log(8), JSON.stringify(x));
  }
});

test('the same seed gives the same losses and weights', async () => {
  const run = await mimco([...common, '--out', path.join(dir, 'b')]);
  assert.equal(rows(run).map((x) => x.loss), rows(path.join(dir, 'a')).map((x) => x.loss));
  const a = weights(path.join(dir, 'a'));
  for (const [k, v] of weights(run)) assert.equal(Array.from(v), Array.from(a.get(k)!), k);
});

test('stop after 2 steps + resume == straight through', async () => {
  await mimco([...common, '--out', path.join(dir, 'c'), '--max-steps', '2']);
  assert.is(rows(path.join(dir, 'c')).length, 2);
  const run = await mimco(['--resume', path.join(dir, 'c')]);
  assert.equal(rows(run).map((x) => x.loss), rows(path.join(dir, 'a')).map((x) => x.loss));
  const a = weights(path.join(dir, 'a'));
  for (const [k, v] of weights(run)) assert.equal(Array.from(v), Array.from(a.get(k)!), k);
});

const initFile = path.join(dir, 'init.safetensors');

test('--init: the student starts from the given encoder, a from-scratch student does not', async () => {
  const model = new VisionTransformer({ ...VIT_PRESETS['vit-micro-p4'], act: 'gelu', posEmbed: 'sincos' }, 21);
  await writeEncoder(initFile, model);
  model.dispose();
  const fromFile = new Map([...readSafetensors(initFile).tensors].map(([k, t]) => [k, Array.from(t.data as Float32Array)]));
  // one step at lr 0 (no update, no weight decay): the checkpoint holds the weights the student started from
  const atLrZero = ['--lr', '0', '--min-lr', '0', '--max-steps', '1'];
  const run = await mimco(withFlags(base, [...atLrZero, '--checkpoint', initFile, '--out', path.join(dir, 'init')]));
  const started = weights(run);
  assert.equal([...started.keys()].sort(), [...fromFile.keys()].sort());
  for (const [k, v] of started) assert.equal(Array.from(v), fromFile.get(k), k);
  const scratch = weights(await mimco(withFlags(common, [...atLrZero, '--out', path.join(dir, 'scratch')])));
  assert.not.equal(Array.from(scratch.get('blocks.0.attn.qkv.weight')!), fromFile.get('blocks.0.attn.qkv.weight'));
});

test('--head-warmup-epochs: the heads and mask token train alone first, the student stays as it was loaded', async () => {
  // 250 steps an epoch: 0.008 epoch = 2 steps of the heads alone, then the MimCo stage
  const run = await mimco(withFlags(base, ['--checkpoint', initFile, '--head-warmup-epochs', '0.008', '--max-steps', '2', '--out', path.join(dir, 'heads')]));
  const fromFile = readSafetensors(initFile).tensors;
  for (const [k, v] of weights(run)) assert.equal(Array.from(v), Array.from(fromFile.get(k)!.data as Float32Array), k);
  // the heads as the run built them (seed 3 + 1; teacher width 32, hidden 64) moved, the mask token among them
  const fresh = new MimcoHeads(128, 32, 64, 'gelu', 4);
  const before = await fresh.params.exportTimm();
  fresh.params.dispose();
  const state = readSafetensors(path.join(run, 'checkpoint', 'state.safetensors')).tensors;
  for (const name of ['mask_token', ...Object.keys(before).filter((k) => k !== 'mask_token').slice(0, 1)]) {
    assert.ok(state.has(`mimco.${name}`), `mimco.${name} not in the state`);
    assert.not.equal(Array.from(state.get(`mimco.${name}`)!.data as Float32Array), Array.from(before[name].data), `${name} did not train`);
  }
  const after = await mimco(['--resume', run]);
  assert.not.equal(Array.from(weights(after).get('blocks.0.attn.qkv.weight')!), Array.from(fromFile.get('blocks.0.attn.qkv.weight')!.data as Float32Array), 'the MimCo stage trains the student');
});

test('a teacher or --init on another patch grid, a missing --init, a missing or corrupt teacher, a bad block and a bad crop scale are refused before training', async () => {
  const refused = async (extra: string[], pattern: RegExp, out: string) => {
    try {
      await mimco(withFlags(common, ['--out', path.join(dir, out), ...extra]));
      assert.unreachable('should have thrown');
    } catch (err) {
      assert.match((err as Error).message, pattern);
      assert.not.ok(fs.existsSync(path.join(dir, out)), 'a run directory was created');
    }
  };
  await refused(['--teacher', coarseTeacherFile], /student --checkpoint none \(32 px, patch 4: 8x8 patches, width 128\) does not match the teacher .*teacher-p8\.safetensors \(32 px, patch 8: 4x4 patches, width 32\)/, 'd');
  await refused(['--checkpoint', coarseTeacherFile], /student --checkpoint .*teacher-p8\.safetensors \(32 px, patch 8: 4x4 patches, width 32\) does not match the teacher .*teacher\.safetensors \(32 px, patch 4/, 'j');
  await refused(['--checkpoint', path.join(dir, 'nope-init.safetensors')], /nope-init\.safetensors: checkpoint not found/, 'k');
  await refused(['--teacher', path.join(dir, 'nope.safetensors')], /nope\.safetensors: checkpoint not found/, 'e');
  const corrupt = path.join(dir, 'corrupt.safetensors');
  fs.writeFileSync(corrupt, Buffer.from('not a safetensors file at all'));
  await refused(['--teacher', corrupt], /corrupt\.safetensors/, 'f');
  await refused(['--teacher-block', '2'], /--teacher-block: block 2 does not exist in .*teacher\.safetensors \(blocks 0\.\.1\)/, 'g');
  await refused(['--crop-scale', '0.9,0.2'], /--crop-scale: expected lo,hi with lo <= hi, got '0\.9,0\.2'/, 'h');
  await refused(['--crop-scale', '0.2'], /--crop-scale: expected lo,hi, got '0\.2'/, 'i');
});

test.after(() => fs.rmSync(dir, { recursive: true, force: true }));

test.run();

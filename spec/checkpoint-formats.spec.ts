/**
 * Encoders from the ecosystem: timm and Hugging Face (ViT, ViTMAE) safetensors and PyTorch
 * .pth files without any 'vit' metadata, loaded by loadEncoder and compared with the CLS
 * features PyTorch computes from the same files (scripts/make-ecosystem-fixtures.py), also at
 * other image sizes than the checkpoint's (position embeddings resampled or regenerated);
 * hostile and unsupported files refused with errors naming them.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../runtime/backend';
import { readSafetensors, writeSafetensors } from '../models/safetensors';
import { hostTensors, loadEncoder, writeEncoder, type LoadEncoderOptions } from '../runtime/checkpoint';
import { sincosPosEmbed, VIT_PRESETS, type VisionTransformer, type VitConfig } from '../models/vit';
import { defaultNumHeads } from '../models/checkpoint-formats';
import { unpickleStateDict } from '../models/torch-pickle';
import { fixtureImages } from './fixture-images';

const DIR = 'spec/fixtures/ecosystem';
const at = (name: string) => path.join(DIR, name);
const ref = hostTensors(readSafetensors(at('reference.safetensors')).tensors);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'checkpoint-formats-'));

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.is(a.length, b.length, 'lengths');
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** Loads `file`, returning the model and the log line. */
function load(file: string, opts: LoadEncoderOptions = {}): { model: VisionTransformer; log: string } {
  const lines: string[] = [];
  const model = loadEncoder(file, { ...opts, log: (l) => lines.push(l) });
  assert.is(lines.length, 1, 'one log line');
  return { model, log: lines[0] };
}

/** The CLS token after the final norm at `size` px equals PyTorch's `refKey` to 1e-5. */
function assertCls(model: VisionTransformer, size: number, refKey: string): void {
  const want = ref.get(refKey);
  assert.ok(want, `reference ${refKey}`);
  const x = fixtureImages(size);
  const [cls] = model.clsFeatures(x, [model.cfg.depth - 1], true);
  const err = maxAbsDiff(cls.dataSync(), want!.data);
  tf.dispose([x, cls]);
  assert.ok(err < 1e-5, `${refKey}: max abs error ${err}`);
}

function throwsWith(f: () => unknown, ...fragments: string[]): string {
  try {
    f();
  } catch (e) {
    const message = (e as Error).message;
    for (const frag of fragments) assert.ok(message.includes(frag), `error lacks "${frag}": ${message}`);
    return message;
  }
  assert.unreachable(`no error (expected one with ${fragments.join(', ')})`);
  return '';
}

test.before(async () => {
  await initBackend(() => undefined);
});

test('the formula images are the fixture script\'s', () => {
  const x = fixtureImages(32);
  assert.ok(maxAbsDiff(x.dataSync(), ref.get('input.s32')!.data) < 1e-6);
  x.dispose();
});

test('timm safetensors without metadata: config read off the tensors, CLS features as PyTorch', () => {
  const { model, log } = load(at('timm-p16-64.safetensors'));
  assert.equal(model.cfg, { imgSize: 64, patchSize: 16, embedDim: 16, depth: 2, numHeads: 1, mlpRatio: 3, act: 'gelu', posEmbed: 'learned' });
  for (const frag of ['safetensors', "no 'vit' metadata: config inferred from the tensors", 'width 16, patch 16 (patch_embed.proj.weight [16,3,16,16])', 'depth 2', 'mlp ratio 3', '4x4 patches + class token -> image size 64 (pos_embed [1,17,16])', "1 head (timm's default for width 16", 'learned position embedding', 'left out 2 tensor(s)', 'head.weight']) {
    assert.ok(log.includes(frag), `log lacks "${frag}": ${log}`);
  }
  assert.ok(model.params.trainable().some((p) => p.name === 'pos_embed'), 'a learned pos_embed stays trainable');
  assertCls(model, 64, 'cls.timm-p16-64');
  model.dispose();
});

test('timm .pth training checkpoint (weights under model, fp16 storages, strided and offset views)', () => {
  const { model, log } = load(at('timm-p16-64.pth'));
  assert.ok(log.includes("PyTorch zip checkpoint, weights under 'model'"), log);
  assert.is(model.cfg.imgSize, 64);
  assertCls(model, 64, 'cls.timm-p16-64');
  model.dispose();
});

test('patch 14 with MAE sin-cos positions (bf16 safetensors, MAE .pth with decoder): recognised, fixed, regenerated at 84 px', () => {
  for (const file of ['timm-p14-56.safetensors', 'timm-p14-56.pth']) {
    const { model, log } = load(at(file));
    assert.equal(model.cfg, { imgSize: 56, patchSize: 14, embedDim: 16, depth: 2, numHeads: 1, mlpRatio: 4, act: 'gelu', posEmbed: 'sincos' }, file);
    assert.ok(log.includes('fixed 2-D sin-cos position embedding'), log);
    assert.not.ok(model.params.trainable().some((p) => p.name === 'pos_embed'), 'sin-cos stays fixed');
    assertCls(model, 56, 'cls.timm-p14-56');
    model.dispose();
  }
  const { model, log } = load(at('timm-p14-56.pth'), { imgSize: 84 });
  assert.ok(log.includes('sin-cos position embedding regenerated for 6x6 patches (image size 84'), log);
  assert.ok(log.includes('decoder_embed.weight'), `the decoder is left out: ${log}`);
  assert.is(maxAbsDiff(model.params.get('pos_embed').dataSync(), sincosPosEmbed(16, 6)), 0);
  assertCls(model, 84, 'cls.timm-p14-56@84');
  model.dispose();
});

test("a 48-px checkpoint run at 32 and 64 px: pos_embed resampled as timm's resample_abs_pos_embed (bicubic, with and without antialias)", () => {
  for (const size of [32, 64]) {
    for (const antialias of [true, false]) {
      const key = `timm-p8-48-avg@${size}${antialias ? '' : '-noaa'}`;
      const { model, log } = load(at('timm-p8-48-avg.safetensors'), { imgSize: size, antialias });
      assert.ok(log.includes(`resampled bicubically from 6x6 to ${size / 8}x${size / 8}`), log);
      assert.ok(log.includes('fc_norm taken as the final norm'), log);
      assert.is(model.cfg.posEmbed, 'learned');
      const posErr = maxAbsDiff(model.params.get('pos_embed').dataSync(), ref.get(`pos.${key}`)!.data);
      assert.ok(posErr < 1e-6, `${key}: pos_embed max abs error ${posErr}`);
      assertCls(model, size, `cls.${key}`);
      model.dispose();
    }
  }
});

test('Hugging Face ViT: save_pretrained safetensors (vit.encoder.layer...) and torch.save of transformers 5 names; heads from config.json', () => {
  for (const file of ['hf-vit/model.safetensors', 'hf-vit/pytorch_model.pth']) {
    const { model, log } = load(at(file));
    assert.ok(log.includes("Hugging Face ViT key names mapped to timm's"), log);
    assert.ok(log.includes('2 heads, gelu, LayerNorm eps 1e-12 from spec/fixtures/ecosystem/hf-vit/config.json'), log);
    assert.not.ok(log.includes('1 head'), log);
    assert.ok(log.includes('classifier.weight'), log);
    assert.equal(model.cfg, { imgSize: 32, patchSize: 8, embedDim: 16, depth: 2, numHeads: 2, mlpRatio: 3, act: 'gelu', posEmbed: 'learned', normEps: 1e-12 }, file);
    assertCls(model, 32, 'cls.hf-vit');
    model.dispose();
  }
});

test('Hugging Face ViTMAE: ViTMAEForPreTraining safetensors (decoder left out) and a .pth of ViTMAEModel under state_dict', () => {
  for (const file of ['hf-vitmae/model.safetensors', 'hf-vitmae/mae.pth']) {
    const { model, log } = load(at(file));
    assert.is(model.cfg.numHeads, 4, file);
    assert.is(model.cfg.posEmbed, 'sincos', `${file}: ViTMAE's fixed sin-cos is recognised`);
    if (file.endsWith('.pth')) assert.ok(log.includes("weights under 'state_dict'"), log);
    else assert.ok(log.includes('decoder.'), log);
    assertCls(model, 32, 'cls.hf-vitmae');
    model.dispose();
  }
});

test('an explicit preset wins over the inferred config; the positional form still works', () => {
  const preset: VitConfig = { imgSize: 64, patchSize: 16, embedDim: 16, depth: 2, numHeads: 2, mlpRatio: 3, act: 'gelu', posEmbed: 'sincos' };
  const { model, log } = load(at('timm-p16-64.safetensors'), { preset, presetFlag: '--teacher-preset' });
  assert.is(model.cfg.numHeads, 2);
  assert.is(model.cfg.posEmbed, 'learned', "the position embedding's kind is the file's");
  assert.ok(log.includes('config from --teacher-preset'), log);
  model.dispose();
  const positional = loadEncoder(at('timm-p16-64.safetensors'), preset, '--teacher-preset');
  assert.is(positional.cfg.numHeads, 2);
  positional.dispose();
  throwsWith(() => loadEncoder(at('timm-p16-64.safetensors'), { preset: { ...VIT_PRESETS['vit-micro-p4'], act: 'gelu', posEmbed: 'sincos' }, log: () => undefined }), at('timm-p16-64.safetensors'), 'does not match the model');
});

test("the bundled checkpoints stripped of their metadata infer the config their metadata holds", () => {
  for (const src of ['checkpoints/mae-vit-micro-p4/encoder.safetensors', 'checkpoints/refined-vit-micro-p4/encoder.safetensors']) {
    const { tensors, metadata } = readSafetensors(src);
    const file = path.join(tmp, 'no-metadata.safetensors');
    writeSafetensors(file, new Map([...tensors].map(([k, t]) => [k, { shape: t.shape, data: t.data }])));
    const { model } = load(file);
    assert.equal(model.cfg, JSON.parse(metadata.vit), src);
    model.dispose();
  }
});

test("DDP's module. prefix and timm's no_embed_class (no class-token position) load as the same model", () => {
  const { tensors } = readSafetensors(at('timm-p16-64.safetensors'));
  const pos = tensors.get('pos_embed')!;
  const cls = tensors.get('cls_token')!;
  const renamed = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [k, t] of tensors) renamed.set(`module.${k}`, { shape: t.shape, data: t.data as Float32Array });
  // the class token's position folded into the token itself, its row dropped: the same function
  renamed.set('module.cls_token', { shape: cls.shape, data: (cls.data as Float32Array).map((v, i) => v + pos.data[i]) });
  renamed.set('module.pos_embed', { shape: [1, 16, 16], data: (pos.data as Float32Array).slice(16) });
  const file = path.join(tmp, 'ddp-no-embed-class.safetensors');
  writeSafetensors(file, renamed);
  const { model, log } = load(file);
  assert.ok(log.includes('no class-token row (no_embed_class)'), log);
  assert.ok(log.includes('4x4 patches, class token without a position'), log);
  assertCls(model, 64, 'cls.timm-p16-64');
  model.dispose();
});

test('head counts by width as timm presets', () => {
  assert.equal([192, 384, 768, 1024, 1280, 128, 16].map(defaultNumHeads), [3, 6, 12, 16, 16, 2, 1]);
  assert.is(defaultNumHeads(100), undefined);
});

test('written back by writeEncoder, an imported checkpoint loads with its config from the metadata', async () => {
  const { model } = load(at('hf-vit/pytorch_model.pth'));
  const file = path.join(tmp, 'encoder.safetensors');
  await writeEncoder(file, model);
  const keys = [...readSafetensors(file).tensors.keys()].sort();
  assert.equal(keys.slice(0, 4), ['blocks.0.attn.proj.bias', 'blocks.0.attn.proj.weight', 'blocks.0.attn.qkv.bias', 'blocks.0.attn.qkv.weight']);
  const back = load(file);
  assert.ok(back.log.includes("config from its metadata 'vit'"), back.log);
  assert.equal(back.model.cfg, model.cfg);
  assertCls(back.model, 32, 'cls.hf-vit');
  model.dispose();
  back.model.dispose();
});

test('metadata configs with unknown or missing values are refused naming the file, the key and the allowed values', () => {
  const { tensors } = readSafetensors(at('timm-p16-64.safetensors'));
  const good = { imgSize: 64, patchSize: 16, embedDim: 16, depth: 2, numHeads: 1, mlpRatio: 3, act: 'gelu', posEmbed: 'learned' };
  const cases: Array<[Record<string, unknown>, string[]]> = [
    [{ ...good, act: 'relu6' }, ['act "relu6" is not supported', 'gelu, gelu_tanh']],
    [{ ...good, posEmbed: 'rope' }, ['posEmbed "rope" is not supported', 'sincos, learned']],
    [{ ...good, imgSize: undefined }, ['imgSize is missing']],
    [{ ...good, patchSize: 2.5 }, ['patchSize 2.5 is not a positive integer']],
    [{ ...good, qkNorm: true }, ['unknown key "qkNorm"']],
  ];
  cases.forEach(([vit, fragments], i) => {
    const file = path.join(tmp, `meta-${i}.safetensors`);
    writeSafetensors(file, new Map([...tensors].map(([k, t]) => [k, { shape: t.shape, data: t.data }])), { vit: JSON.stringify(vit) });
    throwsWith(() => loadEncoder(file, { log: () => undefined }), file, "metadata 'vit'", ...fragments);
  });
});

test('a folder, a legacy .pth and an image size off the patch grid are refused clearly', () => {
  throwsWith(() => loadEncoder(at('hf-vit'), { log: () => undefined }), at('hf-vit'), 'is a folder, not a checkpoint file', 'model.safetensors');
  throwsWith(() => loadEncoder(at('legacy.pth'), { log: () => undefined }), at('legacy.pth'), 'legacy (pre-1.6, non-zip) serialization');
  throwsWith(() => loadEncoder(at('timm-p16-64.safetensors'), { imgSize: 70, log: () => undefined }), 'image size 70 is not a positive multiple', 'patch size 16');
});

test('a hostile .pth (its pickle calls os.system) is refused and nothing runs', () => {
  const marker = '/tmp/mim-refiner-hostile-pth-ran';
  fs.rmSync(marker, { force: true });
  throwsWith(() => loadEncoder(at('hostile.pth'), { log: () => undefined }), at('hostile.pth'), 'refused', 'posix.system', 'Nothing from it was executed');
  assert.not.ok(fs.existsSync(marker), 'the command ran');
});

test('the pickle reader refuses other globals and object construction', () => {
  const pickle = (...parts: Array<string | number[]>) => Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'latin1') : Buffer.from(p))));
  throwsWith(() => unpickleStateDict(pickle([0x80, 2], 'cbuiltins\neval\n', [0x8c, 4], 'os.x', [0x85], 'R.'), 'x.pkl'), 'x.pkl', 'builtins.eval');
  // STACK_GLOBAL of 'nt'.'system'
  throwsWith(() => unpickleStateDict(pickle([0x80, 4], [0x8c, 2], 'nt', [0x8c, 6], 'system', [0x93], '.'), 'y.pkl'), 'nt.system');
  // NEWOBJ on an allowed class still constructs nothing
  throwsWith(() => unpickleStateDict(pickle([0x80, 2], 'ccollections\nOrderedDict\n)', [0x81], '.'), 'z.pkl'), 'constructs an arbitrary object');
  // a plain dict {'a': 1} goes through
  const value = unpickleStateDict(pickle([0x80, 2], '}q', [0], 'X', [1, 0, 0, 0], 'aK', [1], 's.'), 'ok.pkl');
  assert.ok(value instanceof Map && value.get('a') === 1);
});

test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

test.run();

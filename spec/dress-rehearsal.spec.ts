/**
 * The dress rehearsal of docs/your-own-model.md, at small sizes: a checkpoint made elsewhere (a
 * MAE pretraining .pth written by PyTorch, scripts/make-rehearsal-fixture.py) refined on
 * WebDataset shards streamed over HTTP and named by a brace range, then the refined encoder
 * measured by pipelines/knn.ts, and its keys and shapes checked against the PyTorch module's
 * strict load_state_dict contract (spec/fixtures/rehearsal/encoder-contract.json).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import sharp from 'sharp';
import * as tar from 'tar-stream';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../runtime/backend';
import { loadEncoder } from '../runtime/checkpoint';
import { readSafetensors } from '../models/safetensors';
import { refine } from '../pipelines/refine';
import { knn } from '../pipelines/knn';
import { writeTar, type Member } from './sources-fixtures';
import { startShardServer, type ShardServer } from './sources-server';
import { fixtureImages } from './fixture-images';

const FIXTURES = path.join(__dirname, 'fixtures', 'rehearsal');
const BUNDLED = path.join(__dirname, '..', 'data', 'cifar10-mini');
const IMG = 64;
// 4 training shards of 64 images, batch 16: 16 steps an epoch; 4 steps of stage 2 and 16 of stage 3
const TRAIN_SHARDS = 4;
const PER_SHARD = 64;
const BATCH = 16;
const STEPS = 20;

/** The PyTorch module's state-dict keys with their shapes and value sums, and its CLS features of the formula images. */
interface Contract {
  module: string;
  keys: Record<string, { shape: number[]; sum: number }>;
  cls: number[][];
}
const contract: Contract = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'encoder-contract.json'), 'utf8'));

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dress-rehearsal-'));
let server: ShardServer;
let runDir = '';

/** The first `count` samples (JPEG bytes, label, key) of a bundled gzipped shard. */
async function bundledSamples(file: string, count: number): Promise<{ key: string; jpg: Buffer; cls: string }[]> {
  const extract = tar.extract();
  const byKey = new Map<string, { jpg?: Buffer; cls?: string }>();
  const done = (async () => {
    for await (const entry of extract) {
      const chunks: Buffer[] = [];
      for await (const c of entry) chunks.push(c as Buffer);
      const name = entry.header.name;
      const key = name.slice(0, name.indexOf('.'));
      const s = byKey.get(key) ?? {};
      if (name.endsWith('.jpg')) s.jpg = Buffer.concat(chunks);
      if (name.endsWith('.cls')) s.cls = Buffer.concat(chunks).toString('utf8').trim();
      byKey.set(key, s);
    }
  })();
  extract.end(zlib.gunzipSync(fs.readFileSync(file)));
  await done;
  return [...byKey].slice(0, count).map(([key, s]) => ({ key, jpg: s.jpg!, cls: s.cls! }));
}

/** A shard of the bundled 32-px CIFAR images upscaled to the checkpoint's 64 px. */
async function writeShard(file: string, samples: { key: string; jpg: Buffer; cls: string }[]): Promise<void> {
  const members: Member[] = [];
  for (const s of samples) {
    const jpg = await sharp(s.jpg).resize(IMG, IMG, { kernel: 'cubic' }).jpeg({ quality: 90 }).toBuffer();
    members.push({ name: `${s.key}.jpg`, body: jpg }, { name: `${s.key}.cls`, body: s.cls });
  }
  await writeTar(file, members);
}

/** Runs `fn` with console.log and console.warn captured; returns what it printed. */
async function logged(fn: () => Promise<unknown>): Promise<string> {
  const { log, warn } = console;
  const lines: string[] = [];
  console.log = console.warn = (...a: unknown[]) => lines.push(a.join(' '));
  try {
    await fn();
  } finally {
    Object.assign(console, { log, warn });
  }
  return lines.join('\n');
}

test.before(async () => {
  await initBackend(() => undefined);
  // the remote shards' counts are kept in this run's folder, not in the checkout's .cache
  process.env.MIMREF_SHARD_INDEX_DIR = path.join(dir, 'shard-index');
  const shards = path.join(dir, 'shards');
  fs.mkdirSync(shards);
  const train = await bundledSamples(path.join(BUNDLED, 'train-000000.tar.gz'), TRAIN_SHARDS * PER_SHARD);
  for (let s = 0; s < TRAIN_SHARDS; s++) await writeShard(path.join(shards, `train-${String(s).padStart(6, '0')}.tar`), train.slice(s * PER_SHARD, (s + 1) * PER_SHARD));
  await writeShard(path.join(shards, 'val-000000.tar'), await bundledSamples(path.join(BUNDLED, 'val-000000.tar.gz'), PER_SHARD));
  await writeShard(path.join(shards, 'test-000000.tar'), await bundledSamples(path.join(BUNDLED, 'test-000000.tar.gz'), PER_SHARD));
  server = await startShardServer(shards);
});

test.after(async () => {
  await server?.close();
  delete process.env.MIMREF_SHARD_INDEX_DIR;
  fs.rmSync(dir, { recursive: true, force: true });
});

const checkpoint = path.join(FIXTURES, 'rehearsal.pth');
// the server's first path segment picks how it answers; 'imagenet' is none of its failure modes: plain 200/206
const data = () => [
  '--train', `${server.base}/imagenet/train-{000000..000003}.tar`,
  '--val', `${server.base}/imagenet/val-000000.tar`,
  '--test', `${server.base}/imagenet/test-000000.tar`,
];
const EVAL = { train: 128, val: 32, test: 32 };
const limits = ['--eval-train-limit', String(EVAL.train), '--eval-val-limit', String(EVAL.val), '--eval-test-limit', String(EVAL.test), '--knn-k', '10'];

test("the .pth loads as PyTorch's module computes it: MAE's checkpoint layout, config from the tensors, decoder left out", () => {
  const lines: string[] = [];
  const model = loadEncoder(checkpoint, { log: (l) => lines.push(l) });
  try {
    assert.equal(lines.length, 1);
    for (const part of ["PyTorch zip checkpoint, weights under 'model'", "timm's key names", 'width 64, patch 16', 'depth 4', 'image size 64', '1 head', 'fixed 2-D sin-cos position embedding', 'left out 20 tensor(s)']) {
      assert.ok(lines[0].includes(part), `'${part}' not in: ${lines[0]}`);
    }
    const x = fixtureImages(IMG);
    const [cls] = model.clsFeatures(x, [model.cfg.depth - 1], true);
    const got = cls.dataSync();
    tf.dispose([x, cls]);
    const want = contract.cls.flat();
    assert.is(got.length, want.length);
    const err = Math.max(...want.map((v, i) => Math.abs(v - got[i])));
    assert.ok(err < 1e-4, `CLS features: max abs error ${err} against PyTorch's`);
  } finally {
    model.dispose();
  }
});

test('refine: 20 steps from the .pth on http shards named by a brace range, with kNN before and after', async () => {
  const refineLog = await logged(async () => {
    runDir = await refine([
      '--checkpoint', checkpoint, ...data(), ...limits,
      '--batch', String(BATCH), '--stage2-epochs', '0.25', '--stage3-epochs', '1',
      '--blocks', '2,3', '--head-preset', 'tiny', '--queue-size', '64', '--local-views', '2', '--local-size', '32',
      '--freeze-blocks', '2', '--seed', '30', '--out', path.join(dir, 'run'),
    ]);
  });
  const rows = fs.readFileSync(path.join(runDir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(rows.map((r) => r.step), Array.from({ length: STEPS }, (_, i) => i + 1));
  assert.equal(rows.map((r) => r.stage), [...Array(4).fill(2), ...Array(16).fill(3)]);
  for (const r of rows) assert.ok(Number.isFinite(r.loss) && r.loss > 0, `step ${r.step}: loss ${r.loss}`);

  const summary = JSON.parse(fs.readFileSync(path.join(runDir, 'summary.json'), 'utf8'));
  assert.is(summary.steps, STEPS);
  assert.equal(summary.knn.map((r: { label: string }) => r.label), ['MIM checkpoint', 'refined (EMA)']);
  for (const r of summary.knn) {
    assert.equal(r.blocks, [0, 1, 2, 3]);
    assert.equal([r.trainCount, r.val.count, r.testCount], [EVAL.train, EVAL.val, EVAL.test]);
    assert.is(r.val.source, `${server.base}/imagenet/val-000000.tar`);
    // a share of the images: a whole number of them
    for (const v of r.top1) assert.ok(v >= 0 && v <= 1 && Number.isInteger(v * EVAL.test), `test top-1 ${v}`);
    for (const v of r.val.top1) assert.ok(v >= 0 && v <= 1 && Number.isInteger(v * EVAL.val), `validation top-1 ${v}`);
  }
  // every shard of the brace range, the validation and the test shard came over HTTP, and nothing else was asked for
  const asked = new Set(server.requests.map((r) => r.path));
  assert.equal([...asked].sort(), [...[0, 1, 2, 3].map((s) => `/imagenet/train-00000${s}.tar`), '/imagenet/test-000000.tar', '/imagenet/val-000000.tar'].sort());
  // the log names the checkpoint's format and the http shards
  assert.match(refineLog, /\[checkpoint\] \S*rehearsal\.pth: PyTorch zip checkpoint, weights under 'model'/);
  assert.match(refineLog, /\[refine\] \S*rehearsal\.pth: ViT depth 4, width 64; heads on blocks 2, 3/);
  assert.ok(refineLog.includes(`${server.base}/imagenet/train-{000000..000003}.tar: not cached (4 remote shards`), refineLog);
  assert.match(refineLog, /\[knn\] MIM checkpoint: last block 3: [\d.]+% \| block chosen on validation \d/);
});

test("the refined encoder matches the PyTorch module's strict load_state_dict contract: no missing, no unexpected key, every shape", () => {
  for (const file of ['encoder-ema.safetensors', 'encoder.safetensors']) {
    const { tensors, metadata } = readSafetensors(path.join(runDir, 'checkpoint', file));
    const missing = Object.keys(contract.keys).filter((k) => !tensors.has(k));
    const unexpected = [...tensors.keys()].filter((k) => !(k in contract.keys));
    assert.equal([missing, unexpected], [[], []], `${file}: missing / unexpected keys`);
    for (const [k, { shape }] of Object.entries(contract.keys)) assert.equal(tensors.get(k)!.shape, shape, `${file} ${k}`);
    assert.is(JSON.parse(metadata!.vit).numHeads, 1, `${file}: heads`);
  }
  // the .pth's weights are what was refined: the frozen part (embeddings, blocks 0-1: --freeze-blocks 2) keeps its
  // values, the head blocks moved
  const { tensors } = readSafetensors(path.join(runDir, 'checkpoint', 'encoder-ema.safetensors'));
  const sum = (k: string) => (tensors.get(k)!.data as Float32Array).reduce((a, v) => a + v, 0);
  for (const k of ['patch_embed.proj.weight', 'pos_embed', 'cls_token', 'blocks.0.attn.qkv.weight', 'blocks.1.mlp.fc2.weight']) {
    assert.ok(Math.abs(sum(k) - contract.keys[k].sum) < 1e-4, `${k}: sum ${sum(k)}, in the .pth ${contract.keys[k].sum}`);
  }
  for (const k of ['blocks.2.attn.qkv.weight', 'blocks.3.mlp.fc2.weight']) {
    assert.ok(Math.abs(sum(k) - contract.keys[k].sum) > 1e-3, `${k} did not move in stage 3`);
  }
});

test("pipelines/knn.ts on the refined encoder-ema.safetensors gives refine's kNN of it", async () => {
  const ema = path.join(runDir, 'checkpoint', 'encoder-ema.safetensors');
  // classes.txt is read beside local shards only: for shards over HTTP the class count is a flag
  let knnDir = '';
  const knnLog = await logged(async () => {
    knnDir = await knn(['--checkpoint', ema, ...data(), ...limits, '--num-classes', '10', '--out', path.join(dir, 'knn')]);
  });
  const [r] = JSON.parse(fs.readFileSync(path.join(knnDir, 'knn.json'), 'utf8')).knn;
  const after = JSON.parse(fs.readFileSync(path.join(runDir, 'summary.json'), 'utf8')).knn[1];
  assert.equal([r.blocks, r.trainCount, r.val.count, r.testCount], [[0, 1, 2, 3], EVAL.train, EVAL.val, EVAL.test]);
  assert.equal([r.top1, r.val.top1, r.chosenBlock], [after.top1, after.val.top1, after.chosenBlock]);
  assert.match(knnLog, /\[checkpoint\] \S*encoder-ema\.safetensors: safetensors; timm's key names; config from its metadata 'vit'/);
});

test.run();

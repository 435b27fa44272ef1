/**
 * The feature cache keys on content (lib/fingerprint.ts), not on path, size and mtime: a shard
 * rewritten with every label changed but its size and mtime kept misses and the log names it;
 * a checkpoint overwritten in place gets another key; a remote source is not cached.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { initBackend } from '../runtime/backend';
import { VisionTransformer } from '../models/vit';
import { readSafetensors, writeSafetensors } from '../models/safetensors';
import { cachedFeatures, checkpointKey, randomInitKey, sourceEntries } from '../eval/feature-cache';
import { BUNDLED_CHECKPOINT, overflowing, rotateTarLabels } from '../scripts/make-bad-input-corpus';
import { rejects } from './eval-helpers';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'eval-feature-cache-'));
const shard = path.join(dir, 'data', 'test-000000.tar');
const cacheDir = path.join(dir, 'cache');
let model: VisionTransformer;

test.before(async () => {
  await initBackend(() => {});
  model = new VisionTransformer({ imgSize: 32, patchSize: 8, embedDim: 32, depth: 2, numHeads: 2, mlpRatio: 4, act: 'gelu', posEmbed: 'sincos' }, 0);
  fs.mkdirSync(path.dirname(shard));
  fs.writeFileSync(shard, zlib.gunzipSync(fs.readFileSync('data/cifar10-mini/test-000000.tar.gz')));
  fs.copyFileSync('data/cifar10-mini/classes.txt', path.join(dir, 'data', 'classes.txt'));
  fs.utimesSync(shard, 1_700_000_000, 1_700_000_000); // whole seconds: put back exactly after the rewrite
});

test.after(() => {
  model.dispose();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** cachedFeatures with console.warn captured. */
async function run(source: string): Promise<{ set: Awaited<ReturnType<typeof cachedFeatures>>; warnings: string[] }> {
  const warnings: string[] = [];
  const warn = console.warn;
  console.warn = (line: string) => warnings.push(line);
  try {
    return { set: await cachedFeatures(model, randomInitKey('tiny-spec', 0), { source, blocks: [1], limit: 16 }, cacheDir), warnings };
  } finally {
    console.warn = warn;
  }
}

test('the class list beside the shards is part of what is fingerprinted', () => {
  assert.equal(sourceEntries(path.join(dir, 'data', '*.tar')), [shard, path.join(dir, 'data', 'classes.txt')]);
  assert.equal(sourceEntries(path.join(dir, 'data')), [path.join(dir, 'data')]);
  assert.equal(sourceEntries(path.join(dir, 'nothing-*.tar')), []);
});

test('a shard rewritten with every label changed, size and mtime kept: a miss naming the shard, and the new labels', async () => {
  const first = await run(shard);
  assert.not.ok(first.set.cached);
  assert.ok((await run(shard)).set.cached, 'the unchanged shard hits');
  const before = fs.statSync(shard);
  assert.is(rotateTarLabels(shard, 10), 2000);
  const after = fs.statSync(shard);
  assert.equal([after.size, after.mtimeMs], [before.size, before.mtimeMs], 'size and mtime kept');
  const second = await run(shard);
  assert.not.ok(second.set.cached, 'served from the cache: the old labels');
  assert.equal(Array.from(second.set.labels), Array.from(first.set.labels, (l) => (l + 1) % 10));
  assert.equal(second.set.features, first.set.features, 'the same images');
  assert.ok(
    second.warnings.some((w) => w.includes(`changed since its features were cached (1 file changed: ${shard} (same size`)),
    second.warnings.join('\n'),
  );
});

test('a checkpoint overwritten in place with its size and mtime kept gets another cache key', () => {
  const file = path.join(dir, 'encoder.safetensors');
  fs.copyFileSync(BUNDLED_CHECKPOINT, file);
  fs.utimesSync(file, 1_700_000_000, 1_700_000_000);
  const before = checkpointKey(file);
  assert.is(before, checkpointKey(BUNDLED_CHECKPOINT), 'a copy hits');
  const st = fs.statSync(file);
  const { tensors, metadata } = readSafetensors(file);
  const weights: Record<string, { shape: number[]; data: Float32Array }> = {};
  for (const [name, t] of tensors) weights[name] = { shape: t.shape, data: t.data as Float32Array };
  writeSafetensors(file, overflowing(weights), metadata);
  fs.utimesSync(file, st.atime, st.mtime);
  assert.equal([fs.statSync(file).size, fs.statSync(file).mtimeMs], [st.size, st.mtimeMs]);
  assert.is.not(checkpointKey(file), before);
});

test('a remote source (pipe:) is extracted, never cached, and the log says why', async () => {
  const files = fs.existsSync(cacheDir) ? fs.readdirSync(cacheDir) : [];
  const remote = await run(`pipe:cat ${shard}`);
  assert.not.ok(remote.set.cached);
  assert.is(remote.set.count, 16);
  assert.ok(remote.warnings.some((w) => /not cached \(1 remote shard, e\.g\. pipe:cat .*, cannot be fingerprinted without reading them\)/.test(w)), remote.warnings.join('\n'));
  assert.equal(fs.readdirSync(cacheDir), files, 'nothing written');
});

test('a spec that names no file: the source\'s own error, and no cache entry under an empty fingerprint', async () => {
  const files = fs.readdirSync(cacheDir);
  await rejects(() => run(path.join(dir, 'data', 'nothing-*.tar')), /no such file or folder, and no files match it/);
  assert.equal(fs.readdirSync(cacheDir), files);
});

test.run();

/**
 * pipelines/eval.ts end to end on a tiny random-init ViT over a few hundred bundled images:
 * every task reports numbers in [0, 1], the second run takes its features from the cache,
 * a corrupt cache file is re-extracted, and the outputs (JSON, markdown, chart) are written.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { initBackend } from '../runtime/backend';
import { VisionTransformer } from '../models/vit';
import { cachedFeatures, featureCacheKey, featureCacheStats, randomInitKey } from '../eval/feature-cache';
import { compareReports, evaluate, EvalOptions, EvalReport, parseBlocks, parseTasks, TASKS, writeEvalOutputs } from '../pipelines/eval';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'eval-pipeline-'));
const cacheDir = path.join(dir, 'cache');
let model: VisionTransformer;
let first: EvalReport;
const opts = (): EvalOptions => ({
  label: 'tiny random',
  modelKey: randomInitKey('tiny-spec', 0),
  train: 'data/cifar10-mini/train-*.tar.gz',
  test: 'data/cifar10-mini/test-*.tar.gz',
  tasks: TASKS,
  blocks: [0, 1],
  trainLimit: 200,
  testLimit: 100,
  cacheDir,
  log: () => {},
});

test.before(async () => {
  await initBackend(() => {});
  model = new VisionTransformer({ imgSize: 32, patchSize: 8, embedDim: 32, depth: 2, numHeads: 2, mlpRatio: 4, act: 'gelu', posEmbed: 'sincos' }, 0);
});

test.after(() => {
  model.dispose();
  fs.rmSync(dir, { recursive: true, force: true });
});

const inUnit = (v: number, what: string) => assert.ok(Number.isFinite(v) && v >= 0 && v <= 1, `${what} = ${v}`);

test('all tasks on a fresh cache: numbers in [0, 1], features extracted once per split', async () => {
  const misses = featureCacheStats.misses;
  first = await evaluate(model, opts());
  assert.is(featureCacheStats.misses - misses, 2);
  assert.is(first.train.count, 200);
  assert.is(first.test.count, 100);
  assert.equal(first.blocks, [0, 1]);
  for (const curve of [first.knn!, first.linear!]) {
    assert.is(curve.top1.length, 2);
    curve.top1.forEach((a, i) => inUnit(a, `top1[${i}]`));
    assert.is(curve.best, Math.max(...curve.top1));
  }
  assert.equal(first.lowShot!.results.map((r) => r.shots), [1, 2, 5]);
  for (const r of first.lowShot!.results) {
    assert.is(r.accuracies.length, 3);
    inUnit(r.mean, `${r.shots}-shot mean`);
    inUnit(r.std, `${r.shots}-shot std`);
  }
  assert.is(first.lowShot!.block, first.knn!.bestBlock);
  assert.is(first.kmeans!.block, first.knn!.bestBlock);
  // ARI can be negative in general; on these features it is not, and NMI/ACC never are.
  for (const m of ['nmi', 'ari', 'acc'] as const) inUnit(first.kmeans![m], m);
});

test('second run: features from the cache (no extraction), same numbers', async () => {
  const { hits, misses } = featureCacheStats;
  const t0 = performance.now();
  const again = await evaluate(model, { ...opts(), tasks: ['knn'] });
  assert.is(featureCacheStats.misses, misses, 're-extracted');
  assert.is(featureCacheStats.hits - hits, 2);
  assert.equal(again.knn, first.knn);
  assert.ok(again.seconds['train features'] < 1, `cache read took ${again.seconds['train features']}s`);
  assert.ok(performance.now() - t0 < 5000);
  assert.is(again.linear, undefined);
});

test('the cache key changes with blocks, pooling, limit and model; a corrupt file is re-extracted', async () => {
  const base = { source: opts().train, blocks: [0, 1], limit: 200 };
  const key = (o: object, modelKey = randomInitKey('tiny-spec', 0)) => featureCacheKey(model, modelKey, { ...base, ...o }).hash;
  const hashes = [key({}), key({ blocks: [1] }), key({ pooling: 'avg' }), key({ limit: 100 }), key({}, randomInitKey('tiny-spec', 1))];
  assert.is(new Set(hashes).size, hashes.length);
  assert.is(key({ pooling: 'cls', batchSize: 7 }), hashes[0], 'batch size and default pooling must not change the key');

  const file = path.join(cacheDir, `${hashes[0]}.safetensors`);
  assert.ok(fs.existsSync(file));
  const good = await cachedFeatures(model, randomInitKey('tiny-spec', 0), base, cacheDir);
  assert.ok(good.cached);
  fs.writeFileSync(file, 'not a safetensors file');
  const warnings: string[] = [];
  const warn = console.warn;
  console.warn = (line: string) => warnings.push(line);
  try {
    const redone = await cachedFeatures(model, randomInitKey('tiny-spec', 0), base, cacheDir);
    assert.not.ok(redone.cached);
    assert.equal(redone.features, good.features);
    assert.equal(redone.labels, good.labels);
    assert.equal(redone.indices, good.indices);
  } finally {
    console.warn = warn;
  }
  assert.ok(warnings.some((w) => w.includes('unusable')), warnings.join('\n'));
  assert.ok((await cachedFeatures(model, randomInitKey('tiny-spec', 0), base, cacheDir)).cached, 'rewritten after re-extraction');
});

test('outputs: report.json, markdown with the rows, per-block chart; compare merges reports', async () => {
  const out = path.join(dir, 'out');
  const md = await writeEvalOutputs(out, first);
  for (const f of ['report.json', 'report.md', 'per-block.svg', 'per-block.png']) assert.ok(fs.existsSync(path.join(out, f)), f);
  assert.equal(JSON.parse(fs.readFileSync(path.join(out, 'report.json'), 'utf8')).knn, first.knn);
  for (const row of ['| tiny random |', '| tiny random kNN |', '| tiny random linear |']) assert.ok(md.includes(row), `${row} missing from\n${md}`);
  for (const column of ['kNN', 'linear', '1-shot', '5-shot', 'NMI', 'ARI', 'ACC']) assert.ok(md.includes(`| ${column} |`), column);
  // percentages with one decimal, e.g. the best kNN block's accuracy
  assert.ok(md.includes(`| ${(100 * first.knn!.best).toFixed(1)} |`));

  const other = path.join(dir, 'other.json');
  fs.writeFileSync(other, JSON.stringify({ ...first, label: 'other model' }));
  const cmp = await compareReports([path.join(out, 'report.json'), other], path.join(dir, 'cmp'));
  for (const row of ['| tiny random |', '| other model |', '| other model linear |']) assert.ok(cmp.includes(row), row);
  for (const f of ['compare.md', 'compare.json', 'compare-per-block.png']) assert.ok(fs.existsSync(path.join(dir, 'cmp', f)), f);
});

test('flag parsing: blocks and tasks', () => {
  assert.equal(parseBlocks('all', 3), [0, 1, 2]);
  assert.equal(parseBlocks('last', 3), [2]);
  assert.equal(parseBlocks('2,0,2', 3), [2, 0]);
  assert.throws(() => parseBlocks('3', 3), /block 3 does not exist/);
  assert.throws(() => parseBlocks('x', 3), /--blocks/);
  assert.equal(parseTasks('knn,kmeans'), ['knn', 'kmeans']);
  assert.throws(() => parseTasks('knn,probe'), /unknown task 'probe'/);
});

test.run();

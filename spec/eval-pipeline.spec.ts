/**
 * The evaluation library (eval/evaluate.ts, eval/reports.ts) end to end on a tiny random-init
 * ViT over a few hundred bundled images: every task reports numbers in [0, 1], choices are made
 * on the validation split (never on test), the second run takes its features from the cache, a
 * corrupt cache file is re-extracted, and the outputs (JSON, markdown, charts) are written.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { initBackend } from '../runtime/backend';
import { VisionTransformer } from '../models/vit';
import { cachedFeatures, featureCacheKey, featureCacheStats, randomInitKey, sourceFingerprint } from '../eval/feature-cache';
import { tarShards } from '../sources/tar-shards';
import type { EncodedSample } from '../sources/types';
import { writeShard } from '../scripts/make-bundled-data';
import { rejects } from './eval-helpers';
import { evaluate, EvalOptions, parseBlocks, parseTasks, TASKS } from '../eval/evaluate';
import { compareReports, writeEvalOutputs } from '../eval/reports';
import type { EvalReport } from '../eval/report';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'eval-pipeline-'));
const cacheDir = path.join(dir, 'cache');
let model: VisionTransformer;
let first: EvalReport;
const opts = (): EvalOptions => ({
  label: 'tiny random',
  modelKey: randomInitKey('tiny-spec', 0),
  train: 'data/cifar10-mini/train-*.tar.gz',
  test: 'data/cifar10-mini/test-*.tar.gz',
  tasks: ['knn', 'linear', 'lowshot', 'kmeans'],
  blocks: [0, 1],
  trainLimit: 200,
  testLimit: 100,
  valLimit: 100,
  shots: [{ perClass: 1 }, { perClass: 2 }, { perClass: 5 }, { percent: 10 }],
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

test('all tasks on a fresh cache: numbers in [0, 1], features extracted once per split, choices on validation', async () => {
  const misses = featureCacheStats.misses;
  first = await evaluate(model, opts());
  assert.is(featureCacheStats.misses - misses, 3);
  assert.is(first.train.count, 200);
  assert.is(first.test.count, 100);
  assert.equal(first.val, { source: 'data/cifar10-mini/val-*', count: 100 });
  assert.equal(first.blocks, [0, 1]);
  for (const curve of [first.knn!, first.linear!]) {
    assert.is(curve.top1.length, 2);
    assert.is(curve.val!.length, 2);
    [...curve.top1, ...curve.val!].forEach((a, i) => inUnit(a, `top1[${i}]`));
    assert.is(curve.lastBlock, 1);
    assert.is(curve.last, curve.top1[1]);
    // the block is the one with the best VALIDATION number; its value is the test number there
    const i = curve.val!.indexOf(Math.max(...curve.val!));
    assert.is(curve.chosenBlock, i);
    assert.is(curve.chosen, curve.top1[i]);
  }
  assert.equal(first.knn!.standardise, true);
  assert.equal(first.lowShot!.results.map((r) => r.setting), ['1', '2', '5', '10%']);
  assert.equal(first.lowShot!.results.slice(0, 3).map((r) => r.images), [10, 20, 50]);
  const tenPercent = first.lowShot!.results[3].images; // 10% of each class of the 200 (not exactly 20 per class), rounded
  assert.ok(tenPercent >= 15 && tenPercent <= 25, `10%: ${tenPercent} images`);
  for (const r of first.lowShot!.results) {
    assert.is(r.accuracies.length, 3);
    inUnit(r.mean, `${r.setting}-shot mean`);
    inUnit(r.std, `${r.setting}-shot std`);
  }
  assert.equal(first.block, { block: first.knn!.chosenBlock!, by: 'validation kNN' });
  assert.is(first.lowShot!.block, first.knn!.chosenBlock);
  assert.is(first.kmeans!.block, first.knn!.chosenBlock);
  // ARI can be negative in general; on these features it is not, and NMI/ACC never are.
  for (const m of ['nmi', 'ari', 'acc'] as const) inUnit(first.kmeans![m], m);
});

test('second run: features from the cache (no extraction), same numbers', async () => {
  const { hits, misses } = featureCacheStats;
  const t0 = performance.now();
  const again = await evaluate(model, { ...opts(), tasks: ['knn'] });
  assert.is(featureCacheStats.misses, misses, 're-extracted');
  assert.is(featureCacheStats.hits - hits, 3);
  assert.equal(again.knn, first.knn);
  assert.ok(again.seconds['train features'] < 1, `cache read took ${again.seconds['train features']}s`);
  assert.ok(performance.now() - t0 < 5000);
  assert.is(again.linear, undefined);
});

test('the cache key changes with blocks, pooling, limit and model; a corrupt file is re-extracted', async () => {
  const base = { source: opts().train, blocks: [0, 1], limit: 200 };
  const data = await sourceFingerprint(base.source);
  const key = (o: object, modelKey = randomInitKey('tiny-spec', 0)) => featureCacheKey(model, modelKey, { ...base, ...o }, data).hash;
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
  for (const column of ['kNN last', 'kNN val-chosen', 'kNN val-chosen block', 'linear last', '1-shot', '5-shot', '10%-shot', 'NMI', 'ARI', 'ACC']) assert.ok(md.includes(`| ${column} |`), column);
  assert.ok(!/\| [^|]*best[^|]* \|/i.test(md) && !md.includes('| kNN |'), `a "best" column in\n${md}`);
  // percentages with one decimal, e.g. the last block's kNN accuracy
  assert.ok(md.includes(`| ${(100 * first.knn!.last).toFixed(1)} |`));

  const other = path.join(dir, 'other.json');
  fs.writeFileSync(other, JSON.stringify({ ...first, label: 'other model' }));
  const cmp = await compareReports([path.join(out, 'report.json'), other], path.join(dir, 'cmp'), { finetuneDir: null });
  for (const row of ['| tiny random |', '| other model |', '| other model linear (test) |', '| other model linear (validation) |']) assert.ok(cmp.includes(row), row);
  for (const f of ['compare.md', 'compare.json', 'compare.png', 'compare-per-block.png']) assert.ok(fs.existsSync(path.join(dir, 'cmp', f)), f);
});

test('no validation split: the block falls back to the last one, and says so', async () => {
  const r = await evaluate(model, { ...opts(), val: null, tasks: ['knn', 'kmeans'] });
  assert.is(r.val, undefined);
  assert.is(r.knn!.chosenBlock, undefined);
  assert.equal(r.block, { block: 1, by: 'last block (no validation split)' });
  assert.is(r.kmeans!.block, 1);
});

test('a validation split that overlaps train or test is refused, naming both', async () => {
  await rejects(() => evaluate(model, { ...opts(), val: 'data/cifar10-mini/test-*.tar.gz', tasks: ['knn'] }), /validation split data\/cifar10-mini\/test-\*\.tar\.gz overlaps the test images data\/cifar10-mini\/test-\*\.tar\.gz: 2000 sample keys in both/);
  await rejects(() => evaluate(model, { ...opts(), val: 'data/cifar10-mini/train-000001.tar.gz', tasks: ['knn'] }), /overlaps the train images data\/cifar10-mini\/train-\*\.tar\.gz: 5000 sample keys/);
});

test('long-tailed task: kNN and linear trained on the long-tailed set, per-class test accuracy and chart; a class without training images is refused', async () => {
  // a small long-tailed train set cut from the bundled train: 40 images of class 0 down to 1 of class 9
  const ltDir = path.join(dir, 'lt');
  fs.mkdirSync(ltDir);
  const want = [40, 24, 16, 12, 8, 6, 4, 3, 2, 1];
  const picked: EncodedSample[] = [];
  const taken = want.map(() => 0);
  for await (const s of tarShards({ shards: 'data/cifar10-mini/train-000000.tar.gz' })) {
    if (taken[s.label] < want[s.label]) {
      taken[s.label]++;
      picked.push(s);
    }
    if (picked.length === 116) break;
  }
  await writeShard(path.join(ltDir, 'train-000000.tar'), picked);
  const r = await evaluate(model, { ...opts(), tasks: ['longtail'], ltTrain: path.join(ltDir, 'train-*.tar') });
  const lt = r.longTail!;
  assert.equal(lt.train.perClass, want);
  assert.is(lt.train.count, 116);
  assert.is(lt.block, r.block!.block);
  for (const task of [lt.knn, lt.linear]) {
    inUnit(task.top1, 'LT top-1');
    assert.is(task.perClass.length, 10);
  }
  const out = path.join(dir, 'lt-out');
  const md = await writeEvalOutputs(out, r);
  assert.ok(md.includes('| LT kNN |') && md.includes('| LT linear |'), md);
  for (const f of ['long-tail-per-class.svg', 'long-tail-per-class.png']) assert.ok(fs.existsSync(path.join(out, f)), f);
  assert.ok(fs.readFileSync(path.join(out, 'long-tail-per-class.svg'), 'utf8').includes('airplane 40'));
  // three classes only: the other seven have test images no classifier could predict
  const few = path.join(dir, 'lt-few');
  fs.mkdirSync(few);
  await writeShard(path.join(few, 'train-000000.tar'), picked.filter((s) => s.label < 3));
  try {
    await evaluate(model, { ...opts(), tasks: ['longtail'], ltTrain: path.join(few, 'train-*.tar') });
    assert.unreachable('a long-tailed set without 7 of the classes was evaluated');
  } catch (err) {
    assert.match((err as Error).message, /long-tail .*lt-few.*: 7 classes have evaluation images but no training images .*accuracy would be capped/);
  }
});

test('flag parsing: blocks and tasks', () => {
  assert.equal(parseBlocks('all', 3), [0, 1, 2]);
  assert.equal(parseBlocks('last', 3), [2]);
  assert.equal(parseBlocks('2,0,2', 3), [2, 0]);
  assert.throws(() => parseBlocks('3', 3), /block 3 does not exist/);
  assert.throws(() => parseBlocks('x', 3), /--blocks/);
  assert.equal(parseTasks('knn,kmeans'), ['knn', 'kmeans']);
  assert.throws(() => parseTasks('knn,probe'), /unknown task 'probe'/);
  assert.equal(parseTasks('longtail,knn'), ['longtail', 'knn']);
  assert.equal(TASKS, ['knn', 'linear', 'lowshot', 'kmeans', 'longtail']);
});

test.run();

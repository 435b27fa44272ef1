/**
 * The validation split: the bundled val shard (2,000 training images, 200 per class, disjoint
 * by key from the bundled train and test), found beside the train shards, refused where it
 * overlaps; per-block kNN chooses its block on it and the summary names no test maximum.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { initBackend } from '../runtime/backend';
import { VisionTransformer } from '../models/vit';
import { openSource } from '../sources/open';
import { checkValidationDisjoint, defaultValidation, sourceKeys } from '../eval/validation';
import { perBlockKnn, writeKnnSummary } from '../eval/per-block-knn';
import { rejects } from './eval-helpers';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'eval-validation-'));
const MINI = 'data/cifar10-mini';

test.after(() => fs.rmSync(dir, { recursive: true, force: true }));

test('bundled val: 2,000 training images, 200 per class, no key shared with the bundled train or test', async () => {
  const perClass = new Array<number>(10).fill(0);
  for await (const s of openSource(`${MINI}/val-*.tar.gz`).samples) {
    perClass[s.label]++;
    assert.ok(s.key.startsWith('train_'), `${s.key} is not a training image`);
  }
  assert.equal(perClass, new Array(10).fill(200));
  const [val, train, testKeys] = await Promise.all([`${MINI}/val-*.tar.gz`, `${MINI}/train-*.tar.gz`, `${MINI}/test-*.tar.gz`].map(sourceKeys));
  assert.is(val.size, 2000);
  assert.is([...val].filter((k) => train.has(k) || testKeys.has(k)).length, 0);
  await checkValidationDisjoint(`${MINI}/val-*.tar.gz`, [{ name: 'train', spec: `${MINI}/train-*.tar.gz` }, { name: 'test', spec: `${MINI}/test-*.tar.gz` }]);
});

test('defaultValidation: the val-* shards beside the train shards, never the train shards themselves', () => {
  assert.is(defaultValidation(`${MINI}/train-*.tar.gz`), path.join(MINI, 'val-*'));
  assert.is(defaultValidation(`${MINI}/train-000000.tar.gz`), path.join(MINI, 'val-*'));
  assert.is(defaultValidation(`${MINI}/*.tar.gz`), undefined);
  fs.copyFileSync(`${MINI}/test-000000.tar.gz`, path.join(dir, 'train-000000.tar.gz'));
  assert.is(defaultValidation(path.join(dir, 'train-*.tar.gz')), undefined);
  assert.is(defaultValidation(dir), undefined);
});

test('an overlapping validation split is an error naming both sources and a shared key', async () => {
  await rejects(
    () => checkValidationDisjoint(`${MINI}/val-*.tar.gz`, [{ name: 'train', spec: `${MINI}/val-000000.tar.gz` }]),
    /validation split data\/cifar10-mini\/val-\*\.tar\.gz overlaps the train images data\/cifar10-mini\/val-000000\.tar\.gz: 2000 sample keys in both \(e\.g\. 'train_/,
  );
  await rejects(
    () => checkValidationDisjoint(`${MINI}/test-*.tar.gz`, [{ name: 'train', spec: `${MINI}/train-*.tar.gz` }, { name: 'test', spec: path.join(dir, 'train-*.tar.gz') }]),
    /overlaps the test images .*train-\*\.tar\.gz: 2000 sample keys/,
  );
});

test('perBlockKnn: validation curve, block chosen on validation, summary without a test maximum', async () => {
  await initBackend(() => {});
  const model = new VisionTransformer({ imgSize: 32, patchSize: 8, embedDim: 32, depth: 3, numHeads: 2, mlpRatio: 2, act: 'gelu', posEmbed: 'sincos' }, 1);
  try {
    const common = { train: `${MINI}/train-*.tar.gz`, test: `${MINI}/test-*.tar.gz`, trainLimit: 200, valLimit: 60, testLimit: 60, log: () => {} };
    const r = await perBlockKnn(model, { ...common, label: 'tiny' });
    assert.is(r.val!.source, path.join(MINI, 'val-*'));
    assert.is(r.val!.count, 60); // valLimit (undefined: every validation image, as --eval-val-limit 0)
    const i = r.val!.top1.indexOf(Math.max(...r.val!.top1));
    assert.is(r.chosenBlock, i);
    assert.is(r.chosen, r.top1[i]);
    assert.equal([r.lastBlock, r.last], [2, r.top1[2]]);
    assert.is(r.standardise, true);
    const plain = await perBlockKnn(model, { ...common, label: 'tiny, L2 only', standardise: false, val: null });
    assert.is(plain.val, undefined);
    assert.is(plain.chosenBlock, undefined);
    assert.is(plain.standardise, false);
    await writeKnnSummary(dir, [plain, r], { title: 't' });
    const summary = JSON.parse(fs.readFileSync(path.join(dir, 'summary.json'), 'utf8'));
    assert.is(summary.lastBlockGain, r.last - plain.last);
    assert.is(summary.chosenBlockGain, undefined); // one side has no validation
    assert.not.ok('bestBlockGain' in summary || 'best' in summary.knn[1]);
    assert.ok(fs.existsSync(path.join(dir, 'summary-knn.png')));
  } finally {
    model.dispose();
  }
});

test.run();

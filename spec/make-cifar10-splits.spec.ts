/**
 * scripts/make-cifar10-splits.ts from a fresh clone: the full CIFAR-10 training images are not
 * bundled, so their folder (the project's shards or the official binary archive) is a required
 * flag, and each way of getting it wrong names the flag, the folder and what is missing. The
 * long-tail profile gives the counts of the 3,800-image head.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { longTailCount, splitArgs } from '../scripts/make-cifar10-splits';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cifar-splits-'));

test('--source is required, and the error says what to pass', () => {
  assert.throws(() => splitArgs([]), /--source is required: the folder of the full CIFAR-10 training images/);
  assert.throws(() => splitArgs(['../shared/data/cifar10']), /unexpected argument \.\.\/shared\/data\/cifar10: give the folders as --source DIR/);
  assert.is(splitArgs(['--help']), 'help');
});

test('a --source that is not a folder of train shards with classes.txt is named with what it lacks', () => {
  assert.throws(() => splitArgs(['--source', path.join(tmp, 'absent')]), /--source .*absent: .* is not a folder/);
  const noClasses = fs.mkdtempSync(path.join(tmp, 'no-classes-'));
  fs.writeFileSync(path.join(noClasses, 'cifar10-train-000000.tar'), '');
  assert.throws(() => splitArgs(['--source', noClasses]), /no classes\.txt in/);
  const noShards = fs.mkdtempSync(path.join(tmp, 'no-shards-'));
  fs.writeFileSync(path.join(noShards, 'classes.txt'), 'a\nb\n');
  fs.writeFileSync(path.join(noShards, 'cifar10-test-000000.tar'), '');
  assert.throws(() => splitArgs(['--source', noShards]), /no cifar10-train-\*\.tar shards and no data_batch_\*\.bin files in/);
  const noMeta = fs.mkdtempSync(path.join(tmp, 'no-meta-'));
  fs.writeFileSync(path.join(noMeta, 'data_batch_1.bin'), '');
  assert.throws(() => splitArgs(['--source', noMeta]), /no batches\.meta\.txt \(the class names\) beside the data_batch_\*\.bin files/);
});

test('a complete --source is taken; --data defaults to the repository data/ folder', () => {
  const good = fs.mkdtempSync(path.join(tmp, 'good-'));
  fs.writeFileSync(path.join(good, 'classes.txt'), 'a\nb\n');
  fs.writeFileSync(path.join(good, 'cifar10-train-000000.tar'), '');
  const data = path.resolve(__dirname, '..', 'data');
  assert.equal(splitArgs(['--source', good]), { train: path.join(good, 'cifar10-train-*.tar'), imageExt: 'jpg', data });
  assert.equal(splitArgs(['--source', good, '--data', tmp]), { train: path.join(good, 'cifar10-train-*.tar'), imageExt: 'jpg', data: tmp });
});

test('the official binary archive is taken too, its raw pixels written as PNG', () => {
  const bin = fs.mkdtempSync(path.join(tmp, 'cifar-10-batches-bin-'));
  for (const f of ['data_batch_1.bin', 'data_batch_2.bin', 'test_batch.bin']) fs.writeFileSync(path.join(bin, f), '');
  fs.writeFileSync(path.join(bin, 'batches.meta.txt'), 'a\nb\n');
  assert.equal(splitArgs(['--source', bin]), { train: path.join(bin, 'data_batch_*.bin'), imageExt: 'png', data: path.resolve(__dirname, '..', 'data') });
});

test('long-tail counts: 3,800 images at the head, imbalance 100, 9,427 in all', () => {
  const counts = Array.from({ length: 10 }, (_, c) => longTailCount(c, 10, 3800));
  assert.equal(counts, [3800, 2278, 1365, 818, 490, 294, 176, 105, 63, 38]);
  assert.is(counts.reduce((a, b) => a + b, 0), 9427);
});

test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
test.run();

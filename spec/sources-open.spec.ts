import * as fs from 'fs';
import * as path from 'path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { openSource } from '../sources/open';
import { collect, jpeg, makeShards, tmpDir } from './sources-fixtures';

let dir = '';

test.before(async () => {
  dir = tmpDir();
  fs.mkdirSync(path.join(dir, 'shards'));
  await makeShards(path.join(dir, 'shards'), 2, 3);
  fs.writeFileSync(path.join(dir, 'shards', 'classes.txt'), 'a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n');
  fs.mkdirSync(path.join(dir, 'folder', 'cat'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'folder', 'cat', '1.jpg'), await jpeg(1));
  fs.mkdirSync(path.join(dir, 'bin'));
  fs.writeFileSync(path.join(dir, 'bin', 'test_batch.bin'), Buffer.alloc(2 * 3073));
});
test.after(() => fs.rmSync(dir, { recursive: true, force: true }));

test('tar shards from a glob, with classes.txt beside them', async () => {
  const src = openSource(path.join(dir, 'shards', 'shard-*.tar*'));
  assert.is(src.kind, 'tar');
  assert.is(src.classes?.length, 10);
  assert.is((await collect(src.samples)).length, 6);
  assert.is(openSource(path.join(dir, 'shards', 'shard-000000.tar')).kind, 'tar');
  assert.is(openSource(path.join(dir, 'shards', 'shard-{000000,000001}.{tar,tar.gz}')).kind, 'tar');
  assert.is((await collect(openSource(path.join(dir, 'shards', '*')).samples)).length, 6, 'classes.txt ignored');
});

test('image folder from a directory; CIFAR binary from .bin', async () => {
  const folder = openSource(path.join(dir, 'folder'));
  assert.is(folder.kind, 'folder');
  assert.equal(folder.classes, ['cat']);
  const bin = openSource(path.join(dir, 'bin', '*.bin'), { rank: 1, worldSize: 2 });
  assert.is(bin.kind, 'cifar-binary');
  assert.is(bin.classes, undefined);
  assert.equal((await collect(bin.samples)).map((s) => s.index), [1]);
});

test('unknown or missing sources: clear errors naming them', () => {
  assert.throws(() => openSource(path.join(dir, 'missing')), /missing.*no such file/);
  assert.throws(() => openSource(path.join(dir, 'shards', 'classes.txt')), /Cannot tell.*classes\.txt/);
  assert.throws(() => openSource(path.join(dir, '*', '*')), /Cannot tell/); // shards and .bin mixed
  assert.throws(() => openSource(path.join(dir, 'none-*.tar')), /none-\*\.tar/);
});

test.run();

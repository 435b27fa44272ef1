import * as fs from 'fs';
import * as path from 'path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { imageFolder } from '../sources/image-folder';
import { collect, jpeg, keys, tmpDir } from './sources-fixtures';

let root = '';
// Written unsorted on purpose: classes and indices must come from sorting, not from disk order.
const layout = ['zebra/2.jpg', 'cat/b.png', 'zebra/1.JPG', 'cat/a.jpg', 'dog/x/deep.jpeg', 'dog/y.webp', 'cat/notes.txt'];

test.before(async () => {
  root = tmpDir();
  for (const [i, file] of layout.entries()) {
    fs.mkdirSync(path.dirname(path.join(root, file)), { recursive: true });
    fs.writeFileSync(path.join(root, file), file.endsWith('.txt') ? 'not an image' : await jpeg(i, file.endsWith('.png') ? 'png' : 'jpeg'));
  }
});
test.after(() => fs.rmSync(root, { recursive: true, force: true }));

test('classes from sorted folder names, indices from sorted paths, files read as they are', async () => {
  const source = imageFolder({ root });
  assert.equal(source.classes, ['cat', 'dog', 'zebra']);
  assert.is(source.size, 6);
  const got = await collect(source);
  assert.equal(keys(got), ['cat/a', 'cat/b', 'dog/x/deep', 'dog/y', 'zebra/1', 'zebra/2']);
  assert.equal(got.map((s) => s.label), [0, 0, 1, 1, 2, 2]);
  assert.equal(got.map((s) => s.index), [0, 1, 2, 3, 4, 5]);
  for (const s of got) assert.ok(s.bytes.equals(fs.readFileSync(s.origin)));
});

test('shuffle is seeded per epoch and keeps indices stable', async () => {
  const order = async (epoch: number) => collect(imageFolder({ root, shuffle: { seed: 3, epoch } }));
  const [a, b] = [await order(0), await order(0)];
  assert.equal(keys(a), keys(b));
  const epochs = await Promise.all([1, 2, 3, 4].map(order));
  assert.ok(epochs.some((e) => keys(e).join() !== keys(a).join()), 'order changes across epochs');
  const sorted = await collect(imageFolder({ root }));
  for (const s of epochs[0]) assert.is(s.key, sorted[s.index].key);
});

test('ranks split disjoint and complete; start resumes', async () => {
  const shuffle = { seed: 1, epoch: 2 };
  const parts = await Promise.all([0, 1, 2].map((rank) => collect(imageFolder({ root, shuffle, rank, worldSize: 3 }))));
  const all = parts.flatMap((p) => p.map((s) => s.index)).sort();
  assert.equal(all, [0, 1, 2, 3, 4, 5]);
  for (const p of parts) assert.is(p.length, 2);
  const full = keys(await collect(imageFolder({ root, shuffle })));
  assert.equal(keys(await collect(imageFolder({ root, shuffle, start: 4 }))), full.slice(4));
});

test('missing or empty folder: error naming the path', () => {
  const missing = path.join(root, 'nope');
  assert.throws(() => imageFolder({ root: missing }), (e: Error) => e.message.includes(missing) && /does not exist/.test(e.message));
  const empty = path.join(root, 'empty');
  fs.mkdirSync(empty);
  assert.throws(() => imageFolder({ root: empty }), (e: Error) => e.message.includes(empty) && /no images/.test(e.message));
});

test.run();

import * as fs from 'fs';
import * as path from 'path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { countSamples, tarShards } from '../sources/tar-shards';
import { collect, jpeg, keys, makeShards, tmpDir, writeTar, type Expected } from './sources-fixtures';

let dir = '';
let expected: Expected[] = [];
const N_SHARDS = 3;
const PER_SHARD = 12;

test.before(async () => {
  dir = tmpDir();
  ({ expected } = await makeShards(dir, N_SHARDS, PER_SHARD));
});
test.after(() => fs.rmSync(dir, { recursive: true, force: true }));

const pattern = () => path.join(dir, 'shard-*');
const shuffled = (epoch: number, seed = 7) => ({ seed, epoch, bufferSize: 8 });

test('reads .tar and .tar.gz shards in sorted order: keys, labels, bytes, indices', async () => {
  const got = await collect(tarShards({ shards: pattern() }));
  assert.is(got.length, N_SHARDS * PER_SHARD);
  got.forEach((s, i) => {
    assert.is(s.index, i);
    assert.is(s.key, expected[i].key);
    assert.is(s.label, expected[i].label);
    assert.ok(s.bytes.equals(expected[i].bytes), `bytes of ${s.key}`);
    assert.match(s.origin, /shard-00000\d\.tar(\.gz)?:s\d_\d+\.jpg$/);
  });
  assert.is(await countSamples(pattern()), N_SHARDS * PER_SHARD);
});

test('a list of paths and globs is de-duplicated and sorted', async () => {
  const shards = tarShards({ shards: [path.join(dir, 'shard-000002.tar'), pattern()] }).shards;
  assert.equal(shards.map((s) => path.basename(s)), ['shard-000000.tar', 'shard-000001.tar.gz', 'shard-000002.tar']);
});

test('indices are stable under shuffling: same key -> same index, 0..N-1 each once', async () => {
  const got = await collect(tarShards({ shards: pattern(), shuffle: shuffled(3) }));
  assert.is(got.length, expected.length);
  for (const s of got) assert.is(s.key, expected[s.index].key);
  assert.equal(got.map((s) => s.index).sort((a, b) => a - b), expected.map((_, i) => i));
});

test('shuffle: same seed and epoch -> same order; other epoch or seed -> other order', async () => {
  const a = keys(await collect(tarShards({ shards: pattern(), shuffle: shuffled(0) })));
  const b = keys(await collect(tarShards({ shards: pattern(), shuffle: shuffled(0) })));
  const c = keys(await collect(tarShards({ shards: pattern(), shuffle: shuffled(1) })));
  const d = keys(await collect(tarShards({ shards: pattern(), shuffle: shuffled(0, 8) })));
  assert.equal(a, b);
  assert.not.equal(a, c);
  assert.not.equal(a, d);
  assert.not.equal(a, expected.map((e) => e.key));
  assert.equal([...a].sort(), [...c].sort());
});

test('ranks: worldSize 3 splits an epoch into disjoint, complete, balanced parts', async () => {
  for (const shuffle of [undefined, shuffled(2)]) {
    const parts = await Promise.all([0, 1, 2].map((rank) => collect(tarShards({ shards: pattern(), shuffle, rank, worldSize: 3 }))));
    const all = parts.flatMap((p) => p.map((s) => s.index));
    assert.is(new Set(all).size, all.length, 'disjoint');
    assert.is(all.length, expected.length, 'complete');
    for (const p of parts) assert.is(p.length, expected.length / 3);
  }
  assert.throws(() => tarShards({ shards: pattern(), rank: 3, worldSize: 3 }), /rank/);
});

test('start skips the first samples of this rank stream (resume)', async () => {
  const opts = { shards: pattern(), shuffle: shuffled(5), rank: 1, worldSize: 2 };
  const full = keys(await collect(tarShards(opts)));
  const resumed = keys(await collect(tarShards({ ...opts, start: 5 })));
  assert.equal(resumed, full.slice(5));
});

test('breaking out early closes the shard streams', async () => {
  let n = 0;
  for await (const s of tarShards({ shards: pattern() })) {
    assert.ok(s);
    if (++n === 3) break;
  }
  assert.is(n, 3);
});

test('missing label, bad label and no image are skipped and reported; odd bytes pass through', async () => {
  const d = tmpDir();
  const img = await jpeg(1);
  await writeTar(path.join(d, 'x.tar'), [
    { name: 'a.jpg', body: img },
    { name: 'a.cls', body: '3' },
    { name: 'b.jpg', body: img }, // no label
    { name: 'c.txt', body: 'text' }, // no image
    { name: 'c.cls', body: '1' },
    { name: 'd.png', body: img },
    { name: 'd.cls', body: 'cat' }, // label not a number
    { name: 'e.jpg', body: 'not a jpeg' }, // a decode problem, not a container one
    { name: 'e.cls', body: '4\n' },
    { name: 'dir/f.webp', body: img }, // key keeps its folder
    { name: 'dir/f.json', body: '{}' },
    { name: 'dir/f.cls', body: '0' },
  ]);
  const skips: string[] = [];
  const got = await collect(tarShards({ shards: path.join(d, 'x.tar'), onSkip: (origin, reason) => skips.push(`${path.basename(origin)} ${reason}`) }));
  assert.equal(keys(got), ['a', 'e', 'dir/f']);
  assert.equal(got.map((s) => s.label), [3, 4, 0]);
  assert.equal(got.map((s) => s.index), [0, 1, 2]);
  assert.is(skips.length, 3);
  assert.match(skips[0], /x\.tar:b\.jpg missing label/);
  assert.match(skips[1], /x\.tar:c no image/);
  assert.match(skips[2], /x\.tar:d\.png bad label/);
  assert.is(await countSamples(path.join(d, 'x.tar')), 3);
  fs.rmSync(d, { recursive: true, force: true });
});

test('truncated tar and corrupt gzip: rest of that shard skipped, reported once, run goes on', async () => {
  const d = tmpDir();
  const { files } = await makeShards(d, 3, 10);
  // shard 0 (.tar): cut in the middle of a member; shard 1 (.tar.gz): garble the deflate data.
  const tarBytes = fs.readFileSync(files[0]);
  fs.writeFileSync(files[0], tarBytes.subarray(0, Math.floor(tarBytes.length / 2) + 100));
  const gz = fs.readFileSync(files[1]);
  for (let i = Math.floor(gz.length / 2); i < gz.length - 8; i++) gz[i] ^= 0x5a;
  fs.writeFileSync(files[1], gz);

  const skips: string[] = [];
  const onSkip = (origin: string) => skips.push(path.basename(origin));
  const got = await collect(tarShards({ shards: path.join(d, 'shard-*'), onSkip }));
  assert.equal(skips, ['shard-000000.tar', 'shard-000001.tar.gz']);
  const fromShard = (s: number) => got.filter((x) => x.key.startsWith(`s${s}_`)).length;
  assert.ok(fromShard(0) > 0 && fromShard(0) < 10, `some of shard 0: ${fromShard(0)}`);
  assert.ok(fromShard(1) < 10, `part of shard 1: ${fromShard(1)}`);
  assert.is(fromShard(2), 10);
  // Counting agrees with reading, so indices stay dense and stable with a shuffled shard order.
  assert.is(await countSamples(path.join(d, 'shard-*')), got.length);
  const mixed = await collect(tarShards({ shards: path.join(d, 'shard-*'), onSkip: () => {}, shuffle: { seed: 1, epoch: 4, bufferSize: 4 } }));
  const indexOf = new Map(got.map((s) => [s.key, s.index]));
  for (const s of mixed) assert.is(s.index, indexOf.get(s.key));
  fs.rmSync(d, { recursive: true, force: true });
});

test('an empty source is an error naming the pattern', () => {
  const missing = path.join(dir, 'nothing-*.tar');
  assert.throws(() => tarShards({ shards: missing }), (err: Error) => err.message.includes(missing));
});

test.run();

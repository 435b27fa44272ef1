/**
 * Bad input for the sources, with the messages a user sees: a URL that is not there, a
 * failing pipe command, a shard truncated on the server, a connection that keeps dropping,
 * classes.txt naming a class twice, class folders whose names hold newlines, unlabelled shards
 * for labelled and label-free pipelines.
 */
import * as fs from 'fs';
import * as path from 'path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cifarBinary } from '../sources/cifar-binary';
import { countSamples as countSpec } from '../sources/count';
import { evalClassCount, openSource } from '../sources/open';
import { countSamples, tarShards } from '../sources/tar-shards';
import type { EncodedSample } from '../sources/types';
import { collect, jpeg, keys, tmpDir, writeTar } from './sources-fixtures';
import { startShardServer, type ShardServer } from './sources-server';

const DIR = path.resolve(__dirname, '..', 'data', 'cifar10-mini');
const FAST = { retries: 2, backoffMs: 5, idleTimeoutMs: 2000 };
let server: ShardServer;
let tmp = '';

test.before(async () => {
  server = await startShardServer(DIR, { dropAfter: 100 * 1024 });
  tmp = tmpDir();
  process.env.MIMREF_SHARD_INDEX_DIR = path.join(tmp, 'shard-index');
});
test.after(async () => {
  await server.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** Reads a source to its end: the samples, the skips, and the error that ended it if any. */
async function readAll(samples: AsyncIterable<EncodedSample>, skips: string[] = []): Promise<{ got: EncodedSample[]; skips: string[]; error?: string }> {
  const got: EncodedSample[] = [];
  try {
    for await (const s of samples) got.push(s);
  } catch (err) {
    return { got, skips, error: (err as Error).message };
  }
  return { got, skips };
}

test('a URL that is not there: an error naming it, from reading and from counting', async () => {
  const url = `${server.base}/ok/train-{000000..000002}.tar.gz`;
  const { got, error } = await readAll(openSource(url, { numClasses: 10, remote: FAST }).samples);
  assert.is(error, `${server.base}/ok/train-000002.tar.gz: HTTP 404 Not Found (no such shard: check the URL and the brace range)`);
  assert.is(got.length, 10000, 'the shards before it were read');
  const counted = await countSpec(url, { numClasses: 10, remote: FAST }).then(String, (e: Error) => e.message);
  assert.is(counted, error);
});

test('a failing pipe command: its exit status and the end of its stderr', async () => {
  const { error } = await readAll(openSource('pipe:false').samples);
  assert.is(error, 'pipe:false: the command exited with status 1 (nothing on stderr)');
  const missing = path.join(tmp, 'no-such-shard.tar');
  const cat = await readAll(openSource(`pipe:cat ${missing}`).samples);
  assert.is(cat.error, `pipe:cat ${missing}: the command exited with status 1; its stderr ends: cat: ${missing}: No such file or directory`);
  const shell = await readAll(openSource('pipe:no-such-command-xyz').samples);
  assert.match(shell.error ?? '', /^pipe:no-such-command-xyz: the command exited with status 127; its stderr ends: .*not found/);
});

test('a shard truncated on the server: the rest of it skipped with the same reason as on disk', async () => {
  const cut = path.join(tmp, 'val-000000.tar.gz');
  const whole = fs.readFileSync(path.join(DIR, 'val-000000.tar.gz'));
  fs.writeFileSync(cut, whole.subarray(0, Math.floor(whole.length / 2)));
  const local: string[] = [];
  const disk = await readAll(tarShards({ shards: cut, onSkip: (o, r) => local.push(`${o} | ${r}`) }), local);
  const remote: string[] = [];
  const url = `${server.base}/cut/val-000000.tar.gz`;
  const served = await readAll(tarShards({ shards: url, remote: FAST, onSkip: (o, r) => remote.push(`${o} | ${r}`) }), remote);
  assert.equal([disk.error, served.error], [undefined, undefined]);
  assert.equal(remote, [`${url} | the gzip data ends early: the file is truncated (unexpected end of file); the rest of this shard is skipped`]);
  assert.equal(local, [`${cut} | the gzip data ends early: the file is truncated (unexpected end of file); the rest of this shard is skipped`]);
  assert.equal(keys(served.got), keys(disk.got));
  assert.ok(served.got.length > 500 && served.got.length < 2000, `${served.got.length} samples before the cut`);
  assert.is(await countSamples(url, undefined, { remote: FAST }), served.got.length);
});

test('a connection that stalls and keeps stalling: retried, then an error naming the URL and where it stopped', async () => {
  const url = `${server.base}/stall/val-000000.tar.gz`;
  const { error, got } = await readAll(tarShards({ shards: url, remote: { retries: 2, backoffMs: 5, idleTimeoutMs: 300 }, onSkip: () => {} }));
  assert.match(error ?? '', new RegExp(`^${url.replace(/[.]/g, '\\.')}: gave up after 3 failed tries in a row without data, at byte ${100 * 1024} \\(last: `));
  assert.ok(got.length > 0 && got.length < 2000, `${got.length} samples before the stall`);
  // a connection cut off every 100 KiB makes progress each time: it comes through whole
  assert.is((await collect(tarShards({ shards: `${server.base}/drop/val-000000.tar.gz`, remote: { ...FAST, retries: 0 } }))).length, 2000);
});

test('a shard replaced on the server between the counting pass and the read: an error, not shifted indices', async () => {
  const url = `${server.base}/versioned/val-000000.tar.gz`;
  const { error, got } = await readAll(tarShards({ shards: url, remote: FAST, shuffle: { seed: 1, epoch: 0 }, onSkip: () => {} }));
  // the version probe sees "v1", the counting pass "v2", the read "v3"
  assert.is(error, `${url} changed since it was counted (then etag "v2", last-modified ${new Date(0).toUTCString()}, length 688451; now etag "v3", last-modified ${new Date(0).toUTCString()}, length 688451): its sample indices would not hold; start again`);
  assert.is(got.length, 0);
});

test('classes.txt naming a class twice is refused, naming the file, the name and the lines', async () => {
  const d = path.join(tmp, 'dup');
  fs.mkdirSync(d);
  await writeTar(path.join(d, 's.tar'), [{ name: 'a.jpg', body: await jpeg(1) }, { name: 'a.cls', body: '0' }]);
  fs.writeFileSync(path.join(d, 'classes.txt'), 'cat\ndog\n\nbird\ndog\n');
  assert.throws(
    () => openSource(path.join(d, '*.tar')),
    (e: Error) => e.message === `${path.join(d, 'classes.txt')}: class name "dog" is listed twice (lines 2 and 5); each class must be named once`,
  );
});

test('class folders whose names hold newlines are classes, and are told apart', async () => {
  const make = async (name: string, classes: string[]) => {
    const root = path.join(tmp, name);
    for (const [i, c] of classes.entries()) {
      fs.mkdirSync(path.join(root, c), { recursive: true });
      fs.writeFileSync(path.join(root, c, 'x.jpg'), await jpeg(i));
    }
    return root;
  };
  // joined by newlines the two lists read the same: compared by name they differ
  const train = await make('nl-train', ['a\nb', 'c']);
  const test_ = await make('nl-test', ['a', 'b\nc']);
  assert.equal(openSource(train).classes, ['a\nb', 'c']);
  assert.equal((await collect(openSource(train).samples)).map((s) => s.key), ['a\nb/x', 'c/x']);
  assert.throws(() => evalClassCount(train, test_), (e: Error) => e.message === `train ${train} and test ${test_} name their classes differently (class 0: "a\\nb" vs "a")`);
});

test("unlabelled shards: refused with a hint for labelled use, every image taken with labels: 'ignored'", async () => {
  const d = path.join(tmp, 'unlabelled');
  fs.mkdirSync(d);
  const members = [];
  for (let i = 0; i < 4; i++) members.push({ name: `k${i}.jpg`, body: await jpeg(i) });
  members.push({ name: 'k4.jpg', body: await jpeg(4) }, { name: 'k4.cls', body: 'cat' }); // a bad label
  members.push({ name: 'k5.jpg', body: await jpeg(5) }, { name: 'k5.cls', body: '70000' }); // beyond any class count
  members.push({ name: 'k6.txt', body: 'no image' });
  await writeTar(path.join(d, 'u.tar'), members);
  const spec = path.join(d, 'u.tar');

  const skips: string[] = [];
  assert.equal(await collect(tarShards({ shards: spec, onSkip: (_, r) => skips.push(r.split(': ')[0]) })), []);
  assert.equal(skips, ['missing label (.cls)', 'missing label (.cls)', 'missing label (.cls)', 'missing label (.cls)', 'bad label', 'label outside the label limit 65536 (no classes.txt beside the shards)', 'no image member']);
  const refused = await countSpec(spec).then(String, (e: Error) => e.message);
  assert.match(refused, /^no samples could be read from .*u\.tar: .*missing label \(\.cls\).* \(a pipeline that does not use labels reads unlabelled samples with labels: 'ignored'\)$/);

  const ignored: string[] = [];
  const got = await collect(openSource(spec, { labels: 'ignored', onSkip: (o, r) => ignored.push(`${path.basename(o)} ${r}`) }).samples);
  assert.equal(keys(got), ['k0', 'k1', 'k2', 'k3', 'k4', 'k5']);
  assert.equal(got.map((s) => s.label), [-1, -1, -1, -1, -1, -1]);
  assert.equal(got.map((s) => s.index), [0, 1, 2, 3, 4, 5]);
  assert.equal(ignored, ['u.tar:k6 no image member']);
  assert.is(await countSpec(spec, { labels: 'ignored' }), 6);
  // shuffled: the counting pass agrees with the read under the same policy
  const mixed = await collect(tarShards({ shards: spec, labels: 'ignored', shuffle: { seed: 1, epoch: 0, bufferSize: 2 }, onSkip: () => {} }));
  assert.equal(mixed.map((s) => s.index).sort(), [0, 1, 2, 3, 4, 5]);
  for (const s of mixed) assert.is(s.key, `k${s.index}`);
  assert.throws(() => tarShards({ shards: spec, labels: 'none' as never }), /labels must be 'required' or 'ignored', got "none"/);

  // CIFAR records with a label byte outside the classes are taken too
  const bin = path.join(d, 'data_batch_1.bin');
  fs.writeFileSync(bin, Buffer.concat([Buffer.from([200]), Buffer.alloc(3072, 1), Buffer.from([3]), Buffer.alloc(3072, 2)]));
  assert.equal((await collect(cifarBinary({ files: bin, labels: 'ignored' }))).map((s) => s.label), [-1, -1]);
  assert.equal((await collect(cifarBinary({ files: bin, onSkip: () => {} }))).map((s) => s.label), [3]);
});

test.run();

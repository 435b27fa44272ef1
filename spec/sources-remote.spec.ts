/**
 * Remote shards against a loopback server serving the bundled shards (data/cifar10-mini): every
 * way of failing that a retry can mend must give exactly the sample sequence read from disk
 * (indices, keys, labels, bytes), shuffled, ranked and resumed included; the rest is a clear
 * error naming the URL or command.
 */
import * as fs from 'fs';
import * as path from 'path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { batchStream } from '../datapath/batches';
import { countSamples as countSpec } from '../sources/count';
import { openSource } from '../sources/open';
import { countSamples, forgetShardCounts, tarShards, type SourceOptions } from '../sources/tar-shards';
import type { EncodedSample } from '../sources/types';
import { collect, tmpDir } from './sources-fixtures';
import { startShardServer, type ShardServer } from './sources-server';

const DIR = path.resolve(__dirname, '..', 'data', 'cifar10-mini');
// two of the bundled shards (2,000 samples each): a brace list, the order the disk gives
const FILES = '{test,val}-000000.tar.gz';
const ON_DISK = path.join(DIR, FILES);
const PIECE = 200 * 1024;
const FAST = { retries: 4, backoffMs: 5, idleTimeoutMs: 2000 };

let server: ShardServer;
let disk: EncodedSample[] = [];
const url = (mode: string, file = FILES) => `${server.base}/${mode}/${file}`;

let cacheDir = '';

test.before(async () => {
  cacheDir = tmpDir();
  process.env.MIMREF_SHARD_INDEX_DIR = cacheDir;
  server = await startShardServer(DIR, { dropAfter: PIECE });
  disk = await collect(tarShards({ shards: ON_DISK, onSkip: (o, r) => assert.unreachable(`${o}: ${r}`) }));
  assert.is(disk.length, 4000);
});
test.after(async () => {
  await server.close();
  fs.rmSync(cacheDir, { recursive: true, force: true });
});

function assertSameSamples(got: EncodedSample[], want: EncodedSample[], what: string): void {
  assert.is(got.length, want.length, `${what}: sample count`);
  for (let i = 0; i < want.length; i++) {
    const [g, w] = [got[i], want[i]];
    if (g.index !== w.index || g.key !== w.key || g.label !== w.label || !g.bytes.equals(w.bytes)) {
      assert.unreachable(`${what}: sample ${i} is ${g.key}#${g.index} (label ${g.label}), on disk ${w.key}#${w.index} (label ${w.label})`);
    }
  }
}

async function read(shards: string, opts: SourceOptions = {}): Promise<EncodedSample[]> {
  const skips: string[] = [];
  const got = await collect(tarShards({ ...opts, shards, remote: FAST, onSkip: (o, r) => skips.push(`${o}: ${r}`) }));
  assert.equal(skips, [], `${shards}: nothing skipped`);
  return got;
}

test('a brace range of URLs reads exactly what the same shards give on disk, in two requests', async () => {
  server.requests.length = 0;
  const train = 'train-{000000..000001}.tar.gz';
  assertSameSamples(await read(url('ok', train)), await collect(tarShards({ shards: path.join(DIR, train) })), 'ok');
  assert.equal(server.requests.map((r) => r.path), ['/ok/train-000000.tar.gz', '/ok/train-000001.tar.gz']);
  assert.is(await countSamples(url('ok'), undefined, { remote: FAST }), 4000);
});

test('connections dropped mid-shard: resumed with Range from the byte offset, nothing lost or doubled', async () => {
  server.requests.length = 0;
  assertSameSamples(await read(url('drop')), disk, 'drop');
  const ranges = server.requests.filter((r) => r.path === '/drop/val-000000.tar.gz').map((r) => r.range);
  const size = fs.statSync(path.join(DIR, 'val-000000.tar.gz')).size;
  // each try asks for the bytes from where the last one stopped (at most 200 KiB further on)
  const offsets = ranges.map((r) => Number(/^bytes=(\d+)-$/.exec(r ?? 'bytes=0-')![1]));
  assert.ok(offsets.length >= Math.ceil(size / PIECE), `${offsets.length} requests`);
  assert.is(offsets[0], 0);
  offsets.slice(1).forEach((o, i) => assert.ok(o > offsets[i] && o <= offsets[i] + PIECE, `offsets ${offsets.join(', ')}`));
});

test('500 then 200, a slow server, a server that ignores Range: the same samples', async () => {
  assertSameSamples(await read(url('flaky')), disk, 'flaky');
  assertSameSamples(await read(url('slow')), disk, 'slow');
  server.requests.length = 0;
  assertSameSamples(await read(url('norange')), disk, 'norange');
  assert.is(server.requests.filter((r) => r.path === '/norange/val-000000.tar.gz').length, 2, 'cut once, then read again from the start');
});

test('shuffled, ranked and resumed: the same order as on disk, through drops', async () => {
  const opts: SourceOptions = { shuffle: { seed: 11, epoch: 3, bufferSize: 500 }, rank: 1, worldSize: 2, start: 567 };
  const want = await collect(tarShards({ ...opts, shards: ON_DISK }));
  assert.is(want.length, 2000 - 567);
  assertSameSamples(await read(url('drop'), opts), want, 'drop, shuffled');
  assertSameSamples(await read(url('norange'), opts), want, 'norange, shuffled');
});

test('the counts of http shards are kept on disk: a fresh worker checks versions instead of downloading again', async () => {
  const opts: SourceOptions = { shuffle: { seed: 5, epoch: 1, bufferSize: 300 } };
  const want = await collect(tarShards({ ...opts, shards: ON_DISK }));
  const shardsOf = (spec: string) => server.requests.filter((r) => r.path.startsWith(spec));
  forgetShardCounts(); // as in a new data worker
  server.requests.length = 0;
  const entries = fs.readdirSync(cacheDir).length;
  assertSameSamples(await read(url('fresh'), opts), want, 'first, counted');
  const probe = 'bytes=0-0';
  assert.is(shardsOf('/fresh/').filter((r) => r.range === probe).length, 2, 'a version probe per shard');
  assert.is(shardsOf('/fresh/').filter((r) => r.range === undefined).length, 4, 'counted, then read');
  assert.is(fs.readdirSync(cacheDir).length, entries + 1, 'one cache entry written');
  forgetShardCounts();
  server.requests.length = 0;
  assertSameSamples(await read(url('fresh'), opts), want, 'second, from the disk cache');
  assert.equal(shardsOf('/fresh/').map((r) => r.range ?? 'whole'), [probe, probe, 'whole', 'whole'], 'probed, then read once');
  // a shard with a new version is a miss: counted again
  forgetShardCounts();
  server.requests.length = 0;
  assert.is(await countSamples(url('versioned'), undefined, { remote: FAST }), 4000);
  forgetShardCounts();
  assert.is(await countSamples(url('versioned'), undefined, { remote: FAST }), 4000);
  assert.is(shardsOf('/versioned/').filter((r) => r.range === undefined).length, 4, 'each count read both shards');
});

test('batches resumed mid-epoch are the same from a dropping server as from disk (views included)', async () => {
  const view = { size: 16, scale: [0.5, 1] as [number, number], flipP: 0.5, jitterP: 0, jitter: { brightness: 0, contrast: 0, saturation: 0, hue: 0 }, blurP: 0, blurSigma: [0.1, 2] as [number, number], grayscaleP: 0, solarizeP: 0 };
  const batches = async (source: string) => {
    const out: string[] = [];
    // what epochBatches asks of the data path when resuming at step 5 of epoch 1 (in process here)
    const stream = batchStream({ source, worker: false, shuffle: { seed: 3, epoch: 1, bufferSize: 2000 }, start: 5 * 32, transform: { kind: 'views', seed: 3, epoch: 1, views: [view] }, batchSize: 32, dropLast: true, labels: 'ignored', remote: FAST });
    for await (const batch of stream) {
      out.push(`${Array.from(batch.indices).join(',')} ${Array.from(batch.labels).join(',')} ${Array.from(batch.views[0].slice(0, 64)).join(',')}`);
      if (out.length === 3) break;
    }
    return out;
  };
  const want = await batches(ON_DISK);
  assert.is(want.length, 3);
  assert.equal(await batches(url('drop')), want);
});

test('pipe: the command stdout is the shard; several specs joined by ::, sorted by their text', async () => {
  const [a, b] = ['test-000000.tar.gz', 'val-000000.tar.gz'].map((f) => path.join(DIR, f));
  assertSameSamples(await read(`pipe:cat ${b}::pipe:cat ${a}`), disk, 'pipe');
  assertSameSamples(await read(`pipe:cat ${path.join(DIR, FILES)}`), disk, 'pipe with a brace list');
  // gzip or not is judged by content (a command has no file name): a plain tar through a pipe
  assertSameSamples(await read(`${url('ok', 'test-000000.tar.gz')}::pipe:gzip -dc < ${b}`), disk, 'url + pipe');
});

test('openSource and countSamples take URLs: kind tar, the class count from numClasses', async () => {
  const src = openSource(url('ok'), { numClasses: 10, remote: FAST });
  assert.is(src.kind, 'tar');
  assert.is(src.numClasses, 10);
  assert.is(src.classes, undefined, 'classes.txt is not fetched');
  assert.is(await countSpec(url('drop', 'val-000000.tar.gz')), 2000);
});

test('fatal: 404, 403, 500 forever, a failing command: errors naming the URL or command', async () => {
  const fails = async (shards: string) => collect(tarShards({ shards, remote: FAST, onSkip: () => {} })).then(() => 'no error', (e: Error) => e.message);
  assert.is(await fails(url('ok', 'train-000009.tar.gz')), `${url('ok', 'train-000009.tar.gz')}: HTTP 404 Not Found (no such shard: check the URL and the brace range)`);
  assert.match(await fails(url('status/403')), /status\/403\/test-000000\.tar\.gz: HTTP 403 Forbidden \(access denied/);
  assert.match(await fails(url('status/503')), /status\/503\/test-000000\.tar\.gz: gave up after 5 failed tries in a row without data, at byte 0 \(last: HTTP 503 Service Unavailable\)/);
  assert.is(await fails('pipe:false'), 'pipe:false: the command exited with status 1 (nothing on stderr)');
  assert.is(await fails('pipe:echo "no credentials" >&2; exit 3'), 'pipe:echo "no credentials" >&2; exit 3: the command exited with status 3; its stderr ends: no credentials');
  // partway through: the samples before the failure came, then the error
  let n = 0;
  const partway = await (async () => {
    for await (const _ of tarShards({ shards: `pipe:cat ${path.join(DIR, 'val-000000.tar.gz')} | head -c 300000; exit 7`, remote: FAST, onSkip: () => {} })) n++;
  })().then(() => 'no error', (e: Error) => e.message);
  assert.match(partway, /: the command exited with status 7/);
  assert.ok(n > 0 && n < 2000, `${n} samples before the failure`);
  // counting a source stops with the same message
  assert.match(await countSamples('pipe:false').then(String, (e: Error) => e.message), /^pipe:false: the command exited with status 1/);
});

test('a shard replaced on the server between two tries is an error, not a splice', async () => {
  const got = await collect(tarShards({ shards: url('changing'), remote: FAST, onSkip: () => {} })).then(() => 'no error', (e: Error) => e.message);
  assert.match(got, /changing\/test-000000\.tar\.gz changed while it was being read \(first etag "v1".*after a retry etag "v2"/);
});

test('stopping early ends the download and the command', async () => {
  let n = 0;
  await countSamples(url('ok'), undefined, { remote: FAST }); // counted: the shuffled read below only reads
  server.requests.length = 0;
  for await (const _ of tarShards({ shards: url('slow'), remote: FAST })) if (++n === 10) break;
  for await (const _ of tarShards({ shards: url('ok'), remote: FAST, shuffle: { seed: 2, epoch: 0 } })) if (++n === 15) break;
  await new Promise((resolve) => setTimeout(resolve, 200));
  // no try after the stop: the stopped read is not taken for a dropped connection
  assert.equal(server.requests.map((r) => `${r.path} ${r.range ?? ''}`.trim()), [`/slow/test-000000.tar.gz`, `/ok/test-000000.tar.gz`]);
  const started = Date.now();
  for await (const _ of tarShards({ shards: `pipe:cat ${path.join(DIR, 'val-000000.tar.gz')}; sleep 30`, remote: FAST })) if (++n === 20) break;
  assert.is(n, 20);
  assert.ok(Date.now() - started < 5000, 'the command is killed, not waited for');
});

test.run();

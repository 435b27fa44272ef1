/**
 * The library side of the bad-input checks, in process: label range, duplicate keys (first
 * wins, the same indices in sorted and shuffled order), link members, shard failures in words,
 * flag numbers, output folders and the feature cache's content key.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { collect, jpeg, keys, tmpDir, writeTar } from './sources-fixtures';
import { countSamples, tarShards } from '../sources/tar-shards';
import { evalClassCount, openSource } from '../sources/open';
import { cifarBinary } from '../sources/cifar-binary';
import { num, parseFlags } from '../runtime/cli';
import { checkOutDir, outDirProblem } from '../runtime/out-dir';
import { sourceFingerprint } from '../eval/feature-cache';

const sample = async (key: string, label: string | number, seed = 0) => [
  { name: `${key}.jpg`, body: await jpeg(seed) },
  { name: `${key}.cls`, body: String(label) },
];

test('labels outside the class count are skipped and counted, naming file and key', async () => {
  const d = tmpDir();
  await writeTar(path.join(d, 'a.tar'), [...(await sample('k0', 1)), ...(await sample('k1', 123456)), ...(await sample('k2', '99999999999999999999')), ...(await sample('k3', 3))]);
  const skips: string[] = [];
  const got = await collect(tarShards({ shards: path.join(d, 'a.tar'), numClasses: 4, onSkip: (o, r) => skips.push(`${path.basename(o)} ${r}`) }));
  assert.equal(keys(got), ['k0', 'k3']);
  assert.equal(got.map((s) => s.index), [0, 1]);
  assert.equal(skips, ['a.tar:k1.jpg label outside the 4 classes (0..3): 123456', 'a.tar:k2.jpg label outside the 4 classes (0..3): 99999999999999999999']);
  assert.is(await countSamples(path.join(d, 'a.tar'), 4), 2);
  // without a class list the limit still holds: no label can size an array beyond it
  assert.equal(keys(await collect(tarShards({ shards: path.join(d, 'a.tar'), onSkip: () => {} }))), ['k0', 'k3']);
  // classes.txt beside the shards gives the count; evaluation refuses data whose count is unknown
  assert.throws(() => evalClassCount(path.join(d, '*.tar'), path.join(d, '*.tar')), /number of classes is unknown.*--num-classes/);
  assert.is(evalClassCount(path.join(d, '*.tar'), path.join(d, '*.tar'), 4), 4);
  fs.writeFileSync(path.join(d, 'classes.txt'), 'a\nb\n');
  assert.is(openSource(path.join(d, '*.tar')).numClasses, 2);
  assert.throws(() => openSource(path.join(d, '*.tar'), { numClasses: 4 }), /--num-classes 4 disagrees .* 2 classes in/);
  fs.rmSync(d, { recursive: true, force: true });
});

test('duplicate keys: the first wins, within and across shards, with the same indices in any order', async () => {
  const d = tmpDir();
  await writeTar(path.join(d, 's0.tar'), [...(await sample('a', 0, 1)), ...(await sample('b', 1, 2)), ...(await sample('a', 2, 3)), ...(await sample('c', 0, 4))]);
  await writeTar(path.join(d, 's1.tar'), [...(await sample('b', 3, 5)), ...(await sample('d', 1, 6)), ...(await sample('d', 1, 7))]);
  const skips: string[] = [];
  const sorted = await collect(tarShards({ shards: path.join(d, '*.tar'), onSkip: (o, r) => skips.push(`${path.basename(o)} ${r.split(' (')[0]}`) }));
  assert.equal(keys(sorted), ['a', 'b', 'c', 'd']);
  assert.equal(sorted.map((s) => s.label), [0, 1, 0, 1], 'the first sample of a key is kept');
  assert.equal(skips, ['s0.tar:a.jpg duplicate key', 's1.tar:b.jpg duplicate key', 's1.tar:d.jpg duplicate key']);
  assert.is(await countSamples(path.join(d, '*.tar')), 4);
  const indexOf = new Map(sorted.map((s) => [s.key, s.index]));
  for (const epoch of [0, 1, 2]) {
    const mixed = await collect(tarShards({ shards: path.join(d, '*.tar'), onSkip: () => {}, shuffle: { seed: 3, epoch, bufferSize: 2 } }));
    assert.equal(keys(mixed).sort(), ['a', 'b', 'c', 'd']);
    for (const s of mixed) assert.is(s.index, indexOf.get(s.key), `epoch ${epoch}: index of ${s.key}`);
  }
  fs.rmSync(d, { recursive: true, force: true });
});

test('link members are skipped with their kind; shard failures are named in words', async () => {
  const d = tmpDir();
  await writeTar(path.join(d, 'l.tar'), [...(await sample('a', 0))]);
  // tar-stream's pack writes links when given their type
  const tar = await import('tar-stream');
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of pack) chunks.push(c as Buffer);
  })();
  pack.entry({ name: 'a.jpg' }, await jpeg(0));
  pack.entry({ name: 'a.cls' }, '0');
  pack.entry({ name: 's.jpg', type: 'symlink', linkname: '/etc/passwd' });
  pack.entry({ name: 's.cls' }, '0');
  pack.entry({ name: 'h.jpg', type: 'link', linkname: 'a.jpg' });
  pack.entry({ name: 'h.cls' }, '0');
  pack.finalize();
  await done;
  fs.writeFileSync(path.join(d, 'l.tar'), Buffer.concat(chunks));
  const skips: string[] = [];
  const got = await collect(tarShards({ shards: path.join(d, 'l.tar'), onSkip: (o, r) => skips.push(`${path.basename(o)} ${r}`) }));
  assert.equal(keys(got), ['a']);
  assert.equal(skips, ['l.tar:s symbolic link member, not followed: s.jpg', 'l.tar:h hard link member, not followed: h.jpg']);

  const whole = Buffer.concat(chunks);
  const cases: [string, Buffer, RegExp][] = [
    ['cut.tar', whole.subarray(0, 1500), /the tar archive ends in the middle of a member: the file is truncated/],
    ['plain.tar.gz', whole, /named like a \.tar\.gz but is not gzip-compressed/],
    ['cut.tar.gz', (await import('node:zlib')).gzipSync(whole).subarray(0, 200), /the gzip data ends early: the file is truncated/],
    ['text.tar', Buffer.from('hello, this is not a tar file at all '.repeat(40)), /not a tar archive, or a tar header in it is damaged/],
  ];
  for (const [name, bytes, reason] of cases) {
    fs.writeFileSync(path.join(d, name), bytes);
    const seen: string[] = [];
    await collect(tarShards({ shards: path.join(d, name), onSkip: (o, r) => seen.push(`${o} ${r}`) }));
    assert.ok(seen.some((s) => s.startsWith(path.join(d, name)) && reason.test(s)), `${name}: ${seen.join(' | ')}`);
    const counted = await countSamples(path.join(d, name)).then(String, (err: Error) => err.message);
    assert.match(counted, /^no samples could be read from .*: /, `${name}: a source with no samples says why`);
  }
  fs.rmSync(d, { recursive: true, force: true });
});

test('CIFAR records with a label byte outside the classes are skipped', async () => {
  const d = tmpDir();
  const record = (label: number) => Buffer.concat([Buffer.from([label]), Buffer.alloc(3072, 7)]);
  fs.writeFileSync(path.join(d, 'data_batch_1.bin'), Buffer.concat([record(1), record(200), record(9)]));
  const skips: string[] = [];
  const got = await collect(cifarBinary({ files: path.join(d, 'data_batch_1.bin'), onSkip: (o, r) => skips.push(`${path.basename(o)} ${r}`) }));
  assert.equal(got.map((s) => s.label), [1, 9]);
  assert.equal(skips, ['data_batch_1.bin#1 label byte outside the 10 cifar10 classes (0..9): 200']);
  fs.rmSync(d, { recursive: true, force: true });
});

test('number flags name the flag and the range; negative values parse; sizes are held to memory', () => {
  const spec = { batch: { description: 'b', default: '4' }, 'skip-knn': { description: 's', boolean: true } };
  assert.equal(parseFlags('u', spec, ['--batch', '-4']).batch, '-4');
  assert.equal(parseFlags('u', spec, ['--batch', '-0.5', '--skip-knn']).batch, '-0.5');
  assert.throws(() => num('batch', '-4', { integer: true, min: 2, max: 65536 }), /^--batch: expected an integer in \[2, 65536\], got '-4'$/);
  assert.throws(() => num('seed', '1e300', { integer: true }), /--seed: expected an integer of magnitude <= 9007199254740991, got '1e300'/);
  assert.throws(() => num('lr', 'abc', { min: 0 }), /--lr: expected a number >= 0, got 'abc'/);
  assert.throws(() => num('queue-size', '1e12', { integer: true, min: 1, bytesEach: 1024 }), /--queue-size: expected an integer in \[1, \d+\] \(each takes 1\.0 KB; at most half of this machine's .* memory\), got '1e12'/);
  assert.is(num('queue-size', '65536', { integer: true, min: 1, bytesEach: 1024 }), 65536);
});

test('output folders: files, pseudo file systems and unwritable places are refused at once', () => {
  const d = tmpDir();
  fs.writeFileSync(path.join(d, 'f'), 'x');
  assert.match(outDirProblem('/proc/x') ?? '', /\/proc is on a proc file system/);
  assert.match(outDirProblem('/sys/kernel/x/y') ?? '', /sysfs file system/);
  assert.match(outDirProblem(path.join(d, 'f')) ?? '', /it exists and is not a folder/);
  assert.match(outDirProblem(path.join(d, 'f', 'run')) ?? '', /f exists and is not a folder/);
  assert.throws(() => checkOutDir('/proc/x'), /^--out "\/proc\/x": /);
  checkOutDir(path.join(d, 'new', 'run'));
  assert.equal(fs.readdirSync(d), ['f'], 'nothing is created, and the write probe is removed');
  fs.chmodSync(d, 0o500);
  const readOnly = outDirProblem(path.join(d, 'run'));
  fs.chmodSync(d, 0o700);
  // root may write anyway; anyone else is told
  if (process.getuid?.() !== 0) assert.match(readOnly ?? '', /not writable/);
  fs.rmSync(d, { recursive: true, force: true });
});

test('an image folder lists each file once: a symbolic link looping back and a hard link are skipped', async () => {
  const d = tmpDir();
  for (const name of ['a/1.jpg', 'a/2.jpg', 'b/3.jpg']) {
    fs.mkdirSync(path.dirname(path.join(d, name)), { recursive: true });
    fs.writeFileSync(path.join(d, name), await jpeg(name.length));
  }
  fs.symlinkSync('..', path.join(d, 'a', 'loop'));
  fs.linkSync(path.join(d, 'b/3.jpg'), path.join(d, 'b/4.jpg'));
  const skips: string[] = [];
  const source = openSource(d, { onSkip: (o, r) => skips.push(`${path.relative(d, o)} ${r}`) });
  assert.equal((await collect(source.samples)).map((s) => s.key), ['a/1', 'a/2', 'b/3']);
  assert.ok(skips.includes('b/4.jpg the same file as another path (a symbolic or hard link): b/3.jpg'), skips.slice(0, 3).join(' | '));
  assert.ok(skips.some((s) => s.startsWith('a/loop/')), 'the loop is skipped');
  fs.rmSync(d, { recursive: true, force: true });
});

test('the feature cache key follows a folder\'s content: removed and moved files change it', async () => {
  const d = tmpDir();
  for (const [cls, name] of [['a', '1.jpg'], ['a', '2.jpg'], ['b', '3.jpg']]) {
    fs.mkdirSync(path.join(d, cls), { recursive: true });
    fs.writeFileSync(path.join(d, cls, name), await jpeg(name.length));
  }
  const first = await sourceFingerprint(d);
  assert.is((await sourceFingerprint(d)).digest, first.digest, 'stable');
  fs.renameSync(path.join(d, 'a', '2.jpg'), path.join(d, 'b', '2.jpg'));
  const moved = await sourceFingerprint(d);
  assert.is.not(moved.digest, first.digest, 'a file moved between classes');
  fs.rmSync(path.join(d, 'b', '3.jpg'));
  const removed = await sourceFingerprint(d);
  assert.is.not(removed.digest, moved.digest, 'a file removed');
  assert.equal([first.files.length, removed.files.length], [3, 2]);
  fs.rmSync(d, { recursive: true, force: true });
});

test.run();

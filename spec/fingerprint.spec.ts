/**
 * lib/fingerprint.ts: content fingerprints change with any byte (also when the size and mtime are
 * put back), describeDataChange names what changed, remote shards are skipped with a note, and
 * the per-process memo never serves a stale hash.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { dataFingerprint, describeDataChange, fileHash, fileHashSync } from '../lib/fingerprint';
import { rejects } from './eval-helpers';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fingerprint-'));
const f = (name: string) => path.join(dir, name);
const sha256 = (bytes: Buffer) => crypto.createHash('sha256').update(bytes).digest('hex');

test.after(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Whole-second times, so that they can be put back exactly. */
const STAMP = 1_700_000_000;

/** Overwrites one byte in place and puts the size and mtime back (set to STAMP beforehand). */
function rewriteKeepingStat(file: string, at: number): void {
  const st = fs.statSync(file);
  const bytes = fs.readFileSync(file);
  bytes[at] ^= 0xff;
  fs.writeFileSync(file, bytes);
  fs.utimesSync(file, STAMP, STAMP);
  const now = fs.statSync(file);
  assert.equal([now.size, now.mtimeMs], [st.size, st.mtimeMs], 'size and mtime put back');
}

test('file hashes are the SHA-256 of the bytes, async and sync alike, across the 8 MiB chunks', async () => {
  const big = crypto.randomBytes(8 * 2 ** 20 * 2 + 12345); // three chunks, the last partial
  fs.writeFileSync(f('big.bin'), big);
  fs.writeFileSync(f('empty.bin'), '');
  assert.equal(await fileHash(f('big.bin')), { path: f('big.bin'), bytes: big.length, hash: sha256(big) });
  assert.equal(fileHashSync(f('big.bin')), { path: f('big.bin'), bytes: big.length, hash: sha256(big) });
  assert.is((await fileHash(f('empty.bin'))).hash, sha256(Buffer.alloc(0)));
});

test('one byte changed with size and mtime put back: another hash, in the same process too', async () => {
  fs.writeFileSync(f('shard.tar'), crypto.randomBytes(100_000));
  fs.utimesSync(f('shard.tar'), STAMP, STAMP);
  const before = await dataFingerprint([f('shard.tar')]);
  assert.is((await dataFingerprint([f('shard.tar')])).digest, before.digest, 'stable');
  rewriteKeepingStat(f('shard.tar'), 777);
  const after = await dataFingerprint([f('shard.tar')]);
  assert.is.not(after.digest, before.digest);
  assert.is(after.files[0].hash, sha256(fs.readFileSync(f('shard.tar'))), 'not the remembered hash');
  assert.is(fileHashSync(f('shard.tar')).hash, after.files[0].hash);
  assert.match(describeDataChange(before, after)!, new RegExp(`1 file changed: ${f('shard.tar')} \\(same size 0\\.095 MB, other content\\)`));
  assert.is(describeDataChange(after, after), undefined);
});

test('describeDataChange names added, removed and changed files; folders are walked', async () => {
  fs.mkdirSync(f('set/a'), { recursive: true });
  for (const name of ['a/1.jpg', 'a/2.jpg', '.hidden']) fs.writeFileSync(f(`set/${name}`), name);
  const before = await dataFingerprint([f('set')]);
  assert.equal(before.files.map((x) => path.relative(f('set'), x.path)), ['.hidden', 'a/1.jpg', 'a/2.jpg']);
  fs.rmSync(f('set/a/1.jpg'));
  fs.writeFileSync(f('set/a/3.jpg'), 'new');
  fs.writeFileSync(f('set/a/2.jpg'), 'longer than before');
  const change = describeDataChange(before, await dataFingerprint([f('set')]))!;
  assert.match(change, /1 file changed: .*a\/2\.jpg \(0\.000 MB -> 0\.000 MB\)/);
  assert.match(change, /1 file added: .*a\/3\.jpg/);
  assert.match(change, /1 file removed: .*a\/1\.jpg/);
  // moved between class folders: the same bytes under another path
  const beforeMove = await dataFingerprint([f('set')]);
  fs.mkdirSync(f('set/b'));
  fs.renameSync(f('set/a/3.jpg'), f('set/b/3.jpg'));
  assert.match(describeDataChange(beforeMove, await dataFingerprint([f('set')]))!, /^1 file moved \(same bytes\): .*a\/3\.jpg -> .*b\/3\.jpg$/);
});

test('remote shards are listed as skipped, never read; their names still count', async () => {
  fs.writeFileSync(f('local.tar'), 'x');
  const entries = [f('local.tar'), 'https://example.invalid/train-000001.tar', 'pipe:cat /nonexistent'];
  const fp = await dataFingerprint(entries);
  assert.equal(fp.files.map((x) => x.path), [f('local.tar')]);
  assert.equal(fp.skipped.map((s) => s.entry), ['https://example.invalid/train-000001.tar', 'pipe:cat /nonexistent']);
  assert.match(fp.skipped[0].why, /remote shard.*not hashed/);
  const fewer = await dataFingerprint(entries.slice(0, 2));
  assert.match(describeDataChange(fp, fewer)!, /remote shard removed: pipe:cat \/nonexistent/);
});

test('a missing entry and a FIFO are errors naming them', async () => {
  await rejects(() => dataFingerprint([f('nope.tar')]), /nope\.tar: no such file or folder to fingerprint/);
  execFileSync('mkfifo', [f('fifo')]);
  await rejects(() => dataFingerprint([f('fifo')]), /fifo: not a regular file or folder/);
});

test('many files: the summary lists five and counts the rest', async () => {
  fs.mkdirSync(f('many'));
  for (let i = 0; i < 8; i++) fs.writeFileSync(f(`many/${i}.tar`), String(i));
  const before = await dataFingerprint([f('many')]);
  for (let i = 0; i < 8; i++) fs.rmSync(f(`many/${i}.tar`));
  assert.match(describeDataChange(before, await dataFingerprint([f('many')]))!, /^8 files removed: .*4\.tar, \.\.\. \(3 more\)$/);
});

test.run();

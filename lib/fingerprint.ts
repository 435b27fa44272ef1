/**
 * Content fingerprints of data and checkpoint files: a hash of every byte, so a file rewritten
 * with other content (every label of a shard changed, a checkpoint overwritten in place) gets a
 * new fingerprint even where its size and mtime were kept. The feature cache keys on it, and a
 * resumed training run compares the fingerprint of its data with the one it started on.
 *
 * The hash is SHA-256 (node:crypto, OpenSSL). Hashing the bundled data (data/cifar10-mini and
 * checkpoints/, read from the page cache on 2 cores shared with other work) cost 1.1-1.5 s per
 * GiB, against 0.4-0.6 s for xxh64 (hash-wasm) and 1.1 s for SHA-1; this function over 72
 * copies of it (1080 files, 1 GiB) 2-3.5 s per GiB, per-file opening included. Extracting
 * features from the same shards cost about 68000 s per GiB (46 images/s), so the choice is
 * noise next to any evaluation, and a cryptographic hash cannot be matched by a crafted file,
 * which a 64-bit one can. Measure it on any data: `npx ts-node lib/fingerprint.ts PATH...`.
 *
 * Entries are local files, folders (every file below, recursively, dot files included), or
 * remote shards (`http(s)://...`, `pipe:...`), which cannot be hashed without reading the whole
 * stream: those are listed in `skipped` with the reason, never hashed, and the caller decides
 * (the feature cache does not cache such a source).
 *
 * Within one process a file's hash is remembered under (path, device, inode, size, mtime,
 * ctime): ctime changes with every write and every utimes() call and cannot be set back, so a
 * file rewritten with its old mtime restored is hashed again.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

export const FINGERPRINT_HASH = 'sha256';

export interface FileFingerprint {
  /** Absolute path. */
  path: string;
  bytes: number;
  /** Hex SHA-256 of the file's bytes. */
  hash: string;
}

export interface DataFingerprint {
  /** Every local file, sorted by path. */
  files: FileFingerprint[];
  /** Entries that were not hashed (remote shards), with why. */
  skipped: { entry: string; why: string }[];
  /** SHA-256 over every file's path, size and hash, and the skipped entries' names. */
  digest: string;
}

/** An `http(s)://` URL or a `pipe:` command: a stream, not a file that can be hashed in place. */
export function isRemoteEntry(entry: string): boolean {
  return /^https?:\/\//i.test(entry) || entry.startsWith('pipe:');
}

const CHUNK = 8 << 20;
const memo = new Map<string, { stamp: string; hash: string }>();

const stampOf = (st: fs.Stats) => `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;

/** The remembered hash of `abs` if its stat still matches; throws for anything but a regular file. */
function remembered(abs: string, st: fs.Stats): string | undefined {
  if (!st.isFile()) throw new Error(`${abs}: not a regular file, cannot be fingerprinted`);
  const known = memo.get(abs);
  return known?.stamp === stampOf(st) ? known.hash : undefined;
}

/** Records a hash, unless the file changed while it was read: then its hash describes neither version. */
function remember(abs: string, before: fs.Stats, after: fs.Stats, bytes: number, hash: string): FileFingerprint {
  if (stampOf(after) !== stampOf(before) || bytes !== before.size) throw new Error(`${abs} changed while it was being hashed (${before.size} bytes before, ${bytes} read)`);
  memo.set(abs, { stamp: stampOf(before), hash });
  return { path: abs, bytes, hash };
}

/**
 * SHA-256 of one file's bytes, read in 8 MiB chunks with the next read in flight while the
 * current chunk is hashed. Remembered for the process under the file's stat (see the file comment).
 */
export async function fileHash(file: string): Promise<FileFingerprint> {
  const abs = path.resolve(file);
  const handle = await fs.promises.open(abs, 'r');
  try {
    const before = await handle.stat();
    const known = remembered(abs, before);
    if (known) return { path: abs, bytes: before.size, hash: known };
    const hash = crypto.createHash(FINGERPRINT_HASH);
    const buffers = [Buffer.allocUnsafe(CHUNK), Buffer.allocUnsafe(CHUNK)];
    let bytes = 0;
    let which = 0;
    let pending = handle.read(buffers[which], 0, CHUNK, 0);
    for (;;) {
      const { bytesRead } = await pending;
      if (bytesRead === 0) break;
      const current = buffers[which];
      bytes += bytesRead;
      which = 1 - which;
      pending = handle.read(buffers[which], 0, CHUNK, bytes);
      hash.update(current.subarray(0, bytesRead));
    }
    return remember(abs, before, await handle.stat(), bytes, hash.digest('hex'));
  } finally {
    await handle.close();
  }
}

/** fileHash for synchronous callers (a checkpoint's cache key, computed before anything runs). */
export function fileHashSync(file: string): FileFingerprint {
  const abs = path.resolve(file);
  const fd = fs.openSync(abs, 'r');
  try {
    const before = fs.fstatSync(fd);
    const known = remembered(abs, before);
    if (known) return { path: abs, bytes: before.size, hash: known };
    const hash = crypto.createHash(FINGERPRINT_HASH);
    const chunk = Buffer.allocUnsafe(CHUNK);
    let bytes = 0;
    for (let n; (n = fs.readSync(fd, chunk, 0, CHUNK, bytes)) > 0; bytes += n) hash.update(chunk.subarray(0, n));
    return remember(abs, before, fs.fstatSync(fd), bytes, hash.digest('hex'));
  } finally {
    fs.closeSync(fd);
  }
}

/** Every file below a folder, recursively (dot files included, symbolic links to files followed once). */
function filesBelow(dir: string): string[] {
  const out: string[] = [];
  const seen = new Set<string>();
  const walk = (d: string) => {
    const real = fs.realpathSync(d);
    if (seen.has(real)) return; // a link back up the tree
    seen.add(real);
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      const st = e.isSymbolicLink() ? fs.statSync(p, { throwIfNoEntry: false }) : undefined;
      if (e.isDirectory() || st?.isDirectory()) walk(p);
      else if (e.isFile() || st?.isFile()) out.push(p);
    }
  };
  walk(dir);
  return out;
}

/**
 * The fingerprint of the given entries (files, folders, remote shards; see the file comment).
 * A local entry that does not exist is an error naming it.
 */
export async function dataFingerprint(entries: string[]): Promise<DataFingerprint> {
  const local = new Set<string>();
  const skipped: DataFingerprint['skipped'] = [];
  for (const entry of entries) {
    if (isRemoteEntry(entry)) {
      if (!skipped.some((s) => s.entry === entry)) skipped.push({ entry, why: 'a remote shard: its bytes are not read in place, so it is not hashed' });
      continue;
    }
    const st = fs.statSync(entry, { throwIfNoEntry: false });
    if (!st) throw new Error(`${entry}: no such file or folder to fingerprint`);
    // a FIFO or device would block the read or never end
    if (!st.isDirectory() && !st.isFile()) throw new Error(`${entry}: not a regular file or folder, cannot be fingerprinted`);
    for (const f of st.isDirectory() ? filesBelow(entry) : [entry]) local.add(path.resolve(f));
  }
  const files: FileFingerprint[] = [];
  for (const f of [...local].sort()) files.push(await fileHash(f));
  skipped.sort((a, b) => (a.entry < b.entry ? -1 : a.entry > b.entry ? 1 : 0));
  const digest = crypto.createHash(FINGERPRINT_HASH);
  for (const f of files) digest.update(`${f.path}\0${f.bytes}\0${f.hash}\n`);
  for (const s of skipped) digest.update(`remote\0${s.entry}\n`);
  return { files, skipped, digest: digest.digest('hex') };
}

const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(bytes < 2 ** 20 ? 3 : 1)} MB`;

function listed(what: string, items: string[]): string {
  const shown = items.slice(0, 5).join(', ');
  return `${items.length} ${what}: ${shown}${items.length > 5 ? `, ... (${items.length - 5} more)` : ''}`;
}

/**
 * What changed between two fingerprints of the same data, in words (files changed with their
 * sizes, moved (the same bytes under another path), added, removed), or undefined where nothing
 * did. Remote entries are compared by name only: their content was never hashed.
 */
export function describeDataChange(before: DataFingerprint, after: DataFingerprint): string | undefined {
  if (before.digest === after.digest) return undefined;
  const old = new Map(before.files.map((f) => [f.path, f]));
  const now = new Map(after.files.map((f) => [f.path, f]));
  let added = [...now.keys()].filter((p) => !old.has(p));
  let removed = [...old.keys()].filter((p) => !now.has(p));
  // a removed file whose bytes reappear under an added path was moved (a data set copied elsewhere)
  const removedByHash = new Map<string, string[]>();
  for (const p of removed) removedByHash.set(old.get(p)!.hash, [...(removedByHash.get(old.get(p)!.hash) ?? []), p]);
  const pairs: [string, string][] = [];
  for (const p of added) {
    const from = removedByHash.get(now.get(p)!.hash)?.shift();
    if (from) pairs.push([from, p]);
  }
  const movedFrom = new Set(pairs.map(([from]) => from));
  const movedTo = new Set(pairs.map(([, to]) => to));
  const moved = pairs.map(([from, to]) => `${from} -> ${to}`);
  added = added.filter((p) => !movedTo.has(p));
  removed = removed.filter((p) => !movedFrom.has(p));
  const changed = [...now.values()]
    .filter((f) => old.has(f.path) && old.get(f.path)!.hash !== f.hash)
    .map((f) => {
      const was = old.get(f.path)!;
      return `${f.path} (${was.bytes === f.bytes ? `same size ${mb(f.bytes)}, other content` : `${mb(was.bytes)} -> ${mb(f.bytes)}`})`;
    });
  const oldRemote = new Set(before.skipped.map((s) => s.entry));
  const newRemote = new Set(after.skipped.map((s) => s.entry));
  const parts = [
    changed.length ? listed(changed.length === 1 ? 'file changed' : 'files changed', changed) : '',
    moved.length ? listed(moved.length === 1 ? 'file moved (same bytes)' : 'files moved (same bytes)', moved) : '',
    added.length ? listed(added.length === 1 ? 'file added' : 'files added', added) : '',
    removed.length ? listed(removed.length === 1 ? 'file removed' : 'files removed', removed) : '',
    ...[...newRemote].filter((e) => !oldRemote.has(e)).map((e) => `remote shard added: ${e}`),
    ...[...oldRemote].filter((e) => !newRemote.has(e)).map((e) => `remote shard removed: ${e}`),
  ].filter((p) => p.length > 0);
  // Equal lists with another digest: fingerprints written by another hash or another layout.
  return parts.length ? parts.join('; ') : 'the fingerprints differ (written by another version of the fingerprint)';
}

/** `npx ts-node lib/fingerprint.ts PATH...`: the fingerprint of files and folders, and what it cost per GiB. */
if (require.main === module) {
  const t0 = performance.now();
  dataFingerprint(process.argv.slice(2)).then(
    (fp) => {
      const seconds = (performance.now() - t0) / 1000;
      const gib = fp.files.reduce((a, f) => a + f.bytes, 0) / 2 ** 30;
      console.log(`${fp.files.length} files, ${gib.toFixed(3)} GiB in ${seconds.toFixed(2)} s (${(seconds / gib).toFixed(2)} s/GiB, ${FINGERPRINT_HASH}); digest ${fp.digest}`);
      for (const s of fp.skipped) console.log(`skipped ${s.entry}: ${s.why}`);
    },
    (err) => {
      console.error(`error: ${(err as Error).message}`);
      process.exit(1);
    },
  );
}

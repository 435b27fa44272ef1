/**
 * WebDataset tar shards (.tar, .tar.gz, .tgz) as a stream of EncodedSample, from local files,
 * http(s) URLs or `pipe:` commands, named in webdataset's notation (shard-spec.ts).
 *
 * Shards are streamed (bytes -> gunzip -> tar-stream; shard-bytes.ts fetches them, resuming
 * dropped connections at the byte where they stopped, so the parser sees exactly the file's
 * bytes), one member body in memory at a time, so shard size does not matter. gzip is told by
 * the name (.tar.gz, .tgz) or by the content (gzip's magic number). Members are grouped by
 * key (`<key>.<ext>`, key = name up to the first dot of the basename, as in WebDataset); a
 * sample is `<key>.jpg|jpeg|png|webp` plus `<key>.cls` (class index as text).
 *
 * Stable index: a sample's index is its position among the valid samples when all shards are
 * read in sorted path order (0..N-1). In sorted order that is a running count. When the shard
 * order is shuffled, a shard's first index is the sum of the counts of the shards sorted before
 * it: those come from a counting pass over the shards (image bodies drained, not kept; about
 * 0.1 s per 5,000-sample shard here), done once per process and cached in memory by path,
 * size and mtime. No sidecar files, so read-only data works and counts never go stale. The
 * pass uses the very same grouping code as the read, so the two always agree, also for skipped
 * samples (which take no index) and truncated shards. The same shards on disk, behind a URL or
 * through a command therefore give the same indices and the same epoch order.
 * Cost for remote shards: the counting pass reads each shard once (a full download, bodies
 * dropped), in countSamples and before the first shuffled epoch. Its result is kept on disk
 * for sources of http shards (shard-index-cache.ts), so later data workers only send one
 * one-byte request per shard to check versions; a source with `pipe:` shards is counted by
 * reading it in every process that needs the counts.
 *
 * Order, ranks and resume (shared with the other sources, see selectForRank):
 *   epoch order = shards in seeded order, samples through a bounded seeded shuffle buffer;
 *   rank r keeps the samples at positions p of the epoch order with p % worldSize == r
 *   (disjoint and complete; every rank computes the same order from the same seed/epoch);
 *   `start` skips the first `start` samples of this rank's stream (resume mid-epoch).
 *
 * Labels: with labels 'ignored' (SourceOptions) .cls members are not read and every sample
 * with an image is taken, with label -1.
 *
 * A shard that cannot be fetched (404/403, retries spent, a command that fails; see
 * shard-bytes.ts) or that changed on its server since it was counted is an error that names
 * it. Problems of the data itself are skipped and reported through onSkip, never thrown: a
 * sample without label or image, a label outside the classes (numClasses), a key already read
 * (the first sample with a key wins, also across shards in sorted order), a link member
 * (symbolic or hard links are not followed: they could point anywhere) -> one report each; a
 * truncated tar or corrupt gzip -> the rest of that shard is lost, one report naming the
 * shard and what is wrong with it (the same for a file truncated on a server). Undecodable
 * image bytes are not a container problem: they pass through and the decode stage counts them.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as zlib from 'zlib';
import { pipeline, Readable } from 'stream';
import * as tar from 'tar-stream';
import { Rng } from '../lib/rng';
import { httpVersion, shardBytes, ShardFetchError, type RemoteOptions } from './shard-bytes';
import { indexCacheKey, loadIndex, saveIndex, type StoredIndex } from './shard-index-cache';
import { isRemoteShard, resolveShards } from './shard-spec';
import type { EncodedSample } from './types';

export { resolveShards } from './shard-spec';
export type { RemoteOptions } from './shard-bytes';

export interface ShuffleOptions {
  seed: number;
  epoch: number;
  /** Tar shards only: samples held in the shuffle buffer. Random-access sources permute fully. */
  bufferSize?: number;
}

/** Options every source takes. */
export interface SourceOptions {
  shuffle?: ShuffleOptions;
  rank?: number;
  worldSize?: number;
  /** Skip this many samples of this rank's stream (resume within an epoch). */
  start?: number;
  /** Only the samples with these stable indices (a labelled subset); order, rank and start apply within them. */
  subset?: Int32Array;
  /**
   * 'required' (default): a sample needs a valid label (tar: a `.cls` below the class count),
   * else it is skipped and counted. 'ignored': labels are neither read nor checked and every
   * sample has label -1, so a label-free pipeline (MAE, MimCo) takes every image there is,
   * also from unlabelled shards.
   */
  labels?: LabelPolicy;
  /** Retries and timeouts of http(s):// shards. */
  remote?: RemoteOptions;
}

export type LabelPolicy = 'required' | 'ignored';

export type OnSkip = (origin: string, reason: string) => void;

export interface TarShardsOptions extends SourceOptions {
  /** Paths, fast-glob patterns, URLs, `pipe:` commands, in webdataset's notation (see shard-spec.ts). */
  shards: string | string[];
  onSkip?: OnSkip;
  /** Labels must lie in [0, numClasses); default LABEL_LIMIT (no class list known). */
  numClasses?: number;
}

/**
 * Labels of shards whose class count is unknown (no classes.txt, no --num-classes) must still
 * be below this: an absurd `.cls` (123456, 99999999999999999999) would otherwise size every
 * per-class array of the evaluation.
 */
export const LABEL_LIMIT = 65536;

/** A member larger than this is no image of a data set: skipped, not buffered. */
const MAX_MEMBER_BYTES = 256 * 1024 * 1024;

export type TarShardsSource = AsyncIterable<EncodedSample> & { readonly shards: string[] };

export const IMAGE_EXTENSIONS = ['jpg', 'jpeg', 'png', 'webp'];
const DEFAULT_BUFFER = 1000;

const loggedByKind = new Map<string, number>();

/**
 * For a source opened without onSkip (a look at its classes, say): the first 3 skips of each
 * kind are logged per process, so that a folder with a stray file in each of 1,000 class
 * folders does not flood the log. A caller that wants them counted passes onSkip.
 */
export const defaultOnSkip: OnSkip = (origin, reason) => {
  const kind = reason.split(': ')[0];
  const n = (loggedByKind.get(kind) ?? 0) + 1;
  loggedByKind.set(kind, n);
  if (n <= 3) console.warn(`[source] skipped ${origin}: ${reason}${n === 3 ? ' (further skips of this kind are not logged)' : ''}`);
};

export function tarShards(opts: TarShardsOptions): TarShardsSource {
  const shards = resolveShards(opts.shards);
  const onSkip = opts.onSkip ?? defaultOnSkip;
  const read = readConfig(opts);
  checkRank(opts); // fail now, not at the first read
  return {
    shards,
    [Symbol.asyncIterator]: () => {
      let samples = readAll(shards, opts.shuffle, onSkip, read);
      if (opts.subset) samples = withIndices(samples, new Set(opts.subset));
      if (opts.shuffle) {
        const rng = new Rng(opts.shuffle.seed, opts.shuffle.epoch, 0x5b0f);
        samples = shuffleBuffer(samples, opts.shuffle.bufferSize ?? DEFAULT_BUFFER, rng);
      }
      return selectForRank(samples, opts)[Symbol.asyncIterator]();
    },
  };
}

/**
 * Number of valid samples in the shards (a header-only pass, cached per process). Where that
 * is none, the error says why (each shard's problem, or every sample's first one). Remote
 * shards are read once for it (image bodies streamed and dropped): the cost of one download.
 */
export async function countSamples(
  shards: string | string[],
  numClasses?: number,
  opts: { labels?: LabelPolicy; remote?: RemoteOptions } = {},
): Promise<number> {
  const index = await sourceIndex(resolveShards(shards), readConfig({ ...opts, numClasses }));
  if (index.total === 0) {
    const why = index.problems.slice(0, 3).map((p) => `${p.origin}: ${p.reason}`);
    const labelled = index.problems.some((p) => /^(missing label|bad label|label outside)/.test(p.reason));
    const hint = labelled ? ` (a pipeline that does not use labels reads unlabelled samples with labels: 'ignored')` : '';
    throw new Error(`no samples could be read from ${[shards].flat().join(', ')}${why.length ? `: ${why.join('; ')}${index.problems.length > 3 ? '; ...' : ''}` : ''}${hint}`);
  }
  return index.total;
}

/** How shards are read: the same for the counting pass and the read, so the two agree. */
interface ReadConfig {
  numClasses: number;
  labels: LabelPolicy;
  remote: RemoteOptions;
}

function readConfig(opts: { numClasses?: number; labels?: LabelPolicy; remote?: RemoteOptions }): ReadConfig {
  const n = opts.numClasses ?? LABEL_LIMIT;
  if (!Number.isInteger(n) || n < 1 || n > LABEL_LIMIT) throw new Error(`numClasses must be an integer in [1, ${LABEL_LIMIT}], got ${opts.numClasses}`);
  const labels = opts.labels ?? 'required';
  if (labels !== 'required' && labels !== 'ignored') throw new Error(`labels must be 'required' or 'ignored', got ${JSON.stringify(labels)}`);
  return { numClasses: n, labels, remote: opts.remote ?? {} };
}

/**
 * Keeps the items at positions p with p % worldSize == rank, then drops the first `start` of
 * them. Shared by all sources so that "rank" and "start" mean the same everywhere.
 */
export async function* selectForRank<T>(items: AsyncIterable<T>, opts: SourceOptions): AsyncGenerator<T> {
  const { rank, worldSize } = checkRank(opts);
  let position = 0;
  let kept = 0;
  for await (const item of items) {
    if (position++ % worldSize !== rank) continue;
    if (kept++ < (opts.start ?? 0)) continue;
    yield item;
  }
}

async function* withIndices(samples: AsyncIterable<EncodedSample>, keep: Set<number>): AsyncGenerator<EncodedSample> {
  for await (const s of samples) if (keep.has(s.index)) yield s;
}

/** The stable indices a random-access source of `size` samples reads: all, or opts.subset (checked). */
export function indexOrder(size: number, opts: SourceOptions): number[] {
  if (!opts.subset) return Array.from({ length: size }, (_, i) => i);
  const bad = opts.subset.find((i) => !(i >= 0 && i < size));
  if (bad !== undefined) throw new Error(`subset index ${bad} is outside the source's ${size} samples`);
  return Array.from(opts.subset);
}

/** selectForRank for an epoch order held in memory (random-access sources): nothing dropped is read. */
export function selectArrayForRank<T>(order: T[], opts: SourceOptions): T[] {
  const { rank, worldSize } = checkRank(opts);
  return order.filter((_, p) => p % worldSize === rank).slice(opts.start ?? 0);
}

export function checkRank(opts: SourceOptions): { rank: number; worldSize: number } {
  const rank = opts.rank ?? 0;
  const worldSize = opts.worldSize ?? 1;
  if (!Number.isInteger(worldSize) || worldSize < 1) throw new Error(`worldSize must be an integer >= 1, got ${worldSize}`);
  if (!Number.isInteger(rank) || rank < 0 || rank >= worldSize) throw new Error(`rank must be in [0, ${worldSize}), got ${rank}`);
  if (!(Number.isInteger(opts.start ?? 0) && (opts.start ?? 0) >= 0)) throw new Error(`start must be an integer >= 0, got ${opts.start}`);
  return { rank, worldSize };
}

/**
 * Bounded shuffle: hold `size` items, emit a random one each time a new one arrives. Memory is
 * bounded by `size` samples; the mixing reaches across about `size` neighbours, which is why
 * the shard order is shuffled too.
 */
export async function* shuffleBuffer<T>(items: AsyncIterable<T>, size: number, rng: Rng): AsyncGenerator<T> {
  const buffer: T[] = [];
  for await (const item of items) {
    if (buffer.length < Math.max(1, size)) {
      buffer.push(item);
      continue;
    }
    const j = rng.int(buffer.length);
    const out = buffer[j];
    buffer[j] = item;
    yield out;
  }
  rng.shuffle(buffer);
  yield* buffer;
}

// ---------------------------------------------------------------------------------------------

async function* readAll(shards: string[], shuffle: ShuffleOptions | undefined, onSkip: OnSkip, read: ReadConfig): AsyncGenerator<EncodedSample> {
  const order = shards.map((_, i) => i);
  if (shuffle) new Rng(shuffle.seed, shuffle.epoch, 0x5a4d).shuffle(order);
  // In sorted order the keys read so far say what is a duplicate and the running count is the
  // index; in shuffled order both come from the counting pass, as they must not depend on the epoch.
  const index = shuffle ? await sourceIndex(shards, read) : undefined;
  const seen = new Set<string>();
  let running = 0;
  for (const s of order) {
    let next = index ? index.firstIndex[s] : running;
    // The counts of a remote shard hold only for the version counted.
    const sameVersion = (version: string) => {
      if (index && index.versions[s] !== null && version !== index.versions[s]) {
        throw new ShardFetchError(`${shards[s]} changed since it was counted (then ${index.versions[s]}; now ${version}): its sample indices would not hold; start again`);
      }
    };
    for await (const item of readShard(shards[s], true, read, sameVersion)) {
      if (item.kind === 'skip') {
        onSkip(item.origin, item.reason);
        continue;
      }
      if (index ? index.crossDuplicates[s].has(item.key) : seen.has(item.key)) {
        onSkip(item.origin, DUPLICATE);
        continue;
      }
      if (!index) seen.add(item.key);
      yield { index: next++, key: item.key, label: item.label, bytes: item.bytes!, origin: item.origin };
    }
    running = next;
  }
}

/** Reasons name the kind of problem before any ': ' and the particulars after it (SkipLog counts by kind). */
const DUPLICATE = 'duplicate key (an earlier sample has it; the first one is kept)';

/**
 * What the counting pass finds: each shard's first stable index, the keys in each shard that
 * an earlier shard already has (so that a shuffled read drops the same duplicates as a sorted
 * one), each shard's damage or first skipped sample (why a source without samples has none),
 * and each http shard's version when counted.
 */
type SourceIndex = Omit<StoredIndex, 'crossDuplicates'> & { crossDuplicates: Set<string>[] };

const indexMemo = new Map<string, SourceIndex>();

/** Forgets the counts held in memory (the disk cache stays): for long-lived processes and tests. */
export function forgetShardCounts(): void {
  indexMemo.clear();
}

/**
 * The counting pass over all shards (header-only), kept in memory per process by path, size,
 * mtime (a remote shard by its URL or command); for sources with http shards also on disk
 * (shard-index-cache.ts), checked against each shard's version. `pipe:` shards have no
 * version: a source with one is counted by reading it, once per process.
 */
async function sourceIndex(shards: string[], read: ReadConfig): Promise<SourceIndex> {
  const memoKey = [read.numClasses, read.labels, ...shards.map(statKey)].join('\0');
  const memo = indexMemo.get(memoKey);
  if (memo) return memo;
  const onDisk = shards.some((s) => /^https?:/i.test(s)) && !shards.some((s) => s.startsWith('pipe:'));
  const diskKey = (versions: (string | null | undefined)[]) =>
    versions.every((v) => v) ? indexCacheKey([read.numClasses, read.labels, shards, versions]) : undefined;
  let stored: StoredIndex | undefined;
  if (onDisk) {
    const key = diskKey(await versionsOf(shards, read.remote));
    stored = key ? loadIndex(key) : undefined;
  }
  if (!stored) {
    stored = await countShards(shards, read);
    const key = onDisk ? diskKey(stored.versions.map((v, s) => (/^https?:/i.test(shards[s]) ? v : statKey(shards[s])))) : undefined;
    if (key) saveIndex(key, stored);
  }
  const index = { ...stored, crossDuplicates: stored.crossDuplicates.map((keys) => new Set(keys)) };
  indexMemo.set(memoKey, index);
  return index;
}

/** Each shard's version: an http shard's as its server names it, a local file's size and mtime. */
async function versionsOf(shards: string[], remote: RemoteOptions): Promise<(string | undefined)[]> {
  const versions: (string | undefined)[] = new Array(shards.length);
  let next = 0;
  const worker = async () => {
    for (let s = next++; s < shards.length; s = next++) versions[s] = /^https?:/i.test(shards[s]) ? await httpVersion(shards[s], remote) : statKey(shards[s]);
  };
  await Promise.all(Array.from({ length: Math.min(16, shards.length) }, worker));
  return versions;
}

async function countShards(shards: string[], read: ReadConfig): Promise<StoredIndex> {
  const seen = new Set<string>();
  const index: StoredIndex = { firstIndex: [], crossDuplicates: [], total: 0, problems: [], versions: [] };
  for (let s = 0; s < shards.length; s++) {
    index.firstIndex.push(seen.size);
    index.versions.push(null);
    const duplicates: string[] = [];
    let noted = false;
    for await (const item of readShard(shards[s], false, read, (version) => (index.versions[s] = version))) {
      if (item.kind === 'sample') {
        if (seen.has(item.key)) duplicates.push(item.key);
        else seen.add(item.key);
      }
      if (item.kind === 'skip' && (!noted || item.origin === shards[s])) {
        index.problems.push({ origin: item.origin, reason: item.reason });
        noted = true;
      }
    }
    index.crossDuplicates.push(duplicates);
  }
  index.total = seen.size;
  return index;
}

function statKey(file: string): string {
  if (isRemoteShard(file)) return file;
  const stat = fs.statSync(file);
  return `${file}\0${stat.size}\0${stat.mtimeMs}`;
}

type ShardItem =
  | { kind: 'sample'; key: string; label: number; bytes?: Buffer; origin: string }
  | { kind: 'skip'; origin: string; reason: string };

interface Group {
  key: string;
  /** Member extensions seen, lower case. */
  exts: Set<string>;
  image?: { member: string; bytes?: Buffer };
  cls?: string;
  /** A member of this key that was a link or too large: why the sample cannot be whole. */
  unusable?: string;
}

/** tar-stream's header types that are links to other entries or paths. */
const LINK_TYPES: Record<string, string> = { symlink: 'symbolic link', link: 'hard link' };

/**
 * One shard's samples in file order, each key once (the first valid sample of a key wins).
 * keepImages=false drains image bodies unread (the counting pass). A container error ends the
 * shard with a single skip item that says, in words, what is wrong with it.
 */
async function* readShard(shard: string, keepImages: boolean, read: ReadConfig, onVersion?: (version: string) => void): AsyncGenerator<ShardItem> {
  const { numClasses, labels } = read;
  // A shard that cannot be fetched at all (404, a failing command, retries spent) stops the
  // run: the stream errors it causes downstream must not pass for a damaged shard.
  let fetchError: ShardFetchError | undefined;
  const bytes = keepFetchError(shardBytes(shard, read.remote, onVersion), (err) => (fetchError = err));
  let head: { gzip: boolean; chunks: AsyncGenerator<Buffer> };
  try {
    head = await peekGzip(bytes);
  } catch (err) {
    if (fetchError) throw fetchError;
    yield { kind: 'skip', origin: shard, reason: `${shardProblem(err as Error, namedGzip(shard))}; the rest of this shard is skipped` };
    return;
  }
  // By name where there is one (a .tar.gz that is not gzip data is reported as such), else by content.
  const gzipped = namedGzip(shard) || head.gzip;
  const input = Readable.from(head.chunks, { objectMode: false });
  const extract = tar.extract();
  // pipeline() destroys the extractor with any read or gunzip error, which then surfaces from
  // the entry iterator below; the callback keeps the first error, the one that says what broke.
  const sink = extract as unknown as NodeJS.WritableStream; // a streamx Writable
  let streamError: Error | undefined;
  const done = (err?: NodeJS.ErrnoException | null) => (streamError ??= err ?? undefined);
  if (gzipped) pipeline(input, zlib.createGunzip(), sink, done);
  else pipeline(input, sink, done);

  const emitted = new Set<string>();
  let group: Group | undefined;
  const finish = (g: Group): ShardItem => {
    const origin = `${shard}:${g.image?.member ?? g.key}`;
    if (g.unusable) return { kind: 'skip', origin, reason: g.unusable };
    if (!g.image) return { kind: 'skip', origin, reason: 'no image member' };
    if (labels === 'ignored') {
      if (emitted.has(g.key)) return { kind: 'skip', origin, reason: DUPLICATE };
      emitted.add(g.key);
      return { kind: 'sample', key: g.key, label: -1, bytes: g.image.bytes, origin };
    }
    if (g.cls === undefined) return { kind: 'skip', origin, reason: 'missing label (.cls)' };
    const text = g.cls.trim();
    if (!/^\d+$/.test(text)) return { kind: 'skip', origin, reason: `bad label: ${JSON.stringify(g.cls)}` };
    const label = Number(text);
    if (label >= numClasses) {
      const classes = numClasses === LABEL_LIMIT ? `the label limit ${LABEL_LIMIT} (no classes.txt beside the shards)` : `the ${numClasses} classes (0..${numClasses - 1})`;
      return { kind: 'skip', origin, reason: `label outside ${classes}: ${text.length > 24 ? `${text.slice(0, 24)}...` : text}` };
    }
    if (emitted.has(g.key)) return { kind: 'skip', origin, reason: DUPLICATE };
    emitted.add(g.key);
    return { kind: 'sample', key: g.key, label, bytes: g.image.bytes, origin };
  };

  try {
    for await (const entry of extract) {
      const { name, type, size } = entry.header;
      const base = path.posix.basename(name);
      const dot = base.indexOf('.');
      if (dot <= 0 || (type !== 'file' && !((type ?? '') in LINK_TYPES))) {
        entry.resume(); // folders, pax headers, dot files
        continue;
      }
      const key = name.slice(0, name.length - base.length + dot);
      const ext = base.slice(dot + 1).toLowerCase();
      // a new key, or a member the current sample already has (the same key written twice in a row), starts a sample
      if (group && (group.key !== key || group.exts.has(ext))) {
        yield finish(group);
        group = undefined;
      }
      group ??= { key, exts: new Set() };
      group.exts.add(ext);
      const used = IMAGE_EXTENSIONS.includes(ext) || ext === 'cls';
      if (used && type !== 'file') {
        group.unusable ??= `${LINK_TYPES[type!]} member, not followed: ${name}`;
        entry.resume();
      } else if (used && (size ?? 0) > MAX_MEMBER_BYTES) {
        group.unusable ??= `member larger than ${MAX_MEMBER_BYTES / 2 ** 20} MB, too large for an image: ${name} (${((size ?? 0) / 2 ** 20).toFixed(0)} MB)`;
        entry.resume();
      } else if (IMAGE_EXTENSIONS.includes(ext) && !group.image) {
        group.image = { member: name, bytes: keepImages ? await readBody(entry) : undefined };
        if (!keepImages) entry.resume();
      } else if (ext === 'cls' && labels === 'required') {
        group.cls = (await readBody(entry)).toString('utf8');
      } else {
        entry.resume(); // other members (json, txt, ...) are not used
      }
    }
  } catch (err) {
    if (fetchError) throw fetchError;
    // The group being read when the error hit may be incomplete: it goes with the rest.
    yield { kind: 'skip', origin: shard, reason: `${shardProblem(streamError ?? (err as Error), gzipped)}; the rest of this shard is skipped` };
    return;
  } finally {
    input.destroy(); // stops the file read, the HTTP response or the command
  }
  if (group) yield finish(group);
}

/** A container error in words: what is wrong with the file, then the library's own message. */
function shardProblem(err: NodeJS.ErrnoException, gzipped: boolean): string {
  const detail = `(${err.message})`;
  if (err.code === 'EISDIR') return `it is a folder, not a tar file ${detail}`;
  if (err.code === 'EACCES') return `it cannot be read (permission denied)`;
  if (err.code?.startsWith('Z_') || /unexpected end of file/i.test(err.message)) {
    if (/unexpected end of file/i.test(err.message)) return `the gzip data ends early: the file is truncated ${detail}`;
    if (/incorrect header check|unknown compression/i.test(err.message)) return `it is named like a .tar.gz but is not gzip-compressed ${detail}`;
    return `the gzip data is corrupt ${detail}`;
  }
  if (/unexpected end of data/i.test(err.message)) return `the tar archive ends in the middle of a member: the file is truncated ${detail}`;
  if (/invalid tar header|checksum/i.test(err.message)) {
    return `${gzipped ? 'the decompressed data is' : 'it is'} not a tar archive, or a tar header in it is damaged ${detail}`;
  }
  return `unreadable ${detail}`;
}

function namedGzip(shard: string): boolean {
  if (shard.startsWith('pipe:')) return false; // a command has no file name: judged by content
  return /\.(tar\.gz|tgz)$/i.test(isRemoteShard(shard) ? shard.replace(/[?#].*$/, '') : shard);
}

async function* keepFetchError(bytes: AsyncGenerator<Buffer>, keep: (err: ShardFetchError) => void): AsyncGenerator<Buffer> {
  try {
    yield* bytes;
  } catch (err) {
    if (err instanceof ShardFetchError) keep(err);
    throw err;
  }
}

/** Reads the first two bytes (gzip's magic number 1f 8b) and hands back the whole stream. */
async function peekGzip(bytes: AsyncGenerator<Buffer>): Promise<{ gzip: boolean; chunks: AsyncGenerator<Buffer> }> {
  const first: Buffer[] = [];
  let length = 0;
  let ended = false;
  while (length < 2) {
    const r = await bytes.next();
    if (r.done) {
      ended = true;
      break;
    }
    first.push(r.value);
    length += r.value.length;
  }
  const start = Buffer.concat(first);
  async function* chunks(): AsyncGenerator<Buffer> {
    try {
      if (start.length > 0) yield start;
      if (!ended) yield* bytes;
    } finally {
      await bytes.return(undefined); // a reader that stops early stops the source
    }
  }
  return { gzip: start[0] === 0x1f && start[1] === 0x8b, chunks: chunks() };
}

async function readBody(entry: AsyncIterable<unknown>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of entry) chunks.push(chunk as Buffer);
  // Always copy: a chunk may be a view into a 64 KiB read buffer, which a sample held in the
  // shuffle buffer would otherwise keep alive.
  return Buffer.concat(chunks);
}


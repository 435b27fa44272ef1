/**
 * WebDataset tar shards (.tar, .tar.gz, .tgz) as a stream of EncodedSample.
 *
 * Shards are streamed (file -> gunzip -> tar-stream), one member body in memory at a time, so
 * shard size does not matter. Members are grouped by key (`<key>.<ext>`, key = name up to the
 * first dot of the basename, as in WebDataset); a sample is `<key>.jpg|jpeg|png|webp` plus
 * `<key>.cls` (class index as text).
 *
 * Stable index: a sample's index is its position among the valid samples when all shards are
 * read in sorted path order (0..N-1). In sorted order that is a running count. When the shard
 * order is shuffled, a shard's first index is the sum of the counts of the shards sorted before
 * it: those come from a counting pass over the shards (image bodies drained, not kept; about
 * 0.1 s per 5,000-sample shard here), done once per process and cached in memory by path, size and
 * mtime. No sidecar files, so read-only data works and counts never go stale. The pass uses the
 * very same grouping code as the read, so the two always agree, also for skipped samples (which
 * take no index) and truncated shards.
 *
 * Order, ranks and resume (shared with the other sources, see selectForRank):
 *   epoch order = shards in seeded order, samples through a bounded seeded shuffle buffer;
 *   rank r keeps the samples at positions p of the epoch order with p % worldSize == r
 *   (disjoint and complete; every rank computes the same order from the same seed/epoch);
 *   `start` skips the first `start` samples of this rank's stream (resume mid-epoch).
 *
 * Problems are skipped and reported through onSkip, never thrown: a sample without label or
 * image -> one report; a truncated tar or corrupt gzip -> the rest of that shard is lost, one
 * report naming the shard. Undecodable image bytes are not a container problem: they pass
 * through and the decode stage counts them.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as zlib from 'zlib';
import { pipeline } from 'stream';
import fg from 'fast-glob';
import * as tar from 'tar-stream';
import { Rng } from '../runtime/rng';
import type { EncodedSample } from './types';

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
}

export type OnSkip = (origin: string, reason: string) => void;

export interface TarShardsOptions extends SourceOptions {
  /** Paths or fast-glob patterns. */
  shards: string | string[];
  onSkip?: OnSkip;
}

export type TarShardsSource = AsyncIterable<EncodedSample> & { readonly shards: string[] };

export const IMAGE_EXTENSIONS = ['jpg', 'jpeg', 'png', 'webp'];
const DEFAULT_BUFFER = 1000;

export const defaultOnSkip: OnSkip = (origin, reason) => console.warn(`[source] skipped ${origin}: ${reason}`);

export function tarShards(opts: TarShardsOptions): TarShardsSource {
  const shards = resolveShards(opts.shards);
  const onSkip = opts.onSkip ?? defaultOnSkip;
  checkRank(opts); // fail now, not at the first read
  return {
    shards,
    [Symbol.asyncIterator]: () => {
      let samples = readAll(shards, opts.shuffle, onSkip);
      if (opts.shuffle) {
        const rng = new Rng(opts.shuffle.seed, opts.shuffle.epoch, 0x5b0f);
        samples = shuffleBuffer(samples, opts.shuffle.bufferSize ?? DEFAULT_BUFFER, rng);
      }
      return selectForRank(samples, opts)[Symbol.asyncIterator]();
    },
  };
}

/** Number of valid samples in the shards (a header-only pass, cached per process). */
export async function countSamples(shards: string | string[]): Promise<number> {
  let total = 0;
  for (const shard of resolveShards(shards)) total += await shardCount(shard);
  return total;
}

/** Paths/globs -> sorted, de-duplicated shard paths. Throws, naming the pattern, if none match. */
export function resolveShards(patterns: string | string[]): string[] {
  const list = Array.isArray(patterns) ? patterns : [patterns];
  const found = new Set<string>();
  for (const pattern of list) {
    // A literal existing path is taken as-is: file names may hold glob characters.
    const matches = isFile(pattern) ? [pattern] : fg.sync(pattern, { onlyFiles: true });
    if (matches.length === 0) throw new Error(`No tar shards match ${JSON.stringify(pattern)}`);
    for (const m of matches) found.add(path.resolve(m));
  }
  return [...found].sort();
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

async function* readAll(shards: string[], shuffle: ShuffleOptions | undefined, onSkip: OnSkip): AsyncGenerator<EncodedSample> {
  const order = shards.map((_, i) => i);
  if (shuffle) new Rng(shuffle.seed, shuffle.epoch, 0x5a4d).shuffle(order);
  let running = 0;
  for (const s of order) {
    // First index of shard s: in sorted order the running count; in shuffled order the counts
    // of the shards sorted before it (the counting pass), as it must not depend on the epoch.
    let index = shuffle ? await countBefore(shards, s) : running;
    for await (const item of readShard(shards[s], true)) {
      if (item.kind === 'skip') {
        onSkip(item.origin, item.reason);
        continue;
      }
      yield { index: index++, key: item.key, label: item.label, bytes: item.bytes!, origin: item.origin };
    }
    running = index;
  }
}

async function countBefore(shards: string[], s: number): Promise<number> {
  let total = 0;
  for (let i = 0; i < s; i++) total += await shardCount(shards[i]);
  return total;
}

const countCache = new Map<string, number>();

async function shardCount(shard: string): Promise<number> {
  const stat = fs.statSync(shard);
  const cacheKey = `${shard}\0${stat.size}\0${stat.mtimeMs}`;
  let count = countCache.get(cacheKey);
  if (count === undefined) {
    count = 0;
    for await (const item of readShard(shard, false)) if (item.kind === 'sample') count++;
    countCache.set(cacheKey, count);
  }
  return count;
}

type ShardItem =
  | { kind: 'sample'; key: string; label: number; bytes?: Buffer; origin: string }
  | { kind: 'skip'; origin: string; reason: string };

interface Group {
  key: string;
  image?: { member: string; bytes?: Buffer };
  cls?: string;
}

/**
 * One shard's samples in file order. keepImages=false drains image bodies unread (the counting
 * pass). A container error ends the shard with a single skip item.
 */
async function* readShard(shard: string, keepImages: boolean): AsyncGenerator<ShardItem> {
  const extract = tar.extract();
  const gzipped = /\.(tar\.gz|tgz)$/i.test(shard);
  const file = fs.createReadStream(shard);
  // pipeline() destroys the extractor with any read or gunzip error, which then surfaces
  // from the entry iterator below; the callback only has to exist.
  const sink = extract as unknown as NodeJS.WritableStream; // a streamx Writable
  const done = () => {};
  if (gzipped) pipeline(file, zlib.createGunzip(), sink, done);
  else pipeline(file, sink, done);

  let group: Group | undefined;
  const finish = (g: Group): ShardItem => {
    const origin = `${shard}:${g.image?.member ?? g.key}`;
    if (!g.image) return { kind: 'skip', origin, reason: 'no image member' };
    if (g.cls === undefined) return { kind: 'skip', origin, reason: 'missing label (.cls)' };
    if (!/^\d+$/.test(g.cls.trim())) return { kind: 'skip', origin, reason: `bad label ${JSON.stringify(g.cls)}` };
    return { kind: 'sample', key: g.key, label: Number(g.cls.trim()), bytes: g.image.bytes, origin };
  };

  try {
    for await (const entry of extract) {
      const name = entry.header.name;
      const base = path.posix.basename(name);
      const dot = base.indexOf('.');
      if (entry.header.type !== 'file' || dot <= 0) {
        entry.resume();
        continue;
      }
      const key = name.slice(0, name.length - base.length + dot);
      const ext = base.slice(dot + 1).toLowerCase();
      if (group && group.key !== key) {
        yield finish(group);
        group = undefined;
      }
      group ??= { key };
      if (IMAGE_EXTENSIONS.includes(ext) && !group.image) {
        group.image = { member: name, bytes: keepImages ? await readBody(entry) : undefined };
        if (!keepImages) entry.resume();
      } else if (ext === 'cls') {
        group.cls = (await readBody(entry)).toString('utf8');
      } else {
        entry.resume(); // other members (json, txt, ...) are not used
      }
    }
  } catch (err) {
    // The group being read when the error hit may be incomplete: it goes with the rest.
    yield { kind: 'skip', origin: shard, reason: `unreadable shard, rest of it skipped (${(err as Error).message})` };
    return;
  } finally {
    file.destroy();
  }
  if (group) yield finish(group);
}

async function readBody(entry: AsyncIterable<unknown>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of entry) chunks.push(chunk as Buffer);
  // Always copy: a chunk may be a view into a 64 KiB read buffer, which a sample held in the
  // shuffle buffer would otherwise keep alive.
  return Buffer.concat(chunks);
}

function isFile(p: string): boolean {
  try {
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

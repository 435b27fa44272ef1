/**
 * The counting pass's result for sources with http shards, kept on disk (.cache/shard-index
 * below the working directory, like the feature cache, or MIMREF_SHARD_INDEX_DIR): each epoch's data worker is a fresh
 * thread, and without it each would download every shard once more just to count it. An
 * entry is named by a hash of the read settings and of every shard's version (ETag,
 * Last-Modified, length; a local file's size and mtime), so a changed shard is a miss, never
 * stale counts. Checking the versions costs one one-byte request per shard.
 *
 * The cache is an optimisation only: an unreadable entry is counted again, an unwritable
 * folder is reported once and the counting goes on in memory.
 */
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { writeFileAtomic } from '../lib/atomic-file';

/** What a counting pass finds, in a form that survives JSON. */
export interface StoredIndex {
  /** Stable index of the first sample of each shard (sorted order). */
  firstIndex: number[];
  /** Per shard: keys of valid samples that an earlier shard (sorted order) has already. */
  crossDuplicates: string[][];
  total: number;
  problems: { origin: string; reason: string }[];
  /** Per shard: an http shard's version when counted. */
  versions: (string | null)[];
}

const FORMAT = 1;

export function shardIndexCacheDir(): string {
  return path.resolve(process.env.MIMREF_SHARD_INDEX_DIR || path.join('.cache', 'shard-index'));
}

export function indexCacheKey(parts: unknown): string {
  return crypto.createHash('sha256').update(JSON.stringify([FORMAT, parts])).digest('hex').slice(0, 40);
}

export function loadIndex(key: string): StoredIndex | undefined {
  const file = path.join(shardIndexCacheDir(), `${key}.json`);
  try {
    const stored = JSON.parse(fs.readFileSync(file, 'utf8')) as { format: number; index: StoredIndex };
    const index = stored.index;
    const sane = stored.format === FORMAT && Array.isArray(index.firstIndex) && Array.isArray(index.crossDuplicates) && index.crossDuplicates.length === index.firstIndex.length;
    return sane ? index : undefined;
  } catch {
    return undefined; // none yet, or unreadable: counted again
  }
}

let warned = false;

export function saveIndex(key: string, index: StoredIndex): void {
  try {
    writeFileAtomic(path.join(shardIndexCacheDir(), `${key}.json`), JSON.stringify({ format: FORMAT, index }));
  } catch (err) {
    if (!warned) console.warn(`[source] the shard counts cannot be kept in ${shardIndexCacheDir()} (${(err as Error).message}): remote shards will be counted again by each data worker`);
    warned = true;
  }
}

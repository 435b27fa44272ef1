/**
 * The validation split: images carved from the TRAINING data (never the test set) on which
 * every choice is made: the block a summary leads with, the block of low-shot and k-means,
 * a refine default. Test is measured, not chosen on.
 *   - bundled data: data/cifar10-mini/val-000000.tar.gz, 2,000 train images (200 per class)
 *     disjoint from the bundled train (scripts/make-bundled-data.ts);
 *   - the full shared shards: the same 2,000 images are held out; scripts/make-cifar10-splits.ts
 *     writes the train shards without them (38,000 images) and the val shard beside them.
 * A pipeline's validation split defaults to the `val-*` shards beside its train shards, so the
 * bundled default and the split folder need no flag. A split that shares a sample key with the
 * train or test images is refused: a number measured on it would not be a validation number.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import fg from 'fast-glob';
import { openSource } from '../sources/open';

const SHARD = /\.(tar|tar\.gz|tgz)$/i;

/**
 * `<dir>/val-*` when the train spec names tar shards in `<dir>` and `val-*` shards lie beside
 * them; undefined otherwise (no validation split known for that data).
 */
export function defaultValidation(trainSpec: string): string | undefined {
  if (fs.existsSync(trainSpec) && fs.statSync(trainSpec).isDirectory()) return undefined;
  const files = fs.existsSync(trainSpec) ? [trainSpec] : fg.sync(trainSpec, { onlyFiles: true });
  const shards = files.filter((f) => SHARD.test(f));
  if (shards.length === 0) return undefined;
  const dir = path.dirname(shards[0]);
  const val = fg.sync(`${fg.escapePath(dir)}/val-*`, { onlyFiles: true }).filter((f) => SHARD.test(f));
  // Never the train shards themselves (a train spec of `dir/*` would match the val shards too).
  if (val.length === 0 || val.some((f) => shards.some((s) => path.resolve(s) === path.resolve(f)))) return undefined;
  return path.join(dir, 'val-*');
}

/** Keys of every sample of a source, read once per process (bodies are read past, not decoded). */
const keyCache = new Map<string, Promise<Set<string>>>();

export function sourceKeys(spec: string): Promise<Set<string>> {
  let keys = keyCache.get(spec);
  if (!keys) {
    keys = (async () => {
      const out = new Set<string>();
      for await (const s of openSource(spec, { onSkip: () => {} }).samples) out.add(s.key);
      return out;
    })();
    keyCache.set(spec, keys);
    keys.catch(() => keyCache.delete(spec));
  }
  return keys;
}

/**
 * Throws, naming both sources and an example key, where the validation split shares a sample
 * key with the train or the test images.
 */
export async function checkValidationDisjoint(val: string, others: { name: string; spec: string }[]): Promise<void> {
  const valKeys = await sourceKeys(val);
  for (const other of others) {
    const keys = await sourceKeys(other.spec);
    let shared = 0;
    let example: string | undefined;
    for (const k of valKeys) {
      if (keys.has(k)) {
        shared++;
        example ??= k;
      }
    }
    if (shared > 0) {
      throw new Error(
        `validation split ${val} overlaps the ${other.name} images ${other.spec}: ${shared} sample key${shared === 1 ? '' : 's'} in both ` +
          `(e.g. '${example}'); a validation split must be training images held out from training and disjoint from test`,
      );
    }
  }
}

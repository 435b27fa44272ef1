/**
 * On-disk cache of extracted features. Extraction (one backbone pass over every image) is the
 * slow part of every evaluation, and the same (model, data, transform, blocks, pooling) is
 * evaluated again and again (another task, another probe setting, a compare run), so each
 * FeatureSet is stored once as safetensors under a hash of everything that determines it:
 *   - the model: the checkpoint file's content hash (checkpointKey) or 'random-init:'+preset+seed,
 *     plus its ViT config;
 *   - the data: the source spec and its content fingerprint (lib/fingerprint.ts: a SHA-256 of
 *     every byte of every file below an image folder, or of every shard / CIFAR file the spec
 *     names plus the class list beside them), the class count, the sample limit;
 *   - the eval transform (image size, resize ratio), the blocks and the pooling.
 * So a shard rewritten with other labels but its size and mtime kept misses, as does a
 * checkpoint overwritten in place. A source with remote shards (http(s)://, pipe:) cannot be
 * fingerprinted without reading it whole: its features are extracted every time, and the log
 * says so.
 * Batch size and progress callbacks do not change the features and are not part of the key.
 * The file holds `features.<block>` [count, dim] per block, `labels`, `indices`, and the key
 * itself as JSON metadata (checked on read, so a hash collision or a stale file can never be
 * served). It is written atomically (writeSafetensors: temp file + rename); a file that
 * cannot be read back, or that holds a non-finite feature, is reported and extracted again.
 * Beside it, `<hash>.source.json` under the hash of the key without the data's content
 * remembers the data's fingerprint, so when a data set changes (files removed, moved between
 * classes, a shard rewritten) the log names what changed instead of silently missing.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { dataFingerprint, DataFingerprint, describeDataChange, fileHashSync, isRemoteEntry } from '../lib/fingerprint';
import { readSafetensors, writeSafetensors, TensorToWrite } from '../models/safetensors';
import { VisionTransformer } from '../models/vit';
import { resolveShards } from '../sources/tar-shards';
import { extractFeatures, ExtractOptions, FeatureSet } from './extract-features';
import { firstNonFinite } from './features';
import { writeFileAtomic } from './report';
import { outDirProblem } from '../runtime/out-dir';

export const DEFAULT_CACHE_DIR = '.cache/features';

/** Bump when the stored layout or the extraction itself changes: old entries then miss. */
const CACHE_VERSION = 3;

/** Hits and extractions in this process (progress lines, and the spec's "no re-extraction" check). */
export const featureCacheStats = { hits: 0, misses: 0 };

/**
 * The model part of the key for a checkpoint: the SHA-256 of its bytes (lib/fingerprint.ts), so
 * a moved or copied file still hits and a file overwritten in place misses.
 */
export function checkpointKey(file: string): string {
  return 'sha256:' + fileHashSync(file).hash;
}

export function randomInitKey(preset: string, seed: number): string {
  return `random-init:${preset}:${seed}`;
}

/** Files listed in a source record (about 200 bytes each): beyond, only the digest is kept. */
const MAX_RECORDED_FILES = 100_000;

/** Class lists the sources read beside their data files (sources/open.ts, sources/cifar-binary.ts). */
const CLASS_LISTS = ['classes.txt', 'batches.meta.txt', 'fine_label_names.txt', 'coarse_label_names.txt'];

/**
 * The files a source spec reads: an image folder (fingerprinted whole: files removed, added or
 * moved between class folders change it), or the shards / CIFAR files it names plus the class
 * lists beside them; remote shards as written. Empty where the spec names nothing (opening the
 * source then says so, naming it).
 */
export function sourceEntries(spec: string): string[] {
  if (fs.statSync(spec, { throwIfNoEntry: false })?.isDirectory()) return [path.resolve(spec)];
  let named: string[];
  try {
    named = resolveShards(spec);
  } catch {
    return [];
  }
  const dirs = new Set(named.filter((f) => !isRemoteEntry(f)).map((f) => path.dirname(f)));
  const lists = [...dirs].flatMap((dir) => CLASS_LISTS.map((name) => path.join(dir, name)).filter((f) => fs.existsSync(f)));
  return [...named, ...lists];
}

/** The content fingerprint of a source spec's files (see sourceEntries). */
export function sourceFingerprint(spec: string): Promise<DataFingerprint> {
  return dataFingerprint(sourceEntries(spec));
}

export function featureCacheKey(
  model: VisionTransformer,
  modelKey: string,
  opts: ExtractOptions,
  data: DataFingerprint,
): { key: string; hash: string; sourceHash: string } {
  const parts = {
    version: CACHE_VERSION,
    model: modelKey,
    vit: model.cfg,
    source: opts.source,
    numClasses: opts.numClasses ?? null,
    limit: opts.limit ?? null,
    transform: { kind: 'eval', size: model.cfg.imgSize, resizeRatio: opts.resizeRatio ?? 1 },
    blocks: opts.blocks,
    pooling: opts.pooling ?? 'cls',
  };
  const key = JSON.stringify({ ...parts, data: data.digest });
  const digest = (text: string) => crypto.createHash('sha256').update(text).digest('hex').slice(0, 32);
  return { key, hash: digest(key), sourceHash: digest(JSON.stringify(parts)) };
}

/** Reads a cache file, checking it is exactly what `key` describes; throws otherwise. */
function readCached(file: string, key: string): FeatureSet {
  const { tensors, metadata } = readSafetensors(file);
  if (metadata.key !== key) throw new Error('its key does not match');
  const { blocks, pooling } = JSON.parse(key) as { blocks: number[]; pooling: FeatureSet['pooling'] };
  const labels = tensors.get('labels');
  const indices = tensors.get('indices');
  if (!(labels?.data instanceof Int32Array) || !(indices?.data instanceof Int32Array)) throw new Error('labels or indices missing or not int32');
  const count = labels.data.length;
  const features = blocks.map((b) => {
    const t = tensors.get(`features.${b}`);
    if (!(t?.data instanceof Float32Array) || t.shape.length !== 2 || t.shape[0] !== count) throw new Error(`features.${b} missing or of the wrong shape`);
    return t.data;
  });
  const dim = tensors.get(`features.${blocks[0]}`)!.shape[1];
  if (indices.data.length !== count || features.some((f) => f.length !== count * dim)) throw new Error('sizes disagree');
  // written by a version that did not check: extracting again names the model and the block
  const broken = features.findIndex((f) => firstNonFinite(f) >= 0);
  if (broken >= 0) throw new Error(`features.${blocks[broken]} holds NaN or infinity`);
  return { blocks, pooling, features, dim, count, labels: labels.data, indices: indices.data };
}

/**
 * The features `extractFeatures(model, opts)` would return, from the cache when it holds
 * them, else extracted and stored. `modelKey`: checkpointKey(file) or randomInitKey(...).
 */
export async function cachedFeatures(
  model: VisionTransformer,
  modelKey: string,
  opts: ExtractOptions,
  cacheDir = DEFAULT_CACHE_DIR,
): Promise<FeatureSet & { cached: boolean }> {
  const data = await sourceFingerprint(opts.source);
  // nothing resolved: the source's own opening names the problem; a key over no files would never change
  if (data.files.length === 0 && data.skipped.length === 0) return { ...(await extractFeatures(model, opts)), cached: false };
  if (data.skipped.length > 0) {
    console.warn(`[feature-cache] ${opts.source}: not cached (${data.skipped.length} remote shard${data.skipped.length === 1 ? '' : 's'}, e.g. ${data.skipped[0].entry}, cannot be fingerprinted without reading them); extracting`);
    return { ...(await extractFeatures(model, opts)), cached: false };
  }
  const { key, hash, sourceHash } = featureCacheKey(model, modelKey, opts, data);
  const file = path.join(cacheDir, `${hash}.safetensors`);
  const sourceFile = path.join(cacheDir, `${sourceHash}.source.json`);
  if (fs.existsSync(file)) {
    try {
      const set = readCached(file, key);
      featureCacheStats.hits++;
      return { ...set, cached: true };
    } catch (err) {
      // Read errors already name the file; a key mismatch does not.
      const why = (err as Error).message.replace(`${file}: `, '');
      console.warn(`[feature-cache] ${file} is unusable (${why}); extracting again`);
    }
  }
  const before = readSourceRecord(sourceFile);
  const change =
    before && before.digest !== data.digest && before.files.length === 0 && before.skipped.length === 0
      ? `content fingerprint ${before.digest.slice(0, 12)} then, ${data.digest.slice(0, 12)} now; too many files to have recorded which changed`
      : before && describeDataChange(before, data);
  if (change) console.warn(`[feature-cache] ${opts.source} changed since its features were cached (${change}): extracting again`);
  const set = await extractFeatures(model, opts);
  featureCacheStats.misses++;
  const tensors: Record<string, TensorToWrite> = {
    labels: { shape: [set.count], data: set.labels },
    indices: { shape: [set.count], data: set.indices },
  };
  set.blocks.forEach((b, i) => (tensors[`features.${b}`] = { shape: [set.count, set.dim], data: set.features[i] }));
  try {
    // a cache folder on a pseudo file system would hang mkdir; checked like any output folder
    const problem = outDirProblem(cacheDir);
    if (problem) throw new Error(`${cacheDir}: ${problem}`);
    fs.mkdirSync(cacheDir, { recursive: true });
    writeSafetensors(file, tensors, { key });
    // the file list names what changed next time; an image folder of millions of files keeps only the digest
    writeFileAtomic(sourceFile, JSON.stringify(data.files.length <= MAX_RECORDED_FILES ? data : { ...data, files: [] }));
  } catch (err) {
    // A cache that cannot be written (read-only disk, disk full) costs time, not results.
    console.warn(`[feature-cache] could not write ${file}: ${(err as Error).message}`);
  }
  return { ...set, cached: false };
}

function readSourceRecord(file: string): DataFingerprint | undefined {
  try {
    const record = JSON.parse(fs.readFileSync(file, 'utf8')) as DataFingerprint;
    return typeof record.digest === 'string' && Array.isArray(record.files) && Array.isArray(record.skipped) ? record : undefined;
  } catch {
    return undefined; // none yet, or unreadable: nothing to compare with
  }
}

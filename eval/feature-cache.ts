/**
 * On-disk cache of extracted features. Extraction (one backbone pass over every image) is the
 * slow part of every evaluation, and the same (model, data, transform, blocks, pooling) is
 * evaluated again and again (another task, another probe setting, a compare run), so each
 * FeatureSet is stored once as safetensors under a hash of everything that determines it:
 *   - the model: the checkpoint file's content hash (checkpointKey) or 'random-init:'+preset+seed,
 *     plus its ViT config;
 *   - the data: the source spec, its content (every file below an image folder, or every file a
 *     shard/CIFAR pattern matches, with path, size and mtime, hashed), the class count, the
 *     sample limit;
 *   - the eval transform (image size, resize ratio), the blocks and the pooling.
 * Batch size and progress callbacks do not change the features and are not part of the key.
 * The file holds `features.<block>` [count, dim] per block, `labels`, `indices`, and the key
 * itself as JSON metadata (checked on read, so a hash collision or a stale file can never be
 * served). It is written atomically (writeSafetensors: temp file + rename); a file that
 * cannot be read back is reported and extracted again. Beside it, `<hash>.source.json` under
 * the hash of the key without the data's content remembers what the data looked like, so when
 * a data set changes (files removed, moved between classes, a shard regenerated) the log says
 * why the features are extracted again instead of silently missing.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import fg from 'fast-glob';
import { readSafetensors, writeSafetensors, TensorToWrite } from '../models/safetensors';
import { VisionTransformer } from '../models/vit';
import { extractFeatures, ExtractOptions, FeatureSet } from './extract-features';
import { writeFileAtomic } from './report';
import { outDirProblem } from '../runtime/out-dir';

export const DEFAULT_CACHE_DIR = '.cache/features';

/** Bump when the stored layout or the extraction itself changes: old entries then miss. */
const CACHE_VERSION = 2;

/** Hits and extractions in this process (progress lines, and the spec's "no re-extraction" check). */
export const featureCacheStats = { hits: 0, misses: 0 };

/** The model part of the key for a checkpoint: the hash of its bytes, so a moved or copied file still hits. */
export function checkpointKey(file: string): string {
  // Read in chunks: a ViT-H checkpoint (2.5 GB) is larger than one Node buffer may be.
  const hash = crypto.createHash('sha256');
  const chunk = Buffer.alloc(1 << 24);
  const fd = fs.openSync(file, 'r');
  try {
    for (let n; (n = fs.readSync(fd, chunk, 0, chunk.length, null)) > 0; ) hash.update(chunk.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
  return 'sha256:' + hash.digest('hex');
}

export function randomInitKey(preset: string, seed: number): string {
  return `random-init:${preset}:${seed}`;
}

/** What a source's files looked like: a hash of their paths, sizes and mtimes, and a summary for the log. */
export interface SourceFingerprint {
  hash: string;
  files: number;
  bytes: number;
}

/**
 * Path, size and mtime of every file of a source: everything below an image folder (so files
 * removed, added or moved between class folders change it), or every file a shard / CIFAR
 * pattern matches (a regenerated shard changes it) — without hashing gigabytes of images.
 */
export function sourceFingerprint(spec: string): SourceFingerprint {
  const isDir = fs.existsSync(spec) && fs.statSync(spec).isDirectory();
  const root = isDir ? path.resolve(spec) : '';
  const files = isDir
    ? fg.sync('**/*', { cwd: root, onlyFiles: true, dot: true }).map((f) => path.join(root, f))
    : fs.existsSync(spec)
      ? [path.resolve(spec)]
      : fg.sync(spec, { onlyFiles: true }).map((f) => path.resolve(f));
  const hash = crypto.createHash('sha256');
  let bytes = 0;
  for (const f of files.sort()) {
    const st = fs.statSync(f);
    bytes += st.size;
    hash.update(`${f}\0${st.size}\0${Math.round(st.mtimeMs)}\n`);
  }
  return { hash: hash.digest('hex'), files: files.length, bytes };
}

export function featureCacheKey(
  model: VisionTransformer,
  modelKey: string,
  opts: ExtractOptions,
  data: SourceFingerprint = sourceFingerprint(opts.source),
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
  const key = JSON.stringify({ ...parts, data: data.hash });
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
  const data = sourceFingerprint(opts.source);
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
  if (before && before.hash !== data.hash) {
    console.warn(
      `[feature-cache] ${opts.source} changed since its features were cached (${describe(before)} then, ${describe(data)} now): extracting again`,
    );
  }
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
    writeFileAtomic(sourceFile, JSON.stringify(data));
  } catch (err) {
    // A cache that cannot be written (read-only disk, disk full) costs time, not results.
    console.warn(`[feature-cache] could not write ${file}: ${(err as Error).message}`);
  }
  return { ...set, cached: false };
}

function readSourceRecord(file: string): SourceFingerprint | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as SourceFingerprint;
  } catch {
    return undefined; // none yet, or unreadable: nothing to compare with
  }
}

const describe = (d: SourceFingerprint) => `${d.files} files, ${(d.bytes / 2 ** 20).toFixed(1)} MB, content hash ${d.hash.slice(0, 8)}`;

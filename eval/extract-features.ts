/**
 * The feature-extraction stage every evaluation shares: the eval transform (resize + centre
 * crop + normalise), one backbone forward per batch returning the chosen blocks, and the CLS
 * token or the mean of the patch tokens of each, streamed in batches with progress. Features
 * are read back with one asynchronous `await t.data()` per batch (never dataSync), so the
 * extraction runs on WebGPU as on wasm. Every batch's features are checked on the host once
 * read: a NaN or an infinity (a checkpoint whose weights overflow float32) is an error naming
 * the model, the block, the data and where the activations broke (eval/non-finite.ts), never
 * a feature set that every evaluation would turn into a chance-level number.
 */
import * as tf from '@tensorflow/tfjs';
import { poolTokens, Pooling, VisionTransformer } from '../models/vit';
import { batchStream, SkipLog } from '../datapath/batches';
import { firstNonFinite } from './features';
import { describeOverflow } from './non-finite';

/** Where eval's callers have always found it. */
export type { Pooling };

export interface FeatureSet {
  blocks: number[];
  pooling: Pooling;
  /** Per block: [count, dim] row-major. */
  features: Float32Array[];
  dim: number;
  count: number;
  labels: Int32Array;
  indices: Int32Array;
}

export interface ExtractOptions {
  source: string;
  blocks: number[];
  pooling?: Pooling;
  batchSize?: number;
  /** Use only the first `limit` samples of the source (in its stored order). */
  limit?: number;
  /** Class count of shards without classes.txt (--num-classes): labels outside it are skipped. */
  numClasses?: number;
  /** Resize ratio of the eval transform (resize to size / ratio, then centre crop). */
  resizeRatio?: number;
  onProgress?: (done: number) => void;
  /** Names the model in errors: the checkpoint file or the run's label (default 'the model'). */
  model?: string;
}

export async function extractFeatures(model: VisionTransformer, opts: ExtractOptions): Promise<FeatureSet> {
  const pooling = opts.pooling ?? 'cls';
  const batchSize = opts.batchSize ?? 128;
  const size = model.cfg.imgSize;
  const d = model.cfg.embedDim;
  const limit = opts.limit ?? Infinity;
  const perBlock: Float32Array[][] = opts.blocks.map(() => []);
  const labels: number[] = [];
  const indices: number[] = [];
  const skips = new SkipLog();
  const batches = batchStream({
    source: opts.source,
    numClasses: opts.numClasses,
    transform: { kind: 'eval', eval: { size, resizeRatio: opts.resizeRatio ?? 1 } },
    batchSize,
    dropLast: false,
    skips,
  });
  let count = 0;
  for await (const b of batches) {
    const n = Math.min(b.indices.length, limit - count);
    const bs = b.indices.length;
    // Every block's pooled features as one [blocks, B, D] tensor: one asynchronous read per batch.
    const pooled = tf.tidy(() => {
      const images = tf.tensor4d(b.views[0], [bs, size, size, 3]);
      return tf.stack(model.getIntermediateLayers(images, { blocks: opts.blocks }).map((t) => poolTokens(t, pooling)));
    });
    let values: Float32Array;
    try {
      values = (await pooled.data()) as Float32Array;
    } finally {
      pooled.dispose();
    }
    await checkFinite(model, opts, values, b.views[0], bs, n, count);
    perBlock.forEach((chunks, i) => chunks.push(values.slice(i * bs * d, i * bs * d + n * d)));
    for (let i = 0; i < n; i++) {
      labels.push(b.labels[i]);
      indices.push(b.indices[i]);
    }
    count += n;
    opts.onProgress?.(count);
    if (count >= limit) break;
  }
  await batches.return();
  if (skips.total > 0) console.warn(`[data] ${opts.source}: skipped ${skips.total} samples (${skips.summary()})`);
  if (count === 0) throw new Error(`${opts.source}: no images could be read${skips.total > 0 ? ` (${skips.summary()})` : ''}`);
  return {
    blocks: opts.blocks,
    pooling,
    features: perBlock.map((chunks) => concat(chunks, count * d)),
    dim: d,
    count,
    labels: Int32Array.from(labels),
    indices: Int32Array.from(indices),
  };
}

/**
 * Throws where a block's features of this batch ([blocks, bs, D] in `values`, the first n rows
 * used) hold a NaN or an infinity, naming the model, the earliest such block, the data, and
 * where the activations broke (the batch is run again only then).
 */
async function checkFinite(model: VisionTransformer, opts: ExtractOptions, values: Float32Array, pixels: Float32Array, bs: number, n: number, before: number): Promise<void> {
  const d = model.cfg.embedDim;
  const order = opts.blocks.map((b, i) => [b, i]).sort((x, y) => x[0] - y[0]);
  for (const [block, i] of order) {
    const start = i * bs * d;
    const first = firstNonFinite(values, start, start + n * d);
    if (first < 0) continue;
    let rows = 0;
    for (let r = 0; r < n; r++) if (firstNonFinite(values, start + r * d, start + (r + 1) * d) >= 0) rows++;
    const size = model.cfg.imgSize;
    const images = tf.tensor4d(pixels, [bs, size, size, 3]);
    let why: string;
    try {
      why = await describeOverflow(model, images, block);
    } finally {
      images.dispose();
    }
    throw new Error(
      `${opts.model ?? 'the model'}: the features of block ${block} are not finite (NaN or infinity) for ${rows} of the ${n} images ` +
        `${before + 1}..${before + n} of ${opts.source}; ${why}. Its evaluation would be meaningless`,
    );
  }
}

function concat(chunks: Float32Array[], length: number): Float32Array {
  const out = new Float32Array(length);
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.length;
  }
  return out;
}

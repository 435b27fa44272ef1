/**
 * The nearest-neighbour memory bank of MIM-Refiner (Alkin et al. 2024, arXiv 2402.10093),
 * after NNCLR's support set (Dwibedi et al. 2021): a FIFO of projected vectors with the dataset
 * index (and, for monitoring only, the label) of each. Lookup masks entries of the same
 * sample, takes the top-k by cosine similarity and picks one uniformly at random, all as
 * device ops: a step never waits on a read (which would stall a GPU).
 * Entries are stored L2-normalised: the NNA loss normalises the swapped vector anyway, and
 * lookups become one plain matMul. Slots not yet filled (index -1) are masked like the sample's
 * own entries, so a short run never aligns to the random vectors the queue starts with.
 */
import * as tf from '@tensorflow/tfjs';
import { Rng } from '../runtime/rng';
import { HostTensor } from './params';

export interface NnLookup {
  /** The picked queue vectors [B, P] (normalised; no gradient). */
  swapped: tf.Tensor2D;
  /** Mean cosine similarity to the picked neighbour (device scalar). */
  similarity: tf.Scalar;
  /** Share of picked neighbours with the sample's label (device scalar; NaN without labels). */
  accuracy: tf.Scalar;
}

/** Added to the similarity of empty entries: they rank below every filled one (cosines >= -1). */
const EMPTY_BIAS = -2;
/** Similarity given to a sample's own entries: below every other entry, empty ones included. */
const SELF_MATCH = -3;

export class NnQueue {
  private vectors: tf.Tensor2D;
  /** Labels of the entries [Q] on the device, for the NN accuracy without a read. */
  private entryLabels: tf.Tensor1D;
  /** 0 for filled entries, EMPTY_BIAS for empty ones [Q]: the bias of the similarity matMul. */
  private emptyBias: tf.Tensor1D;
  /** Host copies of the entries' sample indices and labels: the self-match mask needs no read. */
  private readonly indices: Int32Array;
  private readonly labels: Int32Array;
  private pointer = 0;

  constructor(readonly size: number, readonly dim: number, seed: number) {
    // Random unit vectors with index -1 until real entries arrive, as the reference's random init.
    this.vectors = tf.tidy(() => {
      const r = tf.randomNormal([size, dim], 0, 1, 'float32', seed);
      return tf.div(r, tf.norm(r, 2, 1, true)) as tf.Tensor2D;
    });
    this.indices = new Int32Array(size).fill(-1);
    this.labels = new Int32Array(size).fill(-1);
    this.entryLabels = tf.fill([size], -1, 'int32') as tf.Tensor1D;
    this.emptyBias = tf.fill([size], EMPTY_BIAS) as tf.Tensor1D;
  }

  /**
   * Nearest neighbours of projections z [B, P] (not yet normalised) of samples `sampleIndices`:
   * all on the device, nothing read back. Entries of the same sample are found on the host
   * (which keeps every entry's sample index) and scattered into the similarities as SELF_MATCH;
   * empty entries rank below filled ones through the matMul's bias; top-k runs on the device
   * and the rng picks one of the k per row.
   */
  lookup(z: tf.Tensor2D, sampleIndices: Int32Array, labels: Int32Array, topK: number, rng: Rng): NnLookup {
    const b = z.shape[0];
    const k = Math.min(topK, this.size);
    const selfMatches: number[] = [];
    for (let i = 0; i < b; i++) {
      const sample = sampleIndices[i];
      for (let q = 0; q < this.size; q++) if (this.indices[q] === sample) selfMatches.push(i, q);
    }
    // row i takes the j-th of its k nearest: flat position i * k + j of the top-k results
    const picks = Int32Array.from({ length: b }, (_, i) => i * k + rng.int(k));
    const labelled = labels.length > 0 && labels[0] >= 0;
    return tf.tidy(() => {
      const zn = tf.div(z, tf.maximum(tf.norm(z, 2, 1, true), 1e-12));
      let sims = tf.fused.matMul({ a: zn as tf.Tensor2D, b: this.vectors, transposeB: true, bias: this.emptyBias });
      if (selfMatches.length > 0) {
        const at = tf.tensor2d(selfMatches, [selfMatches.length / 2, 2], 'int32');
        sims = tf.tensorScatterUpdate(sims, at, tf.fill([selfMatches.length / 2], SELF_MATCH)) as tf.Tensor2D;
      }
      let slots: tf.Tensor1D;
      let pickedSims: tf.Tensor1D;
      if (k === 1) {
        // the nearest alone: argMax (first index on ties, as top-k) is a single pass, top-k sorts
        slots = tf.argMax(sims, 1) as tf.Tensor1D;
        pickedSims = tf.max(sims, 1) as tf.Tensor1D;
      } else {
        const top = tf.topk(sims, k);
        const flatPicks = tf.tensor1d(picks, 'int32');
        slots = tf.gather(tf.reshape(top.indices, [b * k]), flatPicks) as tf.Tensor1D;
        pickedSims = tf.gather(tf.reshape(top.values, [b * k]), flatPicks) as tf.Tensor1D;
      }
      const swapped = tf.gather(this.vectors, slots) as tf.Tensor2D;
      // a masked entry picked (fewer than k others in the queue yet) counts as similarity -1, the lowest cosine
      const similarity = tf.mean(tf.maximum(pickedSims, -1)) as tf.Scalar;
      const accuracy = labelled
        ? (tf.mean(tf.cast(tf.equal(tf.gather(this.entryLabels, slots), tf.tensor1d(labels, 'int32')), 'float32')) as tf.Scalar)
        : tf.scalar(NaN);
      return { swapped, similarity, accuracy };
    });
  }

  /** Enqueues z [B, P] (normalised here), overwriting the oldest entries; reads nothing back. */
  push(z: tf.Tensor2D, sampleIndices: Int32Array, labels: Int32Array): void {
    const b = Math.min(z.shape[0], this.size);
    const slots = new Int32Array(b);
    const entryLabels = new Int32Array(b);
    for (let i = 0; i < b; i++) {
      slots[i] = (this.pointer + i) % this.size;
      this.indices[slots[i]] = sampleIndices[i];
      this.labels[slots[i]] = entryLabels[i] = labels[i] ?? -1;
    }
    this.pointer = (this.pointer + b) % this.size;
    const [vectors, labelsOnDevice, emptyBias] = tf.tidy(() => {
      const at = tf.tensor2d(slots, [b, 1], 'int32');
      const rows = tf.slice(z, [0, 0], [b, this.dim]);
      const zn = tf.div(rows, tf.maximum(tf.norm(rows, 2, 1, true), 1e-12));
      return [
        tf.tensorScatterUpdate(this.vectors, at, zn) as tf.Tensor2D,
        tf.tensorScatterUpdate(this.entryLabels, at, tf.tensor1d(entryLabels, 'int32')) as tf.Tensor1D,
        tf.tensorScatterUpdate(this.emptyBias, at, tf.zeros([b])) as tf.Tensor1D,
      ] as const;
    });
    tf.dispose([this.vectors, this.entryLabels, this.emptyBias]);
    // kept: the queue's state outlives any tidy scope push() is called in
    this.vectors = tf.keep(vectors);
    this.entryLabels = tf.keep(labelsOnDevice);
    this.emptyBias = tf.keep(emptyBias);
  }

  async exportState(prefix: string): Promise<Record<string, HostTensor | { shape: number[]; data: Int32Array }>> {
    return {
      [`${prefix}.vectors`]: { shape: [this.size, this.dim], data: (await this.vectors.data()) as Float32Array },
      [`${prefix}.indices`]: { shape: [this.size], data: Int32Array.from(this.indices) },
      [`${prefix}.labels`]: { shape: [this.size], data: Int32Array.from(this.labels) },
      [`${prefix}.pointer`]: { shape: [1], data: Int32Array.of(this.pointer) },
    };
  }

  importState(get: (key: string) => { shape: number[]; data: Float32Array | Int32Array } | undefined, prefix: string, file: string): void {
    const need = (key: string, shape: number[]) => {
      const t = get(`${prefix}.${key}`);
      if (!t || t.shape.join(',') !== shape.join(',')) throw new Error(`${file}: queue state ${prefix}.${key} missing or not of shape [${shape}]`);
      return t.data;
    };
    const vectors = need('vectors', [this.size, this.dim]);
    const indices = need('indices', [this.size]);
    const labels = need('labels', [this.size]);
    const pointer = need('pointer', [1]);
    tf.dispose([this.vectors, this.entryLabels, this.emptyBias]);
    this.vectors = tf.tensor2d(Float32Array.from(vectors), [this.size, this.dim]);
    this.indices.set(indices);
    this.labels.set(labels);
    this.pointer = pointer[0];
    this.entryLabels = tf.tensor1d(Int32Array.from(labels), 'int32');
    this.emptyBias = tf.tensor1d(Float32Array.from(this.indices, (i) => (i === -1 ? EMPTY_BIAS : 0)));
  }

  dispose(): void {
    tf.dispose([this.vectors, this.entryLabels, this.emptyBias]);
  }
}

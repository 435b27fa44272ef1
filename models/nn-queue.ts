/**
 * The nearest-neighbour memory bank of MIM-Refiner (Alkin et al. 2024, arXiv 2402.10093),
 * after NNCLR's support set (Dwibedi et al. 2021): a FIFO of projected vectors with the dataset
 * index (and, for monitoring only, the label) of each. Lookup masks entries of the same
 * sample, takes the top-k by cosine similarity and picks one uniformly at random.
 * Entries are stored L2-normalised: the NNA loss normalises the swapped vector anyway, and
 * lookups become one plain matMul. Slots not yet filled (index -1) are masked like the sample's
 * own entries, so a short run never aligns to the random vectors the queue starts with.
 */
import * as tf from '@tensorflow/tfjs';
import { Rng } from '../lib/rng';
import { HostTensor } from './params';

export interface NnLookup {
  /** The picked queue vectors [B, P] (normalised; no gradient). */
  swapped: tf.Tensor2D;
  /** Mean cosine similarity to the picked neighbour. */
  similarity: tf.Scalar;
  /** Share of picked neighbours with the sample's label (NaN without labels). */
  accuracy: tf.Scalar;
}

export class NnQueue {
  private vectors: tf.Tensor2D;
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
  }

  /**
   * Nearest neighbours of projections z [B, P] (not yet normalised) of samples `sampleIndices`.
   * Nothing is read from the device: the mask of each sample's own (and unfilled) entries comes
   * from the host-side entry indices, top-k runs on the device, and the random pick among the
   * top k is drawn on the host.
   */
  lookup(z: tf.Tensor2D, sampleIndices: Int32Array, labels: Int32Array, topK: number, rng: Rng): NnLookup {
    const b = z.shape[0];
    const q = this.size;
    const k = Math.min(topK, q);
    // masked entries count as similarity -1 (the lowest a cosine reaches): the unfilled ones
    // through a per-entry factor (the same for every row), the few entries of a row's own
    // sample one by one
    const filled = new Float32Array(q);
    const rowOf = new Map<number, number[]>();
    sampleIndices.forEach((s, i) => rowOf.set(s, [...(rowOf.get(s) ?? []), i]));
    const own: number[] = [];
    for (let e = 0; e < q; e++) {
      const idx = this.indices[e];
      if (idx === -1) continue;
      filled[e] = 1;
      for (const i of rowOf.get(idx) ?? []) own.push(i, e);
    }
    // the pick among the top k of row i, as a position in the flattened [B, k] top-k result
    const picks = Int32Array.from({ length: b }, (_, i) => i * k + rng.int(k));
    const labelled = labels.length > 0 && labels[0] >= 0;
    return tf.tidy(() => {
      // [Q, P] @ [P, B] keeps the big operand in the plain-matMul layout
      const simsT = tf.matMul(this.vectors, tf.transpose(tf.div(z, tf.maximum(tf.norm(z, 2, 1, true), 1e-12))));
      // s * 1 + (-1) * 0 = s and s * 0 + (-1) * 1 = -1, exactly
      const keep = tf.tensor2d(filled, [1, q]);
      let sims = tf.add(tf.mul(tf.transpose(simsT), keep), tf.sub(keep, 1)) as tf.Tensor2D;
      if (own.length > 0) sims = tf.tensorScatterUpdate(sims, tf.tensor2d(own, [own.length / 2, 2], 'int32'), tf.fill([own.length / 2], -1));
      // k = 1 (the default) as argMax, ties to the lower entry as top-k's: a fifth of topk's time on wasm
      const top = k === 1 ? { values: tf.max(sims, 1), indices: tf.argMax(sims, 1) } : tf.topk(sims, k);
      const pickedSims = tf.gather(tf.reshape(top.values, [-1]), picks);
      const entries = tf.gather(tf.reshape(top.indices, [-1]), picks);
      return {
        swapped: gatherConstant(this.vectors, entries),
        similarity: tf.mean(pickedSims) as tf.Scalar,
        accuracy: labelled
          ? (tf.mean(tf.cast(tf.equal(tf.gather(tf.tensor1d(this.labels, 'int32'), entries), tf.tensor1d(labels.subarray(0, b), 'int32')), 'float32')) as tf.Scalar)
          : tf.scalar(NaN),
      };
    });
  }

  /** Enqueues z [B, P] (normalised here), overwriting the oldest entries. */
  push(z: tf.Tensor2D, sampleIndices: Int32Array, labels: Int32Array): void {
    const b = Math.min(z.shape[0], this.size);
    const slots = new Int32Array(b);
    for (let i = 0; i < b; i++) {
      slots[i] = (this.pointer + i) % this.size;
      this.indices[slots[i]] = sampleIndices[i];
      this.labels[slots[i]] = labels[i] ?? -1;
    }
    this.pointer = (this.pointer + b) % this.size;
    const next = tf.tidy(() => {
      const rows = tf.slice(z, [0, 0], [b, this.dim]);
      const zn = tf.div(rows, tf.maximum(tf.norm(rows, 2, 1, true), 1e-12));
      return tf.tensorScatterUpdate(this.vectors, tf.tensor2d(slots, [b, 1], 'int32'), zn) as tf.Tensor2D;
    });
    this.vectors.dispose();
    // the queue owns its vectors, whatever scope the caller pushes from
    this.vectors = tf.keep(next);
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
    this.vectors.dispose();
    this.vectors = tf.tensor2d(Float32Array.from(vectors), [this.size, this.dim]);
    this.indices.set(indices);
    this.labels.set(labels);
    this.pointer = pointer[0];
  }

  dispose(): void {
    this.vectors.dispose();
  }
}

/**
 * vectors[entries] as a constant. The entries come from z through argMax / top-k, so under a
 * gradient tape a plain gather would sit on a path from the variables (and tfjs would try to
 * differentiate through the integer indices). Closed over here, they are no input of the op,
 * and the queue's vectors take no gradient.
 */
function gatherConstant(vectors: tf.Tensor2D, entries: tf.Tensor): tf.Tensor2D {
  const op = tf.customGrad(((v: tf.Tensor2D) => ({ value: tf.gather(v, entries), gradFunc: () => tf.zerosLike(v) })) as unknown as Parameters<typeof tf.customGrad>[0]);
  return op(vectors) as tf.Tensor2D;
}

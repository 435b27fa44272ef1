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
import { Rng } from '../runtime/rng';
import { HostTensor } from './params';

export interface NnLookup {
  /** The picked queue vectors [B, P] (normalised; no gradient). */
  swapped: tf.Tensor2D;
  /** Mean cosine similarity to the picked neighbour. */
  similarity: number;
  /** Share of picked neighbours with the sample's label (NaN without labels). */
  accuracy: number;
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

  /** Nearest neighbours of projections z [B, P] (not yet normalised) of samples `sampleIndices`. */
  lookup(z: tf.Tensor2D, sampleIndices: Int32Array, labels: Int32Array, topK: number, rng: Rng): NnLookup {
    const b = z.shape[0];
    const k = Math.min(topK, this.size);
    // [Q, P] @ [P, B] keeps the big operand in the plain-matMul layout
    const simsT = tf.tidy(() => tf.matMul(this.vectors, tf.transpose(tf.div(z, tf.maximum(tf.norm(z, 2, 1, true), 1e-12)))));
    const sims = simsT.dataSync() as Float32Array; // [Q, B], row q = entry q
    simsT.dispose();
    // Masking and top-k on the host: one pass over Q per row. (As tfjs ops, the broadcast
    // equal/logicalOr on [B, Q] cost ~30 ms each on wasm, a tenth of a refine step.)
    const top = new Int32Array(b * k);
    const sim = new Float32Array(b * k);
    for (let i = 0; i < b; i++) topKOfRow(sims, b, i, this.indices, sampleIndices[i], k, top.subarray(i * k, (i + 1) * k), sim.subarray(i * k, (i + 1) * k));
    const picked = new Int32Array(b);
    let simSum = 0;
    let hits = 0;
    for (let i = 0; i < b; i++) {
      const j = rng.int(k);
      picked[i] = top[i * k + j];
      simSum += sim[i * k + j];
      if (this.labels[picked[i]] === labels[i]) hits++;
    }
    const labelled = labels.length > 0 && labels[0] >= 0;
    return {
      swapped: tf.tidy(() => tf.gather(this.vectors, tf.tensor1d(picked, 'int32'))) as tf.Tensor2D,
      similarity: simSum / b,
      accuracy: labelled ? hits / b : NaN,
    };
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
    this.vectors = next;
  }

  exportState(prefix: string): Record<string, HostTensor | { shape: number[]; data: Int32Array }> {
    return {
      [`${prefix}.vectors`]: { shape: [this.size, this.dim], data: this.vectors.dataSync() as Float32Array },
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
 * The k largest similarities of column i of sims [Q, B], entries of the same sample or not yet
 * filled (index -1) counted as similarity -1; descending, ties to the lower entry index.
 */
function topKOfRow(sims: Float32Array, b: number, i: number, entryIndices: Int32Array, sample: number, k: number, top: Int32Array, sim: Float32Array): void {
  let filled = 0;
  for (let q = 0; q < entryIndices.length; q++) {
    const idx = entryIndices[q];
    const v = idx === sample || idx === -1 ? -1 : sims[q * b + i];
    if (filled === k && v <= sim[k - 1]) continue;
    // insertion into the sorted top list
    let at = filled < k ? filled++ : k - 1;
    while (at > 0 && sim[at - 1] < v) {
      sim[at] = sim[at - 1];
      top[at] = top[at - 1];
      at--;
    }
    sim[at] = v;
    top[at] = q;
  }
}

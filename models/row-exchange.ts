/**
 * The rows of a data-parallel global batch inside a training step: the gather, interleave and
 * own-row operations the objectives use (tape operations over a Collective, as
 * models/global-batch-norm.ts).
 *
 * Row layout. The sources give rank r the samples at epoch positions p with p % W == r
 * (sources/tar-shards.ts selectForRank), so the single-process global batch row i is row
 * floor(i / W) of rank i % W. Everything gathered here is put back in that order
 * (`interleaveRows`), so a gathered batch is row for row the batch one process would see:
 * queues fill slot for slot as in a single process, and the NN picks, which draw one random
 * number per row in row order, draw the same numbers.
 *
 * NNA over the global batch (Alkin et al. 2024 use ml-jku/MIM-Refiner's all_gather_grad around
 * the predictions of an NNCLR-style loss). Let L = mean over all N = W * n rows of the global
 * batch of the row losses l_b(z, s, P), P = the predictions of every row (the negatives). In
 * the reference each rank r computes L_r = the mean over its own n rows with the gathered P,
 * backpropagates, all_gather_grad all-reduces (sums) the gradient w.r.t. the gathered P and
 * keeps its slice, and DDP averages the parameter gradients:
 *   (1/W) sum_r [sum_r' dL_r'/dP_r] dP_r/dtheta = sum_r (d/dP_r (1/W) sum_r' L_r') dP_r/dtheta = dL/dtheta.
 * tfjs runs a tape synchronously, so a collective inside the backward would block; the same
 * gradient is had without one. Each rank evaluates the global loss L itself (z, s and the other
 * ranks' P as constants, its own P_r as the only thing carrying gradient: `gatherRows`), which
 * gives it dL/dP_r * dP_r/dtheta, its own rows' share of the exact gradient; the shares are
 * summed over ranks (allreduceGradients with op 'sum'):
 *   sum_r dL/dP_r dP_r/dtheta = dL/dtheta.
 * No communication in the backward; the cost is that every rank computes the N x N logits
 * (W times the n x N of the reference), which is small next to the encoder. spec/mpi.spec.ts
 * checks the summed gradient against one process's gradient of the same global batch.
 *
 * Where the rows meet (`exchangeMode`). 'in-tape': the all-gather of the predictions sits
 * inside the tape and is synchronous (the tape cannot await); it moves a few kilobytes, and
 * reading the local rows there is a host read inside the step (on wasm a copy from the wasm
 * heap); global-batch BatchNorm (models/global-batch-norm.ts) all-reduces its moments the same
 * way. WebGPU has no synchronous read, and no other construction avoids one inside the tape:
 * a row's loss depends on the other ranks' encoder outputs of this very step (through the
 * negatives and the BatchNorm statistics), and a tape that cannot wait on the network must have
 * them before it starts, so they come from a forward pass before it.
 * 'before-tape' is that pass: the heads' inputs X (CLS features of the head blocks, every view)
 * are computed without the tape (a frozen encoder's come from prepare for free; a training
 * encoder runs forward once more: 27-38% of a step, bench/exchange-cost.ts), read with `await
 * t.data()` and all-gathered asynchronously (`allGatherRows`). Under the tape every rank then
 * builds the global X with its own rows from its encoder (`withOwnRows`: the gathered values,
 * the gradient straight through to its rows) and runs the heads and the loss on the whole
 * global batch, exactly as one process does: BatchNorm over its rows is global-batch BatchNorm.
 * With theta_e the encoder's parameters and theta_h the heads':
 *   dL/dtheta_e = sum_r dL/dX_r dX_r/dtheta_e   (rank r's share: its rows carry gradient),
 *   dL/dtheta_h   computed whole on every rank,
 * so encoder gradients are summed and head gradients averaged (the driver's `whole`).
 */
import * as tf from '@tensorflow/tfjs';
import type { Collective, TypedArray } from '../lib/collective';
import { stopGradient } from './ops';

/**
 * Rank-order gathered rows (rank 0's n rows, then rank 1's, ...) -> the single-process global
 * batch order (row i from rank i % W, row floor(i / W)); rowLen values per row.
 */
export function interleaveRows<T extends TypedArray>(gathered: T, worldSize: number, rowLen = 1): T {
  if (worldSize === 1) return gathered;
  const n = gathered.length / (worldSize * rowLen);
  if (!Number.isInteger(n)) throw new Error(`interleaveRows: ${gathered.length} values are not ${worldSize} ranks x rows of ${rowLen}`);
  const out = new (gathered.constructor as new (len: number) => T)(gathered.length);
  for (let r = 0; r < worldSize; r++) {
    for (let j = 0; j < n; j++) out.set(gathered.subarray((r * n + j) * rowLen, (r * n + j + 1) * rowLen), (j * worldSize + r) * rowLen);
  }
  return out;
}

/**
 * The global batch [W * n, P] in single-process order, built from this rank's rows `local`
 * [n, P] (a tensor of the tape: the only part carrying gradient) and `gathered`, every rank's
 * rows in rank order as all-gathered on the host (this rank's part of it is ignored and taken
 * from `local`). The gradient w.r.t. `local` is the rows of the global batch's gradient that
 * came from this rank (stack/reshape autodiff). See the file comment for why no all-reduce
 * is needed in the backward.
 */
export function gatherRows(local: tf.Tensor2D, gathered: Float32Array, rank: number, worldSize: number): tf.Tensor2D {
  if (worldSize === 1) return local;
  const [n, p] = local.shape;
  if (gathered.length !== worldSize * n * p) throw new Error(`gatherRows: ${gathered.length} gathered values, expected ${worldSize} ranks x [${n}, ${p}]`);
  return tf.tidy(() => {
    const blocks = Array.from({ length: worldSize }, (_, r) => (r === rank ? local : tf.tensor2d(gathered.subarray(r * n * p, (r + 1) * n * p), [n, p])));
    // [n, W, P] -> [n * W, P]: row j * W + r is rank r's row j
    return tf.reshape(tf.stack(blocks, 1), [n * worldSize, p]) as tf.Tensor2D;
  });
}

/**
 * All-gathers this rank's rows of each tensor (one blocking all-gather for all of them; it runs
 * inside the tape) and returns each as the global batch via gatherRows.
 */
export function allGatherRowsInTape(c: Collective, locals: tf.Tensor2D[]): tf.Tensor2D[] {
  if (c.worldSize === 1) return locals;
  const perTensor = unpackGathered(c, c.allgatherSync(concatArrays(locals.map((t) => t.dataSync() as Float32Array))), locals);
  return locals.map((t, i) => gatherRows(t, perTensor[i], c.rank, c.worldSize));
}

/**
 * All-gathers this rank's rows of each tensor without a synchronous read (`await t.data()`,
 * then one all-gather off the event loop): each tensor's rows of every rank, in rank order, as
 * gatherRows and withOwnRows take them. For what a step exchanges before its tape.
 */
export async function allGatherRows(c: Collective, locals: tf.Tensor2D[]): Promise<Float32Array[]> {
  if (c.worldSize === 1) return Promise.all(locals.map((t) => t.data() as Promise<Float32Array>));
  const parts = await Promise.all(locals.map((t) => t.data() as Promise<Float32Array>));
  return unpackGathered(c, await c.allgather(concatArrays(parts)), locals);
}

/**
 * The global batch [W n, C] in single-process order from `gathered` (every rank's rows in rank
 * order, allGatherRows), with this rank's rows replaced by `local` [n, C], a tensor of the tape,
 * in the straight-through form gathered + (local - stopGradient(local)): the values are the
 * gathered ones exactly (x - x is 0, and c + 0 is c), so every rank computes on the same
 * numbers, and the gradient reaches `local`.
 */
export function withOwnRows(local: tf.Tensor2D, gathered: Float32Array, rank: number, worldSize: number): tf.Tensor2D {
  const [n, p] = local.shape;
  return tf.tidy(() => {
    const own = tf.tensor2d(gathered.subarray(rank * n * p, (rank + 1) * n * p), [n, p]);
    return gatherRows(tf.add(own, tf.sub(local, stopGradient(local))), gathered, rank, worldSize);
  });
}

function concatArrays(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

/** Every rank's concatenation of `locals` (rank order) -> per tensor, its rows of every rank in rank order. */
function unpackGathered(c: Collective, all: Float32Array, locals: tf.Tensor[]): Float32Array[] {
  const per = all.length / c.worldSize;
  let start = 0;
  return locals.map((t) => {
    const mine = new Float32Array(c.worldSize * t.size);
    for (let r = 0; r < c.worldSize; r++) mine.set(all.subarray(r * per + start, r * per + start + t.size), r * t.size);
    start += t.size;
    return mine;
  });
}

/**
 * Sample indices and labels of the global batch, in single-process order. Blocking (a few
 * hundred bytes): it runs where a step prepares its inputs, which cannot await.
 */
export function gatherBatchMeta(c: Collective, indices: Int32Array, labels: Int32Array): { indices: Int32Array; labels: Int32Array } {
  if (c.worldSize === 1) return { indices, labels };
  const both = c.allgatherSync(Int32Array.from([...indices, ...labels]));
  const n = indices.length;
  const idx = new Int32Array(c.worldSize * n);
  const lab = new Int32Array(c.worldSize * n);
  for (let r = 0; r < c.worldSize; r++) {
    idx.set(both.subarray(2 * n * r, 2 * n * r + n), r * n);
    lab.set(both.subarray(2 * n * r + n, 2 * n * (r + 1)), r * n);
  }
  return { indices: interleaveRows(idx, c.worldSize), labels: interleaveRows(lab, c.worldSize) };
}

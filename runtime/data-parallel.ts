/**
 * The pieces of data-parallel training that sit between the collective layer and a training
 * step: the global batch split over ranks, the NNA loss's all-gathered predictions, global-batch
 * BatchNorm, the NN queue's enqueue order, state broadcast from rank 0 and the start-up check
 * that every rank runs the same configuration on the same data.
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
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import type { Collective, TypedArray } from '../lib/collective';
import { stopGradient } from '../models/ops';

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
 * Where a data-parallel step lets the ranks' rows meet when its loss couples them (refine's NNA
 * with global BatchNorm): 'in-tape', blocking collectives inside the gradient tape that read
 * the device synchronously (no extra compute), or 'before-tape', an asynchronous exchange of
 * the loss's inputs before the tape, which re-runs a training encoder's forward pass to have
 * them: the only way on a backend without synchronous reads (WebGPU). DP_EXCHANGE=in-tape or
 * before-tape chooses either on any backend.
 */
export function exchangeMode(tfBackend: string, env: NodeJS.ProcessEnv = process.env): 'in-tape' | 'before-tape' {
  const forced = env.DP_EXCHANGE;
  if (forced !== undefined && forced !== 'in-tape' && forced !== 'before-tape') throw new Error(`DP_EXCHANGE=${forced}: expected 'in-tape' or 'before-tape'`);
  if (forced === 'in-tape' && tfBackend === 'webgpu') throw new Error("DP_EXCHANGE=in-tape reads the device synchronously inside the gradient tape, which WebGPU cannot: leave DP_EXCHANGE unset (WebGPU takes 'before-tape')");
  return forced ?? (tfBackend === 'webgpu' ? 'before-tape' : 'in-tape');
}

/**
 * True on every rank when it is true on any: decisions that must be taken at the same step on
 * every rank, such as stopping after a SIGINT that reached the ranks at different moments
 * (runtime/signals.ts' `requested`), or the ranks would part and wait on each other forever.
 */
export async function anyRank(c: Collective, flag: boolean): Promise<boolean> {
  if (c.worldSize === 1) return flag;
  return (await c.allreduce(Float32Array.of(flag ? 1 : 0), 'max'))[0] > 0;
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

/** Rank 0's values into every rank's variables (same names and shapes on every rank, checked). */
export async function broadcastVariables(c: Collective, variables: Array<[string, tf.Variable]>, what: string): Promise<void> {
  if (c.worldSize === 1) return;
  await checkSameOnAllRanks(c, { [what]: variables.map(([n, v]) => `${n}:${v.shape.join('x')}:${v.dtype}`) });
  const parts = await Promise.all(variables.map(([, v]) => v.data() as Promise<Float32Array>));
  const buf = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    buf.set(p, offset);
    offset += p.length;
  }
  await c.broadcast(buf, 0);
  offset = 0;
  for (const [, v] of variables) {
    tf.tidy(() => v.assign(tf.tensor(buf.subarray(offset, offset + v.size), v.shape, v.dtype)));
    offset += v.size;
  }
}

/** Rank 0's host tensors (a queue's exportState, say) into every rank's, in place. */
export async function broadcastHostTensors(c: Collective, tensors: Record<string, { shape: number[]; data: TypedArray }>, what: string): Promise<void> {
  if (c.worldSize === 1) return;
  const keys = Object.keys(tensors).sort();
  await checkSameOnAllRanks(c, { [what]: keys.map((k) => `${k}:${tensors[k].shape.join('x')}:${tensors[k].data.constructor.name}`) });
  for (const k of keys) await c.broadcast(tensors[k].data, 0);
}

/**
 * Fails on every rank, naming the ranks and keys that differ from rank 0, unless every rank
 * passes the same configuration (resolved flags, data fingerprint, ...). One all-gather of a
 * SHA-256 when they agree; the full values are gathered only to say what differs.
 */
export async function checkSameOnAllRanks(c: Collective, config: Record<string, unknown>): Promise<void> {
  if (c.worldSize === 1) return;
  const json = stableJson(config);
  const hashes = await c.allgather(new Uint8Array(createHash('sha256').update(json).digest()));
  const differing = [...Array(c.worldSize).keys()].filter((r) => Buffer.compare(Buffer.from(hashes.subarray(r * 32, r * 32 + 32)), Buffer.from(hashes.subarray(0, 32))) !== 0);
  if (differing.length === 0) return;
  // say what differs: every rank's JSON, padded to the longest
  const mine = Buffer.from(json, 'utf8');
  const lengths = await c.allgather(Int32Array.of(mine.length));
  const longest = Math.max(...lengths);
  const padded = new Uint8Array(longest);
  padded.set(mine);
  const all = await c.allgather(padded);
  const configOf = (r: number) => flatten(JSON.parse(Buffer.from(all.subarray(r * longest, r * longest + lengths[r])).toString('utf8')));
  const reference = configOf(0);
  const lines = differing.map((r) => {
    const other = configOf(r);
    const keys = [...new Set([...Object.keys(reference), ...Object.keys(other)])].filter((k) => stableJson(reference[k]) !== stableJson(other[k]));
    return `rank ${r} differs from rank 0 in ${keys.map((k) => `${k}: ${short(other[k])} (rank 0: ${short(reference[k])})`).join('; ')}`;
  });
  throw new Error(`ranks started with different configurations or data:\n  ${lines.join('\n  ')}\nstart every rank with the same flags and the same files`);
}

/**
 * Per file: path, size and a SHA-256 of its first and last 64 KiB, what checkSameOnAllRanks
 * compares for data (cheap on large shards; copies of the data on different machines agree,
 * unlike modification times).
 */
export function filesFingerprint(files: string[]): string[] {
  const edge = 64 * 1024;
  return [...files].sort().map((f) => {
    const fd = fs.openSync(f, 'r');
    try {
      const size = fs.fstatSync(fd).size;
      const head = Buffer.alloc(Math.min(edge, size));
      const tail = Buffer.alloc(Math.min(edge, size));
      fs.readSync(fd, head, 0, head.length, 0);
      fs.readSync(fd, tail, 0, tail.length, size - tail.length);
      return `${f}:${size}:${createHash('sha256').update(head).update(tail).digest('hex').slice(0, 16)}`;
    } finally {
      fs.closeSync(fd);
    }
  });
}

/** Nested objects as dotted keys ({flags: {batch: 32}} -> {'flags.batch': 32}), so a difference names the leaf. */
function flatten(v: unknown, prefix = '', out: Record<string, unknown> = {}): Record<string, unknown> {
  if (v && typeof v === 'object' && !Array.isArray(v)) {
    for (const [k, x] of Object.entries(v)) flatten(x, prefix ? `${prefix}.${k}` : k, out);
  } else out[prefix] = v;
  return out;
}

function stableJson(v: unknown): string {
  return JSON.stringify(v, (_, x) => (x && typeof x === 'object' && !Array.isArray(x) ? Object.fromEntries(Object.keys(x).sort().map((k) => [k, x[k]])) : x));
}

function short(v: unknown): string {
  const s = stableJson(v) ?? 'undefined';
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

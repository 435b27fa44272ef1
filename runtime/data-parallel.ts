/**
 * The pieces of data-parallel training around the collective layer that are not tape
 * operations: where the ranks' rows meet (exchangeMode), decisions taken on every rank at once,
 * state broadcast from rank 0 and the start-up check that every rank runs the same
 * configuration on the same data. The row exchange inside a step is models/row-exchange.ts.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import type { Collective, TypedArray } from '../lib/collective';
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

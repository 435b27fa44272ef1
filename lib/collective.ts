/**
 * What data-parallel code needs of the processes of a run (rank, world size, all-reduce,
 * all-gather, broadcast), and the world of one that every process is unless an MPI launcher
 * started it (runtime/collective.ts openCollective). A leaf: the models (global-batch
 * BatchNorm) take a Collective without depending on how it is made.
 */

export type ReduceOp = 'sum' | 'mean' | 'max' | 'min';
export type TypedArray = Float32Array | Float64Array | Int32Array | Uint32Array | Uint8Array;

export interface Collective {
  readonly kind: 'single' | 'mpi';
  readonly rank: number;
  readonly worldSize: number;
  /** Rank among the processes on this machine (picks this process's GPU). */
  readonly localRank: number;
  readonly localSize: number;
  /** Element-wise reduction over ranks, in place; resolves to x. Runs off the event loop. */
  allreduce<T extends Float32Array | Float64Array>(x: T, op: ReduceOp): Promise<T>;
  /** The same, blocking: for small buffers inside a gradient tape, where nothing can be awaited. */
  allreduceSync<T extends Float32Array | Float64Array>(x: T, op: ReduceOp): T;
  /** Every rank's x (all the same length) concatenated in rank order. */
  allgather<T extends TypedArray>(x: T): Promise<T>;
  allgatherSync<T extends TypedArray>(x: T): T;
  /** Root's x into every rank's x (same length everywhere), in place; resolves to x. */
  broadcast<T extends TypedArray>(x: T, root?: number): Promise<T>;
  barrier(): Promise<void>;
  /** Prints the message and stops every rank. */
  abort(message: string, code?: number): never;
  finalize(timeoutSeconds?: number): void;
}

/** A world of one process: every collective returns its input. */
export class SingleProcess implements Collective {
  readonly kind = 'single';
  readonly rank = 0;
  readonly worldSize = 1;
  readonly localRank = 0;
  readonly localSize = 1;
  allreduce<T extends Float32Array | Float64Array>(x: T): Promise<T> {
    return Promise.resolve(x);
  }
  allreduceSync<T extends Float32Array | Float64Array>(x: T): T {
    return x;
  }
  allgather<T extends TypedArray>(x: T): Promise<T> {
    return Promise.resolve(x.slice() as T);
  }
  allgatherSync<T extends TypedArray>(x: T): T {
    return x.slice() as T;
  }
  broadcast<T extends TypedArray>(x: T): Promise<T> {
    return Promise.resolve(x);
  }
  barrier(): Promise<void> {
    return Promise.resolve();
  }
  abort(message: string, code = 1): never {
    console.error(message);
    process.exit(code);
  }
  finalize(): void {}
}

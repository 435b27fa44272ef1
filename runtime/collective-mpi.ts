/**
 * The MPI implementation of the collective layer (runtime/collective.ts): native/mpi-shim.c,
 * compiled against the system's MPI with its mpicc on first use and loaded through koffi.
 *
 * The shim is built into .cache/mpi-shim/<hash of source and mpicc -showme>/ (git-ignored), so
 * an edit of the C file or a different MPI install builds afresh and every later start reuses
 * it; ranks starting together on one machine build side by side into temporary names and the
 * first rename wins. MPICC overrides the compiler (e.g. a cluster's module-loaded MPI).
 *
 * Blocking: `allreduce`, `allgather` and `broadcast` run on koffi's async worker thread, so
 * the event loop (metrics sinks, the progress line, signal handlers) keeps running while
 * megabytes of gradients travel; the promise settles when MPI returns. The `...Sync` forms
 * block the calling thread; they exist for the few kilobytes exchanged inside a gradient tape
 * (tfjs runs a tape's forward and backward synchronously, so nothing can be awaited there) and
 * take microseconds on one machine. MPI is initialised MPI_THREAD_SERIALIZED: the two threads
 * never call MPI at once, because calls are queued here in issue order and a synchronous call
 * while an asynchronous one is in flight is refused.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as koffi from 'koffi';
import type { Collective, ReduceOp, TypedArray } from '../lib/collective';

const SOURCE = path.join(__dirname, '..', 'native', 'mpi-shim.c');
const CACHE = path.join(__dirname, '..', '.cache', 'mpi-shim');

/** Compiles the shim if this source and MPI have not been built yet; returns the library path. */
export function buildMpiShim(): string {
  const mpicc = process.env.MPICC ?? 'mpicc';
  let showme: string;
  try {
    showme = execFileSync(mpicc, ['-showme'], { encoding: 'utf8' }).trim();
  } catch (err) {
    throw new Error(`launched by an MPI launcher, but '${mpicc}' (MPI's C compiler wrapper, needed to build native/mpi-shim.c) did not run: ${(err as Error).message.split('\n')[0]}. Install MPI's development files (Debian: apt-get install openmpi-bin libopenmpi-dev) or set MPICC`);
  }
  const source = fs.readFileSync(SOURCE);
  const key = createHash('sha256').update(source).update(showme).digest('hex').slice(0, 16);
  const lib = path.join(CACHE, key, 'libmpi-shim.so');
  if (fs.existsSync(lib)) return lib;
  fs.mkdirSync(path.dirname(lib), { recursive: true });
  const tmp = `${lib}.${process.pid}.tmp`;
  try {
    execFileSync(mpicc, ['-O2', '-fPIC', '-shared', '-Wall', '-o', tmp, SOURCE, '-lpthread'], { stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { stderr?: Buffer; message: string };
    throw new Error(`building ${SOURCE} with ${mpicc} failed: ${e.stderr?.toString().trim() || e.message}`);
  }
  fs.renameSync(tmp, lib);
  return lib;
}

interface Shim {
  init: koffi.KoffiFunction;
  allreduce: koffi.KoffiFunction;
  allgather: koffi.KoffiFunction;
  broadcast: koffi.KoffiFunction;
  barrier: koffi.KoffiFunction;
  errorString: koffi.KoffiFunction;
  abort: koffi.KoffiFunction;
  finalize: koffi.KoffiFunction;
}

function loadShim(): Shim {
  // global: Open MPI opens its components (dlopen) expecting libmpi's symbols to be global
  const lib = koffi.load(buildMpiShim(), { global: true });
  return {
    init: lib.func('int mr_init(_Out_ int *out)'),
    allreduce: lib.func('int mr_allreduce(void *buf, int64_t n, int dtype, int op)'),
    allgather: lib.func('int mr_allgather(const void *send, int64_t n, void *recv)'),
    broadcast: lib.func('int mr_broadcast(void *buf, int64_t n, int root)'),
    barrier: lib.func('int mr_barrier()'),
    errorString: lib.func('void mr_error_string(int code, _Out_ uint8_t *out, int cap)'),
    abort: lib.func('void mr_abort(int code, const char *message)'),
    finalize: lib.func('int mr_finalize(int timeout_s)'),
  };
}

const OPS: Record<Exclude<ReduceOp, 'mean'>, number> = { sum: 0, max: 1, min: 2 };

export class MpiCollective implements Collective {
  readonly kind = 'mpi';
  readonly rank: number;
  readonly worldSize: number;
  readonly localRank: number;
  readonly localSize: number;
  private readonly shim: Shim;
  /** The last queued asynchronous call; the next one starts when it settles. */
  private tail: Promise<unknown> = Promise.resolve();
  /** Asynchronous calls queued or running. */
  inFlight = 0;
  /** Calls, bytes and milliseconds inside MPI (asynchronous calls from their start on the worker), printed at finalize with COLLECTIVE_STATS=1. */
  readonly stats = { calls: 0, bytes: 0, ms: 0 };
  private finished = false;

  constructor() {
    this.shim = loadShim();
    const out = new Int32Array(5);
    const rc = this.shim.init(out) as number;
    if (rc !== 0) throw new Error(`MPI_Init_thread failed: ${this.message(rc)}`);
    [this.rank, this.worldSize, this.localRank, this.localSize] = out;
    if (out[4] < 2) {
      this.shim.abort(1, `[rank ${this.rank}/${this.worldSize}] this MPI provides thread level ${out[4]}, below MPI_THREAD_SERIALIZED (2), which the asynchronous collectives need`);
    }
  }

  allreduce<T extends Float32Array | Float64Array>(x: T, op: ReduceOp): Promise<T> {
    return this.queue('MPI_Allreduce', x.byteLength, (done) => this.shim.allreduce.async(x, x.length, dtypeOf(x), OPS[op === 'mean' ? 'sum' : op], done)).then(() => meanOf(x, op, this.worldSize));
  }

  allreduceSync<T extends Float32Array | Float64Array>(x: T, op: ReduceOp): T {
    this.check('MPI_Allreduce', this.syncCall(x.byteLength, () => this.shim.allreduce(x, x.length, dtypeOf(x), OPS[op === 'mean' ? 'sum' : op])));
    return meanOf(x, op, this.worldSize);
  }

  allgather<T extends TypedArray>(x: T): Promise<T> {
    const out = new (x.constructor as new (n: number) => T)(x.length * this.worldSize);
    return this.queue('MPI_Allgather', out.byteLength, (done) => this.shim.allgather.async(x, x.byteLength, out, done)).then(() => out);
  }

  allgatherSync<T extends TypedArray>(x: T): T {
    const out = new (x.constructor as new (n: number) => T)(x.length * this.worldSize);
    this.check('MPI_Allgather', this.syncCall(out.byteLength, () => this.shim.allgather(x, x.byteLength, out)));
    return out;
  }

  broadcast<T extends TypedArray>(x: T, root = 0): Promise<T> {
    return this.queue('MPI_Bcast', x.byteLength, (done) => this.shim.broadcast.async(x, x.byteLength, root, done)).then(() => x);
  }

  barrier(): Promise<void> {
    return this.queue('MPI_Barrier', 0, (done) => this.shim.barrier.async(done)).then(() => undefined);
  }

  abort(message: string, code = 1): never {
    this.finished = true;
    this.shim.abort(code, message);
    // MPI_Abort does not return on Open MPI or MPICH; if an implementation did, leave anyway
    process.exit(code);
  }

  finalize(timeoutSeconds = 60): void {
    if (this.finished) return;
    this.finished = true;
    if (process.env.COLLECTIVE_STATS === '1') {
      console.error(`[rank ${this.rank}/${this.worldSize}] collectives: ${this.stats.calls} calls, ${(this.stats.bytes / 1e6).toFixed(1)} MB, ${(this.stats.ms / 1000).toFixed(2)} s`);
    }
    const rc = this.shim.finalize(timeoutSeconds) as number;
    if (rc !== 0) console.error(`[rank ${this.rank}/${this.worldSize}] MPI_Finalize: ${this.message(rc)}`);
  }

  private queue(what: string, bytes: number, call: (done: (err: unknown, rc: number) => void) => void): Promise<void> {
    if (this.finished) return Promise.reject(new Error(`[rank ${this.rank}/${this.worldSize}] ${what} after MPI was finalised`));
    this.inFlight++;
    const run = () =>
      new Promise<void>((resolve, reject) => {
        const t0 = performance.now();
        call((err, rc) => {
          this.count(bytes, t0);
          if (err) reject(err instanceof Error ? err : new Error(String(err)));
          else if (rc !== 0) reject(new Error(`[rank ${this.rank}/${this.worldSize}] ${what} failed: ${this.message(rc)}`));
          else resolve();
        });
      });
    const p = this.tail.then(run, run).finally(() => this.inFlight--);
    this.tail = p.catch(() => undefined);
    return p;
  }

  private syncCall(bytes: number, call: () => number): number {
    if (this.finished) throw new Error(`[rank ${this.rank}/${this.worldSize}] collective call after MPI was finalised`);
    if (this.inFlight > 0) throw new Error(`[rank ${this.rank}/${this.worldSize}] a synchronous collective was called while ${this.inFlight} asynchronous one(s) are in flight: await them first`);
    const t0 = performance.now();
    const rc = call();
    this.count(bytes, t0);
    return rc;
  }

  private count(bytes: number, t0: number): void {
    this.stats.calls++;
    this.stats.bytes += bytes;
    this.stats.ms += performance.now() - t0;
  }

  private check(what: string, rc: number): void {
    if (rc !== 0) throw new Error(`[rank ${this.rank}/${this.worldSize}] ${what} failed: ${this.message(rc)}`);
  }

  private message(rc: number): string {
    const buf = new Uint8Array(512);
    this.shim.errorString(rc, buf, buf.length);
    return Buffer.from(buf.subarray(0, buf.indexOf(0))).toString('utf8');
  }
}

function dtypeOf(x: Float32Array | Float64Array): number {
  return x instanceof Float64Array ? 1 : 0;
}

function meanOf<T extends Float32Array | Float64Array>(x: T, op: ReduceOp, worldSize: number): T {
  if (op === 'mean') for (let i = 0; i < x.length; i++) x[i] /= worldSize;
  return x;
}

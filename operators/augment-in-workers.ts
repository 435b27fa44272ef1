/**
 * Decode + augment in worker threads, so that big-image data work does not take the main
 * thread's time from the training step (tfjs wasm runs there).
 *
 * Defaults, from bench/data-path.ts on the 2-core dev box:
 * - 224 px, 2 global views from 256 px JPEGs: ~10.5 ms of CPU per image. In-process that
 *   is main-thread time, so use workers. 1 worker by default: on 2 cores one core is left to
 *   the training step. More workers where there are more cores (2 workers reach ~100
 *   images/s here, a data-path-only figure).
 * - 32 px CIFAR: ~0.9 ms of CPU per image in-process (and sharp decodes on libuv's threads,
 *   not the main thread); through workers ~1.1-1.4 ms, the copies and messages costing more
 *   than the views. So for 32 px use decode() + multiView() in-process.
 */
import type { Worker } from 'worker_threads';
import { spawnWorker, siblingModule } from '../lib/worker';
import { defer, finalize, type OperatorFunction } from 'rxjs';
import type { EncodedSample, ViewsSample } from '../sources/types';
import type { FailOn, OnSkip } from './decode';
import type { WorkerReply, WorkerTask, WorkerTransform } from './augment-worker';
import { mapOrdered } from './map-ordered';
import type { EvalConfig, ViewConfig } from './transforms/view';
import 'sharp'; // load libvips in the main thread before any worker does (sharp's advice)

interface PoolWorker {
  worker: Worker;
  inFlight: number;
  /** Set once the worker crashed or exited: its tasks fail, new ones are refused. */
  failure?: Error;
  pending: Map<number, { resolve: (r: WorkerReply) => void; reject: (e: Error) => void }>;
}

/** A fixed set of augmentation workers; tasks go to the least busy one. */
export class AugmentPool {
  private readonly workers: PoolWorker[];
  private nextId = 0;
  private nextConfig = 0;
  private closed = false;

  constructor(readonly size = 1) {
    if (!(Number.isInteger(size) && size >= 1)) throw new Error(`worker pool size must be a positive integer, got ${size}`);
    this.workers = Array.from({ length: size }, () => this.spawn());
  }

  private spawn(): PoolWorker {
    const worker = spawnWorker(siblingModule(__dirname, 'augment-worker', __filename));
    const w: PoolWorker = { worker, inFlight: 0, pending: new Map() };
    const failAll = (err: Error) => {
      w.failure ??= err;
      for (const p of w.pending.values()) p.reject(err);
      w.pending.clear();
    };
    worker.on('message', (reply: WorkerReply) => {
      const p = w.pending.get(reply.id);
      if (!p) return;
      w.pending.delete(reply.id);
      if (--w.inFlight === 0) worker.unref();
      p.resolve(reply);
    });
    worker.on('error', failAll);
    worker.on('exit', (code) => {
      if (!this.closed) failAll(new Error(`augmentation worker exited with code ${code}`));
    });
    worker.unref(); // idle workers must not keep the process alive; ref'd while busy
    return w;
  }

  /** Sends a recipe to every worker; tasks name it by the returned id. */
  configure(transform: WorkerTransform): number {
    const id = this.nextConfig++;
    for (const w of this.workers) w.worker.postMessage({ type: 'config', id, transform });
    return id;
  }

  run(task: Omit<WorkerTask, 'type' | 'id'>): Promise<WorkerReply> {
    if (this.closed) return Promise.reject(new Error('augmentation pool is closed'));
    const w = this.workers.reduce((a, b) => (b.inFlight < a.inFlight ? b : a));
    if (w.failure) return Promise.reject(w.failure);
    const id = this.nextId++;
    if (w.inFlight++ === 0) w.worker.ref();
    return new Promise((resolve, reject) => {
      w.pending.set(id, { resolve, reject });
      // The bytes are a fresh copy, so transferring them detaches nothing upstream still uses.
      w.worker.postMessage({ ...task, type: 'task', id }, [task.bytes.buffer as ArrayBuffer]);
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.workers.map((w) => w.worker.terminate()));
  }
}

export type AugmentInWorkersOptions = {
  /** Worker threads when no pool is given (default 1, see above). */
  workers?: number;
  /** A pool to reuse across epochs; otherwise one is made per subscription and closed after. */
  pool?: AugmentPool;
  /** Samples in flight per worker (keeps a worker busy while results travel). Default 3. */
  inFlightPerWorker?: number;
  /** Called per undecodable sample; behind a Valve, give the credit back here (see decode()). */
  onSkip?: OnSkip;
  failOn?: FailOn;
} & ({ seed: number; epoch: number; views: ViewConfig[] } | { eval: EvalConfig });

/**
 * EncodedSample -> ViewsSample, decode + multiView (or evalView) in worker threads, in input
 * order. Same output as `decode()` then `multiView()` in-process for the same seed/epoch.
 */
export function augmentInWorkers(opts: AugmentInWorkersOptions): OperatorFunction<EncodedSample, ViewsSample> {
  const transform: WorkerTransform =
    'eval' in opts ? { kind: 'eval', eval: opts.eval } : { kind: 'views', seed: opts.seed, epoch: opts.epoch, views: opts.views };
  const viewSizes = transform.kind === 'eval' ? [transform.eval.size] : transform.views.map((v) => v.size);
  const onSkip = opts.onSkip ?? ((origin, reason) => console.warn(`[augment] skipped ${origin}: ${reason}`));
  return (source) =>
    defer(() => {
      const pool = opts.pool ?? new AugmentPool(opts.workers ?? 1);
      const config = pool.configure(transform);
      const project = async (s: EncodedSample): Promise<ViewsSample | undefined> => {
        const reply = await pool.run({ config, index: s.index, bytes: new Uint8Array(s.bytes), raw: s.raw, failOn: opts.failOn });
        if ('error' in reply) throw new Error(`augmenting ${s.origin}: ${reply.error}`);
        if ('skip' in reply) {
          onSkip(s.origin, reply.skip);
          return undefined;
        }
        return { index: s.index, label: s.label, views: reply.views, viewSizes };
      };
      return source.pipe(
        mapOrdered(project, pool.size * (opts.inFlightPerWorker ?? 3)),
        finalize(() => {
          if (!opts.pool) void pool.close();
        }),
      );
    });
}

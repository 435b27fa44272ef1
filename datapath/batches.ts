/**
 * The data path every pipeline shares: source -> decode -> per-sample views -> batch, behind a
 * Valve so that at most `prefetchBatches` batches' worth of samples are read ahead of the
 * consumer, pulled with a PullQueue that also measures how long the consumer waited.
 *
 * By default the whole path runs in a worker thread: the training step holds the main
 * thread's event loop for its whole duration, so an in-process path would only advance
 * between steps. The worker streams finished batches (buffers transferred, not copied) and
 * the consumer hands it one credit per batch taken, so backpressure spans the thread boundary.
 */
import { Valve, fromPull, PullQueue } from '../lib/flow';
import { spawnWorker, siblingModule } from '../lib/worker';
import { openSource, OpenOptions } from '../sources/open';
import type { LabelPolicy } from '../sources/tar-shards';
import { decode } from '../operators/decode';
import { batchViews } from '../operators/batch';
import { multiView } from '../operators/multi-view';
import { evalView } from '../operators/eval-view';
import type { WorkerTransform } from '../operators/augment-worker';
import type { ViewConfig } from '../operators/transforms/view';
import type { Batch } from '../sources/types';

/**
 * Counts skipped samples by kind of problem (a reason's text before any ': ', the particulars
 * after it) and logs the first few of each kind with the file and key.
 */
export class SkipLog {
  readonly counts = new Map<string, number>();
  total = 0;

  record(origin: string, reason: string): void {
    this.total++;
    const kind = reason.split(': ')[0];
    const n = (this.counts.get(kind) ?? 0) + 1;
    this.counts.set(kind, n);
    if (n <= 3) console.warn(`[data] skipped ${origin}: ${reason}${n === 3 ? ' (further skips of this kind are counted, not logged)' : ''}`);
  }

  /** "3 x duplicate key (...); 1 x missing label (.cls)" */
  summary(): string {
    return [...this.counts].map(([kind, n]) => `${n} x ${kind}`).join('; ');
  }
}

export interface BatchStreamOptions extends Omit<OpenOptions, 'onSkip'> {
  /** Source spec: tar shards glob, image folder or CIFAR binary files. */
  source: string;
  /** Per-sample views: multi-view augmentation or the eval transform (serialisable, for the worker). */
  transform: WorkerTransform;
  batchSize: number;
  dropLast: boolean;
  prefetchBatches?: number;
  decodeConcurrency?: number;
  /** Run the data path in a worker thread (default true). */
  worker?: boolean;
  skips?: SkipLog;
}

export interface BatchStream extends AsyncIterableIterator<Batch> {
  /** Milliseconds the consumer spent waiting for data so far. */
  readonly waitMs: number;
  /** Stops reading (closes the source, ends the worker). */
  return(): Promise<IteratorResult<Batch>>;
}

export function batchStream(opts: BatchStreamOptions): BatchStream {
  if (opts.worker !== false) return workerBatchStream(opts);
  const skips = opts.skips ?? new SkipLog();
  return inProcessBatchStream(opts, (origin, reason) => skips.record(origin, reason));
}

export interface EpochBatchesOptions {
  source: string;
  /** Shuffle and augmentation seed; epoch e draws from (seed, e). */
  seed: number;
  batchSize: number;
  stepsPerEpoch: number;
  /** Steps already taken (a resumed run): starts mid-epoch with the samples not yet seen. */
  fromStep: number;
  views: ViewConfig[];
  skips: SkipLog;
  /** Data-parallel rank and world size: this rank's share of each epoch (batchSize is per rank). */
  rank?: number;
  worldSize?: number;
  /** Only these stable sample indices (a labelled subset), see SourceOptions. */
  subset?: Int32Array;
  /** 'ignored' for a label-free pipeline (MAE, MimCo): every decodable image, labels -1 (see SourceOptions). */
  labels?: LabelPolicy;
}

/**
 * Training batches epoch after epoch, without end (the caller stops pulling): each epoch a
 * new seeded shuffle and augmentation, at most stepsPerEpoch full batches. Each batch comes
 * with its epoch and the milliseconds the consumer waited for it. Ending the iteration
 * (break, return) closes the current epoch's stream and its worker.
 */
export async function* epochBatches(opts: EpochBatchesOptions): AsyncGenerator<{ batch: Batch; epoch: number; waitMs: number }> {
  const { seed, batchSize, stepsPerEpoch } = opts;
  for (let epoch = Math.floor(opts.fromStep / stepsPerEpoch); ; epoch++) {
    const skipSteps = Math.max(0, opts.fromStep - epoch * stepsPerEpoch);
    const stream = batchStream({
      source: opts.source,
      shuffle: { seed, epoch, bufferSize: 2000 },
      rank: opts.rank,
      worldSize: opts.worldSize,
      subset: opts.subset,
      labels: opts.labels,
      start: skipSteps * batchSize,
      transform: { kind: 'views', seed, epoch, views: opts.views },
      batchSize,
      dropLast: true,
      skips: opts.skips,
    });
    // for-await closes the stream on break, and when the consumer ends the generator mid-epoch
    let waited = 0;
    let taken = skipSteps;
    for await (const batch of stream) {
      yield { batch, epoch, waitMs: stream.waitMs - waited };
      waited = stream.waitMs;
      if (++taken === stepsPerEpoch) break;
    }
  }
}

/** Everything but the skip log crosses to the worker. */
export type WorkerStreamOptions = Omit<BatchStreamOptions, 'skips' | 'worker'>;

export function inProcessBatchStream(
  opts: WorkerStreamOptions,
  onSkip: (origin: string, reason: string) => void,
): BatchStream & { readonly valve: Valve } {
  const valve = new Valve(opts.batchSize * ((opts.prefetchBatches ?? 2) + 1));
  // A source skips bad container entries before yielding (no credit taken); decode drops a
  // sample that already holds a credit, so that one must be given back.
  const { samples } = openSource(opts.source, { ...opts, onSkip });
  const t = opts.transform;
  const queue = new PullQueue(
    fromPull(samples, valve).pipe(
      decode({
        concurrency: opts.decodeConcurrency ?? 4,
        onSkip: (origin, reason) => {
          valve.release(1);
          onSkip(origin, reason);
        },
      }),
      t.kind === 'views' ? multiView({ seed: t.seed, epoch: t.epoch, views: t.views }) : evalView(t.eval),
      batchViews(opts.batchSize, { dropLast: opts.dropLast }),
    ),
  );
  const stream = {
    valve,
    get waitMs() {
      return queue.waitMs;
    },
    async next() {
      const r = await queue.next();
      if (!r.done) valve.release(r.value.indices.length);
      return r;
    },
    return: () => queue.return(),
    [Symbol.asyncIterator]() {
      return stream;
    },
  };
  return stream;
}

type FromWorker =
  | { type: 'batch'; batch: Batch }
  | { type: 'skip'; origin: string; reason: string }
  | { type: 'done' }
  | { type: 'error'; message: string };

function workerBatchStream(opts: BatchStreamOptions): BatchStream {
  const skips = opts.skips ?? new SkipLog();
  const { skips: _, worker: __, ...workerOpts } = opts;
  const worker = spawnWorker(siblingModule(__dirname, 'batch-worker', __filename), workerOpts);
  const prefetch = opts.prefetchBatches ?? 2;
  const ready: Batch[] = [];
  let finished = false;
  let failure: Error | undefined;
  let wake: (() => void) | undefined;
  let waitMs = 0;
  worker.on('message', (m: FromWorker) => {
    if (m.type === 'batch') ready.push(m.batch);
    else if (m.type === 'skip') skips.record(m.origin, m.reason);
    else if (m.type === 'done') finished = true;
    else failure = new Error(m.message);
    wake?.();
  });
  worker.on('error', (err) => {
    failure = err;
    wake?.();
  });
  worker.on('exit', () => {
    finished = true;
    wake?.();
  });
  worker.postMessage({ type: 'credit', n: prefetch });
  const stream: BatchStream = {
    get waitMs() {
      return waitMs;
    },
    async next() {
      const start = performance.now();
      while (ready.length === 0 && !finished && !failure) {
        await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
      }
      waitMs += performance.now() - start;
      if (failure) {
        await worker.terminate();
        throw failure;
      }
      if (ready.length === 0) return { value: undefined, done: true };
      worker.postMessage({ type: 'credit', n: 1 });
      return { value: ready.shift()!, done: false };
    },
    async return() {
      finished = true;
      await worker.terminate();
      return { value: undefined, done: true };
    },
    [Symbol.asyncIterator]() {
      return stream;
    },
  };
  return stream;
}

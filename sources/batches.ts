/**
 * The data path every pipeline shares: source -> decode -> per-sample views -> batch, behind a
 * Valve so that at most `prefetchBatches` batches' worth of samples are read ahead of the
 * consumer, pulled with a PullQueue that also measures how long the consumer waited.
 */
import { OperatorFunction } from 'rxjs';
import { Valve, fromPull, PullQueue } from '../runtime/flow';
import { openSource, OpenOptions } from './open';
import { decode } from '../operators/decode';
import { batchViews } from '../operators/batch';
import type { Batch, DecodedSample, ViewsSample } from './types';

/** Counts skipped samples and logs the first few of each reason. */
export class SkipLog {
  readonly counts = new Map<string, number>();
  total = 0;

  record(origin: string, reason: string): void {
    this.total++;
    const n = (this.counts.get(reason) ?? 0) + 1;
    this.counts.set(reason, n);
    if (n <= 3) console.warn(`[data] skipped ${origin}: ${reason}${n === 3 ? ' (further skips of this kind are counted, not logged)' : ''}`);
  }
}

export interface BatchStreamOptions extends OpenOptions {
  /** Source spec: tar shards glob, image folder or CIFAR binary files. */
  source: string;
  /** Decoded sample -> views (multi-view augmentation or the eval transform). */
  transform: OperatorFunction<DecodedSample, ViewsSample>;
  batchSize: number;
  dropLast: boolean;
  prefetchBatches?: number;
  decodeConcurrency?: number;
  skips?: SkipLog;
}

export interface BatchStream extends AsyncIterableIterator<Batch> {
  /** Milliseconds the consumer spent waiting for data so far. */
  readonly waitMs: number;
  readonly valve: Valve;
  readonly classes: string[] | undefined;
}

export function batchStream(opts: BatchStreamOptions): BatchStream {
  const valve = new Valve(opts.batchSize * (opts.prefetchBatches ?? 2) + opts.batchSize);
  const skips = opts.skips ?? new SkipLog();
  // A source skips bad container entries before yielding (no credit taken); decode drops a
  // sample that already holds a credit, so that one must be given back.
  const { samples, classes } = openSource(opts.source, { ...opts, onSkip: (origin, reason) => skips.record(origin, reason) });
  const onDecodeSkip = (origin: string, reason: string) => {
    valve.release(1);
    skips.record(origin, reason);
  };
  const queue = new PullQueue(
    fromPull(samples, valve).pipe(
      decode({ concurrency: opts.decodeConcurrency ?? 4, onSkip: onDecodeSkip }),
      opts.transform,
      batchViews(opts.batchSize, { dropLast: opts.dropLast }),
    ),
  );
  const stream: BatchStream = {
    valve,
    classes,
    get waitMs() {
      return queue.waitMs;
    },
    async next() {
      // the training step holds the event loop for its whole duration; one turn here lets
      // finished reads and decodes flow into the queue before the consumer checks it
      await new Promise((resolve) => setImmediate(resolve));
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

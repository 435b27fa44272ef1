/**
 * Backpressure for RxJS pipelines fed by pull sources.
 *
 * RxJS pushes; a training step pulls. A Valve holds credits: a source wrapped with fromPull()
 * takes one credit before it pulls the next item from its iterator, and the consumer gives
 * credits back as it takes batches. So however slow the consumer, at most `capacity` source
 * items are anywhere between the source and the consumer (decoding, augmenting, batched,
 * queued), and however fast it is, the source runs ahead by up to `capacity` items.
 */
import { Observable } from 'rxjs';

export class Valve {
  private held = 0;
  private peakHeld = 0;
  private waiting: Array<() => void> = [];

  constructor(readonly capacity: number) {
    if (!(capacity >= 1)) throw new Error(`Valve capacity must be >= 1, got ${capacity}`);
  }

  /** Resolves once a credit is free, and takes it. */
  acquire(): Promise<void> {
    if (this.held < this.capacity) {
      this.take();
      return Promise.resolve();
    }
    return new Promise((resolve) =>
      this.waiting.push(() => {
        this.take();
        resolve();
      }),
    );
  }

  /** Gives back n credits (items that left the pipeline). */
  release(n = 1): void {
    this.held = Math.max(0, this.held - n);
    while (this.held < this.capacity && this.waiting.length > 0) this.waiting.shift()!();
  }

  /** Items currently between source and consumer. */
  get inFlight(): number {
    return this.held;
  }

  /** Most items ever in flight at once. */
  get peak(): number {
    return this.peakHeld;
  }

  private take(): void {
    this.held++;
    this.peakHeld = Math.max(this.peakHeld, this.held);
  }
}

/**
 * A lazy Observable over a pull source: nothing is read before subscription, and with a valve
 * the next item is pulled only when a credit is free. Unsubscribing stops the pulling and
 * closes the iterator (so files and tar streams are released).
 */
export function fromPull<T>(source: AsyncIterable<T> | Iterable<T>, valve?: Valve): Observable<T> {
  return new Observable<T>((subscriber) => {
    const iterator: AsyncIterator<T> | Iterator<T> =
      Symbol.asyncIterator in source
        ? (source as AsyncIterable<T>)[Symbol.asyncIterator]()
        : (source as Iterable<T>)[Symbol.iterator]();
    let stopped = false;
    (async () => {
      while (!stopped) {
        if (valve) await valve.acquire();
        if (stopped) break;
        const next = await iterator.next();
        if (next.done) {
          valve?.release(1);
          break;
        }
        subscriber.next(next.value);
      }
      subscriber.complete();
    })().catch((err) => subscriber.error(err));
    return () => {
      stopped = true;
      void iterator.return?.();
    };
  });
}

/**
 * The consumer end: turns an Observable into an async iterator the training loop pulls from.
 * Items wait in a queue that the valve upstream keeps bounded. `waitMs` accumulates the time
 * the consumer spent waiting for data (the data path's share of wall time).
 */
export class PullQueue<T> implements AsyncIterableIterator<T> {
  private queue: T[] = [];
  private done = false;
  private error: unknown;
  private wake?: () => void;
  private readonly subscription;
  waitMs = 0;

  constructor(source: Observable<T>) {
    this.subscription = source.subscribe({
      next: (item) => {
        this.queue.push(item);
        this.wake?.();
      },
      error: (err) => {
        this.error = err;
        this.done = true;
        this.wake?.();
      },
      complete: () => {
        this.done = true;
        this.wake?.();
      },
    });
  }

  async next(): Promise<IteratorResult<T>> {
    const start = performance.now();
    while (this.queue.length === 0 && !this.done) {
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = undefined;
    }
    this.waitMs += performance.now() - start;
    if (this.queue.length > 0) return { value: this.queue.shift()!, done: false };
    if (this.error !== undefined) throw this.error;
    return { value: undefined, done: true };
  }

  async return(): Promise<IteratorResult<T>> {
    this.subscription.unsubscribe();
    this.done = true;
    return { value: undefined, done: true };
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    return this;
  }
}

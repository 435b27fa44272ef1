import { OperatorFunction, Observable } from 'rxjs';

/**
 * Like map() with an async project function run up to `concurrency` at a time, emitting
 * results in input order (batches stay deterministic whatever finishes first). Returning
 * undefined drops the item (used to skip corrupt samples).
 */
export function mapOrdered<T, R>(
  project: (item: T, index: number) => Promise<R | undefined>,
  concurrency: number,
): OperatorFunction<T, R> {
  return (source) =>
    new Observable<R>((subscriber) => {
      const results = new Map<number, R | undefined>();
      const pending: T[] = [];
      let nextIn = 0;
      let nextOut = 0;
      let active = 0;
      let sourceDone = false;

      const flush = () => {
        while (results.has(nextOut)) {
          const value = results.get(nextOut);
          results.delete(nextOut++);
          if (value !== undefined) subscriber.next(value);
        }
        if (sourceDone && active === 0 && pending.length === 0) subscriber.complete();
      };
      const start = () => {
        while (active < concurrency && pending.length > 0) {
          const index = nextIn++;
          const item = pending.shift()!;
          active++;
          project(item, index).then(
            (value) => {
              active--;
              results.set(index, value);
              start();
              flush();
            },
            (err) => subscriber.error(err),
          );
        }
      };
      const subscription = source.subscribe({
        next: (item) => {
          pending.push(item);
          start();
        },
        error: (err) => subscriber.error(err),
        complete: () => {
          sourceDone = true;
          flush();
        },
      });
      return () => subscription.unsubscribe();
    });
}

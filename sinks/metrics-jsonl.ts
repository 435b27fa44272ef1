import * as fs from 'node:fs';
import * as path from 'node:path';
import { MonoTypeOperatorFunction, Observable } from 'rxjs';

export type MetricsRow = Record<string, number | string | null>;

/**
 * Appends each row to a JSON-lines file with a `time` (ISO) field, one line per row, written
 * synchronously so a crash loses nothing already passed on; passes the rows through.
 */
export function metricsJsonl<T extends MetricsRow>(file: string): MonoTypeOperatorFunction<T> {
  return (source) =>
    new Observable<T>((subscriber) => {
      fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
      const fd = fs.openSync(file, 'a');
      const subscription = source.subscribe({
        next: (row) => {
          fs.writeSync(fd, JSON.stringify({ time: new Date().toISOString(), ...row }) + '\n');
          subscriber.next(row);
        },
        error: (err) => subscriber.error(err),
        complete: () => subscriber.complete(),
      });
      return () => {
        subscription.unsubscribe();
        fs.closeSync(fd);
      };
    });
}

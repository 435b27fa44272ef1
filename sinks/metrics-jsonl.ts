/**
 * Metrics log as JSON Lines (one JSON object per line, jsonlines.org): an RxJS operator in the
 * style of RxJS's own (a function returning an OperatorFunction built on tap) that appends
 * each row passing through, with `step` and `time` added, and passes the row on unchanged.
 * Each line goes to the file with one synchronous write(2) on an O_APPEND descriptor, so a
 * crash of the process loses nothing already passed on and never leaves half a line from an
 * earlier row; with `fsync` (default) the data also survives a crash of the machine.
 * The file is appended to, so a resumed run continues the same log; `keepThroughStep` first cuts
 * it back to the rows a resumed checkpoint covers, so steps redone after it are not logged twice.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { defer, MonoTypeOperatorFunction, tap } from 'rxjs';
import { writeFileAtomic } from '../lib/atomic-file';

/** Named values of one step. Non-finite numbers are written as null (JSON has no NaN). */
export type MetricsRow = Record<string, number | string | null>;

export interface MetricsJsonlOptions {
  /** fdatasync after every line (default true): durable across power loss, ~ms per row. */
  fsync?: boolean;
  /**
   * Before appending, keep only the rows with `step` <= this (0: start the file anew), replacing
   * the file atomically: a resumed run redoes the steps after its checkpoint. Unset: append.
   */
  keepThroughStep?: number;
}

/**
 * Appends `{"step": n, "time": ISO-8601, ...row}` per row to `file` (created with its folder).
 * `step` counts rows from 0 per subscription unless the row carries its own `step`.
 * The file opens on subscription and closes when the stream completes, errors or is unsubscribed.
 */
export function metricsJsonl<T extends MetricsRow>(file: string, opts: MetricsJsonlOptions = {}): MonoTypeOperatorFunction<T> {
  const fsync = opts.fsync ?? true;
  return (source) =>
    defer(() => {
      fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
      if (opts.keepThroughStep !== undefined) truncateToStep(file, opts.keepThroughStep);
      let fd: number | undefined = fs.openSync(file, 'a');
      let step = 0;
      return source.pipe(
        tap({
          next: (row) => {
            const line = JSON.stringify({ step: step++, time: new Date().toISOString(), ...row }) + '\n';
            fs.writeSync(fd!, line);
            if (fsync) fs.fdatasyncSync(fd!);
          },
          finalize: () => {
            if (fd !== undefined) fs.closeSync(fd);
            fd = undefined;
          },
        }),
      );
    });
}

/**
 * Rewrites `file` with its rows of `step` <= `lastStep` (a half-written last line from a kill
 * goes too) via a temporary file, fsync and rename, so a kill meanwhile leaves the old file.
 */
export function truncateToStep(file: string, lastStep: number): void {
  if (!fs.existsSync(file)) return;
  const kept = fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((line) => {
      try {
        return (JSON.parse(line) as { step: number }).step <= lastStep;
      } catch {
        return false;
      }
    });
  writeFileAtomic(file, kept.map((line) => line + '\n').join(''));
}

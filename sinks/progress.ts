/**
 * A console progress line as an RxJS operator (tap, like RxJS's own operators): count/total,
 * percentage, rate per second, ETA and a few named values of the latest row, throttled.
 * On a TTY the line is rewritten in place with \r (and ends with a newline when the stream
 * does); otherwise, as in a log file, each update is its own line, less often.
 */
import { defer, MonoTypeOperatorFunction, tap } from 'rxjs';
import type { MetricsRow } from './metrics-jsonl';

export interface ProgressOptions {
  label: string;
  /** Expected count, for the percentage and ETA; leave out when unknown. */
  total?: number;
  /** Count already done before the first row (a resumed run's step), default 0. */
  start?: number;
  /** Word after the count ("steps", "images"). */
  unit?: string;
  /** Row fields shown after the ETA, when present. */
  show?: string[];
  /** Minimum milliseconds between lines (default 1000 on a TTY, 10000 otherwise). */
  everyMs?: number;
  /** How much each row adds to the count (default 1, e.g. a batch's size instead). */
  count?: (row: MetricsRow) => number;
  /** Where text goes (default process.stdout.write); receives the \r / \n itself. */
  write?: (text: string) => void;
  isTTY?: boolean;
  /** Clock in ms (default performance.now), for tests. */
  now?: () => number;
}

export function progress<T extends MetricsRow>(opts: ProgressOptions): MonoTypeOperatorFunction<T> {
  const tty = opts.isTTY ?? Boolean(process.stdout.isTTY);
  const write = opts.write ?? ((text: string) => void process.stdout.write(text));
  const now = opts.now ?? (() => performance.now());
  const everyMs = opts.everyMs ?? (tty ? 1000 : 10_000);
  const emit = (line: string) => write(tty ? `\r${line}\x1b[K` : `${line}\n`);
  return (source) =>
    defer(() => {
      // Per subscription. The rate is measured from the first row, not from subscription,
      // so start-up (compilation, first batch) does not drag it down.
      let count = opts.start ?? 0, firstCount = 0, firstAt = 0, lastAt = -Infinity;
      let latest: T | undefined, shown = true;
      const show = (t: number) => {
        emit(formatProgress(opts, count, firstAt === t ? 0 : (count - firstCount) / ((t - firstAt) / 1000), latest!));
        lastAt = t;
        shown = true;
      };
      return source.pipe(
        tap({
          next: (row) => {
            const t = now();
            count += opts.count ? opts.count(row) : 1;
            if (latest === undefined) [firstCount, firstAt] = [count, t];
            latest = row;
            shown = false;
            if (t - lastAt >= everyMs || (opts.total !== undefined && count >= opts.total)) show(t);
          },
          complete: () => {
            if (!shown) show(now()); // the final state, even if throttled away
            if (tty && latest !== undefined) write('\n');
          },
        }),
      );
    });
}

/** `[label] 120/1000 steps (12.0%) | 3.41/s | ETA 4m18s | loss 0.1234` */
export function formatProgress(opts: Pick<ProgressOptions, 'label' | 'total' | 'unit' | 'show'>, count: number, ratePerSec: number, row: MetricsRow): string {
  const total = opts.total;
  const head = `[${opts.label}] ${count}${total !== undefined ? `/${total}` : ''}${opts.unit ? ` ${opts.unit}` : ''}`;
  const parts = [total ? `${head} (${((100 * count) / total).toFixed(1)}%)` : head, `${formatNumber(ratePerSec)}/s`];
  if (total !== undefined) parts.push(`ETA ${formatDuration(ratePerSec > 0 ? Math.max(total - count, 0) / ratePerSec : NaN)}`);
  for (const k of opts.show ?? []) {
    const v = row[k];
    if (v !== undefined && v !== null) parts.push(`${k} ${typeof v === 'number' ? formatNumber(v) : v}`);
  }
  return parts.join(' | ');
}

/** 4 significant digits, plain notation where that stays short. */
export function formatNumber(v: number): string {
  if (v === 0 || !Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  return a >= 1e5 || a < 1e-3 ? v.toExponential(3) : a >= 1000 ? v.toFixed(0) : v.toPrecision(4);
}

/** 75 -> "1m15s", 4000 -> "1h06m", non-finite -> "?". */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : `${m}m${String(s % 60).padStart(2, '0')}s`;
}

import { MonoTypeOperatorFunction, tap } from 'rxjs';
import type { MetricsRow } from './metrics-jsonl';

export interface ProgressOptions {
  total: number;
  label: string;
  unit?: string;
  /** Row fields shown after the count. */
  show?: string[];
  /** Minimum milliseconds between lines. */
  everyMs?: number;
  write?: (line: string) => void;
}

/**
 * A console progress line per row, throttled: count/total, rate, ETA and chosen values.
 * On a TTY the line is rewritten in place; otherwise one line is printed per interval.
 */
export function progress<T extends MetricsRow>(opts: ProgressOptions): MonoTypeOperatorFunction<T> {
  const tty = process.stdout.isTTY;
  const write = opts.write ?? ((line: string) => (tty ? process.stdout.write(`\r${line}\x1b[K`) : console.log(line)));
  const everyMs = opts.everyMs ?? (tty ? 500 : 10_000);
  let start = 0;
  let last = -Infinity;
  let count = 0;
  return tap<T>({
    next: (row) => {
      const now = performance.now();
      if (count++ === 0) start = now;
      if (now - last < everyMs && count < opts.total) return;
      last = now;
      write(formatProgress(opts, count, (now - start) / 1000, row));
    },
    complete: () => {
      if (tty) process.stdout.write('\n');
    },
  });
}

export function formatProgress(opts: ProgressOptions, count: number, seconds: number, row: MetricsRow): string {
  const rate = count > 1 && seconds > 0 ? (count - 1) / seconds : 0;
  const eta = rate > 0 ? (opts.total - count) / rate : NaN;
  const values = (opts.show ?? [])
    .filter((k) => row[k] !== undefined)
    .map((k) => `${k} ${typeof row[k] === 'number' ? formatNumber(row[k] as number) : row[k]}`);
  return [
    `[${opts.label}] ${count}/${opts.total} ${opts.unit ?? ''}`.trimEnd(),
    `${rate.toFixed(2)}/s`,
    `ETA ${formatDuration(eta)}`,
    ...values,
  ].join(' | ');
}

function formatNumber(v: number): string {
  if (v === 0 || !Number.isFinite(v)) return String(v);
  return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 0.01 ? v.toFixed(4) : v.toExponential(2);
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : `${m}m${String(s % 60).padStart(2, '0')}s`;
}

/**
 * The evaluation report: results as { model: { metric: value } } rendered as a Markdown
 * table (rows = models, columns = metrics, like the tables of the MIM-Refiner paper) and
 * written as JSON, atomically (temp file, fsync, rename), so a reader or a crash never
 * leaves a half-written report in place of the last good one.
 */
import { writeFileAtomic } from '../lib/atomic-file';

/** Re-exported for the eval pipeline; it lives with the other leaf utilities. */
export { writeFileAtomic };

export type ResultValue = number | string | null | undefined;
export type Results = Record<string, Record<string, ResultValue>>;

export interface MarkdownTableOptions {
  /** Columns in order (default: every metric, in first-seen order). */
  columns?: string[];
  /** Header of the model column (default "model"). */
  rowHeader?: string;
  /** Decimals for non-integer numbers (default 4). */
  digits?: number;
  /** Custom number formatting, e.g. (v) => (100 * v).toFixed(1) for percentages. */
  format?: (value: number, column: string) => string;
}

/** `| model | knn | linear |` ... numeric columns right-aligned; a missing value shows as "–". */
export function markdownTable(results: Results, opts: MarkdownTableOptions = {}): string {
  const models = Object.keys(results);
  const columns = opts.columns ?? [...new Set(models.flatMap((m) => Object.keys(results[m])))];
  const format = opts.format ?? ((v: number) => (Number.isInteger(v) ? String(v) : v.toFixed(opts.digits ?? 4)));
  const cell = (v: ResultValue, column: string): string =>
    v === undefined || v === null ? '–' : typeof v === 'number' ? (Number.isFinite(v) ? format(v, column) : String(v)) : escape(v);
  const numeric = columns.map((c) => models.some((m) => typeof results[m][c] === 'number'));
  const line = (cells: string[]) => `| ${cells.join(' | ')} |`;
  return [
    line([escape(opts.rowHeader ?? 'model'), ...columns.map(escape)]),
    line(['---', ...numeric.map((n) => (n ? '---:' : '---'))]),
    ...models.map((m) => line([escape(m), ...columns.map((c) => cell(results[m][c], c))])),
  ].join('\n') + '\n';
}

/** A cell's text: pipes escaped, line breaks flattened (either would break the table). */
function escape(text: string): string {
  return text.replace(/\|/g, '\\|').replace(/\r?\n/g, ' ');
}

/** Pretty-printed JSON (non-finite numbers become null, as JSON has no NaN). */
export function writeJsonReport(file: string, report: unknown): void {
  writeFileAtomic(file, JSON.stringify(report, null, 2) + '\n');
}

/**
 * The evaluation report (what pipelines/eval.ts measures of one model, its report.json), and
 * results as { model: { metric: value } } rendered as a Markdown
 * table (rows = models, columns = metrics, like the tables of the MIM-Refiner paper) and
 * written as JSON, atomically (temp file, fsync, rename), so a reader or a crash never
 * leaves a half-written report in place of the last good one.
 */
import { writeFileAtomic } from '../lib/atomic-file';
import type { Pooling } from './extract-features';
import type { ProbeConfig } from './linear-probe';
import type { LowShotResult } from './low-shot';

/** Re-exported for the eval pipeline; it lives with the other leaf utilities. */
export { writeFileAtomic };

/** A per-block curve: test top-1 per block, validation top-1 where a split is known, the last block and the block chosen on validation. */
export interface BlockCurve {
  /** Test top-1 in [0, 1], one per entry of `blocks`. */
  top1: number[];
  /** Validation top-1 per block. */
  val?: number[];
  lastBlock: number;
  /** Test top-1 of the last block. */
  last: number;
  /** The block with the best validation top-1, and its test top-1. */
  chosenBlock?: number;
  chosen?: number;
}

export interface PerClassResult {
  top1: number;
  /** Test top-1 of each class (index = label). */
  perClass: number[];
}

export interface EvalReport {
  label: string;
  model: string;
  /** The seed of a random init, or the training seed of a checkpoint where eval.ts was told it (--seed). */
  seed?: number;
  train: { source: string; count: number };
  test: { source: string; count: number };
  val?: { source: string; count: number };
  pooling: Pooling;
  blocks: number[];
  knn?: BlockCurve & { k: number; temperature: number; standardise: boolean };
  linear?: BlockCurve & { config: ProbeConfig[] };
  /** The block low-shot, k-means and long-tail ran on, and how it was chosen. */
  block?: { block: number; by: 'validation kNN' | 'last block (no validation split)' | 'the only block' };
  lowShot?: { block: number; results: LowShotResult[] };
  kmeans?: { block: number; k: number; nmi: number; ari: number; acc: number };
  longTail?: { block: number; train: { source: string; count: number; perClass: number[] }; knn: PerClassResult; linear: PerClassResult; classNames?: string[] };
  /** Wall-clock seconds per stage (extraction is ~0 on a cache hit). */
  seconds: Record<string, number>;
}

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

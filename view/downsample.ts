/**
 * Min/max downsampling of a long metrics series, streaming and in bounded memory: rows go into
 * buckets of `width` consecutive rows; when there are more than `2 * buckets` buckets,
 * neighbours merge and the width doubles. Each bucket keeps, per numeric column, its minimum
 * and maximum and the steps where they occurred, so a spike of a single step (a loss spike, a
 * gradient-norm outlier) survives any amount of downsampling, unlike a mean or a stride.
 * A bucket of one row is given back as it was; a wider one as two rows (its first and last
 * step), each column's extreme that came first in the first row and the other in the second.
 * Non-numeric values (the ISO `time`) are dropped from downsampled buckets; null (a non-finite
 * value in metrics.jsonl) is a gap and stays one only when the whole bucket is null.
 */
import type { JsonRow } from './jsonl-tail';

interface Extreme {
  min: number;
  minAt: number;
  max: number;
  maxAt: number;
}

interface Bucket {
  firstStep: number;
  lastStep: number;
  rows: number;
  /** The row itself while the bucket holds one. */
  only?: JsonRow;
  columns: Map<string, Extreme | null>;
}

export class MinMaxDownsampler {
  private list: Bucket[] = [];
  private width = 1;
  private filling: Bucket | undefined;
  /** Rows added. */
  count = 0;

  constructor(
    private readonly buckets = 2000,
    private readonly xKey = 'step',
  ) {
    if (!Number.isInteger(buckets) || buckets < 1) throw new Error(`MinMaxDownsampler: buckets must be an integer >= 1, got ${buckets}`);
  }

  add(row: JsonRow): void {
    const x = typeof row[this.xKey] === 'number' ? (row[this.xKey] as number) : this.count;
    this.count++;
    if (!this.filling || this.filling.rows >= this.width) {
      this.filling = { firstStep: x, lastStep: x, rows: 0, columns: new Map() };
      this.list.push(this.filling);
    }
    const b = this.filling;
    b.only = b.rows === 0 ? row : undefined;
    b.rows++;
    b.lastStep = x;
    for (const [key, v] of Object.entries(row)) {
      if (key === this.xKey) continue;
      if (typeof v === 'number') mergeExtreme(b.columns, key, { min: v, minAt: x, max: v, maxAt: x });
      else if (v === null && !b.columns.has(key)) b.columns.set(key, null);
    }
    if (this.list.length > 2 * this.buckets) this.halve();
  }

  /** Rows to draw: at most 4 * buckets of them, in step order. */
  rows(): JsonRow[] {
    const out: JsonRow[] = [];
    for (const b of this.list) {
      if (b.rows === 1 && b.only) {
        out.push(b.only);
        continue;
      }
      const first: JsonRow = { [this.xKey]: b.firstStep };
      const last: JsonRow = { [this.xKey]: b.lastStep };
      for (const [key, e] of b.columns) {
        if (e === null) {
          first[key] = null;
          last[key] = null;
        } else if (e.minAt <= e.maxAt) {
          first[key] = e.min;
          last[key] = e.max;
        } else {
          first[key] = e.max;
          last[key] = e.min;
        }
      }
      out.push(first, last);
    }
    return out;
  }

  /** Merges neighbouring buckets pairwise and doubles the width. */
  private halve(): void {
    const merged: Bucket[] = [];
    for (let i = 0; i < this.list.length; i += 2) {
      const a = this.list[i];
      const b = this.list[i + 1];
      if (!b) {
        merged.push(a);
        continue;
      }
      const columns = new Map(a.columns);
      for (const [key, e] of b.columns) {
        if (e === null) {
          if (!columns.has(key)) columns.set(key, null);
        } else mergeExtreme(columns, key, e);
      }
      merged.push({ firstStep: a.firstStep, lastStep: b.lastStep, rows: a.rows + b.rows, columns });
    }
    this.list = merged;
    this.width *= 2;
    this.filling = this.list[this.list.length - 1];
  }
}

function mergeExtreme(columns: Map<string, Extreme | null>, key: string, e: Extreme): void {
  const have = columns.get(key);
  if (!have) {
    columns.set(key, { ...e });
    return;
  }
  if (e.min < have.min) {
    have.min = e.min;
    have.minAt = e.minAt;
  }
  if (e.max > have.max) {
    have.max = e.max;
    have.maxAt = e.maxAt;
  }
}

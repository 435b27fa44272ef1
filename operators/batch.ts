import { bufferCount, filter, map, type OperatorFunction } from 'rxjs';
import type { Batch, ViewsSample } from '../sources/types';

/** Stacks samples into [B, S, S, 3] per view (sources/types Batch). */
export function collate(samples: ViewsSample[]): Batch {
  const viewSizes = samples[0].viewSizes;
  const views = viewSizes.map((size, v) => {
    const per = size * size * 3;
    const out = new Float32Array(samples.length * per);
    samples.forEach((s, b) => {
      if (s.views[v]?.length !== per) throw new Error(`sample ${s.index}: view ${v} has ${s.views[v]?.length} values, expected ${per} (${size}x${size}x3)`);
      out.set(s.views[v], b * per);
    });
    return out;
  });
  return {
    indices: Int32Array.from(samples, (s) => s.index),
    labels: Int32Array.from(samples, (s) => s.label),
    views,
    viewSizes: [...viewSizes],
  };
}

/** Groups `size` samples into a Batch; the last, short batch is kept unless dropLast. */
export function batchViews(size: number, opts: { dropLast?: boolean } = {}): OperatorFunction<ViewsSample, Batch> {
  if (!(Number.isInteger(size) && size >= 1)) throw new Error(`batch size must be a positive integer, got ${size}`);
  return (source) =>
    source.pipe(
      bufferCount(size),
      filter((group) => group.length > 0 && !(opts.dropLast && group.length < size)),
      map(collate),
    );
}

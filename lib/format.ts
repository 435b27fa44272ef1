/** Small formatting and statistics helpers shared by the summaries. */

/** 0.4213 -> '42.1%'. */
export const pct = (v: number): string => `${(100 * v).toFixed(1)}%`;

/** A name as a folder name: 'Refined (EMA)' -> 'refined-ema'. */
export const slug = (s: string): string => s.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '') || 'model';

/** Mean and population std (numpy's default, as eval's low-shot) under `<key>Mean` and `<key>Std`. */
export function meanStd<K extends string>(values: number[], key: K): Record<`${K}Mean` | `${K}Std`, number> {
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  const std = Math.sqrt(values.reduce((a, b) => a + (b - mean) ** 2, 0) / values.length);
  return { [`${key}Mean`]: mean, [`${key}Std`]: std } as Record<`${K}Mean` | `${K}Std`, number>;
}

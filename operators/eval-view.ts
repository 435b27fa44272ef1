import type { OperatorFunction } from 'rxjs';
import type { DecodedSample, ViewsSample } from '../sources/types';
import { mapOrdered } from './map-ordered';
import { renderEvalView, type EvalConfig } from './transforms/view';

export type { EvalConfig } from './transforms/view';

/**
 * DecodedSample -> one evaluation view: shorter side resized (bicubic) to
 * floor(size / resizeRatio), centre crop `size`, normalised. No randomness.
 * resizeRatio defaults to 0.875 (timm's crop_pct, 256 -> 224); use 1 for 32 px CIFAR.
 */
export function evalView(opts: EvalConfig & { concurrency?: number }): OperatorFunction<DecodedSample, ViewsSample> {
  return mapOrdered(
    async (s: DecodedSample) => ({ index: s.index, label: s.label, views: [await renderEvalView(s.image, opts)], viewSizes: [opts.size] }),
    opts.concurrency ?? 2,
  );
}

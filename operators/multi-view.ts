import type { OperatorFunction } from 'rxjs';
import { Rng } from '../lib/rng';
import type { DecodedSample, RgbImage, ViewsSample } from '../sources/types';
import { mapOrdered } from './map-ordered';
import { renderView, sampleViewParams, type ViewConfig } from './transforms/view';

export type { ViewConfig } from './transforms/view';

export interface MultiViewOptions {
  seed: number;
  epoch: number;
  views: ViewConfig[];
  /** Samples in flight (only sharp's downscales are async). Default 2. */
  concurrency?: number;
}

/**
 * All views of one sample. View v draws from Rng(seed, epoch, index, v) alone, so the views
 * depend on (seed, epoch, index) and nothing else: not on the order samples arrive in, the
 * worker that renders them, or the other views.
 */
export function renderViews(image: RgbImage, index: number, opts: Pick<MultiViewOptions, 'seed' | 'epoch' | 'views'>): Promise<Float32Array[]> {
  return Promise.all(
    opts.views.map((cfg, v) => {
      const params = sampleViewParams(new Rng(opts.seed, opts.epoch, index, v), cfg, image.width, image.height);
      return renderView(image, params, cfg);
    }),
  );
}

/** DecodedSample -> ViewsSample with the given view recipes, in input order. */
export function multiView(opts: MultiViewOptions): OperatorFunction<DecodedSample, ViewsSample> {
  const viewSizes = opts.views.map((v) => v.size);
  return mapOrdered(
    async (s: DecodedSample) => ({ index: s.index, label: s.label, views: await renderViews(s.image, s.index, opts), viewSizes }),
    opts.concurrency ?? 2,
  );
}

const REFINER_JITTER = { brightness: 0.4, contrast: 0.4, saturation: 0.2, hue: 0.1 };

/** The reference jitter times `strength` (hue stays within torchvision's 0.5 limit). */
function scaledJitter(strength: number): typeof REFINER_JITTER {
  const j = REFINER_JITTER;
  return { brightness: j.brightness * strength, contrast: j.contrast * strength, saturation: j.saturation * strength, hue: Math.min(0.5, j.hue * strength) };
}

/**
 * MIM-Refiner's BYOL-style multi-crop (docs/method.md, "Views"): 2 global views (view 0
 * always blurred and never solarized, view 1 blurred with p 0.1 and solarized with p 0.2)
 * and `numLocal` small crops.
 * The reference's blur sigma (0.1, 2.0) px is for 224 px global and 96 px local views; other
 * sizes get it scaled by size / 224 (or / 96), so the blur removes the same share of an
 * image's detail (unscaled, sigma 2 on a 32 px view wipes out most of the object).
 */
export function refinerViews(opts: { globalSize?: number; localSize?: number; numLocal?: number; globalScale?: [number, number]; localScale?: [number, number]; jitterP?: number; jitterStrength?: number; grayscaleP?: number } = {}): ViewConfig[] {
  const common = { flipP: 0.5, jitterP: opts.jitterP ?? 0.8, jitter: scaledJitter(opts.jitterStrength ?? 1), grayscaleP: opts.grayscaleP ?? 0.2 };
  const sigma = (size: number, referenceSize: number): [number, number] => [(0.1 * size) / referenceSize, (2.0 * size) / referenceSize];
  const globalSize = opts.globalSize ?? 224;
  const localSize = opts.localSize ?? 96;
  const globalSigma = sigma(globalSize, 224);
  const globalScale = opts.globalScale ?? [0.25, 1.0];
  const globals: ViewConfig[] = [
    { ...common, size: globalSize, scale: globalScale, blurP: 1.0, blurSigma: globalSigma, solarizeP: 0 },
    { ...common, size: globalSize, scale: globalScale, blurP: 0.1, blurSigma: globalSigma, solarizeP: 0.2 },
  ];
  const local: ViewConfig = { ...common, size: localSize, scale: opts.localScale ?? [0.05, 0.25], blurP: 0.5, blurSigma: sigma(localSize, 96), solarizeP: 0 };
  return [...globals, ...Array.from({ length: opts.numLocal ?? 10 }, () => local)];
}

/** MAE pretraining's view: RandomResizedCrop (reference scale (0.2, 1.0)) bicubic + flip, normalised. */
export function maeViews(size = 224, scale: [number, number] = [0.2, 1.0]): ViewConfig[] {
  return [
    {
      size,
      scale,
      flipP: 0.5,
      jitterP: 0,
      jitter: { brightness: 0, contrast: 0, saturation: 0, hue: 0 },
      blurP: 0,
      blurSigma: [0.1, 2.0],
      grayscaleP: 0,
      solarizeP: 0,
    },
  ];
}

/**
 * One augmented view = crop/resize, flip, colour jitter, grayscale, blur, solarize, normalise,
 * in BYOL's order. Split in two so the randomness is separate from the pixels:
 * - sampleViewParams draws every random choice of a view from its Rng (the same draws in the
 *   same order whatever the image, so params depend only on (seed, epoch, index, view) and
 *   the image size);
 * - renderView applies them.
 */
import type { Rng } from '../../lib/rng';
import type { RgbImage } from '../../sources/types';
import { gaussianBlur, blurKernelSize } from './blur';
import { colourJitter, grayscale, sampleJitter, solarize, type JitterParams, type JitterStrength } from './colour';
import { DEFAULT_RATIO, centreCropBox, flipHorizontal, randomResizedCropBox } from './geometry';
import type { Box, FloatImage } from './image';
import { normalise, type NormaliseOptions } from './normalize';
import { cropResize } from './resize';

export interface ViewConfig extends NormaliseOptions {
  size: number;
  /** RandomResizedCrop area fraction range. */
  scale: [number, number];
  /** Aspect ratio range, default (3/4, 4/3). */
  ratio?: [number, number];
  flipP: number;
  jitterP: number;
  jitter: JitterStrength;
  blurP: number;
  blurSigma: [number, number];
  grayscaleP: number;
  solarizeP: number;
}

export interface ViewParams {
  box: Box;
  flip: boolean;
  jitter?: JitterParams;
  grayscale: boolean;
  blurSigma?: number;
  solarize: boolean;
}

export function sampleViewParams(rng: Rng, cfg: ViewConfig, width: number, height: number): ViewParams {
  const box = randomResizedCropBox(rng, width, height, cfg.scale, cfg.ratio ?? DEFAULT_RATIO);
  const flip = rng.bernoulli(cfg.flipP);
  const jitter = rng.bernoulli(cfg.jitterP) ? sampleJitter(rng, cfg.jitter) : undefined;
  const gray = rng.bernoulli(cfg.grayscaleP);
  const blurSigma = rng.bernoulli(cfg.blurP) ? rng.uniform(cfg.blurSigma[0], cfg.blurSigma[1]) : undefined;
  const solar = rng.bernoulli(cfg.solarizeP);
  return { box, flip, jitter, grayscale: gray, blurSigma, solarize: solar };
}

/** The view as normalised HWC float32, size x size x 3. */
export async function renderView(image: RgbImage, params: ViewParams, cfg: ViewConfig): Promise<Float32Array> {
  const view: FloatImage = await cropResize(image, params.box, cfg.size, cfg.size);
  if (params.flip) flipHorizontal(view);
  if (params.jitter) colourJitter(view, params.jitter);
  if (params.grayscale) grayscale(view);
  if (params.blurSigma !== undefined) gaussianBlur(view, params.blurSigma, blurKernelSize(cfg.size));
  if (params.solarize) solarize(view);
  return normalise(view, cfg);
}

export interface EvalConfig extends NormaliseOptions {
  size: number;
  /** Crop fraction: the shorter side is resized to floor(size / resizeRatio) first (timm crop_pct). Default 0.875; 1 for 32 px CIFAR. */
  resizeRatio?: number;
}

/** Resize shorter side (bicubic) + centre crop + normalise: the evaluation view. */
export async function renderEvalView(image: RgbImage, cfg: EvalConfig): Promise<Float32Array> {
  const short = Math.floor(cfg.size / (cfg.resizeRatio ?? 0.875));
  // torchvision Resize(int): the longer side is truncated, not rounded.
  const [w, h] =
    image.width <= image.height
      ? [short, Math.floor((short * image.height) / image.width)]
      : [Math.floor((short * image.width) / image.height), short];
  const whole = { top: 0, left: 0, width: image.width, height: image.height };
  const resized = await cropResize(image, whole, w, h);
  const box = centreCropBox(w, h, cfg.size);
  const view = new Float32Array(cfg.size * cfg.size * 3);
  const rowLen = cfg.size * 3;
  for (let y = 0; y < cfg.size; y++) {
    const from = ((box.top + y) * w + box.left) * 3;
    view.set(resized.data.subarray(from, from + rowLen), y * rowLen);
  }
  return normalise({ data: view, width: cfg.size, height: cfg.size }, cfg);
}

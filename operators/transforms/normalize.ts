/** ToTensor + Normalize in one pass: 0..255 -> (x / 255 - mean) / std, per channel, HWC. */
import type { FloatImage } from './image';

export const IMAGENET_MEAN: readonly [number, number, number] = [0.485, 0.456, 0.406];
export const IMAGENET_STD: readonly [number, number, number] = [0.229, 0.224, 0.225];

export interface NormaliseOptions {
  mean?: readonly [number, number, number];
  std?: readonly [number, number, number];
}

/** In place; returns the data (the view's final Float32Array). */
export function normalise(image: FloatImage, opts: NormaliseOptions = {}): Float32Array {
  const mean = opts.mean ?? IMAGENET_MEAN;
  const std = opts.std ?? IMAGENET_STD;
  const scale = std.map((s) => 1 / (255 * s));
  const shift = mean.map((m, c) => m / std[c]);
  const d = image.data;
  for (let i = 0; i < d.length; i += 3) {
    d[i] = d[i] * scale[0] - shift[0];
    d[i + 1] = d[i + 1] * scale[1] - shift[1];
    d[i + 2] = d[i + 2] * scale[2] - shift[2];
  }
  return d;
}

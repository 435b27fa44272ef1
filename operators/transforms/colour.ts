/**
 * Colour transforms on FloatImage (0..255), in place, with torchvision's tensor semantics
 * (torchvision.transforms.functional_tensor): every blend clamps to [0, 255].
 */
import type { Rng } from '../../lib/rng';
import type { FloatImage } from './image';

/** ITU-R 601-2 luma, the weights of PIL's convert('L') that torchvision documents. */
const LUMA_R = 0.299, LUMA_G = 0.587, LUMA_B = 0.114;

const clamp255 = (x: number) => (x < 0 ? 0 : x > 255 ? 255 : x);

/** torchvision adjust_brightness: blend with black. */
export function adjustBrightness(image: FloatImage, factor: number): FloatImage {
  const d = image.data;
  for (let i = 0; i < d.length; i++) d[i] = clamp255(d[i] * factor);
  return image;
}

/** torchvision adjust_contrast: blend with the mean luma of the whole image. */
export function adjustContrast(image: FloatImage, factor: number): FloatImage {
  const d = image.data;
  let sum = 0;
  for (let i = 0; i < d.length; i += 3) sum += LUMA_R * d[i] + LUMA_G * d[i + 1] + LUMA_B * d[i + 2];
  const offset = (1 - factor) * (sum / (d.length / 3));
  for (let i = 0; i < d.length; i++) d[i] = clamp255(factor * d[i] + offset);
  return image;
}

/** torchvision adjust_saturation: blend each pixel with its own luma. */
export function adjustSaturation(image: FloatImage, factor: number): FloatImage {
  const d = image.data;
  const keep = 1 - factor;
  for (let i = 0; i < d.length; i += 3) {
    const grey = keep * (LUMA_R * d[i] + LUMA_G * d[i + 1] + LUMA_B * d[i + 2]);
    d[i] = clamp255(factor * d[i] + grey);
    d[i + 1] = clamp255(factor * d[i + 1] + grey);
    d[i + 2] = clamp255(factor * d[i + 2] + grey);
  }
  return image;
}

/**
 * torchvision adjust_hue: RGB -> HSV, h += factor (mod 1), HSV -> RGB, per pixel
 * (_rgb2hsv / _hsv2rgb, same branches and tie-breaks).
 */
export function adjustHue(image: FloatImage, factor: number): FloatImage {
  if (factor === 0) return image;
  const d = image.data;
  for (let i = 0; i < d.length; i += 3) {
    const r = d[i] / 255, g = d[i + 1] / 255, b = d[i + 2] / 255;
    const v = Math.max(r, g, b);
    const cr = v - Math.min(r, g, b);
    if (cr === 0) continue; // grey: hue undefined, pixel unchanged
    const s = cr / v;
    let h: number;
    if (v === r) h = (g - b) / cr; // torchvision: (bc - gc) = (g - b) / cr
    else if (v === g) h = 2 + (b - r) / cr;
    else h = 4 + (r - g) / cr;
    h = ((h / 6 + 1) % 1) + factor;
    h -= Math.floor(h); // mod 1 into [0, 1)
    const h6 = h * 6;
    const sector = Math.floor(h6) % 6;
    const f = h6 - Math.floor(h6);
    const p = clamp01(v * (1 - s));
    const q = clamp01(v * (1 - s * f));
    const t = clamp01(v * (1 - s * (1 - f)));
    let ro: number, go: number, bo: number;
    switch (sector) {
      case 0: ro = v; go = t; bo = p; break;
      case 1: ro = q; go = v; bo = p; break;
      case 2: ro = p; go = v; bo = t; break;
      case 3: ro = p; go = q; bo = v; break;
      case 4: ro = t; go = p; bo = v; break;
      default: ro = v; go = p; bo = q; break;
    }
    d[i] = ro * 255;
    d[i + 1] = go * 255;
    d[i + 2] = bo * 255;
  }
  return image;
}

const clamp01 = (x: number) => (x < 0 ? 0 : x > 1 ? 1 : x);

export interface JitterStrength {
  brightness: number;
  contrast: number;
  saturation: number;
  hue: number;
}

/** One draw of ColorJitter.get_params: an op order and the four factors. */
export interface JitterParams {
  order: number[]; // permutation of 0 brightness, 1 contrast, 2 saturation, 3 hue
  brightness: number;
  contrast: number;
  saturation: number;
  hue: number;
}

/** Factors uniform in [max(0, 1 - x), 1 + x]; hue uniform in [-h, h]; order a random permutation. */
export function sampleJitter(rng: Rng, s: JitterStrength): JitterParams {
  const order = rng.shuffle([0, 1, 2, 3]) as number[];
  const factor = (x: number) => rng.uniform(Math.max(0, 1 - x), 1 + x);
  return {
    order,
    brightness: factor(s.brightness),
    contrast: factor(s.contrast),
    saturation: factor(s.saturation),
    hue: rng.uniform(-s.hue, s.hue),
  };
}

export function colourJitter(image: FloatImage, p: JitterParams): FloatImage {
  for (const op of p.order) {
    // A factor of exactly 1 (or hue 0) is the identity: skip the pass.
    if (op === 0 && p.brightness !== 1) adjustBrightness(image, p.brightness);
    else if (op === 1 && p.contrast !== 1) adjustContrast(image, p.contrast);
    else if (op === 2 && p.saturation !== 1) adjustSaturation(image, p.saturation);
    else if (op === 3 && p.hue !== 0) adjustHue(image, p.hue);
  }
  return image;
}

/** rgb_to_grayscale with 3 output channels. */
export function grayscale(image: FloatImage): FloatImage {
  const d = image.data;
  for (let i = 0; i < d.length; i += 3) d[i] = d[i + 1] = d[i + 2] = LUMA_R * d[i] + LUMA_G * d[i + 1] + LUMA_B * d[i + 2];
  return image;
}

/** Invert every value at or above the threshold (torchvision solarize, 0..255 scale). */
export function solarize(image: FloatImage, threshold = 128): FloatImage {
  const d = image.data;
  for (let i = 0; i < d.length; i++) if (d[i] >= threshold) d[i] = 255 - d[i];
  return image;
}

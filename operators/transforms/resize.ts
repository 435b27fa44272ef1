/**
 * Crop + bicubic resize, two implementations:
 * - resampleJs: PIL's antialiased bicubic (Catmull-Rom, a = -0.5, support widened by the
 *   downscale factor), separable, float32 out, the row loops as SIMD kernels (simd.wat).
 *   Matches PIL to ~0.3 grey levels on average.
 * - resampleSharp: sharp extract + resize with kernel 'cubic'. Close to PIL when shrinking
 *   (~0.6 levels on average) but not when enlarging (~20 levels off on high-frequency
 *   content: libvips' upsampling is not PIL's), and each call is a trip through libuv's pool.
 * Measured on the 2-core dev box (`npx ts-node bench/data-path.ts --resize`, ms per view):
 *   crop 1000 -> 224: JS 4.9, sharp 3.2     crop 500 -> 224: JS 1.4, sharp 1.5
 *   crop 180 -> 224:  JS 0.5, sharp 2.5     crop 60 -> 96:   JS 0.1, sharp 0.9
 * so sharp only takes shrinks by 2x or more (big source images); everything else is JS.
 * The choice is a pure function of the sizes (never of timing), so a view is the same
 * whichever thread or worker computes it.
 */
import sharp from 'sharp';
import type { RgbImage } from '../../sources/types';
import type { Box, FloatImage } from './image';
import { arena, f32, i32, simd } from './simd';

/** Shrink factor (in both directions) from which sharp does the resize (see above). */
export const SHARP_MIN_SHRINK = 2;

function cubic(x: number): number {
  const a = -0.5;
  x = Math.abs(x);
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

/** Per output pixel: first source index and normalised weights (PIL's precompute_coeffs). */
interface Taps {
  start: Int32Array;
  count: Int32Array;
  weights: Float32Array; // outSize x maxTaps
  maxTaps: number;
}

function taps(inSize: number, outSize: number): Taps {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = 2 * filterScale;
  const maxTaps = Math.ceil(support) * 2 + 1;
  const start = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const weights = new Float32Array(outSize * maxTaps);
  for (let o = 0; o < outSize; o++) {
    const centre = (o + 0.5) * scale;
    const lo = Math.max(0, Math.floor(centre - support + 0.5));
    const hi = Math.min(inSize, Math.floor(centre + support + 0.5));
    let sum = 0;
    for (let i = lo; i < hi; i++) sum += cubic((i - centre + 0.5) / filterScale);
    for (let i = lo; i < hi; i++) weights[o * maxTaps + i - lo] = cubic((i - centre + 0.5) / filterScale) / sum;
    start[o] = lo;
    count[o] = hi - lo;
  }
  return { start, count, weights, maxTaps };
}

/** Crop `box` out of `image` and resize it to outW x outH (float32 0..255, clamped as PIL's uint8 result). */
export function resampleJs(image: RgbImage | FloatImage, box: Box, outW: number, outH: number): FloatImage {
  const tx = taps(box.width, outW);
  const ty = taps(box.height, outH);
  const cropLen = box.width * 3;
  const rowLen = outW * 3;
  const [src, start, count, weights, mid, out] = arena([
    box.height * cropLen,
    outW,
    outW,
    tx.weights.length,
    box.height * rowLen,
    outH * rowLen,
  ]);
  // The crop, as float32 rows in the arena (typed-array set converts uint8 natively).
  const srcView = f32(src, box.height * cropLen);
  for (let y = 0; y < box.height; y++) {
    const from = ((box.top + y) * image.width + box.left) * 3;
    srcView.set(image.data.subarray(from, from + cropLen), y * cropLen);
  }
  i32(start, outW).set(tx.start);
  i32(count, outW).set(tx.count);
  f32(weights, tx.weights.length).set(tx.weights);
  // Horizontal pass, row by row (SIMD over the 3 channels of a pixel).
  for (let y = 0; y < box.height; y++) {
    simd.hresample(mid + 4 * y * rowLen, src + 4 * y * cropLen, start, count, weights, tx.maxTaps, outW);
  }
  // Vertical pass: each output row a weighted sum of whole mid rows (SIMD over the row).
  for (let y = 0; y < outH; y++) {
    const dst = out + 4 * y * rowLen;
    const w0 = y * ty.maxTaps;
    simd.scale(dst, mid + 4 * ty.start[y] * rowLen, ty.weights[w0], rowLen);
    for (let k = 1; k < ty.count[y]; k++) simd.axpy(dst, mid + 4 * (ty.start[y] + k) * rowLen, ty.weights[w0 + k], rowLen);
  }
  // PIL rounds and clamps to uint8 here; clamping keeps the later colour maths in range.
  simd.clamp(out, 0, 255, outH * rowLen);
  return { data: f32(out, outH * rowLen).slice(), width: outW, height: outH };
}

/** The same crop + resize with libvips (uint8 result, as PIL's). */
export async function resampleSharp(image: RgbImage, box: Box, outW: number, outH: number): Promise<FloatImage> {
  const raw = { width: image.width, height: image.height, channels: 3 as const };
  let pipeline = sharp(image.data, { raw });
  const whole = box.left === 0 && box.top === 0 && box.width === image.width && box.height === image.height;
  if (!whole) pipeline = pipeline.extract({ left: box.left, top: box.top, width: box.width, height: box.height });
  const data = await pipeline.resize(outW, outH, { kernel: 'cubic', fit: 'fill' }).raw().toBuffer();
  return { data: Float32Array.from(data), width: outW, height: outH };
}

/** Crop + resize with whichever implementation suits the sizes (see the top of this file). */
export function cropResize(image: RgbImage, box: Box, outW: number, outH: number): FloatImage | Promise<FloatImage> {
  if (box.width === outW && box.height === outH) return cropOnly(image, box);
  const bigShrink = box.width >= SHARP_MIN_SHRINK * outW && box.height >= SHARP_MIN_SHRINK * outH;
  return bigShrink ? resampleSharp(image, box, outW, outH) : resampleJs(image, box, outW, outH);
}

function cropOnly(image: RgbImage | FloatImage, box: Box): FloatImage {
  const out = new Float32Array(box.width * box.height * 3);
  const rowLen = box.width * 3;
  for (let y = 0; y < box.height; y++) {
    const from = ((box.top + y) * image.width + box.left) * 3;
    for (let i = 0; i < rowLen; i++) out[y * rowLen + i] = image.data[from + i];
  }
  return { data: out, width: box.width, height: box.height };
}

/**
 * Gaussian blur as torchvision's GaussianBlur/gaussian_blur: a kernel of fixed odd size whose
 * taps are exp(-x^2 / 2 sigma^2) normalised, reflect padding, applied separably (rows then
 * columns; the 2-D kernel torchvision builds is the outer product of the 1-D one).
 *
 * Kernel size follows BYOL: ~10% of the image side, odd (23 at 224, 9 at 96, 3 at 32).
 * Taps far out in the tail carry almost nothing (sigma <= 2 against a radius of 11 at 224), so
 * the outermost taps are dropped while their total weight stays below 1e-6 of the kernel and
 * the rest renormalised: at most ~0.001 grey levels from the full kernel, and about half the
 * work on average over sigma in (0.1, 2).
 */
import type { FloatImage } from './image';
import { arena, f32, simd } from './simd';

export function blurKernelSize(imageSize: number): number {
  return Math.max(3, 2 * Math.floor((imageSize * 0.1) / 2) + 1);
}

/** torchvision _get_gaussian_kernel1d, then the negligible tails trimmed (see above). */
export function gaussianKernel(size: number, sigma: number, tailMass = 1e-6): Float64Array {
  const half = (size - 1) / 2;
  const full = new Float64Array(size);
  let sum = 0;
  for (let i = 0; i < size; i++) sum += full[i] = Math.exp(-0.5 * ((i - half) / sigma) ** 2);
  for (let i = 0; i < size; i++) full[i] /= sum;
  let r = half;
  let dropped = 0;
  while (r > 0 && dropped + 2 * full[half - r] < tailMass) dropped += 2 * full[half - r--];
  const kernel = full.slice(half - r, half + r + 1);
  const kept = 1 - dropped;
  for (let i = 0; i < kernel.length; i++) kernel[i] /= kept;
  return kernel;
}

/** PyTorch 'reflect' padding index (edge not repeated): -1 -> 1, n -> n - 2. */
function reflect(i: number, n: number): number {
  if (n === 1) return 0;
  while (i < 0 || i >= n) i = i < 0 ? -i : 2 * (n - 1) - i;
  return i;
}

/** Blur in place with the kernel for `sigma` at torchvision's kernel size `size`. */
export function gaussianBlur(image: FloatImage, sigma: number, size = blurKernelSize(Math.min(image.width, image.height))): FloatImage {
  const kernel = gaussianKernel(size, sigma);
  const r = (kernel.length - 1) / 2;
  if (r === 0) return image;
  const { width, height } = image;
  const rowLen = width * 3;
  const n = rowLen * height;
  // The kernel is symmetric, so taps go in pairs: w_k * (a[i - k] + a[i + k]), k outermost,
  // each step one SIMD multiply-add over a whole row (simd.wat).
  const [src, pad, tmp, out] = arena([n, rowLen + 6 * r, n, n]);
  const srcView = f32(src, n);
  srcView.set(image.data);
  const padView = f32(pad, rowLen + 6 * r);
  // Rows: copy each row into a reflect-padded row, then filter it into tmp.
  for (let y = 0; y < height; y++) {
    const row = y * rowLen;
    padView.set(srcView.subarray(row, row + rowLen), 3 * r);
    for (let x = 1; x <= r; x++) {
      for (let c = 0; c < 3; c++) {
        padView[3 * (r - x) + c] = srcView[row + 3 * reflect(-x, width) + c];
        padView[3 * (r + width - 1 + x) + c] = srcView[row + 3 * reflect(width - 1 + x, width) + c];
      }
    }
    const centre = pad + 12 * r;
    const dst = tmp + 4 * row;
    simd.scale(dst, centre, kernel[r], rowLen);
    for (let k = 1; k <= r; k++) simd.axpy2(dst, centre - 12 * k, centre + 12 * k, kernel[r + k], rowLen);
  }
  // Columns: out row y = sum_k w_k * (tmp row reflect(y - k) + tmp row reflect(y + k)).
  for (let y = 0; y < height; y++) {
    const dst = out + 4 * y * rowLen;
    simd.scale(dst, tmp + 4 * y * rowLen, kernel[r], rowLen);
    for (let k = 1; k <= r; k++) {
      simd.axpy2(dst, tmp + 4 * reflect(y - k, height) * rowLen, tmp + 4 * reflect(y + k, height) * rowLen, kernel[r + k], rowLen);
    }
  }
  image.data.set(f32(out, n));
  return image;
}

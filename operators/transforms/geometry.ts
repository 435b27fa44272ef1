/** Crop boxes (random-resized and centre) and the horizontal flip. */
import type { Rng } from '../../lib/rng';
import { roundHalfEven, type Box, type FloatImage } from './image';

export const DEFAULT_RATIO: [number, number] = [3 / 4, 4 / 3];

/**
 * torchvision RandomResizedCrop.get_params, step for step: 10 tries of an area fraction
 * uniform in `scale` and an aspect ratio log-uniform in `ratio`; the first box that fits wins,
 * its corner uniform over the valid positions. Otherwise a centre crop of the whole image,
 * narrowed to the ratio range.
 */
export function randomResizedCropBox(
  rng: Rng,
  width: number,
  height: number,
  scale: readonly [number, number],
  ratio: readonly [number, number] = DEFAULT_RATIO,
): Box {
  const area = width * height;
  const logLo = Math.log(ratio[0]);
  const logHi = Math.log(ratio[1]);
  for (let attempt = 0; attempt < 10; attempt++) {
    const targetArea = area * rng.uniform(scale[0], scale[1]);
    const aspect = Math.exp(rng.uniform(logLo, logHi));
    const w = roundHalfEven(Math.sqrt(targetArea * aspect));
    const h = roundHalfEven(Math.sqrt(targetArea / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      const top = rng.int(height - h + 1);
      const left = rng.int(width - w + 1);
      return { top, left, height: h, width: w };
    }
  }
  const inRatio = width / height;
  let w = width;
  let h = height;
  if (inRatio < Math.min(...ratio)) h = roundHalfEven(w / Math.min(...ratio));
  else if (inRatio > Math.max(...ratio)) w = roundHalfEven(h * Math.max(...ratio));
  return { top: Math.floor((height - h) / 2), left: Math.floor((width - w) / 2), height: h, width: w };
}

/** torchvision center_crop's box (offsets rounded half-to-even, as Python's round). */
export function centreCropBox(width: number, height: number, size: number): Box {
  if (size > width || size > height) throw new Error(`centre crop ${size} larger than image ${width}x${height}`);
  return {
    top: roundHalfEven((height - size) / 2),
    left: roundHalfEven((width - size) / 2),
    height: size,
    width: size,
  };
}

/** Mirror left-right, in place. */
export function flipHorizontal(image: FloatImage): FloatImage {
  const { data, width, height } = image;
  for (let y = 0; y < height; y++) {
    const row = y * width * 3;
    for (let a = row, b = row + (width - 1) * 3; a < b; a += 3, b -= 3) {
      for (let c = 0; c < 3; c++) {
        const t = data[a + c];
        data[a + c] = data[b + c];
        data[b + c] = t;
      }
    }
  }
  return image;
}

/**
 * The working image of the view transforms: interleaved RGB, HWC, float32 on the 0..255 scale.
 *
 * Why float on 0..255: the colour ops chain (jitter in random order, grayscale, blur) without
 * re-quantising to uint8 between steps, and solarize's threshold 128 stays the exact integer
 * comparison torchvision makes on uint8 images (x >= 128 on a crop of integer pixels).
 */
export interface FloatImage {
  data: Float32Array;
  width: number;
  height: number;
}

/** A crop box in pixels, torchvision's (i, j, h, w) = (top, left, height, width). */
export interface Box {
  top: number;
  left: number;
  height: number;
  width: number;
}

/** Python's round(): half to even (torchvision's crop arithmetic uses it). */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

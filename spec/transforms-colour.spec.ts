import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Rng } from '../lib/rng';
import {
  adjustBrightness,
  adjustContrast,
  adjustHue,
  adjustSaturation,
  colourJitter,
  grayscale,
  normalise,
  sampleJitter,
  solarize,
  IMAGENET_MEAN,
  IMAGENET_STD,
  type FloatImage,
} from '../operators/transforms';

const PIXELS = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [200, 120, 40], [10, 20, 30], [128, 128, 128], [250, 250, 5], [90, 10, 200]];
const image = (): FloatImage => ({ data: Float32Array.from(PIXELS.flat()), width: 4, height: 2 });

function randomImage(seed: number, width = 16, height = 12): FloatImage {
  const rng = new Rng(seed);
  return { data: Float32Array.from({ length: width * height * 3 }, () => rng.int(256)), width, height };
}

function close(got: Float32Array, want: number[], tol: number, what: string) {
  assert.is(got.length, want.length);
  for (let i = 0; i < want.length; i++) assert.ok(Math.abs(got[i] - want[i]) <= tol, `${what}[${i}]: ${got[i]} vs ${want[i]}`);
}

// Expected values: torchvision 0.14 functional adjust_* on the same pixels as a float tensor,
// times 255 (torchvision's contrast/saturation luma is 0.2989 where ours is 0.299: tol 0.05).
test('colour ops agree with torchvision', () => {
  close(adjustHue(image(), 0.2).data, [204, 255, 0, 0, 204, 255, 255, 0, 204, 88, 200, 40, 24, 10, 30, 128, 128, 128, 5, 250, 54, 200, 10, 82], 1e-3, 'hue 0.2');
  close(adjustHue(image(), -0.45).data, [0, 178.5, 255, 255, 0, 178.5, 178.5, 255, 0, 40, 72, 200, 30, 26, 10, 128, 128, 128, 78.5, 5, 250, 63, 200, 10], 1e-3, 'hue -0.45');
  const sat = [129.854, 53.354, 53.354, 104.78, 181.279, 104.78, 20.349, 20.349, 96.849, 154.346, 130.346, 106.346, 15.704, 18.704, 21.704, 127.991, 127.991, 127.991, 230.431, 230.431, 156.932, 65.9, 41.9, 98.9];
  close(adjustSaturation(image(), 0.3).data, sat, 0.05, 'saturation 0.3');
  const con = [255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 130.987, 2.987, 0, 0, 0, 143.787, 143.787, 143.787, 255, 255, 0, 82.987, 0, 255];
  close(adjustContrast(image(), 1.6).data, con, 0.05, 'contrast 1.6');
  const bri = [255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 168, 56, 14, 28, 42, 179.2, 179.2, 179.2, 255, 255, 7, 126, 14, 255];
  close(adjustBrightness(image(), 1.4).data, bri, 1e-3, 'brightness 1.4');
});

test('colour jitter with factors 1 and hue 0 is the identity, in any order', () => {
  for (const order of [[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2]]) {
    const img = randomImage(1);
    const before = img.data.slice();
    colourJitter(img, { order, brightness: 1, contrast: 1, saturation: 1, hue: 0 });
    assert.equal(Array.from(img.data), Array.from(before));
  }
  // The blends themselves at factor 1 (not just skipped): identity up to float rounding.
  const img = randomImage(2);
  const before = Array.from(img.data);
  adjustContrast(adjustSaturation(adjustBrightness(img, 1), 1), 1);
  close(img.data, before, 1e-3, 'factor-1 blends');
  close(adjustHue(adjustHue(randomImage(2), 0.3), -0.3).data, before, 1e-3, 'hue there and back');
});

test('jitter params: factors within [max(0, 1 - x), 1 + x], hue within [-h, h], order a permutation', () => {
  const strength = { brightness: 0.4, contrast: 0.4, saturation: 0.2, hue: 0.1 };
  const orders = new Set<string>();
  for (let i = 0; i < 2000; i++) {
    const p = sampleJitter(new Rng(3, i), strength);
    assert.ok(p.brightness >= 0.6 && p.brightness <= 1.4 && p.contrast >= 0.6 && p.contrast <= 1.4);
    assert.ok(p.saturation >= 0.8 && p.saturation <= 1.2 && Math.abs(p.hue) <= 0.1);
    assert.equal([...p.order].sort(), [0, 1, 2, 3]);
    orders.add(p.order.join());
  }
  assert.is(orders.size, 24, 'all 24 orders occur');
  const wide = sampleJitter(new Rng(0), { brightness: 3, contrast: 0, saturation: 0, hue: 0 });
  assert.ok(wide.brightness >= 0 && wide.contrast === 1 && wide.saturation === 1 && wide.hue === 0);
});

test('grayscale: all three channels equal the ITU-R 601 luma', () => {
  const img = grayscale(image());
  for (let p = 0; p < PIXELS.length; p++) {
    const [r, g, b] = PIXELS[p];
    const luma = 0.299 * r + 0.587 * g + 0.114 * b;
    for (let c = 0; c < 3; c++) assert.ok(Math.abs(img.data[p * 3 + c] - luma) < 1e-3);
  }
  // Saturation 0 is the same thing.
  close(adjustSaturation(image(), 0).data, Array.from(grayscale(image()).data), 1e-3, 'saturation 0');
});

test('solarize inverts exactly the values at or above 128', () => {
  const values = [0, 1, 127, 127.5, 128, 129, 200, 254, 255];
  const img = solarize({ data: Float32Array.from(values), width: 3, height: 1 });
  assert.equal(Array.from(img.data), [0, 1, 127, 127.5, 127, 126, 55, 1, 0]);
});

test('normalise: (x / 255 - mean) / std per channel; ImageNet-like statistics map to ~N(0, 1)', () => {
  const mean = IMAGENET_MEAN.map((m) => m * 255);
  const flat = normalise({ data: Float32Array.from([...mean, 255, 0, 255]), width: 2, height: 1 });
  close(flat, [0, 0, 0, (1 - 0.485) / 0.229, -0.456 / 0.224, (1 - 0.406) / 0.225], 1e-5, 'normalise');
  // Pixels drawn with the ImageNet mean/std per channel come out with mean 0 and std 1.
  const rng = new Rng(5);
  const n = 20000;
  const data = new Float32Array(n * 3);
  for (let i = 0; i < n; i++) for (let c = 0; c < 3; c++) data[i * 3 + c] = 255 * (IMAGENET_MEAN[c] + IMAGENET_STD[c] * rng.normal());
  const out = normalise({ data, width: n, height: 1 });
  for (let c = 0; c < 3; c++) {
    let s = 0, s2 = 0;
    for (let i = 0; i < n; i++) (s += out[i * 3 + c]), (s2 += out[i * 3 + c] ** 2);
    const m = s / n;
    assert.ok(Math.abs(m) < 0.03, `channel ${c} mean ${m}`);
    assert.ok(Math.abs(Math.sqrt(s2 / n - m * m) - 1) < 0.03, `channel ${c} std`);
  }
  // Custom mean/std.
  close(normalise({ data: Float32Array.from([255, 0, 127.5]), width: 1, height: 1 }, { mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5] }), [1, -1, 0], 1e-6, 'custom');
});

test.run();

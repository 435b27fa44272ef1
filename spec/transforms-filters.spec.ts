/** Blur and crop+resize (the SIMD-backed filters) against plain references, PIL and the .wat. */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Rng } from '../lib/rng';
import {
  blurKernelSize,
  cropResize,
  gaussianBlur,
  gaussianKernel,
  resampleJs,
  resampleSharp,
  SIMD_WASM_BASE64,
  type Box,
  type FloatImage,
} from '../operators/transforms';
import type { RgbImage } from '../sources/types';

function randomImage(seed: number, width: number, height: number): FloatImage {
  const rng = new Rng(seed);
  return { data: Float32Array.from({ length: width * height * 3 }, () => rng.int(256)), width, height };
}

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};

/** torchvision gaussian_blur, written out plainly: full kernel, 2-D sum, reflect padding. */
function referenceBlur(img: FloatImage, sigma: number, size: number): Float32Array {
  const half = (size - 1) / 2;
  const k = Array.from({ length: size }, (_, i) => Math.exp(-0.5 * ((i - half) / sigma) ** 2));
  const sum = k.reduce((a, b) => a + b);
  const w = k.map((v) => v / sum);
  const reflect = (i: number, n: number) => (i < 0 ? -i : i >= n ? 2 * (n - 1) - i : i);
  const out = new Float32Array(img.data.length);
  for (let y = 0; y < img.height; y++)
    for (let x = 0; x < img.width; x++)
      for (let c = 0; c < 3; c++) {
        let s = 0;
        for (let j = 0; j < size; j++)
          for (let i = 0; i < size; i++) s += w[j] * w[i] * img.data[(reflect(y + j - half, img.height) * img.width + reflect(x + i - half, img.width)) * 3 + c];
        out[(y * img.width + x) * 3 + c] = s;
      }
  return out;
}

test('blur kernel sizes as BYOL (~10% of the side, odd) and normalised kernels', () => {
  assert.equal([224, 96, 32, 16].map(blurKernelSize), [23, 9, 3, 3]);
  for (const sigma of [0.1, 0.5, 1, 2]) {
    const k = gaussianKernel(23, sigma);
    assert.ok(Math.abs(k.reduce((a, b) => a + b) - 1) < 1e-12);
    assert.is(k.length % 2, 1);
  }
  assert.is(gaussianKernel(23, 0.1).length, 1, 'sigma 0.1: all but the centre tap are ~0');
  assert.is(gaussianKernel(23, 2).length, 21);
});

test('blur matches the plain 2-D torchvision blur (reflect padding, full kernel)', () => {
  for (const [w, h, sigma, size] of [[30, 20, 1.3, 23], [24, 24, 2, 9], [7, 5, 0.7, 3], [40, 12, 1.9, 23]] as const) {
    const img = randomImage(w * h, w, h);
    const want = referenceBlur(img, sigma, size);
    const got = gaussianBlur({ ...img, data: img.data.slice() }, sigma, size).data;
    assert.ok(maxDiff(got, want) < 0.01, `${w}x${h} sigma ${sigma}: max diff ${maxDiff(got, want)}`);
  }
});

test('blur preserves the mean (exactly a constant image; a random one to reflect-padding error)', () => {
  const flat: FloatImage = { data: new Float32Array(32 * 32 * 3).fill(77), width: 32, height: 32 };
  assert.ok(maxDiff(gaussianBlur(flat, 1.7, 23).data, new Float32Array(flat.data.length).fill(77)) < 1e-3);
  const img = randomImage(3, 96, 96);
  const mean = (d: Float32Array) => d.reduce((a, b) => a + b, 0) / d.length;
  const before = mean(img.data);
  assert.ok(Math.abs(mean(gaussianBlur(img, 2, 9).data) - before) < 0.1);
});

/** PIL's antialiased bicubic, written out plainly: 2-D sum of separable weights. */
function referenceResample(img: RgbImage, box: Box, outW: number, outH: number): Float32Array {
  const cubic = (x: number) => {
    x = Math.abs(x);
    return x < 1 ? (1.5 * x - 2.5) * x * x + 1 : x < 2 ? ((-0.5 * x + 2.5) * x - 4) * x + 2 : 0;
  };
  const weights = (inSize: number, outSize: number, o: number) => {
    const scale = inSize / outSize;
    const fs = Math.max(scale, 1);
    const centre = (o + 0.5) * scale;
    const w: number[] = [];
    for (let i = 0; i < inSize; i++) w.push(cubic((i + 0.5 - centre) / fs)); // zero beyond the support
    const s = w.reduce((a, b) => a + b);
    return w.map((v) => v / s);
  };
  const out = new Float32Array(outW * outH * 3);
  for (let y = 0; y < outH; y++) {
    const wy = weights(box.height, outH, y);
    for (let x = 0; x < outW; x++) {
      const wx = weights(box.width, outW, x);
      for (let c = 0; c < 3; c++) {
        let s = 0;
        for (let j = 0; j < box.height; j++)
          for (let i = 0; i < box.width; i++) s += wy[j] * wx[i] * img.data[((box.top + j) * img.width + box.left + i) * 3 + c];
        out[(y * outW + x) * 3 + c] = Math.min(255, Math.max(0, s));
      }
    }
  }
  return out;
}

const pattern = (width: number, height: number): RgbImage => {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) for (let c = 0; c < 3; c++) data[(y * width + x) * 3 + c] = (x * 37 + y * 91 + c * 53) % 256;
  return { data, width, height };
};

test('bicubic crop+resize matches the plain 2-D reference, up and down, odd sizes', () => {
  const img = pattern(41, 33);
  for (const [box, w, h] of [
    [{ top: 2, left: 1, width: 9, height: 7 }, 13, 11],
    [{ top: 0, left: 0, width: 41, height: 33 }, 5, 4],
    [{ top: 5, left: 3, width: 30, height: 20 }, 17, 29],
    [{ top: 1, left: 1, width: 3, height: 3 }, 32, 32],
  ] as const) {
    const got = resampleJs(img, box, w, h).data;
    const want = referenceResample(img, box, w, h);
    assert.ok(maxDiff(got, want) < 1e-3, `${JSON.stringify(box)} -> ${w}x${h}: ${maxDiff(got, want)}`);
  }
});

// Expected: PIL 9.4 Image.crop((1, 2, 10, 9)).resize((13, 11), BICUBIC) and .resize((5, 4), BICUBIC)
// of the 12x10 pattern. PIL rounds to uint8 between its two passes, we do not: small diffs.
test('bicubic crop+resize agrees with PIL', () => {
  const img = pattern(12, 10);
  const up = resampleJs(img, { top: 2, left: 1, width: 9, height: 7 }, 13, 11).data;
  const pilRow0 = [246, 8, 61, 105, 27, 80, 0, 56, 108, 27, 81, 133, 54, 107, 171, 79, 131, 204, 105, 158, 229, 129, 197, 255, 162, 241, 182, 201, 240, 22, 244, 54, 51, 122, 15, 86, 0, 52, 105];
  const pilRow5 = [250, 31, 84, 120, 50, 103, 8, 79, 132, 50, 104, 157, 77, 130, 183, 102, 155, 217, 128, 181, 234, 154, 207, 72, 179, 244, 11, 206, 246, 55, 248, 74, 80, 136, 40, 109, 6, 75, 128];
  assert.ok(maxDiff(up.subarray(0, 39), pilRow0) <= 3, `row 0: ${maxDiff(up.subarray(0, 39), pilRow0)}`);
  assert.ok(maxDiff(up.subarray(5 * 39, 6 * 39), pilRow5) <= 3, `row 5: ${maxDiff(up.subarray(5 * 39, 6 * 39), pilRow5)}`);
  const down = resampleJs(img, { top: 0, left: 0, width: 12, height: 10 }, 5, 4).data;
  const pilDown = [94, 125, 133, 133, 157, 134, 125, 125, 138, 100, 123, 139, 142, 112, 108, 117, 132, 141, 107, 126, 126, 129, 150, 133, 124, 132, 145, 109, 123, 129, 132, 146, 129, 123, 131, 144, 106, 126, 126, 129, 148, 131, 123, 138, 145, 143, 113, 131, 132, 155, 126, 131, 130, 136, 98, 122, 131, 130, 161, 126];
  assert.ok(maxDiff(down, pilDown) <= 1, `down: ${maxDiff(down, pilDown)}`);
});

test('cropResize: plain crop when no resize; sharp only for big shrinks, close to the JS result', async () => {
  const img = pattern(300, 280);
  const box = { top: 10, left: 20, width: 32, height: 32 };
  const crop = (await cropResize(img, box, 32, 32)).data;
  assert.is(crop[0], img.data[(10 * 300 + 20) * 3]);
  assert.ok(!(cropResize(img, { top: 0, left: 0, width: 200, height: 200 }, 150, 150) instanceof Promise), 'small shrink: JS');
  const big = { top: 0, left: 0, width: 300, height: 280 };
  const viaSharp = cropResize(img, big, 100, 100);
  assert.ok(viaSharp instanceof Promise, 'shrink by 2.8x: sharp');
  // A smooth image (sharp and PIL part ways only on high-frequency content).
  const smooth: RgbImage = { data: new Uint8Array(300 * 280 * 3), width: 300, height: 280 };
  for (let i = 0; i < smooth.data.length; i++) smooth.data[i] = Math.round(127 + 100 * Math.sin(i / 3 / 300 / 20) * Math.cos((i % 900) / 90));
  const a = (await resampleSharp(smooth, big, 100, 100)).data;
  const b = resampleJs(smooth, big, 100, 100).data;
  assert.ok(maxDiff(a, b) < 3, `sharp vs JS ${maxDiff(a, b)}`);
});

test('the embedded wasm is simd.wat assembled (when wat2wasm is installed)', () => {
  const wat = path.join(__dirname, '../operators/transforms/simd.wat');
  const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'mimref-wat-')), 'simd.wasm');
  const run = spawnSync('wat2wasm', [wat, '-o', out]);
  if (run.error) return void console.log(`  (skipped: ${run.error.message})`);
  assert.is(run.status, 0, String(run.stderr));
  assert.is(fs.readFileSync(out).toString('base64'), SIMD_WASM_BASE64, 'regenerate SIMD_WASM_BASE64 in simd.ts');
});

test.run();

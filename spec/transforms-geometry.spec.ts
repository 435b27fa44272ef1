import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Rng } from '../lib/rng';
import { centreCropBox, flipHorizontal, randomResizedCropBox, roundHalfEven, type FloatImage } from '../operators/transforms';

test('roundHalfEven is Python round()', () => {
  assert.equal([0.5, 1.5, 2.5, 3.5, 2.4, 2.6, 7].map(roundHalfEven), [0, 2, 2, 4, 2, 3, 7]);
});

test('random resized crop: boxes inside the image, area and ratio in range, over many draws', () => {
  for (const [width, height, scale] of [[256, 256, [0.25, 1]], [500, 375, [0.05, 0.25]], [32, 32, [0.2, 1]], [97, 301, [0.08, 1]]] as const) {
    const fallback = JSON.stringify(randomResizedCropBox(new Rng(0), width, height, [2, 2])); // area > image: always falls back
    let fallbacks = 0;
    for (let i = 0; i < 3000; i++) {
      const b = randomResizedCropBox(new Rng(7, 0, i), width, height, scale);
      assert.ok(b.top >= 0 && b.left >= 0 && b.width > 0 && b.height > 0, JSON.stringify(b));
      assert.ok(b.top + b.height <= height && b.left + b.width <= width, `${JSON.stringify(b)} inside ${width}x${height}`);
      // w and h are the sampled sqrt(area * ratio), sqrt(area / ratio) rounded to whole pixels,
      // which moves area and ratio by at most this relative amount.
      const slack = 0.5 / b.width + 0.5 / b.height + 1e-9;
      const area = (b.width * b.height) / (width * height);
      const ratio = b.width / b.height;
      const inRange =
        area >= scale[0] * (1 - slack) ** 2 && area <= scale[1] * (1 + slack) ** 2 && ratio >= (3 / 4) * (1 - slack) ** 2 && ratio <= (4 / 3) * (1 + slack) ** 2;
      if (!inRange) {
        assert.is(JSON.stringify(b), fallback, `out of range and not the fallback: ${JSON.stringify(b)} area ${area} ratio ${ratio}`);
        fallbacks++;
      }
    }
    assert.ok(fallbacks < 30, `${fallbacks} fallbacks`);
  }
});

test('random resized crop: corners spread over the valid range', () => {
  const lefts = new Set<number>();
  for (let i = 0; i < 500; i++) lefts.add(randomResizedCropBox(new Rng(1, i), 256, 256, [0.25, 0.25]).left);
  assert.ok(lefts.size > 60, `${lefts.size} distinct left edges`);
});

test('random resized crop: fallback is the centre crop clamped to the ratio range', () => {
  // No 10% box of a 1000x10 strip fits a ratio in [3/4, 4/3] with h <= 10 -> fallback.
  assert.equal(randomResizedCropBox(new Rng(0), 1000, 10, [0.5, 1]), { top: 0, left: Math.floor((1000 - 13) / 2), height: 10, width: 13 });
  assert.equal(randomResizedCropBox(new Rng(0), 10, 1000, [0.5, 1]), { top: Math.floor((1000 - 13) / 2), left: 0, height: 13, width: 10 });
});

test('centre crop box as torchvision center_crop', () => {
  assert.equal(centreCropBox(256, 256, 224), { top: 16, left: 16, height: 224, width: 224 });
  assert.equal(centreCropBox(257, 300, 224), { top: 38, left: 16, height: 224, width: 224 }); // 16.5 -> 16, 38 -> 38
  assert.throws(() => centreCropBox(100, 300, 224));
});

test('horizontal flip mirrors pixels exactly and twice is the identity', () => {
  const width = 5, height = 3;
  const data = Float32Array.from({ length: width * height * 3 }, (_, i) => i);
  const img: FloatImage = { data: data.slice(), width, height };
  flipHorizontal(img);
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++)
      for (let c = 0; c < 3; c++) assert.is(img.data[(y * width + x) * 3 + c], data[(y * width + (width - 1 - x)) * 3 + c]);
  flipHorizontal(img);
  assert.equal(Array.from(img.data), Array.from(data));
});

test.run();

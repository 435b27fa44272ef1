/** decode(): sharp to 8-bit RGB, in order; corrupt, truncated and non-image files skipped and reported. */
import { from, lastValueFrom, toArray } from 'rxjs';
import sharp from 'sharp';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { decode, decodeImage } from '../operators/decode';
import type { EncodedSample } from '../sources/types';

const W = 48, H = 40;
function pixels(seed: number, channels = 3): Buffer {
  const b = Buffer.alloc(W * H * channels);
  for (let i = 0; i < b.length; i++) b[i] = Math.round(127 + 120 * Math.sin(i * 0.01 * (seed + 1)));
  return b;
}
const jpeg = (seed: number) => sharp(pixels(seed), { raw: { width: W, height: H, channels: 3 } }).jpeg({ quality: 95 }).toBuffer();
const sample = (index: number, bytes: Buffer, extra: Partial<EncodedSample> = {}): EncodedSample => ({
  index, key: `k${index}`, label: index, bytes, origin: `file${index}`, ...extra,
});

test('decodes JPEG, PNG with alpha, grayscale and 16-bit images to 8-bit RGB', async () => {
  const cases = [
    await jpeg(0),
    await sharp(pixels(1, 4), { raw: { width: W, height: H, channels: 4 } }).png().toBuffer(),
    await sharp(pixels(2, 1), { raw: { width: W, height: H, channels: 1 } }).jpeg().toBuffer(),
    await sharp(pixels(3), { raw: { width: W, height: H, channels: 3 } }).toColourspace('rgb16').png().toBuffer(),
    await sharp(pixels(4), { raw: { width: W, height: H, channels: 3 } }).webp().toBuffer(),
  ];
  for (const bytes of cases) {
    const img = await decodeImage({ bytes });
    assert.equal([img.width, img.height, img.data.length], [W, H, W * H * 3]);
  }
  // Grey in, equal channels out.
  const grey = await decodeImage({ bytes: cases[2] });
  for (let i = 0; i < grey.data.length; i += 3) assert.ok(grey.data[i] === grey.data[i + 1] && grey.data[i] === grey.data[i + 2]);
  // Lossless PNG: exact pixels.
  const png = await decodeImage({ bytes: await sharp(pixels(5), { raw: { width: W, height: H, channels: 3 } }).png().toBuffer() });
  assert.ok(Buffer.from(png.data).equals(pixels(5)));
});

test('raw samples pass through; a raw sample of the wrong length is an error', async () => {
  const raw = pixels(6);
  const img = await decodeImage({ bytes: raw, raw: { width: W, height: H } });
  assert.ok(Buffer.from(img.data).equals(raw));
  await decodeImage({ bytes: raw.subarray(1), raw: { width: W, height: H } }).then(
    () => assert.unreachable('should fail'),
    (e) => assert.match(String(e), /needs 5760 bytes, got 5759/),
  );
});

test('corrupt, truncated, empty and non-image samples are skipped and counted with origin and reason; order kept', async () => {
  const good = await jpeg(7);
  const corrupt = Buffer.from(good);
  for (let i = Math.floor(good.length / 2); i < Math.floor(good.length / 2) + 40; i++) corrupt[i] = (i * 37) & 255;
  const samples = [
    sample(0, good),
    sample(1, good.subarray(0, Math.floor(good.length * 0.6))), // truncated
    sample(2, Buffer.from('just some text, not an image')),
    sample(3, await jpeg(8)),
    sample(4, corrupt), // garbled entropy-coded data
    sample(5, Buffer.alloc(0)),
    sample(6, Buffer.concat([await jpeg(9), Buffer.from('trailing bytes after EOI are harmless')])),
  ];
  const skipped: Array<[string, string]> = [];
  const out = await lastValueFrom(from(samples).pipe(decode({ concurrency: 3, onSkip: (o, r) => skipped.push([o, r]) }), toArray()));
  assert.equal(out.map((s) => s.index), [0, 3, 6]);
  assert.equal(out.map((s) => [s.key, s.label, s.origin]), [['k0', 0, 'file0'], ['k3', 3, 'file3'], ['k6', 6, 'file6']]);
  skipped.sort(([a], [b]) => a.localeCompare(b)); // reported as they fail, not in input order
  assert.equal(skipped.map(([o]) => o), ['file1', 'file2', 'file4', 'file5']);
  // libvips' message for a warning turned error is sometimes the generic failOn one.
  assert.match(skipped[0][1], /premature end|failOn/i);
  assert.match(skipped[1][1], /unsupported image format/);
  assert.match(skipped[2][1], /corrupt|failOn/i);
  assert.match(skipped[3][1], /empty/i);
});

test("failOn 'error' keeps garbled-but-complete JPEGs (PIL's behaviour), still rejects truncation", async () => {
  const good = await jpeg(10);
  const corrupt = Buffer.from(good);
  for (let i = Math.floor(good.length / 2); i < Math.floor(good.length / 2) + 40; i++) corrupt[i] = (i * 37) & 255;
  const skipped: string[] = [];
  const out = await lastValueFrom(
    from([sample(0, corrupt), sample(1, good.subarray(0, good.length >> 1))]).pipe(decode({ failOn: 'error', onSkip: (o) => skipped.push(o) }), toArray()),
  );
  assert.equal(out.map((s) => s.index), [0]);
  assert.equal(skipped, ['file1']);
});

test.run();

/** multiView / evalView / augmentInWorkers / batchViews: determinism, presets, shapes. */
import { from, lastValueFrom, toArray } from 'rxjs';
import sharp from 'sharp';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Rng } from '../lib/rng';
import { AugmentPool, augmentInWorkers } from '../operators/augment-in-workers';
import { batchViews } from '../operators/batch';
import { decode } from '../operators/decode';
import { evalView } from '../operators/eval-view';
import { maeViews, multiView, refinerViews, type ViewConfig } from '../operators/multi-view';
import { IMAGENET_MEAN, IMAGENET_STD, sampleViewParams } from '../operators/transforms';
import type { DecodedSample, EncodedSample, ViewsSample } from '../sources/types';

/** A smooth seeded picture (so crops and colour ops have something to change). */
function picture(seed: number, width: number, height: number): Uint8Array {
  const rng = new Rng(seed);
  const [a, b, c] = [rng.uniform(0.02, 0.2), rng.uniform(0.02, 0.2), rng.uniform(0, 6)];
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++)
      for (let ch = 0; ch < 3; ch++) data[(y * width + x) * 3 + ch] = Math.round(127 + 120 * Math.sin(a * x + b * y * (ch + 1) + c));
  return data;
}

const decoded = (index: number, width = 80, height = 60): DecodedSample => ({
  index,
  key: `k${index}`,
  label: index % 3,
  origin: `mem:${index}`,
  image: { data: picture(index, width, height), width, height },
});

let encoded: EncodedSample[] = [];
test.before(async () => {
  encoded = await Promise.all(
    Array.from({ length: 12 }, async (_, i) => {
      const [w, h] = i % 2 ? [80, 60] : [50, 70];
      const bytes = await sharp(Buffer.from(picture(i, w, h)), { raw: { width: w, height: h, channels: 3 } }).jpeg().toBuffer();
      return { index: i, key: `k${i}`, label: i % 3, bytes, origin: `mem:${i}` };
    }),
  );
});

const small = refinerViews({ globalSize: 32, localSize: 16, numLocal: 2 });
const run = (samples: DecodedSample[], views: ViewConfig[], seed = 1, epoch = 0) =>
  lastValueFrom(from(samples).pipe(multiView({ seed, epoch, views }), toArray()));
const same = (a: Float32Array, b: Float32Array) => a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

test('refinerViews and maeViews presets follow the reference\'s values (docs/method.md)', () => {
  const v = refinerViews({ globalSize: 224, localSize: 96, numLocal: 10 });
  assert.is(v.length, 12);
  assert.equal([v[0].size, v[1].size, v[2].size, v[11].size], [224, 224, 96, 96]);
  assert.equal([v[0].blurP, v[1].blurP, v[2].blurP], [1, 0.1, 0.5]);
  assert.equal([v[0].solarizeP, v[1].solarizeP, v[2].solarizeP], [0, 0.2, 0]);
  assert.equal([v[0].scale, v[2].scale], [[0.25, 1], [0.05, 0.25]]);
  for (const c of v) {
    assert.equal([c.flipP, c.jitterP, c.grayscaleP], [0.5, 0.8, 0.2]);
    assert.ok(Math.abs(c.blurSigma[0] - 0.1) < 1e-12 && Math.abs(c.blurSigma[1] - 2) < 1e-12, `blur sigma ${c.blurSigma}`);
    assert.equal(c.jitter, { brightness: 0.4, contrast: 0.4, saturation: 0.2, hue: 0.1 });
  }
  // other sizes: the blur sigma scales with the view (global 224, local 96 in the reference)
  const [g32, , l16] = refinerViews({ globalSize: 32, localSize: 16, numLocal: 1 });
  const near = (got: number[], want: number[]) => got.every((x, i) => Math.abs(x - want[i]) < 1e-12);
  assert.ok(near(g32.blurSigma, [0.1 * (32 / 224), 2 * (32 / 224)]), `global sigma ${g32.blurSigma}`);
  assert.ok(near(l16.blurSigma, [0.1 * (16 / 96), 2 * (16 / 96)]), `local sigma ${l16.blurSigma}`);
  const [m] = maeViews(224);
  assert.equal([m.size, m.scale, m.flipP, m.jitterP, m.blurP, m.grayscaleP, m.solarizeP], [224, [0.2, 1], 0.5, 0, 0, 0, 0]);
});

test('same (seed, epoch, index) -> identical views; another index, epoch or seed -> different', async () => {
  const samples = [0, 1, 2, 3].map((i) => decoded(i));
  const a = await run(samples, small);
  const b = await run(samples, small);
  for (let i = 0; i < 4; i++) for (let v = 0; v < small.length; v++) assert.ok(same(a[i].views[v], b[i].views[v]));
  // Another index with the same image: the random draws differ.
  const twin = await run([{ ...samples[0], index: 99 }], small);
  assert.ok(!same(twin[0].views[0], a[0].views[0]));
  const otherEpoch = await run(samples, small, 1, 1);
  const otherSeed = await run(samples, small, 2, 0);
  assert.ok(!same(otherEpoch[0].views[0], a[0].views[0]) && !same(otherSeed[0].views[0], a[0].views[0]));
  // The two global views of one sample differ from each other.
  assert.ok(!same(a[0].views[0], a[0].views[1]));
});

test('views do not depend on arrival order or on which other samples are around', async () => {
  const samples = [0, 1, 2, 3, 4, 5].map((i) => decoded(i));
  const forward = await run(samples, small);
  const backward = await run([...samples].reverse(), small);
  const alone = await run([samples[3]], small);
  for (const s of forward) {
    const r = backward.find((x) => x.index === s.index)!;
    for (let v = 0; v < small.length; v++) assert.ok(same(s.views[v], r.views[v]));
  }
  for (let v = 0; v < small.length; v++) assert.ok(same(alone[0].views[v], forward[3].views[v]));
});

test('multiView output: sizes, labels, finite normalised values; p = 0 recipe is crop + flip + normalise only', async () => {
  const [s] = await run([decoded(7)], small);
  assert.equal(s.viewSizes, [32, 32, 16, 16]);
  assert.equal(s.views.map((v) => v.length), [32 * 32 * 3, 32 * 32 * 3, 16 * 16 * 3, 16 * 16 * 3]);
  assert.is(s.label, 7 % 3);
  for (const v of s.views) for (const x of v) assert.ok(Number.isFinite(x) && x > -2.2 && x < 2.7);
  // scale [1, 1] on a square image, no flip: the view is the image itself, normalised.
  const identity: ViewConfig = { ...maeViews(16)[0], scale: [1, 1], flipP: 0 };
  const img = decoded(3, 16, 16);
  const [out] = await run([img], [identity]);
  for (let i = 0; i < 16 * 16 * 3; i++) {
    const want = (img.image.data[i] / 255 - IMAGENET_MEAN[i % 3]) / IMAGENET_STD[i % 3];
    assert.ok(Math.abs(out.views[0][i] - want) < 1e-5);
  }
});

test('augmentation choices happen at their probabilities', () => {
  const [g0, g1] = refinerViews({ globalSize: 224, numLocal: 0 });
  const n = 4000;
  const count = (cfg: ViewConfig, v: number, pick: (p: ReturnType<typeof sampleViewParams>) => boolean) => {
    let k = 0;
    for (let i = 0; i < n; i++) if (pick(sampleViewParams(new Rng(0, 0, i, v), cfg, 256, 256))) k++;
    return k / n;
  };
  const near = (x: number, p: number) => Math.abs(x - p) < 0.03;
  assert.ok(near(count(g0, 0, (p) => p.flip), 0.5));
  assert.ok(near(count(g0, 0, (p) => !!p.jitter), 0.8));
  assert.ok(near(count(g0, 0, (p) => p.grayscale), 0.2));
  assert.is(count(g0, 0, (p) => p.blurSigma !== undefined), 1);
  assert.is(count(g0, 0, (p) => p.solarize), 0);
  assert.ok(near(count(g1, 1, (p) => p.blurSigma !== undefined), 0.1));
  assert.ok(near(count(g1, 1, (p) => p.solarize), 0.2));
  for (let i = 0; i < 200; i++) {
    const s = sampleViewParams(new Rng(0, 0, i, 0), g0, 256, 256).blurSigma!;
    assert.ok(s >= 0.1 && s <= 2);
  }
});

test('evalView: shorter side to size / ratio, centre crop, normalised; ratio 1 on 32 px is the image', async () => {
  const img = decoded(1, 32, 32);
  const [a] = await lastValueFrom(from([img]).pipe(evalView({ size: 32, resizeRatio: 1 }), toArray()));
  assert.equal(a.viewSizes, [32]);
  for (let i = 0; i < a.views[0].length; i++) {
    assert.ok(Math.abs(a.views[0][i] - (img.image.data[i] / 255 - IMAGENET_MEAN[i % 3]) / IMAGENET_STD[i % 3]) < 1e-5);
  }
  const [b] = await lastValueFrom(from([decoded(2, 300, 200)]).pipe(evalView({ size: 224 }), toArray()));
  assert.is(b.views[0].length, 224 * 224 * 3);
});

test('workers: identical views to decode + multiView in-process, for the same seed', async () => {
  const views = refinerViews({ globalSize: 48, localSize: 24, numLocal: 2 });
  const inProcess = await lastValueFrom(from(encoded).pipe(decode(), multiView({ seed: 5, epoch: 2, views }), toArray()));
  const pool = new AugmentPool(2);
  try {
    const inWorkers = await lastValueFrom(from(encoded).pipe(augmentInWorkers({ seed: 5, epoch: 2, views, pool }), toArray()));
    assert.equal(inWorkers.map((s) => s.index), inProcess.map((s) => s.index), 'input order kept');
    for (let i = 0; i < encoded.length; i++) {
      assert.is(inWorkers[i].label, inProcess[i].label);
      assert.equal(inWorkers[i].viewSizes, inProcess[i].viewSizes);
      for (let v = 0; v < views.length; v++) assert.ok(same(inWorkers[i].views[v], inProcess[i].views[v]), `sample ${i} view ${v}`);
    }
    // Eval through the same pool.
    const evalIn = await lastValueFrom(from(encoded).pipe(decode(), evalView({ size: 40 }), toArray()));
    const evalW = await lastValueFrom(from(encoded).pipe(augmentInWorkers({ eval: { size: 40 }, pool }), toArray()));
    for (let i = 0; i < encoded.length; i++) assert.ok(same(evalW[i].views[0], evalIn[i].views[0]));
  } finally {
    await pool.close();
  }
});

test('workers: undecodable samples skipped and reported; own pool closed after the stream', async () => {
  const bad: EncodedSample = { index: 100, key: 'bad', label: 0, bytes: Buffer.from('not an image'), origin: 'mem:bad' };
  const skipped: string[] = [];
  const got = await lastValueFrom(
    from([encoded[0], bad, encoded[1]]).pipe(
      augmentInWorkers({ seed: 0, epoch: 0, views: maeViews(16), onSkip: (origin, reason) => skipped.push(`${origin}: ${reason}`) }),
      toArray(),
    ),
  );
  assert.equal(got.map((s) => s.index), [0, 1]);
  assert.is(skipped.length, 1);
  assert.match(skipped[0], /^mem:bad: .*unsupported image format/);
});

test('batchViews: [B, S, S, 3] per view, indices and labels; last short batch kept unless dropLast', async () => {
  const samples = await run([0, 1, 2, 3, 4].map((i) => decoded(i)), small);
  const batches = await lastValueFrom(from(samples).pipe(batchViews(2), toArray()));
  assert.is(batches.length, 3);
  assert.equal(Array.from(batches[0].indices), [0, 1]);
  assert.equal(Array.from(batches[2].labels), [4 % 3]);
  assert.equal(batches[0].viewSizes, [32, 32, 16, 16]);
  assert.equal(batches[0].views.map((v) => v.length), [2 * 32 * 32 * 3, 2 * 32 * 32 * 3, 2 * 16 * 16 * 3, 2 * 16 * 16 * 3]);
  assert.ok(same(batches[1].views[2].subarray(16 * 16 * 3), samples[3].views[2]), 'sample 1 of batch 1 is sample 3');
  const dropped = await lastValueFrom(from(samples).pipe(batchViews(2, { dropLast: true }), toArray()));
  assert.equal(dropped.map((b) => b.indices.length), [2, 2]);
  const mixed: ViewsSample[] = [samples[0], { ...samples[1], views: [samples[1].views[2], ...samples[1].views.slice(1)] }];
  assert.throws(() => batchViews(0));
  let err: unknown;
  await lastValueFrom(from(mixed).pipe(batchViews(2))).catch((e) => (err = e));
  assert.match(String(err), /view 0 has 768 values, expected 3072/);
});

test.run();

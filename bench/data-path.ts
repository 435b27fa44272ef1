/**
 * Data-path throughput: images/s of the MIM-Refiner 2-global-view augmentation at 224 px,
 * from a folder of 256 px JPEGs (real CIFAR-10 images, upscaled once and cached), through
 * source -> decode + views (workers or in-process) -> batches, with the Valve spine.
 * Runs bench/data-path-torch.py (torchvision + DataLoader, 2 workers) on the same files right
 * after, when /usr/bin/python3 has torchvision, and prints both rates and the ratio.
 *
 *   npx ts-node bench/data-path.ts [--images 2000] [--workers 2] [--in-process] [--batch 64]
 *                                  [--size 224] [--no-torch] [--resize] [--cifar] [--shard FILE]
 * --resize: only the JS-vs-sharp crop+resize timings behind SHARP_MIN_SHRINK.
 * --cifar: 32 px CIFAR JPEGs from a shard, 2 views at 32 px (in-process vs workers).
 *
 * Rates are wall-clock over everything after the first batch (worker start-up excluded,
 * as the torch side excludes its first batches). The dev box is shared: run both sides
 * back to back and compare the ratio rather than absolute numbers; CPU ms per image (all
 * threads / worker processes) is the load-independent figure.
 *
 * Measured (2-core dev box, shared with other jobs, load 4-9, 2000 images, 2 workers each):
 *   TS 85 images/s, 10.2-11.3 cpu ms/image; torchvision 0.14 24-36 images/s, 23.7-24.3 cpu
 *   ms/image: 2.4-3.5x the images/s, 2.2-2.3x less CPU per image. TS 1 worker: 60 images/s;
 *   in-process: 54 images/s. 32 px CIFAR (--cifar): ~0.9 cpu ms/image in-process.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as zlib from 'zlib';
import { Readable } from 'stream';
import sharp from 'sharp';
import * as tar from 'tar-stream';
import { Observable } from 'rxjs';
import { augmentInWorkers } from '../operators/augment-in-workers';
import { batchViews } from '../operators/batch';
import { decode } from '../operators/decode';
import { multiView, refinerViews } from '../operators/multi-view';
import { resampleJs, resampleSharp } from '../operators/transforms/resize';
import { PullQueue, Valve, fromPull } from '../lib/flow';
import { imageFolder } from '../sources/image-folder';
import { tarShards } from '../sources/tar-shards';
import type { Batch, EncodedSample } from '../sources/types';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}
const flag = (name: string) => process.argv.includes(`--${name}`);

// a CIFAR-10 train shard: --shard FILE (the full shards: docs/evaluation.md), else the bundled one
const BUNDLED_SHARD = path.join(__dirname, '../data/cifar10-mini/train-000000.tar.gz');
const SHARD = process.argv.includes('--shard') ? process.argv[process.argv.indexOf('--shard') + 1] : BUNDLED_SHARD;

/** First `n` JPEGs of a CIFAR-10 train shard, upscaled to 256x256 (bicubic), cached in tmp. */
async function benchFolder(n: number): Promise<string> {
  const dir = path.join(os.tmpdir(), `mimref-bench-cifar256-${n}`);
  if (fs.existsSync(path.join(dir, '.complete'))) return dir;
  const shard = SHARD;
  if (!fs.existsSync(shard)) throw new Error(`--shard ${shard}: no such file`);
  fs.mkdirSync(dir, { recursive: true });
  const extract = tar.extract();
  const input: Readable = fs.createReadStream(shard);
  (shard.endsWith('.gz') ? input.pipe(zlib.createGunzip()) : input).pipe(extract);
  let count = 0;
  for await (const entry of extract) {
    const chunks: Buffer[] = [];
    for await (const c of entry) chunks.push(c as Buffer);
    if (count >= n || !/\.jpe?g$/i.test(entry.header.name)) continue;
    const out = path.join(dir, path.basename(entry.header.name));
    await sharp(Buffer.concat(chunks)).resize(256, 256, { kernel: 'cubic' }).jpeg({ quality: 90 }).toFile(out);
    count++;
  }
  fs.writeFileSync(path.join(dir, '.complete'), `${count}\n`);
  console.log(`made ${count} 256 px JPEGs from ${shard} in ${dir}`);
  return dir;
}

interface Rate {
  imagesPerS: number;
  /** CPU time of the whole process (main thread, workers, libvips threads) per image. */
  cpuMsPerImage: number;
}

const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

async function tsRate(
  samples: AsyncIterable<EncodedSample>,
  opts: { workers: number; inProcess: boolean; batch: number; size: number },
): Promise<Rate> {
  const views = refinerViews({ globalSize: opts.size, numLocal: 0 });
  const valve = new Valve(opts.batch * 4);
  const onSkip = (origin: string, reason: string) => {
    console.warn(`skipped ${origin}: ${reason}`);
    valve.release(1);
  };
  const source: Observable<EncodedSample> = fromPull(samples, valve);
  const batches = opts.inProcess
    ? source.pipe(decode({ onSkip }), multiView({ seed: 0, epoch: 0, views }), batchViews(opts.batch))
    : source.pipe(augmentInWorkers({ seed: 0, epoch: 0, views, workers: opts.workers, onSkip }), batchViews(opts.batch));
  const queue = new PullQueue<Batch>(batches);
  let start = 0;
  let cpu0 = 0;
  let images = 0;
  let first = true;
  for await (const b of queue) {
    valve.release(b.indices.length);
    if (first) {
      first = false;
      start = performance.now();
      cpu0 = cpuMs();
      continue;
    }
    images += b.indices.length;
  }
  return { imagesPerS: images / ((performance.now() - start) / 1000), cpuMsPerImage: (cpuMs() - cpu0) / images };
}

function torchRate(folder: string, batch: number, size: number): Rate | string {
  const script = path.join(__dirname, 'data-path-torch.py');
  const py = '/usr/bin/python3';
  if (!fs.existsSync(py)) return 'no /usr/bin/python3';
  const run = spawnSync(py, [script, folder, '--batch', String(batch), '--size', String(size), '--warmup-batches', '1'], {
    encoding: 'utf8',
  });
  const m = /images\/s: ([\d.]+)\s+cpu ms\/image: ([\d.]+)/.exec(run.stdout ?? '');
  if (!m) return `torch bench failed: ${(run.stderr || run.stdout || '').trim().split('\n').slice(-1)[0]}`;
  console.log(run.stdout.trim());
  return { imagesPerS: Number(m[1]), cpuMsPerImage: Number(m[2]) };
}

async function resizeTimings(): Promise<void> {
  const cases: Array<[number, number, number]> = [[1200, 1000, 224], [600, 500, 224], [600, 350, 224], [256, 250, 224], [256, 180, 224], [256, 120, 224], [256, 200, 96], [256, 60, 96], [32, 20, 32]];
  for (const [side, crop, out] of cases) {
    const image = { data: new Uint8Array(side * side * 3).map((_, i) => (i * 7919) % 256), width: side, height: side };
    const box = { top: 0, left: 0, width: crop, height: crop };
    const time = async (f: () => unknown) => {
      for (let i = 0; i < 10; i++) await f();
      const t = performance.now();
      for (let i = 0; i < 100; i++) await f();
      return (performance.now() - t) / 100;
    };
    const js = await time(() => resampleJs(image, box, out, out));
    const sh = await time(() => resampleSharp(image, box, out, out));
    console.log(`crop ${crop} of ${side} -> ${out}: JS ${js.toFixed(2)} ms, sharp ${sh.toFixed(2)} ms`);
  }
}

async function main(): Promise<void> {
  if (flag('resize')) return resizeTimings();
  const images = arg('images', 2000);
  const batch = arg('batch', 64);
  const size = arg('size', 224);
  const workers = arg('workers', 2);
  const inProcess = flag('in-process');
  const how = inProcess ? 'in-process' : `${workers} worker${workers > 1 ? 's' : ''}`;
  if (flag('cifar')) {
    // The 32 px case: CIFAR JPEGs straight from a shard, 2 global views at 32 px.
    const shard = SHARD;
    const r = await tsRate(tarShards({ shards: shard }), { workers, inProcess, batch, size: 32 });
    return console.log(`CIFAR 32 px (${how}): ${r.imagesPerS.toFixed(1)} images/s, cpu ${r.cpuMsPerImage.toFixed(2)} ms/image`);
  }
  const folder = await benchFolder(images);
  const ts = await tsRate(imageFolder({ root: folder }), { workers, inProcess, batch, size });
  console.log(
    `TS data path (${how}, sharp concurrency ${sharp.concurrency()}): ${ts.imagesPerS.toFixed(1)} images/s, ` +
      `cpu ${ts.cpuMsPerImage.toFixed(1)} ms/image  (2 global views ${size} px, batch ${batch})`,
  );
  if (flag('no-torch')) return;
  const torch = torchRate(folder, batch, size);
  if (typeof torch === 'string') return console.log(`torchvision side not run: ${torch}`);
  console.log(`torchvision (2 workers): ${torch.imagesPerS.toFixed(1)} images/s, cpu ${torch.cpuMsPerImage.toFixed(1)} ms/image`);
  console.log(
    `ratio TS/torchvision: ${(ts.imagesPerS / torch.imagesPerS).toFixed(2)}x images/s, ` +
      `${(torch.cpuMsPerImage / ts.cpuMsPerImage).toFixed(2)}x less cpu per image`,
  );
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});

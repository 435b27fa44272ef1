/**
 * Splits of the full CIFAR-10 train shards in ../shared/data/cifar10 (40,000 images, 4,000 per
 * class), written into git-ignored folders (they are rebuilt in seconds, deterministically):
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
 *   npx ts-node scripts/make-cifar10-splits.ts [sourceDir] [dataDir]
 */
import * as fs from 'fs';
import * as path from 'path';
import { tarShards } from '../sources/tar-shards';
import type { EncodedSample } from '../sources/types';
import { failOnSkip, VAL_RANGE, writeShard } from './make-bundled-data';

const SHARD_SIZE = 5000;
export const LT_IMBALANCE = 100;

/** Images of class c in CIFAR-LT with `classes` classes: floor(nMax * (1/ratio)^(c/(classes-1))). */
export function longTailCount(c: number, classes: number, nMax: number, ratio = LT_IMBALANCE): number {
  return Math.floor(nMax * (1 / ratio) ** (c / (classes - 1)));
}

async function writeShards(dir: string, samples: EncodedSample[], prefix: string): Promise<void> {
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  for (let i = 0; i * SHARD_SIZE < samples.length; i++) {
    await writeShard(path.join(dir, `${prefix}-${String(i).padStart(6, '0')}.tar`), samples.slice(i * SHARD_SIZE, (i + 1) * SHARD_SIZE));
  }
}

async function main(): Promise<void> {
  const source = path.resolve(process.argv[2] ?? path.join(__dirname, '..', '..', 'shared', 'data', 'cifar10'));
  const data = path.resolve(process.argv[3] ?? path.join(__dirname, '..', 'data'));
  const classes = fs.readFileSync(path.join(source, 'classes.txt'), 'utf8').trim().split('\n');
  const seen = new Array<number>(classes.length).fill(0);
  const train: EncodedSample[] = [];
  const val: EncodedSample[] = [];
  for await (const s of tarShards({ shards: path.join(source, 'cifar10-train-*.tar'), onSkip: failOnSkip })) {
    const rank = seen[s.label]++;
    (rank >= VAL_RANGE.from && rank < VAL_RANGE.from + VAL_RANGE.count ? val : train).push(s);
  }
  const perClass = Math.min(...seen) - VAL_RANGE.count;
  const ltCounts = classes.map((_, c) => longTailCount(c, classes.length, perClass));
  const taken = new Array<number>(classes.length).fill(0);
  const lt = train.filter((s) => taken[s.label]++ < ltCounts[s.label]);

  const holdout = path.join(data, 'cifar10-holdout');
  await writeShards(holdout, train, 'train');
  await writeShard(path.join(holdout, 'val-000000.tar'), val);
  const ltDir = path.join(data, 'cifar10-lt');
  await writeShards(ltDir, lt, 'train');
  for (const dir of [holdout, ltDir]) fs.copyFileSync(path.join(source, 'classes.txt'), path.join(dir, 'classes.txt'));
  fs.writeFileSync(
    path.join(ltDir, 'counts.json'),
    JSON.stringify({ imbalance: LT_IMBALANCE, nMax: perClass, counts: Object.fromEntries(classes.map((name, c) => [name, ltCounts[c]])), total: lt.length }, null, 2) + '\n',
  );
  console.log(`${holdout}: ${train.length} train images (validation held out), ${val.length} validation images`);
  console.log(`${ltDir}: ${lt.length} images, per class ${ltCounts.join(', ')} (imbalance ${LT_IMBALANCE})`);
}

if (require.main === module) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}

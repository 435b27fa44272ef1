/**
 * The CIFAR-10 / CIFAR-100 binary format (https://www.cs.toronto.edu/~kriz/cifar.html):
 * fixed-size records, CIFAR-10 `<label byte><3072 pixel bytes>` (data_batch_N.bin,
 * test_batch.bin), CIFAR-100 `<coarse byte><fine byte><3072 pixel bytes>` (train.bin, test.bin).
 * Pixels are planar (1024 R, 1024 G, 1024 B, each row-major 32x32); samples come out as raw
 * interleaved RGB (HWC) with `raw: {width: 32, height: 32}`, so decode skips the codec.
 *
 * Records are fixed-size, so any record is one positioned read: the stable index is the record
 * number across the sorted files, shuffling is a full seeded permutation per epoch, and rank /
 * start drop positions without reading them. Class names come from batches.meta.txt
 * (CIFAR-10) or fine_label_names.txt / coarse_label_names.txt (CIFAR-100) beside the files.
 */
import * as fs from 'fs';
import * as path from 'path';
import fg from 'fast-glob';
import { Rng } from '../lib/rng';
import { checkRank, defaultOnSkip, indexOrder, selectArrayForRank, type OnSkip, type SourceOptions } from './tar-shards';
import type { EncodedSample } from './types';

export type CifarVariant = 'cifar10' | 'cifar100';

export interface CifarBinaryOptions extends SourceOptions {
  /** Paths or fast-glob patterns of the .bin files. */
  files: string | string[];
  /** Default: from the file names, else from the file sizes. */
  variant?: CifarVariant;
  /** CIFAR-100 only: which label to emit. Default 'fine' (the 100 classes). */
  labelKind?: 'fine' | 'coarse';
  onSkip?: OnSkip;
}

export type CifarBinarySource = AsyncIterable<EncodedSample> & {
  readonly variant: CifarVariant;
  readonly files: string[];
  readonly size: number;
  /** Class names if the metadata file is beside the data, else undefined. */
  readonly classes: string[] | undefined;
  /** 10, 100, or 20 (CIFAR-100 coarse): a record whose label byte is not below it is skipped. */
  readonly numClasses: number;
};

const SIDE = 32;
const PIXELS = SIDE * SIDE;

export function cifarBinary(opts: CifarBinaryOptions): CifarBinarySource {
  const files = resolveFiles(opts.files);
  const variant = opts.variant ?? inferVariant(files);
  const header = variant === 'cifar10' ? 1 : 2;
  const recordSize = header + 3 * PIXELS;
  const labelByte = variant === 'cifar100' && opts.labelKind !== 'coarse' ? 1 : 0;
  const numClasses = variant === 'cifar10' ? 10 : opts.labelKind === 'coarse' ? 20 : 100;
  const onSkip = opts.onSkip ?? defaultOnSkip;

  // Stable index = record number over the sorted files: file f holds [firsts[f], firsts[f+1]).
  const firsts = [0];
  for (const file of files) {
    const bytes = fs.statSync(file).size;
    if (bytes % recordSize !== 0) throw new Error(`${file}: ${bytes} bytes is not a whole number of ${variant} records (${recordSize} bytes)`);
    firsts.push(firsts[firsts.length - 1] + bytes / recordSize);
  }
  const size = firsts[files.length];
  checkRank(opts);

  async function* samples(): AsyncGenerator<EncodedSample> {
    const order = indexOrder(size, opts);
    if (opts.shuffle) new Rng(opts.shuffle.seed, opts.shuffle.epoch, 0xc1fa).shuffle(order);
    const handles = new Map<number, fs.promises.FileHandle>();
    const record = Buffer.alloc(recordSize);
    try {
      for (const index of selectArrayForRank(order, opts)) {
        const f = firsts.findIndex((_, i) => index < firsts[i + 1]); // a handful of files: linear is fine
        if (!handles.has(f)) handles.set(f, await fs.promises.open(files[f], 'r'));
        const r = index - firsts[f];
        await handles.get(f)!.read(record, 0, recordSize, r * recordSize);
        const name = path.basename(files[f], '.bin');
        if (opts.labels !== 'ignored' && record[labelByte] >= numClasses) {
          onSkip(`${files[f]}#${r}`, `label byte outside the ${numClasses} ${variant} classes (0..${numClasses - 1}): ${record[labelByte]}`);
          continue;
        }
        yield {
          index,
          key: `${name}_${String(r).padStart(5, '0')}`,
          label: opts.labels === 'ignored' ? -1 : record[labelByte],
          bytes: planarToHwc(record.subarray(header)),
          raw: { width: SIDE, height: SIDE },
          origin: `${files[f]}#${r}`,
        };
      }
    } finally {
      for (const h of handles.values()) await h.close();
    }
  }

  return { variant, files, size, numClasses, classes: classNames(files[0], variant, opts.labelKind), [Symbol.asyncIterator]: samples };
}

/** CHW planes -> interleaved HWC. */
export function planarToHwc(planes: Uint8Array): Buffer {
  const out = Buffer.alloc(3 * PIXELS);
  for (let p = 0; p < PIXELS; p++) {
    out[3 * p] = planes[p];
    out[3 * p + 1] = planes[PIXELS + p];
    out[3 * p + 2] = planes[2 * PIXELS + p];
  }
  return out;
}

function resolveFiles(patterns: string | string[]): string[] {
  const found = new Set<string>();
  for (const pattern of Array.isArray(patterns) ? patterns : [patterns]) {
    const literal = fs.existsSync(pattern) && fs.statSync(pattern).isFile();
    const matches = literal ? [pattern] : fg.sync(pattern, { onlyFiles: true });
    if (matches.length === 0) throw new Error(`No CIFAR binary files match ${JSON.stringify(pattern)}`);
    for (const m of matches) found.add(path.resolve(m));
  }
  return [...found].sort();
}

function inferVariant(files: string[]): CifarVariant {
  const names = files.map((f) => path.basename(f));
  if (names.every((n) => /^(data_batch_\d+|test_batch)\.bin$/.test(n))) return 'cifar10';
  if (names.every((n) => /^(train|test)\.bin$/.test(n))) return 'cifar100';
  // Otherwise the sizes decide, where only one record size divides them all.
  const fits = (recordSize: number) => files.every((f) => fs.statSync(f).size % recordSize === 0);
  const c10 = fits(1 + 3 * PIXELS);
  const c100 = fits(2 + 3 * PIXELS);
  if (c10 !== c100) return c10 ? 'cifar10' : 'cifar100';
  throw new Error(`Cannot tell CIFAR-10 from CIFAR-100 for ${files.join(', ')}: pass variant`);
}

function classNames(file: string, variant: CifarVariant, labelKind?: 'fine' | 'coarse'): string[] | undefined {
  const meta = variant === 'cifar10' ? 'batches.meta.txt' : `${labelKind ?? 'fine'}_label_names.txt`;
  const metaPath = path.join(path.dirname(file), meta);
  if (!fs.existsSync(metaPath)) return undefined;
  return fs.readFileSync(metaPath, 'utf8').split('\n').map((l) => l.trim()).filter((l) => l.length > 0);
}

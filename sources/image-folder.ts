/**
 * A folder of image files, torchvision ImageFolder style: root/<class>/.../<image>.
 *
 * The class of a file is the first folder below root (the parent folder in the usual
 * root/<class>/<file> layout; deeper nesting stays in that class). Class names sorted -> class
 * indices; image paths sorted -> stable dataset indices. Files directly in root get label -1.
 * The listing is taken once, synchronously, when the source is made (so a bad path fails
 * there, with the path in the message); file contents are read lazily, one at a time.
 *
 * Because files are randomly accessible, shuffling is a full seeded permutation per epoch
 * (no buffer); rank and start mean the same as for tar shards (see selectForRank).
 */
import * as fs from 'fs';
import * as path from 'path';
import fg from 'fast-glob';
import { Rng } from '../runtime/rng';
import { IMAGE_EXTENSIONS, checkRank, defaultOnSkip, selectArrayForRank, type OnSkip, type SourceOptions } from './tar-shards';
import type { EncodedSample } from './types';

export interface ImageFolderOptions extends SourceOptions {
  root: string;
  onSkip?: OnSkip;
}

export type ImageFolderSource = AsyncIterable<EncodedSample> & {
  readonly classes: string[];
  readonly files: string[];
  readonly size: number;
};

export function imageFolder(opts: ImageFolderOptions): ImageFolderSource {
  const root = path.resolve(opts.root);
  if (!fs.existsSync(root) || !fs.statSync(root).isDirectory()) throw new Error(`Image folder ${JSON.stringify(opts.root)} does not exist or is not a directory`);
  const pattern = `**/*.{${IMAGE_EXTENSIONS.join(',')}}`;
  const files = fg.sync(pattern, { cwd: root, onlyFiles: true, caseSensitiveMatch: false }).sort();
  if (files.length === 0) throw new Error(`Image folder ${JSON.stringify(opts.root)} holds no images (${pattern})`);

  const classOf = (file: string) => (file.includes('/') ? file.slice(0, file.indexOf('/')) : undefined);
  const classes = [...new Set(files.map(classOf).filter((c): c is string => c !== undefined))].sort();
  const classIndex = new Map(classes.map((c, i) => [c, i]));
  const labels = files.map((f) => classIndex.get(classOf(f) ?? '') ?? -1);
  checkRank(opts); // fail now, not at the first read
  const onSkip = opts.onSkip ?? defaultOnSkip;

  async function* samples(): AsyncGenerator<EncodedSample> {
    const order = files.map((_, i) => i);
    if (opts.shuffle) new Rng(opts.shuffle.seed, opts.shuffle.epoch, 0xf01d).shuffle(order);
    for (const index of selectArrayForRank(order, opts)) {
      const file = path.join(root, files[index]);
      // Key: the path below root without extension, unique and stable.
      const key = files[index].replace(/\.[^./]+$/, '');
      let bytes: Buffer;
      try {
        bytes = await fs.promises.readFile(file);
      } catch (err) {
        // A file removed or unreadable since the listing: a container problem, skip it.
        onSkip(file, (err as Error).message);
        continue;
      }
      yield { index, key, label: labels[index], bytes, origin: file };
    }
  }

  return { classes, files, size: files.length, [Symbol.asyncIterator]: samples };
}

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
import { Rng } from '../lib/rng';
import { IMAGE_EXTENSIONS, checkRank, defaultOnSkip, indexOrder, selectArrayForRank, type OnSkip, type SourceOptions } from './tar-shards';
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
  const onSkip = opts.onSkip ?? defaultOnSkip;
  const files = distinctFiles(fg.sync(pattern, { cwd: root, onlyFiles: true, caseSensitiveMatch: false, stats: true }), root, onSkip);
  if (files.length === 0) throw new Error(`Image folder ${JSON.stringify(opts.root)} holds no images (${pattern})`);

  const classOf = (file: string) => (file.includes('/') ? file.slice(0, file.indexOf('/')) : undefined);
  const classes = [...new Set(files.map(classOf).filter((c): c is string => c !== undefined))].sort();
  const classIndex = new Map(classes.map((c, i) => [c, i]));
  const labels = files.map((f) => classIndex.get(classOf(f) ?? '') ?? -1);
  checkRank(opts); // fail now, not at the first read

  async function* samples(): AsyncGenerator<EncodedSample> {
    const order = indexOrder(files.length, opts);
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

/**
 * Sorted paths, each file once: a file reached again (a symbolic link looping back to a parent
 * folder lists every image up to 40 times, a hard link gives it a second name) would enter the
 * data twice, and a kNN would find it as its own neighbour. Of the paths of one file the
 * shortest is kept (the one not through a loop), the first in sorted order among equals.
 */
function distinctFiles(entries: fg.Entry[], root: string, onSkip: OnSkip): string[] {
  const depth = (p: string) => p.split('/').length;
  const preferred = (a: string, b: string) => depth(a) - depth(b) || (a < b ? -1 : a > b ? 1 : 0);
  // device and inode name a file whatever path reaches it (a file system without inodes reports 0)
  const idOf = (e: fg.Entry) => (e.stats && e.stats.ino !== 0 ? `${e.stats.dev}:${e.stats.ino}` : e.path);
  const kept = new Map<string, string>();
  for (const e of entries) {
    const other = kept.get(idOf(e));
    if (other === undefined || preferred(e.path, other) < 0) kept.set(idOf(e), e.path);
  }
  const files = new Set(kept.values());
  for (const e of entries) {
    if (!files.has(e.path)) onSkip(path.join(root, e.path), `the same file as another path (a symbolic or hard link): ${kept.get(idOf(e))}`);
  }
  return [...files].sort();
}

/**
 * A folder of image files, torchvision ImageFolder style: root/<class>/.../<image>.
 *
 * The class of a file is the first folder below root (the parent folder in the usual
 * root/<class>/<file> layout; deeper nesting stays in that class). Class names sorted -> class
 * indices; image paths sorted -> stable dataset indices. Files directly in root get label -1.
 * The listing is taken once, synchronously, when the source is made (so a bad path fails
 * there, with the path in the message); file contents are read lazily, one at a time.
 *
 * Names are taken as the file system holds them (listed with fs.readdir, not a glob, which
 * skips some names): a folder whose name holds a newline is a class of that name, and hidden
 * entries count like any other, as in torchvision's ImageFolder: a folder `.name` is a class,
 * a file `.x.jpg` an image (one that does not decode, such as macOS's `._x.jpg`, is counted by
 * the decode stage). A class is a first-level folder with at least one image in it (where
 * torchvision refuses an empty class folder, here it is reported and is no class). Nothing
 * is left out silently: every entry not taken is reported through onSkip with its reason (not
 * an image file, not a file or folder, unreadable, a broken symbolic link, a second path to a
 * file already listed, a first-level folder without images).
 *
 * Because files are randomly accessible, shuffling is a full seeded permutation per epoch
 * (no buffer); rank and start mean the same as for tar shards (see selectForRank).
 */
import * as fs from 'fs';
import * as path from 'path';
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

const IMAGE_NAME = new RegExp(`\\.(${IMAGE_EXTENSIONS.join('|')})$`, 'i');

export function imageFolder(opts: ImageFolderOptions): ImageFolderSource {
  const root = path.resolve(opts.root);
  if (!fs.existsSync(root) || !fs.statSync(root).isDirectory()) throw new Error(`Image folder ${JSON.stringify(opts.root)} does not exist or is not a directory`);
  const onSkip = opts.onSkip ?? defaultOnSkip;
  const listing = listFolder(root, onSkip);
  const files = distinctFiles(listing.images, root, onSkip);
  if (files.length === 0) throw new Error(`Image folder ${JSON.stringify(opts.root)} holds no images (files named *.{${IMAGE_EXTENSIONS.join(',')}})`);

  const classOf = (file: string) => (file.includes('/') ? file.slice(0, file.indexOf('/')) : undefined);
  const classes = [...new Set(files.map(classOf).filter((c): c is string => c !== undefined))].sort();
  const classSet = new Set(classes);
  for (const folder of listing.firstLevelFolders) {
    if (!classSet.has(folder)) onSkip(path.join(root, folder), 'class folder without images: not a class');
  }
  const classIndex = new Map(classes.map((c, i) => [c, i]));
  const labels = files.map((f) => (opts.labels === 'ignored' ? -1 : classIndex.get(classOf(f) ?? '') ?? -1));
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

interface Listed {
  /** Path below root, '/'-separated. */
  rel: string;
  /** Device and inode: the file whatever path reaches it (the path where the file system reports inode 0). */
  id: string;
}

const idOf = (stat: fs.Stats, rel: string) => (stat.ino !== 0 ? `${stat.dev}:${stat.ino}` : rel);

/**
 * Every image file below root, breadth first in sorted order (so the shortest path to a file
 * is the one listed), following symbolic links. A folder reached a second time (a link to a
 * folder already listed, a loop back to a parent) is not listed again; the files below it are
 * reported, so that nothing it holds goes unaccounted.
 */
function listFolder(root: string, onSkip: OnSkip): { images: Listed[]; firstLevelFolders: string[] } {
  const images: Listed[] = [];
  const firstLevelFolders: string[] = [];
  const folderAt = new Map<string, string>([[idOf(fs.statSync(root), ''), '.']]);
  let level = [''];
  while (level.length > 0) {
    const next: string[] = [];
    for (const dir of level) {
      const abs = dir ? path.join(root, dir) : root;
      let names: string[];
      try {
        names = fs.readdirSync(abs).sort();
      } catch (err) {
        onSkip(abs, `unreadable folder: ${(err as Error).message}`);
        continue;
      }
      for (const name of names) {
        const rel = dir ? `${dir}/${name}` : name;
        const full = path.join(abs, name);
        let stat: fs.Stats;
        try {
          stat = fs.statSync(full);
        } catch (err) {
          const broken = fs.lstatSync(full, { throwIfNoEntry: false })?.isSymbolicLink();
          onSkip(full, broken ? `symbolic link to nothing: ${fs.readlinkSync(full)}` : `unreadable: ${(err as Error).message}`);
          continue;
        }
        if (stat.isDirectory()) {
          const earlier = folderAt.get(idOf(stat, rel));
          if (earlier !== undefined) {
            reportReachedAgain(full, earlier, onSkip);
            continue;
          }
          folderAt.set(idOf(stat, rel), rel);
          next.push(rel);
          if (!dir) firstLevelFolders.push(rel);
        } else if (!stat.isFile()) onSkip(full, `not a file or folder: ${kindOf(stat)}`);
        else if (!IMAGE_NAME.test(name)) onSkip(full, `not an image file: its extension is not one of ${IMAGE_EXTENSIONS.join(', ')}`);
        else images.push({ rel, id: idOf(stat, rel) });
      }
    }
    level = next;
  }
  return { images, firstLevelFolders };
}

/**
 * A folder listed already, reached again through a symbolic link: each file below it is
 * reported once as a second path of the file listed (a loop back to a parent would otherwise
 * be listed about 40 times over, up to the system's link limit).
 */
function reportReachedAgain(folder: string, earlier: string, onSkip: OnSkip): void {
  const seen = new Set<string>();
  const walk = (abs: string, below: string) => {
    const stat = fs.statSync(abs, { throwIfNoEntry: false });
    if (!stat || seen.has(idOf(stat, abs))) return;
    seen.add(idOf(stat, abs));
    let names: string[] = [];
    try {
      names = fs.readdirSync(abs).sort();
    } catch {
      // unreadable: reported where it was listed
    }
    if (names.length === 0 && below === '') onSkip(abs, `the same folder as another path (a symbolic link): ${earlier}`);
    for (const name of names) {
      const full = path.join(abs, name);
      const rel = below ? `${below}/${name}` : name;
      if (fs.statSync(full, { throwIfNoEntry: false })?.isDirectory()) walk(full, rel);
      else onSkip(full, `the same file as another path (a symbolic or hard link): ${earlier === '.' ? rel : `${earlier}/${rel}`}`);
    }
  };
  walk(folder, '');
}

function kindOf(stat: fs.Stats): string {
  if (stat.isFIFO()) return 'a named pipe';
  if (stat.isSocket()) return 'a socket';
  if (stat.isBlockDevice() || stat.isCharacterDevice()) return 'a device';
  return 'an unknown kind of entry';
}

/**
 * Sorted paths, each file once: a file with a second name (a hard link, a symbolic link to a
 * file) would enter the data twice, and a kNN would find it as its own neighbour. Of the paths
 * of one file the shortest is kept, the first in sorted order among equals.
 */
function distinctFiles(entries: Listed[], root: string, onSkip: OnSkip): string[] {
  const depth = (p: string) => p.split('/').length;
  const preferred = (a: string, b: string) => depth(a) - depth(b) || (a < b ? -1 : a > b ? 1 : 0);
  const kept = new Map<string, string>();
  for (const e of entries) {
    const other = kept.get(e.id);
    if (other === undefined || preferred(e.rel, other) < 0) kept.set(e.id, e.rel);
  }
  const files = new Set(kept.values());
  for (const e of entries) {
    if (!files.has(e.rel)) onSkip(path.join(root, e.rel), `the same file as another path (a symbolic or hard link): ${kept.get(e.id)}`);
  }
  return [...files].sort();
}

/**
 * One string names a data source, so pipelines take `--train SPEC --test SPEC`:
 *   `shards/train-*.tar.gz`, `a.tar`, `x-{000000..000007}.tgz`   -> WebDataset tar shards
 *   `cifar-10-batches-bin/data_batch_*.bin`                       -> CIFAR-10/100 binary
 *   an existing directory                                         -> image folder (root/<class>/...)
 * A path or glob is judged by the files it matches.
 * Class names: classes.txt beside the (first) shard, the CIFAR metadata file, or the folder's
 * class folders; undefined where none is known.
 */
import * as fs from 'fs';
import * as path from 'path';
import fg from 'fast-glob';
import { match } from 'ts-pattern';
import { cifarBinary } from './cifar-binary';
import { imageFolder } from './image-folder';
import { tarShards, type OnSkip, type SourceOptions } from './tar-shards';
import type { EncodedSample } from './types';

export type SourceKind = 'tar' | 'cifar-binary' | 'folder';

export interface OpenedSource {
  kind: SourceKind;
  samples: AsyncIterable<EncodedSample>;
  classes: string[] | undefined;
}

export interface OpenOptions extends SourceOptions {
  onSkip?: OnSkip;
}

export function openSource(spec: string, opts: OpenOptions = {}): OpenedSource {
  const isDir = fs.existsSync(spec) && fs.statSync(spec).isDirectory();
  // A file or glob is judged by what it matches (so `shards/*` works); files that are neither
  // shards nor CIFAR batches (classes.txt, README.md, ...) are ignored.
  const matched = isDir ? [] : fs.existsSync(spec) ? [spec] : fg.sync(spec, { onlyFiles: true });
  const tars = matched.filter((f) => /\.(tar|tar\.gz|tgz)$/i.test(f));
  const bins = matched.filter((f) => /\.bin$/i.test(f));
  return match({ isDir, tars: tars.length > 0, bins: bins.length > 0 })
    .with({ isDir: true }, (): OpenedSource => {
      const samples = imageFolder({ ...opts, root: spec });
      return { kind: 'folder', samples, classes: samples.classes };
    })
    .with({ tars: true, bins: false }, (): OpenedSource => {
      const samples = tarShards({ ...opts, shards: tars });
      return { kind: 'tar', samples, classes: readClassesTxt(path.dirname(samples.shards[0])) };
    })
    .with({ tars: false, bins: true }, (): OpenedSource => {
      const samples = cifarBinary({ ...opts, files: bins });
      return { kind: 'cifar-binary', samples, classes: samples.classes };
    })
    .otherwise(() => {
      if (matched.length === 0) throw new Error(`Data source ${JSON.stringify(spec)}: no such file or folder, and no files match it`);
      throw new Error(
        `Cannot tell what data source ${JSON.stringify(spec)} is: expected tar shards (.tar, .tar.gz, .tgz), ` +
          `CIFAR binary files (.bin) or an image folder; it matches ${matched.slice(0, 3).join(', ')}${matched.length > 3 ? ', ...' : ''}`,
      );
    });
}

/** classes.txt: line i = name of class i. */
export function readClassesTxt(dir: string): string[] | undefined {
  const file = path.join(dir, 'classes.txt');
  if (!fs.existsSync(file)) return undefined;
  return fs.readFileSync(file, 'utf8').split('\n').map((l) => l.trim()).filter((l) => l.length > 0);
}

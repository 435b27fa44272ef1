/**
 * One string names a data source, so pipelines take `--train SPEC --test SPEC`:
 *   `shards/train-*.tar.gz`, `a.tar`, `x-{000000..000007}.tgz`   -> WebDataset tar shards
 *   `https://host/train-{000000..001281}.tar`, `pipe:CMD`        -> tar shards, streamed
 *   `a/*.tar::b/*.tar` (several specs)                            -> tar shards, all of them
 *   `cifar-10-batches-bin/data_batch_*.bin`                       -> CIFAR-10/100 binary
 *   an existing directory                                         -> image folder (root/<class>/...)
 * A path or glob is judged by the files it matches; URLs and pipes are tar shards (see
 * shard-spec.ts for the notation).
 * Class names: classes.txt beside the first shard (when it is a local file: a remote source
 * gives its class count with numClasses), the CIFAR metadata file, or the folder's class
 * folders; undefined where none is known.
 * Class count: the folder's classes, CIFAR's 10 / 100 (20 coarse), classes.txt's lines, or
 * `numClasses` (the --num-classes flag) for shards without classes.txt; a given numClasses that
 * disagrees with the data's own count is an error. Labels outside it are skipped and counted.
 */
import * as fs from 'fs';
import * as path from 'path';
import { match } from 'ts-pattern';
import { cifarBinary } from './cifar-binary';
import { imageFolder } from './image-folder';
import { expandShardSpecs, isRemoteShard } from './shard-spec';
import { LABEL_LIMIT, tarShards, type OnSkip, type SourceOptions } from './tar-shards';
import type { EncodedSample } from './types';

export type SourceKind = 'tar' | 'cifar-binary' | 'folder';

export interface OpenedSource {
  kind: SourceKind;
  samples: AsyncIterable<EncodedSample>;
  classes: string[] | undefined;
  /** Labels lie in [0, numClasses); undefined for shards with no class list (labels then below LABEL_LIMIT). */
  numClasses: number | undefined;
}

export interface OpenOptions extends SourceOptions {
  onSkip?: OnSkip;
  /** Class count of shards without classes.txt (--num-classes); elsewhere checked against the data's. */
  numClasses?: number;
}

export function openSource(spec: string, opts: OpenOptions = {}): OpenedSource {
  const isDir = fs.existsSync(spec) && fs.statSync(spec).isDirectory();
  // A file or glob is judged by what it matches (so `shards/*` works); files that are neither
  // shards nor CIFAR batches (classes.txt, README.md, ...) are ignored.
  const matched = isDir ? [] : expandShardSpecs(spec, { strict: false });
  const tars = matched.filter((f) => isRemoteShard(f) || /\.(tar|tar\.gz|tgz)$/i.test(f));
  const bins = matched.filter((f) => /\.bin$/i.test(f));
  return match({ isDir, tars: tars.length > 0, bins: bins.length > 0 })
    .with({ isDir: true }, (): OpenedSource => {
      const samples = imageFolder({ ...opts, root: spec });
      const numClasses = agreedClassCount(spec, samples.classes.length, 'class folders', opts.numClasses);
      return { kind: 'folder', samples, classes: samples.classes, numClasses };
    })
    .with({ tars: true, bins: false }, (): OpenedSource => {
      const first = tars.sort()[0];
      const classesFile = path.join(path.dirname(path.resolve(first)), 'classes.txt');
      const classes = isRemoteShard(first) ? undefined : readClassesTxt(path.dirname(classesFile));
      if (classes?.length === 0) throw new Error(`${classesFile} lists no classes (one class name a line)`);
      const numClasses = classes ? agreedClassCount(spec, classes.length, `classes in ${classesFile}`, opts.numClasses) : opts.numClasses;
      const samples = tarShards({ ...opts, shards: tars, numClasses });
      return { kind: 'tar', samples, classes, numClasses };
    })
    .with({ tars: false, bins: true }, (): OpenedSource => {
      const samples = cifarBinary({ ...opts, files: bins });
      const numClasses = agreedClassCount(spec, samples.numClasses, `${samples.variant} classes`, opts.numClasses);
      return { kind: 'cifar-binary', samples, classes: samples.classes, numClasses };
    })
    .otherwise(() => {
      if (matched.length === 0) throw new Error(`Data source ${JSON.stringify(spec)}: no such file or folder, and no files match it`);
      throw new Error(
        `Cannot tell what data source ${JSON.stringify(spec)} is: expected tar shards (.tar, .tar.gz, .tgz), ` +
          `CIFAR binary files (.bin) or an image folder; it matches ${matched.slice(0, 3).join(', ')}${matched.length > 3 ? ', ...' : ''}`,
      );
    });
}

/** The data's own class count, checked against a given one (--num-classes). */
function agreedClassCount(spec: string, own: number, what: string, given: number | undefined): number {
  if (given !== undefined && given !== own) throw new Error(`--num-classes ${given} disagrees with ${spec}: it has ${own} ${what}`);
  return own;
}

/**
 * The class count an evaluation of train against test uses: both sources must know it and
 * agree on it, and on the class names where both name them (image folders with a class
 * missing on one side would otherwise shift every label after it).
 */
export function evalClassCount(train: string, test: string, numClasses?: number): number {
  const a = openSource(train, { numClasses });
  const b = openSource(test, { numClasses });
  const count = (spec: string, o: OpenedSource) => {
    if (o.numClasses !== undefined) return o.numClasses;
    throw new Error(
      `${spec}: the number of classes is unknown (no classes.txt beside the shards): ` +
        `put classes.txt there (one class name a line) or pass --num-classes N (N <= ${LABEL_LIMIT})`,
    );
  };
  const [na, nb] = [count(train, a), count(test, b)];
  if (na !== nb) throw new Error(`train ${train} has ${na} classes but test ${test} has ${nb}: labels would not mean the same classes`);
  if (a.classes && b.classes && a.classes.some((c, i) => c !== b.classes![i])) {
    const i = a.classes.findIndex((c, j) => c !== b.classes![j]);
    throw new Error(`train ${train} and test ${test} name their classes differently (class ${i}: ${JSON.stringify(a.classes[i])} vs ${JSON.stringify(b.classes[i])})`);
  }
  return na;
}

/**
 * classes.txt: line i = name of class i (blank lines ignored). A name listed twice is refused:
 * two classes of one name would split one class's samples between two labels.
 */
export function readClassesTxt(dir: string): string[] | undefined {
  const file = path.join(dir, 'classes.txt');
  if (!fs.existsSync(file)) return undefined;
  const lines = fs.readFileSync(file, 'utf8').split('\n').map((l) => l.trim());
  const classes: string[] = [];
  const lineOf = new Map<string, number>();
  lines.forEach((name, i) => {
    if (name.length === 0) return;
    const earlier = lineOf.get(name);
    if (earlier !== undefined) throw new Error(`${file}: class name ${JSON.stringify(name)} is listed twice (lines ${earlier + 1} and ${i + 1}); each class must be named once`);
    lineOf.set(name, i);
    classes.push(name);
  });
  return classes;
}

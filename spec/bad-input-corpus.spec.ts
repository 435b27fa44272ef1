/**
 * Every entry point (refine, pretrain-mae, mimco, knn, eval) over the bad-input corpus
 * (scripts/make-bad-input-corpus.ts), each case a child process with a time limit: it must end
 * in a clear error (exit 1, one `error: ...` line naming the problem) or in counted skips with
 * the right numbers, never a hang, a crash (stack trace, signal) or a silently wrong number.
 * Prints a table case -> outcome.
 *
 * Library cases (entry 'library') call an eval/ or losses/ function in this process instead: a
 * check that belongs to the function whatever pipeline or flags reach it (a batch of 1 in a
 * contrastive loss, a low-shot class without train images); they count as a clear error when
 * the call throws an Error matching the case.
 *
 * The children run the project transpiled to JavaScript once (typescript's transpileModule,
 * the same code ts-node runs), so a case costs its own work rather than a TypeScript compile:
 * 48 cases in about a minute of CPU.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ts from 'typescript';
import * as tf from '@tensorflow/tfjs';
import { makeBadInputCorpus, BUNDLED_CHECKPOINT, rotateTarLabels } from '../scripts/make-bad-input-corpus';
import { featureMatrix } from '../eval/features';
import { lowShot } from '../eval/low-shot';
import { nnclrLoss } from '../losses/nnclr';
import { nnaLoss } from '../losses/nna';
import { mimcoLoss } from '../losses/mimco';

const ROOT = path.resolve(__dirname, '..');
const LIMIT_MS = Number(process.env.BAD_INPUT_CASE_LIMIT_MS ?? 90_000);
const CONCURRENCY = 2;
/** Only the cases whose names match (a regular expression), to rerun a few while working on them. */
const ONLY = process.env.BAD_INPUT_CASES ? new RegExp(process.env.BAD_INPUT_CASES) : undefined;

type Entry = 'knn' | 'eval' | 'refine' | 'pretrain-mae' | 'mimco' | 'nnclr' | 'finetune';

interface Case {
  name: string;
  entry: Entry | 'library';
  args: string[];
  /** 'error': exit 1 with a message matching `match`; 'skips'/'ok': exit 0, output matching `match`. */
  expect: 'error' | 'skips' | 'ok';
  match: RegExp;
  /** Checks the numbers the run wrote (its --out folder): no silently wrong count. */
  check?: (out: string) => void;
  /** Runs first (another child, a change to the data): the case's own setting-up. */
  before?: () => Promise<void>;
  /** A library case's call (entry 'library'). */
  call?: () => unknown;
}

interface Outcome {
  rc: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  seconds: number;
  output: string;
}

let tmp = '';
let js = '';
let corpus = '';
const c = (rel: string) => path.join(corpus, rel);
const outOf = (name: string) => path.join(tmp, 'out', name);

/** The project's sources as CommonJS under `out` (node_modules linked, kernels copied). */
function transpileProject(out: string): void {
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(path.join(ROOT, dir), { withFileTypes: true })) {
      const rel = path.join(dir, e.name);
      if (e.isDirectory()) walk(rel);
      else if (rel.endsWith('.ts') || rel.endsWith('.wasm')) {
        fs.mkdirSync(path.join(out, dir), { recursive: true });
        if (rel.endsWith('.wasm')) fs.copyFileSync(path.join(ROOT, rel), path.join(out, rel));
        else {
          const source = fs.readFileSync(path.join(ROOT, rel), 'utf8');
          const { outputText } = ts.transpileModule(source, {
            fileName: rel,
            compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true, resolveJsonModule: true },
          });
          fs.writeFileSync(path.join(out, rel.replace(/\.ts$/, '.js')), outputText);
        }
      }
    }
  };
  // every source folder tsconfig.json type-checks, less the tests, benchmarks and scripts
  const { include } = JSON.parse(fs.readFileSync(path.join(ROOT, 'tsconfig.json'), 'utf8')) as { include: string[] };
  for (const dir of include.filter((d) => !['spec', 'bench', 'scripts'].includes(d))) walk(dir);
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(out, 'node_modules'), 'dir');
}

/** A library case's call, as an outcome: a thrown Error is `error: <message>` with exit 1. */
async function callLibrary(f: () => unknown): Promise<Outcome> {
  const t0 = performance.now();
  const done = (rc: number, output: string): Outcome => ({ rc, signal: null, timedOut: false, seconds: (performance.now() - t0) / 1000, output });
  try {
    await f();
    return done(0, '');
  } catch (err) {
    return done(1, err instanceof Error ? `error: ${err.message}\n` : `threw a non-Error: ${String(err)}`);
  }
}

function run(entry: Entry, args: string[]): Promise<Outcome> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [path.join(js, 'pipelines', `${entry}.js`), ...args], {
      cwd: tmp, // the feature cache (.cache/features) and any default run folder land in the temp dir
      env: { ...process.env, WASM_THREADS: '1', DEBUG: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, LIMIT_MS);
    child.on('close', (rc, signal) => {
      clearTimeout(timer);
      resolve({ rc, signal, timedOut, seconds: (performance.now() - t0) / 1000, output });
    });
  });
}

const json = (file: string) => JSON.parse(fs.readFileSync(file, 'utf8'));
const knnCounts = (out: string) => {
  const r = json(path.join(out, 'knn.json')).knn[0];
  return [r.trainCount, r.testCount];
};
const expectKnnCounts = (train: number, test: number) => (out: string) => assert.equal(knnCounts(out), [train, test], 'train/test images used');

const CKPT = () => path.join(ROOT, BUNDLED_CHECKPOINT);
const goodTrain = () => c('good/train-*.tar');
const goodTest = () => c('good/test-*.tar');
/** knn over the bundled checkpoint; `train`/`test` default to the good set. */
/**
 * A case's flags: `extra` replaces a default flag of the same name in place (the pipelines refuse
 * a flag given twice) and adds the others. A flag's value is the next argument unless that is a flag.
 */
function withFlags(defaults: string[], extra: string[]): string[] {
  const parse = (args: string[]) => {
    const flags: [string, string[]][] = [];
    for (let i = 0; i < args.length; i++) {
      const value = i + 1 < args.length && !args[i + 1].startsWith('--') ? [args[++i]] : [];
      flags.push([args[i - value.length], value]);
    }
    return flags;
  };
  const merged = parse(defaults);
  for (const [flag, value] of parse(extra)) {
    const at = merged.findIndex(([f]) => f === flag);
    if (at >= 0) merged[at] = [flag, value];
    else merged.push([flag, value]);
  }
  return merged.flatMap(([flag, value]) => [flag, ...value]);
}
const knn = (name: string, extra: string[], train = goodTrain(), test = goodTest()) => withFlags(['--checkpoint', CKPT(), '--train', train, '--test', test, '--out', outOf(name)], extra);
const evalArgs = (name: string, extra: string[], train = goodTrain(), test = goodTest()) => withFlags(['--checkpoint', CKPT(), '--train', train, '--test', test, '--out', outOf(name)], extra);
const refine = (name: string, extra: string[], train = goodTrain()) =>
  withFlags(
    ['--checkpoint', CKPT(), '--train', train, '--test', goodTest(), '--out', outOf(name), '--skip-knn', '--max-steps', '1', '--batch', '4', '--queue-size', '16', '--local-views', '1', '--checkpoint-minutes', '0'],
    extra,
  );
const mae = (name: string, extra: string[], train = goodTrain()) => withFlags(['--train', train, '--out', outOf(name), '--epochs', '1', '--batch', '4', '--warmup-share', '0', '--skip-knn'], extra);
// the student from scratch (--checkpoint none), so the cases run from any directory whatever the pipeline's default
const mimco = (name: string, extra: string[], train = goodTrain()) =>
  withFlags(['--teacher', CKPT(), '--checkpoint', 'none', '--preset', 'vit-micro-p4', '--train', train, '--test', goodTest(), '--out', outOf(name), '--skip-knn', '--max-steps', '1', '--batch', '4', '--epochs', '1'], extra);

const nnclr = (name: string, extra: string[], train = goodTrain()) =>
  withFlags(['--checkpoint', CKPT(), '--train', train, '--test', goodTest(), '--out', outOf(name), '--skip-knn', '--max-steps', '1', '--batch', '4', '--queue-size', '16', '--checkpoint-minutes', '0'], extra);
const finetune = (name: string, extra: string[], train = goodTrain()) =>
  withFlags(['--checkpoint', CKPT(), '--train', train, '--test', goodTest(), '--out', outOf(name), '--label-share', '100%', '--epochs', '1', '--seed', '0', '--lr', '1e-3', '--batch', '4', '--val-evals', '1'], extra);

function cases(): Case[] {
  const list: Case[] = [];
  const add = (name: string, entry: Entry, args: string[], expect: Case['expect'], match: RegExp, more: Partial<Case> = {}) => list.push({ name, entry, args, expect, match, ...more });

  // ---- labels (part 1)
  add('label 123456 / 2^66 with classes.txt', 'knn', knn('label-huge', [], c('label-huge/*.tar')), 'skips', /skipped 2 samples \(2 x label outside the 4 classes/, { check: expectKnnCounts(14, 8) });
  add('label 123456, no classes.txt', 'knn', knn('label-nocls', [], c('label-huge-no-classes/*.tar')), 'error', /number of classes is unknown.*--num-classes/);
  add('label 123456, no classes.txt, --num-classes 4', 'knn', knn('label-numcls', ['--num-classes', '4'], c('label-huge-no-classes/*.tar')), 'skips', /skipped 2 samples \(2 x label outside the 4 classes/, { check: expectKnnCounts(14, 8) });
  add('--num-classes disagrees with classes.txt', 'knn', knn('numcls-disagree', ['--num-classes', '7']), 'error', /--num-classes 7 disagrees .* 4 classes in/);
  add('eval: label 123456 (knn, linear, low-shot, k-means)', 'eval', evalArgs('eval-label', ['--tasks', 'knn,linear,lowshot,kmeans', '--blocks', 'last', '--shots', '1,2'], c('label-huge/*.tar')), 'skips', /skipped 2 samples/, {
    check: (out) => {
      const r = json(path.join(out, 'report.json'));
      assert.equal([r.train.count, r.test.count, r.kmeans.k], [14, 8, 4], 'train, test, k-means k');
    },
  });
  add('CIFAR record with label byte 200', 'knn', knn('cifar-label', [], c('cifar-bad-label/data_batch_1.bin'), c('cifar-bad-label/data_batch_1.bin')), 'skips', /skipped 1 samples \(1 x label byte outside the 10 cifar10 classes/, { check: expectKnnCounts(5, 5) });
  add('train and test name classes differently', 'knn', knn('class-names', [], c('folder'), goodTest()), 'error', /name their classes differently/);

  // ---- feature cache keyed by content (part 2)
  const changing = () => path.join(tmp, 'changing-folder');
  add('image folder changed after caching', 'knn', knn('folder-changed', [], changing(), changing()), 'ok', /changed since its features were cached.*extracting again/s, {
    before: async () => {
      fs.cpSync(c('folder'), changing(), { recursive: true });
      for (const f of ['red/zero-bytes.jpg', 'red/truncated.jpg', 'green/text.jpg', 'grey/bomb.png']) fs.rmSync(path.join(changing(), f));
      const first = await run('knn', knn('folder-first', [], changing(), changing()));
      assert.is(first.rc, 0, `first run: ${first.output}`);
      assert.equal(knnCounts(outOf('folder-first')), [19, 19]);
      for (const f of ['red/img0.jpg', 'red/img1.jpg', 'blue/img0.jpg']) fs.rmSync(path.join(changing(), f));
      fs.renameSync(path.join(changing(), 'green/img0.jpg'), path.join(changing(), 'grey/moved.jpg'));
    },
    check: expectKnnCounts(16, 16),
  });

  // ---- shards (part 3)
  add('duplicate keys in and across shards', 'knn', knn('dup', [], c('dup-keys/*.tar')), 'skips', /skipped 2 samples \(2 x duplicate key/, { check: expectKnnCounts(14, 8) });
  add('symlink and hard-link members', 'knn', knn('links', [], c('links/*.tar')), 'skips', /symbolic link member, not followed.*hard link member, not followed/s, { check: expectKnnCounts(8, 8) });
  add('truncated tar', 'knn', knn('truncated', [], c('truncated/*.tar')), 'skips', /train-000000\.tar: the tar archive ends in the middle of a member: the file is truncated/);
  add('corrupt gzip', 'knn', knn('corrupt-gz', [], c('corrupt-gz/*.tar.gz')), 'skips', /train-000000\.tar\.gz: the gzip data is corrupt/);
  add('.tar.gz that is not gzip', 'knn', knn('not-gzip', [], c('not-gzip/*.tar.gz')), 'error', /not gzip-compressed/);
  add('MAE on a truncated shard', 'pretrain-mae', mae('mae-truncated', [], c('truncated/*.tar')), 'skips', /the file is truncated/);
  add('MAE on a .tar.gz that is not gzip', 'pretrain-mae', mae('mae-not-gzip', [], c('not-gzip/*.tar.gz')), 'error', /no samples could be read .*not gzip-compressed/);

  // ---- images and folders
  add('bad and odd images in a folder', 'knn', knn('folder', [], c('folder'), c('folder')), 'skips', /skipped 4 samples/, { check: expectKnnCounts(19, 19) });
  add('image folder with a symlink loop', 'knn', knn('folder-loop', [], c('folder-loop'), c('folder-loop')), 'skips', /x the same file as another path \(a symbolic or hard link\)/, { check: expectKnnCounts(6, 6) });
  add('empty folder', 'knn', knn('empty', [], c('empty-folder')), 'error', /holds no images/);
  add('folder without images', 'pretrain-mae', mae('no-images', [], c('no-images')), 'error', /holds no images/);
  add('pattern matching nothing', 'eval', evalArgs('nothing', [], c('good/nothing-*.tar')), 'error', /no such file or folder, and no files match it/);
  add('CIFAR file cut short', 'mimco', mimco('cifar-short', [], c('cifar-short/data_batch_1.bin')), 'error', /not a whole number of cifar10 records/);

  // ---- checkpoints and their architecture flag (part 5)
  // without metadata the config is inferred from the tensors and said so (heads: timm's default for the width)
  const inferred = /no 'vit' metadata: config inferred from the tensors: width 128, patch 4 .*depth 6 .* 2 heads \(timm's default for width 128; heads are not in the tensors\)/;
  add('checkpoint without ViT metadata, refine', 'refine', refine('nometa-refine', ['--checkpoint', c('ckpt/no-metadata.safetensors')]), 'ok', inferred);
  add('no ViT metadata, refine --preset, duplicate keys', 'refine', refine('nometa-refine-preset', ['--checkpoint', c('ckpt/no-metadata.safetensors'), '--preset', 'vit-micro-p4'], c('dup-keys/*.tar')), 'skips', /duplicate key.*stopped at step 1 of/s);
  add('teacher without ViT metadata, mimco', 'mimco', mimco('nometa-mimco', ['--teacher', c('ckpt/no-metadata.safetensors')]), 'ok', inferred);
  add('no ViT metadata, mimco --teacher-preset, link members', 'mimco', mimco('nometa-mimco-preset', ['--teacher', c('ckpt/no-metadata.safetensors'), '--teacher-preset', 'vit-micro-p4'], c('links/*.tar')), 'skips', /symbolic link member.*stopped at step 1 of/s);
  add('checkpoint that is text', 'eval', evalArgs('ckpt-text', ['--checkpoint', c('ckpt/text.safetensors')]), 'error', /text\.safetensors/);
  add('checkpoint cut short', 'knn', knn('ckpt-short', ['--checkpoint', c('ckpt/truncated.safetensors')]), 'error', /truncated\.safetensors/);
  add('checkpoint whose config lies (depth 12)', 'refine', refine('ckpt-lie', ['--checkpoint', c('ckpt/wrong-config.safetensors')]), 'error', /wrong-config\.safetensors.*blocks\.6/s);
  add('checkpoint that does not exist', 'knn', knn('ckpt-missing', ['--checkpoint', c('ckpt/missing.safetensors')]), 'error', /--checkpoint .*missing\.safetensors: no such file/);

  // ---- output folders (part 4)
  for (const entry of ['knn', 'eval', 'refine', 'pretrain-mae', 'mimco'] as const) {
    const args = { knn, eval: evalArgs, refine, 'pretrain-mae': mae, mimco }[entry](`proc-${entry}`, []);
    const withOut = (out: string) => [...args.slice(0, args.indexOf('--out')), '--out', out, ...args.slice(args.indexOf('--out') + 2)];
    add(`--out /proc/x (${entry})`, entry, withOut('/proc/x'), 'error', /--out "\/proc\/x": \/proc is on a proc file system/);
    if (entry === 'knn') {
      add(`--out naming a file (${entry})`, entry, withOut(c('a-file')), 'error', /a-file": it exists and is not a folder/);
      add(`--out below a file (${entry})`, entry, withOut(path.join(c('a-file'), 'run')), 'error', /a-file exists and is not a folder/);
    }
  }
  add('eval --compare into /sys', 'eval', ['--compare', c('a-file'), '--out', '/sys/x'], 'error', /\/sys is on a sysfs file system/);

  // ---- numbers (part 5)
  add('--batch -4 (refine)', 'refine', refine('neg-batch', ['--batch', '-4']), 'error', /--batch: expected an integer in \[2, 65536\], got '-4'/);
  add('--batch -4 (mimco)', 'mimco', mimco('neg-batch-mimco', ['--batch', '-4']), 'error', /--batch: expected an integer in \[2, 65536\], got '-4'/);
  add('--queue-size 1e12', 'refine', refine('queue-huge', ['--queue-size', '1e12']), 'error', /--queue-size: expected an integer in \[1, \d+\] \(each takes .*memory\), got '1e12'/);
  add('--local-views 1e9', 'refine', refine('views-huge', ['--local-views', '1e9']), 'error', /--local-views: expected an integer in \[0, 64\]/);
  add('--decoder-dim 1e9', 'pretrain-mae', mae('decoder-huge', ['--decoder-dim', '1e9']), 'error', /--decoder-dim: expected an integer in \[4, 8192\]/);
  add('--knn-k -4', 'knn', knn('neg-k', ['--knn-k', '-4']), 'error', /--knn-k: expected an integer in \[1, 10000\], got '-4'/);
  add('--seed 1e300', 'knn', knn('seed-huge', ['--seed', '1e300']), 'error', /--seed: expected an integer in \[0, \d+\], got '1e300'/);
  add('--eval-test-limit -1', 'eval', evalArgs('neg-limit', ['--eval-test-limit', '-1']), 'error', /--eval-test-limit: expected an integer in \[0, \d+\], got '-1'/);
  add('--blocks 99', 'eval', evalArgs('blocks-99', ['--blocks', '99']), 'error', /--blocks: block 99 does not exist/);
  add('--mask-ratio 2', 'pretrain-mae', mae('mask-2', ['--mask-ratio', '2']), 'error', /--mask-ratio: expected a number in \[0\.01, 0\.99\], got '2'/);
  add('--temperature NaN', 'mimco', mimco('temp-nan', ['--temperature', 'NaN']), 'error', /--temperature: expected a number >= 0\.0001, got 'NaN'/);

  // ---- numbers that would be silently wrong (issue 31)
  const overflow = () => c('ckpt/overflow.safetensors');
  const overflowError = /the features of block \d+ are not finite \(NaN or infinity\) for 16 of the 16 images .*the activations first stop being finite at the output of block 0; its largest weight is blocks\.0\.norm1\.weight \(\|w\| up to 1\.00e\+38\)/;
  // only the flags every version has (the flag vocabulary is being renamed)
  const overflowArgs = (name: string) => ['--checkpoint', overflow(), '--train', goodTrain(), '--test', goodTest(), '--out', outOf(name)];
  add('checkpoint whose weights overflow (knn)', 'knn', overflowArgs('ckpt-overflow'), 'error', overflowError);
  add('checkpoint whose weights overflow (eval)', 'eval', overflowArgs('ckpt-overflow-eval'), 'error', overflowError);
  const rewritten = () => path.join(tmp, 'rewritten');
  let cachedTop1 = NaN;
  add('test shard rewritten after caching, size and mtime kept (labels all changed)', 'knn', knn('rewritten', [], path.join(rewritten(), 'train-*.tar'), path.join(rewritten(), 'test-*.tar')), 'ok', /changed since its features were cached \(1 file changed: .*test-000000\.tar \(same size/, {
    before: async () => {
      fs.cpSync(c('good'), rewritten(), { recursive: true });
      const first = await run('knn', knn('rewritten-first', [], path.join(rewritten(), 'train-*.tar'), path.join(rewritten(), 'test-*.tar')));
      assert.is(first.rc, 0, `first run: ${first.output}`);
      cachedTop1 = json(path.join(outOf('rewritten-first'), 'knn.json')).knn[0].last;
      assert.is(rotateTarLabels(path.join(rewritten(), 'test-000000.tar'), 4), 8);
    },
    check: (out) => {
      // every test label moved to the next class: the cached features' labels would give the first run's number
      const top1 = json(path.join(out, 'knn.json')).knn[0].last;
      assert.ok(cachedTop1 >= 0.75 && top1 <= 0.25, `kNN top-1 ${top1} after the labels changed, ${cachedTop1} before`);
    },
  });
  // ---- flags and run folders on every training pipeline (issue 31, parts 5 and 6)
  add('a flag given twice (nnclr)', 'nnclr', [...nnclr('twice', []), '--batch', '8'], 'error', /--batch is given twice \(4 and 8\): give it once/);
  add('a hex number (finetune)', 'finetune', finetune('hex', ['--batch', '0x4']), 'error', /--batch: expected an integer in \[1, 65536\] in decimal notation, got '0x4'/);
  add('a renamed flag (mimco --blr)', 'mimco', mimco('renamed', ['--blr', '1e-3']), 'error', /--blr was renamed: use --lr/);
  add('nnclr --batch 1: no negatives', 'nnclr', nnclr('batch-1', ['--batch', '1']), 'error', /--batch: expected an integer in \[2, 65536\], got '1'/);
  add('finetune --label-share 0%', 'finetune', finetune('share-0', ['--label-share', '0%']), 'error', /--label-share: '0%' is neither .*above 0%/);
  add('nnclr --epochs 0', 'nnclr', nnclr('epochs-0', ['--epochs', '0']), 'error', /--epochs: expected a number > 0/);
  add('a new run into a folder holding a run (nnclr)', 'nnclr', nnclr('owned', []), 'error', /--out .*owned holds a nnclr run \(.*\): continue it with .*--resume .*, choose another --out, or pass --overwrite/, {
    before: async () => {
      const first = await run('nnclr', nnclr('owned', []));
      assert.is(first.rc, 0, `first run: ${first.output}`);
    },
    check: (out) => assert.ok(fs.existsSync(path.join(out, 'checkpoint', 'state.safetensors')), 'the earlier run is kept'),
  });
  add('MAE resuming a nnclr run folder', 'pretrain-mae', ['--resume', outOf('nnclr-run')], 'error', /--resume .*nnclr-run: the folder holds a nnclr run, not a mae run/, {
    before: async () => {
      fs.mkdirSync(outOf('nnclr-run'), { recursive: true });
      fs.writeFileSync(path.join(outOf('nnclr-run'), 'run.json'), JSON.stringify({ pipeline: 'nnclr' }));
    },
  });
  add('finetune with a corrupt flags.json on resume', 'finetune', ['--resume', outOf('ft-corrupt')], 'error', /ft-corrupt.*flags\.json is not valid JSON/, {
    before: async () => {
      fs.mkdirSync(outOf('ft-corrupt'), { recursive: true });
      fs.writeFileSync(path.join(outOf('ft-corrupt'), 'flags.json'), '{"train": ');
    },
  });
  const P = 8;
  const rows = (n: number) => tf.randomNormal([n, P], 0, 1, 'float32', 1) as tf.Tensor2D;
  const noNegatives = /a batch of 1 (sample|image) has no negatives: .* so (the|that) loss would be 0 at every step; use a batch of at least 2/;
  const library = (name: string, call: () => unknown, match: RegExp) => list.push({ name, entry: 'library', args: [], expect: 'error', match, call });
  library('batch of 1: NNCLR loss (losses/nnclr.ts)', () => tf.tidy(() => nnclrLoss([rows(1), rows(1)], [rows(1), rows(1)], 0.1)), noNegatives);
  library('batch of 1: NNA loss (losses/nna.ts)', () => tf.tidy(() => nnaLoss({ projections: [rows(1), rows(1)], swapped: [rows(1), rows(1)], predictions: [rows(1), rows(1)], numGlobal: 2 }).total), noNegatives);
  library('batch of 1: MimCo loss (losses/mimco.ts)', () =>
    tf.tidy(() => {
      const patches = tf.randomNormal([1, 4, P], 0, 1, 'float32', 2) as tf.Tensor3D;
      return mimcoLoss({ studentPatches: patches, teacherPatches: patches, mask: tf.ones([1, 4]) as tf.Tensor2D, studentGlobal: rows(1), teacherGlobal: rows(1), temperature: 0.2 }).total;
    }), noNegatives);
  library('low-shot: a test class without train images (eval/low-shot.ts)', () => {
    // the good set's layout: 16 train and 8 test images of 4 classes, class 3 (grey) left out of train
    const trainLabels = Int32Array.from({ length: 12 }, (_, i) => i % 3);
    const testLabels = Int32Array.from({ length: 8 }, (_, i) => i % 4);
    const features = (n: number, seed: number) => featureMatrix(Float32Array.from({ length: n * P }, (_, i) => Math.sin(seed + i)), n, P);
    return lowShot(features(12, 0), trainLabels, features(8, 1), testLabels, { shots: [{ perClass: 1 }], classNames: ['red', 'green', 'blue', 'grey'] });
  }, /low-shot: a class has evaluation images but no training images \(class 3 \(grey\): 2 images\); no classifier can predict it, so accuracy would be capped at 75\.0%/);
  return list;
}

const STACK = /^\s+at .+(:\d+:\d+\)?|\(native\)|<anonymous>\)?)$/m;

/** What a run ended in, in a word or two, for the table and the assertions. */
function classify(o: Outcome): string {
  if (o.timedOut) return 'HANG (killed at the limit)';
  if (o.signal) return `CRASH (signal ${o.signal})`;
  if (STACK.test(o.output)) return 'CRASH (stack trace)';
  if (o.rc === 0) return /skipped \d+ samples|^\[data\] skipped /m.test(o.output) ? 'counted skips' : 'ok';
  if (o.rc === 1 && /^error: /m.test(o.output)) return 'clear error';
  return `CRASH (exit ${o.rc})`;
}

const results = new Map<string, { c: Case; o: Outcome; outcome: string; failure?: string }>();

test.before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mimref-bad-input-'));
  js = path.join(tmp, 'js');
  corpus = path.join(tmp, 'corpus');
  const t0 = performance.now();
  transpileProject(js);
  await makeBadInputCorpus(corpus);
  console.log(`\n[bad-input] project transpiled and corpus written in ${((performance.now() - t0) / 1000).toFixed(1)}s (${tmp})`);
});

test.after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('every entry point over the bad-input corpus: clear errors or counted skips, no hang, no crash, no wrong number', async () => {
  const list = cases().filter((k) => !ONLY || ONLY.test(k.name));
  const t0 = performance.now();
  let next = 0;
  const worker = async () => {
    while (next < list.length) {
      const k = list[next++];
      let failure: string | undefined;
      try {
        await k.before?.();
      } catch (err) {
        failure = `setting up: ${(err as Error).message}`;
      }
      const o = k.entry === 'library' ? await callLibrary(k.call!) : await run(k.entry, k.args);
      const outcome = classify(o);
      const errorText = o.output.slice(Math.max(0, o.output.search(/^error: /m)));
      if (!failure) {
        const wanted = k.expect === 'error' ? 'clear error' : k.expect === 'skips' ? 'counted skips' : 'ok';
        if (outcome !== wanted && !(k.expect === 'ok' && outcome === 'counted skips')) failure = `expected ${wanted}, got ${outcome}`;
        else if (!k.match.test(k.expect === 'error' ? errorText : o.output)) failure = `output does not match ${k.match}`;
        else {
          try {
            k.check?.(k.args[k.args.indexOf('--out') + 1]);
          } catch (err) {
            failure = `wrong number: ${(err as Error).message}`;
          }
        }
      }
      results.set(k.name, { c: k, o, outcome, failure });
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  const seconds = (performance.now() - t0) / 1000;

  const rows = list.map((k) => {
    const r = results.get(k.name)!;
    const lines = r.o.output.split('\n');
    const detail =
      r.outcome === 'clear error'
        ? (lines.find((l) => l.startsWith('error: ')) ?? '').slice(7, 110)
        : (lines.find((l) => /skipped \d+ samples/.test(l)) ?? lines.find((l) => l.startsWith('[data] skipped') || /changed since/.test(l)) ?? '').slice(0, 110);
    return `| ${k.name} | ${k.entry} | ${r.failure ? `FAIL: ${r.failure}` : r.outcome} | ${r.o.seconds.toFixed(1)} | ${detail.replace(/\|/g, '\\|')} |`;
  });
  console.log(['', '| case | entry point | outcome | s | message |', '|---|---|---|---|---|', ...rows].join('\n'));
  const tally = new Map<string, number>();
  for (const r of results.values()) tally.set(r.failure ? 'FAIL' : r.outcome, (tally.get(r.failure ? 'FAIL' : r.outcome) ?? 0) + 1);
  console.log(`[bad-input] ${list.length} cases in ${seconds.toFixed(1)}s (${CONCURRENCY} at a time): ${[...tally].map(([k, n]) => `${n} ${k}`).join(', ')}`);

  const failed = [...results.values()].filter((r) => r.failure);
  for (const r of failed) console.log(`\n--- ${r.c.name} (${r.c.entry} ${r.c.args.join(' ')}): ${r.failure}\n${r.o.output.slice(-2500)}`);
  assert.is(failed.length, 0, `failed: ${failed.map((r) => r.c.name).join(', ')}`);
});

test.run();

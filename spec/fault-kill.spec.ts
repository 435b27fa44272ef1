/**
 * Fault tolerance as a hostile user tries it: real pipelines as child processes, stopped with
 * kill -9 in the middle of writing a checkpoint, left as a kill between the two renames of a
 * swap leaves them, with Ctrl-C (SIGINT: exit 0, a checkpoint, the resume command) and with a
 * second Ctrl-C (stop at once), each time resumed with --resume: the final weights, the
 * optimiser state and every step's metrics are bit-identical to a run that went straight
 * through, and metrics.jsonl holds each step once. Tiny settings: a 48-image folder, 16 px.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import sharp from 'sharp';
import { initBackend } from '../runtime/backend';
import { latestCheckpoint, writeEncoder } from '../runtime/checkpoint';
import { readSafetensors, writeSafetensors } from '../models/safetensors';
import { VisionTransformer } from '../models/vit';
import { Rng } from '../lib/rng';
import { refine } from '../pipelines/refine';
import { withFlags } from './argv';
import { lockRunDir } from '../runtime/run-lock';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'fault-kill-'));
const images = path.join(root, 'images');
const checkpoint = path.join(root, 'mim.safetensors');
// 48 images, batch 8: 6 steps an epoch; 2 steps of stage 2 (heads only), 3 of stage 3
const refineArgs = [
  '--checkpoint', checkpoint, '--train', images, '--batch', '8', '--stage2-epochs', '0.34', '--stage3-epochs', '0.5',
  '--queue-size', '32', '--head-preset', 'tiny', '--local-views', '1', '--local-size', '8', '--skip-knn', '--seed', '3', '--ema', '0.5',
];
const maeArgs = ['--train', images, '--batch', '8', '--epochs', '1', '--warmup-share', '0.5', '--decoder-dim', '16', '--decoder-depth', '1', '--seed', '4', '--skip-knn'];

interface Outcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  out: string;
}

/** A signal to send the moment `when` holds (checked on each change to the run directory, on output and every 5 ms). */
interface Trigger {
  when: (out: string) => boolean;
  signal: NodeJS.Signals;
}

/** Runs a pipeline as its own process (1 wasm thread), sending the triggers' signals in order. */
function runChild(script: string, args: string[], runDir: string, triggers: Trigger[] = []): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-r', 'ts-node/register', script, ...args], { env: { ...process.env, WASM_THREADS: '1', TS_NODE_TRANSPILE_ONLY: '1' } });
    let out = '';
    let watcher: fs.FSWatcher | undefined;
    const pending = [...triggers];
    const check = () => {
      if (!watcher && fs.existsSync(runDir)) watcher = fs.watch(runDir, check);
      while (pending.length > 0 && pending[0].when(out)) child.kill(pending.shift()!.signal);
    };
    child.stdout.on('data', (d) => ((out += d), check()));
    child.stderr.on('data', (d) => ((out += d), check()));
    const timer = setInterval(check, 5);
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      clearInterval(timer);
      watcher?.close();
      resolve({ code, signal, out });
    });
  });
}

const refineRun = (args: string[], runDir: string, triggers?: Trigger[]) => runChild('pipelines/refine.ts', args, runDir, triggers);
const rows = (run: string) =>
  fs.existsSync(path.join(run, 'metrics.jsonl'))
    ? fs.readFileSync(path.join(run, 'metrics.jsonl'), 'utf8').split('\n').filter((l) => l.endsWith('}')).map((l) => JSON.parse(l) as Record<string, number>)
    : [];
const exists = (...parts: string[]) => fs.existsSync(path.join(...parts));

/** Every tensor of the final checkpoint's files (weights, EMA, heads, queues, AdamW moments). */
function finalState(run: string): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const file of fs.readdirSync(path.join(run, 'checkpoint')).filter((f) => f.endsWith('.safetensors'))) {
    for (const [k, t] of readSafetensors(path.join(run, 'checkpoint', file)).tensors) out.set(`${file}:${k}`, Array.from(t.data));
  }
  return out;
}

/** Same tensors bit for bit, and the same metrics per step (each step once, timing aside). */
function assertSameRun(run: string, reference: string, steps: number): void {
  const a = finalState(run);
  const b = finalState(reference);
  assert.equal([...a.keys()].sort(), [...b.keys()].sort());
  for (const [k, v] of b) assert.ok(a.get(k)!.every((x, i) => Object.is(x, v[i])), `${k} differs`);
  const timing = new Set(['time', 'images_per_s', 'data_wait_share']);
  const strip = (r: Record<string, number>) => Object.fromEntries(Object.entries(r).filter(([k]) => !timing.has(k)));
  assert.equal(rows(run).map((r) => r.step), Array.from({ length: steps }, (_, i) => i + 1));
  assert.equal(rows(run).map(strip), rows(reference).map(strip));
}

const straight = path.join(root, 'straight');
const maeStraight = path.join(root, 'mae-straight');
const mae = (args: string[], runDir: string, triggers?: Trigger[]) => runChild('pipelines/pretrain-mae.ts', args, runDir, triggers);
/** The uninterrupted reference runs, started together with the interrupted ones (the machine's cores are shared anyway). */
let references: Promise<[Outcome, Outcome]>;
/** The step of the run's latest checkpoint (-1: none yet). */
const checkpointStep = (run: string) => (exists(run, 'checkpoint', 'manifest.json') ? JSON.parse(fs.readFileSync(path.join(run, 'checkpoint', 'manifest.json'), 'utf8')).step : -1);

test.before(async () => {
  const rng = new Rng(11);
  for (let i = 0; i < 48; i++) {
    const dir = path.join(images, `class${i % 2}`);
    fs.mkdirSync(dir, { recursive: true });
    const pixels = Buffer.from(Array.from({ length: 16 * 16 * 3 }, () => rng.int(256)));
    await sharp(pixels, { raw: { width: 16, height: 16, channels: 3 } }).png().toFile(path.join(dir, `${String(i).padStart(2, '0')}.png`));
  }
  await initBackend(() => undefined);
  const model = new VisionTransformer({ imgSize: 16, patchSize: 4, embedDim: 32, depth: 3, numHeads: 2, mlpRatio: 2, act: 'gelu', posEmbed: 'sincos' }, 1);
  await writeEncoder(checkpoint, model);
  model.dispose();
  references = Promise.all([refineRun([...refineArgs, '--out', straight], straight), mae([...maeArgs, '--out', maeStraight], maeStraight)]);
});

test('refine: Ctrl-C, kill -9 mid-checkpoint-write, a double Ctrl-C, a kill between the renames of a swap: resumed each time, bit-identical to a straight run', async () => {
  const run = path.join(root, 'chain');
  // 1. Ctrl-C: the step finishes, a checkpoint is written, exit 0 with the command that resumes
  let r = await refineRun([...refineArgs, '--out', run, '--checkpoint-minutes', '0'], run, [{ signal: 'SIGINT', when: () => rows(run).length >= 1 }]);
  assert.is(r.code, 0, r.out);
  assert.match(r.out, /\[stop\] SIGINT: finishing the current step, then writing a checkpoint/);
  const stoppedAt = checkpointStep(run);
  assert.ok(stoppedAt >= 1 && stoppedAt < 5 && rows(run).length === stoppedAt, `stopped at ${stoppedAt}`);
  assert.ok(r.out.includes(`[refine] stopped at step ${stoppedAt} of 5 (SIGINT); resume with: npx ts-node pipelines/refine.ts --resume ${run}\n`), r.out);
  assert.not.ok(exists(run, 'run.lock'));

  // 2. kill -9 the moment the resumed run begins writing a checkpoint (checkpoint.tmp appears)
  r = await refineRun(['--resume', run], run, [{ signal: 'SIGKILL', when: () => exists(run, 'checkpoint.tmp') }]);
  assert.is(r.signal, 'SIGKILL', r.out);
  assert.match(r.out, /flags from the checkpoint: .*--checkpoint-minutes 0/);

  // 3. Ctrl-C twice: the first asks for a stop after the step, the second ends the process now
  r = await refineRun(['--resume', run], run, [
    { signal: 'SIGINT', when: (out) => out.includes('stage 3') || rows(run).length > stoppedAt + 1 },
    { signal: 'SIGINT', when: (out) => out.includes('[stop] SIGINT') },
  ]);
  assert.ok(r.code === 130 || r.signal === 'SIGINT', `exit ${r.code} ${r.signal}: ${r.out}`);
  assert.match(r.out, /taking over the lock of process \d+, which is gone/);
  assert.not.match(r.out, /resume with/);

  // 4. leave what a kill between the two renames of a swap leaves: an older checkpoint and a complete checkpoint.tmp
  assert.ok(fs.readdirSync(run).some((f) => f.startsWith('checkpoint.step-')), `no older checkpoint kept: ${fs.readdirSync(run)}`);
  // (the second Ctrl-C may have landed mid-write: its incomplete checkpoint.tmp goes first)
  fs.rmSync(path.join(run, 'checkpoint.tmp'), { recursive: true, force: true });
  fs.renameSync(path.join(run, 'checkpoint'), path.join(run, 'checkpoint.tmp'));
  assert.equal(latestCheckpoint(run), path.join(run, 'checkpoint.tmp'));

  // 5. resume to the end; the progress line ends at 5/5, metrics hold each step once
  r = await refineRun(['--resume', run], run);
  assert.is(r.code, 0, r.out);
  assert.match(r.out, /\[chain\] 5\/5 steps/);
  const [reference] = await references;
  assert.is(reference.code, 0, reference.out);
  assert.match(reference.out, /\[straight\] 5\/5 steps/);
  assertSameRun(run, straight, 5);
  assert.not.ok(exists(run, 'run.lock'));
});

test('MAE: kill -9 mid-checkpoint-write, resume, bit-identical to a straight run', async () => {
  const run = path.join(root, 'mae-killed');
  let r = await mae([...maeArgs, '--out', run, '--checkpoint-minutes', '0'], run, [{ signal: 'SIGKILL', when: () => checkpointStep(run) >= 2 && exists(run, 'checkpoint.tmp') }]);
  assert.is(r.signal, 'SIGKILL', r.out);
  r = await mae(['--resume', run], run);
  assert.is(r.code, 0, r.out);
  assert.match(r.out, /\[mae-killed\] 6\/6 steps/);
  const [, reference] = await references;
  assert.is(reference.code, 0, reference.out);
  assertSameRun(run, maeStraight, 6);
});

test('a second run into a locked directory and a NaN checkpoint are refused, naming them; nothing is lost', async () => {
  const metrics = fs.readFileSync(path.join(straight, 'metrics.jsonl'));
  const release = lockRunDir(straight);
  try {
    // a new run into it is refused before the lock (it holds a run); a resume meets the lock
    await refine(['--resume', straight]);
    assert.unreachable('a locked run directory was written');
  } catch (err) {
    assert.ok((err as Error).message.startsWith(`${straight}: another run is writing this directory (process ${process.pid}`), (err as Error).message);
  } finally {
    release();
  }
  assert.equal(fs.readFileSync(path.join(straight, 'metrics.jsonl')), metrics);

  const { tensors, metadata } = readSafetensors(checkpoint);
  (tensors.get('blocks.1.mlp.fc1.weight')!.data as Float32Array)[3] = NaN;
  const nanFile = path.join(root, 'nan.safetensors');
  writeSafetensors(nanFile, Object.fromEntries([...tensors].map(([k, t]) => [k, { shape: t.shape, data: t.data }])), metadata);
  const out = path.join(root, 'from-nan');
  try {
    await refine(withFlags(refineArgs, ['--checkpoint', nanFile, '--out', out]));
    assert.unreachable('a NaN checkpoint was trained');
  } catch (err) {
    assert.match((err as Error).message, `${nanFile}: tensor "blocks.1.mlp.fc1.weight" holds 1 non-finite value(s) (first: NaN at index 3`);
  }
  assert.not.ok(fs.existsSync(out));
});

test.after(() => fs.rmSync(root, { recursive: true, force: true }));

test.run();

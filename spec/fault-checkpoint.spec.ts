/**
 * Fault tolerance, in process: checkpoints kept N deep and found again in every state a kill
 * can leave (between the two renames, mid-write, damaged), the run-directory lock, NaN/Inf
 * weights refused at load, metrics.jsonl cut back on resume, progress counted from the resumed
 * step, and the resume flag merge with its provenance.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { lastValueFrom, from } from 'rxjs';
import { initBackend } from '../runtime/backend';
import { latestCheckpoint, loadEncoder, readTrainState, writeCheckpoint, writeEncoder } from '../runtime/checkpoint';
import { LOCK_FILE, lockRunDir } from '../runtime/run-lock';
import { explicitFlags, mergeResumeFlags, resumeCommand } from '../runtime/cli';
import { truncateToStep, metricsJsonl } from '../sinks/metrics-jsonl';
import { progress } from '../sinks/progress';
import { readSafetensors, writeSafetensors } from '../models/safetensors';
import { VisionTransformer } from '../models/vit';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'fault-checkpoint-'));
let runs = 0;
const freshRun = () => fs.mkdtempSync(path.join(root, `run${runs++}-`));

/** A checkpoint whose weight w holds the step, so the step read back names the checkpoint. */
function save(run: string, step: number, keep = 2): void {
  writeCheckpoint(run, {
    'encoder.safetensors': { tensors: { w: Float32Array.of(step, 1, 2) } },
    'state.safetensors': { tensors: { w: Float32Array.of(step, 1, 2) }, metadata: { state: JSON.stringify({ step }) } },
  }, { step, keep });
}
const checkpoints = (run: string) => fs.readdirSync(run).filter((f) => f.startsWith('checkpoint')).sort();
const stepOf = (run: string) => readTrainState(run).meta.step;

test('the last N checkpoints are kept; the latest is always checkpoint/', () => {
  const run = freshRun();
  for (let s = 1; s <= 4; s++) save(run, s);
  assert.equal(checkpoints(run), ['checkpoint', 'checkpoint.step-3']);
  assert.equal(stepOf(run), 4);
  for (let s = 5; s <= 7; s++) save(run, s, 3);
  assert.equal(checkpoints(run), ['checkpoint', 'checkpoint.step-5', 'checkpoint.step-6']);
  // the same step written twice (final checkpoint after a periodic one) does not take a slot
  save(run, 7, 3);
  assert.equal(checkpoints(run), ['checkpoint', 'checkpoint.step-5', 'checkpoint.step-6']);
});

test('a kill between the two renames (no checkpoint/, a complete checkpoint.tmp) resumes from the newer one', () => {
  const run = freshRun();
  for (let s = 1; s <= 3; s++) save(run, s);
  fs.renameSync(path.join(run, 'checkpoint'), path.join(run, 'checkpoint.tmp'));
  assert.equal(checkpoints(run), ['checkpoint.step-2', 'checkpoint.tmp']);
  assert.equal(latestCheckpoint(run), path.join(run, 'checkpoint.tmp'));
  assert.equal(stepOf(run), 3);
  // the next write first puts it in place, then swaps as usual
  save(run, 4);
  assert.equal(checkpoints(run), ['checkpoint', 'checkpoint.step-3']);
  assert.equal(stepOf(run), 4);
});

test('a kill mid-write (checkpoint.tmp without its manifest) leaves the last checkpoint in charge', () => {
  const run = freshRun();
  save(run, 1);
  save(run, 2);
  fs.cpSync(path.join(run, 'checkpoint'), path.join(run, 'checkpoint.tmp'), { recursive: true });
  fs.rmSync(path.join(run, 'checkpoint.tmp', 'manifest.json'));
  fs.truncateSync(path.join(run, 'checkpoint.tmp', 'state.safetensors'), 20);
  assert.equal(stepOf(run), 2);
  save(run, 3);
  assert.equal(checkpoints(run), ['checkpoint', 'checkpoint.step-2']);
  assert.equal(stepOf(run), 3);
});

test('a damaged checkpoint is an error naming it and the older complete one; nothing is removed', () => {
  const run = freshRun();
  save(run, 1);
  save(run, 2);
  const state = path.join(run, 'checkpoint', 'state.safetensors');
  const bytes = fs.readFileSync(state);
  fs.truncateSync(state, 30);
  assert.throws(() => readTrainState(run), (e: Error) => e.message.startsWith(`${path.join(run, 'checkpoint')}: corrupt checkpoint: state.safetensors has 30 bytes`) && e.message.includes('checkpoint.step-1 (step 1)'));
  // same size, one bit flipped: the manifest's digest catches it
  bytes[bytes.length - 1] ^= 1;
  fs.writeFileSync(state, bytes);
  assert.throws(() => readTrainState(run), (e: Error) => e.message === `${state}: corrupt checkpoint: its SHA-256 does not match ${path.join(run, 'checkpoint', 'manifest.json')}`);
  assert.equal(checkpoints(run), ['checkpoint', 'checkpoint.step-1']);
});

test('--resume of something that is not a run names it', () => {
  const empty = freshRun();
  assert.throws(() => readTrainState(empty), (e: Error) => e.message === `${empty}: not a run directory (no checkpoint/ inside)`);
  assert.throws(() => readTrainState(path.join(root, 'nope')), (e: Error) => e.message === `${path.join(root, 'nope')}: no such run directory`);
  const file = path.join(root, 'a-file');
  fs.writeFileSync(file, 'x');
  assert.throws(() => readTrainState(file), (e: Error) => e.message === `${file}: not a run directory (a file, not a folder)`);
  fs.mkdirSync(path.join(empty, 'checkpoint.tmp'));
  assert.throws(() => readTrainState(empty), /checkpoint\.tmp\) is incomplete/);
});

test('NaN/Inf weights are refused at load, naming the file and the tensor', async () => {
  await initBackend(() => undefined);
  const model = new VisionTransformer({ imgSize: 16, patchSize: 4, embedDim: 16, depth: 1, numHeads: 2, mlpRatio: 2, act: 'gelu', posEmbed: 'sincos' }, 1);
  const file = path.join(root, 'nan.safetensors');
  await writeEncoder(file, model);
  model.dispose();
  const weights = loadEncoder(file);
  weights.dispose();
  const { tensors, metadata } = readSafetensors(file);
  const t = tensors.get('blocks.0.attn.qkv.weight')!;
  (t.data as Float32Array)[7] = NaN;
  (t.data as Float32Array)[9] = Infinity;
  writeSafetensors(file, Object.fromEntries([...tensors].map(([k, v]) => [k, { shape: v.shape, data: v.data }])), metadata);
  assert.throws(() => loadEncoder(file), (e: Error) => e.message.startsWith(`${file}: tensor "blocks.0.attn.qkv.weight" holds 2 non-finite value(s) (first: NaN at index 7`));
  // the same check guards a resumed state
  const run = freshRun();
  writeCheckpoint(run, { 'state.safetensors': { tensors: { w: Float32Array.of(1, -Infinity) }, metadata: { state: '{"step":1}' } } }, { step: 1 });
  assert.throws(() => readTrainState(run), /state\.safetensors: tensor "w" holds 1 non-finite value\(s\) \(first: -Infinity at index 1/);
});

test('the run lock: a live holder is an error naming the directory; a dead one is taken over', () => {
  const run = freshRun();
  const release = lockRunDir(run);
  assert.throws(() => lockRunDir(run), (e: Error) => e.message.startsWith(`${run}: another run is writing this directory (process ${process.pid}, started `));
  release();
  assert.not.ok(fs.existsSync(path.join(run, LOCK_FILE)));
  // a run killed with -9 leaves its lock behind: a pid that no longer exists
  const dead = spawnSync(process.execPath, ['-e', '0']).pid!;
  fs.writeFileSync(path.join(run, LOCK_FILE), JSON.stringify({ pid: dead, host: os.hostname(), started: 'then', command: 'x' }));
  const logged: string[] = [];
  const again = lockRunDir(run, (line) => logged.push(line));
  assert.equal(logged, [`[run-lock] ${run}: taking over the lock of process ${dead}, which is gone`]);
  assert.equal(JSON.parse(fs.readFileSync(path.join(run, LOCK_FILE), 'utf8')).pid, process.pid);
  again();
  // another host's lock cannot be checked: an error saying what to delete if that run is gone
  fs.writeFileSync(path.join(run, LOCK_FILE), JSON.stringify({ pid: 1, host: 'elsewhere', started: 'then', command: 'x' }));
  assert.throws(() => lockRunDir(run), (e: Error) => e.message.includes('process 1 on host elsewhere') && e.message.includes(`delete ${path.join(run, LOCK_FILE)}`));
});

test('metrics.jsonl is cut back to the resumed step (a half line from a kill goes too), then appended', async () => {
  const file = path.join(freshRun(), 'metrics.jsonl');
  fs.writeFileSync(file, [1, 2, 3, 4].map((step) => JSON.stringify({ step, loss: step }) + '\n').join('') + '{"step":5,"lo');
  truncateToStep(file, 2);
  assert.equal(fs.readFileSync(file, 'utf8'), '{"step":1,"loss":1}\n{"step":2,"loss":2}\n');
  await lastValueFrom(from([{ step: 3, loss: 3 }, { step: 4, loss: 4 }]).pipe(metricsJsonl(file, { keepThroughStep: 2, fsync: false })));
  assert.equal(fs.readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l).step), [1, 2, 3, 4]);
  // a fresh run (step 0) starts the file anew
  await lastValueFrom(from([{ step: 1, loss: 9 }]).pipe(metricsJsonl(file, { keepThroughStep: 0, fsync: false })));
  assert.equal(fs.readFileSync(file, 'utf8').trim().split('\n').length, 1);
});

test('progress counts on from the resumed step and ends at total/total', async () => {
  const lines: string[] = [];
  await lastValueFrom(from([{ loss: 1 }, { loss: 2 }]).pipe(progress({ label: 'r', total: 5, start: 3, unit: 'steps', isTTY: false, everyMs: 0, write: (t) => lines.push(t) })));
  assert.equal(lines.map((l) => l.split(' (')[0]), ['[r] 4/5 steps', '[r] 5/5 steps']);
});

test('resume flags: shapes and data order from the checkpoint, the rest overridable, with provenance', () => {
  const spec = { batch: { description: '', default: '32' }, lr: { description: '', default: '1e-3' }, epochs: { description: '', default: '1' }, 'max-steps': { description: '', default: '0' }, resume: { description: '' } };
  const saved = { batch: '16', lr: '1e-3', epochs: '2', 'max-steps': '3', resume: undefined };
  const argv = ['--resume', 'runs/x', '--lr', '1e-4'];
  const given = { batch: '32', lr: '1e-4', epochs: '1', 'max-steps': '0', resume: 'runs/x' };
  const explicit = explicitFlags('usage', spec, argv);
  assert.equal([...explicit].sort(), ['lr', 'resume']);
  const { flags, lines } = mergeResumeFlags(saved, given, explicit, ['batch'], 'runs/x');
  // batch and epochs from the checkpoint, lr from the command line, max-steps of this invocation only
  assert.equal(flags, { batch: '16', lr: '1e-4', epochs: '2', 'max-steps': '0', resume: 'runs/x' });
  assert.equal(lines, ['flags from the command line: --lr 1e-4 (was 1e-3)', 'flags from the checkpoint: --batch 16 --epochs 2']);
  assert.throws(
    () => mergeResumeFlags(saved, { ...given, batch: '64' }, new Set(['batch']), ['batch'], 'runs/x'),
    (e: Error) => e.message === '--batch 64: the run in runs/x was started with --batch 16, which fixes shapes or data order; a resumed run cannot change it (start a new run instead)',
  );
  // repeating a fixed flag with its saved value is fine
  assert.equal(mergeResumeFlags(saved, { ...given, batch: '16' }, new Set(['batch']), ['batch'], 'runs/x').flags.batch, '16');
  assert.equal(resumeCommand('pipelines/refine.ts', 'runs/my run'), "npx ts-node pipelines/refine.ts --resume 'runs/my run'");
});

test.after(() => fs.rmSync(root, { recursive: true, force: true }));

test.run();

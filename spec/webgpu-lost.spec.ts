/**
 * A WebGPU device lost mid-run stops the run with a message naming the backend and the reason,
 * writes no checkpoint from the lost device, leaves the last complete one as it was, and prints
 * the resume command; the run then resumes from that checkpoint on wasm and finishes. The loss
 * is real: WEBGPU_DESTROY_AFTER_STEP=2 has the driver destroy the actual device after step 2
 * (runtime/webgpu.ts), after which Dawn's ops are silent no-ops and reads fail. MAE pretraining
 * on the bundled images (3 steps, a checkpoint every step) as a child process on the software
 * Vulkan of `npm run setup:vulkan`.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { deviceFailure } from '../runtime/backend';
import { WebGpuDeviceError } from '../runtime/webgpu';
import { deviceMissing, NO_DEVICE, ROOT } from './webgpu-device';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'webgpu-lost-'));
const run = path.join(root, 'run');
// the bundled validation shard, 3 steps of batch 8
const maeArgs = ['--train', 'data/cifar10-mini/val-000000.tar.gz', '--batch', '8', '--max-steps', '3', '--decoder-dim', '16', '--decoder-depth', '1', '--seed', '4'];

function mae(args: string[], env: Record<string, string | undefined>): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['-r', 'ts-node/register', 'pipelines/pretrain-mae.ts', ...args],
      { cwd: ROOT, env: { ...process.env, WASM_THREADS: '1', TS_NODE_TRANSPILE_ONLY: '1', ...env } },
      (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr }),
    );
  });
}

const manifest = (dir: string) => JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as { step: number };
const steps = () => fs.readFileSync(path.join(run, 'metrics.jsonl'), 'utf8').split('\n').filter((l) => l.endsWith('}')).map((l) => JSON.parse(l).step as number);
/** Every file of the latest checkpoint, as bytes. */
const checkpointBytes = () => {
  const dir = path.join(run, 'checkpoint');
  return Object.fromEntries(fs.readdirSync(dir).sort().map((f) => [f, fs.readFileSync(path.join(dir, f)).toString('base64')]));
};

test.after(() => fs.rmSync(root, { recursive: true, force: true }));

test('a device destroyed after step 2 stops the run naming backend and reason; step 2 checkpoint intact; resumes on wasm to the end', async () => {
  const lost = await mae([...maeArgs, '--out', run, '--checkpoint-minutes', '0'], { TFJS_BACKEND: 'webgpu', WEBGPU_DESTROY_AFTER_STEP: '2' });
  if (NO_DEVICE.test(lost.out)) {
    deviceMissing(lost.out.split('\n').find((l) => NO_DEVICE.test(l))!);
    return;
  }
  assert.is(lost.code, 1, lost.out);
  assert.match(lost.out, /\[backend\] WEBGPU_DESTROY_AFTER_STEP=2: destroying the WebGPU device/);
  const resume = `npx ts-node pipelines/pretrain-mae.ts --resume ${run}`;
  const message = lost.out.split('\n').find((l) => l.startsWith('error: '));
  assert.ok(message, lost.out);
  assert.match(message!, /^error: the webgpu \(software adapter: .*\) backend failed after step 2: WebGPU (device lost \(destroyed: |read failed )/);
  assert.ok(message!.includes(`Stopped without writing a checkpoint from it; last complete checkpoint: ${path.join(run, 'checkpoint')} (step 2).`), message);
  assert.ok(message!.includes(`Resume with: ${resume} (TFJS_BACKEND=webgpu is set, so that takes WebGPU again; TFJS_BACKEND=wasm ${resume} continues on the CPU).`), message);
  // nothing written after step 2: the checkpoint is step 2's, no half-written one beside it, metrics up to step 2
  assert.is(manifest(path.join(run, 'checkpoint')).step, 2);
  assert.not.ok(fs.existsSync(path.join(run, 'checkpoint.tmp')));
  assert.equal(steps(), [1, 2]);
  const kept = checkpointBytes();

  const resumed = await mae(['--resume', run, '--max-steps', '1'], { TFJS_BACKEND: 'wasm' });
  assert.is(resumed.code, 0, resumed.out);
  assert.match(resumed.out, /\[backend\] wasm/);
  assert.equal(steps(), [1, 2, 3]);
  // the step-2 checkpoint it resumed from is the one the lost run left, byte for byte
  const dir = fs.readdirSync(run).find((f) => f.startsWith('checkpoint.step-2'));
  assert.ok(dir, `${fs.readdirSync(run)}`);
  const older = Object.fromEntries(fs.readdirSync(path.join(run, dir!)).sort().map((f) => [f, fs.readFileSync(path.join(run, dir!, f)).toString('base64')]));
  assert.equal(older, kept);
  const losses = fs.readFileSync(path.join(run, 'metrics.jsonl'), 'utf8').split('\n').filter((l) => l.endsWith('}')).map((l) => JSON.parse(l).loss as number);
  assert.ok(losses.every(Number.isFinite), `${losses}`);
});

test('without TFJS_BACKEND the message says --resume continues on the next backend the selection finds', () => {
  const forced = process.env.TFJS_BACKEND;
  delete process.env.TFJS_BACKEND;
  try {
    const err = deviceFailure(new WebGpuDeviceError('WebGPU device lost (unknown: gone); last op MatMulPackedProgram'), { step: 7, checkpoint: 'runs/x/checkpoint (step 5)', resume: 'npx ts-node pipelines/refine.ts --resume runs/x' });
    assert.is(
      err!.message,
      'the webgpu backend failed after step 7: WebGPU device lost (unknown: gone); last op MatMulPackedProgram. Stopped without writing a checkpoint from it; last complete checkpoint: runs/x/checkpoint (step 5). ' +
        'Resume with: npx ts-node pipelines/refine.ts --resume runs/x; it picks its backend anew and continues on the next one the selection finds (WebGPU if its device can be had again, else tfjs-node or wasm).',
    );
    assert.is(deviceFailure(new Error('a data error'), { step: 7, checkpoint: 'c' }), undefined);
  } finally {
    if (forced !== undefined) process.env.TFJS_BACKEND = forced;
  }
});

test.run();

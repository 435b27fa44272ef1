/**
 * Data-parallel MAE and MimCo equal one process (2 ranks x batch 4 against batch 8: losses,
 * gradient norms and weights to float32 rounding); Ctrl-C to mpirun and a SIGINT to one rank
 * stop both ranks at one step with a complete checkpoint that resumes. Data-parallel refine
 * equals one process, with the rows exchanged in the tape and before it (DP_EXCHANGE): `mpirun -np 2 pipelines/refine.ts --batch 8` (each
 * rank 4 samples of every global batch, one wasm thread each) against one process with
 * `--batch 8`, 2 steps of stage 2 and 2 of stage 3 on the bundled data and checkpoint. The
 * 2-rank run is killed (SIGKILL to rank 1) after its first step and resumed with
 * `mpirun -np 2 ... --resume`, so the comparison also covers a resumed data-parallel run.
 *
 * What "equal" can mean here: the first step's loss and gradient norm are computed before any
 * update, so they must agree to float32 rounding. After an update AdamW divides each gradient
 * by its own running RMS, which turns rounding noise in near-zero gradients (most of all the
 * Linear biases in front of BatchNorm, whose true gradient is 0) into lr-sized steps; so later
 * steps are compared at the tolerance that the same single process shows against itself with
 * different kernels (FUSED_KERNELS=0 vs fused, measured: losses within 1e-4, weights within 2.5e-3
 * after 6 steps at lr 1e-3; AdamW's bound is 2 lr per step). A wrong reduction (one rank's share, local BatchNorm statistics,
 * a mean instead of a sum of the shares) moves the first step's loss or gradient norm far
 * outside these bounds.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readSafetensors } from '../models/safetensors';

const ROOT = path.join(__dirname, '..');
const hasMpirun = spawnSync('mpirun', ['--version']).status === 0;
const ARGS = ['--batch', '8', '--local-views', '1', '--queue-size', '64', '--skip-knn', '--blocks', '4,5', '--head-preset', 'tiny', '--stage2-epochs', '0.0016', '--stage3-epochs', '0.0016', '--checkpoint-minutes', '0'];
const ENV = { ...process.env, WASM_THREADS: '1' };

function run(command: string, args: string[], out: string, env: NodeJS.ProcessEnv = ENV): void {
  const r = spawnSync(command, [...args, '--out', out], { cwd: ROOT, encoding: 'utf8', env, timeout: 300_000, killSignal: 'SIGKILL' });
  assert.is(r.status, 0, `${command} ${args.join(' ')}: ${r.stdout}${r.stderr}`);
}

const rel = (x: number, y: number) => Math.abs(x - y) / Math.max(1e-12, Math.abs(y));

/** One record per step (a resumed run may have rewritten the steps after its checkpoint). */
function metrics(dir: string): Record<string, number>[] {
  const file = path.join(dir, 'metrics.jsonl');
  if (!fs.existsSync(file)) return [];
  const bySteps = new Map<number, Record<string, number>>();
  for (const line of fs.readFileSync(file, 'utf8').trim().split('\n')) {
    if (!line) continue;
    const m = JSON.parse(line);
    bySteps.set(m.step, m);
  }
  return [...bySteps.values()].sort((x, y) => x.step - y.step);
}

/** The largest difference between the final checkpoints' state tensors of two runs (same keys asserted). */
function maxStateDifference(a: string, b: string): number {
  const wa = readSafetensors(path.join(a, 'checkpoint', 'state.safetensors')).tensors;
  const wb = readSafetensors(path.join(b, 'checkpoint', 'state.safetensors')).tensors;
  assert.equal([...wb.keys()].sort(), [...wa.keys()].sort());
  let maxDiff = 0;
  for (const [k, t] of wa) {
    const u = wb.get(k)!;
    for (let i = 0; i < t.data.length; i++) maxDiff = Math.max(maxDiff, Math.abs(t.data[i] - u.data[i]));
  }
  return maxDiff;
}

const MPIRUN = ['--allow-run-as-root', '--oversubscribe', '-np', '2'];

/** `command` (node and a pipeline with its flags) as one process and as `mpirun -np 2`, each into its folder of `tmp`; both runs' step records. */
function oneProcessAndTwoRanks(command: string[], tmp: string, steps: number) {
  const single = path.join(tmp, 'single');
  const ranks = path.join(tmp, 'ranks');
  run(command[0], command.slice(1), single);
  run('mpirun', [...MPIRUN, ...command], ranks);
  const [a, b] = [metrics(single), metrics(ranks)];
  assert.is(a.length, steps);
  assert.is(b.length, steps);
  return { single, ranks, a, b };
}

/**
 * Starts `mpirun [mpirunArgs] -np 2 args`, and once `afterSteps` steps are recorded in `out`
 * sends `signal` to rank 1 or to mpirun itself; resolves with mpirun's exit and output.
 */
function runAndSignal(args: string[], out: string, afterSteps: number, to: { signal: NodeJS.Signals; process: 'rank 1' | 'mpirun'; mpirunArgs?: string[] }): Promise<{ status: number | null; output: string; killed: boolean }> {
  return new Promise((resolve) => {
    const child = spawn('mpirun', [...(to.mpirunArgs ?? []), ...MPIRUN, ...args, '--out', out], { cwd: ROOT, env: ENV });
    let output = '';
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    let killed = false;
    const poll = setInterval(() => {
      if (killed || metrics(out).length < afterSteps) return;
      if (to.process === 'mpirun') {
        child.kill(to.signal);
        killed = true;
        return;
      }
      // the rank processes are mpirun's children; rank 1 is the one whose environment says so
      const pids = spawnSync('pgrep', ['-P', String(child.pid)], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean);
      const rank1 = pids.find((pid) => fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').includes('OMPI_COMM_WORLD_RANK=1'));
      if (rank1) {
        process.kill(Number(rank1), to.signal);
        killed = true;
      }
    }, 50);
    const timer = setTimeout(() => child.kill('SIGKILL'), 300_000);
    child.on('exit', (status) => {
      clearInterval(poll);
      clearTimeout(timer);
      resolve({ status, output, killed });
    });
  });
}

const mpiTest = hasMpirun || process.env.REQUIRE_MPI === '1' ? test : test.skip;

mpiTest('mpirun -np 2 refine, killed and resumed, = one process with the same global batch (losses, gradient norms, weights)', async () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mpi-refine-'));
  try {
    const single = path.join(tmp, 'single');
    const ranks = path.join(tmp, 'ranks');
    const tsNode = [process.execPath, '-r', 'ts-node/register', 'pipelines/refine.ts'];
    run(tsNode[0], [...tsNode.slice(1), ...ARGS], single);
    const first = await runAndSignal([...tsNode, ...ARGS], ranks, 1, { signal: 'SIGKILL', process: 'rank 1' });
    assert.ok(first.killed, `the 2-rank run ended before rank 1 could be killed: ${first.output}`);
    assert.is.not(first.status, 0);
    assert.match(first.output, /Process name: \[\[\d+,\d+\],1\]|rank 1 with PID/, 'the launcher names the killed rank');
    const stoppedAt = metrics(ranks).length;
    assert.ok(stoppedAt < 4, `killed after ${stoppedAt} steps`);
    run('mpirun', [...MPIRUN, ...tsNode, ...ARGS, '--resume', ranks], ranks);
    const a = metrics(single);
    const b = metrics(ranks);
    assert.is(a.length, 4);
    assert.is(b.length, 4, 'every step recorded once the resumed run ends');
    assert.ok(rel(b[0].loss, a[0].loss) < 1e-6, `step 1 loss ${b[0].loss} vs ${a[0].loss}`);
    assert.ok(rel(b[0].grad_norm, a[0].grad_norm) < 1e-5, `step 1 gradient norm ${b[0].grad_norm} vs ${a[0].grad_norm}`);
    for (let i = 0; i < a.length; i++) {
      assert.ok(Math.abs(b[i].loss - a[i].loss) < 5e-4, `step ${i + 1} loss ${b[i].loss} vs ${a[i].loss}`);
      assert.ok(rel(b[i].grad_norm, a[i].grad_norm) < 1e-3, `step ${i + 1} gradient norm ${b[i].grad_norm} vs ${a[i].grad_norm}`);
      assert.is(b[i].images_per_s > 0, true);
    }
    const maxDiff = maxStateDifference(single, ranks);
    console.log(`[mpi-refine] 2 ranks killed after step ${stoppedAt} and resumed; step losses 1 process ${a.map((m) => m.loss.toFixed(6)).join(' ')}, 2 ranks ${b.map((m) => m.loss.toFixed(6)).join(' ')}; max weight difference ${maxDiff.toExponential(2)}`);
    assert.ok(maxDiff < 8e-3, `final state differs by ${maxDiff} (AdamW bound 2 lr x 4 steps = 8e-3)`);

    // the rows exchanged before the tape (WebGPU's way: heads on the global batch on every rank,
    // their gradients averaged, the encoder's summed): the same run
    const before = path.join(tmp, 'before-tape');
    run('mpirun', [...MPIRUN, ...tsNode, ...ARGS], before, { ...ENV, DP_EXCHANGE: 'before-tape' });
    const c = metrics(before);
    assert.is(c.length, 4);
    assert.ok(rel(c[0].loss, a[0].loss) < 1e-6, `before-tape: step 1 loss ${c[0].loss} vs ${a[0].loss}`);
    assert.ok(rel(c[0].grad_norm, a[0].grad_norm) < 1e-5, `before-tape: step 1 gradient norm ${c[0].grad_norm} vs ${a[0].grad_norm}`);
    for (let i = 0; i < a.length; i++) assert.ok(Math.abs(c[i].loss - a[i].loss) < 5e-4, `before-tape: step ${i + 1} loss ${c[i].loss} vs ${a[i].loss}`);
    const maxDiffBefore = maxStateDifference(single, before);
    console.log(`[mpi-refine] rows exchanged before the tape: step losses ${c.map((m) => m.loss.toFixed(6)).join(' ')}; max weight difference ${maxDiffBefore.toExponential(2)}`);
    assert.ok(maxDiffBefore < 8e-3, `before-tape: final state differs by ${maxDiffBefore}`);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

mpiTest('mpirun -np 2 MAE = one process with the same global batch (each rank masks its rows of the global plan; losses and gradients averaged)', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mpi-mae-'));
  try {
    const mae = [process.execPath, '-r', 'ts-node/register', 'pipelines/pretrain-mae.ts', '--batch', '8', '--epochs', '1', '--warmup-share', '0.002', '--decoder-dim', '16', '--decoder-depth', '1', '--max-steps', '3', '--checkpoint-minutes', '0'];
    const { single, ranks, a, b } = oneProcessAndTwoRanks(mae, tmp, 3);
    for (let i = 0; i < 3; i++) {
      assert.ok(rel(b[i].loss, a[i].loss) < 1e-5, `step ${i + 1} loss ${b[i].loss} vs ${a[i].loss}`);
      assert.ok(rel(b[i].grad_norm, a[i].grad_norm) < 1e-5, `step ${i + 1} gradient norm ${b[i].grad_norm} vs ${a[i].grad_norm}`);
    }
    const maxDiff = maxStateDifference(single, ranks);
    console.log(`[mpi-mae] step losses 1 process ${a.map((m) => m.loss.toFixed(7)).join(' ')}, 2 ranks ${b.map((m) => m.loss.toFixed(7)).join(' ')}; max weight difference ${maxDiff.toExponential(2)}`);
    // AdamW's bound: 2 lr per step (peak lr 1.5e-4 * 8 / 256)
    assert.ok(maxDiff < 2 * 4.7e-6 * 3, `final state differs by ${maxDiff}`);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

mpiTest('mpirun -np 2 MimCo = one process with the same global batch (teacher CLS all-gathered, each rank masks its rows of the global plan; losses and gradients averaged)', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mpi-mimco-'));
  try {
    const mimco = [process.execPath, '-r', 'ts-node/register', 'pipelines/mimco.ts', '--checkpoint', 'none', '--preset', 'vit-micro-p4', '--head-warmup-epochs', '0', '--batch', '8', '--epochs', '0.0024', '--warmup-share', '0', '--lr', '0.01', '--proj-hidden', '64', '--skip-knn', '--checkpoint-minutes', '0'];
    const { single, ranks, a, b } = oneProcessAndTwoRanks(mimco, tmp, 3);
    for (let i = 0; i < 3; i++) {
      for (const k of ['loss', 'loss_patch', 'loss_image', 'grad_norm']) assert.ok(rel(b[i][k], a[i][k]) < 1e-5, `step ${i + 1} ${k} ${b[i][k]} vs ${a[i][k]}`);
    }
    const maxDiff = maxStateDifference(single, ranks);
    console.log(`[mpi-mimco] step losses 1 process ${a.map((m) => m.loss.toFixed(7)).join(' ')}, 2 ranks ${b.map((m) => m.loss.toFixed(7)).join(' ')}; max relative loss difference ${Math.max(...a.map((m, i) => rel(b[i].loss, m.loss))).toExponential(2)}; max weight difference ${maxDiff.toExponential(2)}`);
    // AdamW's bound: 2 lr per step (lr 0.01 * 8 / 256)
    assert.ok(maxDiff < 2 * 3.125e-4 * 3, `final state differs by ${maxDiff}`);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

mpiTest('Ctrl-C to mpirun (Open MPI 4: SIGTERM to the ranks after odls_base_sigkill_timeout, SIGKILL after as long again): both ranks stop at one step with a complete checkpoint that resumes; a SIGINT to one rank stops all with exit 0', async () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mpi-sigint-'));
  try {
    const mae = [process.execPath, '-r', 'ts-node/register', 'pipelines/pretrain-mae.ts', '--batch', '8', '--epochs', '1', '--decoder-dim', '16', '--decoder-depth', '1', '--max-steps', '400', '--checkpoint-minutes', '30', '--log-every', '1'];
    const out = path.join(tmp, 'run');
    const stoppedAt = (output: string) => [...output.matchAll(/\[mae\] stopped at step (\d+) of \d+ \(([^)]*)\)/g)].map((m) => [Number(m[1]), m[2]] as const);
    // mpirun answers a signal with exit 1 whatever the ranks do; the ranks get 10 s after SIGTERM
    const interrupted = await runAndSignal(mae, out, 2, { signal: 'SIGINT', process: 'mpirun', mpirunArgs: ['--mca', 'odls_base_sigkill_timeout', '10'] });
    assert.is(interrupted.status, 1, interrupted.output);
    const first = stoppedAt(interrupted.output);
    assert.is(first.length, 2, `both ranks stop with a message: ${interrupted.output}`);
    assert.is(first[0][0], first[1][0], 'at the same step');
    const step = first[0][0];
    assert.is(JSON.parse(fs.readFileSync(path.join(out, 'checkpoint', 'manifest.json'), 'utf8')).step, step, 'the stop checkpoint is the latest, complete (manifest written last)');
    assert.not.ok(fs.existsSync(path.join(out, 'checkpoint.tmp')), 'no half-written checkpoint');
    assert.is(metrics(out).length, step);
    // it resumes; a SIGINT to one rank then stops every rank at the same step, mpirun exits 0
    const resumed = await runAndSignal([...mae, '--resume', out], out, step + 1, { signal: 'SIGINT', process: 'rank 1' });
    assert.is(resumed.status, 0, resumed.output);
    const second = stoppedAt(resumed.output);
    assert.equal(second.map(([, why]) => why).sort(), ['SIGINT', 'a stop on another rank']);
    assert.is(second[0][0], second[1][0]);
    assert.ok(second[0][0] > step, `resumed from ${step}, stopped at ${second[0][0]}`);
    assert.is(JSON.parse(fs.readFileSync(path.join(out, 'checkpoint', 'manifest.json'), 'utf8')).step, second[0][0]);
    assert.equal(metrics(out).map((m) => m.step), Array.from({ length: second[0][0] }, (_, i) => i + 1));
    console.log(`[mpi-sigint] Ctrl-C to mpirun: ranks stopped at step ${step} (mpirun exit 1); resumed, SIGINT to rank 1: both stopped at step ${second[0][0]} (mpirun exit 0)`);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

test.run();

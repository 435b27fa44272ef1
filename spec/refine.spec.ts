/**
 * The refine pipeline end to end on a tiny ViT and real bundled images: both stages run,
 * checkpoints and metrics are written, a seeded run is reproducible, and a run stopped
 * and resumed ends bit-identical to one that ran straight through, kNN can be tracked during
 * stage 3, and bad flags are refused before anything is written.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { initBackend } from '../runtime/backend';
import { writeEncoder } from '../runtime/checkpoint';
import { readSafetensors } from '../models/safetensors';
import { VisionTransformer } from '../models/vit';
import { refine } from '../pipelines/refine';
import { withFlags } from './argv';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'refine-spec-'));
const checkpoint = path.join(dir, 'mim.safetensors');
// 2000 bundled test images, batch 16: 125 steps per epoch; 2 steps of stage 2, 3 of stage 3
const common = [
  '--checkpoint', checkpoint, '--train', 'data/cifar10-mini/test-*.tar.gz', '--batch', '16',
  '--stage2-epochs', '0.016', '--stage3-epochs', '0.024', '--queue-size', '64', '--head-preset', 'tiny',
  '--local-views', '1', '--local-size', '8', '--skip-knn', '--seed', '5', '--ema', '0.5',
];

function weights(run: string): Map<string, Float32Array> {
  const { tensors } = readSafetensors(path.join(run, 'checkpoint', 'encoder-ema.safetensors'));
  return new Map([...tensors].map(([k, t]) => [k, t.data as Float32Array]));
}

test.before(async () => {
  await initBackend(() => undefined);
  const model = new VisionTransformer({ imgSize: 16, patchSize: 4, embedDim: 32, depth: 3, numHeads: 2, mlpRatio: 2, act: 'gelu', posEmbed: 'sincos' }, 1);
  await writeEncoder(checkpoint, model);
  model.dispose();
});

test('both stages run and write checkpoints and per-step metrics', async () => {
  const run = await refine([...common, '--out', path.join(dir, 'a')]);
  for (const f of ['encoder.safetensors', 'encoder-ema.safetensors', 'state.safetensors']) assert.ok(fs.existsSync(path.join(run, 'checkpoint', f)), f);
  const rows = fs.readFileSync(path.join(run, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(rows.map((r) => r.stage), [2, 2, 3, 3, 3]);
  for (const r of rows) {
    assert.ok(Number.isFinite(r.loss) && r.loss > 0, `loss ${r.loss}`);
    assert.ok(r.block2_nn_sim <= 1 && r.block2_nn_sim >= -1);
  }
  // stage 2 leaves the encoder as it was; stage 3 moves it
  const start = readSafetensors(checkpoint).tensors.get('blocks.2.mlp.fc2.weight')!.data;
  const end = weights(run).get('blocks.2.mlp.fc2.weight')!;
  assert.ok(end.some((v, i) => v !== start[i]), 'stage 3 did not change the encoder');
});

test('the same seed gives the same refined weights', async () => {
  const a = weights(path.join(dir, 'a'));
  const b = weights(await refine([...common, '--out', path.join(dir, 'b')]));
  for (const [k, v] of a) assert.equal(Array.from(b.get(k)!), Array.from(v), k);
});

test('stop after 3 steps + resume == straight through', async () => {
  await refine([...common, '--out', path.join(dir, 'c'), '--max-steps', '3']);
  const resumed = weights(await refine(['--resume', path.join(dir, 'c')]));
  const straight = weights(path.join(dir, 'a'));
  for (const [k, v] of straight) assert.equal(Array.from(resumed.get(k)!), Array.from(v), k);
});

test('--resume: shape and data-order flags come from the checkpoint, lr and schedule may be overridden; the merge is printed', async () => {
  const run = path.join(dir, 'f');
  await refine([...common, '--out', run, '--max-steps', '3']);
  try {
    await refine(['--resume', run, '--batch', '8']);
    assert.unreachable('--batch should have been refused');
  } catch (err) {
    assert.match((err as Error).message, /--batch 8: .* was started with --batch 16/);
  }
  const log = console.log;
  const lines: string[] = [];
  console.log = (...args: unknown[]) => lines.push(args.join(' '));
  try {
    await refine(['--resume', run, '--stage3-lr', '0', '--max-steps', '1']);
  } finally {
    console.log = log;
  }
  const printed = lines.join('\n');
  assert.match(printed, /flags from the command line: .*--stage3-lr 0 \(was 1e-3\)/);
  assert.match(printed, /flags from the checkpoint: .*--batch 16/);
  const rows = fs.readFileSync(path.join(run, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(rows.map((r) => r.step), [1, 2, 3, 4]);
  // peak 0: the cosine runs between 0 and --min-lr (1e-6), where the saved --stage3-lr 1e-3 ran far above
  const straight = JSON.parse(fs.readFileSync(path.join(dir, 'a', 'metrics.jsonl'), 'utf8').trim().split('\n')[3]);
  assert.ok(rows[3].lr <= 1e-6 && straight.lr > 1e-4, `lr ${rows[3].lr}, straight through ${straight.lr}`);
});

test('--knn-every tracks per-block kNN during stage 3, from the checkpoint (step 0) to the end; --eval-val-limit sizes validation', async () => {
  const args = common.filter((a) => a !== '--skip-knn');
  const run = await refine([...args, '--out', path.join(dir, 'k'), '--knn-every', '0.008', '--test', 'data/cifar10-mini/test-*.tar.gz', '--eval-train-limit', '64', '--eval-test-limit', '32', '--eval-val-limit', '48']);
  const { points } = JSON.parse(fs.readFileSync(path.join(run, 'knn-during.json'), 'utf8'));
  assert.equal(points.map((p: { step: number }) => p.step), [0, 3, 4, 5]); // stage 3 is steps 3..5
  const summary = JSON.parse(fs.readFileSync(path.join(run, 'summary.json'), 'utf8'));
  assert.equal(points[0].report.top1, summary.knn[0].top1);
  assert.equal(points[3].report.top1, summary.knn[1].top1);
  // the val-* shards beside --train choose the block (--val), before and after
  assert.ok(summary.knn.every((r: { val?: { top1: number[] }; chosenBlock?: number }) => r.val?.top1.length === 3 && r.chosenBlock !== undefined), 'no validation split used');
  // --eval-val-limit sizes validation apart from test
  assert.equal(summary.knn.map((r: { val: { count: number }; testCount: number }) => [r.val.count, r.testCount]), [[48, 32], [48, 32]]);
  assert.ok(fs.existsSync(path.join(run, 'knn-during.png')) && fs.existsSync(path.join(run, 'knn-during.svg')));
});

/** The run's metrics rows and its log lines. */
async function runLogged(args: string[]): Promise<{ rows: Record<string, number>[]; printed: string }> {
  const log = console.log;
  const lines: string[] = [];
  console.log = (...a: unknown[]) => lines.push(a.join(' '));
  try {
    const run = await refine(args);
    const rows = fs.readFileSync(path.join(run, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    return { rows, printed: lines.join('\n') };
  } finally {
    console.log = log;
  }
}

test('--lr-scaling linear: a one-step run logs and uses lr x batch / 256; none uses the lr as given', async () => {
  // one stage-2 step with no warm-up: the step's lr is the stage's peak
  const oneStep = withFlags(common, ['--stages', '2', '--stage2-epochs', '0.008', '--stage2-lr', '2e-4']);
  const linear = await runLogged([...oneStep, '--out', path.join(dir, 'lr-linear'), '--lr-scaling', 'linear']);
  assert.equal(linear.rows.map((r) => r.step), [1]);
  assert.ok(Math.abs(linear.rows[0].lr - (2e-4 * 16) / 256) < 1e-12, `lr ${linear.rows[0].lr}`);
  assert.match(linear.printed, /--stage2-lr 0.0002 x batch 16 \/ 256 \(--lr-scaling linear\): 1 steps, lr 0.0000125/);
  const none = await runLogged([...oneStep, '--out', path.join(dir, 'lr-none')]);
  assert.is(none.rows[0].lr, 2e-4);
});

test('--ema-share: the EMA momentum gives a horizon of that share of stage 3', async () => {
  // stage 3 is 3 steps: a share of 0.5 is a horizon of 1.5 steps, m = 1 - 1/1.5
  const args = common.filter((a, i) => a !== '--ema' && common[i - 1] !== '--ema');
  const { printed } = await runLogged([...args, '--out', path.join(dir, 'ema-share'), '--ema-share', '0.5', '--max-steps', '3']);
  assert.match(printed, /stage 3: .*EMA 0.333333 \(horizon 1.5 steps\)/);
});

test('a block the checkpoint does not have is refused before training', async () => {
  try {
    await refine([...common, '--out', path.join(dir, 'd'), '--blocks', '1,7']);
    assert.unreachable('should have thrown');
  } catch (err) {
    assert.match((err as Error).message, /--blocks: block 7 does not exist/);
    assert.not.ok(fs.existsSync(path.join(dir, 'd', 'checkpoint')));
  }
});

test('malformed augmentation and method flags are refused before anything is written', async () => {
  const bad: [string, string][] = [
    ...['0.3,0.1', '0.1', '0,0.2'].flatMap((v): [string, string][] => [['--local-crop-scale', v], ['--crop-scale', v]]),
    ['--jitter-p', '1.5'],
    ['--grayscale-p', '1.2'],
    ['--jitter-strength', 'strong'],
    ['--lr-scaling', 'sqrt'],
    ['--last-head-norm', 'yes'],
    ['--bn-views', 'both'],
    ['--local-pairs', 'globals'],
    ['--ema-share', '0'],
    ['--ema-share', '1.5'],
    ['--ema-share', '0.4'], // with --ema (in common): one or the other
  ];
  for (const [flag, value] of bad) {
    try {
      await refine(withFlags(common, ['--out', path.join(dir, 'e'), flag, value]));
      assert.unreachable(`${flag} ${value} should have thrown`);
    } catch (err) {
      assert.match((err as Error).message, new RegExp(`${flag}: `));
      assert.not.ok(fs.existsSync(path.join(dir, 'e')));
    }
  }
});

test.after(() => fs.rmSync(dir, { recursive: true, force: true }));

test.run();

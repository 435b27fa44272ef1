/**
 * The step operators and the driver: real backpressure (one batch in the step, a bounded
 * number prepared ahead), tensor ownership (no tensor left after N steps, nor after an error
 * mid-step), no synchronous device read in the step (metrics read once per log interval), and
 * the NaN/Inf guard (stop naming step, term and last good checkpoint; or skip the update).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { finalize, lastValueFrom, tap, toArray } from 'rxjs';
import { initBackend } from '../runtime/backend';
import { fromPull, Valve } from '../lib/flow';
import { AdamW } from '../models/adamw';
import { DynamicLossScale } from '../models/loss-scale';
import { readSafetensors } from '../models/safetensors';
import { Objective } from '../objectives/objective';
import { trainStep } from '../operators/train-step';
import { enqueue } from '../operators/enqueue';
import { readMetrics } from '../operators/read-metrics';
import { checkpointEvery } from '../operators/checkpoint-every';
import { maeViews } from '../operators/multi-view';
import { inProcessBatchStream } from '../datapath/batches';
import { train } from '../train/driver';
import { readRunStatus, writeRunStatus } from '../runtime/run-status';
import { BatchItem, OpenSteps } from '../objectives/step';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'train-step-spec-'));

/** Batches of 4 samples with 3 features, numbered by `index`. */
function* batches(n: number, counter = { pulled: 0 }): Generator<BatchItem> {
  for (let i = 0; i < n; i++) {
    counter.pulled++;
    const x = Float32Array.from({ length: 12 }, (_, j) => Math.sin(i * 12 + j));
    yield { batch: { indices: Int32Array.from([0, 1, 2, 3], (k) => 4 * i + k), labels: new Int32Array(4), views: [x], viewSizes: [1] }, epoch: 0, waitMs: 0 };
  }
}

/** Linear regression onto 1: loss = mean((x w - 1)^2); `poison(step)` makes that step's loss NaN. */
function regression(w: tf.Variable, opts: { poison?: (step: number) => boolean; throwAt?: number; onPrepare?: () => void } = {}): Objective<{ x: tf.Tensor2D; step: number }, tf.Tensor2D> {
  return {
    prepare: (b, step) => {
      opts.onPrepare?.();
      return { x: tf.tensor2d(b.views[0], [4, 3]), step };
    },
    loss: ({ x, step }) => {
      if (step === opts.throwAt) throw new Error('boom');
      const err = tf.sub(tf.matMul(x, w as tf.Tensor2D), 1);
      const loss = tf.mean(tf.square(opts.poison?.(step) ? tf.mul(err, NaN) : err)) as tf.Scalar;
      return { loss, metrics: { loss_mse: loss, mean_err: tf.mean(err) as tf.Scalar }, updates: tf.clone(x) };
    },
    afterStep: () => undefined,
  };
}

test.before(async () => {
  await initBackend(() => undefined);
});

test('one batch in the chain at a time, the data path a bounded number of batches ahead', async () => {
  const w = tf.variable(tf.scalar(0.5), true, 'bp-w');
  const opt = new AdamW([{ name: 'w', variable: w, lrScale: 1, weightDecay: 0 }]);
  const batchSize = 8;
  const stream = inProcessBatchStream({ source: 'data/cifar10-mini/test-*.tar.gz', transform: { kind: 'views', seed: 0, epoch: 0, views: maeViews(16) }, batchSize, dropLast: true, prefetchBatches: 2 }, () => undefined);
  const items = async function* () {
    for (let i = 0; i < 10; i++) yield { batch: (await stream.next()).value, epoch: 0, waitMs: 0 } as BatchItem;
  };
  let inChain = 0;
  const ahead: number[] = [];
  const objective: Objective<tf.Tensor4D, void> = {
    prepare: (b) => {
      assert.is(inChain, 1, 'a step started before the previous one left the chain');
      ahead.push(stream.valve.inFlight);
      return tf.tensor4d(b.views[0], [batchSize, 16, 16, 3]);
    },
    loss: (images) => ({ loss: tf.mean(tf.square(tf.sub(tf.mul(images, w), 1))) as tf.Scalar, metrics: {}, updates: undefined }),
  };
  const valve = new Valve(1);
  const open = new OpenSteps();
  await lastValueFrom(
    fromPull(items(), valve).pipe(
      tap(() => inChain++),
      trainStep(objective, opt, { open, fromStep: 0, lr: () => 0.01 }),
      readMetrics({ every: 3 }),
      // an asynchronous checkpoint: the data path runs meanwhile, the next step does not
      checkpointEvery({ due: () => true, write: () => new Promise((resolve) => setTimeout(resolve, 20)) }),
      tap(() => {
        inChain--;
        valve.release(1);
      }),
      toArray(),
    ),
  );
  await stream.return();
  assert.is(ahead.length, 10);
  assert.ok(Math.max(...ahead) <= batchSize * 3, `samples prepared ahead: ${ahead}`);
  assert.ok(Math.max(...ahead) > batchSize, `the data path did not run ahead of the step: ${ahead}`);
  opt.dispose();
  w.dispose();
});

test('no tensor left after N steps, nor after an error thrown mid-step; no synchronous read in the steps', async () => {
  const w = tf.variable(tf.zeros([3, 1]), true, 'mem-w');
  const opt = new AdamW([{ name: 'w', variable: w, lrScale: 1, weightDecay: 0 }]);
  const before = tf.memory().numTensors;
  const syncReads = { n: 0 };
  const dataSync = tf.Tensor.prototype.dataSync;
  tf.Tensor.prototype.dataSync = function (this: tf.Tensor) {
    syncReads.n++;
    return dataSync.call(this);
  } as typeof dataSync;
  const reads: number[] = [];
  try {
    const objective = regression(w);
    const open = new OpenSteps();
    const out = await lastValueFrom(
      fromPull(batches(10)).pipe(trainStep(objective, opt, { open, fromStep: 0, lr: () => 0.01 }), enqueue(objective), readMetrics({ every: 5 }), tap((r) => reads.push(r.records.length)), toArray()),
    );
    assert.is(syncReads.n, 0, 'a step read the device synchronously');
    assert.equal(reads, [0, 0, 0, 0, 5, 0, 0, 0, 0, 5], 'metrics read once per 5 steps');
    assert.equal(out[9].records.map((r) => r.step), [6, 7, 8, 9, 10]);
    assert.ok(out[9].records.every((r) => Number.isFinite(r.values.loss) && Number.isFinite(r.values.grad_norm) && 'loss_mse' in r.values));
  } finally {
    tf.Tensor.prototype.dataSync = dataSync;
  }
  assert.is(tf.memory().numTensors, before, 'tensors left after 10 steps');
  // an error mid-step (in the loss, under the tape) and with steps still unread downstream
  const open = new OpenSteps();
  const failing = lastValueFrom(
    fromPull(batches(10)).pipe(trainStep(regression(w, { throwAt: 6 }), opt, { open, fromStep: 0, lr: () => 0.01 }), readMetrics({ every: 4 }), finalize(() => open.disposeAll())),
  );
  await failing.then(
    () => assert.unreachable('no error'),
    (err: Error) => assert.match(err.message, 'boom'),
  );
  assert.is(tf.memory().numTensors, before, 'tensors left after an error mid-step');
  opt.dispose();
  w.dispose();
});

async function runDriver(name: string, onNonFinite: 'stop' | 'skip', poison: (step: number) => boolean) {
  const w = tf.variable(tf.zeros([3, 1]), true, `driver-${name}-w`);
  const runDir = path.join(dir, name);
  const written: number[] = [];
  const warn = console.warn;
  const warnings: string[] = [];
  console.warn = (m: string) => warnings.push(m);
  try {
    const result = await train({
      name,
      runDir,
      stages: [{ label: 'toy', schedule: { steps: 12, peakLr: 0.05, minLr: 0, warmupSteps: 2 }, objective: regression(w, { poison }), params: () => [{ name: 'w', variable: w, lrScale: 1, weightDecay: 0 }] }],
      batches: async function* () {
        yield* batches(100);
      },
      optimiser: { beta1: 0.9, beta2: 0.95, eps: 1e-8 },
      maxSteps: 0,
      // a checkpoint after every step: the guard must run before each
      checkpointMinutes: 0,
      logEvery: 4,
      onNonFinite,
      sinks: { lossKeys: ['loss'], title: 'toy' },
      checkpointFiles: async (at) => {
        written.push(at);
        return { 'state.safetensors': { tensors: { w: { shape: [3], data: Float32Array.from(await w.data()) } }, metadata: { state: JSON.stringify({ step: at }) } } };
      },
    });
    return { result, written, warnings, w: Array.from(await w.data()), rows: fs.readFileSync(path.join(runDir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)) };
  } finally {
    console.warn = warn;
    w.dispose();
  }
}

test('a NaN loss stops the run before the next checkpoint, naming the step, the term and the last good checkpoint', async () => {
  // the objective's step 6 (0-based) is the 7th step: metrics.jsonl's step 7
  // status.json as run.claim() writes it: the dashboard must learn why the run failed
  writeRunStatus(path.join(dir, 'nan-stop'), { state: 'running', pipeline: 'toy' });
  const err = await runDriver('nan-stop', 'stop', (s) => s === 6).then(
    () => undefined,
    (e: Error) => e,
  );
  assert.ok(err, 'no error');
  assert.match(err!.message, /^step 7: not finite: .*loss_mse = NaN/);
  assert.match(err!.message, `Last good checkpoint: ${path.join(dir, 'nan-stop', 'checkpoint')} (step 6)`);
  const { metadata } = readSafetensors(path.join(dir, 'nan-stop', 'checkpoint', 'state.safetensors'));
  assert.is(JSON.parse(metadata.state).step, 6, 'a checkpoint was written after the NaN');
  const status = readRunStatus(path.join(dir, 'nan-stop'));
  assert.is(status?.state, 'failed');
  assert.match(status?.message ?? '', /^step 7: not finite: .*loss_mse = NaN/);
});

test('--on-nonfinite skip drops the update of a NaN step and runs on', async () => {
  const clean = await runDriver('clean', 'skip', () => false);
  const skipped = await runDriver('nan-skip', 'skip', (s) => s === 6);
  assert.ok(skipped.result.done);
  assert.equal(skipped.rows.map((r) => r.skipped ?? 0), [0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]);
  assert.ok(skipped.warnings.some((m) => /step 7: skipped .*loss_mse = NaN/.test(m)), skipped.warnings.join('\n'));
  assert.ok(skipped.w.every(Number.isFinite), `weights ${skipped.w}`);
  // up to the NaN step both runs are the same
  assert.equal(skipped.rows.slice(0, 6).map((r) => r.loss), clean.rows.slice(0, 6).map((r) => r.loss));
});

test('a loss scale: an overflowing step is skipped and recorded, the scale drops, the other steps update as without one (bit for bit), no tensor left', async () => {
  // scales are powers of two, so scaling and unscaling in f32 are exact: a run with a scale
  // equals one without, but for the skipped step (2^140 overflows f32; 2^100 does not)
  const run = async (lossScale: DynamicLossScale | undefined, from: number) => {
    const w = tf.tidy(() => tf.variable(tf.fill([3, 1], 0.1), true, `scale-w-${from}-${lossScale ? 's' : 'n'}`));
    const opt = new AdamW([{ name: 'w', variable: w, lrScale: 1, weightDecay: 0 }], { beta1: 0.9, beta2: 0.95, eps: 1e-8, clipGradNorm: 1 });
    const skips: string[] = [];
    const open = new OpenSteps();
    const all = [...batches(6)].slice(from);
    const out = await lastValueFrom(
      fromPull(all[Symbol.iterator]()).pipe(
        trainStep(regression(w), opt, { open, fromStep: 0, lr: () => 0.05, lossScale, onSkip: (step, why) => skips.push(`${step} ${why}`) }),
        readMetrics({ every: 1 }),
        toArray(),
      ),
    );
    const weights = Array.from(await w.data());
    opt.dispose();
    w.dispose();
    return { rows: out.flatMap((r) => r.records.map((rec) => rec.values)), weights, skips };
  };
  const before = tf.memory().numTensors;
  const plain = await run(undefined, 1);
  const scaled = await run(new DynamicLossScale({ initScale: 2 ** 140, backoffFactor: 2 ** -40, growthInterval: 1000 }), 0);
  assert.equal(scaled.rows.map((r) => r.skipped ?? 0), [1, 0, 0, 0, 0, 0]);
  assert.equal(scaled.rows.map((r) => Math.log2(r.loss_scale)), [140, 100, 100, 100, 100, 100]);
  assert.match(scaled.skips[0], /^1 \(loss scale\): the gradients overflowed at loss scale 1\.3\d+e\+42; the scale is now 1\.26\d+e\+30$/);
  assert.equal(scaled.rows.slice(1).map((r) => r.loss), plain.rows.map((r) => r.loss), 'the recorded loss is the unscaled one');
  assert.equal(scaled.rows.slice(1).map((r) => r.grad_norm), plain.rows.map((r) => r.grad_norm));
  assert.equal(scaled.weights, plain.weights);
  assert.is(tf.memory().numTensors, before, 'tensors left');
});

test.run();

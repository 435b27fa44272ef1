/**
 * The rank side of spec/mpi.spec.ts, started by `mpirun -np 2`. Each scenario prints one JSON
 * line per rank ("RESULT {...}") that the spec checks; failures end the job through the
 * collective layer's abort, which is part of what is tested.
 *
 *   mpirun -np 2 node -r ts-node/register spec/mpi-child.ts collectives|nna-grad|objectives [in-tape,before-tape,mimco]|config-mismatch|throw|kill
 */
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../runtime/backend';
import { Collective, SingleProcess } from '../lib/collective';
import { allreduceGradients, runOnAllRanks } from '../runtime/collective';
import { anyRank, broadcastHostTensors, broadcastVariables, checkSameOnAllRanks } from '../runtime/data-parallel';
import { allGatherRowsInTape, gatherBatchMeta, interleaveRows } from '../models/row-exchange';
import { globalBatchNormTrain } from '../models/global-batch-norm';
import { stopGradient } from '../models/ops';
import { nnaLoss } from '../losses/nna';
import { VisionTransformer, VitConfig } from '../models/vit';
import { HEAD_PRESETS, NnaHead } from '../models/nna-head';
import { NnQueue } from '../models/nn-queue';
import { MimcoHeads } from '../models/mimco';
import { nnaRefineObjective } from '../objectives/nna-refine';
import { mimcoObjective } from '../objectives/mimco';
import type { Objective } from '../objectives/objective';
import { OpenSteps } from '../objectives/step';
import { forwardBackward } from '../operators/train-step';
import type { Batch } from '../sources/types';

/** Deterministic values in [-1, 1) (an LCG), the same on every rank (and in spec/collective.spec.ts). */
export function values(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}

function report(c: Collective, result: Record<string, unknown>): void {
  console.log(`RESULT ${JSON.stringify({ rank: c.rank, worldSize: c.worldSize, ...result })}`);
}

async function collectives(c: Collective): Promise<void> {
  const sum = await c.allreduce(Float32Array.of(c.rank + 1, -c.rank, 0.5), 'sum');
  const mean = await c.allreduce(Float64Array.of(c.rank * 2), 'mean');
  const max = c.allreduceSync(Float32Array.of(c.rank), 'max');
  const gathered = await c.allgather(Int32Array.of(c.rank * 10, c.rank * 10 + 1));
  const gatheredSync = c.allgatherSync(Float32Array.of(c.rank + 0.25));
  const bcast = await c.broadcast(c.rank === 0 ? Uint8Array.of(7, 8, 9) : new Uint8Array(3), 0);
  await c.barrier();
  // a buffer larger than one bucket, bucketed: gradients of rank r are (r + 1) * i
  const n = 100_000;
  const grads = { a: tf.tensor1d(Float32Array.from({ length: n }, (_, i) => (c.rank + 1) * i)), b: tf.tensor2d(Float32Array.from({ length: 6 }, () => c.rank), [2, 3]) };
  const reduced = await allreduceGradients(c, grads, { op: 'mean', bucketBytes: 64 * 1024 });
  const a = (await reduced.a.data()) as Float32Array;
  const expectA = (i: number) => (i * (c.worldSize * (c.worldSize + 1))) / 2 / c.worldSize;
  let bucketErr = 0;
  for (let i = 0; i < n; i++) bucketErr = Math.max(bucketErr, Math.abs(a[i] - expectA(i)) / Math.max(1, expectA(i)));
  // broadcast of variables and of host tensors (a queue's state)
  const v = tf.variable(tf.fill([3], c.rank + 5));
  await broadcastVariables(c, [['v', v]], 'spec variables');
  const queue = { 'q.vectors': { shape: [2], data: Float32Array.of(c.rank, c.rank) }, 'q.pointer': { shape: [1], data: Int32Array.of(c.rank * 3) } };
  await broadcastHostTensors(c, queue, 'spec queue');
  const meta = gatherBatchMeta(c, Int32Array.of(c.rank, c.rank + 2), Int32Array.of(10 + c.rank, 12 + c.rank));
  const stop = [await anyRank(c, c.rank === 1), await anyRank(c, false)];
  report(c, {
    localRank: c.localRank,
    sum: [...sum],
    mean: [...mean],
    max: [...max],
    gathered: [...gathered],
    gatheredSync: [...gatheredSync],
    bcast: [...bcast],
    bucketErr,
    b: [...((await reduced.b.data()) as Float32Array)],
    v: [...((await v.data()) as Float32Array)],
    queue: [...queue['q.vectors'].data, ...queue['q.pointer'].data],
    metaIndices: [...meta.indices],
    metaLabels: [...meta.labels],
    stop,
  });
}

/**
 * A small MIM-Refiner head step: inputs -> projector (Linear, BatchNorm over the global batch)
 * -> z; predictor (Linear, BatchNorm) -> p; NNA loss over the global batch with 2 global and 1
 * local view. Each rank holds its interleaved rows; its summed gradients must equal one
 * process's gradients of the whole global batch.
 */
function headStep(c: Collective, xs: tf.Tensor2D[], swapped: tf.Tensor2D[], vars: tf.Variable[]): { loss: number; grads: Record<string, tf.Tensor>; bnMean: Float32Array } {
  const [w1, g1, b1, w2, g2, b2] = vars;
  let bnMean: Float32Array = new Float32Array();
  const { value, grads } = tf.variableGrads(() => {
    const project = (x: tf.Tensor2D, record: boolean) =>
      globalBatchNormTrain(c, tf.matMul(x, w1), g1 as tf.Tensor1D, b1 as tf.Tensor1D, 1e-5, (mean) => {
        if (record) bnMean = Float32Array.from(mean.dataSync());
      });
    const predict = (z: tf.Tensor2D) => globalBatchNormTrain(c, tf.matMul(z, w2), g2 as tf.Tensor1D, b2 as tf.Tensor1D, 1e-5);
    const zGlobal = project(tf.concat([xs[0], xs[1]]), true);
    const pGlobal = tf.split(predict(zGlobal), 2) as tf.Tensor2D[];
    const pLocal = predict(project(xs[2], false));
    const z = tf.split(stopGradient(zGlobal), 2) as tf.Tensor2D[];
    const [z0, z1, p0, p1, p2] = allGatherRowsInTape(c, [z[0], z[1], pGlobal[0], pGlobal[1], pLocal]);
    return nnaLoss({ projections: [z0, z1], swapped, predictions: [p0, p1, p2], numGlobal: 2, temperature: 0.2 }).total;
  }, vars);
  const loss = value.dataSync()[0];
  value.dispose();
  return { loss, grads, bnMean };
}

async function nnaGrad(c: Collective): Promise<void> {
  const N = 8; // global batch
  const D = 12, P = 6;
  const n = N / c.worldSize;
  const init = [tf.tensor2d(values(D * P, 1), [D, P]), tf.add(1, tf.mul(0.1, tf.tensor1d(values(P, 2)))), tf.tensor1d(values(P, 3)), tf.tensor2d(values(P * P, 4), [P, P]), tf.add(1, tf.mul(0.1, tf.tensor1d(values(P, 5)))), tf.tensor1d(values(P, 6))];
  const views = [0, 1, 2].map((v) => values(N * D, 10 + v));
  const swapped = [0, 1].map((v) => tf.tensor2d(values(N * P, 20 + v), [N, P]));
  // this rank's rows: global row i belongs to rank i % W
  const mine = (all: Float32Array) => {
    const out = new Float32Array(n * D);
    for (let j = 0; j < n; j++) out.set(all.subarray((j * c.worldSize + c.rank) * D, (j * c.worldSize + c.rank + 1) * D), j * D);
    return tf.tensor2d(out, [n, D]);
  };
  const vars = init.map((t, i) => tf.variable(t, true, `dp${i}`));
  const dp = headStep(c, views.map(mine), swapped, vars);
  const reduced = await allreduceGradients(c, dp.grads, { op: 'sum' });
  const single = headStep(new SingleProcess(), views.map((x) => tf.tensor2d(x, [N, D])), swapped, init.map((t, i) => tf.variable(t, true, `single${i}`)));
  let maxGradDiff = 0;
  let maxGrad = 0;
  for (const [i, v] of vars.entries()) {
    const a = (await reduced[v.name].data()) as Float32Array;
    const b = (await single.grads[`single${i}`].data()) as Float32Array;
    for (let k = 0; k < a.length; k++) {
      maxGradDiff = Math.max(maxGradDiff, Math.abs(a[k] - b[k]));
      maxGrad = Math.max(maxGrad, Math.abs(b[k]));
    }
  }
  // without the other ranks' share (a rank's gradient alone) the result must differ
  let localOnlyDiff = 0;
  const own = (await dp.grads[vars[0].name].data()) as Float32Array;
  const ref = (await single.grads.single0.data()) as Float32Array;
  for (let k = 0; k < own.length; k++) localOnlyDiff = Math.max(localOnlyDiff, Math.abs(own[k] * c.worldSize - ref[k]));
  const bnMeanDiff = Math.max(...dp.bnMean.map((m, k) => Math.abs(m - single.bnMean[k])));
  report(c, { lossDp: dp.loss, lossSingle: single.loss, maxGradDiff, maxGrad, localOnlyDiff, bnMeanDiff, interleaved: [...interleaveRows(Int32Array.of(0, 1, 2, 10, 11, 12), 2)] });
}

/**
 * One step of an objective as the training step runs it (operators/train-step.ts: prepare,
 * exchange, loss under the tape), its gradients combined over the ranks as the driver does; the
 * objective's after-step update applied. Returns the loss (averaged over ranks under 'mean'), the reduced gradients and
 * this rank's own, by key.
 */
async function objectiveStep<P, U>(
  c: Collective,
  objective: Objective<P, U>,
  batch: Batch,
  step: number,
  vars: Array<[string, tf.Variable]>,
  op: 'sum' | 'mean' | ((name: string) => 'sum' | 'mean'),
): Promise<{ loss: number; grads: Record<string, Float32Array>; own: Record<string, Float32Array> }> {
  const scope = new OpenSteps().open();
  try {
    const out = await forwardBackward(objective, { batch, epoch: 0, waitMs: 0 }, step, vars.map(([, v]) => v), scope);
    objective.afterStep?.(out.updates, batch);
    const reduced = await allreduceGradients(c, out.grads, { op });
    // parameters the loss does not reach (blocks after the last head's, say) have no gradient
    const read = async (g: Record<string, tf.Tensor>) => Object.fromEntries(await Promise.all(vars.filter(([, v]) => g[v.name]).map(async ([k, v]) => [k, (await g[v.name].data()) as Float32Array])));
    const loss = (await out.loss.data())[0];
    const result = { loss: op === 'mean' ? (await c.allreduce(Float32Array.of(loss), 'mean'))[0] : loss, grads: await read(reduced), own: await read(out.grads) };
    if (reduced !== out.grads) tf.dispose(Object.values(reduced));
    return result;
  } finally {
    scope.dispose();
  }
}

/** This rank's rows of a global batch: row i belongs to rank i % W (the sources' split). */
function rowsOf(c: Collective, b: Batch): Batch {
  const n = b.indices.length / c.worldSize;
  const pick = <T extends Int32Array | Float32Array>(a: T, len: number): T => {
    const out = new (a.constructor as new (l: number) => T)(n * len);
    for (let j = 0; j < n; j++) out.set(a.subarray((j * c.worldSize + c.rank) * len, (j * c.worldSize + c.rank + 1) * len), j * len);
    return out;
  };
  return { indices: pick(b.indices, 1), labels: pick(b.labels, 1), views: b.views.map((v, i) => pick(v, b.viewSizes[i] ** 2 * 3)), viewSizes: b.viewSizes };
}

/**
 * The objectives themselves across ranks, against one process on the global batch: NNA refine
 * with the encoder training (stage 3), rows exchanged in the tape and before it, and MimCo. Two
 * steps each (the first fills the NN queues with the global batch); the second step's combined
 * gradients are compared with the single process's.
 */
async function objectives(c: Collective, checks: string[]): Promise<void> {
  const cfg: VitConfig = { imgSize: 16, patchSize: 4, embedDim: 32, depth: 3, numHeads: 2, mlpRatio: 2, act: 'gelu', posEmbed: 'sincos' };
  const N = 8;
  const viewSizes = [16, 16, 8];
  const global: Batch = {
    indices: Int32Array.from({ length: N }, (_, i) => 3 * i + 1),
    labels: Int32Array.from({ length: N }, (_, i) => i % 3),
    views: viewSizes.map((s, v) => values(N * s * s * 3, 30 + v)),
    viewSizes,
  };
  const local = rowsOf(c, global);
  const paramsOf = (named: Record<string, { params: { names(): string[]; get(n: string): tf.Variable } }>) =>
    Object.entries(named).flatMap(([prefix, m]) => m.params.names().filter((n) => m.params.get(n).trainable).map((n) => [`${prefix}.${n}`, m.params.get(n)] as [string, tf.Variable]));
  const compare = (dp: { loss: number; grads: Record<string, Float32Array>; own: Record<string, Float32Array> }, single: { loss: number; grads: Record<string, Float32Array> }) => {
    let maxGradDiff = 0, maxGrad = 0, ownDiff = 0;
    for (const k of Object.keys(single.grads)) {
      const [a, b, own] = [dp.grads[k], single.grads[k], dp.own[k]];
      for (let i = 0; i < b.length; i++) {
        maxGradDiff = Math.max(maxGradDiff, Math.abs(a[i] - b[i]));
        maxGrad = Math.max(maxGrad, Math.abs(b[i]));
        ownDiff = Math.max(ownDiff, Math.abs(own[i] - b[i]));
      }
    }
    return { lossDp: dp.loss, lossSingle: single.loss, maxGradDiff, maxGrad, ownDiff };
  };
  const results: Record<string, unknown> = {};
  for (const exchange of (['in-tape', 'before-tape'] as const).filter((e) => checks.includes(e))) {
    const nna = (world: Collective) => {
      const encoder = new VisionTransformer(cfg, 1);
      const heads = [0, 1].map((i) => new NnaHead(cfg.embedDim, HEAD_PRESETS.tiny, 'gelu', 10 + i, world.worldSize > 1 && exchange === 'in-tape' ? world : undefined));
      const queues = [0, 1].map((i) => new NnQueue(16, HEAD_PRESETS.tiny.out, 20 + i));
      const objective = nnaRefineObjective({ encoder, headBlocks: [1, 2], heads, queues, globalSize: 16, localSize: 8, numLocal: 1, topK: 2, temperature: 0.2, trainEncoder: true, seed: 3, collective: world, exchange });
      const vars = paramsOf({ encoder, 'heads.0': heads[0], 'heads.1': heads[1] });
      const whole = new Set(heads.flatMap((h) => h.params.names().map((n) => h.params.get(n).name)));
      return { objective, vars, op: exchange === 'before-tape' ? (g: string) => (whole.has(g) ? ('mean' as const) : ('sum' as const)) : ('sum' as const) };
    };
    const dp = nna(c);
    const single = nna(new SingleProcess());
    await objectiveStep(c, dp.objective, local, 0, dp.vars, dp.op);
    await objectiveStep(new SingleProcess(), single.objective, global, 0, single.vars, 'sum');
    results[exchange] = compare(await objectiveStep(c, dp.objective, local, 1, dp.vars, dp.op), await objectiveStep(new SingleProcess(), single.objective, global, 1, single.vars, 'sum'));
  }
  const mimco = (world: Collective) => {
    const teacher = new VisionTransformer(cfg, 1);
    const student = new VisionTransformer({ ...cfg, embedDim: 16 }, 2);
    const heads = new MimcoHeads(16, cfg.embedDim, 32, 'gelu', 3);
    const objective = mimcoObjective({ teacher, teacherBlock: 2, student, heads, maskRatio: 0.5, temperature: 0.2, seed: 1, collective: world });
    return { objective, vars: paramsOf({ student, mimco: heads }) };
  };
  if (checks.includes('mimco')) {
    const dp = mimco(c);
    const single = mimco(new SingleProcess());
    results.mimco = compare(await objectiveStep(c, dp.objective, local, 0, dp.vars, 'mean'), await objectiveStep(new SingleProcess(), single.objective, global, 0, single.vars, 'mean'));
  }
  report(c, { backend: tf.getBackend(), ...results });
}

async function main(): Promise<void> {
  const scenario = process.argv[2];
  await runOnAllRanks(async (c) => {
    if (scenario === 'collectives' || scenario === 'nna-grad' || scenario === 'objectives') {
      await initBackend(() => undefined);
      // objectives [checks]: NNA's exchange modes and MimCo (WebGPU has no 'in-tape')
      const checks = (process.argv[3] ?? 'in-tape,before-tape,mimco').split(',');
      return scenario === 'collectives' ? collectives(c) : scenario === 'nna-grad' ? nnaGrad(c) : objectives(c, checks);
    }
    if (scenario === 'config-mismatch') {
      return checkSameOnAllRanks(c, { flags: { batch: c.rank === 1 ? '64' : '32', seed: '0' }, data: ['train-0.tar:100:ab'] });
    }
    if (scenario === 'throw') {
      await c.barrier();
      if (c.rank === 1) throw new Error('failure on purpose in rank 1');
      await c.barrier();
      return;
    }
    if (scenario === 'kill') {
      // rank 1 dies in the middle of a run of all-reduces, the others are blocked in the next one
      for (let i = 0; ; i++) {
        if (i === 20 && c.rank === 1) process.kill(process.pid, 'SIGKILL');
        await c.allreduce(new Float32Array(1000), 'sum');
      }
    }
    throw new Error(`unknown scenario '${scenario}'`);
  });
}

if (require.main === module) void main();

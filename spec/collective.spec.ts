/**
 * The collective layer without a launcher (runtime/collective.ts, runtime/data-parallel.ts):
 * launcher detection, GPU pinning, the global-batch split, the single-process world, and the
 * algebra of the gathered NNA loss, checked by simulating W ranks in one process (each rank's
 * global loss with only its rows carrying gradient; the shares summed). spec/mpi.spec.ts runs
 * the same across real MPI processes.
 */
import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { allreduceGradients, launcherInfo, localBatchSize, openCollective, pinLocalGpu } from '../runtime/collective';
import { exchangeMode } from '../runtime/data-parallel';
import { gatherRows, interleaveRows, withOwnRows } from '../models/row-exchange';
import { nnaLoss } from '../losses/nna';
import { initBackend } from '../runtime/backend';
import { values } from './mpi-child';

test.before(async () => {
  await initBackend(() => undefined);
});

test('launcher detection: Open MPI, MPICH/PMI, PMIx, none, forced', () => {
  assert.equal(launcherInfo({ OMPI_COMM_WORLD_SIZE: '4', OMPI_COMM_WORLD_RANK: '2', OMPI_COMM_WORLD_LOCAL_RANK: '0' }), { launched: true, rank: 2, worldSize: 4, localRank: 0 });
  assert.equal(launcherInfo({ PMI_SIZE: '2', PMI_RANK: '1', MPI_LOCALRANKID: '1' }), { launched: true, rank: 1, worldSize: 2, localRank: 1 });
  assert.equal(launcherInfo({ PMIX_RANK: '3', SLURM_NTASKS: '8', SLURM_LOCALID: '3' }), { launched: true, rank: 3, worldSize: 8, localRank: 3 });
  assert.is(launcherInfo({}).launched, false);
  // a Slurm allocation alone (no MPI launcher) is not a launch
  assert.is(launcherInfo({ SLURM_PROCID: '0', SLURM_NTASKS: '1' }).launched, false);
  assert.is(launcherInfo({ COLLECTIVE: 'single', OMPI_COMM_WORLD_SIZE: '2' }).launched, false);
  assert.throws(() => launcherInfo({ COLLECTIVE: 'nccl' }), /COLLECTIVE=nccl: expected 'single' or 'mpi'/);
});

test('one GPU per process: CUDA_VISIBLE_DEVICES narrowed to the local rank', () => {
  const env: NodeJS.ProcessEnv = { OMPI_COMM_WORLD_SIZE: '4', OMPI_COMM_WORLD_LOCAL_RANK: '1' };
  assert.is(pinLocalGpu(env), '1');
  assert.is(env.CUDA_VISIBLE_DEVICES, '1');
  const listed: NodeJS.ProcessEnv = { OMPI_COMM_WORLD_SIZE: '2', OMPI_COMM_WORLD_LOCAL_RANK: '1', CUDA_VISIBLE_DEVICES: '4,6' };
  assert.is(pinLocalGpu(listed), '6');
  // the launcher already gave this rank one device (Slurm --gpus-per-task=1): kept
  const one: NodeJS.ProcessEnv = { PMI_SIZE: '8', MPI_LOCALRANKID: '3', CUDA_VISIBLE_DEVICES: '3' };
  assert.is(pinLocalGpu(one), undefined);
  assert.is(one.CUDA_VISIBLE_DEVICES, '3');
  assert.throws(() => pinLocalGpu({ OMPI_COMM_WORLD_SIZE: '4', OMPI_COMM_WORLD_LOCAL_RANK: '2', CUDA_VISIBLE_DEVICES: '0,1' }), /local rank 2 has no GPU: CUDA_VISIBLE_DEVICES=0,1 lists 2/);
  assert.is(pinLocalGpu({}), undefined);
});

test('the global batch must split evenly over the ranks', () => {
  assert.is(localBatchSize(32, 4), 8);
  assert.is(localBatchSize(32, 1), 32);
  assert.throws(() => localBatchSize(30, 4), /--batch 30 is the global batch over 4 ranks and must be a multiple of the world size: use 28 or 32/);
  assert.throws(() => localBatchSize(3, 4), /use 4, or start 4 ranks/);
});

test('without a launcher: a world of one, collectives are the identity', async () => {
  const c = openCollective();
  assert.is(c.kind, 'single');
  assert.equal([c.rank, c.worldSize, c.localRank], [0, 1, 0]);
  assert.equal([...(await c.allreduce(Float32Array.of(1, 2), 'mean'))], [1, 2]);
  assert.equal([...c.allgatherSync(Int32Array.of(5))], [5]);
  const grads = { w: tf.ones([2]) };
  assert.is(await allreduceGradients(c, grads, { op: 'mean' }), grads); // nothing read back
  tf.dispose(grads.w);
});

test('interleaveRows: rank-order gathered rows -> single-process batch order', () => {
  // 3 ranks x 2 rows of 2 values: rank r row j holds global row j * 3 + r
  const gathered = Float32Array.of(0, 0, 3, 3, 1, 1, 4, 4, 2, 2, 5, 5);
  assert.equal([...interleaveRows(gathered, 3, 2)], [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
  assert.throws(() => interleaveRows(Float32Array.of(1, 2, 3), 2), /3 values are not 2 ranks x rows of 1/);
});

test('gathered NNA: each rank differentiates the global loss through its rows; the shares sum to the one-process gradient', () => {
  const W = 3, n = 2, N = W * n, D = 5, P = 4;
  const x = [0, 1, 2].map((v) => tf.tensor2d(values(N * D, 30 + v), [N, D])); // 2 global + 1 local view, global batch order
  const z = [0, 1].map((v) => tf.tensor2d(values(N * P, 40 + v), [N, P]));
  const s = [0, 1].map((v) => tf.tensor2d(values(N * P, 50 + v), [N, P]));
  const w = tf.variable(tf.tensor2d(values(D * P, 60), [D, P]));
  const loss = (p: tf.Tensor2D[]) => nnaLoss({ projections: z, swapped: s, predictions: p, numGlobal: 2, temperature: 0.2 }).total;
  const single = tf.variableGrads(() => loss(x.map((xv) => tf.matMul(xv, w))), [w]);
  // rank r's rows of view v: global rows i with i % W == r
  const rowsOf = (t: tf.Tensor2D, r: number) => tf.gather(t, Array.from({ length: n }, (_, j) => j * W + r)) as tf.Tensor2D;
  const predictions = x.map((xv) => tf.matMul(xv, w));
  const gathered = predictions.map(() => new Float32Array(W * n * P));
  for (let r = 0; r < W; r++) predictions.forEach((p, v) => gathered[v].set(rowsOf(p as tf.Tensor2D, r).dataSync(), r * n * P));
  const shares = Array.from({ length: W }, (_, r) =>
    tf.variableGrads(() => loss(x.map((xv, v) => gatherRows(tf.matMul(rowsOf(xv, r), w), gathered[v], r, W))), [w]),
  );
  shares.forEach((sh) => assert.ok(Math.abs(sh.value.dataSync()[0] - single.value.dataSync()[0]) < 1e-6, 'every rank sees the global loss'));
  const summed = tf.addN(shares.map((sh) => sh.grads[w.name]));
  const diff = tf.max(tf.abs(tf.sub(summed, single.grads[w.name]))).dataSync()[0];
  assert.ok(diff < 1e-5, `summed shares differ from the single-process gradient by ${diff}`);
  // and one share alone is not it
  const alone = tf.max(tf.abs(tf.sub(tf.mul(shares[0].grads[w.name], W), single.grads[w.name]))).dataSync()[0];
  assert.ok(alone > 1e-3, `one share x W equals the gradient (${alone}): the check could not fail`);
  tf.dispose([...x, ...z, ...s, w, single.value, ...Object.values(single.grads), ...predictions, summed, ...shares.flatMap((sh) => [sh.value, ...Object.values(sh.grads)])]);
});

test('exchange mode: before the tape on WebGPU (no synchronous read), in the tape elsewhere, DP_EXCHANGE overrides', () => {
  assert.is(exchangeMode('webgpu', {}), 'before-tape');
  assert.is(exchangeMode('wasm', {}), 'in-tape');
  assert.is(exchangeMode('tensorflow', {}), 'in-tape');
  assert.is(exchangeMode('wasm', { DP_EXCHANGE: 'before-tape' }), 'before-tape');
  assert.throws(() => exchangeMode('webgpu', { DP_EXCHANGE: 'in-tape' }), /DP_EXCHANGE=in-tape reads the device synchronously inside the gradient tape, which WebGPU cannot/);
  assert.throws(() => exchangeMode('wasm', { DP_EXCHANGE: 'later' }), /DP_EXCHANGE=later: expected 'in-tape' or 'before-tape'/);
});

test('withOwnRows: the gathered values exactly (every rank computes on the same numbers), the gradient to this rank\'s rows', () => {
  const W = 2, n = 2, P = 3;
  // rank 1's rows as gathered, and as this rank recomputes them (off by rounding)
  const gathered = values(W * n * P, 70);
  const local = tf.variable(tf.add(tf.tensor2d(gathered.subarray(n * P, 2 * n * P), [n, P]), 1e-7));
  const weights = tf.tensor2d(values(W * n * P, 71), [W * n, P]);
  const { value, grads } = tf.variableGrads(() => {
    const all = withOwnRows(local as unknown as tf.Tensor2D, gathered, 1, W);
    assert.equal([...all.dataSync()], [...interleaveRows(gathered, W, P)]);
    return tf.sum(tf.mul(all, weights)) as tf.Scalar;
  }, [local]);
  // d/d local of sum(all * weights): rank 1's rows j sit at global rows j * W + 1
  assert.equal([...grads[local.name].dataSync()], [...weights.dataSync().subarray(P, 2 * P), ...weights.dataSync().subarray(3 * P, 4 * P)]);
  tf.dispose([local, weights, value, ...Object.values(grads)]);
});

test.run();

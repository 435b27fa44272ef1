/**
 * Collective communication between the processes of a data-parallel run: rank, world size,
 * local rank, all-reduce, all-gather, broadcast, barrier, over MPI (runtime/collective-mpi.ts,
 * a compiled shim loaded through koffi) when the process was started by an MPI launcher, and a
 * single-process implementation otherwise (a world of one: every collective is the identity).
 *
 * Launcher detection (before MPI is touched, so that a plain `npx ts-node ...` never loads
 * MPI): Open MPI's mpirun sets OMPI_COMM_WORLD_SIZE, MPICH/Hydra and Slurm's PMI set PMI_SIZE,
 * PMIx-based launchers (Open MPI 5, srun --mpi=pmix) set PMIX_RANK. COLLECTIVE=single|mpi
 * overrides the detection.
 *
 * Lifetime: openCollective() initialises once per process; on a normal exit MPI is finalised
 * (with a watchdog, see native/mpi-shim.c), on an exit with a failure code or an uncaught
 * error every rank is stopped with MPI_Abort and a message naming the failing rank, so no rank
 * is left waiting in a collective for one that is gone. SIGINT/SIGTERM handlers of the caller
 * (runtime/signals.ts) stay in charge of signals; without any, a signal finalises and exits.
 */
import * as tf from '@tensorflow/tfjs';
import { Collective, SingleProcess } from '../lib/collective';

export interface LauncherInfo {
  launched: boolean;
  /** From the launcher's environment; -1 where it does not say. */
  rank: number;
  worldSize: number;
  localRank: number;
}

/** What the launcher's environment says, without initialising MPI. */
export function launcherInfo(env: NodeJS.ProcessEnv = process.env): LauncherInfo {
  const int = (...names: string[]) => {
    for (const n of names) if (env[n] !== undefined && /^\d+$/.test(env[n]!)) return Number(env[n]);
    return -1;
  };
  const forced = env.COLLECTIVE;
  if (forced !== undefined && forced !== 'single' && forced !== 'mpi') throw new Error(`COLLECTIVE=${forced}: expected 'single' or 'mpi'`);
  const detected = env.OMPI_COMM_WORLD_SIZE !== undefined || env.PMI_SIZE !== undefined || env.PMIX_RANK !== undefined;
  return {
    launched: forced ? forced === 'mpi' : detected,
    rank: int('OMPI_COMM_WORLD_RANK', 'PMI_RANK', 'PMIX_RANK', 'SLURM_PROCID'),
    worldSize: int('OMPI_COMM_WORLD_SIZE', 'PMI_SIZE', 'SLURM_NTASKS'),
    localRank: int('OMPI_COMM_WORLD_LOCAL_RANK', 'MPI_LOCALRANKID', 'PMI_LOCAL_RANK', 'SLURM_LOCALID'),
  };
}

/**
 * One GPU per process: before the tensor backend loads, a launched rank that shares its
 * machine with other ranks narrows CUDA_VISIBLE_DEVICES (tfjs-node-gpu) to one device, the
 * localRank-th of those listed (or device localRank when none are listed). A launcher that
 * already gives each rank one device (Slurm --gpus-per-task=1, one GPU per Kubernetes pod)
 * leaves a single entry, which is kept. Returns the device chosen, or undefined when untouched.
 */
export function pinLocalGpu(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const info = launcherInfo(env);
  if (!info.launched || info.localRank < 0) return undefined;
  const listed = env.CUDA_VISIBLE_DEVICES?.split(',').filter((d) => d.trim() !== '');
  if (listed && listed.length <= 1) return undefined;
  if (listed && info.localRank >= listed.length) {
    throw new Error(`local rank ${info.localRank} has no GPU: CUDA_VISIBLE_DEVICES=${env.CUDA_VISIBLE_DEVICES} lists ${listed.length}; start at most one rank per GPU`);
  }
  const device = listed ? listed[info.localRank] : String(info.localRank);
  env.CUDA_VISIBLE_DEVICES = device;
  return device;
}

let opened: Collective | undefined;

/**
 * This process's collective, created on first call: MPI when launched by an MPI launcher,
 * otherwise a single process. Installs the exit/abort handling described above.
 */
export function openCollective(): Collective {
  if (opened) return opened;
  if (!launcherInfo().launched) return (opened = new SingleProcess());
  // loaded only when launched: a single process never needs MPI or a C compiler
  const { MpiCollective } = require('./collective-mpi') as typeof import('./collective-mpi');
  const c = new MpiCollective();
  opened = c;
  const name = `[rank ${c.rank}/${c.worldSize}]`;
  process.on('exit', (code) => {
    if (code === 0) c.finalize();
    else c.abort(`${name} exited with code ${code}; stopping all ranks`, code);
  });
  process.on('uncaughtException', (err) => c.abort(`${name} ${err.stack ?? err.message}`));
  process.on('unhandledRejection', (err) => c.abort(`${name} ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`));
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      // another handler (runtime/signals.ts: finish the step, checkpoint, exit) owns the signal
      if (process.listenerCount(signal) > 1) return;
      // MPI_Finalize must not run while another thread is inside MPI; the launcher cleans up
      if (c.inFlight === 0) c.finalize(5);
      process.exit(128 + (signal === 'SIGINT' ? 2 : 15));
    });
  }
  return c;
}

/**
 * Runs main on every rank; an error on one rank stops all of them (MPI_Abort) with a message
 * naming it, instead of leaving the others blocked in their next collective.
 */
export async function runOnAllRanks(main: (c: Collective) => Promise<void>): Promise<void> {
  const c = openCollective();
  try {
    await main(c);
  } catch (err) {
    if (c.worldSize === 1) throw err;
    c.abort(`[rank ${c.rank}/${c.worldSize}] error: ${(err as Error).message}${process.env.DEBUG ? `\n${(err as Error).stack}` : ''}`);
  }
}

/** The rows of the global batch this rank trains on; the global batch must split evenly. */
export function localBatchSize(globalBatch: number, worldSize: number): number {
  if (globalBatch % worldSize !== 0) {
    const below = globalBatch - (globalBatch % worldSize);
    throw new Error(
      `--batch ${globalBatch} is the global batch over ${worldSize} ranks and must be a multiple of the world size: use ${below > 0 ? `${below} or ` : ''}${below + worldSize}, or start ${worldSize} ranks with a batch that divides`,
    );
  }
  return globalBatch / worldSize;
}

export interface GradientAllReduceOptions {
  /** 'mean' when each rank differentiates the mean over its own rows (DDP); 'sum' when each
   * rank differentiates the global loss through its own rows only (see runtime/data-parallel.ts);
   * a function of the gradient's name where the two mix. */
  op: 'sum' | 'mean' | ((name: string) => 'sum' | 'mean');
  /** Bytes per all-reduce call (default 25 MiB, DDP's bucket_cap_mb). */
  bucketBytes?: number;
}

/**
 * All-reduces a gradient map in buckets: each bucket's tensors are read back with `await
 * t.data()` (never dataSync), concatenated into one buffer and all-reduced off the event loop
 * while the next bucket is read, then the results are uploaded as new tensors (the input
 * tensors are left to the caller). Order and bucket boundaries follow the map's key order,
 * which must be the same on every rank. With one rank the input map itself is returned.
 */
export async function allreduceGradients(c: Collective, grads: Record<string, tf.Tensor>, opts: GradientAllReduceOptions): Promise<Record<string, tf.Tensor>> {
  if (c.worldSize === 1) return grads;
  const bucketElems = Math.max(1, Math.floor((opts.bucketBytes ?? 25 * 2 ** 20) / 4));
  const names = Object.keys(grads);
  const buckets: string[][] = [];
  let size = Infinity;
  for (const n of names) {
    if (grads[n].dtype !== 'float32') throw new Error(`allreduceGradients: gradient ${n} is ${grads[n].dtype}, expected float32`);
    if (size + grads[n].size > bucketElems) {
      buckets.push([]);
      size = 0;
    }
    buckets[buckets.length - 1].push(n);
    size += grads[n].size;
  }
  const reduced: Promise<Float32Array>[] = [];
  for (const bucket of buckets) {
    const parts = await Promise.all(bucket.map((n) => grads[n].data() as Promise<Float32Array>));
    const buf = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
    let offset = 0;
    for (const p of parts) {
      buf.set(p, offset);
      offset += p.length;
    }
    reduced.push(c.allreduce(buf, 'sum'));
  }
  const out: Record<string, tf.Tensor> = {};
  const opOf = typeof opts.op === 'function' ? opts.op : () => opts.op;
  for (let b = 0; b < buckets.length; b++) {
    const buf = await reduced[b];
    let offset = 0;
    for (const n of buckets[b]) {
      const g = grads[n];
      const scale = opOf(n) === 'mean' ? 1 / c.worldSize : 1;
      const part = tf.tensor(buf.subarray(offset, offset + g.size), g.shape, 'float32');
      offset += g.size;
      // the mean's division runs on the device, not over the host buffer
      out[n] = scale === 1 ? part : tf.tidy(() => tf.mul(part, scale));
      if (scale !== 1) part.dispose();
    }
  }
  return out;
}

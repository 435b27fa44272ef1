/**
 * What a resumed run takes from its checkpoint and what from the command line
 * (runtime/cli.ts mergeResumeFlags): the flags in `fixed` define shapes and data order (model,
 * heads, batch, seed, views, ...) and always come from the checkpoint (giving another value is
 * an error); the others (lr, schedule length, logging, checkpoint interval, evaluation) may be
 * given anew. The merge is printed.
 */
import { readTrainState, hostTensors } from '../runtime/checkpoint';
import { explicitFlags, FlagSpec, mergeResumeFlags } from '../runtime/cli';
import type { HostTensor } from '../models/params';

export interface Resumed<F> {
  /** Flags to run with. */
  flags: F;
  step: number;
  meta: Record<string, unknown>;
  tensors: Map<string, HostTensor>;
  /** The state.safetensors read (in the newest complete checkpoint), for errors. */
  file: string;
  /** Updates the optimiser of the checkpoint's stage had applied (differs from the steps after a skipped step). */
  optimiserStep?: number;
}

/** Reads the run's newest complete checkpoint and merges its flags with the command line's. */
export function resumeRun<F extends Record<string, string | boolean | undefined>>(
  name: string,
  runDir: string,
  cli: { usage: string; spec: Record<string, FlagSpec>; flags: F; argv: string[] },
  fixed: readonly string[],
): Resumed<F> {
  const state = readTrainState(runDir);
  const merged = mergeResumeFlags((state.meta.flags ?? {}) as F, cli.flags, explicitFlags(cli.usage, cli.spec, cli.argv), fixed, runDir);
  const step = state.meta.step as number;
  console.log(`[${name}] resuming ${runDir} at step ${step} from ${state.dir}`);
  merged.lines.forEach((line) => console.log(`[${name}] ${line}`));
  return { flags: merged.flags, step, meta: state.meta, tensors: hostTensors(state.tensors), file: state.file, optimiserStep: state.meta.optimiserStep as number | undefined };
}

/**
 * What a resumed run takes from its checkpoint and what from the command line
 * (runtime/cli.ts mergeResumeFlags): the flags in `fixed` define shapes and data order (model,
 * heads, batch, seed, views, ...) and always come from the checkpoint (giving another value is
 * an error); the others (lr, schedule length, logging, checkpoint interval, evaluation) may be
 * given anew. The merge is printed. A checkpoint written before a flag was renamed has its old
 * name read as the new one.
 */
import { readTrainState, hostTensors } from '../runtime/checkpoint';
import { mergeResumeFlags } from '../runtime/cli';
import type { HostTensor } from '../models/params';
import { RENAMED } from './flags';

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

type FlagValues = Record<string, string | boolean | undefined>;

/** Reads the run's newest complete checkpoint and merges its flags with the command line's. */
export function resumeRun<F extends FlagValues>(name: string, runDir: string, given: { flags: F; explicit: ReadonlySet<string> }, fixed: readonly string[]): Resumed<F> {
  const state = readTrainState(runDir);
  const saved = renamedKeys((state.meta.flags ?? {}) as FlagValues);
  const merged = mergeResumeFlags(saved as F, given.flags, given.explicit, fixed, runDir);
  const step = state.meta.step as number;
  console.log(`[${name}] resuming ${runDir} at step ${step} from ${state.dir}`);
  merged.lines.forEach((line) => console.log(`[${name}] ${line}`));
  return { flags: merged.flags, step, meta: state.meta, tensors: hostTensors(state.tensors), file: state.file, optimiserStep: state.meta.optimiserStep as number | undefined };
}

/** Saved flags under today's names, where a rename was one name for another ('lr2' -> 'stage2-lr'). */
function renamedKeys(saved: FlagValues): FlagValues {
  const out: FlagValues = {};
  for (const [k, v] of Object.entries(saved)) {
    const plain = /^--([a-z0-9-]+)$/.exec(RENAMED[k] ?? '');
    out[plain && !(plain[1] in saved) ? plain[1] : k] = v;
  }
  return out;
}

/**
 * What a resumed run takes from its checkpoint and what from the command line: the flags that
 * define shapes and data order (model, heads, batch, seed, views, ...) always come from the
 * checkpoint (giving another value is an error); the others (lr, schedule length, logging,
 * checkpoint interval, evaluation) may be overridden. The merge is printed flag by flag.
 */
import * as path from 'node:path';
import { hostTensors, readTrainState } from '../runtime/checkpoint';
import type { HostTensor } from '../models/params';

export interface Resumed<F> {
  /** Flags to run with. */
  flags: F;
  step: number;
  meta: Record<string, unknown>;
  tensors: Map<string, HostTensor>;
  file: string;
}

/** Flags about this invocation only, never taken from the checkpoint. */
const PER_INVOCATION = ['resume', 'out', 'max-steps'];

/** Flags spelled out in argv (`--name value`, `--name=value`, `--flag`). */
export function givenFlags(argv: string[]): Set<string> {
  return new Set(argv.filter((a) => a.startsWith('--')).map((a) => a.slice(2).split('=')[0]));
}

/**
 * Reads runDir/checkpoint and merges its flags with the command line's. `overridable` names
 * the flags the command line may change.
 */
export function resumeRun<F extends Record<string, unknown>>(name: string, runDir: string, cli: F, argv: string[], overridable: readonly string[]): Resumed<F> {
  const dir = path.join(runDir, 'checkpoint');
  const state = readTrainState(dir);
  const saved = (state.meta.flags ?? {}) as Record<string, unknown>;
  const given = givenFlags(argv);
  const flags: Record<string, unknown> = { ...cli };
  const lines: string[] = [];
  for (const key of Object.keys(cli)) {
    if (PER_INVOCATION.includes(key)) continue;
    const fromCli = given.has(key) && overridable.includes(key);
    if (given.has(key) && !fromCli && key in saved && String(saved[key]) !== String(cli[key])) {
      throw new Error(`--${key} ${cli[key]}: ${runDir} was started with --${key} ${saved[key]}, and --${key} defines shapes or data order, so a resumed run keeps it`);
    }
    if (!fromCli && key in saved) flags[key] = saved[key];
    if (flags[key] !== undefined && flags[key] !== false) lines.push(`  --${key} ${flags[key]} (${fromCli ? 'command line' : key in saved ? 'checkpoint' : 'default'})`);
  }
  console.log(`[${name}] resuming ${runDir} at step ${state.meta.step}; flags:\n${lines.join('\n')}`);
  return { flags: flags as F, step: state.meta.step as number, meta: state.meta, tensors: hostTensors(state.tensors), file: path.join(dir, 'state.safetensors') };
}

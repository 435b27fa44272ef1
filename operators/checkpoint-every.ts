/** Writes a checkpoint after each step `due` names (awaited: the next step waits for it). */
import { concatMap, OperatorFunction } from 'rxjs';

export function checkpointEvery<T extends { step: number }>(opts: { due: (step: number) => boolean; write: (step: number) => Promise<void> }): OperatorFunction<T, T> {
  return concatMap(async (s) => {
    if (opts.due(s.step)) await opts.write(s.step);
    return s;
  });
}

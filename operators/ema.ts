/** Updates an EMA copy of the model after each step whose update was applied (models/ema.ts). */
import { OperatorFunction, tap } from 'rxjs';
import { Ema } from '../models/ema';
import type { Step } from '../objectives/step';

export function ema<U>(average: Ema | undefined): OperatorFunction<Step<U>, Step<U>> {
  return tap((s) => {
    if (average && !s.skipped) average.update();
  });
}

/**
 * The objective's after-step update (e.g. enqueue the step's projections into the NN queues),
 * after the optimiser step, for each step whose update was applied.
 */
import { OperatorFunction, tap } from 'rxjs';
import type { Objective } from '../objectives/objective';
import type { Step } from '../objectives/step';

export function enqueue<U>(objective: Objective<unknown, U>): OperatorFunction<Step<U>, Step<U>> {
  return tap((s) => {
    if (objective.afterStep && !s.skipped) objective.afterStep(s.updates, s.batch);
  });
}

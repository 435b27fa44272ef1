/**
 * Reads the steps' device scalars (loss, gradient norm, the objective's metrics) once per
 * `every` steps, and whenever `flush(step)` says so (before a checkpoint, at the end): all the
 * buffered scalars stacked into one tensor, one asynchronous read. Ends each step's scope
 * (its remaining tensors are freed as the step passes). Emits every step, with the records of
 * the steps read at that point (empty in between), and the first step whose loss, gradient
 * norm or loss term was not finite.
 */
import * as tf from '@tensorflow/tfjs';
import { concatMap, finalize, OperatorFunction } from 'rxjs';
import type { Step, StepRecord } from '../objectives/step';

export interface NonFinite {
  step: number;
  /** The non-finite values, "name = value" (the head's loss, a term, the gradient norm). */
  terms: string[];
}

export interface ReadStep {
  step: number;
  records: StepRecord[];
  nonFinite?: NonFinite;
}

interface Pending {
  record: Omit<StepRecord, 'values'> & { values: Record<string, number> };
  constants: Record<string, number>;
  names: string[];
  scalars: tf.Scalar[];
}

export function readMetrics<U>(opts: { every: number; flush?: (step: number) => boolean }): OperatorFunction<Step<U>, ReadStep> {
  return (source) => {
    let pending: Pending[] = [];
    return source.pipe(
      concatMap(async (s): Promise<ReadStep> => {
        const named = { ...s.metrics, grad_norm: s.gradNorm, loss: s.loss };
        const scalars = Object.values(named);
        scalars.forEach((t) => s.scope.release(t));
        s.scope.dispose();
        pending.push({
          record: { step: s.step, epoch: s.epoch, lr: s.lr, images: s.batch.indices.length, stepMs: performance.now() - s.startedAt, waitMs: s.waitMs, values: {} },
          constants: { ...s.values, ...(s.skipped ? { skipped: 1 } : {}) },
          names: Object.keys(named),
          scalars,
        });
        if (s.step % opts.every !== 0 && !opts.flush?.(s.step)) return { step: s.step, records: [] };
        const batch = pending;
        pending = [];
        const all = batch.flatMap((p) => p.scalars);
        const stacked = tf.stack(all);
        tf.dispose(all);
        const values = await stacked.data();
        stacked.dispose();
        let at = 0;
        let nonFinite: NonFinite | undefined;
        const records = batch.map((p) => {
          const row: Record<string, number> = { ...p.constants };
          for (const name of p.names) row[name] = values[at++];
          const bad = p.constants.skipped ? [] : p.names.filter((k) => (k === 'grad_norm' || k.includes('loss')) && !Number.isFinite(row[k]));
          if (bad.length > 0 && !nonFinite) nonFinite = { step: p.record.step, terms: bad.map((k) => `${k} = ${row[k]}`) };
          return { ...p.record, values: row };
        });
        return { step: s.step, records, nonFinite };
      }),
      finalize(() => {
        tf.dispose(pending.flatMap((p) => p.scalars));
        pending = [];
      }),
    );
  };
}

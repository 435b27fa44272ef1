/**
 * What a training method computes in one step, apart from the machinery every method shares
 * (optimiser, schedule, EMA, checkpoints, logging: train/). An objective is two pure functions
 * of a batch and the step number plus an optional after-step update:
 *
 *   prepare(batch, step)  outside the gradient tape: input tensors and whatever takes no
 *                         gradient (a frozen encoder's features, a teacher's targets);
 *   exchange(prepared)    optional, data-parallel: what the loss needs of the other ranks'
 *                         rows, all-gathered between prepare and the tape (asynchronously: a
 *                         tape runs synchronously, and WebGPU has no synchronous read);
 *   loss(prepared, step)  under the tape: forward and loss, the metrics as device scalars
 *                         (never numbers: they are read once per log interval), and the
 *                         tensors the after-step update needs;
 *   afterStep(updates)    after the optimiser step (e.g. enqueue into a NN queue).
 *
 * Tensors returned by `prepare` and `exchange` are freed by the caller when the step ends; those
 * in `loss`'s result belong to the caller too.
 */
import * as tf from '@tensorflow/tfjs';
import type { Batch } from '../sources/types';

export interface StepLoss<U> {
  loss: tf.Scalar;
  /** Named per-step values (loss terms per head, NN similarity, ...), device scalars. */
  metrics: Record<string, tf.Scalar>;
  /** Tensors for afterStep. */
  updates: U;
}

export interface Objective<P = unknown, U = unknown> {
  prepare(batch: Batch, step: number): P;
  /** Resolves to what `loss` then gets (prepare's tensors may be carried over; `exchange` tidies its own intermediates). */
  exchange?(prepared: P, step: number): Promise<P>;
  loss(prepared: P, step: number): StepLoss<U>;
  afterStep?(updates: U, batch: Batch): void;
}

/** Every tensor inside a value (objects, arrays), for ownership bookkeeping. */
export function tensorsIn(value: unknown, out: tf.Tensor[] = []): tf.Tensor[] {
  if (value instanceof tf.Tensor) out.push(value);
  else if (Array.isArray(value)) for (const v of value) tensorsIn(v, out);
  else if (value !== null && typeof value === 'object' && !ArrayBuffer.isView(value)) for (const v of Object.values(value)) tensorsIn(v, out);
  return out;
}

/**
 * One training step as it flows through the step operators (operators/train-step.ts, ema.ts,
 * enqueue.ts, read-metrics.ts, checkpoint-every.ts), and the scope that owns its tensors.
 */
import * as tf from '@tensorflow/tfjs';
import type { Batch } from '../sources/types';

/** A batch as the data path delivers it. */
export interface BatchItem {
  batch: Batch;
  epoch: number;
  /** Milliseconds the consumer waited for this batch. */
  waitMs: number;
}

/**
 * The tensors of one step. trainStep opens one per step (freeing it itself if the step
 * throws); readMetrics frees it once the step has been read; steps still on their way when
 * the stream errors or is torn down are freed by OpenSteps.disposeAll at the end of the chain.
 */
export class StepScope {
  private readonly owned = new Set<tf.Tensor>();
  private closed = false;

  constructor(private readonly live: Set<StepScope>) {
    live.add(this);
  }

  own<T extends tf.Tensor>(t: T): T {
    this.owned.add(t);
    return t;
  }

  /** Hands a tensor over to another owner (the metrics buffer). */
  release<T extends tf.Tensor>(t: T): T {
    this.owned.delete(t);
    return t;
  }

  dispose(): void {
    if (this.closed) return;
    this.closed = true;
    tf.dispose([...this.owned]);
    this.owned.clear();
    this.live.delete(this);
  }
}

/** The scopes of the steps between trainStep and readMetrics. */
export class OpenSteps {
  private readonly live = new Set<StepScope>();

  open(): StepScope {
    return new StepScope(this.live);
  }

  get size(): number {
    return this.live.size;
  }

  disposeAll(): void {
    [...this.live].forEach((s) => s.dispose());
  }
}

export interface Step<U = unknown> extends BatchItem {
  /** Steps done after this one, counting from 1: the number metrics.jsonl gives it. */
  step: number;
  lr: number;
  loss: tf.Scalar;
  gradNorm: tf.Scalar;
  metrics: Record<string, tf.Scalar>;
  updates: U;
  /** Constant per-stage values logged with the metrics (e.g. the stage id). */
  values: Record<string, number>;
  /** --on-nonfinite skip dropped this step's update. */
  skipped: boolean;
  /** performance.now() when the step began (its time runs to readMetrics: EMA and enqueue included). */
  startedAt: number;
  scope: StepScope;
}

/** One step as the sinks see it (operators/read-metrics.ts reads it off the device). */
export interface StepRecord {
  step: number;
  epoch: number;
  lr: number;
  values: Record<string, number>;
  /** Images in this step's batch. */
  images: number;
  /** Compute time of the step. */
  stepMs: number;
  /** Time the step waited for its batch. */
  waitMs: number;
}

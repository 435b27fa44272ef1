/**
 * A training sink for train()'s `sinks.extra` (train/driver.ts): the process's memory beside
 * the metrics, as memory.jsonl in the run folder, one row per step record at most every
 * `everyMs` (records arrive in bursts of --log-every steps, when the device's scalars are
 * read), for the dashboard's memory curve. Columns, all in MB (2^20 bytes) except the count:
 * rss_mb (resident set of the process), heap_used_mb (V8 heap in use), external_mb (memory
 * outside the V8 heap: Buffers, wasm memory), tensor_mb and tensors (tfjs tensors alive,
 * tf.memory(): on WebGPU the GPU buffers they hold). Written as metrics.jsonl is
 * (sinks/metrics-jsonl.ts), without an fsync per row, and cut back to a resumed checkpoint's step.
 */
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { Observer, Subject } from 'rxjs';
import { metricsJsonl, MetricsRow } from './metrics-jsonl';
import type { StepRecord } from '../objectives/step';

export const MEMORY_JSONL = 'memory.jsonl';

export interface MemorySinkOptions {
  /** The step a resumed run's checkpoint holds: rows after it are dropped from the file first (0: a fresh file). Unset: append. */
  resumedAtStep?: number;
  /** Milliseconds between rows at least (default 1000; 0: every record). */
  everyMs?: number;
}

const MB = 1 << 20;

/** An observer of the step records writing `runDir`/memory.jsonl; the file closes when the records complete. */
export function memorySink(runDir: string, opts: MemorySinkOptions = {}): Observer<StepRecord> {
  const everyMs = opts.everyMs ?? 1000;
  const rows = new Subject<MetricsRow>();
  rows.pipe(metricsJsonl(path.join(runDir, MEMORY_JSONL), { fsync: false, keepThroughStep: opts.resumedAtStep })).subscribe();
  let last = -Infinity;
  return {
    next: (record) => {
      const now = performance.now();
      if (now - last < everyMs) return;
      last = now;
      const m = process.memoryUsage();
      const t = tf.memory();
      rows.next({ step: record.step, rss_mb: m.rss / MB, heap_used_mb: m.heapUsed / MB, external_mb: m.external / MB, tensor_mb: t.numBytes / MB, tensors: t.numTensors });
    },
    error: () => rows.complete(),
    complete: () => rows.complete(),
  };
}

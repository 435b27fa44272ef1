/**
 * The sinks a training run's step records flow into: metrics as JSON lines, a console
 * progress line (count, rate, ETA), and at the end the loss curves as SVG + PNG.
 */
import * as path from 'node:path';
import { Observable, lastValueFrom, map, share, toArray } from 'rxjs';
import { metricsJsonl } from './metrics-jsonl';
import { progress } from './progress';
import { writeChart } from './charts';
import type { StepRecord } from '../objectives/step';

export type { StepRecord };

export interface TrainingSinkOptions {
  runDir: string;
  total: number;
  /** Values drawn in the loss chart. */
  lossKeys: string[];
  title: string;
  /** The step a resumed run's checkpoint holds: metrics.jsonl keeps the rows up to it, progress counts on from it (0: a fresh run). */
  resumedAtStep: number;
}

/** Subscribes the sinks; resolves when `records` completes and the chart is written. */
export async function trainingSinks(records: Observable<StepRecord>, opts: TrainingSinkOptions): Promise<void> {
  const rows = records.pipe(
    map((r): Record<string, number> => ({
      step: r.step,
      epoch: r.epoch,
      lr: r.lr,
      images_per_s: (1000 * r.images) / (r.stepMs + r.waitMs),
      data_wait_share: r.waitMs / (r.stepMs + r.waitMs),
      ...r.values,
    })),
    metricsJsonl(path.join(opts.runDir, 'metrics.jsonl'), { keepThroughStep: opts.resumedAtStep }),
    progress({ total: opts.total, start: opts.resumedAtStep, label: path.basename(opts.runDir), unit: 'steps', show: ['loss', 'lr', 'images_per_s', 'data_wait_share'] }),
    share(),
  );
  const all = await lastValueFrom(rows.pipe(toArray()));
  if (all.length === 0) return;
  const every = Math.max(1, Math.floor(all.length / 500));
  await writeChart(path.join(opts.runDir, 'loss'), {
    title: opts.title,
    xLabel: 'step',
    yLabel: 'loss',
    series: opts.lossKeys
      .filter((k) => typeof all[0][k] === 'number')
      .map((k) => ({ name: k, points: smooth(all.map((r) => [r.step, r[k] as number] as [number, number]), every) })),
  });
}

/** Mean over windows of `every` points, so long runs draw a readable curve. */
function smooth(points: [number, number][], every: number): [number, number][] {
  const out: [number, number][] = [];
  for (let i = 0; i < points.length; i += every) {
    const w = points.slice(i, i + every);
    out.push([w[w.length - 1][0], w.reduce((s, p) => s + p[1], 0) / w.length]);
  }
  return out;
}

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { lastValueFrom, Observable, toArray } from 'rxjs';
import { formatDuration, formatProgress, progress, ProgressOptions } from '../sinks/progress';
import { MetricsRow } from '../sinks/metrics-jsonl';

/** Rows at fixed fake times (ms); returns what was written and what came out. */
async function run(rows: [number, MetricsRow][], opts: Omit<ProgressOptions, 'write' | 'now'>) {
  let t = 0;
  const written: string[] = [];
  const source = new Observable<MetricsRow>((sub) => {
    for (const [at, row] of rows) {
      t = at;
      sub.next(row);
    }
    sub.complete();
  });
  const out = await lastValueFrom(source.pipe(progress({ ...opts, write: (s) => written.push(s), now: () => t }), toArray()));
  return { written, out };
}

test('not a TTY: one line per interval, plus the final state; rows pass through', async () => {
  // 21 rows, one every 250 ms: lines at 0, 1000, 2000, ... 5000 ms, each its own line.
  const rows = Array.from({ length: 21 }, (_, i): [number, MetricsRow] => [i * 250, { loss: 1 / (i + 1) }]);
  const { written, out } = await run(rows, { label: 'train', total: 100, unit: 'steps', show: ['loss', 'absent'], isTTY: false, everyMs: 1000 });
  assert.is(out.length, 21);
  assert.is(written.length, 6);
  assert.ok(written.every((l) => l.endsWith('\n') && !l.includes('\r')));
  // At 1000 ms: 5 rows, 4 of them in the 1 s since the first.
  assert.is(written[1], '[train] 5/100 steps (5.0%) | 4.000/s | ETA 0m24s | loss 0.2000\n');
  assert.ok(written[5].startsWith('[train] 21/100 steps (21.0%) | 4.000/s | ETA 0m20s'));
});

test('TTY: rewritten in place with \\r, newline at the end; final row shown even when throttled', async () => {
  const rows: [number, MetricsRow][] = [[0, { acc: 0.5 }], [100, { acc: 0.6 }], [200, { acc: 0.7 }]];
  const { written } = await run(rows, { label: 'knn', show: ['acc'], isTTY: true, everyMs: 1000 });
  assert.equal(written, ['\r[knn] 1 | 0/s | acc 0.5000\x1b[K', '\r[knn] 3 | 10.00/s | acc 0.7000\x1b[K', '\n']);
});

test('a line as soon as the total is reached; custom count per row', async () => {
  const rows: [number, MetricsRow][] = [[0, { n: 64 }], [10, { n: 64 }], [20, { n: 32 }]];
  const { written } = await run(rows, { label: 'extract', total: 160, unit: 'images', count: (r) => r.n as number, isTTY: false, everyMs: 60_000 });
  assert.is(written.length, 2);
  assert.ok(written[1].startsWith('[extract] 160/160 images (100.0%) | 4800/s | ETA 0m00s'), written[1]);
});

test('an empty stream writes nothing', async () => {
  const { written } = await run([], { label: 'x', isTTY: true });
  assert.equal(written, []);
});

test('formatting helpers', () => {
  assert.is(formatDuration(75), '1m15s');
  assert.is(formatDuration(4000), '1h06m');
  assert.is(formatDuration(NaN), '?');
  assert.is(formatProgress({ label: 'a', show: ['lr', 'tag'] }, 3, 0.5, { lr: 4e-4, tag: 'x' }), '[a] 3 | 0.5000/s | lr 4.000e-4 | tag x');
});

test.run();

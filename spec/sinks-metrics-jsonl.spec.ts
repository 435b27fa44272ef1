import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { concat, from, lastValueFrom, Subject, throwError, toArray } from 'rxjs';
import { metricsJsonl, MetricsRow } from '../sinks/metrics-jsonl';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'metrics-jsonl-'));
const read = (file: string) => fs.readFileSync(file, 'utf8').trimEnd().split('\n').map((l) => JSON.parse(l));
/** Descriptors of this process open on `file` (Linux /proc; other activity in the process does not count). */
const openOn = (file: string) =>
  fs.readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return fs.readlinkSync(`/proc/self/fd/${fd}`) === file;
    } catch {
      return false; // closed meanwhile
    }
  }).length;

test('one JSON object per row with step and time; rows pass through unchanged', async () => {
  const file = path.join(tmp, 'a', 'metrics.jsonl'); // folder created on demand
  const rows: MetricsRow[] = [{ loss: 1.5 }, { loss: 1.25, phase: 'warmup' }, { loss: NaN }];
  const out = await lastValueFrom(from(rows).pipe(metricsJsonl(file), toArray()));
  assert.equal(out, rows);
  const lines = read(file);
  assert.equal(lines.map((l) => l.step), [0, 1, 2]);
  assert.equal(lines.map((l) => l.loss), [1.5, 1.25, null]);
  assert.is(lines[1].phase, 'warmup');
  for (const l of lines) assert.ok(!Number.isNaN(Date.parse(l.time)), l.time);
});

test("a row's own step wins; a second run appends", async () => {
  const file = path.join(tmp, 'b.jsonl');
  await lastValueFrom(from([{ step: 10, v: 1 }]).pipe(metricsJsonl(file, { fsync: false })));
  await lastValueFrom(from([{ step: 11, v: 2 }]).pipe(metricsJsonl(file, { fsync: false })));
  assert.equal(read(file).map((l) => [l.step, l.v]), [[10, 1], [11, 2]]);
});

test('the file is closed on complete, on error and on unsubscribe', async () => {
  const file = path.join(tmp, 'c.jsonl');
  await lastValueFrom(from([{ v: 1 }]).pipe(metricsJsonl(file)));
  assert.is(openOn(file), 0);
  try {
    await lastValueFrom(concat(from([{ v: 2 }]), throwError(() => new Error('boom'))).pipe(metricsJsonl(file)));
    assert.unreachable();
  } catch (e) {
    assert.is((e as Error).message, 'boom');
  }
  assert.is(openOn(file), 0);
  const s = new Subject<MetricsRow>();
  const subscription = s.pipe(metricsJsonl(file)).subscribe();
  s.next({ v: 3 });
  assert.is(openOn(file), 1, 'open while subscribed');
  subscription.unsubscribe();
  assert.is(openOn(file), 0);
  assert.equal(read(file).map((l) => l.v), [1, 2, 3]);
});

test('a process killed mid-stream (SIGKILL) keeps every line written so far', () => {
  const file = path.join(tmp, 'crash.jsonl');
  const child = `
    const { Subject } = require('rxjs');
    const { metricsJsonl } = require(${JSON.stringify(path.join(__dirname, '..', 'sinks', 'metrics-jsonl'))});
    const s = new Subject();
    s.pipe(metricsJsonl(${JSON.stringify(file)})).subscribe();
    for (let i = 0; i < 5; i++) s.next({ i, loss: 1 / (i + 1) });
    process.kill(process.pid, 'SIGKILL');`;
  const r = spawnSync(process.execPath, ['-r', 'ts-node/register', '-e', child], { cwd: path.join(__dirname, '..'), encoding: 'utf8' });
  assert.is(r.signal, 'SIGKILL', r.stderr);
  assert.equal(read(file).map((l) => l.i), [0, 1, 2, 3, 4]);
});

test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

test.run();

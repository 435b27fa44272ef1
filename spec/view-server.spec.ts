/**
 * The dashboard's server parts without a browser: the metrics tail (cut-off lines, truncation,
 * replacement), min/max downsampling, run discovery and status, status.json, the memory sink,
 * the server-sent-event stream's latency and reset, and the server's refusals (traversal,
 * symbolic links out, Host header, token, writes). spec/view-browser.spec.ts drives the page.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { JsonlTail, JsonRow } from '../view/jsonl-tail';
import { MinMaxDownsampler } from '../view/downsample';
import { findRuns, runDetail, runSummary } from '../view/runs';
import { readRunStatus, writeRunStatus } from '../runtime/run-status';
import { memorySink } from '../sinks/memory-jsonl';
import { serveRuns, serveRunsHere } from '../view/server';

const made: string[] = [];
const tmp = () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mimref-view-'));
  made.push(dir);
  return dir;
};
test.after(() => made.forEach((dir) => fs.rmSync(dir, { recursive: true, force: true })));
const row = (step: number, extra: Record<string, unknown> = {}) => JSON.stringify({ step, time: new Date(Date.UTC(2026, 0, 1, 0, 0, step)).toISOString(), loss: 10 - step / 10, ...extra }) + '\n';

function collect(file: string) {
  const got: { rows: JsonRow[]; reset: boolean }[] = [];
  const tail = new JsonlTail(file, { rows: (rows, reset) => got.push({ rows, reset }) }, { pollMs: 60_000 });
  return { tail, got, steps: () => got.flatMap((g) => g.rows.map((r) => r.step)) };
}

test('tail: whole lines only; a cut-off line waits for its end; a bad line is counted and skipped', () => {
  const dir = tmp();
  const file = path.join(dir, 'metrics.jsonl');
  const { tail, got, steps } = collect(file);
  tail.start();
  assert.equal(got.length, 0, 'no file yet: nothing');
  fs.writeFileSync(file, row(1) + row(2) + '{"step":3,"time":"2026-01-01T00:00:03.000Z","lo');
  tail.poll();
  assert.equal(steps(), [1, 2]);
  fs.appendFileSync(file, 'ss":9.7}\nnot json\n[1,2]\n' + row(4));
  tail.poll();
  assert.equal(steps(), [1, 2, 3, 4]);
  assert.equal(got[got.length - 1].rows[0].loss, 9.7, 'the cut-off line joined with its end');
  assert.is(tail.badLines, 2);
  tail.close();
});

test('tail: a file cut back (resume) or replaced by rename is read again from its start, as a reset', () => {
  const dir = tmp();
  const file = path.join(dir, 'metrics.jsonl');
  fs.writeFileSync(file, row(1) + row(2) + row(3) + row(4));
  const { tail, got } = collect(file);
  tail.start();
  // truncateToStep's way: a new file renamed over the old one, here longer than what was read
  fs.writeFileSync(`${file}.tmp`, row(1) + row(2, { loss: 42, pad: 'x'.repeat(400) }));
  fs.renameSync(`${file}.tmp`, file);
  tail.poll();
  const last = got[got.length - 1];
  assert.ok(last.reset, 'replacement announced as a reset');
  assert.equal(last.rows.map((r) => r.step), [1, 2]);
  assert.is(last.rows[1].loss, 42);
  // cut back in place (shorter)
  fs.truncateSync(file, Buffer.byteLength(row(1)));
  tail.poll();
  assert.ok(got[got.length - 1].reset);
  assert.equal(got[got.length - 1].rows.map((r) => r.step), [1]);
  tail.close();
});

test('downsampling: bounded rows, steps in order, every spike and the minimum kept', () => {
  const ds = new MinMaxDownsampler(500);
  const n = 200_003;
  for (let s = 1; s <= n; s++) ds.add({ step: s, time: 'x', loss: s === 123_457 ? 1e6 : s === 77_777 ? -5 : Math.sin(s / 1000), lr: 1e-3 });
  const rows = ds.rows();
  assert.ok(rows.length <= 4 * 500 && rows.length >= 2 * 500, `${rows.length} rows`);
  const steps = rows.map((r) => r.step as number);
  assert.ok(steps.every((s, i) => i === 0 || s >= steps[i - 1]), 'steps in order');
  assert.is(steps[0], 1);
  assert.is(steps[steps.length - 1], n);
  const losses = rows.map((r) => r.loss as number);
  assert.is(Math.max(...losses), 1e6, 'the single-step spike survives');
  assert.is(Math.min(...losses), -5, 'the single-step dip survives');
  assert.ok(rows.every((r) => r.time === undefined || rows.length === n), 'no strings in downsampled rows');
  const few = new MinMaxDownsampler(500);
  for (let s = 1; s <= 10; s++) few.add({ step: s, loss: s, time: 't' });
  assert.equal(few.rows().map((r) => r.step), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 'short series as they are');
  assert.is(few.rows()[0].time, 't');
});

test('runs: discovery at any depth, skipping non-runs and symbolic links; status from lock, status.json, files', () => {
  const root = tmp();
  const outside = tmp();
  const mk = (rel: string, files: Record<string, string>) => {
    const dir = path.join(root, rel);
    fs.mkdirSync(dir, { recursive: true });
    for (const [name, body] of Object.entries(files)) {
      fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
      fs.writeFileSync(path.join(dir, name), body);
    }
    return dir;
  };
  const live = mk('a/live', { 'metrics.jsonl': row(1) + row(2), 'run.lock': JSON.stringify({ pid: process.pid, host: os.hostname(), started: 'then', command: 'x pipelines/refine.ts' }) });
  writeRunStatus(live, { state: 'running', pipeline: 'refine', totalSteps: 10 });
  const killed = mk('b/killed', { 'metrics.jsonl': row(1), 'run.lock': JSON.stringify({ pid: 2 ** 22 + 12345, host: os.hostname(), started: 'then', command: 'x pipelines/mimco.ts' }), 'checkpoint/manifest.json': '{"step":1,"files":{}}' });
  const failed = mk('c/failed', { 'metrics.jsonl': row(1) });
  writeRunStatus(failed, { state: 'running', pipeline: 'nnclr' });
  writeRunStatus(failed, { state: 'failed', message: 'step 7: not finite: loss = NaN' });
  const done = mk('ft/1%/lr-0.001/seed-0', { 'metrics.jsonl': row(1) + row(2), 'result.json': JSON.stringify({ curve: [{ step: 2, epoch: 1, val: 0.25 }] }) });
  mk('ft', { 'flags.json': JSON.stringify({ 'label-share': '1%' }) });
  const half = mk('half', { 'metrics.jsonl': row(1) + '{"step":2,"ti', 'status.json': '{"state": "runn' });
  mk('notarun/deeper', { 'notes.txt': 'hello' });
  mk('tmponly', { 'checkpoint.tmp/state.safetensors': 'partial' });
  fs.symlinkSync(outside, path.join(root, 'escape'));
  fs.writeFileSync(path.join(outside, 'metrics.jsonl'), row(1));

  const ids = findRuns(root);
  assert.equal([...ids].sort(), ['a/live', 'b/killed', 'c/failed', 'ft/1%/lr-0.001/seed-0', 'half', 'tmponly']);
  assert.equal(findRuns(live), ['.'], 'the runs folder itself as a run (--view serves the run folder)');
  const s = (dir: string, id: string) => runSummary(dir, id);
  const l = s(live, 'a/live');
  assert.is(l.status, 'running');
  assert.is(l.pipeline, 'refine');
  assert.is(l.step, 2);
  assert.is(l.totalSteps, 10);
  assert.is(l.stepsPerSecond, 1, 'one step a second (the rows are a second apart)');
  assert.is(l.etaSeconds, 8);
  const k = s(killed, 'b/killed');
  assert.is(k.status, 'stopped');
  assert.match(k.message!, /ended without saying how/);
  assert.is(k.pipeline, 'mimco');
  assert.is(k.resume, `npx ts-node pipelines/mimco.ts --resume ${killed}`);
  const f = s(failed, 'c/failed');
  assert.is(f.status, 'failed');
  assert.is(f.pipeline, 'nnclr', 'kept from the start');
  assert.is(f.message, 'step 7: not finite: loss = NaN');
  const d = runDetail(done, 'ft/1%/lr-0.001/seed-0', root);
  assert.is(d.status, 'finished');
  // the fine-tuning sweep's lock and status.json speak for its seeds' runs
  const sweep = path.join(root, 'ft');
  const next = mk('ft/1%/lr-0.001/seed-1', { 'metrics.jsonl': row(1), 'checkpoint/manifest.json': '{"step":1,"files":{}}' });
  fs.writeFileSync(path.join(sweep, 'run.lock'), JSON.stringify({ pid: process.pid, host: os.hostname(), started: 'then', command: 'x pipelines/finetune.ts' }));
  writeRunStatus(sweep, { state: 'running', pipeline: 'finetune', backend: 'wasm' });
  const seed1 = runSummary(next, 'ft/1%/lr-0.001/seed-1', root);
  assert.equal([seed1.status, seed1.pipeline, seed1.backend], ['running', 'finetune', 'wasm']);
  assert.is(runSummary(done, 'ft/1%/lr-0.001/seed-0', root).status, 'finished', 'a seed with its result is finished while the sweep runs');
  fs.rmSync(path.join(sweep, 'run.lock'));
  writeRunStatus(sweep, { state: 'stopped', resume: `npx ts-node pipelines/finetune.ts --resume ${sweep}` });
  assert.equal([runSummary(next, 'x', root).status, runSummary(next, 'x', root).resume], ['stopped', `npx ts-node pipelines/finetune.ts --resume ${sweep}`]);
  assert.is(runSummary(next, 'x').status, 'stopped', 'without the runs folder: its own files only');
  assert.equal(d.valCurve, [{ step: 2, epoch: 1, val: 0.25 }]);
  assert.equal(d.flags, { 'label-share': '1%' }, 'flags.json of the sweep above');
  const h = s(half, 'half');
  assert.is(h.step, 1, 'the cut-off row is not counted');
  assert.is(h.problems.length, 2, h.problems.join('; '));
  assert.is(s(path.join(root, 'tmponly'), 'tmponly').status, 'unknown');
});

test('runs: per-block kNN during (knn-during.json) and before/after (summary.json) as the pipelines write them; unreadable ones said so', () => {
  const dir = tmp();
  fs.writeFileSync(path.join(dir, 'metrics.jsonl'), row(1));
  const report = (label: string, top1: number[]) => ({ label, blocks: [4, 5], top1, val: { source: 'val', count: 10, top1: top1.map((t) => t - 0.01) }, lastBlock: 5, last: top1[1] });
  fs.writeFileSync(path.join(dir, 'knn-during.json'), JSON.stringify({ points: [{ step: 0, report: report('MIM checkpoint', [0.3, 0.35]) }, { step: 10, report: report('refined (EMA), step 10', [0.32, 0.4]) }] }));
  fs.writeFileSync(path.join(dir, 'summary.json'), JSON.stringify({ lastBlockGain: 0.05, knn: [report('MIM checkpoint', [0.3, 0.35]), report('refined (EMA)', [0.33, 0.41])] }));
  const d = runDetail(dir, 'r', dir);
  assert.equal(d.knnDuring, [{ step: 0, blocks: [4, 5], top1: [0.3, 0.35] }, { step: 10, blocks: [4, 5], top1: [0.32, 0.4] }]);
  assert.equal(d.knnReports![0].file, 'summary.json');
  assert.equal(d.knnReports![0].reports.map((r) => [r.label, r.top1]), [['MIM checkpoint', [0.3, 0.35]], ['refined (EMA)', [0.33, 0.41]]]);
  assert.equal(d.knnReports![0].reports[1].valTop1, [0.33 - 0.01, 0.41 - 0.01]);
  assert.equal(d.files, ['knn-during.json', 'metrics.jsonl', 'summary.json']);
  fs.writeFileSync(path.join(dir, 'knn-during.json'), '{"points": [');
  assert.equal(runDetail(dir, 'r', dir).problems, ['knn-during.json is unreadable']);
});

test('status.json: merged writes; a new invocation starts clean; foreign content is no status', () => {
  const dir = tmp();
  const a = writeRunStatus(dir, { state: 'running', pipeline: 'refine', backend: 'wasm', ranks: 1, totalSteps: 5 });
  assert.is(a.pid, process.pid);
  const b = writeRunStatus(dir, { state: 'stopped', resume: 'npx ts-node pipelines/refine.ts --resume x' });
  assert.is(b.started, a.started);
  assert.is(b.backend, 'wasm');
  const c = writeRunStatus(dir, { state: 'running' });
  assert.is(c.resume, undefined, 'the previous end is dropped');
  assert.is(c.totalSteps, 5);
  assert.equal(readRunStatus(dir), c);
  fs.writeFileSync(path.join(dir, 'status.json'), '{"state":"exploded"}');
  assert.is(readRunStatus(dir), undefined);
});

test('memory sink: one row per record at most every everyMs, in MB, cut back on resume', async () => {
  const dir = tmp();
  const rec = (step: number) => ({ step, epoch: 0, lr: 0, values: {}, images: 8, stepMs: 1, waitMs: 0 });
  const sink = memorySink(dir, { everyMs: 0 });
  [1, 2, 3].forEach((s) => sink.next(rec(s)));
  sink.complete();
  const rows = fs.readFileSync(path.join(dir, 'memory.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(rows.map((r) => r.step), [1, 2, 3]);
  assert.ok(rows.every((r) => r.rss_mb > 10 && r.rss_mb < os.totalmem() / 2 ** 20 && r.heap_used_mb > 0 && r.tensors >= 0), JSON.stringify(rows[0]));
  const resumed = memorySink(dir, { everyMs: 60_000, resumedAtStep: 2 });
  [3, 4, 5].forEach((s) => resumed.next(rec(s)));
  resumed.complete();
  const after = fs.readFileSync(path.join(dir, 'memory.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).step);
  assert.equal(after, [1, 2, 3], 'rows after step 2 dropped, then one row in the minute');
});

/** A raw GET (the path exactly as given: node's client does not normalise it). */
function get(port: number, rawPath: string, headers: Record<string, string> = {}, method = 'GET'): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: rawPath, method, headers: { host: `127.0.0.1:${port}`, ...headers } }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, body, headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('server: only files below the runs folder; traversal, encoded separators, symbolic links out and writes refused', async () => {
  const root = tmp();
  const outside = tmp();
  fs.writeFileSync(path.join(outside, 'secret.json'), '{"secret": "outside the runs folder"}');
  fs.mkdirSync(path.join(root, 'run'));
  fs.writeFileSync(path.join(root, 'run', 'metrics.jsonl'), row(1));
  fs.writeFileSync(path.join(root, 'run', 'summary.json'), '{"ok": true}');
  fs.symlinkSync(outside, path.join(root, 'escape'));
  fs.symlinkSync(path.join(outside, 'secret.json'), path.join(root, 'run', 'link.json'));
  const server = await serveRunsHere({ runsDir: root, port: 0, log: () => {} });
  const port = Number(new URL(server.url).port);
  try {
    assert.is(new URL(server.url).hostname, '127.0.0.1');
    const ok = await get(port, '/files/run/summary.json');
    assert.is(ok.status, 200);
    assert.is(ok.body, '{"ok": true}');
    const refused = [
      '/files/../' + path.relative('/', outside) + '/secret.json',
      '/files/run/../../' + path.basename(outside) + '/secret.json',
      '/files/%2e%2e/%2e%2e' + outside + '/secret.json',
      '/files/run/%2e%2e%2f%2e%2e%2f' + encodeURIComponent(outside.slice(1)) + '%2fsecret.json',
      '/files/%2F' + encodeURIComponent(outside.slice(1)) + '/secret.json',
      '/files/' + outside + '/secret.json',
      '/files//' + outside + '/secret.json',
      '/files/run/..%5c..%5csecret.json',
      '/files/escape/secret.json',
      '/files/run/link.json',
      '/files/run/%00secret.json',
      '/api/run?id=' + encodeURIComponent('../' + path.basename(outside)),
      '/api/run?id=' + encodeURIComponent(outside),
      '/api/stream?id=escape',
      '/api/stream?id=run%2F..%2F..',
    ];
    for (const p of refused) {
      const r = await get(port, p);
      assert.ok(r.status >= 400 && r.status < 500, `${p}: ${r.status}`);
      assert.not.match(r.body, /outside the runs folder"/, `${p} leaked the file`);
    }
    assert.is((await get(port, '/files/escape/secret.json')).status, 403, 'a link out is refused as such');
    assert.is((await get(port, '/files/run/metrics.jsonl', {}, 'POST')).status, 405);
    assert.is((await get(port, '/api/runs', {}, 'DELETE')).status, 405);
    assert.is((await get(port, '/api/runs', { host: 'attacker.example' })).status, 403, 'DNS rebinding: a foreign Host is refused');
    assert.is((await get(port, '/api/runs', { host: `localhost:${port}` })).status, 200);
    const runs = JSON.parse((await get(port, '/api/runs')).body);
    assert.equal(runs.runs.map((r: { id: string }) => r.id), ['run'], 'the linked folder is not listed');
  } finally {
    await server.close();
  }
});

test('server: beyond loopback every request needs the token (query once, then the cookie)', async () => {
  const root = tmp();
  const server = await serveRunsHere({ runsDir: root, port: 0, host: '0.0.0.0', log: () => {} });
  try {
    const url = new URL(server.url);
    const token = url.searchParams.get('token')!;
    assert.match(token, /^[0-9a-f]{48}$/);
    const port = Number(url.port);
    assert.is((await get(port, '/')).status, 403);
    assert.is((await get(port, '/api/runs')).status, 403);
    assert.is((await get(port, '/api/runs?token=' + 'a'.repeat(48))).status, 403);
    const first = await get(port, `/?token=${token}`);
    assert.is(first.status, 302, 'the token leaves the address bar');
    const cookie = String(first.headers['set-cookie']).split(';')[0];
    assert.match(cookie, new RegExp(`^mimview_token_${port}=${token}$`));
    assert.is((await get(port, '/', { cookie })).status, 200);
    assert.is((await get(port, '/api/runs', { cookie })).status, 200);
    assert.is((await get(port, '/api/runs', { host: 'anything.example', cookie })).status, 200, 'beyond loopback the token, not the Host, decides');
  } finally {
    await server.close();
  }
});

test('server: a row appended reaches the event stream within 2 s; a cut-back file is sent again whole', async () => {
  const root = tmp();
  const dir = path.join(root, 'run');
  fs.mkdirSync(dir);
  const file = path.join(dir, 'metrics.jsonl');
  fs.writeFileSync(file, row(1) + row(2));
  const server = await serveRunsHere({ runsDir: root, port: 0, log: () => {} });
  const port = Number(new URL(server.url).port);
  const events: { name: string; data: { kind?: string; file?: string; rows?: JsonRow[]; status?: string }; at: number }[] = [];
  const req = http.get({ host: '127.0.0.1', port, path: '/api/stream?id=run' });
  try {
    await new Promise<void>((resolve) => {
      req.on('response', (res) => {
        let buf = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          buf += chunk;
          let end;
          while ((end = buf.indexOf('\n\n')) >= 0) {
            const block = buf.slice(0, end);
            buf = buf.slice(end + 2);
            const name = block.match(/^event: (.*)$/m)?.[1];
            const data = block.match(/^data: (.*)$/m)?.[1];
            if (name && data) events.push({ name, data: JSON.parse(data), at: performance.now() });
          }
        });
        resolve();
      });
    });
    const waitFor = async (pred: () => boolean, ms: number) => {
      const t0 = performance.now();
      while (!pred() && performance.now() - t0 < ms) await new Promise((r) => setTimeout(r, 10));
      return pred();
    };
    const metrics = () => events.filter((e) => e.name === 'metrics' && e.data.file === 'metrics');
    assert.ok(await waitFor(() => metrics().length >= 1, 2000));
    assert.is(metrics()[0].data.kind, 'snapshot');
    assert.equal(metrics()[0].data.rows!.map((r) => r.step), [1, 2]);
    assert.ok(events.some((e) => e.name === 'detail' && e.data.status === 'unknown'));
    // appended: a row, then half a row (held back), then its end
    const t0 = performance.now();
    fs.appendFileSync(file, row(3) + '{"step":4,');
    assert.ok(await waitFor(() => metrics().length >= 2, 2000), 'the appended row within 2 s');
    assert.ok(metrics()[1].at - t0 < 2000, `${metrics()[1].at - t0} ms`);
    assert.equal(metrics()[1].data.rows!.map((r) => r.step), [3]);
    fs.appendFileSync(file, '"time":"2026-01-01T00:00:04.000Z","loss":1}\n');
    assert.ok(await waitFor(() => metrics().length >= 3, 2000));
    assert.equal(metrics()[2].data.rows!.map((r) => r.step), [4]);
    // a resume cuts the file back: the stream starts again with a snapshot
    fs.writeFileSync(`${file}.tmp`, row(1));
    fs.renameSync(`${file}.tmp`, file);
    assert.ok(await waitFor(() => metrics().length >= 4, 2000));
    assert.is(metrics()[3].data.kind, 'snapshot');
    assert.equal(metrics()[3].data.rows!.map((r) => r.step), [1]);
  } finally {
    req.destroy();
    await server.close();
  }
});

test('serveRuns: the server on its own thread lists the runs, answers while this thread is busy, refuses a taken port, closes', async () => {
  const root = tmp();
  fs.mkdirSync(path.join(root, 'run'));
  fs.writeFileSync(path.join(root, 'run', 'metrics.jsonl'), row(1));
  const lines: string[] = [];
  const server = await serveRuns({ runsDir: root, port: 0, log: (l) => lines.push(l) });
  const port = Number(new URL(server.url).port);
  try {
    assert.match(lines.join('\n'), /dashboard at http:\/\/127\.0\.0\.1:\d+\//);
    // a request answered while this thread is held, as by a training step
    const answer = get(port, '/api/runs');
    const until = performance.now() + 300;
    while (performance.now() < until);
    assert.equal(JSON.parse((await answer).body).runs.map((r: { id: string }) => r.id), ['run']);
    await serveRuns({ runsDir: root, port, log: () => {} }).then(
      () => assert.unreachable('a second server on a taken port'),
      (err: Error) => assert.match(err.message, new RegExp(`--port ${port}: 127\\.0\\.0\\.1:${port} is in use`)),
    );
  } finally {
    await server.close();
  }
  await get(port, '/api/runs').then(
    () => assert.unreachable('still answering after close'),
    (err: NodeJS.ErrnoException) => assert.is(err.code, 'ECONNREFUSED'),
  );
});

test.run();

/**
 * What the live dashboard costs a training run: refine runs in this process, alternately with
 * the dashboard open (serveRuns on its own thread, as a pipeline's --view starts it, and a
 * chromium page on the run, drawing every row as it comes) and without it, in the order
 * open, closed, closed, open, ... so a drift of the machine's load hits both alike. Compares the
 * median images/s of each run's steps after the first `--warmup` (metrics.jsonl's
 * images_per_s) and prints the medians over the runs of each kind and their difference, with
 * the CPU time this process and (page open) the browser's processes used during each run (the
 * browser's from the page's first load on): on a machine shared with other work, images/s
 * drifts with the load, the CPU time does not.
 *
 *   npx ts-node bench/view-cost.ts --pairs 2 --steps 40 [--screenshot docs/dashboard.png]
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { chromium } from 'playwright-core';
import { num, parseFlags } from '../runtime/cli';
import { refine } from '../pipelines/refine';
import { serveRuns } from '../view/server';
import { writeRunStatus } from '../runtime/run-status';

const FLAGS = {
  pairs: { description: 'pairs of runs (one open, one closed each)', default: '2' },
  steps: { description: 'steps of each run (stage 2: a fifth, stage 3: the rest)', default: '40' },
  batch: { description: 'batch of each run', default: '8' },
  warmup: { description: 'first steps of each run left out of its median', default: '5' },
  screenshot: { description: 'save a picture of the page over all the runs here at the end' },
  chromium: { description: 'the browser', default: '/usr/bin/chromium' },
} as const;

const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

async function main(): Promise<void> {
  const f = parseFlags('Cost of the live dashboard to a refine run.\n  npx ts-node bench/view-cost.ts [options]', FLAGS);
  const pairs = num('pairs', f.pairs, { integer: true, min: 1 });
  const steps = num('steps', f.steps, { integer: true, min: 10 });
  const batch = num('batch', f.batch, { integer: true, min: 2 });
  const warmup = num('warmup', f.warmup, { integer: true, min: 0, max: steps - 2 });
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'mimref-view-cost-'));
  const runsDir = path.join(root, 'runs');
  fs.mkdirSync(runsDir);
  // 10,000 bundled training images: steps per epoch = floor(10000 / batch)
  const perEpoch = Math.floor(10_000 / batch);
  const stage2 = Math.max(1, Math.round(steps / 5));
  const argv = (out: string) => [
    '--out', out, '--batch', String(batch), '--skip-knn',
    '--stage2-epochs', String(stage2 / perEpoch), '--stage3-epochs', String((steps - stage2) / perEpoch),
  ];
  const order = Array.from({ length: pairs }, (_, i) => (i % 2 === 0 ? ['open', 'closed'] : ['closed', 'open'])).flat() as ('open' | 'closed')[];
  const results: { kind: 'open' | 'closed'; run: string; imagesPerS: number; rows: number; wallS: number; processCpuS: number; browserCpuS: number }[] = [];
  for (const [i, kind] of order.entries()) {
    const run = `${i + 1}-${kind}`;
    const out = path.join(runsDir, run);
    let close = async () => {};
    let browserCpuS = 0;
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    if (kind === 'open') {
      const server = await serveRuns({ runsDir, port: 0, log: () => {} });
      const context = await chromium.launchPersistentContext(fs.mkdtempSync(path.join(root, 'profile-')), { executablePath: f.chromium, headless: true, args: ARGS, viewport: { width: 1500, height: 1000 } });
      const page = context.pages()[0] ?? (await context.newPage());
      await page.goto(`${server.url}#run=${encodeURIComponent(run)}`);
      await page.waitForSelector('#run-list');
      // the browser's start and the page's first load are not the run's cost
      const atStart = descendantsCpuSeconds(/chrom/);
      close = async () => {
        browserCpuS = descendantsCpuSeconds(/chrom/) - atStart;
        await context.close();
        await server.close();
      };
    }
    try {
      await refine(argv(out));
      writeRunStatus(out, { state: 'finished', pipeline: 'refine' });
    } finally {
      await close();
    }
    const wallS = (performance.now() - t0) / 1000;
    const used = process.cpuUsage(cpu0);
    const processCpuS = (used.user + used.system) / 1e6;
    const rows = fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { step: number; images_per_s: number });
    const imagesPerS = median(rows.filter((r) => r.step > warmup).map((r) => r.images_per_s));
    results.push({ kind, run, imagesPerS, rows: rows.length, wallS, processCpuS, browserCpuS });
    console.log(
      `[view-cost] run ${run}: ${rows.length} steps, median ${imagesPerS.toFixed(3)} images/s (steps ${warmup + 1}..${rows.length}); ${wallS.toFixed(1)} s, ` +
        `CPU: this process ${processCpuS.toFixed(1)} s${kind === 'open' ? `, the browser ${browserCpuS.toFixed(1)} s (${((100 * browserCpuS) / wallS).toFixed(1)}% of one core)` : ''}`,
    );
  }
  const open = median(results.filter((r) => r.kind === 'open').map((r) => r.imagesPerS));
  const closed = median(results.filter((r) => r.kind === 'closed').map((r) => r.imagesPerS));
  console.log(JSON.stringify({ machine: `${os.cpus().length} x ${os.cpus()[0]?.model}, load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`, batch, steps, results, open, closed, difference: (open - closed) / closed }, null, 1));
  console.log(`[view-cost] page open ${open.toFixed(3)} images/s, closed ${closed.toFixed(3)}: ${((100 * (open - closed)) / closed).toFixed(2)}%`);

  if (f.screenshot) {
    const server = await serveRuns({ runsDir, port: 0, log: () => {} });
    const context = await chromium.launchPersistentContext(fs.mkdtempSync(path.join(root, 'profile-')), { executablePath: f.chromium, headless: true, args: ARGS, viewport: { width: 1500, height: 1000 } });
    const page = context.pages()[0] ?? (await context.newPage());
    const first = results[0].run;
    await page.goto(`${server.url}#run=${encodeURIComponent(first)}&also=${results.slice(1).map((r) => encodeURIComponent(r.run)).join(',')}`);
    await page.waitForSelector('[data-panel="loss"] canvas');
    await page.waitForTimeout(1500);
    await page.screenshot({ path: f.screenshot, fullPage: true });
    await context.close();
    await server.close();
    console.log(`[view-cost] wrote ${f.screenshot}`);
  }
  fs.rmSync(root, { recursive: true, force: true });
}

/**
 * CPU seconds (user + system, reaped children included) of this process's descendants whose
 * name matches: the browser's processes (Linux /proc; 0 elsewhere).
 */
function descendantsCpuSeconds(name: RegExp): number {
  const tick = 100; // USER_HZ, 100 on Linux
  const procs = new Map<number, { ppid: number; comm: string; ticks: number }>();
  let entries: string[] = [];
  try {
    entries = fs.readdirSync('/proc').filter((e) => /^\d+$/.test(e));
  } catch {
    return 0;
  }
  for (const e of entries) {
    try {
      const stat = fs.readFileSync(`/proc/${e}/stat`, 'utf8');
      const close = stat.lastIndexOf(')');
      const comm = stat.slice(stat.indexOf('(') + 1, close);
      const f = stat.slice(close + 2).split(' ');
      // fields after the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
      procs.set(Number(e), { ppid: Number(f[1]), comm, ticks: Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]) });
    } catch {
      // gone meanwhile
    }
  }
  const isDescendant = (pid: number): boolean => {
    for (let p = procs.get(pid)?.ppid, hops = 0; p !== undefined && p > 1 && hops < 64; p = procs.get(p)?.ppid, hops++) if (p === process.pid) return true;
    return false;
  };
  let ticks = 0;
  for (const [pid, p] of procs) if (name.test(p.comm) && isDescendant(pid)) ticks += p.ticks;
  return ticks / tick;
}

main().then(
  () => process.exit(0),
  (err: Error) => {
    console.error(`error: ${err.message}`);
    process.exit(1);
  },
);

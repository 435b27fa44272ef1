/**
 * The dashboard in a real browser (Debian's chromium, driven by playwright-core): a short real
 * refine run writes its metrics while the page is open; the page must show the run, its loss
 * curve gaining points while the run goes, every row of metrics.jsonl by the end, the status
 * turning to finished, an overlaid second run, and no console error; the server refuses
 * traversal over HTTP. VIEW_SCREENSHOT=docs/dashboard.png also saves the page's picture.
 * Skipped, saying so, where /usr/bin/chromium is missing (.ci/run installs it).
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { chromium, BrowserContext, Page } from 'playwright-core';
import { refine } from '../pipelines/refine';
import { serveRuns, RunsServer } from '../view/server';

const CHROMIUM = '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** The page's DOM, as far as these checks use it (this project compiles without the DOM's types). */
declare const document: { body: { dataset: Record<string, string | undefined> }; querySelector(selector: string): { textContent: string | null; getAttribute(name: string): string | null } | null };
declare const window: { pointsSeen?: { at: number; points: number }[] };
// browser-side checks: functions (the page's CSP forbids evaluating strings)
const pointsOf = (panel: string) => Number(document.querySelector(`[data-panel="${panel}"]`)?.getAttribute('data-points') ?? 0);
const statusIs = (status: string) => document.querySelector('#run-status')?.textContent === status;
const legendHas = (text: string) => (document.querySelector('[data-panel="loss"] .u-legend')?.textContent ?? '').includes(text);
const points = (page: Page, panel: string) => page.evaluate(pointsOf, panel);

function get(port: number, rawPath: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: rawPath }, (res) => {
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode!, body }));
      })
      .on('error', reject);
  });
}

test('a live refine run in the browser: curves grow while it runs, status turns finished, no console errors', async () => {
  if (!fs.existsSync(CHROMIUM)) {
    console.log(`  [skip] ${CHROMIUM} missing: apt-get install -y chromium (.ci/run does)`);
    return;
  }
  const started = performance.now();
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'mimref-view-browser-'));
  const runsDir = path.join(root, 'runs');
  const runDir = path.join(runsDir, 'refine-live');
  fs.mkdirSync(runsDir);
  fs.writeFileSync(path.join(root, 'secret.json'), '{"secret": "outside the runs folder"}');
  let server: RunsServer | undefined;
  let context: BrowserContext | undefined;
  try {
    server = await serveRuns({ runsDir, port: 0, log: () => {} });
    context = await chromium.launchPersistentContext(fs.mkdtempSync(path.join(root, 'profile-')), { executablePath: CHROMIUM, headless: true, args: ARGS, viewport: { width: 1500, height: 1000 } });
    const page = context.pages()[0] ?? (await context.newPage());
    // the page's own record of the loss curve's point count over time (this process is held by
    // the training steps, so what it observes of the page comes late; the page's clock does not)
    await page.addInitScript(() => {
      const seen: { at: number; points: number }[] = (window.pointsSeen = []);
      setInterval(() => {
        const points = Number(document.querySelector('[data-panel="loss"]')?.getAttribute('data-points') ?? 0);
        if (points !== (seen[seen.length - 1]?.points ?? 0)) seen.push({ at: Date.now(), points });
      }, 20);
    });
    const errors: string[] = [];
    page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
    page.on('pageerror', (e) => errors.push(e.message));
    const phase = (what: string) => process.env.DEBUG && console.log(`  [view-browser] ${((performance.now() - started) / 1000).toFixed(1)} s: ${what}`);
    phase('browser up');
    await page.goto(server.url);
    await page.waitForSelector('#no-runs:not([hidden])');

    // the real run, in this process as a pipeline's --view would serve it: 1 + 23 steps of batch 8 (1250 steps an
    // epoch), stopped after 2 so that the page has it open before it goes on (the steps take both cores, and the
    // page could otherwise first see the run when it had ended); then resumed while the page watches
    const args = ['--out', runDir, '--stage2-epochs', '0.0008', '--stage3-epochs', '0.0184', '--batch', '8', '--local-views', '2', '--skip-knn', '--log-every', '1'];
    await refine([...args, '--max-steps', '2']);
    phase('run stopped at step 2');
    await page.click('td.run-name[title="refine-live"]', { timeout: 40_000 });
    await page.waitForFunction(statusIs, 'stopped', { timeout: 20_000 });
    const run = refine(['--resume', runDir]);
    run.catch(() => {});
    phase('run resumed');
    await page.waitForFunction(statusIs, 'running', { timeout: 20_000 });
    await run;
    phase('run finished');
    const rowTimes = fs.readFileSync(path.join(runDir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => Date.parse(JSON.parse(l).time));
    const seen = (await page.evaluate(() => window.pointsSeen)) ?? [];
    // a part of the curve beyond the stopped run's 2 rows drawn before the last row existed: the page grew while
    // the run went (how many updates it took depends on how the 2 cores share their time, so that is not asked)
    const whileRunning = seen.filter((s) => s.at < rowTimes[rowTimes.length - 1] && s.points > 2 && s.points < rowTimes.length);
    assert.ok(whileRunning.length >= 1, `the loss curve gained points while the run wrote rows: ${JSON.stringify(seen)}, rows written at ${JSON.stringify(rowTimes)}`);
    phase(`points drawn before the last row was written: ${whileRunning.map((s) => s.points).join(', ')}`);
    await page.waitForFunction(statusIs, 'finished', { timeout: 5000 });
    const rows = fs.readFileSync(path.join(runDir, 'metrics.jsonl'), 'utf8').trim().split('\n').length;
    assert.is(rows, 24, 'the run wrote 24 rows');
    await page.waitForFunction((n) => Number(document.querySelector('[data-panel="loss"]')?.getAttribute('data-points')) === n, rows, { timeout: 3000 });
    // rows appended while the page was open reached it within 2 s of their writing (the row's own time)
    const lagMs = await page.evaluate(() => Number(document.body.dataset.maxRowLagMs));
    assert.ok(lagMs >= 0 && lagMs < 2000, `a row reached the page ${lagMs} ms after it was written`);
    phase(`rows reached the page at most ${lagMs} ms after their writing`);
    for (const panel of ['head-loss', 'nn-acc', 'nn-sim', 'lr', 'images-per-s', 'data-wait', 'grad-norm']) assert.is(await points(page, panel), rows, `panel ${panel}`);
    const legend = await page.locator('[data-panel="loss"] .u-legend').innerText();
    assert.match(legend, /loss_global/);
    assert.match(legend, /loss_local/);

    // overlay: a second run ticked in the list draws beside the first
    fs.cpSync(runDir, path.join(runsDir, 'refine-copy'), { recursive: true });
    await page.check('tr[data-run="refine-copy"] input[type=checkbox]', { timeout: 5000 });
    await page.waitForFunction(legendHas, 'refine-copy: loss', { timeout: 5000 });
    assert.match(await page.locator('[data-panel="loss"] .u-legend').innerText(), /refine-live: loss/);

    if (process.env.VIEW_SCREENSHOT) {
      await page.uncheck('tr[data-run="refine-copy"] input[type=checkbox]');
      await page.waitForTimeout(500);
      await page.screenshot({ path: process.env.VIEW_SCREENSHOT, fullPage: true });
    }

    phase('overlay drawn');
    // traversal over HTTP: never a file outside the runs folder
    const port = Number(new URL(server.url).port);
    assert.is((await get(port, '/files/refine-live/loss.png')).status, 200);
    for (const p of ['/files/../secret.json', '/files/%2e%2e/secret.json', '/files/refine-live/..%2f..%2fsecret.json', `/files/${root}/secret.json`, `/api/run?id=..`]) {
      const r = await get(port, p);
      assert.ok(r.status >= 400 && r.status < 500 && !r.body.includes('outside the runs folder"'), `${p}: ${r.status}`);
    }
    assert.equal(errors, [], 'console errors');
    await page.close();
  } finally {
    await context?.close();
    await server?.close();
    fs.rmSync(root, { recursive: true, force: true });
  }
  console.log(`  [view-browser] ${((performance.now() - started) / 1000).toFixed(1)} s`);
});

test.run();

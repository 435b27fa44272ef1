/**
 * pipelines/eval.ts and pipelines/knn.ts as a user runs them: the random init's evaluation is a
 * function of its seed, and the run folder's config.yaml repeats it exactly; each run folder
 * holds one pipeline's results of one model (run.json), another's is refused; old flag names
 * are refused naming the new; knn's default run folder is the checkpoint's label, and its
 * per-block kNN is eval's; a tiny comparison of real reports writes its tables and a real
 * PNG/SVG chart, and files that are not reports, reports of other data and broken
 * fine-tuning summaries are refused naming the file.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { initBackend } from '../runtime/backend';
import { rejects } from './eval-helpers';
import YAML from 'yaml';
import { runEval } from '../pipelines/eval';
import { knn } from '../pipelines/knn';
import { checkpointLabel } from '../train/eval-run';
import type { EvalReport } from '../eval/report';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'eval-compare-'));
// 100 train, 60 validation and 60 test images, no feature cache: every run extracts anew
const tiny = ['--tasks', 'knn,linear,lowshot,kmeans', '--shots', '1,2', '--eval-train-limit', '100', '--eval-val-limit', '60', '--eval-test-limit', '60', '--no-cache'];
const randomInit = (seed: number, out: string) => runEval(['--checkpoint', 'none', '--preset', 'vit-micro-p4', '--seed', String(seed), ...tiny, '--out', path.join(dir, out)]);
const report = (out: string): EvalReport => JSON.parse(fs.readFileSync(path.join(dir, out, 'report.json'), 'utf8'));
/** The report without its wall-clock times. */
const numbers = (r: EvalReport) => ({ ...r, seconds: undefined });
const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

test.before(async () => {
  await initBackend(() => {});
});

test.after(() => fs.rmSync(dir, { recursive: true, force: true }));

test('random init (--checkpoint none): the same seed gives the same report, another seed another; config.yaml repeats the run', async () => {
  await randomInit(1, 's1');
  // the run folder's config.yaml holds the resolved flags: --config repeats the run elsewhere
  const config = YAML.parse(fs.readFileSync(path.join(dir, 's1', 'config.yaml'), 'utf8'));
  assert.equal([config.checkpoint, config.preset, config.seed, config['eval-val-limit'], config.out], ['none', 'vit-micro-p4', '1', '60', path.join(dir, 's1')]);
  await runEval(['--config', path.join(dir, 's1', 'config.yaml'), '--out', path.join(dir, 's1-again')]);
  await randomInit(2, 's2');
  const [a, again, b] = [report('s1'), report('s1-again'), report('s2')];
  assert.is(a.label, 'random init (vit-micro-p4)');
  assert.is(a.model, 'random-init:vit-micro-p4:1');
  assert.is(a.seed, 1);
  assert.equal(a.blocks, [0, 1, 2, 3, 4, 5]);
  assert.equal(numbers(again), numbers(a));
  assert.not.equal(b.knn!.top1, a.knn!.top1);
  assert.not.equal(b.lowShot!.results.map((r) => r.accuracies), a.lowShot!.results.map((r) => r.accuracies));
});

test('run.json names the pipeline and the model: a folder of another model or pipeline is refused before any work', async () => {
  const run = JSON.parse(fs.readFileSync(path.join(dir, 's1', 'run.json'), 'utf8'));
  assert.equal([run.pipeline, run.model, run.label], ['eval', 'random init of vit-micro-p4, seed 1', 'random init (vit-micro-p4)']);
  const t0 = performance.now();
  await rejects(() => randomInit(2, 's1'), /--out .*s1 holds the eval results of random init of vit-micro-p4, seed 1, not of random init of vit-micro-p4, seed 2/);
  await rejects(() => knn(['--checkpoint', 'none', '--preset', 'vit-micro-p4', '--out', path.join(dir, 's1')]), /--out .*s1 holds a run of another pipeline \(eval, says its run\.json\), not of knn/);
  assert.ok(performance.now() - t0 < 5000, 'refused after work');
  assert.equal(fs.readdirSync(path.join(dir, 's1')).sort(), ['config.yaml', 'per-block.png', 'per-block.svg', 'report.json', 'report.md', 'run.json']);
});

test('old flag names are refused naming the new; --checkpoint none needs --preset; a refused run writes nothing', async () => {
  await rejects(() => runEval(['--train-limit', '5']), /--train-limit was renamed: use --eval-train-limit/);
  await rejects(() => runEval(['--val-limit', '5']), /--val-limit was renamed: use --eval-val-limit \(0: all\)/);
  await rejects(() => runEval(['--random-init']), /--random-init was renamed: use --checkpoint none/);
  await rejects(() => knn(['--k', '5']), /--k was renamed: use --knn-k/);
  await rejects(() => knn(['--temperature', '0.1']), /--temperature was renamed: use --knn-temperature/);
  await rejects(() => knn(['--standardise', 'off']), /--standardise was renamed: use --knn-standardise/);
  await rejects(() => knn(['--checkpoint', 'none']), /--checkpoint none: pass --preset/);
  await rejects(() => knn(['--checkpoint', path.join(dir, 'missing.safetensors')]), /--checkpoint .*missing\.safetensors: no such file/);
  // a flag checked against the loaded model: refused before the run folder is made
  await rejects(() => runEval(['--checkpoint', 'none', '--preset', 'vit-micro-p4', '--blocks', '99', '--out', path.join(dir, 'b99')]), /--blocks: block 99 does not exist/);
  assert.not.ok(fs.existsSync(path.join(dir, 'b99')), 'a refused run made its folder');
});

test("knn: the run folder defaults to runs/knn/<label>(-s<seed> for a random init); its per-block kNN is eval's", async () => {
  const root = process.cwd();
  const abs = (p: string) => path.join(root, p);
  const limits = ['--eval-train-limit', '100', '--eval-val-limit', '60', '--eval-test-limit', '60'];
  const cwd = path.join(dir, 'knn-cwd');
  fs.mkdirSync(cwd);
  process.chdir(cwd); // runs/ and the feature cache land in the temp dir
  let out: string;
  try {
    const data = ['--train', abs('data/cifar10-mini/train-*.tar.gz'), '--test', abs('data/cifar10-mini/test-*.tar.gz')];
    out = await knn(['--checkpoint', 'none', '--preset', 'vit-micro-p4', '--seed', '1', ...data, ...limits]);
    assert.is(out, path.join('runs', 'knn', 'random-init-vit-micro-p4-s1'));
    out = path.join(cwd, out);
  } finally {
    process.chdir(root);
  }
  const r = JSON.parse(fs.readFileSync(path.join(out, 'knn.json'), 'utf8')).knn[0];
  assert.equal([r.trainCount, r.val.count, r.testCount], [100, 60, 60]);
  // the same model, data and kNN rule as eval's s1 run: the same per-block kNN
  const e = report('s1');
  assert.equal([r.top1, r.val.top1], [e.knn!.top1, e.knn!.val]);
  assert.is(JSON.parse(fs.readFileSync(path.join(out, 'run.json'), 'utf8')).pipeline, 'knn');
  assert.is(checkpointLabel('checkpoints/mae-vit-micro-p4/encoder.safetensors'), 'mae-vit-micro-p4');
  assert.is(checkpointLabel('runs/refine-s1/checkpoint/encoder-ema.safetensors'), 'refine-s1 encoder-ema');
  assert.is(checkpointLabel('runs/mae/checkpoint.step-40/encoder.safetensors'), 'mae step-40');
});

test('--compare: one row per label (runs of a label as mean ± std), fine-tuning where given, the table and a real chart', async () => {
  // a second "model": the seed-1 report under another label, with a fine-tuning summary
  fs.writeFileSync(path.join(dir, 'b.json'), JSON.stringify({ ...report('s1'), label: 'model B', seed: undefined }));
  // pipelines/finetune.ts's summary.json, the part a comparison reads
  const summary = { kind: 'finetune', label: 'model B', test: report('s1').test, results: [{ share: '10%', seeds: [0, 1], val: [0.5, 0.52], test: [0.48, 0.5] }] };
  fs.writeFileSync(path.join(dir, 'ft.json'), JSON.stringify(summary));
  const out = await runEval(['--compare', [path.join(dir, 's1', 'report.json'), path.join(dir, 's2', 'report.json'), path.join(dir, 'b.json')].join(','), '--finetune-summaries', `model B=${path.join(dir, 'ft.json')}`, '--finetune-dir', 'none', '--out', path.join(dir, 'cmp')]);
  const md = fs.readFileSync(path.join(out, 'compare.md'), 'utf8');
  const [a, b] = [report('s1'), report('s2')];
  const pct = (v: number) => (100 * v).toFixed(1);
  const meanStd = (x: number, y: number) => `${pct((x + y) / 2)} ± ${pct(Math.abs(x - y) / 2)}`;
  const header = md.split('\n').find((l) => l.startsWith('| model | seeds |'))!;
  for (const column of ['kNN val', 'kNN test', 'linear val', 'linear test', '1-shot', '2-shot', 'NMI', 'ARI', 'ACC', 'fine-tune 10% val', 'fine-tune 10% test']) assert.ok(header.includes(`| ${column} |`), `${column} missing from ${header}`);
  const row = (label: string) => md.split('\n').find((l) => l.startsWith(`| ${label} |`))!;
  assert.ok(row('random init (vit-micro-p4)').startsWith(`| random init (vit-micro-p4) | 1,2 | ${meanStd(a.knn!.val!.at(-1)!, b.knn!.val!.at(-1)!)} | ${meanStd(a.knn!.last, b.knn!.last)} |`), row('random init (vit-micro-p4)'));
  assert.ok(row('random init (vit-micro-p4)').includes('| – | – |'), 'no fine-tuning: dashes');
  assert.ok(row('model B').startsWith(`| model B | 1 run | ${pct(a.knn!.val!.at(-1)!)} | ${pct(a.knn!.last)} |`), row('model B'));
  assert.ok(row('model B').includes('| 51.0 ± 1.0 | 49.0 ± 1.0 |'), row('model B'));
  assert.ok(md.includes('The block chosen on validation') && md.includes('Measured on: train data/cifar10-mini/train-*.tar.gz (100 images)'), md);
  assert.not.ok(/best/i.test(md), 'a "best" number in the comparison');

  const png = fs.readFileSync(path.join(out, 'compare.png'));
  assert.equal(png.subarray(0, 8), PNG_SIGNATURE);
  assert.ok(png.length > 10_000, `PNG of ${png.length} bytes`);
  const meta = await sharp(png).metadata();
  assert.ok(meta.format === 'png' && meta.width! > 600 && meta.height! > 300, JSON.stringify(meta));
  const svg = fs.readFileSync(path.join(out, 'compare.svg'), 'utf8');
  for (const text of ['random init (vit-micro-p4)', 'model B', 'kNN', 'linear', '1-shot', 'NMI', 'fine-tune 10%']) assert.ok(svg.includes(`>${text}<`), `SVG lacks ${text}`);
  for (const f of ['compare.json', 'compare-per-block.png', 'compare-per-block.svg']) assert.ok(fs.existsSync(path.join(out, f)), f);
});

test('--compare refuses what is not a report, reports of other data, and broken fine-tuning summaries, naming the file', async () => {
  const good = path.join(dir, 's1', 'report.json');
  const compare = (files: string[], extra: string[] = []) => runEval(['--compare', files.join(','), ...extra, '--finetune-dir', 'none', '--out', path.join(dir, 'refused')]);
  const write = (name: string, text: string) => {
    fs.writeFileSync(path.join(dir, name), text);
    return path.join(dir, name);
  };
  await rejects(() => compare([good, write('not-json.json', 'loss 0.5\n')]), /--compare: .*not-json\.json is not an eval report: not JSON/);
  await rejects(() => compare([good, write('metrics.json', JSON.stringify({ step: 1, loss: 0.5 }))]), /--compare: .*metrics\.json is not an eval report \(written by pipelines\/eval\.ts\): no label, blocks, train, test/);
  await rejects(() => compare([good, path.join(dir, 'missing.json')]), /--compare: .*missing\.json: no such file/);
  const r = report('s1');
  const otherTest = write('other-test.json', JSON.stringify({ ...r, label: 'x', test: { source: 'data/cifar10-mini/test-*.tar.gz', count: 2000 } }));
  await rejects(() => compare([good, otherTest]), /--compare: .*other-test\.json was measured on other test images than .*s1\/report\.json: data\/cifar10-mini\/test-\*\.tar\.gz \(2000 images\) vs data\/cifar10-mini\/test-\*\.tar\.gz \(60 images\)/);
  const otherTrain = write('other-train.json', JSON.stringify({ ...r, label: 'y', train: { source: '../shared/data/cifar10/cifar10-train-*.tar', count: 100 } }));
  await rejects(() => compare([good, otherTrain]), /other-train\.json was measured on other train images/);
  const otherKnn = write('other-knn.json', JSON.stringify({ ...r, label: 'z', knn: { ...r.knn, k: 10 } }));
  await rejects(() => compare([good, otherKnn]), /other-knn\.json was measured on other kNN rule than .*: k 10, T 0\.07, standardised vs k 20/);
  const badSummary = write('bad-ft.json', JSON.stringify({ kind: 'finetune', test: r.test, results: [{ share: '10%', seeds: [0], val: [51], test: [49] }] }));
  await rejects(() => compare([good], ['--finetune-summaries', `random init (vit-micro-p4)=${badSummary}`]), /--finetune-summaries: .*bad-ft\.json is not a fine-tuning summary \(written by pipelines\/finetune\.ts\): expected .* top-1 in \[0, 1\] per seed/);
  const otherSummary = write('other-ft.json', JSON.stringify({ kind: 'finetune', test: { source: r.test.source, count: 2000 }, results: [] }));
  await rejects(() => compare([good], ['--finetune-summaries', `random init (vit-micro-p4)=${otherSummary}`]), /--finetune-summaries: .*other-ft\.json was measured on other test images than the eval reports: .* \(2000 images\) vs .* \(60 images\)/);
  await rejects(() => compare([good], ['--finetune-summaries', `nobody=${badSummary}`]), /--finetune-summaries: no report has the label 'nobody'/);
  assert.not.ok(fs.existsSync(path.join(dir, 'refused', 'compare.md')), 'a refused comparison wrote its table');
});

test.run();

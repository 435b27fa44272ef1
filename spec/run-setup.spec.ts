/**
 * A run folder belongs to one run, and every flag is checked before any work (train/run.ts):
 * a new run into a folder holding another run's checkpoint or metrics is refused, --overwrite
 * moves that run aside and never deletes it, --resume refuses another pipeline's run, nnclr
 * resumes bit for bit, and bad flags are refused naming the flag before anything is trained.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { initBackend } from '../runtime/backend';
import { writeEncoder } from '../runtime/checkpoint';
import { readConfigFile } from '../runtime/cli';
import { readSafetensors } from '../models/safetensors';
import { VisionTransformer } from '../models/vit';
import { refine, DEFINITION as REFINE } from '../pipelines/refine';
import { pretrainMae } from '../pipelines/pretrain-mae';
import { nnclr } from '../pipelines/nnclr';
import { withFlags } from './argv';
import { rejects } from './eval-helpers';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'run-setup-'));
const checkpoint = path.join(dir, 'mim.safetensors');
const data = 'data/cifar10-mini/test-*.tar.gz';
// 2000 images, batch 16: 2 steps of stage 2, 3 of stage 3
const tiny = [
  '--checkpoint', checkpoint, '--train', data, '--batch', '16', '--stage2-epochs', '0.016', '--stage3-epochs', '0.024',
  '--queue-size', '64', '--head-preset', 'tiny', '--local-views', '1', '--local-size', '8', '--skip-knn', '--seed', '5',
];

test.before(async () => {
  await initBackend(() => undefined);
  const model = new VisionTransformer({ imgSize: 16, patchSize: 4, embedDim: 32, depth: 3, numHeads: 2, mlpRatio: 2, act: 'gelu', posEmbed: 'sincos' }, 1);
  await writeEncoder(checkpoint, model);
  model.dispose();
});

test('bad flags are refused by name before anything is written', async () => {
  const out = path.join(dir, 'bad');
  const cases: [string[], RegExp][] = [
    [['--freeze-blocks', '99'], /--freeze-blocks 99: .* has 3 blocks/],
    [['--weight-decay', '-1'], /--weight-decay: expected a number >= 0, got '-1'/],
    [['--head-weight-decay', '-5'], /--head-weight-decay: expected a number >= 0/],
    [['--layer-decay', '2'], /--layer-decay: expected a number in \[0.000001, 1\]|--layer-decay: expected a number in \[1e-6, 1\]/],
    [['--blocks', '1,1'], /--blocks 1,1: a block is named twice/],
    [['--stage3-epochs', '0'], /--stage3-epochs: expected a number > 0/],
    [['--batch', '0x4'], /--batch: expected an integer in \[2, 65536\] in decimal notation, got '0x4'/],
    [['--seed', '1', '--seed', '2'], /--seed is given twice \(1 and 2\)/],
    [['--lr3', '1e-3'], /--lr3 was renamed: use --stage3-lr/],
    [['--stages', '3,3'], /--stages: expected/],
  ];
  for (const [flags, pattern] of cases) {
    const argv = [...tiny.filter((_, i, a) => !flags.includes(a[i]) && !flags.includes(a[i - 1])), ...flags, '--out', out];
    await rejects(() => refine(argv), pattern);
    assert.not.ok(fs.existsSync(path.join(out, 'metrics.jsonl')), `${flags.join(' ')}: nothing trained`);
  }
});

test('a run folder belongs to one run: refused, then --overwrite moves the old run aside', async () => {
  const out = path.join(dir, 'owned');
  await refine([...tiny, '--out', out, '--max-steps', '2']);
  const config = readConfigFile(path.join(out, 'config.yaml'), REFINE.flags);
  assert.is(config['stage3-epochs'], '0.024');
  assert.is(JSON.parse(fs.readFileSync(path.join(out, 'run.json'), 'utf8')).pipeline, 'refine');
  await rejects(() => refine([...tiny, '--out', out]), /--out .*owned holds a refine run \(.*metrics\.jsonl.*\): continue it with npx ts-node pipelines\/refine\.ts --resume .*, choose another --out, or pass --overwrite/);
  await rejects(() => pretrainMae(['--out', out, '--max-steps', '1']), /holds a refine run/);
  await rejects(() => pretrainMae(['--resume', out]), /--resume .*owned: the folder holds a refine run, not a mae run/);
  const before = fs.readFileSync(path.join(out, 'metrics.jsonl'));
  await refine([...tiny, '--out', out, '--max-steps', '1', '--overwrite']);
  const aside = fs.readdirSync(dir).filter((n) => n.startsWith('owned.replaced-'));
  assert.is(aside.length, 1);
  assert.equal(fs.readFileSync(path.join(dir, aside[0], 'metrics.jsonl')), before);
  assert.ok(fs.existsSync(path.join(dir, aside[0], 'checkpoint', 'state.safetensors')));
});

test('--resume refuses training data that changed since the run began, naming the file; --allow-data-change continues', async () => {
  const data = path.join(dir, 'changing');
  fs.mkdirSync(data);
  const shard = path.join(data, 'train-000000.tar.gz');
  fs.copyFileSync('data/cifar10-mini/test-000000.tar.gz', shard);
  const out = path.join(dir, 'data-run');
  await refine(withFlags(tiny, ['--train', shard, '--out', out, '--max-steps', '1']));
  assert.equal(JSON.parse(fs.readFileSync(path.join(out, 'run.json'), 'utf8')).data.files.map((f: { path: string }) => f.path), [path.resolve(shard)]);
  fs.copyFileSync('data/cifar10-mini/val-000000.tar.gz', shard); // another 2,000 images under the same name
  await rejects(() => refine(['--resume', out, '--max-steps', '1']), /--resume .*data-run: the training data changed since the run began \(1 file changed: .*train-000000\.tar\.gz .*\); .*--allow-data-change/);
  await refine(['--resume', out, '--max-steps', '1', '--allow-data-change']);
  assert.is(fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').length, 2);
});

test("a run that fails after it began says why in status.json (the dashboard's 'failed, with its message')", () => {
  // a pipeline's main under runMain, as `npm run` starts it, failing after claim() and outside the driver's steps
  const out = path.join(dir, 'failing');
  const main = [
    "const { runMain } = require('./runtime/cli');",
    "const { openRun } = require('./train/run');",
    "const { DEFINITION } = require('./pipelines/nnclr');",
    'runMain(async () => {',
    `  const run = openRun(DEFINITION, ['--out', ${JSON.stringify(out)}, '--checkpoint', ${JSON.stringify(checkpoint)}]);`,
    '  const claim = run.claim(await run.start({ batch: 16 }));',
    "  try { throw new Error('the final kNN met a non-finite feature in block 2'); } finally { claim[Symbol.dispose](); }",
    '});',
  ].join('\n');
  const r = spawnSync(process.execPath, ['-r', 'ts-node/register', '-e', main], { encoding: 'utf8', timeout: 60_000 });
  assert.is(r.status, 1, r.stderr);
  assert.match(r.stderr, /error: the final kNN met a non-finite feature in block 2/);
  const status = JSON.parse(fs.readFileSync(path.join(out, 'status.json'), 'utf8'));
  assert.is(status.state, 'failed');
  assert.is(status.message, 'the final kNN met a non-finite feature in block 2');
});

test('nnclr: stopped with --max-steps and resumed equals straight through', async () => {
  const args = ['--checkpoint', checkpoint, '--train', data, '--epochs', '0.032', '--batch', '16', '--queue-size', '64', '--log-every', '1', '--skip-knn'];
  const straight = await nnclr([...args, '--out', path.join(dir, 'nn-a')]);
  await nnclr([...args, '--out', path.join(dir, 'nn-b'), '--max-steps', '2']);
  const resumed = await nnclr(['--resume', path.join(dir, 'nn-b')]);
  const read = (run: string) => readSafetensors(path.join(run, 'checkpoint', 'state.safetensors')).tensors;
  const [a, b] = [read(straight), read(resumed)];
  for (const [k, t] of a) assert.equal(Array.from(b.get(k)!.data), Array.from(t.data), k);
  const rows = (run: string) => fs.readFileSync(path.join(run, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).loss);
  assert.equal(rows(resumed), rows(straight));
});

test.after(() => fs.rmSync(dir, { recursive: true, force: true }));
test.run();

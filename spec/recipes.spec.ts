/**
 * recipes/: the reference's settings for MAE ViT-B/16, L/16 and H/14 on ImageNet-1K as config
 * files of pipelines/refine.ts. A recipe is only useful if it loads and runs as written, so each
 * one runs here through `refine(['--config', recipe, ...])` with the sizes brought down to the
 * bundled micro checkpoint and data on the command line (which wins over the file): 2 steps, one
 * in each stage. The run must record both steps with the recipe's lrs under its linear scaling,
 * and its config.yaml must read back (readConfigFile) to the recipe's values merged with the
 * overrides. Every key of every recipe must be a flag of refine (checked against its --help), and
 * a key that is not, or an old name, must stop the run with the file and key named.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import YAML from 'yaml';
import { refine, DEFINITION as REFINE } from '../pipelines/refine';
import { FlagSpec, readConfigFile } from '../runtime/cli';
import { BUNDLED, RENAMED } from '../train/flags';
import { VIT_PRESETS } from '../models/vit';

const ROOT = path.join(__dirname, '..');
/** Each recipe and the ViT its checkpoint holds (read from the tensors when the run loads it). */
const PRESETS: Record<string, string> = { 'mae-vit-b16-in1k.yaml': 'vit-base-p16', 'mae-vit-l16-in1k.yaml': 'vit-large-p16', 'mae-vit-h14-in1k.yaml': 'vit-huge-p14' };
const RECIPES = Object.keys(PRESETS).map((f) => path.join(ROOT, 'recipes', f));

/** refine's flags, as its --help lists them (pipelines/refine.ts's DEFINITION). */
const helpFlags: Promise<Record<string, FlagSpec>> = Promise.resolve(REFINE.flags);

/** The tiny sizes that stand in for ImageNet and a ViT-L: the bundled data and micro checkpoint, 2 steps. */
function overrides(out: string): string[] {
  return [
    '--checkpoint', BUNDLED.mae, '--train', BUNDLED.train, '--test', BUNDLED.test,
    '--batch', '4', '--queue-size', '64', '--local-size', '16', '--global-size', '32', '--blocks', '4,5', '--head-preset', 'micro',
    // 2,500 steps an epoch at batch 4: one step of each stage
    '--stage2-epochs', '0.0004', '--stage3-epochs', '0.0004', '--max-steps', '2', '--skip-knn', '--checkpoint-minutes', '0',
    '--out', out,
  ];
}

/** A flag list as name -> value (an on/off flag: true). */
function asFlags(argv: string[], spec: Record<string, FlagSpec>): Record<string, string | boolean> {
  const flags: Record<string, string | boolean> = {};
  for (let i = 0; i < argv.length; i++) {
    const name = argv[i].replace(/^--/, '');
    flags[name] = spec[name].boolean ? true : argv[++i];
  }
  return flags;
}

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'recipes-'));

test('every key of every recipe is a flag of refine, of the right kind; blocks and view sizes fit the ViT it names', async () => {
  const spec = await helpFlags;
  assert.ok(spec.batch && spec['skip-knn']?.boolean && Object.keys(spec).length > 40, `refine --help parsed to ${Object.keys(spec).join(' ')}`);
  for (const file of RECIPES) {
    const doc = YAML.parse(fs.readFileSync(file, 'utf8'));
    for (const key of Object.keys(doc)) assert.ok(key in spec, `${path.basename(file)}: '${key}' is not a refine flag`);
    const flags = readConfigFile(file, spec, RENAMED); // refuses wrong types by key
    const preset = VIT_PRESETS[PRESETS[path.basename(file)]];
    const blocks = (flags.blocks as string).split(',').map(Number);
    assert.ok(blocks.every((b) => b >= 0 && b < preset.depth), `${path.basename(file)}: blocks ${blocks} in a ${preset.depth}-block ViT`);
    assert.is(blocks.at(-1), preset.depth - 1, 'the main head sits on the last block');
    assert.is(Number(flags['global-size']), preset.imgSize);
    assert.is(Number(flags['local-size']) % preset.patchSize, 0, 'local views of whole patches');
    assert.match(flags.checkpoint as string, /^checkpoints\/mae_vit_\w+_patch\d+_224\.safetensors$/);
  }
});

for (const file of RECIPES) {
  const name = path.basename(file);
  test(`${name}: refine --config runs it (2 steps at tiny sizes, its lrs linearly scaled); config.yaml reads back to the merged flags`, async () => {
    const out = path.join(tmpRoot, name.replace('.yaml', ''));
    const argv = overrides(out);
    const runDir = await refine(['--config', file, ...argv]);
    assert.is(runDir, out);

    const rows = fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    assert.is(rows.length, 2);
    const recipe = YAML.parse(fs.readFileSync(file, 'utf8'));
    assert.is(recipe['lr-scaling'], 'linear');
    // one step a stage, no warm-up step in a 1-step stage: each step runs at its stage's peak lr x 4 / 256
    assert.equal(rows.map((r) => r.stage), [2, 3]);
    assert.ok(Math.abs(rows[0].lr - (recipe['stage2-lr'] * 4) / 256) < 1e-12, `stage 2 lr ${rows[0].lr}`);
    assert.ok(Math.abs(rows[1].lr - (recipe['stage3-lr'] * 4) / 256) < 1e-12, `stage 3 lr ${rows[1].lr}`);
    assert.ok(rows.every((r) => Number.isFinite(r.loss)));

    // config.yaml: the recipe's values, with the command line's where it gave one (max-steps is per invocation)
    const spec = await helpFlags;
    const written = readConfigFile(path.join(out, 'config.yaml'), spec, RENAMED);
    const given = asFlags(argv, spec);
    delete given['max-steps'];
    const expected = { ...readConfigFile(file, spec, RENAMED), ...given };
    for (const [key, value] of Object.entries(expected)) assert.is(written[key], value, `config.yaml '${key}'`);
    assert.is(written['max-steps'], undefined);
  });
}

test('a recipe with a key that is no refine flag, or an old flag name, is refused naming the file and the key', async () => {
  const base = fs.readFileSync(RECIPES[1], 'utf8');
  const cases: [string, RegExp][] = [
    ['queue-length: 65536', /'queue-length' is not a flag of this pipeline/],
    ['lr3: 4.0e-4', /key 'lr3' was renamed: use stage3-lr/],
    ['skip-knn: "yes"', /'skip-knn' is an on\/off flag: expected true or false/],
  ];
  for (const [line, message] of cases) {
    const bad = path.join(tmpRoot, `bad-${line.split(':')[0]}.yaml`);
    fs.writeFileSync(bad, `${base}\n${line}\n`);
    const out = path.join(tmpRoot, `bad-run-${line.split(':')[0]}`);
    try {
      await refine(['--config', bad, ...overrides(out)]);
      assert.unreachable(`${line}: the run started`);
    } catch (err) {
      assert.instance(err, Error);
      const text = (err as Error).message;
      assert.ok(text.startsWith(`--config ${bad}: `) && message.test(text), text);
    }
    assert.not.ok(fs.existsSync(out), `${line}: the run folder was created`);
  }
});

test.after(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));

test.run();

/**
 * One flag vocabulary: help that fits a line, every flag a pipeline's messages or help name
 * exists in it, renamed flags refused naming the new name, config files merged under the
 * command line, and docs/flags.md as --help prints it today.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { configYaml, helpText, readConfigFile, readFlags } from '../runtime/cli';
import { mixedPrecision, precisionFlag, RENAMED } from '../train/flags';
import { flagsMarkdown, pipelines } from '../scripts/make-flags-doc';

const root = path.join(__dirname, '..');
const all = pipelines();

test('every help line is at most 120 characters and says its default', () => {
  for (const p of all) {
    for (const line of helpText(p.usage, p.flags).split('\n')) assert.ok(line.length <= 120, `${p.name}: ${line.length} chars: ${line}`);
  }
});

/** String literals and template text of a source file, comments removed. */
function messageText(file: string): string {
  const src = fs.readFileSync(file, 'utf8').replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
  return (src.match(/'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*"|`(?:[^`\\]|\\.)*`/g) ?? []).join('\n');
}

test('every flag a pipeline names in its messages and help exists in that pipeline', () => {
  // flags of other programs that messages quote (mpirun's)
  const foreign = new Set(['allow-run-as-root', 'oversubscribe', 'help']);
  for (const p of all) {
    const text = messageText(path.join(root, p.script)) + '\n' + helpText(p.usage, p.flags);
    for (const m of text.matchAll(/(?<![\w-])--([a-z][a-z0-9-]*[a-z0-9])/g)) {
      const name = m[1];
      assert.ok(name in p.flags || foreign.has(name), `${p.script} names --${name}, which ${p.name} does not take`);
    }
  }
});

test('shared run messages name flags every training pipeline takes', () => {
  const training = all.filter((p) => 'resume' in p.flags && p.name !== 'finetune');
  const text = messageText(path.join(root, 'train', 'run.ts'));
  for (const m of text.matchAll(/(?<![\w-])--([a-z][a-z0-9-]*[a-z0-9])/g)) {
    for (const p of training) assert.ok(m[1] in p.flags, `train/run.ts names --${m[1]}, which ${p.name} does not take`);
  }
});

test('a renamed flag is refused naming its new name; twice-given flags and hex numbers are refused', () => {
  const spec = { 'stage2-lr': { description: 'x', default: '1' }, batch: { description: 'b', default: '2' } };
  assert.throws(() => readFlags('u', spec, ['--lr2', '3'], RENAMED), /--lr2 was renamed: use --stage2-lr/);
  assert.throws(() => readFlags('u', spec, ['--batch', '4', '--batch=8'], RENAMED), /--batch is given twice \(4 and 8\)/);
  for (const p of all) for (const old of Object.keys(RENAMED)) assert.not.ok(old in p.flags && !RENAMED[old].includes(`--${old} `), `${p.name} still takes the renamed --${old}`);
});

test('--config: the file under the command line, unknown keys refused by file and key, config.yaml reads back exactly', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flags-'));
  const spec = { config: { description: 'c' }, batch: { description: 'b', default: '2' }, lr: { description: 'l', default: '1e-3' }, 'skip-knn': { description: 's', boolean: true } };
  const file = path.join(dir, 'c.yaml');
  fs.writeFileSync(file, 'batch: 16\nlr: 4e-4\nskip-knn: true\n');
  const { flags, explicit } = readFlags('u', spec, ['--config', file, '--batch', '8']);
  assert.equal([flags.batch, flags.lr, flags['skip-knn']], ['8', '0.0004', true]);
  assert.ok(explicit.has('lr') && explicit.has('batch'));
  fs.writeFileSync(file, 'batch: 16\nwarmup: 0.1\n');
  assert.throws(() => readFlags('u', spec, ['--config', file], RENAMED), /c\.yaml: key 'warmup' was renamed: use warmup-share/);
  fs.writeFileSync(file, 'bacth: 16\n');
  assert.throws(() => readFlags('u', spec, ['--config', file]), /c\.yaml: 'bacth' is not a flag of this pipeline/);
  fs.writeFileSync(file, 'batch: 16\nbatch: 8\n');
  assert.throws(() => readFlags('u', spec, ['--config', file]), /c\.yaml: not valid YAML or JSON/);
  const resolved = { batch: '32', lr: '1e-3', 'skip-knn': false, config: file };
  fs.writeFileSync(file, configYaml(resolved, ['a run'], ['config']));
  assert.equal(readConfigFile(file, spec), { batch: '32', lr: '1e-3', 'skip-knn': false });
  fs.rmSync(dir, { recursive: true });
});

test('--precision: fp32 or mixed; mixed where the backend has no f16 matMuls is said, and the run trains in fp32', () => {
  assert.is(precisionFlag({}), undefined);
  assert.is(precisionFlag({ precision: 'mixed' }), 'mixed');
  assert.throws(() => precisionFlag({ precision: 'bf16' }), /--precision: expected fp32 or mixed, got 'bf16'/);
  const said: string[] = [];
  const wasm = { choice: 'wasm', tfBackend: 'wasm', threads: 2, poolThreads: 1, fusedKernels: 9 } as const;
  assert.is(mixedPrecision(wasm, 'mixed', (l) => said.push(l)), false);
  assert.match(said[0], /--precision mixed: no f16 matMuls on wasm here \(they run on WebGPU only\): training runs in fp32/);
  assert.is(mixedPrecision(wasm, undefined, (l) => said.push(l)), false);
  assert.is(said.length, 1, 'nothing said where mixed was not asked');
  const f16 = { ...wasm, choice: 'webgpu', tfBackend: 'webgpu', precision: { requested: 'mixed', matMul: 'f16-tiles', reason: 'r' } } as const;
  assert.is(mixedPrecision(f16, undefined, (l) => said.push(l)), true, 'WEBGPU_PRECISION=mixed also trains with a loss scale');
});

test('docs/flags.md is what the pipelines print today (npx ts-node scripts/make-flags-doc.ts rewrites it)', () => {
  assert.fixture(fs.readFileSync(path.join(root, 'docs', 'flags.md'), 'utf8'), flagsMarkdown());
});

test.run();

/**
 * The launch files (deploy/) run as written. There is no cluster here, so each file's own command
 * runs under `mpirun -np 2` on tiny data:
 *   - deploy/slurm/refine.sbatch is run by bash as it is (cd, mpi-shim build, its srun line), with
 *     an `srun` on PATH that drops srun's options and starts the command as 2 ranks under mpirun;
 *     the data, checkpoint and run folder come from the environment variables the script reads,
 *     the tiny sizes as extra arguments, which the script passes on to refine ("$@");
 *   - deploy/kubernetes/refine-mpijob.yaml: the launcher's command and args, with the launcher's
 *     env values expanded into them as Kubernetes expands $(NAME) (DATA, CHECKPOINT and OUT set to
 *     the tiny ones), `-np 2 --oversubscribe` for the 4 worker slots, the tiny sizes appended.
 * Each run trains 2 steps (one a stage) and runs the kNN before and after, which reads the
 * --val and --test the file passes and refuses a validation split that overlaps train or test:
 * the data is laid out as the files expect it (train-*, val-*, test-* shards and classes.txt in
 * one folder). The static checks stay: every flag exists, the recipe's global batch splits over
 * the ranks each file starts, one GPU per rank. mpirun is found or the runs are skipped with a
 * warning, a failure under REQUIRE_MPI=1 (CI), as in spec/mpi.spec.ts.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import YAML from 'yaml';
import { BUNDLED } from '../train/flags';

const ROOT = path.join(__dirname, '..');
const SLURM = path.join(ROOT, 'deploy/slurm/refine.sbatch');
const MPIJOB = path.join(ROOT, 'deploy/kubernetes/refine-mpijob.yaml');
const hasMpirun = spawnSync('mpirun', ['--version'], { encoding: 'utf8' }).status === 0;
if (!hasMpirun && process.env.REQUIRE_MPI !== '1') console.warn('[mpi-deploy.spec] mpirun not found: the deploy runs are skipped (apt-get install openmpi-bin libopenmpi-dev)');

function mpiTest(name: string, fn: () => void): void {
  if (hasMpirun) test(name, fn);
  else if (process.env.REQUIRE_MPI === '1') test(name, () => assert.unreachable('mpirun not found (REQUIRE_MPI=1): install openmpi-bin libopenmpi-dev'));
  else test.skip(name, fn);
}

const refineHelp = spawnSync(process.execPath, ['-r', 'ts-node/register', 'pipelines/refine.ts', '--help'], { cwd: ROOT, encoding: 'utf8' }).stdout;
const refineFlags = new Set([...refineHelp.matchAll(/^\s+--([\w-]+)/gm)].map((m) => m[1]));

/** The refine flags of an argument list (after pipelines/refine.ts), as name -> value. */
function refineArgs(args: string[]): Map<string, string> {
  const at = args.indexOf('pipelines/refine.ts');
  assert.ok(at >= 0, `no pipelines/refine.ts in ${args.join(' ')}`);
  const flags = new Map<string, string>();
  for (let i = at + 1; i < args.length; i++) {
    assert.ok(args[i].startsWith('--'), `unexpected argument '${args[i]}'`);
    flags.set(args[i].slice(2), args[i + 1]);
    i++;
  }
  return flags;
}

/** The global batch a launch file runs with: its --batch, else its recipe's. */
function globalBatch(flags: Map<string, string>): number {
  if (flags.has('batch')) return Number(flags.get('batch'));
  const recipe = flags.get('config');
  assert.ok(recipe, 'neither --batch nor --config');
  return Number(YAML.parse(fs.readFileSync(path.join(ROOT, recipe), 'utf8')).batch);
}

/** The Slurm script's srun line as words, with its `${NAME:-default}` variables at their defaults ("$@" dropped). */
function slurmCommand(script: string): string[] {
  const defaults = new Map([...script.matchAll(/^(\w+)=\$\{\1:-([^}]*)\}$/gm)].map((m) => [m[1], m[2]]));
  const line = script.slice(script.indexOf('\nsrun ') + 1).replace(/\\\n/g, ' ').split('\n')[0];
  return [...line.matchAll(/'[^']*'|"[^"]*"|\S+/g)]
    .map((m) => m[0].replace(/^['"]|['"]$/g, ''))
    .filter((w) => w !== '$@')
    .map((w) => w.replace(/\$(\w+)/g, (whole, name) => defaults.get(name) ?? whole));
}

/** Kubernetes' expansion of $(NAME) in a container's command and args from its env ($$ escapes). */
function expandK8s(word: string, env: Map<string, string>): string {
  return word.replace(/\$\$|\$\((\w+)\)/g, (whole, name) => (whole === '$$' ? '$' : env.get(name) ?? whole));
}

/** 2 steps (one a stage) of the bundled micro model on 2 ranks, and a kNN before and after that reads --val and --test. */
const TINY = [
  '--batch', '4', '--queue-size', '64', '--global-size', '32', '--local-size', '16', '--local-views', '2',
  '--blocks', '4,5', '--head-preset', 'micro', '--stage2-epochs', '0.0004', '--stage3-epochs', '0.0004', '--max-steps', '2',
  '--eval-train-limit', '20', '--eval-val-limit', '20', '--eval-test-limit', '20', '--knn-k', '5', '--checkpoint-minutes', '0',
];

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mpi-deploy-'));

/**
 * The bundled shards, unpacked to .tar under the names the launch files expect (train-*, val-*,
 * test-*, classes.txt), in one folder that stays (under the ignored .cache/): the same paths and
 * bytes every time, so the feature cache serves the MIM checkpoint's kNN features after their
 * first extraction (the disjointness check of --val runs before it, every time).
 */
function tinyData(): string {
  const dir = path.join(ROOT, '.cache', 'mpi-deploy-spec', 'imagenet');
  fs.mkdirSync(dir, { recursive: true });
  const bundled = path.join(ROOT, path.dirname(BUNDLED.train));
  for (const name of fs.readdirSync(bundled)) {
    const bytes = name.endsWith('.tar.gz') ? zlib.gunzipSync(fs.readFileSync(path.join(bundled, name))) : name === 'classes.txt' ? fs.readFileSync(path.join(bundled, name)) : undefined;
    const file = path.join(dir, name.replace(/\.gz$/, ''));
    if (!bytes || (fs.existsSync(file) && fs.readFileSync(file).equals(bytes))) continue;
    fs.writeFileSync(`${file}.tmp`, bytes);
    fs.renameSync(`${file}.tmp`, file);
  }
  assert.equal(fs.readdirSync(dir).sort(), ['classes.txt', 'test-000000.tar', 'train-000000.tar', 'train-000001.tar', 'val-000000.tar']);
  return dir;
}

/** What a finished tiny run must hold: 2 steps from 2 ranks, and the kNN on the validation and test images it was given. */
function assertRan(out: string, data: string, output: string): void {
  const rows = fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.is(rows.length, 2, output);
  assert.is(JSON.parse(fs.readFileSync(path.join(out, 'run.json'), 'utf8')).ranks, 2);
  const summary = JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8'));
  for (const report of summary.knn) {
    assert.is(report.val?.source, path.join(data, 'val-*.tar'), 'validation: the --val the file passes');
    assert.is(report.testCount, 20);
    assert.is(report.val.count, 20);
  }
  assert.ok(fs.existsSync(path.join(out, 'checkpoint', 'encoder-ema.safetensors')));
}

/** One wasm thread a rank; a rank waiting in MPI yields its core (2 ranks on 2 shared cores: multi-node.md). */
const RUN_ENV = { ...process.env, WASM_THREADS: '1', OMPI_MCA_mpi_yield_when_idle: '1' };

test('refine --help lists its flags (the reference the launch files are checked against)', () => {
  assert.ok(refineFlags.has('batch') && refineFlags.has('config') && refineFlags.size > 40, refineHelp);
});

test('Kubeflow MPIJob: ranks = worker slots, one GPU per worker, the global batch splits over them, known flags, --val beside --test', () => {
  const job = YAML.parse(fs.readFileSync(MPIJOB, 'utf8'));
  assert.is(job.apiVersion, 'kubeflow.org/v2beta1');
  assert.is(job.kind, 'MPIJob');
  const { Launcher, Worker } = job.spec.mpiReplicaSpecs;
  assert.is(Launcher.replicas, 1);
  const launcher = Launcher.template.spec.containers[0];
  assert.is(launcher.command[0], 'mpirun');
  const np = Number(launcher.args[launcher.args.indexOf('-np') + 1]);
  assert.is(np, Worker.replicas * job.spec.slotsPerWorker, 'mpirun -np must equal worker replicas x slotsPerWorker');
  for (const c of Worker.template.spec.containers) assert.is(c.resources.limits['nvidia.com/gpu'], job.spec.slotsPerWorker, 'one GPU per rank');
  const env = new Map<string, string>(launcher.env.map((e: { name: string; value: string }) => [e.name, e.value]));
  const flags = refineArgs(launcher.args.map((a: string) => expandK8s(a, env)));
  for (const name of flags.keys()) assert.ok(refineFlags.has(name), `--${name} is not a refine flag`);
  assert.ok(flags.has('val') && flags.has('test') && flags.get('val') !== flags.get('test'));
  assert.is(globalBatch(flags) % np, 0, `global batch ${globalBatch(flags)} does not split over ${np} ranks`);
});

test('Slurm script: known flags, the global batch splits over nodes x tasks per node, one GPU per task, --val beside --test', () => {
  const script = fs.readFileSync(SLURM, 'utf8');
  const directive = (name: string) => Number(new RegExp(`^#SBATCH --${name}=(\\d+)`, 'm').exec(script)?.[1]);
  assert.is(directive('gpus-per-task'), 1);
  const ranks = directive('nodes') * directive('ntasks-per-node');
  const flags = refineArgs(slurmCommand(script));
  for (const name of flags.keys()) assert.ok(refineFlags.has(name), `--${name} is not a refine flag`);
  assert.ok(flags.has('val') && flags.has('test') && flags.get('val') !== flags.get('test'));
  assert.is(globalBatch(flags) % ranks, 0, `global batch ${globalBatch(flags)} does not split over ${ranks} ranks`);
});

mpiTest('Slurm script, run as written with mpirun -np 2 for srun: 2 steps on 2 ranks, kNN on its --val and --test', () => {
  const data = tinyData();
  const bin = path.join(tmp, 'bin');
  fs.mkdirSync(bin, { recursive: true });
  // srun's stand-in: its options dropped, the command started as 2 ranks
  fs.writeFileSync(
    path.join(bin, 'srun'),
    '#!/bin/sh\nwhile [ $# -gt 0 ] && [ "${1#--}" != "$1" ]; do shift; done\nexec mpirun --allow-run-as-root --oversubscribe -np 2 "$@"\n',
    { mode: 0o755 },
  );
  const out = path.join(tmp, 'slurm-run');
  const env = { ...RUN_ENV, PATH: `${bin}:${process.env.PATH}`, SLURM_SUBMIT_DIR: ROOT, SLURM_JOB_ID: 'spec', DATA: data, CHECKPOINT: BUNDLED.mae, OUT: out };
  const r = spawnSync('bash', [SLURM, ...TINY], { cwd: tmp, env, encoding: 'utf8', timeout: 300_000, killSignal: 'SIGKILL' });
  const output = `${r.stdout}${r.stderr}`;
  assert.is(r.status, 0, output);
  assert.match(output, /rank 1 of 2/);
  assertRan(out, data, output);
});

mpiTest("Kubeflow MPIJob, the launcher's command as written (env expanded as Kubernetes does) with -np 2: 2 steps on 2 ranks, kNN on its --val and --test", () => {
  const data = tinyData();
  const out = path.join(tmp, 'mpijob-run');
  const launcher = YAML.parse(fs.readFileSync(MPIJOB, 'utf8')).spec.mpiReplicaSpecs.Launcher.template.spec.containers[0];
  const env = new Map<string, string>(launcher.env.map((e: { name: string; value: string }) => [e.name, e.value]));
  for (const name of ['DATA', 'CHECKPOINT', 'OUT']) assert.ok(env.has(name), `the launcher sets no ${name}`);
  env.set('DATA', data).set('CHECKPOINT', BUNDLED.mae).set('OUT', out);
  const args: string[] = launcher.args.map((a: string) => expandK8s(a, env));
  args[args.indexOf('-np') + 1] = '2';
  const r = spawnSync(launcher.command[0], ['--oversubscribe', ...args, ...TINY], { cwd: ROOT, env: RUN_ENV, encoding: 'utf8', timeout: 300_000, killSignal: 'SIGKILL' });
  const output = `${r.stdout}${r.stderr}`;
  assert.is(r.status, 0, output);
  assertRan(out, data, output);
});

test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

test.run();

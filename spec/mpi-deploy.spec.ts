/**
 * The launch files (deploy/): they cannot run here (no cluster), so what can be checked is that
 * they agree with the code and with themselves: every refine flag they pass exists in
 * `pipelines/refine.ts --help`, the global batch splits over the ranks they start, the MPIJob
 * starts as many ranks as it has worker slots and gives each worker exactly one GPU.
 * (The MPIJob was also validated against mpi-operator v0.8.2's v2beta1 CRD schema with ajv; see
 * the README's launch section.)
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import YAML from 'yaml';

const ROOT = path.join(__dirname, '..');
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

test('refine --help lists its flags (the reference the launch files are checked against)', () => {
  assert.ok(refineFlags.has('batch') && refineFlags.has('train') && refineFlags.size > 20, refineHelp);
});

test('Kubeflow MPIJob: ranks = worker slots, one GPU per worker, a batch that divides, known flags', () => {
  const job = YAML.parse(fs.readFileSync(path.join(ROOT, 'deploy/kubernetes/refine-mpijob.yaml'), 'utf8'));
  assert.is(job.apiVersion, 'kubeflow.org/v2beta1');
  assert.is(job.kind, 'MPIJob');
  const { Launcher, Worker } = job.spec.mpiReplicaSpecs;
  assert.is(Launcher.replicas, 1);
  const launcher = Launcher.template.spec.containers[0];
  assert.is(launcher.command[0], 'mpirun');
  const np = Number(launcher.args[launcher.args.indexOf('-np') + 1]);
  assert.is(np, Worker.replicas * job.spec.slotsPerWorker, 'mpirun -np must equal worker replicas x slotsPerWorker');
  for (const c of Worker.template.spec.containers) assert.is(c.resources.limits['nvidia.com/gpu'], job.spec.slotsPerWorker, 'one GPU per rank');
  const flags = refineArgs(launcher.args);
  for (const name of flags.keys()) assert.ok(refineFlags.has(name), `--${name} is not a refine flag`);
  assert.is(Number(flags.get('batch')) % np, 0, `--batch ${flags.get('batch')} does not split over ${np} ranks`);
});

test('Slurm script: known flags, a batch that divides over nodes x tasks per node, one GPU per task', () => {
  const script = fs.readFileSync(path.join(ROOT, 'deploy/slurm/refine.sbatch'), 'utf8');
  const directive = (name: string) => Number(new RegExp(`^#SBATCH --${name}=(\\d+)`, 'm').exec(script)?.[1]);
  assert.is(directive('gpus-per-task'), 1);
  const ranks = directive('nodes') * directive('ntasks-per-node');
  const command = script.slice(script.indexOf('srun ')).replace(/\\\n/g, ' ');
  const args = [...command.matchAll(/'[^']*'|"[^"]*"|\S+/g)].map((m) => m[0].replace(/^['"]|['"]$/g, ''));
  const flags = refineArgs(args);
  for (const name of flags.keys()) assert.ok(refineFlags.has(name), `--${name} is not a refine flag`);
  assert.is(Number(flags.get('batch')) % ranks, 0, `--batch ${flags.get('batch')} does not split over ${ranks} ranks`);
});

test.run();

/**
 * What the WebGPU start-up finds and says: the adapter's features, subgroup sizes and matrix
 * configs (Dawn's toggles allow_unsafe_apis and vulkan_enable_f16_on_nvidia on), the precision
 * path the backend takes and why; probing that leaves stderr empty where no adapter is usable
 * (a Vulkan loader with no driver, or only a software one, and no XDG_RUNTIME_DIR: Dawn, the
 * loader and Mesa write to native stderr); WGSL `enable` lines hoisted above tfjs's
 * declarations. Child processes: one tfjs backend per process.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { choosePrecision, GpuCapabilities, hoistEnables } from '../runtime/webgpu';
import { deviceMissing, LAVAPIPE_ICD, NO_DEVICE, ROOT } from './webgpu-device';

const LAVAPIPE_LIB = path.join(path.dirname(LAVAPIPE_ICD), 'sysroot', 'usr', 'lib', 'x86_64-linux-gnu');

function node(code: string, env: Record<string, string | undefined>): Promise<{ code: number; stdout: string; stderr: string }> {
  const full: NodeJS.ProcessEnv = { ...process.env, TS_NODE_TRANSPILE_ONLY: '1', ...env };
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete full[k];
  return new Promise((resolve) => {
    execFile(process.execPath, ['-r', 'ts-node/register', '-e', code], { cwd: ROOT, env: full }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

const START = `require('./runtime/backend').initBackend().then((b) => console.log('BACKEND ' + b.tfBackend + ' ' + JSON.stringify({ capabilities: b.capabilities, precision: b.precision })))
  .catch((e) => { console.log('FAILED ' + e.message); process.exit(3); });`;

test('lavapipe: features, subgroup sizes and matrix configs; mixed asked takes f16 tiles and says why', async () => {
  const run = await node(START, { TFJS_BACKEND: 'webgpu', WEBGPU_PRECISION: 'mixed' });
  if (NO_DEVICE.test(run.stdout)) return deviceMissing(run.stdout);
  const line = run.stdout.split('\n').find((l) => l.startsWith('BACKEND '));
  assert.ok(line, run.stdout + run.stderr);
  const { capabilities: c, precision: p } = JSON.parse(line!.slice('BACKEND webgpu '.length)) as { capabilities: GpuCapabilities; precision: { matMul: string; reason: string } };
  console.log(run.stdout.split('\n').filter((l) => l.startsWith('[backend]')).join('\n'));
  // Mesa 25.0.7's lavapipe through Dawn (webgpu 0.6.2): f16 and subgroups, no cooperative matrix
  assert.ok(c.adapterFeatures.includes('shader-f16'), c.adapterFeatures.join(' '));
  assert.ok(c.adapterFeatures.includes('subgroups'));
  assert.not.ok(c.adapterFeatures.includes('chromium-experimental-subgroup-matrix'));
  // allow_unsafe_apis took effect: Dawn lists experimental features only with it
  assert.ok(c.adapterFeatures.some((f) => f.startsWith('chromium-experimental-')), 'allow_unsafe_apis not applied');
  assert.equal(c.deviceFeatures.filter((f) => ['shader-f16', 'subgroups', 'timestamp-query'].includes(f)).sort(), ['shader-f16', 'subgroups', 'timestamp-query']);
  assert.equal(c.subgroupMatrixConfigs, []);
  assert.ok(c.subgroupMinSize! >= 1 && c.subgroupMaxSize! >= c.subgroupMinSize!);
  assert.is(p.matMul, 'f16-tiles');
  assert.match(run.stdout, /\[backend\] webgpu \(software adapter: .*precision mixed \(f16-tiles\): the adapter lacks chromium-experimental-subgroup-matrix/);
  assert.match(run.stdout, /WebGPU capabilities: shader-f16 yes, subgroups yes, chromium-experimental-subgroup-matrix no; subgroup size \d+-\d+; subgroup matrix configs: none/);
});

test('the default precision is fp32, and the log line says so', async () => {
  const run = await node(START, { TFJS_BACKEND: 'webgpu', WEBGPU_PRECISION: undefined });
  if (NO_DEVICE.test(run.stdout)) return deviceMissing(run.stdout);
  assert.match(run.stdout, /precision fp32: fp32 asked \(WEBGPU_PRECISION=mixed for f16 matMuls\)/);
});

for (const [what, icd] of [
  ['a Vulkan loader and no driver', '/nonexistent/icd.json'],
  ['only a software adapter', LAVAPIPE_ICD],
] as const) {
  test(`probing is silent on stderr with ${what} (no XDG_RUNTIME_DIR) and wasm runs`, async () => {
    if (!fs.existsSync(LAVAPIPE_ICD)) return deviceMissing(`${LAVAPIPE_ICD} missing`);
    // the loader of setup:vulkan on the library path, as a system's libvulkan1 would be
    const run = await node(START, { TFJS_BACKEND: undefined, XDG_RUNTIME_DIR: undefined, VK_ICD_FILENAMES: icd, LD_LIBRARY_PATH: LAVAPIPE_LIB, WASM_THREADS: '1' });
    assert.match(run.stdout, /BACKEND wasm/);
    assert.match(run.stdout, /\[backend\] WebGPU skipped: (no WebGPU adapter|the only WebGPU adapter is a software one)/);
    assert.is(run.stderr, '', `stderr: ${run.stderr}`);
  });
}

test('choosePrecision: subgroup matrices where offered (NVIDIA-like), the reasons where not', () => {
  const caps = (over: Partial<GpuCapabilities>): GpuCapabilities => ({
    adapterFeatures: ['chromium-experimental-subgroup-matrix', 'shader-f16', 'subgroups'],
    deviceFeatures: ['chromium-experimental-subgroup-matrix', 'shader-f16', 'subgroups'],
    subgroupMatrixConfigs: [
      { componentType: 'f16', resultComponentType: 'f16', M: 16, N: 16, K: 16 },
      { componentType: 'f16', resultComponentType: 'f32', M: 16, N: 8, K: 16 },
      { componentType: 'f16', resultComponentType: 'f32', M: 16, N: 16, K: 16 },
    ],
    subgroupMinSize: 32,
    subgroupMaxSize: 32,
    limits: {},
    ...over,
  });
  const nvidia = choosePrecision('mixed', caps({}));
  assert.is(nvidia.matMul, 'subgroup-matrix');
  assert.equal([nvidia.config!.M, nvidia.config!.N, nvidia.config!.K, nvidia.lanes], [16, 16, 16, 32]);
  assert.is(choosePrecision('fp32', caps({})).matMul, 'fp32');
  assert.equal(choosePrecision('mixed', caps({ deviceFeatures: ['subgroups'] })), { requested: 'mixed', matMul: 'fp32', reason: 'the adapter lacks shader-f16' });
  assert.match(choosePrecision('mixed', caps({ subgroupMinSize: 16, subgroupMaxSize: 64 })).reason, /subgroup size varies \(16-64\)/);
  assert.match(choosePrecision('mixed', caps({ subgroupMatrixConfigs: [] })).reason, /no square f16 -> f32 subgroup matrix/);
  assert.match(choosePrecision('mixed', caps({ adapterFeatures: ['shader-f16'], deviceFeatures: ['shader-f16'] })).reason, /^the adapter lacks chromium-experimental-subgroup-matrix: f16 tiles/);
});

test('hoistEnables moves every enable line above the declarations, once each', () => {
  const code = 'struct Uniforms { size : i32, };\n  enable f16;\nfn a() {}\n enable f16;\nenable subgroups, chromium_experimental_subgroup_matrix;\nfn main() {}';
  assert.is(hoistEnables(code), 'enable f16;\nenable subgroups, chromium_experimental_subgroup_matrix;\nstruct Uniforms { size : i32, };\n\nfn a() {}\n\n\nfn main() {}');
  assert.is(hoistEnables('fn main() {}'), 'fn main() {}');
});

test.run();

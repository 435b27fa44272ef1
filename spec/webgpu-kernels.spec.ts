/**
 * The fused WGSL kernels (models/kernels-webgpu, WEBGPU_FUSED=1), the tiled matMul
 * (WEBGPU_MATMUL=1) and the flash attention forward with its recomputing backward
 * (WEBGPU_FLASH=1; the attention cases, 197 tokens among them) against the wasm backend's fused C kernels and against webgpu's own composed
 * ops and matMul: LayerNorm, GELU, the softmax of attention, linear layers and matMuls in every
 * transpose form, values and gradients, and two AdamW steps (parameters, moments, gradient norm),
 * each within 1e-5 relative (max |a - b| / max |b| over the tensor). The webgpu side runs in a
 * child process on the software Vulkan of `npm run setup:vulkan` (spec/webgpu-kernels-cases.ts),
 * which also shows that the fused pass dispatched every fused kernel.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';
import { initBackend } from '../runtime/backend';
import { Cases, kernelCases } from './webgpu-kernels-cases';
import { deviceMissing, NO_DEVICE, ROOT } from './webgpu-device';
import { maxRelativeDifference } from '../lib/relative-difference';

const TOLERANCE = 1e-5;

interface GpuCases {
  backend: string;
  fusedWgsl: boolean;
  wgslMatMul: boolean;
  dispatched: string[];
  programs: string[];
  fused: Cases;
  composed: Cases;
}

function runGpuCases(): Promise<GpuCases> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      ['-r', 'ts-node/register', 'spec/webgpu-kernels-cases.ts'],
      { cwd: ROOT, env: { ...process.env, TFJS_BACKEND: 'webgpu', WEBGPU_FUSED: '1', WEBGPU_MATMUL: '1', WEBGPU_FLASH: '1', TS_NODE_TRANSPILE_ONLY: '1' }, maxBuffer: 256 << 20 },
      (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr.split('\n').slice(-20).join('\n')}`)) : resolve(JSON.parse(stdout.trim().split('\n').pop()!))),
    );
  });
}

/** The largest relative difference over the cases, and the case it is in. */
function worst(got: Cases, want: Cases): { relative: number; name: string } {
  assert.equal(Object.keys(got).sort(), Object.keys(want).sort());
  let out = { relative: 0, name: '' };
  for (const [name, w] of Object.entries(want)) {
    const g = got[name];
    assert.is(g.length, w.length, name);
    const relative = maxRelativeDifference(g, w);
    assert.ok(Number.isFinite(relative), `${name}: ${relative}`);
    if (relative > out.relative) out = { relative, name };
  }
  return out;
}

let gpu: GpuCases | undefined;

test.before(async () => {
  try {
    gpu = await runGpuCases();
  } catch (err) {
    if (!NO_DEVICE.test((err as Error).message)) throw err;
    deviceMissing((err as Error).message);
  }
});

test('the fused pass on webgpu dispatched every WGSL kernel (and tfjs softmax forward)', () => {
  if (!gpu) return;
  assert.is(gpu.backend, 'webgpu');
  assert.ok(gpu.fusedWgsl);
  for (const k of ['FusedLayerNorm', 'FusedLayerNormGrad', 'FusedGelu', 'FusedGeluGrad', 'Softmax', 'FusedSoftmaxGrad', 'FusedAdamW', 'FusedColumnSums', 'FusedGlobalNorm', 'FlashAttention']) {
    assert.ok(gpu.dispatched.includes(k), `${k} not dispatched: ${gpu.dispatched}`);
  }
});

test('the tiled matMul compiled in every transpose form, with and without bias, in both tile sizes', () => {
  if (!gpu) return;
  assert.ok(gpu.wgslMatMul);
  const tiled = gpu.programs.filter((p) => p.startsWith('MatMulTiled_'));
  for (const form of ['false_false', 'false_true', 'true_false', 'true_true']) assert.ok(tiled.some((p) => p.startsWith(`MatMulTiled_${form}_`)), `${form}: ${tiled}`);
  for (const rest of ['_true_4_', '_false_8_', '_false_4_']) assert.ok(tiled.some((p) => p.includes(rest)), `${rest}: ${tiled}`);
  // attention's batched products at 197 tokens, in the forms its forward and gradients take (q k^T read in place)
  const batched = tiled.filter((p) => p.includes('_batched_'));
  for (const form of ['false_true', 'false_false', 'true_false']) assert.ok(batched.some((p) => p.startsWith(`MatMulTiled_${form}_`)), `batched ${form}: ${batched}`);
});

test('the overflow check of loss scaling: a non-finite gradient gives a non-finite unscaled norm', () => {
  if (!gpu) return;
  assert.equal(gpu.fused['unscaled norm with an overflow is not finite'], [1]);
  assert.equal(gpu.composed['unscaled norm with an overflow is not finite'], [1]);
});

test('fused WGSL kernels and the tiled matMul equal webgpu composed ops and tfjs matMul (relative 1e-5)', () => {
  if (!gpu) return;
  const w = worst(gpu.fused, gpu.composed);
  console.log(`webgpu fused vs composed: max relative difference ${w.relative.toExponential(2)} (${w.name})`);
  assert.ok(w.relative < TOLERANCE, `${w.name}: ${w.relative}`);
});

test('fused WGSL kernels and the tiled matMul equal the wasm backend (relative 1e-5)', async () => {
  if (!gpu) return;
  const info = await initBackend(() => undefined);
  assert.is(info.tfBackend, 'wasm');
  const w = worst(gpu.fused, await kernelCases());
  console.log(`webgpu fused vs wasm: max relative difference ${w.relative.toExponential(2)} (${w.name})`);
  assert.ok(w.relative < TOLERANCE, `${w.name}: ${w.relative}`);
});

test.run();

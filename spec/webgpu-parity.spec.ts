/**
 * WebGPU equals wasm on a whole refine step (scripts/webgpu-parity-step.ts: encoder forward to
 * several blocks, NNA heads, NN lookup, NNA loss, backward, AdamW, EMA) from the same weights
 * and batch: loss, gradients and updates within 1e-4 relative (see scripts/check-webgpu.ts
 * for what is compared how), with tfjs-webgpu's own kernels and with the WGSL ones (fused
 * kernels and tiled matMul). Runs on the software Vulkan of `npm run setup:vulkan` where there
 * is no GPU; in CI a missing device fails the spec.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { compareSteps, runStep, StepResult } from '../scripts/check-webgpu';
import { deviceMissing, NO_DEVICE } from './webgpu-device';

let ref: Promise<StepResult> | undefined;

// tfjs-webgpu's own kernels, then with the WGSL kernels of models/kernels-webgpu (fused ones and the tiled matMul)
for (const wgsl of ['0', '1']) {
  test(`one refine step on webgpu${wgsl === '1' ? ' with the WGSL kernels' : ''} equals the same step on wasm (relative 1e-4)`, async () => {
    let gpu;
    // the wasm reference runs beside the first webgpu step
    const pending = runStep('webgpu', { WEBGPU_FUSED: wgsl, WEBGPU_MATMUL: wgsl });
    ref ??= runStep('wasm');
    try {
      gpu = await pending;
    } catch (err) {
      if (!NO_DEVICE.test((err as Error).message)) throw err;
      deviceMissing((err as Error).message);
      return;
    }
    const wasm = await ref;
    assert.is(gpu.backend, 'webgpu');
    assert.is(gpu.fusedWgsl, wgsl === '1');
    assert.is(gpu.wgslMatMul, wgsl === '1');
    assert.is(wasm.backend, 'wasm');
    const c = compareSteps(gpu, wasm);
    console.log(`webgpu${wgsl === '1' ? ' with WGSL kernels' : ''} (${c.adapter}) vs wasm: max relative difference ${c.maxRelative.toExponential(2)} (worst: ${c.worst[0].what})`);
    assert.ok(c.maxRelative < 1e-4, `max relative difference ${c.maxRelative}: ${JSON.stringify(c.worst)}`);
    // the comparison must cover the step, not only the easy parts
    assert.ok(c.comparedElements > 0.95 * (c.comparedElements + c.excludedElements), `${c.excludedElements} update elements left out`);
    assert.ok(c.worst.length > 0 && Number.isFinite(c.maxRelative));
  });
}

test.run();

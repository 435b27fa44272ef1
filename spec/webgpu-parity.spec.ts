/**
 * WebGPU equals wasm on a whole refine step (scripts/webgpu-parity-step.ts: encoder forward to
 * several blocks, NNA heads, NN lookup, NNA loss, backward, AdamW, EMA) from the same weights
 * and batch: loss, gradients and updates within 1e-4 relative (see scripts/check-webgpu.ts
 * for what is compared how). Runs on the software Vulkan of `npm run setup:vulkan` where there
 * is no GPU; in CI a missing device fails the spec.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { compareSteps, runStep } from '../scripts/check-webgpu';
import { deviceMissing, NO_DEVICE } from './webgpu-device';

test('one refine step on webgpu equals the same step on wasm (relative 1e-4)', async () => {
  let gpu;
  try {
    gpu = await runStep('webgpu');
  } catch (err) {
    if (!NO_DEVICE.test((err as Error).message)) throw err;
    deviceMissing((err as Error).message);
    return;
  }
  const ref = await runStep('wasm');
  assert.is(gpu.backend, 'webgpu');
  assert.is(ref.backend, 'wasm');
  const c = compareSteps(gpu, ref);
  console.log(`webgpu (${c.adapter}) vs wasm: max relative difference ${c.maxRelative.toExponential(2)} (worst: ${c.worst[0].what})`);
  assert.ok(c.maxRelative < 1e-4, `max relative difference ${c.maxRelative}: ${JSON.stringify(c.worst)}`);
  // the comparison must cover the step, not only the easy parts
  assert.ok(c.comparedElements > 0.95 * (c.comparedElements + c.excludedElements), `${c.excludedElements} update elements left out`);
  assert.ok(c.worst.length > 0 && Number.isFinite(c.maxRelative));
});

test.run();

/**
 * Device errors surface as thrown errors naming the op, never as a logged-only wrong result:
 * a rank-5 pad compiles to invalid WGSL in tfjs-webgpu ("cannot index type 'vec5'"), which
 * Dawn would only log while the op returned garbage. And a software adapter is not taken by
 * accident: without TFJS_BACKEND=webgpu the backend skips it, says why, and runs on wasm.
 * Each case runs in a child process (one tfjs backend per process).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { deviceMissing, LAVAPIPE_ICD, NO_DEVICE, ROOT } from './webgpu-device';

function node(code: string, env: Record<string, string | undefined>): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['-r', 'ts-node/register', '-e', code], { cwd: ROOT, env: { ...process.env, ...env } }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr }),
    );
  });
}

test('a WGSL validation error is thrown from the op that caused it, and later ops throw too', async () => {
  const run = await node(
    `const tf = require('@tensorflow/tfjs');
     (async () => {
       await require('./runtime/backend').initBackend(() => undefined);
       const ok = await tf.add(tf.ones([2, 2]), 1).data();
       console.log('before: ' + Array.from(ok).join(','));
       try { tf.pad(tf.ones([1, 2, 2, 2, 2]), [[0, 0], [1, 1], [0, 0], [0, 0], [0, 0]]); console.log('NOT THROWN'); }
       catch (e) { console.log('THROWN: ' + e.message.split('\\n')[0]); }
       try { await tf.add(tf.ones([2]), 1).data(); console.log('LATER OP RAN'); }
       catch (e) { console.log('LATER: ' + e.message.split('\\n')[0]); }
     })().catch((e) => { console.log('FAILED: ' + e.message); process.exit(3); });`,
    { TFJS_BACKEND: 'webgpu' },
  );
  if (NO_DEVICE.test(run.out)) {
    deviceMissing(run.out.split('\n').find((l) => NO_DEVICE.test(l))!);
    return;
  }
  assert.match(run.out, /before: 2,2,2,2/);
  assert.match(run.out, /THROWN: WebGPU error in PadProgram \(createShaderModule\): GPUValidationError: .*WGSL/);
  assert.not.match(run.out, /NOT THROWN/);
  assert.match(run.out, /LATER: WebGPU error in PadProgram/);
});

test('without TFJS_BACKEND a software adapter is skipped with a reason and wasm runs', async () => {
  if (!fs.existsSync(LAVAPIPE_ICD)) {
    deviceMissing(`${LAVAPIPE_ICD} missing`);
    return;
  }
  const lib = path.join(path.dirname(LAVAPIPE_ICD), 'sysroot', 'usr', 'lib', 'x86_64-linux-gnu');
  const run = await node(
    `require('./runtime/backend').initBackend().then((b) => console.log('BACKEND ' + b.tfBackend));`,
    // lavapipe as the system's only Vulkan driver, as a machine with Mesa and no GPU has it
    { TFJS_BACKEND: undefined, VK_ICD_FILENAMES: LAVAPIPE_ICD, LD_LIBRARY_PATH: lib, WASM_THREADS: '1' },
  );
  assert.match(run.out, /\[backend\] WebGPU skipped: the only WebGPU adapter is a software one \(software adapter: mesa/);
  assert.match(run.out, /BACKEND wasm/);
});

test.run();

/// <reference types="@webgpu/types" />
/**
 * tfjs's WebGPU backend in Node, on Dawn's prebuilt bindings (the npm package `webgpu`, which
 * carries dawn.node for Linux, macOS and Windows). Dawn drives Vulkan, Metal or D3D12.
 *
 * Three things make it usable for training here:
 * - Start-up order: `navigator.gpu` must exist before @tensorflow/tfjs-backend-webgpu is
 *   imported (it registers itself at import time only then). The adapter and device are made
 *   here, so the adapter can be checked (software or hardware) and the device's errors hooked,
 *   and the backend is registered on that device.
 * - Errors: Dawn reports WGSL and validation errors through the device's uncaptured-error
 *   event and otherwise only logs them, while the op returns garbage (seen: a rank-5 pad or
 *   slice compiles to invalid WGSL, "cannot index type 'vec5'", and the gradients come out
 *   wrong with no JS error). dawn.node fires that event synchronously inside the call that
 *   caused it, so the calls tfjs makes (shader module, pipeline, program run) are wrapped to
 *   throw at once, naming the tfjs program (the op). A lost device makes every later op and
 *   read throw.
 * - Software Vulkan (tests, CI): scripts/setup-vulkan.sh extracts Mesa 25's lavapipe and the
 *   Vulkan loader into .cache/vulkan; they are used only when WebGPU is forced. The loader
 *   and the newer libdrm are loaded here by absolute path before Dawn starts (LD_LIBRARY_PATH
 *   is read only when a process starts), so no environment has to be set by hand.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';

export interface AdapterSummary {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** A CPU implementation (lavapipe, SwiftShader, WARP), not a GPU. */
  software: boolean;
}

/** Where scripts/setup-vulkan.sh puts lavapipe; SOFTWARE_VULKAN_DIR overrides (the device kit). */
export function softwareVulkanDir(): string {
  return process.env.SOFTWARE_VULKAN_DIR ?? path.resolve(__dirname, '..', '.cache', 'vulkan');
}

/**
 * Loads a shared library into the process by path so that later dlopen() calls by name find it.
 * process.dlopen is Node's addon loader: it fails with "did not self-register" on a plain
 * library, after loading it; RTLD_NODELETE keeps it loaded through the close that follows.
 */
function preloadLibrary(file: string): boolean {
  const RTLD_NODELETE = 0x1000;
  try {
    process.dlopen({ exports: {} } as NodeJS.Module, file, os.constants.dlopen.RTLD_NOW! | os.constants.dlopen.RTLD_GLOBAL! | RTLD_NODELETE);
  } catch (e) {
    if (!/self-register/.test(String((e as Error).message))) return false;
  }
  return true;
}

/** Makes the project's lavapipe (and, where the system has none, its Vulkan loader) visible to Dawn. */
function useSoftwareVulkan(log: (line: string) => void): void {
  const dir = softwareVulkanDir();
  const icd = path.join(dir, 'icd.json');
  if (!fs.existsSync(icd)) return;
  const lib = path.join(dir, 'sysroot', 'usr', 'lib', 'x86_64-linux-gnu');
  // lavapipe from Mesa 25 needs libdrm >= 2.4.121 (Debian 12 has 2.4.114)
  preloadLibrary(path.join(lib, 'libdrm.so.2'));
  if (!preloadLibrary('libvulkan.so.1')) preloadLibrary(path.join(lib, 'libvulkan.so.1'));
  // added to the drivers the loader finds, so a hardware GPU still wins the adapter request
  if (!process.env.VK_ICD_FILENAMES && !process.env.VK_DRIVER_FILES) {
    process.env.VK_ADD_DRIVER_FILES = [process.env.VK_ADD_DRIVER_FILES, icd].filter(Boolean).join(path.delimiter);
  }
  process.env.XDG_RUNTIME_DIR ??= os.tmpdir();
  log(`[backend] software Vulkan (lavapipe) from ${dir} offered to Dawn`);
}

interface DawnModule {
  create(flags: string[]): GPU;
  globals: Record<string, unknown>;
}

/** dawn.node: DAWN_NODE names the file (the device kit), else the `webgpu` package. */
function loadDawn(): DawnModule {
  if (process.env.DAWN_NODE) return require(process.env.DAWN_NODE) as DawnModule;
  return require('webgpu') as DawnModule;
}

function describe(adapter: GPUAdapter): AdapterSummary {
  // GPUAdapter.info is newer than the @webgpu/types that tfjs-backend-webgpu pins
  const info = (adapter as unknown as { info: GPUAdapterInfo & { isFallbackAdapter?: boolean } }).info;
  const text = `${info.vendor} ${info.architecture} ${info.device} ${info.description}`;
  return {
    vendor: info.vendor,
    architecture: info.architecture,
    device: info.device,
    description: info.description,
    software: info.isFallbackAdapter === true || /llvmpipe|lavapipe|swiftshader|software|microsoft basic render/i.test(text),
  };
}

export function adapterLine(a: AdapterSummary): string {
  return `${a.software ? 'software' : 'hardware'} adapter: ${[a.vendor, a.architecture, a.device].filter(Boolean).join(' / ')}${a.description ? ` (${a.description})` : ''}`;
}

/** Thrown by every later op or read once the device has reported an error or was lost. */
export class WebGpuDeviceError extends Error {}

/** The device the backend runs on (for the test hook below). */
let startedDevice: GPUDevice | undefined;

/**
 * Test hook (spec/webgpu-lost.spec.ts): with WEBGPU_DESTROY_AFTER_STEP=N the training driver's
 * call after step N destroys the device for real, as a driver reset or a GPU gone from the bus
 * loses it: later ops are no-ops in Dawn and reads fail.
 */
export function destroyDeviceIfAsked(step: number): void {
  if (!startedDevice || process.env.WEBGPU_DESTROY_AFTER_STEP !== String(step)) return;
  console.log(`[backend] WEBGPU_DESTROY_AFTER_STEP=${step}: destroying the WebGPU device`);
  startedDevice.destroy();
}

export type WebGpuStart =
  | { ok: true; adapter: AdapterSummary }
  | { ok: false; reason: string; adapter?: AdapterSummary };

/**
 * Finds an adapter and, when it is acceptable (hardware, or any adapter with allowSoftware),
 * registers tfjs's webgpu backend on a device whose errors throw. Does not select the backend.
 */
export async function startWebGpu(opts: { allowSoftware: boolean; log: (line: string) => void }): Promise<WebGpuStart> {
  if (opts.allowSoftware) useSoftwareVulkan(opts.log);
  else if (process.platform === 'linux' && !preloadLibrary('libvulkan.so.1')) {
    return { ok: false, reason: 'no Vulkan loader (libvulkan.so.1) on this system; see README "GPU"' };
  }
  let dawn: DawnModule;
  try {
    dawn = loadDawn();
  } catch (e) {
    return { ok: false, reason: `dawn.node (package webgpu) does not load on ${process.platform}-${process.arch}: ${(e as Error).message}` };
  }
  try {
    return await startOnDawn(dawn, opts.allowSoftware);
  } catch (e) {
    return { ok: false, reason: `WebGPU did not start: ${(e as Error).message}` };
  }
}

async function startOnDawn(dawn: DawnModule, allowSoftware: boolean): Promise<WebGpuStart> {
  const g = globalThis as unknown as { navigator?: { gpu?: GPU } };
  const gpu = dawn.create([]);
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) {
    return { ok: false, reason: 'no WebGPU adapter (no Vulkan/Metal/D3D12 driver found; see README "GPU")' };
  }
  const summary = describe(adapter);
  if (summary.software && !allowSoftware) {
    return { ok: false, adapter: summary, reason: `the only WebGPU adapter is a software one (${adapterLine(summary)}); TFJS_BACKEND=webgpu uses it anyway` };
  }
  const limits = adapter.limits;
  const device = await adapter.requestDevice({
    requiredFeatures: adapter.features.has('timestamp-query') ? ['timestamp-query'] : [],
    // as tfjs's own factory: the adapter's maxima, not WebGPU's small defaults
    requiredLimits: {
      maxComputeWorkgroupStorageSize: limits.maxComputeWorkgroupStorageSize,
      maxComputeWorkgroupsPerDimension: limits.maxComputeWorkgroupsPerDimension,
      maxStorageBufferBindingSize: limits.maxStorageBufferBindingSize,
      maxBufferSize: limits.maxBufferSize,
      maxComputeWorkgroupSizeX: limits.maxComputeWorkgroupSizeX,
      maxComputeInvocationsPerWorkgroup: limits.maxComputeInvocationsPerWorkgroup,
      maxStorageBuffersPerShaderStage: limits.maxStorageBuffersPerShaderStage,
    },
  });
  // tfjs-backend-webgpu checks navigator.gpu when imported and when its backend is constructed
  Object.assign(globalThis, dawn.globals);
  if (g.navigator) Object.defineProperty(g.navigator, 'gpu', { value: gpu, configurable: true });
  else Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true, writable: true });
  const { WebGPUBackend } = require('@tensorflow/tfjs-backend-webgpu') as typeof import('@tensorflow/tfjs-backend-webgpu');
  const backend = new WebGPUBackend(device, (adapter as unknown as { info: GPUAdapterInfo }).info);
  throwOnDeviceErrors(device, backend);
  startedDevice = device;
  tf.removeBackend('webgpu');
  tf.registerBackend('webgpu', () => backend, 3);
  chunkAddN();
  return { ok: true, adapter: summary };
}

/**
 * tfjs-webgpu's AddN binds every input as a storage buffer and fails validation with more
 * inputs than the device's per-stage limit (8 by default, 16 on lavapipe); its Concat splits,
 * AddN does not (seen: a gradient norm over 14 parameters). This AddN sums in chunks that fit.
 */
function chunkAddN(): void {
  const original = tf.getKernel('AddN', 'webgpu');
  if (!original) return;
  tf.unregisterKernel('AddN', 'webgpu');
  tf.registerKernel({
    kernelName: 'AddN',
    backendName: 'webgpu',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const gpuBackend = backend as unknown as { device: GPUDevice; disposeData(id: object): void };
      const max = gpuBackend.device.limits.maxStorageBuffersPerShaderStage - 1;
      let terms = inputs as unknown as tf.TensorInfo[];
      const partial: tf.TensorInfo[] = [];
      while (terms.length > max) {
        const next: tf.TensorInfo[] = [];
        for (let i = 0; i < terms.length; i += max) {
          const chunk = terms.slice(i, i + max);
          if (chunk.length === 1) next.push(chunk[0]);
          else next.push(original.kernelFunc({ inputs: chunk as unknown as tf.NamedTensorInfoMap, backend, attrs }) as tf.TensorInfo);
        }
        partial.push(...next.filter((t) => !terms.includes(t)));
        terms = next;
      }
      const out = original.kernelFunc({ inputs: terms as unknown as tf.NamedTensorInfoMap, backend, attrs }) as tf.TensorInfo;
      for (const t of partial) gpuBackend.disposeData(t.dataId);
      return out;
    },
  });
}

/**
 * Turns the device's error reports into exceptions thrown from the call that caused them
 * (dawn.node reports synchronously), naming the tfjs program; later ops and reads throw too.
 */
function throwOnDeviceErrors(device: GPUDevice, backend: import('@tensorflow/tfjs-backend-webgpu').WebGPUBackend): void {
  let pending: string | undefined;
  let failed: WebGpuDeviceError | undefined;
  let current = 'no op yet';
  device.onuncapturederror = (ev) => {
    pending ??= `${ev.error.constructor.name}: ${ev.error.message.trim()}`;
  };
  // any loss counts, 'destroyed' too: nothing in this process destroys the device but the
  // WEBGPU_DESTROY_AFTER_STEP test hook, and Dawn's ops on a lost device are silent no-ops
  void device.lost.then((info) => {
    failed ??= new WebGpuDeviceError(`WebGPU device lost (${info.reason}: ${info.message.trim()}); last op ${current}`);
  });
  const check = (where: string) => {
    if (failed) throw failed;
    if (pending === undefined) return;
    failed = new WebGpuDeviceError(`WebGPU error in ${where}: ${pending}`);
    throw failed;
  };
  const wrapDevice = <K extends 'createShaderModule' | 'createComputePipeline'>(name: K) => {
    const original = device[name].bind(device) as (d: { label?: string }) => unknown;
    (device as unknown as Record<string, unknown>)[name] = (descriptor: { label?: string }) => {
      const out = original(descriptor);
      check(`${descriptor.label ?? 'unnamed program'} (${name})`);
      return out;
    };
  };
  wrapDevice('createShaderModule');
  wrapDevice('createComputePipeline');
  const run = backend.runWebGPUProgram.bind(backend);
  backend.runWebGPUProgram = (program, ...rest) => {
    current = program.constructor.name;
    check(`${current} (before it ran: an earlier op)`);
    const out = run(program, ...rest);
    check(current);
    return out;
  };
  const read = backend.read.bind(backend);
  backend.read = async (dataId) => {
    let values;
    try {
      values = await read(dataId);
    } catch (e) {
      // a lost device rejects the buffer mapping (AbortError), maybe before its lost event
      throw failed ?? new WebGpuDeviceError(`WebGPU read failed after ${current} (${String(e)}): the device is gone`);
    }
    check(`a read after ${current}`);
    return values;
  };
}

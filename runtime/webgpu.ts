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
 * - Quiet probing: unless WebGPU is forced, the adapter is first looked for in a child process
 *   whose stderr is dropped. Dawn, the Vulkan loader and Mesa's WSI write to the process's
 *   native stderr (seen on a machine with a Vulkan loader and no driver: "error:
 *   XDG_RUNTIME_DIR is invalid or not set" twice, "vkCreateInstance: Found no drivers!" and a
 *   Dawn source line), which Node cannot redirect in-process; only a hardware adapter brings
 *   Dawn into this process.
 * - Features: the instance is created with Dawn's toggles allow_unsafe_apis (the experimental
 *   chromium-experimental-subgroup-matrix, tensor cores through VK_KHR_cooperative_matrix) and
 *   vulkan_enable_f16_on_nvidia (NVIDIA drivers before 615.71 otherwise withhold shader-f16),
 *   and the device asks for shader-f16, subgroups and subgroup matrices where the adapter
 *   offers them. WGSL `enable` lines must open a module, and tfjs prepends its own
 *   declarations to a program's code, so shader modules get their `enable` lines hoisted.
 * - Software Vulkan (tests, CI): scripts/setup-vulkan.sh extracts Mesa 25's lavapipe and the
 *   Vulkan loader into .cache/vulkan; they are used only when WebGPU is forced. The loader
 *   and the newer libdrm are loaded here by absolute path before Dawn starts (LD_LIBRARY_PATH
 *   is read only when a process starts), so no environment has to be set by hand.
 */
import { execFile } from 'child_process';
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

/** One matrix size the adapter's subgroups multiply (Dawn's GPUSubgroupMatrixConfig). */
export interface SubgroupMatrixConfig {
  componentType: string;
  resultComponentType: string;
  M: number;
  N: number;
  K: number;
}

/** What the adapter offers beyond core WebGPU, and what the device was given. */
export interface GpuCapabilities {
  /** Every feature the adapter offers, sorted. */
  adapterFeatures: string[];
  /** The features the device was created with. */
  deviceFeatures: string[];
  /** Empty where the adapter has no chromium-experimental-subgroup-matrix. */
  subgroupMatrixConfigs: SubgroupMatrixConfig[];
  subgroupMinSize?: number;
  subgroupMaxSize?: number;
  /** The limits a train step runs into. */
  limits: Record<string, number>;
}

/**
 * Dawn instance toggles: allow_unsafe_apis exposes the experimental subgroup-matrix feature,
 * vulkan_enable_f16_on_nvidia shader-f16 on NVIDIA drivers older than 615.71 (and with it the
 * f16 matrix configs). One flag, comma-separated, as dawn.node parses it.
 */
export const DAWN_FLAGS = ['enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia'];

/** Features the device asks for where the adapter has them. */
export const OPTIONAL_FEATURES = ['timestamp-query', 'shader-f16', 'subgroups', 'chromium-experimental-subgroup-matrix'];

const LIMITS = [
  'maxComputeWorkgroupStorageSize', 'maxComputeWorkgroupsPerDimension', 'maxStorageBufferBindingSize', 'maxBufferSize',
  'maxComputeWorkgroupSizeX', 'maxComputeInvocationsPerWorkgroup', 'maxStorageBuffersPerShaderStage',
] as const;

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
  process.env.XDG_RUNTIME_DIR ||= os.tmpdir();
  log(`[backend] software Vulkan (lavapipe) from ${dir} offered to Dawn`);
}

interface DawnModule {
  create(flags: string[]): GPU;
  globals: Record<string, unknown>;
}

/** dawn.node: DAWN_NODE names the file (the device kit), else the `webgpu` package. */
function dawnPath(): string {
  return process.env.DAWN_NODE ?? require.resolve('webgpu');
}

/** GPUAdapter.info with Dawn's additions (newer than the @webgpu/types that tfjs-backend-webgpu pins). */
interface DawnAdapterInfo extends GPUAdapterInfo {
  isFallbackAdapter?: boolean;
  subgroupMinSize?: number;
  subgroupMaxSize?: number;
  subgroupMatrixConfigs?: SubgroupMatrixConfig[];
}

const adapterInfo = (adapter: GPUAdapter) => (adapter as unknown as { info: DawnAdapterInfo }).info;

function summarise(info: Pick<DawnAdapterInfo, 'vendor' | 'architecture' | 'device' | 'description' | 'isFallbackAdapter'>): AdapterSummary {
  const text = `${info.vendor} ${info.architecture} ${info.device} ${info.description}`;
  return {
    vendor: info.vendor,
    architecture: info.architecture,
    device: info.device,
    description: info.description,
    software: info.isFallbackAdapter === true || /llvmpipe|lavapipe|swiftshader|software|microsoft basic render/i.test(text),
  };
}

function capabilities(adapter: GPUAdapter, device: GPUDevice): GpuCapabilities {
  const info = adapterInfo(adapter);
  return {
    adapterFeatures: [...adapter.features].sort(),
    deviceFeatures: [...device.features].sort(),
    // plain objects (Dawn's are wrappers whose fields JSON.stringify does not see)
    subgroupMatrixConfigs: (info.subgroupMatrixConfigs ?? []).map((c) => ({ componentType: c.componentType, resultComponentType: c.resultComponentType, M: c.M, N: c.N, K: c.K })),
    subgroupMinSize: info.subgroupMinSize,
    subgroupMaxSize: info.subgroupMaxSize,
    limits: Object.fromEntries(LIMITS.map((k) => [k, device.limits[k]])),
  };
}

export type Precision = 'fp32' | 'mixed';

/**
 * How matMuls run: 'fp32' (tfjs's or the tiled WGSL kernel), 'subgroup-matrix' (f16 tiles on
 * the tensor cores through chromium-experimental-subgroup-matrix, f32 accumulate) or
 * 'f16-tiles' (f16 operands in workgroup memory, f32 multiply-accumulate on the ordinary ALUs:
 * the same rounding of the operands without tensor cores, for adapters with shader-f16 only,
 * lavapipe among them).
 */
export interface PrecisionPath {
  requested: Precision;
  matMul: 'fp32' | 'subgroup-matrix' | 'f16-tiles';
  /** The matrix size the subgroup-matrix kernel uses, and the subgroup size (its workgroup). */
  config?: SubgroupMatrixConfig;
  lanes?: number;
  reason: string;
}

/** The precision path the adapter allows for `requested`, with the reason (for the log line). */
export function choosePrecision(requested: Precision, c: GpuCapabilities): PrecisionPath {
  if (requested === 'fp32') return { requested, matMul: 'fp32', reason: 'fp32 asked (WEBGPU_PRECISION=mixed for f16 matMuls)' };
  if (!c.deviceFeatures.includes('shader-f16')) return { requested, matMul: 'fp32', reason: 'the adapter lacks shader-f16' };
  // f16 operands, f32 results, 8 or 16 deep: what the kernel is written for
  const config = c.subgroupMatrixConfigs
    .filter((m) => m.componentType === 'f16' && m.resultComponentType === 'f32' && m.M === m.N && m.N === m.K && (m.M === 8 || m.M === 16))
    .sort((a, b) => b.M * b.N * b.K - a.M * a.N * a.K)[0];
  // the kernel's workgroup is one subgroup: its size must be fixed
  const lanes = c.subgroupMinSize === c.subgroupMaxSize ? c.subgroupMaxSize : undefined;
  const matrices = c.deviceFeatures.includes('chromium-experimental-subgroup-matrix') && c.deviceFeatures.includes('subgroups');
  if (config && matrices && lanes !== undefined && lanes <= 128) {
    return { requested, matMul: 'subgroup-matrix', config, lanes, reason: `subgroup matrices f16 ${config.M}x${config.N}x${config.K}, f32 accumulate, ${lanes}-lane subgroups` };
  }
  const why = !c.adapterFeatures.includes('chromium-experimental-subgroup-matrix')
    ? 'the adapter lacks chromium-experimental-subgroup-matrix'
    : !config
      ? 'the adapter offers no square f16 -> f32 subgroup matrix of 8 or 16'
      : `the subgroup size varies (${c.subgroupMinSize}-${c.subgroupMaxSize})`;
  return { requested, matMul: 'f16-tiles', reason: `${why}: f16 tiles, f32 multiply-accumulate on the ALUs (no tensor cores)` };
}

/** One line: the features that decide the precision path, and the matrix sizes. */
export function capabilitiesLine(c: GpuCapabilities): string {
  const has = (f: string) => `${f} ${c.adapterFeatures.includes(f) ? 'yes' : 'no'}`;
  const configs = c.subgroupMatrixConfigs.map((m) => `${m.componentType}->${m.resultComponentType} ${m.M}x${m.N}x${m.K}`).join(', ');
  return `${['shader-f16', 'subgroups', 'chromium-experimental-subgroup-matrix'].map(has).join(', ')}; subgroup size ${c.subgroupMinSize ?? '?'}-${c.subgroupMaxSize ?? '?'}; subgroup matrix configs: ${configs || 'none'}`;
}

export function adapterLine(a: AdapterSummary): string {
  return `${a.software ? 'software' : 'hardware'} adapter: ${[a.vendor, a.architecture, a.device].filter(Boolean).join(' / ')}${a.description ? ` (${a.description})` : ''}`;
}

/** Thrown by every later op or read once the device has reported an error or was lost. */
export class WebGpuDeviceError extends Error {}

/** The device the backend runs on (the test hook below, and the kernels that run their own pipelines). */
let startedDevice: GPUDevice | undefined;
let startedCapabilities: GpuCapabilities | undefined;

/** The started WebGPU device and what it offers (undefined before startWebGpu succeeded). */
export function webGpuDevice(): { device: GPUDevice; capabilities: GpuCapabilities } | undefined {
  return startedDevice && startedCapabilities && { device: startedDevice, capabilities: startedCapabilities };
}

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
  | { ok: true; adapter: AdapterSummary; capabilities: GpuCapabilities }
  | { ok: false; reason: string; adapter?: AdapterSummary };

/**
 * Looks for an adapter in a child process (same Node, same dawn.node, same toggles) and drops
 * its stderr: the adapter's summary, or null where there is none. Only the answer comes back.
 */
function probeQuietly(dawnPath: string): Promise<AdapterSummary | null> {
  const code = `
    const os = require('os');
    try { process.dlopen({ exports: {} }, 'libvulkan.so.1', os.constants.dlopen.RTLD_NOW | os.constants.dlopen.RTLD_GLOBAL | 0x1000); } catch (e) {}
    const done = (v) => { process.stdout.write(JSON.stringify(v)); process.exit(0); };
    require(process.env.PROBE_DAWN).create(JSON.parse(process.env.PROBE_FLAGS)).requestAdapter({ powerPreference: 'high-performance' }).then((a) => {
      if (!a) return done(null);
      const i = a.info;
      done({ vendor: i.vendor, architecture: i.architecture, device: i.device, description: i.description, isFallbackAdapter: i.isFallbackAdapter === true });
    }, () => done(null));`;
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['-e', code],
      // Mesa's WSI insists on an XDG_RUNTIME_DIR; a missing one is only a complaint on stderr
      { env: { ...process.env, PROBE_DAWN: dawnPath, PROBE_FLAGS: JSON.stringify(DAWN_FLAGS), XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR || os.tmpdir() }, timeout: 60_000 },
      (_err, stdout) => {
        try {
          const info = JSON.parse(stdout) as DawnAdapterInfo | null;
          resolve(info ? summarise(info) : null);
        } catch {
          resolve(null);
        }
      },
    );
  });
}

/**
 * Finds an adapter and, when it is acceptable (hardware, or any adapter with allowSoftware),
 * registers tfjs's webgpu backend on a device whose errors throw. Does not select the backend.
 */
export async function startWebGpu(opts: { allowSoftware: boolean; log: (line: string) => void }): Promise<WebGpuStart> {
  if (opts.allowSoftware) useSoftwareVulkan(opts.log);
  else if (process.platform === 'linux' && !preloadLibrary('libvulkan.so.1')) {
    return { ok: false, reason: 'no Vulkan loader (libvulkan.so.1) on this system; see docs/gpu.md' };
  }
  let dawn: DawnModule;
  try {
    const file = dawnPath();
    if (!opts.allowSoftware) {
      // not forced: a software or missing adapter must leave no trace on stderr
      const found = await probeQuietly(file);
      if (!found) return { ok: false, reason: 'no WebGPU adapter (no Vulkan/Metal/D3D12 driver found; see docs/gpu.md)' };
      if (found.software) return softwareOnly(found);
    }
    process.env.XDG_RUNTIME_DIR ||= os.tmpdir();
    dawn = require(file) as DawnModule;
  } catch (e) {
    return { ok: false, reason: `dawn.node (package webgpu) does not load on ${process.platform}-${process.arch}: ${(e as Error).message}` };
  }
  try {
    return await startOnDawn(dawn, opts.allowSoftware);
  } catch (e) {
    return { ok: false, reason: `WebGPU did not start: ${(e as Error).message}` };
  }
}

function softwareOnly(summary: AdapterSummary): WebGpuStart {
  return { ok: false, adapter: summary, reason: `the only WebGPU adapter is a software one (${adapterLine(summary)}); TFJS_BACKEND=webgpu uses it anyway` };
}

async function startOnDawn(dawn: DawnModule, allowSoftware: boolean): Promise<WebGpuStart> {
  const g = globalThis as unknown as { navigator?: { gpu?: GPU } };
  const gpu = dawn.create(DAWN_FLAGS);
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) {
    return { ok: false, reason: 'no WebGPU adapter (no Vulkan/Metal/D3D12 driver found; see docs/gpu.md)' };
  }
  const summary = summarise(adapterInfo(adapter));
  if (summary.software && !allowSoftware) return softwareOnly(summary);
  const limits = adapter.limits;
  const device = await adapter.requestDevice({
    // the experimental names are not in @webgpu/types' GPUFeatureName
    requiredFeatures: OPTIONAL_FEATURES.filter((f) => adapter.features.has(f)) as GPUFeatureName[],
    // as tfjs's own factory: the adapter's maxima, not WebGPU's small defaults
    requiredLimits: Object.fromEntries(LIMITS.map((k) => [k, limits[k]])),
  });
  // tfjs-backend-webgpu checks navigator.gpu when imported and when its backend is constructed
  Object.assign(globalThis, dawn.globals);
  if (g.navigator) Object.defineProperty(g.navigator, 'gpu', { value: gpu, configurable: true });
  else Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true, writable: true });
  const { WebGPUBackend } = require('@tensorflow/tfjs-backend-webgpu') as typeof import('@tensorflow/tfjs-backend-webgpu');
  const backend = new WebGPUBackend(device, (adapter as unknown as { info: GPUAdapterInfo }).info);
  throwOnDeviceErrors(device, backend);
  startedDevice = device;
  startedCapabilities = capabilities(adapter, device);
  tf.removeBackend('webgpu');
  tf.registerBackend('webgpu', () => backend, 3);
  chunkAddN();
  return { ok: true, adapter: summary, capabilities: startedCapabilities };
}

/**
 * WGSL wants its `enable` directives before any declaration; tfjs-backend-webgpu prepends its
 * own declarations to a program's code. Moves every `enable ...;` line to the top, once each.
 */
export function hoistEnables(code: string): string {
  const enables = new Set<string>();
  const rest = code.replace(/^[ \t]*enable[ \t]+[\w, \t]+;[ \t]*$/gm, (line) => {
    enables.add(line.trim());
    return '';
  });
  return enables.size ? `${[...enables].join('\n')}\n${rest}` : code;
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
    const original = device[name].bind(device) as (d: { label?: string; code?: string }) => unknown;
    (device as unknown as Record<string, unknown>)[name] = (descriptor: { label?: string; code?: string }) => {
      const out = original(descriptor.code === undefined ? descriptor : { ...descriptor, code: hoistEnables(descriptor.code) });
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

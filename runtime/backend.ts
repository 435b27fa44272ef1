/**
 * Tensor backend selection, shared by every pipeline. Order: tfjs-node-gpu, WebGPU on a
 * hardware adapter (runtime/webgpu.ts), tfjs-node, wasm. The native packages are
 * optionalDependencies (their install downloads libtensorflow, which fails on machines without
 * outside network), so they are loaded dynamically and a failure to load falls through to the
 * next, with the reason logged. TFJS_BACKEND=gpu|webgpu|node|wasm forces one (webgpu then also
 * takes a software adapter, such as the lavapipe of `npm run setup:vulkan`) and a failure stops.
 * WEBGPU_FUSED=1 adds the fused WGSL kernels on webgpu, WEBGPU_MATMUL=1 the tiled WGSL matMul
 * (models/kernels-webgpu), WEBGPU_FLASH=1 the flash attention forward; WEBGPU_PRECISION=mixed (or initBackend's `precision`) runs the
 * linear layers' matMuls with f16 operands where the adapter allows (runtime/webgpu.ts
 * choosePrecision: tensor cores through subgroup matrices, else f16 tiles on shader-f16), and
 * the log line names the path taken and why. WEBGPU_POOL_MIB caps the GPU memory tfjs-webgpu
 * keeps in freed buffers for reuse (models/kernels-webgpu/buffer-pool.ts).
 */
import * as tf from '@tensorflow/tfjs';
import { match } from 'ts-pattern';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { kernelsUseRelaxedSimd, registerWasmKernels } from '../models/kernels';
import { registerFlashAttentionKernel, registerMatMulKernels, registerWebGpuKernels, WGSL_KERNELS } from '../models/kernels-webgpu';
import { enableWasmThreads } from './wasm-threads';
import { boundBufferPool, BufferPoolStats } from '../models/kernels-webgpu/buffer-pool';
import { registerMixedMatMulKernels, verifiedPrecision } from '../models/kernels-webgpu/matmul-f16';
import { AdapterSummary, adapterLine, capabilitiesLine, choosePrecision, GpuCapabilities, Precision, PrecisionPath, startWebGpu, WebGpuDeviceError, webGpuDevice } from './webgpu';

export { destroyDeviceIfAsked } from './webgpu';

export type BackendChoice = 'gpu' | 'webgpu' | 'node' | 'wasm';
const CHOICES: BackendChoice[] = ['gpu', 'webgpu', 'node', 'wasm'];

export interface BackendInfo {
  choice: BackendChoice;
  tfBackend: string;
  threads: number;
  /** Threads of tfjs-wasm's own kernels (0 on other backends). */
  poolThreads: number;
  /**
   * Threads of the fused wasm kernels (attention, LayerNorm, GELU, AdamW, transpose; models/kernels); 0
   * when they are off (other backends, or FUSED_KERNELS=0 for comparison).
   */
  fusedKernels: number;
  /** The WebGPU adapter (webgpu only). */
  adapter?: AdapterSummary;
  /** The fused WGSL kernels are registered (webgpu with WEBGPU_FUSED=1; models/kernels-webgpu). */
  fusedWgsl?: boolean;
  /** The tiled WGSL matMul takes the linear layers (webgpu with WEBGPU_MATMUL=1). */
  wgslMatMul?: boolean;
  /** The flash attention forward takes attention (webgpu with WEBGPU_FLASH=1). */
  flashAttention?: boolean;
  /** Features, subgroup sizes and matrix configs of the WebGPU adapter (webgpu only). */
  capabilities?: GpuCapabilities;
  /** The matMul precision taken and why (webgpu only). */
  precision?: PrecisionPath;
  /** The freed-buffer pool's cap and peaks so far (webgpu only; read it when reporting). */
  pool?: () => BufferPoolStats;
}

export interface BackendOptions {
  /** 'mixed': f16 matMul operands on webgpu where the adapter allows (default WEBGPU_PRECISION, else fp32). */
  precision?: Precision;
  /** MiB of freed GPU buffers kept for reuse (default WEBGPU_POOL_MIB, else 2048). */
  poolMiB?: number;
}

let active: BackendInfo | undefined;

function tryRequire(name: string): boolean {
  try {
    require(name);
    return true;
  } catch {
    return false;
  }
}

async function tryBackend(choice: BackendChoice, forced: boolean, log: (line: string) => void, opts: BackendOptions): Promise<BackendInfo | undefined> {
  return match(choice)
    .with('gpu', async () =>
      tryRequire('@tensorflow/tfjs-node-gpu') && (await tf.setBackend('tensorflow'))
        ? { choice, tfBackend: 'tensorflow', threads: 0, poolThreads: 0, fusedKernels: 0 }
        : undefined,
    )
    .with('webgpu', async () => {
      const start = await startWebGpu({ allowSoftware: forced, log });
      if (!start.ok) {
        if (forced) throw new Error(`TFJS_BACKEND=webgpu: ${start.reason}`);
        log(`[backend] WebGPU skipped: ${start.reason}`);
        return undefined;
      }
      if (!(await tf.setBackend('webgpu'))) return undefined;
      // off by default until a GPU measures them faster (bench/train-step.ts, the device kit)
      const fusedWgsl = process.env.WEBGPU_FUSED === '1';
      if (fusedWgsl) registerWebGpuKernels();
      const wgslMatMul = process.env.WEBGPU_MATMUL === '1';
      if (wgslMatMul) registerMatMulKernels();
      const flashAttention = process.env.WEBGPU_FLASH === '1';
      if (flashAttention) registerFlashAttentionKernel();
      const precision = await verifiedPrecision(webGpuDevice()!.device, choosePrecision(opts.precision ?? precisionFromEnv(), start.capabilities));
      // registered last: in front of the tiled matMul, which takes what it leaves
      if (precision.matMul !== 'fp32') registerMixedMatMulKernels(precision);
      const pool = boundBufferPool(tf.backend(), opts.poolMiB ?? poolMiBFromEnv());
      log(`[backend] WebGPU capabilities: ${capabilitiesLine(start.capabilities)}`);
      return { choice, tfBackend: 'webgpu', threads: 0, poolThreads: 0, fusedKernels: 0, adapter: start.adapter, fusedWgsl, wgslMatMul, flashAttention, capabilities: start.capabilities, precision, pool };
    })
    .with('node', async () =>
      tryRequire('@tensorflow/tfjs-node') && (await tf.setBackend('tensorflow'))
        ? { choice, tfBackend: 'tensorflow', threads: 0, poolThreads: 0, fusedKernels: 0 }
        : undefined,
    )
    .with('wasm', async () => {
      require('@tensorflow/tfjs-backend-wasm');
      const fused = process.env.FUSED_KERNELS !== '0';
      // With the fused kernels taking the heavy ops, what is left to tfjs-wasm's own kernels is
      // small element-wise work, for which waking its thread pool costs more than it saves
      // (measured: refine step +3-5%, plain ViT train step unchanged), so that pool gets one thread.
      const { threads, poolThreads } = await enableWasmThreads({ poolThreads: fused ? 1 : undefined });
      if (!(await tf.setBackend('wasm'))) return undefined;
      const fusedKernels = fused ? registerWasmKernels(tf.backend() as BackendWasm, threads) : 0;
      return { choice, tfBackend: 'wasm', threads, poolThreads, fusedKernels };
    })
    .exhaustive();
}

function precisionFromEnv(): Precision {
  const v = process.env.WEBGPU_PRECISION ?? 'fp32';
  if (v !== 'fp32' && v !== 'mixed') throw new Error(`WEBGPU_PRECISION=${v}: expected fp32 or mixed`);
  return v;
}

function poolMiBFromEnv(): number {
  const v = process.env.WEBGPU_POOL_MIB ?? '2048';
  const n = Number(v);
  if (!(n >= 0) || !Number.isFinite(n)) throw new Error(`WEBGPU_POOL_MIB=${v}: expected a number of MiB >= 0`);
  return n;
}

/**
 * Picks and initialises the backend once per process and logs which one runs.
 * `log` may be silenced by tests.
 */
export async function initBackend(log: (line: string) => void = console.log, opts: BackendOptions = {}): Promise<BackendInfo> {
  if (active) return active;
  const forced = process.env.TFJS_BACKEND;
  if (forced !== undefined && !CHOICES.includes(forced as BackendChoice)) {
    throw new Error(`TFJS_BACKEND=${forced}: expected one of ${CHOICES.join(', ')}`);
  }
  const order: BackendChoice[] = forced ? [forced as BackendChoice] : CHOICES;
  for (const choice of order) {
    const info = await tryBackend(choice, forced !== undefined, log, opts);
    if (info) {
      active = info;
      log(`[backend] ${info.tfBackend} (${describeBackend(info)})`);
      return info;
    }
  }
  throw new Error(`no tfjs backend could start (tried ${order.join(', ')})`);
}

function describeBackend(info: BackendInfo): string {
  if (info.adapter) {
    const precision = info.precision ? `, precision ${info.precision.matMul === 'fp32' ? 'fp32' : `mixed (${info.precision.matMul})`}: ${info.precision.reason}` : '';
    return `${adapterLine(info.adapter)}${info.fusedWgsl ? `, fused WGSL kernels (${WGSL_KERNELS.join(', ')})` : ''}${info.wgslMatMul ? ', tiled WGSL matMul' : ''}${info.flashAttention ? ', flash attention' : ''}${precision}`;
  }
  if (info.choice !== 'wasm') return info.choice;
  const fused = info.fusedKernels ? `, fused kernels on ${info.fusedKernels}${kernelsUseRelaxedSimd() ? ', relaxed SIMD' : ''}` : '';
  return `wasm, ${info.threads} thread(s)${fused}, tfjs's own kernels on ${info.poolThreads}`;
}

/**
 * The error a training run stops with when its device failed (WebGPU: lost, or an error Dawn
 * reported), or undefined for any other error. It names the backend and the reason, says that
 * no checkpoint was written from the failed device (its reads fail, so none can be), names the
 * last complete checkpoint and how to resume: with TFJS_BACKEND set, that backend is taken
 * again unless the command changes it; without, the resumed run picks its backend anew.
 */
export function deviceFailure(err: unknown, at: { step: number; checkpoint: string; resume?: string }): Error | undefined {
  if (!(err instanceof WebGpuDeviceError)) return undefined;
  const forced = process.env.TFJS_BACKEND;
  const resume = !at.resume
    ? ''
    : forced
      ? ` Resume with: ${at.resume} (TFJS_BACKEND=${forced} is set, so that takes WebGPU again; TFJS_BACKEND=wasm ${at.resume} continues on the CPU).`
      : ` Resume with: ${at.resume}; it picks its backend anew and continues on the next one the selection finds (WebGPU if its device can be had again, else tfjs-node or wasm).`;
  const backend = active?.adapter ? `webgpu (${adapterLine(active.adapter)})` : 'webgpu';
  return new Error(
    `the ${backend} backend failed after step ${at.step}: ${err.message}. Stopped without writing a checkpoint from it; last complete checkpoint: ${at.checkpoint}.${resume}`,
    { cause: err },
  );
}

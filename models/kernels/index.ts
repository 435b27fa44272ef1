/**
 * SIMD kernels for tfjs's wasm backend, written in C beside this file: matMul in every
 * transpose form (gemm.c, in place of the backend's own), fused attention, LayerNorm, GELU and
 * AdamW, a tiled 2-D Transpose; plus a copy-free Identity. On wasm, tfjs runs these
 * computations as many small kernels, several on scalar or transposed slow paths; with these,
 * a ViT train step runs ~4x faster (bench/train-step.ts, FUSED_KERNELS=0 to compare).
 * models/ops.ts and models/adamw.ts use them while fusedKernelsActive() and compose the same
 * computations from tfjs ops otherwise (native/GPU backends, FUSED_KERNELS=0, or
 * setFusedKernels(false) for comparison); spec/wasm-kernels.spec.ts holds the two paths equal.
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { registerAdamWKernels } from './adamw';
import { registerAttentionKernels } from './attention';
import { registerGemmKernels } from './gemm';
import { registerGeluKernels } from './gelu';
import { registerLayerNormKernels } from './layer-norm';
import { registerTransposeKernel } from './transpose';
import { loadKernelModules } from './wasm-module';

/** Kernel threads of the registered kernels (0: not registered). */
let registeredThreads = 0;
let relaxedSimd = false;
let enabled = true;
let sumSquaresOnHeap: ((t: tf.Tensor) => number) | undefined;

/** The fused kernels apply: registered, not switched off, and wasm is the active backend. */
export function fusedKernelsActive(): boolean {
  return registeredThreads > 0 && enabled && tf.getBackend() === 'wasm';
}

/**
 * Kernel `name` is registered for the active backend and the fused kernels are not switched
 * off: the wasm C kernels here, or the WGSL ones of models/kernels-webgpu (WEBGPU_FUSED=1),
 * which take the same names and contracts where the math is the same.
 */
export function fusedKernel(name: string): boolean {
  return fusedKernelsOn() && tf.getKernel(name, tf.getBackend()) !== undefined;
}

/** The kernels use relaxed SIMD (fused multiply-add). */
export function kernelsUseRelaxedSimd(): boolean {
  return relaxedSimd;
}

/** The fused kernels are not switched off (setFusedKernels). */
export function fusedKernelsOn(): boolean {
  return enabled;
}

/** Switches the fused kernels (wasm and WGSL) off (or back on) after registration, to compare with the composed ops. */
export function setFusedKernels(on: boolean): void {
  enabled = on;
}

/** Sum of squares of a float32 tensor's elements, in one pass over the wasm heap (fused kernels active). */
export function sumSquares(t: tf.Tensor): number {
  return sumSquaresOnHeap!(t);
}

/** Runs a kernel by name; always returns the list of outputs. */
export function runKernel(name: string, inputs: Record<string, tf.Tensor>, attrs: tf.NamedAttrMap = {}): tf.Tensor[] {
  const out = tf.engine().runKernel(name, inputs, attrs);
  return Array.isArray(out) ? (out as tf.Tensor[]) : [out as tf.Tensor];
}

/**
 * Registers the kernels, run on `threads` threads where the heap is shared (the threaded
 * build). Returns the number of kernel threads.
 */
export function registerWasmKernels(backend: BackendWasm, threads: number): number {
  if (!registeredThreads) {
    const modules = loadKernelModules(backend, ['gemm', 'attention', 'layer-norm', 'gelu', 'adamw', 'transpose'], threads);
    registerGemmKernels(backend, modules, () => enabled);
    registerAttentionKernels(backend, modules);
    registerLayerNormKernels(backend, modules);
    registerGeluKernels(backend, modules);
    sumSquaresOnHeap = registerAdamWKernels(backend, modules);
    registerTransposeKernel(backend, modules, () => enabled);
    registerSharedIdentity(backend);
    registeredThreads = modules.threads;
    relaxedSimd = modules.relaxedSimd;
  }
  return registeredThreads;
}

/**
 * Identity (tf.clone) sharing its input's buffer, as tfjs's cpu backend and wasm's own Reshape
 * do, instead of copying it: gradient tapes clone every tensor a custom gradient saves, which
 * was ~4% of a wasm train step. Sound because tfjs kernels never write into their inputs.
 */
function registerSharedIdentity(backend: BackendWasm): void {
  tf.unregisterKernel(tf.Identity, 'wasm');
  tf.registerKernel({
    kernelName: tf.Identity,
    backendName: 'wasm',
    kernelFunc: ({ inputs }) => {
      const { x } = inputs as { x: tf.TensorInfo };
      backend.incRef(x.dataId);
      return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
    },
  });
}

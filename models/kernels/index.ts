/**
 * Fused SIMD kernels for tfjs's wasm backend (attention, LayerNorm, GELU), written in C beside
 * this file, and a copy-free Identity. On wasm, tfjs runs these computations as many small kernels, several on scalar
 * paths; fused, a ViT train step runs ~2x faster. models/ops.ts uses them when registered and
 * composes the same computations from tfjs ops otherwise (native/GPU backends, or
 * FUSED_KERNELS=0 for comparison); spec/wasm-kernels.spec.ts holds the two paths equal.
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { registerAttentionKernels } from './attention';
import { registerGeluKernels } from './gelu';
import { registerLayerNormKernels } from './layer-norm';
import { loadKernelModules } from './wasm-module';

/** Kernel threads of the registered kernels (0: not registered). */
let registeredThreads = 0;

export function wasmKernelsRegistered(): boolean {
  return registeredThreads > 0;
}

/**
 * Registers the kernels, run on `threads` threads where the heap is shared (the threaded
 * build). Returns the number of kernel threads.
 */
export function registerWasmKernels(backend: BackendWasm, threads: number): number {
  if (!registeredThreads) {
    const modules = loadKernelModules(backend, ['attention', 'layer-norm', 'gelu'], threads);
    registerAttentionKernels(backend, modules);
    registerLayerNormKernels(backend, modules);
    registerGeluKernels(backend, modules);
    registerSharedIdentity(backend);
    registeredThreads = modules.threads;
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

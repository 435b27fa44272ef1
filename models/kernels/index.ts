/**
 * Fused SIMD kernels for tfjs's wasm backend (attention, LayerNorm, GELU), written in C beside
 * this file. On wasm, tfjs runs these computations as many small kernels, several on scalar
 * paths; fused, a ViT train step runs ~2x faster. models/ops.ts uses them when registered and
 * composes the same computations from tfjs ops otherwise (native/GPU backends, or
 * FUSED_KERNELS=0 for comparison); spec/wasm-kernels.spec.ts holds the two paths equal.
 */
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { registerAttentionKernels } from './attention';
import { registerGeluKernels } from './gelu';
import { registerLayerNormKernels } from './layer-norm';

let registered = false;

export function wasmKernelsRegistered(): boolean {
  return registered;
}

export function registerWasmKernels(backend: BackendWasm): boolean {
  if (!registered) {
    registerAttentionKernels(backend);
    registerLayerNormKernels(backend);
    registerGeluKernels(backend);
    registered = true;
  }
  return registered;
}

/**
 * Fused WGSL kernels for tfjs's webgpu backend (WEBGPU_FUSED=1; runtime/backend.ts registers
 * them): LayerNorm, GELU and AdamW under the names and contracts of the wasm C kernels
 * (models/kernels), so models/ops.ts and models/adamw.ts run the same custom-gradient ops on
 * either backend, the softmax gradient of attention, the column sums of the bias gradients and
 * the global gradient norm of AdamW's clipping. Composed from tfjs ops, each of these
 * is many small dispatches; here one to four. Separately (WEBGPU_MATMUL=1), a tiled matMul for
 * the linear layers in front of tfjs's own (matmul.ts). spec/webgpu-kernels.spec.ts holds them
 * equal to the composed ops and tfjs's kernels (forward and gradients).
 */
import { registerAdamWKernels } from './adamw';
import { registerColumnSumsKernel } from './column-sums';
import { registerGeluKernels } from './gelu';
import { registerGlobalNormKernel } from './global-norm';
import { registerLayerNormKernels } from './layer-norm';
import { registerSoftmaxKernels } from './softmax';

export { registerFlashAttentionKernel } from './flash-attention';
export { registerMatMulKernels } from './matmul';

/** What the log line names. */
export const WGSL_KERNELS = ['LayerNorm', 'GELU', 'softmax gradient', 'AdamW', 'column sums', 'global norm'];

let registered = false;

export function registerWebGpuKernels(): void {
  if (registered) return;
  registerLayerNormKernels();
  registerGeluKernels();
  registerSoftmaxKernels();
  registerAdamWKernels();
  registerColumnSumsKernel();
  registerGlobalNormKernel();
  registered = true;
}

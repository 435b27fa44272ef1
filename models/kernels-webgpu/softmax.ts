/**
 * The gradient of softmax over the last axis as WGSL, 'FusedSoftmaxGrad' (y, dy -> dx = y (dy -
 * sum(dy y))): one workgroup per row, the row's sum in workgroup memory; one dispatch instead of
 * four. The forward needs nothing new: tfjs-webgpu's own Softmax kernel is already one
 * workgroup per row. models/ops.ts pairs the two where this kernel is registered.
 */
import * as tf from '@tensorflow/tfjs';
import { ProgramRunner, RowProgram } from './program';

export const FUSED_SOFTMAX_GRAD = 'FusedSoftmaxGrad';

class SoftmaxGradProgram extends RowProgram {
  constructor(shape: number[]) {
    const cols = shape[shape.length - 1];
    super(shape, ['y', 'dy'], tf.util.sizeFromShape(shape) / cols, cols);
  }
  protected body(): string {
    return `
      var s = 0.0;
      for (var c = tid; c < n; c += WG) { s += y[base + c] * dy[base + c]; }
      let total = workgroupSum(vec2<f32>(s, 0.0), tid).x;
      for (var c = tid; c < n; c += WG) { result[base + c] = y[base + c] * (dy[base + c] - total); }`;
  }
}

export function registerSoftmaxKernels(): void {
  tf.registerKernel({
    kernelName: FUSED_SOFTMAX_GRAD,
    backendName: 'webgpu',
    kernelFunc: ({ inputs, backend }) => {
      const { y, dy } = inputs as Record<string, tf.TensorInfo>;
      const program = new SoftmaxGradProgram(y.shape);
      return (backend as unknown as ProgramRunner).runWebGPUProgram(program, [y, dy], 'float32', program.rowUniforms());
    },
  });
}

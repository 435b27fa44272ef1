/**
 * AdamW (Loshchilov & Hutter 2019) as WGSL, registered for the webgpu backend under the wasm
 * kernel's name and attributes ('FusedAdamW': p, g, m, v -> p', m', v'; lr, decayFactor, beta1,
 * beta2, invBias1, invBias2, eps, gradScale) plus an input `scale` [1], a device scalar the
 * gradient is also multiplied by (the clip factor, which on the GPU stays on the GPU).
 * PyTorch's update order: p (1 - lr wd) - lr m_hat / (sqrt(v_hat) + eps). A tfjs program has
 * one output, so it is three dispatches (m', v', then p' from them) instead of ~14.
 */
import * as tf from '@tensorflow/tfjs';
import { FUSED_ADAMW } from '../kernels/adamw';
import { ElementwiseProgram, f32, ProgramRunner } from './program';

const UNIFORMS = 'lr : f32, decayFactor : f32, beta1 : f32, beta2 : f32, invBias1 : f32, invBias2 : f32, eps : f32, gradScale : f32,';
const ATTRS = ['lr', 'decayFactor', 'beta1', 'beta2', 'invBias1', 'invBias2', 'eps', 'gradScale'];

/** The scaled gradient, in every moment program. */
const GRADIENT = `let grad = g[index] * (uniforms.gradScale * scale[0]);`;

class AdamWFirstMomentProgram extends ElementwiseProgram {
  constructor(shape: number[], vec4: boolean) {
    super(shape, ['m', 'g', 'scale'], vec4, UNIFORMS, ['scale']);
  }
  protected body(): string {
    return `${GRADIENT} result[index] = m[index] * uniforms.beta1 + grad * (1.0 - uniforms.beta1);`;
  }
}

class AdamWSecondMomentProgram extends ElementwiseProgram {
  constructor(shape: number[], vec4: boolean) {
    super(shape, ['v', 'g', 'scale'], vec4, UNIFORMS, ['scale']);
  }
  protected body(): string {
    return `${GRADIENT} result[index] = v[index] * uniforms.beta2 + grad * grad * (1.0 - uniforms.beta2);`;
  }
}

class AdamWUpdateProgram extends ElementwiseProgram {
  constructor(shape: number[], vec4: boolean) {
    super(shape, ['p', 'm', 'v'], vec4, UNIFORMS);
  }
  protected body(): string {
    return `
      let update = (m[index] * uniforms.invBias1) / (sqrt(v[index] * uniforms.invBias2) + uniforms.eps);
      result[index] = p[index] * uniforms.decayFactor - update * uniforms.lr;`;
  }
}

export function registerAdamWKernels(): void {
  tf.registerKernel({
    kernelName: FUSED_ADAMW,
    backendName: 'webgpu',
    kernelFunc: ({ inputs, attrs, backend }) => {
      const gpu = backend as unknown as ProgramRunner;
      const { p, g, m, v, scale } = inputs as Record<string, tf.TensorInfo>;
      const uniforms = ATTRS.map((k) => f32(attrs![k] as number));
      const vec4 = tf.util.sizeFromShape(p.shape) % 4 === 0;
      const mNew = gpu.runWebGPUProgram(new AdamWFirstMomentProgram(p.shape, vec4), [m, g, scale], 'float32', uniforms);
      const vNew = gpu.runWebGPUProgram(new AdamWSecondMomentProgram(p.shape, vec4), [v, g, scale], 'float32', uniforms);
      const pNew = gpu.runWebGPUProgram(new AdamWUpdateProgram(p.shape, vec4), [p, mNew, vNew], 'float32', uniforms);
      return [pNew, mNew, vNew];
    },
  });
}

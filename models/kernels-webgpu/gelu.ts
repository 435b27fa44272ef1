/**
 * Exact GELU x Phi(x) (Hendrycks & Gimpel 2016; PyTorch's nn.GELU(), timm's default) as WGSL,
 * registered for the webgpu backend under the wasm kernels' names ('FusedGelu': x -> y;
 * 'FusedGeluGrad': x, dy -> dx = dy (Phi(x) + x phi(x))): one dispatch each way instead of
 * ~5 forward and ~9 backward. erf as tfjs's own Erf kernel and the wasm kernel take it
 * (Abramowitz & Stegun 7.1.26, |error| <= 1.5e-7). The bias before it needs no fusing: tfjs's
 * matMul already adds it in its epilogue.
 */
import * as tf from '@tensorflow/tfjs';
import { FUSED_GELU, FUSED_GELU_GRAD } from '../kernels/gelu';
import { ElementwiseProgram, ProgramRunner } from './program';

/** Phi(x) and phi(x) of a T (f32 or vec4). */
const NORMAL = `
  fn normalCdf(x : T) -> T {
    let z = x * 0.70710678118654752;
    let a = abs(z);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let poly = ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t;
    return 0.5 * (1.0 + sign(z) * (1.0 - poly * exp(-a * a)));
  }
  fn normalPdf(x : T) -> T {
    return 0.39894228040143268 * exp(-0.5 * x * x);
  }`;

class GeluProgram extends ElementwiseProgram {
  constructor(shape: number[], vec4: boolean) {
    super(shape, ['x'], vec4);
  }
  getUserCode(): string {
    return NORMAL + super.getUserCode();
  }
  protected body(): string {
    return `let v = x[index]; result[index] = v * normalCdf(v);`;
  }
}

class GeluGradProgram extends ElementwiseProgram {
  constructor(shape: number[], vec4: boolean) {
    super(shape, ['x', 'dy'], vec4);
  }
  getUserCode(): string {
    return NORMAL + super.getUserCode();
  }
  protected body(): string {
    return `let v = x[index]; result[index] = dy[index] * (normalCdf(v) + v * normalPdf(v));`;
  }
}

export function registerGeluKernels(): void {
  const vec4 = (t: tf.TensorInfo) => tf.util.sizeFromShape(t.shape) % 4 === 0;
  tf.registerKernel({
    kernelName: FUSED_GELU,
    backendName: 'webgpu',
    kernelFunc: ({ inputs, backend }) => {
      const { x } = inputs as Record<string, tf.TensorInfo>;
      return (backend as unknown as ProgramRunner).runWebGPUProgram(new GeluProgram(x.shape, vec4(x)), [x], 'float32');
    },
  });
  tf.registerKernel({
    kernelName: FUSED_GELU_GRAD,
    backendName: 'webgpu',
    kernelFunc: ({ inputs, backend }) => {
      const { x, dy } = inputs as Record<string, tf.TensorInfo>;
      return (backend as unknown as ProgramRunner).runWebGPUProgram(new GeluGradProgram(x.shape, vec4(x)), [x, dy], 'float32');
    },
  });
}

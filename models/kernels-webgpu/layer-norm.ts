/**
 * LayerNorm over the last axis of rows x [N, D] as WGSL, registered for the webgpu backend
 * under the wasm kernels' names and contracts ('FusedLayerNorm': x, gamma, beta -> y, stats
 * [N, 2] = (mean, 1/std); 'FusedLayerNormGrad': x, gamma, stats, dy -> dx, dgamma, dbeta), so
 * models/ops.ts's one custom-gradient op serves both backends. Composed from tfjs ops it is
 * ~10 dispatches forward and ~12 backward; here 2 forward (the row statistics, one workgroup
 * per row with the row's sums in workgroup memory; then the normalisation, elementwise) and 5
 * backward (dx, one workgroup per row; dgamma and dbeta as sums over chunks of rows, then over
 * the chunks: column-sums.ts).
 */
import * as tf from '@tensorflow/tfjs';
import { FUSED_LAYER_NORM, FUSED_LAYER_NORM_GRAD } from '../kernels/layer-norm';
import { ChunkPartialProgram, columnSums, sumOverRows } from './column-sums';
import { ElementwiseProgram, f32, ProgramRunner, RowProgram } from './program';

/** stats [rows, 2] = (mean, 1 / sqrt(var + eps)): two passes over the row (mean, then centred squares), as the wasm kernel. */
class LayerNormStatsProgram extends RowProgram {
  constructor(rows: number, cols: number) {
    super([rows, 2], ['x'], rows, cols, 'eps : f32,');
  }
  protected body(): string {
    return `
      var s = 0.0;
      for (var c = tid; c < n; c += WG) { s += x[base + c]; }
      let mean = workgroupSum(vec2<f32>(s, 0.0), tid).x / f32(cols);
      var q = 0.0;
      for (var c = tid; c < n; c += WG) { let d = x[base + c] - mean; q += d * d; }
      let variance = workgroupSum(vec2<f32>(q, 0.0), tid).x / f32(cols);
      if (valid && tid == 0) {
        result[2 * row] = mean;
        result[2 * row + 1] = 1.0 / sqrt(variance + uniforms.eps);
      }`;
  }
}

/** y = (x - mean) * rstd * gamma + beta. */
class LayerNormProgram extends ElementwiseProgram {
  constructor(shape: number[], vec4: boolean) {
    super(shape, ['x', 'gamma', 'beta', 'stats'], vec4, undefined, ['stats']);
  }
  protected body(): string {
    const c = this.outputComponent;
    return `
      let perRow = uniforms.xShape[1] / ${c};
      let row = index / perRow;
      let col = index - row * perRow;
      result[index] = (x[index] - stats[2 * row]) * stats[2 * row + 1] * gamma[col] + beta[col];`;
  }
}

/** dx = rstd (g - mean(g) - xhat mean(g xhat)), g = dy gamma: the two means are one workgroup sum. */
class LayerNormGradProgram extends RowProgram {
  constructor(rows: number, cols: number) {
    super([rows, cols], ['x', 'gamma', 'stats', 'dy'], rows, cols);
  }
  protected body(): string {
    return `
      let r = min(row, uniforms.rows - 1);
      let mean = stats[2 * r];
      let rstd = stats[2 * r + 1];
      var sums = vec2<f32>(0.0);
      for (var c = tid; c < n; c += WG) {
        let xhat = (x[base + c] - mean) * rstd;
        let g = dy[base + c] * gamma[c];
        sums += vec2<f32>(g, g * xhat);
      }
      let means = workgroupSum(sums, tid) / f32(cols);
      for (var c = tid; c < n; c += WG) {
        let xhat = (x[base + c] - mean) * rstd;
        let g = dy[base + c] * gamma[c];
        result[base + c] = rstd * (g - means.x - xhat * means.y);
      }`;
  }
}

/** Per chunk of rows, the sum of dy xhat: dgamma's partial sums. */
class LayerNormGammaGradProgram extends ChunkPartialProgram {
  constructor(rows: number, cols: number) {
    super(['dy', 'x', 'stats'], rows, cols);
  }
  protected term(): string {
    return 'dy[r * cols + col] * (x[r * cols + col] - stats[2 * r]) * stats[2 * r + 1]';
  }
}

export function registerLayerNormKernels(): void {
  tf.registerKernel({
    kernelName: FUSED_LAYER_NORM,
    backendName: 'webgpu',
    kernelFunc: ({ inputs, attrs, backend }) => {
      const gpu = backend as unknown as ProgramRunner;
      const { x, gamma, beta } = inputs as Record<string, tf.TensorInfo>;
      const [rows, cols] = x.shape;
      const statsProgram = new LayerNormStatsProgram(rows, cols);
      const stats = gpu.runWebGPUProgram(statsProgram, [x], 'float32', statsProgram.rowUniforms(f32(attrs!.eps as number)));
      const y = gpu.runWebGPUProgram(new LayerNormProgram(x.shape, cols % 4 === 0), [x, gamma, beta, stats], 'float32');
      return [y, stats];
    },
  });
  tf.registerKernel({
    kernelName: FUSED_LAYER_NORM_GRAD,
    backendName: 'webgpu',
    kernelFunc: ({ inputs, backend }) => {
      const gpu = backend as unknown as ProgramRunner & { disposeData(id: object): void };
      const { x, gamma, stats, dy } = inputs as Record<string, tf.TensorInfo>;
      const [rows, cols] = x.shape;
      const dxProgram = new LayerNormGradProgram(rows, cols);
      const dx = gpu.runWebGPUProgram(dxProgram, [x, gamma, stats, dy], 'float32', dxProgram.rowUniforms());
      const dgamma = sumOverRows(gpu, new LayerNormGammaGradProgram(rows, cols), [dy, x, stats]);
      return [dx, dgamma, columnSums(gpu, dy)];
    },
  });
}

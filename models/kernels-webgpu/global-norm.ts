/**
 * The global gradient norm sqrt(sum over tensors of sum of (scale x)^2), 'FusedGlobalNorm'
 * (inputs g0, g1, ... of any shapes, attribute `scale`, default 1 -> a scalar), for AdamW's
 * clipping on webgpu and, with scale = 1 / loss scale, the non-finite check of dynamic loss
 * scaling (models/loss-scale.ts): the unscaled norm is finite exactly when every gradient is,
 * and it is known before any unscaled gradient is written. Composed
 * from tfjs ops it is a square and a sum per tensor plus chunked AddNs, ~300 small dispatches
 * for a ViT-B's ~150 parameters. Here a fixed grid of workgroups strides over as many tensors
 * as one dispatch may bind (the device's storage-buffer limit, less the output and the running
 * sums), adding each workgroup's sum of squares to its slot of the running sums; a last
 * dispatch adds the slots and takes the root: ceil(tensors / (limit - 2)) + 1 dispatches
 * (12 for a ViT-B at the lowest limit, 8).
 */
import * as tf from '@tensorflow/tfjs';
import type { WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';
import { f32, ProgramRunner, RowProgram } from './program';

export const FUSED_GLOBAL_NORM = 'FusedGlobalNorm';

/** Workgroups of the grid (slots of the running sums), and invocations per workgroup. */
const SLOTS = 128;
const WG = 256;

/** result[slot] = acc[slot] (if given) + this slot's share of the sum of squares of g0..gN. */
class SumSquaresProgram implements WebGPUProgram {
  readonly outputShape = [SLOTS];
  readonly variableNames: string[];
  readonly dispatchLayout = { x: [0] };
  readonly dispatch: [number, number, number] = [SLOTS, 1, 1];
  readonly workgroupSize: [number, number, number] = [WG, 1, 1];
  readonly shaderKey: string;
  readonly uniforms = 'scale : f32,';

  constructor(
    private readonly tensors: number,
    private readonly accumulate: boolean,
  ) {
    this.variableNames = [...(accumulate ? ['acc'] : []), ...Array.from({ length: tensors }, (_, i) => `g${i}`)];
    this.shaderKey = `SumSquares_${tensors}_${accumulate}`;
  }

  getUserCode(): string {
    const loops = Array.from({ length: this.tensors }, (_, i) => `
        for (var i = start; i < uniforms.g${i}Shape; i += ${SLOTS * WG}) { let v = g${i}[i] * uniforms.scale; s = fma(v, v, s); }`).join('');
    return `
      var<workgroup> partialSums : array<f32, ${WG}>;
      // tfjs passes a flat layout's global index; the slot is the workgroup
      fn main(index : i32) {
        let tid = i32(localId.x);
        let slot = i32(workgroupId.x);
        let start = slot * ${WG} + tid;
        var s = 0.0;${loops}
        partialSums[tid] = s;
        workgroupBarrier();
        for (var stride = ${WG / 2}; stride > 0; stride = stride / 2) {
          if (tid < stride) { partialSums[tid] = partialSums[tid] + partialSums[tid + stride]; }
          workgroupBarrier();
        }
        if (tid == 0) { result[slot] = ${this.accumulate ? 'acc[slot] + ' : ''}partialSums[0]; }
      }`;
  }
}

/** result[0] = sqrt(sum of acc). */
class RootOfSumProgram extends RowProgram {
  constructor() {
    super([1], ['acc'], 1, SLOTS);
  }
  protected body(): string {
    return `
      var s = 0.0;
      for (var c = tid; c < n; c += WG) { s += acc[base + c]; }
      let total = workgroupSum(vec2<f32>(s, 0.0), tid).x;
      if (valid && tid == 0) { result[0] = sqrt(total); }`;
  }
}

type Gpu = ProgramRunner & { disposeData(id: object): void; device: GPUDevice };

/** The norm of `tensors` (any shapes, float32) as a [] tensor. */
export function globalNorm(gpu: Gpu, tensors: tf.TensorInfo[], scale = 1): tf.TensorInfo {
  // each flattened: a reshape is the same data under another shape
  const flat = tensors.map((t) => ({ ...t, shape: [tf.util.sizeFromShape(t.shape)] }));
  const perDispatch = Math.max(1, gpu.device.limits.maxStorageBuffersPerShaderStage - 2);
  let acc: tf.TensorInfo | undefined;
  for (let i = 0; i < flat.length; i += perDispatch) {
    const chunk = flat.slice(i, i + perDispatch);
    const next = gpu.runWebGPUProgram(new SumSquaresProgram(chunk.length, acc !== undefined), acc ? [acc, ...chunk] : chunk, 'float32', [f32(scale)]);
    if (acc) gpu.disposeData(acc.dataId);
    acc = next;
  }
  if (!acc) throw new Error(`${FUSED_GLOBAL_NORM}: no tensors given`);
  const program = new RootOfSumProgram();
  const root = gpu.runWebGPUProgram(program, [acc], 'float32', program.rowUniforms());
  gpu.disposeData(acc.dataId);
  return { ...root, shape: [] };
}

export function registerGlobalNormKernel(): void {
  tf.registerKernel({
    kernelName: FUSED_GLOBAL_NORM,
    backendName: 'webgpu',
    kernelFunc: ({ inputs, backend, attrs }) =>
      globalNorm(backend as unknown as Gpu, Object.values(inputs as Record<string, tf.TensorInfo>), (attrs?.scale as number | undefined) ?? 1),
  });
}

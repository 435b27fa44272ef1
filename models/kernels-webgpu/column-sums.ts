/**
 * Sums over the rows of a [N, M] matrix (of x itself, or of a term of the row and column) in two
 * dispatches: per chunk of 64 rows, one invocation per column (neighbouring invocations read
 * neighbouring columns), then over the chunks. One invocation per column alone would leave a
 * GPU idle at ViT sizes (768 columns, 12608 rows); tfjs's own paths are a transpose and a
 * reduction (tf.sum over axis 0) or a matMul with a row of ones, which its matMul runs as a few
 * workgroups looping over all rows. 'FusedColumnSums' (x [N, M] -> [M]) gives the linear layers'
 * bias gradients (models/ops.ts); LayerNorm's dgamma and dbeta use the same two programs.
 */
import * as tf from '@tensorflow/tfjs';
import { ElementwiseProgram, i32, ProgramRunner } from './program';

export const FUSED_COLUMN_SUMS = 'FusedColumnSums';

/** Rows per chunk: enough invocations to fill a GPU at ViT sizes, short loops. */
const CHUNK_ROWS = 64;

/**
 * partial [chunks, M]: per chunk of rows, the sum of term() over them; term is WGSL of the row
 * `r`, the column `col` and `cols` (M), with the first input's shape giving the matrix's.
 */
export abstract class ChunkPartialProgram extends ElementwiseProgram {
  constructor(variableNames: string[], rows: number, cols: number) {
    super([Math.ceil(rows / CHUNK_ROWS), cols], variableNames, false, 'chunkRows : i32,');
  }
  protected abstract term(): string;
  protected body(): string {
    const shape = `uniforms.${this.variableNames[0]}Shape`;
    return `
      let rows = ${shape}[0];
      let cols = ${shape}[1];
      let chunk = index / cols;
      let col = index - chunk * cols;
      let r0 = chunk * uniforms.chunkRows;
      let r1 = min(r0 + uniforms.chunkRows, rows);
      var s = 0.0;
      for (var r = r0; r < r1; r++) { s += ${this.term()}; }
      result[index] = s;`;
  }
}

class ColumnPartialProgram extends ChunkPartialProgram {
  constructor(rows: number, cols: number) {
    super(['x'], rows, cols);
  }
  protected term(): string {
    return 'x[r * cols + col]';
  }
}

/** out [M] = sums of partial [chunks, M] over its chunks. */
class ChunkSumProgram extends ElementwiseProgram {
  constructor(cols: number) {
    super([cols], ['partial'], false);
  }
  protected body(): string {
    return `
      let width = uniforms.partialShape[1];
      var s = 0.0;
      for (var c = 0; c < uniforms.partialShape[0]; c++) { s += partial[c * width + index]; }
      result[index] = s;`;
  }
}

/** Runs a chunk program on `inputs` and sums its chunks: [M]. */
export function sumOverRows(gpu: ProgramRunner & { disposeData(id: object): void }, program: ChunkPartialProgram, inputs: tf.TensorInfo[]): tf.TensorInfo {
  const partial = gpu.runWebGPUProgram(program, inputs, 'float32', [i32(CHUNK_ROWS)]);
  const sums = gpu.runWebGPUProgram(new ChunkSumProgram(partial.shape[1]), [partial], 'float32');
  gpu.disposeData(partial.dataId);
  return sums;
}

/** Column sums of x [N, M]. */
export function columnSums(gpu: ProgramRunner & { disposeData(id: object): void }, x: tf.TensorInfo): tf.TensorInfo {
  return sumOverRows(gpu, new ColumnPartialProgram(x.shape[0], x.shape[1]), [x]);
}

export function registerColumnSumsKernel(): void {
  tf.registerKernel({
    kernelName: FUSED_COLUMN_SUMS,
    backendName: 'webgpu',
    kernelFunc: ({ inputs, backend }) => columnSums(backend as unknown as ProgramRunner & { disposeData(id: object): void }, (inputs as { x: tf.TensorInfo }).x),
  });
}

/**
 * The two shapes of WGSL program the fused WebGPU kernels take, as tfjs-backend-webgpu's own
 * WebGPUProgram interface (the backend compiles, caches and records them into its own command
 * encoder, between its own kernels; tfjs adds the bindings: `result` for the output, one
 * read-only array per input named in variableNames, and `uniforms`, holding each input's
 * shape and the program's own uniforms).
 * - RowProgram: one workgroup per row of a [rows, cols] matrix, with a workgroup sum for the
 *   row's reductions (LayerNorm statistics, softmax and LayerNorm gradients).
 * - ElementwiseProgram: one invocation per output element, or per four where the sizes allow
 *   vec4 loads.
 * Shapes reach the shaders as uniforms, never as constants, so one compiled pipeline serves
 * every shape (tfjs keys its pipeline cache on ranks and program, not on sizes).
 * A subclass per kernel gives each its name in tfjs's profile and in device error messages.
 */
import type { WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';
import * as tf from '@tensorflow/tfjs';

/** The backend's method that runs a program (tfjs-backend-webgpu's WebGPUBackend). */
export interface ProgramRunner {
  runWebGPUProgram(program: WebGPUProgram, inputs: tf.TensorInfo[], outputDtype: tf.DataType, uniforms?: { type: string; data: number[] }[]): tf.TensorInfo;
}

/** Float uniform `name` (declared `name : f32,`). */
export const f32 = (value: number) => ({ type: 'float32', data: [value] });
/** Int uniform. */
export const i32 = (value: number) => ({ type: 'int32', data: [value] });

abstract class Program implements WebGPUProgram {
  dispatch: [number, number, number] = [1, 1, 1];
  readonly dispatchLayout: { x: number[] };
  readonly shaderKey: string;
  workgroupSize: [number, number, number] = [1, 1, 1];

  constructor(
    readonly outputShape: number[],
    readonly variableNames: string[],
    /** Declarations added to tfjs's uniform struct ('eps : f32,'). */
    readonly uniforms: string | undefined,
  ) {
    this.dispatchLayout = { x: outputShape.map((_, i) => i) };
    this.shaderKey = this.constructor.name;
  }

  abstract getUserCode(): string;
}

/**
 * One workgroup per row: `main` gets `row` and `tid` (the invocation in the row's workgroup,
 * WG of them) and `workgroupSum(vec2<f32>)`, the sum of a value over the workgroup (called by
 * every invocation: it holds barriers). Rows past the last (tfjs may reshape a long dispatch
 * into a square grid) are `valid == false`: they must not write.
 */
export abstract class RowProgram extends Program {
  constructor(outputShape: number[], variableNames: string[], rows: number, cols: number, uniforms = '') {
    super(outputShape, variableNames, `rows : i32, cols : i32, ${uniforms}`);
    // a power of two, about a quarter of the row (each invocation then takes ~4 elements), 32..256
    const wg = Math.min(256, Math.max(32, 2 ** Math.ceil(Math.log2(Math.ceil(cols / 4)))));
    this.workgroupSize = [wg, 1, 1];
    this.dispatch = [rows, 1, 1];
    this.rowsCols = [rows, cols];
  }

  readonly rowsCols: [number, number];

  /** The body of `main`; row, tid, valid, cols, WG and workgroupSum are in scope. */
  protected abstract body(): string;

  getUserCode(): string {
    const wg = this.workgroupSize[0];
    return `
      const WG = ${wg};
      var<workgroup> partialSums : array<vec2<f32>, ${wg}>;
      fn workgroupSum(value : vec2<f32>, tid : i32) -> vec2<f32> {
        partialSums[tid] = value;
        workgroupBarrier();
        for (var stride = WG / 2; stride > 0; stride = stride / 2) {
          if (tid < stride) {
            partialSums[tid] = partialSums[tid] + partialSums[tid + stride];
          }
          workgroupBarrier();
        }
        let total = partialSums[0];
        workgroupBarrier();
        return total;
      }
      fn main(index : i32) {
        let tid = i32(localId.x);
        let row = index / WG;
        let valid = row < uniforms.rows;
        let cols = uniforms.cols;
        // past the last row: no element to read (the reductions still run: barriers are collective)
        let n = select(0, cols, valid);
        let base = row * cols;
        ${this.body()}
      }`;
  }

  /** Uniform values for the declarations made above, then the subclass's own. */
  rowUniforms(...own: { type: string; data: number[] }[]) {
    return [i32(this.rowsCols[0]), i32(this.rowsCols[1]), ...own];
  }
}

/**
 * One invocation per output element, or per vec4 of them where `vec4` (every size a multiple of
 * 4): inputs listed in `scalarInputs` stay f32 (per-row statistics, a scale). `main` gets `index`
 * below uniforms.size; `T` is the element type (f32 or vec4<f32>).
 */
export abstract class ElementwiseProgram extends Program {
  readonly size = true;
  readonly outputComponent: number;
  readonly variableComponents: number[];

  constructor(outputShape: number[], variableNames: string[], vec4: boolean, uniforms?: string, scalarInputs: string[] = []) {
    super(outputShape, variableNames, uniforms);
    const c = vec4 ? 4 : 1;
    this.outputComponent = c;
    this.variableComponents = variableNames.map((n) => (scalarInputs.includes(n) ? 1 : c));
    this.workgroupSize = [128, 1, 1];
    this.dispatch = [Math.ceil(tf.util.sizeFromShape(outputShape) / c / 128), 1, 1];
    (this as { shaderKey: string }).shaderKey = `${this.constructor.name}_${c}`;
  }

  protected abstract body(): string;

  getUserCode(): string {
    return `
      alias T = ${this.outputComponent === 4 ? 'vec4<f32>' : 'f32'};
      fn main(index : i32) {
        if (index < uniforms.size) {
          ${this.body()}
        }
      }`;
  }
}

/**
 * Mixed-precision matMuls for WEBGPU_PRECISION=mixed (runtime/webgpu.ts choosePrecision picks
 * the path): f32 in memory, f16 operand tiles, f32 accumulation, bias in the epilogue, as
 * PyTorch's autocast runs a linear layer (with f16 where it takes bf16: Dawn has no bf16
 * matrices).
 * - 'subgroup-matrix': tensor cores through chromium-experimental-subgroup-matrix (Vulkan's
 *   VK_KHR_cooperative_matrix). A workgroup is one subgroup; it computes a 4S x 4S tile of C
 *   (S the square config's size, 16 on NVIDIA) as 4 x 4 result matrices, staging a 4S x S tile
 *   of A and an S x 4S tile of B in f16 in workgroup memory per step of S along K (either
 *   operand transposed or not: the staging reads it in place), and stores each result matrix
 *   through workgroup memory so the edges, the bias and vec4 rows need no special case.
 * - 'f16-tiles': the tiled matMul with f16 tiles (matmul.ts), for adapters with shader-f16 and
 *   no subgroup matrices (lavapipe in CI): the same operand rounding without tensor cores.
 * Both take the calls the tiled fp32 matMul takes (matmul.ts matMulCall) and leave the rest,
 * attention's narrow products among them, to the kernels behind them.
 */
import * as tf from '@tensorflow/tfjs';
import type { WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';
import type { PrecisionPath } from '../../runtime/webgpu';
import { MatMulCall, registerMatMulFront, runTiledMatMul } from './matmul';
import { i32, ProgramRunner } from './program';

/** Result matrices per side of a workgroup's tile. */
const R = 4;

export class MatMulSubgroupMatrixProgram implements WebGPUProgram {
  readonly variableNames: string[];
  readonly uniforms = 'dimM : i32, dimN : i32, dimK : i32, strideA : i32, strideB : i32,';
  readonly workgroupSize: [number, number, number];
  readonly dispatchLayout: { x: number[]; y: number[] };
  readonly dispatch: [number, number, number];
  readonly shaderKey: string;

  constructor(
    readonly outputShape: number[],
    m: number,
    n: number,
    batch: number,
    private readonly transposeA: boolean,
    private readonly transposeB: boolean,
    private readonly bias: boolean,
    /** The square matrix size (8 or 16). */
    private readonly s: number,
    /** Invocations of the workgroup: the subgroup size. */
    private readonly lanes: number,
  ) {
    this.variableNames = bias ? ['A', 'B', 'bias'] : ['A', 'B'];
    this.workgroupSize = [lanes, 1, 1];
    const rank = outputShape.length;
    this.dispatchLayout = { x: [rank - 1], y: [rank - 2] };
    this.dispatch = [Math.ceil(n / (R * s)), Math.ceil(m / (R * s)), batch];
    this.shaderKey = `MatMulSubgroupMatrix_${transposeA}_${transposeB}_${bias}_${s}_${lanes}`;
  }

  getUserCode(): string {
    const { s, lanes } = this;
    const tile = R * s;
    const ids = (n: number) => Array.from({ length: n }, (_, i) => i);
    const aAt = `batch * uniforms.strideA + ${this.transposeA ? 'k * uniforms.dimM + m' : 'm * uniforms.dimK + k'}`;
    const bAt = `batch * uniforms.strideB + ${this.transposeB ? 'n * uniforms.dimK + k' : 'k * uniforms.dimN + n'}`;
    // staging order: neighbouring lanes read neighbouring addresses of the operand as stored
    const aIndex = this.transposeA ? `let m = e % ${tile}; let k = e / ${tile};` : `let k = e % ${s}; let m = e / ${s};`;
    const bIndex = this.transposeB ? `let k = e % ${s}; let n = e / ${s};` : `let n = e % ${tile}; let k = e / ${tile};`;
    const left = `subgroup_matrix_left<f16, ${s}, ${s}>`;
    const right = `subgroup_matrix_right<f16, ${s}, ${s}>`;
    const result = `subgroup_matrix_result<f32, ${s}, ${s}>`;
    const acc = (i: number, j: number) => `acc_${i}_${j}`;
    return `
      enable f16;
      enable subgroups;
      enable chromium_experimental_subgroup_matrix;
      // A's tile [${tile} rows, ${s}], B's [${s}, ${tile} columns], row-major; one result matrix for the epilogue
      var<workgroup> tileA : array<f16, ${tile * s}>;
      var<workgroup> tileB : array<f16, ${tile * s}>;
      var<workgroup> tileC : array<f32, ${s * s}>;
      var<private> batch : i32;
      fn loadA(m : i32, k : i32) -> f32 {
        if (m < uniforms.dimM && k < uniforms.dimK) { return A[${aAt}]; }
        return 0.0;
      }
      fn loadB(k : i32, n : i32) -> f32 {
        if (k < uniforms.dimK && n < uniforms.dimN) { return B[${bAt}]; }
        return 0.0;
      }
      fn main() {
        let lane = i32(localId.x);
        batch = i32(workgroupId.z);
        let row0 = i32(workgroupId.y) * ${tile};
        let col0 = i32(workgroupId.x) * ${tile};
        ${ids(R).flatMap((i) => ids(R).map((j) => `var ${acc(i, j)} = ${result}();`)).join(' ')}
        for (var k0 = 0; k0 < uniforms.dimK; k0 += ${s}) {
          for (var e = lane; e < ${tile * s}; e += ${lanes}) {
            ${aIndex}
            tileA[m * ${s} + k] = f16(loadA(row0 + m, k0 + k));
          }
          for (var e = lane; e < ${tile * s}; e += ${lanes}) {
            ${bIndex}
            tileB[k * ${tile} + n] = f16(loadB(k0 + k, col0 + n));
          }
          workgroupBarrier();
          ${ids(R).map((i) => `let a${i} = subgroupMatrixLoad<${left}>(&tileA, ${i * s * s}u, false, ${s}u);`).join(' ')}
          ${ids(R).map((j) => `let b${j} = subgroupMatrixLoad<${right}>(&tileB, ${j * s}u, false, ${tile}u);`).join(' ')}
          ${ids(R).flatMap((i) => ids(R).map((j) => `${acc(i, j)} = subgroupMatrixMultiplyAccumulate(a${i}, b${j}, ${acc(i, j)});`)).join('\n          ')}
          workgroupBarrier();
        }
        ${ids(R).flatMap((i) => ids(R).map((j) => `
        subgroupMatrixStore(&tileC, 0u, ${acc(i, j)}, false, ${s}u);
        workgroupBarrier();
        for (var e = lane; e < ${s * s}; e += ${lanes}) {
          let row = row0 + ${i * s} + e / ${s};
          let col = col0 + ${j * s} + e % ${s};
          if (row < uniforms.dimM && col < uniforms.dimN) {
            result[batch * uniforms.dimM * uniforms.dimN + row * uniforms.dimN + col] = tileC[e]${this.bias ? ' + bias[col]' : ''};
          }
        }
        workgroupBarrier();`)).join('')}
      }`;
  }
}

function runSubgroupMatrix(call: MatMulCall, backend: ProgramRunner, s: number, lanes: number): tf.TensorInfo {
  const { a, b, bias, m, n, k, transposeA, transposeB, batch } = call;
  const program = new MatMulSubgroupMatrixProgram(call.outShape, m, n, batch, transposeA, transposeB, bias !== undefined, s, lanes);
  const strides = [i32(call.batchA > 1 ? m * k : 0), i32(call.batchB > 1 ? k * n : 0)];
  return backend.runWebGPUProgram(program, bias ? [a, b, bias] : [a, b], 'float32', [i32(m), i32(n), i32(k), ...strides]);
}

let registered: PrecisionPath['matMul'] | undefined;

/**
 * Registers the mixed matMul of `precision` in front of BatchMatMul and _FusedMatMul (call it
 * after any other matMul registration).
 */
export function registerMixedMatMulKernels(precision: PrecisionPath): void {
  if (registered || precision.matMul === 'fp32') return;
  registered = precision.matMul;
  if (precision.matMul === 'subgroup-matrix') {
    const s = precision.config!.M;
    registerMatMulFront((call, backend) => runSubgroupMatrix(call, backend, s, precision.lanes!));
  } else {
    registerMatMulFront((call, backend) => runTiledMatMul(call, backend, true));
  }
}

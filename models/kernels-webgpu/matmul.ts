/**
 * fp32 matMul C = op(A) op(B) (+ bias) as WGSL with larger tiles than tfjs-webgpu's own
 * (MatMulPackedProgram: 32x32 per workgroup of 64 invocations, 4x4 per invocation; 10 TFLOP/s on
 * an H200 at 4096^3, a sixth of its fp32 rate). Here a workgroup of 16x16 invocations computes a
 * 128x128 tile, 8x8 per invocation (64x64, 4x4, where 128x128 tiles would not give the GPU 256
 * workgroups), from tiles of A and B staged in workgroup memory, with the accumulators unrolled
 * into registers; rows and columns of an invocation are interleaved by 64 so that neighbouring
 * invocations read neighbouring vec4s. Every transpose form (the linear layers' forward and both
 * gradients) reads its operands in place.
 * Batched products (attention's, [batch, M, K] @ [batch, K, N], or one side a single matrix)
 * take a workgroup grid per matrix (workgroupId.z).
 * It takes tfjs's 'BatchMatMul' and '_FusedMatMul' on webgpu (WEBGPU_MATMUL=1) where the
 * outputs are at least 64x64, float32, and no activation; anything else, or with the fused
 * kernels switched off (setFusedKernels), goes to tfjs's own kernel.
 * The f16 variant (`f16: true`, WEBGPU_PRECISION=mixed on an adapter with shader-f16 and no
 * subgroup matrices) stages the tiles in f16, which rounds the operands as tensor cores would
 * and halves the workgroup memory traffic, and multiplies and accumulates in f32.
 */
import * as tf from '@tensorflow/tfjs';
import type { WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';
import { fusedKernelsOn } from '../kernels';
import { i32, ProgramRunner } from './program';

interface Tile {
  /** Rows (and columns) per invocation: 8 (a 128x128 tile) or 4 (64x64). */
  per: 4 | 8;
  /** Depth of the staged tiles. */
  depth: number;
}

const WIDE: Tile = { per: 8, depth: 8 };
const NARROW: Tile = { per: 4, depth: 16 };

class MatMulTiledProgram implements WebGPUProgram {
  readonly variableNames: string[];
  readonly variableComponents: number[];
  readonly outputComponent: number;
  readonly workgroupSize: [number, number, number] = [16, 16, 1];
  readonly dispatchLayout: { x: number[]; y: number[] };
  dispatch: [number, number, number];
  shaderKey: string;

  constructor(
    readonly outputShape: number[],
    m: number,
    n: number,
    private readonly transposeA: boolean,
    private readonly transposeB: boolean,
    private readonly bias: boolean,
    private readonly tile: Tile,
    batch: number,
    private readonly f16 = false,
  ) {
    this.variableNames = bias ? ['A', 'B', 'bias'] : ['A', 'B'];
    this.variableComponents = this.variableNames.map(() => 1);
    // whole vec4 stores where rows are a multiple of 4 long
    this.outputComponent = n % 4 === 0 ? 4 : 1;
    const rank = outputShape.length;
    this.dispatchLayout = { x: [rank - 1], y: [rank - 2] };
    const size = 16 * tile.per;
    this.dispatch = [Math.ceil(n / size), Math.ceil(m / size), batch];
    // the code serves any batch; the key tells batched dispatches apart (spec/webgpu-kernels.spec.ts checks they ran)
    this.shaderKey = `MatMulTiled_${transposeA}_${transposeB}_${bias}_${tile.per}_${this.outputComponent}${f16 ? '_f16' : ''}${batch > 1 ? '_batched' : ''}`;
  }

  /** Uniforms: sizes, and each operand's elements per matrix of the batch (0: one matrix for all). */
  readonly uniforms = 'dimM : i32, dimN : i32, dimK : i32, strideA : i32, strideB : i32,';

  getUserCode(): string {
    const { per, depth } = this.tile;
    const size = 16 * per;
    const chunks = per / 4;
    const loads = (size * depth) / 256;
    const ids = (n: number) => Array.from({ length: n }, (_, i) => i);
    // accumulator acc_<row in invocation>_<vec4 of columns>
    const acc = ids(per).flatMap((r) => ids(chunks).map((c) => `acc_${r}_${c}`));
    // element (m, k) of A and (k, n) of B, 0 outside the matrices
    // f16 tiles: operands rounded as they are staged, widened as they are read
    const el = this.f16 ? 'f16' : 'f32';
    const widen = (v: string) => (this.f16 ? `vec4<f32>(${v})` : v);
    // which element of a tile an invocation loads: neighbours take neighbours in memory
    const aIndex = this.transposeA ? `let m = e % ${size}; let k = e / ${size};` : `let k = e % ${depth}; let m = e / ${depth};`;
    const bIndex = this.transposeB ? `let k = e % ${depth}; let n = e / ${depth};` : `let n = e % ${size}; let k = e / ${size};`;
    const multiply = ids(chunks).flatMap((ci) =>
      ids(4).flatMap((r) => ids(chunks).map((cj) => `acc_${ci * 4 + r}_${cj} = fma(vec4<f32>(a${ci}[${r}]), b${cj}, acc_${ci * 4 + r}_${cj});`)),
    );
    const store = ids(chunks).flatMap((ci) =>
      ids(4).flatMap((r) =>
        ids(chunks).map((cj) => {
          const row = `row0 + ${ci * 64 + r} + ty * 4`;
          const value = `acc_${ci * 4 + r}_${cj}`;
          return this.outputComponent === 4
            ? `store4(${row}, col0 + ${cj * 64} + tx * 4, ${value});`
            : ids(4).map((c) => `store1(${row}, col0 + ${cj * 64 + c} + tx * 4, ${value}[${c}]);`).join(' ');
        }),
      ),
    );
    return `${this.f16 ? '\n      enable f16;' : ''}
      var<workgroup> tileA : array<vec4<${el}>, ${(size * depth) / 4}>;
      var<workgroup> tileB : array<vec4<${el}>, ${(size * depth) / 4}>;
      var<private> batch : i32;
      ${boundedLoads(this.transposeA, this.transposeB)}
      ${this.outputComponent === 4 ? `
      fn store4(row : i32, col : i32, value : vec4<f32>) {
        if (row < uniforms.dimM && col < uniforms.dimN) {
          result[(batch * uniforms.dimM * uniforms.dimN + row * uniforms.dimN + col) / 4] = value${this.bias ? ' + vec4<f32>(bias[col], bias[col + 1], bias[col + 2], bias[col + 3])' : ''};
        }
      }` : `
      fn store1(row : i32, col : i32, value : f32) {
        if (row < uniforms.dimM && col < uniforms.dimN) { result[batch * uniforms.dimM * uniforms.dimN + row * uniforms.dimN + col] = value${this.bias ? ' + bias[col]' : ''}; }
      }`}
      fn main() {
        let tx = i32(localId.x);
        let ty = i32(localId.y);
        let tid = ty * 16 + tx;
        batch = i32(workgroupId.z);
        let row0 = i32(workgroupId.y) * ${size};
        let col0 = i32(workgroupId.x) * ${size};
        ${acc.map((a) => `var ${a} = vec4<f32>(0.0);`).join(' ')}
        for (var k0 = 0; k0 < uniforms.dimK; k0 += ${depth}) {
          // tile rows/columns are stored in fours, as the invocations read them: (k, m) at [k * ${size / 4} + m / 4][m % 4]
          for (var l = 0; l < ${loads}; l++) {
            let e = l * 256 + tid;
            ${aIndex}
            tileA[k * ${size / 4} + m / 4][m % 4] = ${el}(loadA(row0 + m, k0 + k));
          }
          for (var l = 0; l < ${loads}; l++) {
            let e = l * 256 + tid;
            ${bIndex}
            tileB[k * ${size / 4} + n / 4][n % 4] = ${el}(loadB(k0 + k, col0 + n));
          }
          workgroupBarrier();
          for (var k = 0; k < ${depth}; k++) {
            ${ids(chunks).map((ci) => `let a${ci} = ${widen(`tileA[k * ${size / 4} + ${ci * 16} + ty]`)};`).join(' ')}
            ${ids(chunks).map((cj) => `let b${cj} = ${widen(`tileB[k * ${size / 4} + ${cj * 16} + tx]`)};`).join(' ')}
            ${multiply.join('\n            ')}
          }
          workgroupBarrier();
        }
        ${store.join('\n        ')}
      }`;
  }
}

type KernelFunc = tf.KernelConfig['kernelFunc'];

/** A matMul's operands and sizes as tfjs's BatchMatMul / _FusedMatMul give them. */
/**
 * WGSL loadA(m, k) and loadB(k, n): one element of batch `batch` of A and B, read in place when
 * transposed, and 0 outside the matrices (the tiles' edges).
 */
export function boundedLoads(transposeA: boolean, transposeB: boolean): string {
  const aAt = `batch * uniforms.strideA + ${transposeA ? 'k * uniforms.dimM + m' : 'm * uniforms.dimK + k'}`;
  const bAt = `batch * uniforms.strideB + ${transposeB ? 'n * uniforms.dimK + k' : 'k * uniforms.dimN + n'}`;
  return `fn loadA(m : i32, k : i32) -> f32 {
        if (m < uniforms.dimM && k < uniforms.dimK) { return A[${aAt}]; }
        return 0.0;
      }
      fn loadB(k : i32, n : i32) -> f32 {
        if (k < uniforms.dimK && n < uniforms.dimN) { return B[${bAt}]; }
        return 0.0;
      }`;
}

export interface MatMulCall {
  a: tf.TensorInfo;
  b: tf.TensorInfo;
  bias?: tf.TensorInfo;
  transposeA: boolean;
  transposeB: boolean;
  m: number;
  n: number;
  k: number;
  /** Matrices in the batch (the larger operand's), and each operand's: 1 or that. */
  batch: number;
  batchA: number;
  batchB: number;
  outShape: number[];
}

/**
 * The call as sizes, where a WGSL matMul can take it: float32, no activation, batches equal or
 * one side a single matrix, a 1-D bias over the columns, at least 64x64 outputs (a product
 * narrower than a tile, a row of ones summing columns, would leave the GPU idle).
 */
export function matMulCall(inputs: tf.NamedTensorInfoMap, attrs: tf.NamedAttrMap): MatMulCall | undefined {
  const { a, b, bias, preluActivationWeights } = inputs as Record<string, tf.TensorInfo | undefined>;
  const { transposeA, transposeB, activation } = attrs as { transposeA: boolean; transposeB: boolean; activation?: string };
  if (!a || !b || a.dtype !== 'float32' || b.dtype !== 'float32' || preluActivationWeights) return undefined;
  if (activation !== undefined && activation !== 'linear') return undefined;
  const ra = a.shape.length;
  const rb = b.shape.length;
  const batchA = tf.util.sizeFromShape(a.shape.slice(0, -2));
  const batchB = tf.util.sizeFromShape(b.shape.slice(0, -2));
  if (batchA !== batchB && batchA !== 1 && batchB !== 1) return undefined;
  const [m, k] = transposeA ? [a.shape[ra - 1], a.shape[ra - 2]] : [a.shape[ra - 2], a.shape[ra - 1]];
  const n = transposeB ? b.shape[rb - 2] : b.shape[rb - 1];
  if (bias && (bias.shape.length !== 1 || bias.shape[0] !== n)) return undefined;
  if (m < 64 || n < 64) return undefined;
  const outShape = [...(batchA >= batchB ? a.shape : b.shape).slice(0, -2), m, n];
  return { a, b, bias, transposeA, transposeB, m, n, k, batch: Math.max(batchA, batchB), batchA, batchB, outShape };
}

/** Runs the tiled program (f32 or f16 tiles) on a call. */
export function runTiledMatMul(call: MatMulCall, backend: ProgramRunner, f16 = false): tf.TensorInfo {
  const { a, b, bias, m, n, k, transposeA, transposeB, batch } = call;
  const tile = batch * Math.ceil(m / 128) * Math.ceil(n / 128) >= 256 ? WIDE : NARROW;
  const program = new MatMulTiledProgram(call.outShape, m, n, transposeA, transposeB, bias !== undefined, tile, batch, f16);
  const strides = [i32(call.batchA > 1 ? m * k : 0), i32(call.batchB > 1 ? k * n : 0)];
  return backend.runWebGPUProgram(program, bias ? [a, b, bias] : [a, b], 'float32', [i32(m), i32(n), i32(k), ...strides]);
}

/**
 * Puts `run` in front of tfjs's BatchMatMul and _FusedMatMul on webgpu (or whatever is
 * registered there now): it gets the calls matMulCall accepts while the fused kernels are on,
 * and returns undefined to leave one to the kernel behind it.
 */
export function registerMatMulFront(run: (call: MatMulCall, backend: ProgramRunner) => tf.TensorInfo | undefined): void {
  for (const name of ['BatchMatMul', '_FusedMatMul']) {
    const own = tf.getKernel(name, 'webgpu');
    if (!own) continue;
    const fallback = own.kernelFunc as KernelFunc;
    tf.unregisterKernel(name, 'webgpu');
    tf.registerKernel({
      kernelName: name,
      backendName: 'webgpu',
      kernelFunc: (args) => {
        const call = fusedKernelsOn() ? matMulCall(args.inputs, args.attrs ?? {}) : undefined;
        return (call && run(call, args.backend as unknown as ProgramRunner)) || fallback(args);
      },
    });
  }
}

/** Puts the tiled program in front of tfjs's BatchMatMul and _FusedMatMul on webgpu. */
export function registerMatMulKernels(): void {
  registerMatMulFront((call, backend) => runTiledMatMul(call, backend));
}

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
import { boundedLoads, MatMulCall, registerMatMulFront, runTiledMatMul } from './matmul';
import { i32, ProgramRunner } from './program';
import { maxRelativeDifference } from '../../lib/relative-difference';

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
      // (matrices held in var, as Dawn's own tests hold them)
      var<workgroup> tileA : array<f16, ${tile * s}>;
      var<workgroup> tileB : array<f16, ${tile * s}>;
      var<workgroup> tileC : array<f32, ${s * s}>;
      var<private> batch : i32;
      ${boundedLoads(this.transposeA, this.transposeB)}
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
          ${ids(R).map((i) => `var a${i} = subgroupMatrixLoad<${left}>(&tileA, ${i * s * s}u, false, ${s}u);`).join(' ')}
          ${ids(R).map((j) => `var b${j} = subgroupMatrixLoad<${right}>(&tileB, ${j * s}u, false, ${tile}u);`).join(' ')}
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

/**
 * The self-test WGSL: one workgroup of `lanes` invocations multiplies A [s, s] by B [s, s]
 * (f32 in storage, staged as f16 in workgroup memory) into out [s, s], through subgroup
 * matrices (`matrices`) with the builtins and signatures the kernel above uses, or through a
 * plain f16 loop (which exercises the same harness where the adapter has no subgroup matrices).
 */
function selfTestCode(s: number, lanes: number, matrices: boolean): string {
  const m = (kind: string, t: string) => `subgroup_matrix_${kind}<${t}, ${s}, ${s}>`;
  return `
    enable f16;
    ${matrices ? 'enable subgroups;\n    enable chromium_experimental_subgroup_matrix;' : ''}
    @group(0) @binding(0) var<storage, read> A : array<f32>;
    @group(0) @binding(1) var<storage, read> B : array<f32>;
    @group(0) @binding(2) var<storage, read_write> C : array<f32>;
    var<workgroup> tileA : array<f16, ${s * s}>;
    var<workgroup> tileB : array<f16, ${s * s}>;
    var<workgroup> tileC : array<f32, ${s * s}>;
    @compute @workgroup_size(${lanes})
    fn main(@builtin(local_invocation_index) lane : u32) {
      for (var e = lane; e < ${s * s}u; e += ${lanes}u) { tileA[e] = f16(A[e]); tileB[e] = f16(B[e]); }
      workgroupBarrier();
      ${matrices
        ? `var a = subgroupMatrixLoad<${m('left', 'f16')}>(&tileA, 0u, false, ${s}u);
      var b = subgroupMatrixLoad<${m('right', 'f16')}>(&tileB, 0u, false, ${s}u);
      var c = subgroupMatrixMultiplyAccumulate(a, b, ${m('result', 'f32')}());
      subgroupMatrixStore(&tileC, 0u, c, false, ${s}u);`
        : `for (var e = lane; e < ${s * s}u; e += ${lanes}u) {
        var acc = 0.0;
        for (var k = 0u; k < ${s}u; k++) { acc += f32(tileA[(e / ${s}u) * ${s}u + k]) * f32(tileB[k * ${s}u + e % ${s}u]); }
        tileC[e] = acc;
      }`}
      workgroupBarrier();
      for (var e = lane; e < ${s * s}u; e += ${lanes}u) { C[e] = tileC[e]; }
    }`;
}

export interface SelfTest {
  ok: boolean;
  /** max |gpu - host| / max |host| of the product (host: the same f16-rounded operands in f64). */
  relative?: number;
  error?: string;
}

/**
 * Compiles and runs the self-test product on `device` as the project's own pipeline (errors
 * caught in error scopes, not thrown by the backend's device hooks) and checks it against the
 * host: the subgroup-matrix builtins are experimental, their signatures have changed, and
 * Dawn withholds f16 on older NVIDIA drivers for conformance failures, so the path is taken
 * only where this passes.
 */
export async function selfTestMatMul(device: GPUDevice, s: number, lanes: number, matrices: boolean): Promise<SelfTest> {
  const a = Float32Array.from({ length: s * s }, (_, i) => Math.sin(i * 0.37) * 2);
  const b = Float32Array.from({ length: s * s }, (_, i) => Math.cos(i * 0.11) - 0.25);
  const f16 = (x: number) => {
    // round to f16's 11 significant bits (the operands are well inside f16's range)
    const e = Math.floor(Math.log2(Math.abs(x) || 1));
    const q = 2 ** (e - 10);
    return Math.round(x / q) * q;
  };
  const want = new Float64Array(s * s);
  for (let i = 0; i < s; i++) for (let j = 0; j < s; j++) for (let k = 0; k < s; k++) want[i * s + j] += f16(a[i * s + k]) * f16(b[k * s + j]);
  const usage = (globalThis as unknown as { GPUBufferUsage: Record<string, number> }).GPUBufferUsage;
  const buffers: GPUBuffer[] = [];
  const buffer = (size: number, flags: number) => {
    const made = device.createBuffer({ size, usage: flags });
    buffers.push(made);
    return made;
  };
  device.pushErrorScope('internal');
  device.pushErrorScope('validation');
  let scopes: Promise<(GPUError | null)[]> | undefined;
  const popScopes = () => (scopes ??= (async () => [await device.popErrorScope(), await device.popErrorScope()])());
  try {
    const module = device.createShaderModule({ code: selfTestCode(s, lanes, matrices), label: 'selfTestMatMul' });
    const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' }, label: 'selfTestMatMul' });
    const bytes = s * s * 4;
    const [ga, gb, gc] = [0, 1, 2].map(() => buffer(bytes, usage.STORAGE | usage.COPY_DST | usage.COPY_SRC));
    const read = buffer(bytes, usage.MAP_READ | usage.COPY_DST);
    device.queue.writeBuffer(ga, 0, a);
    device.queue.writeBuffer(gb, 0, b);
    const group = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [ga, gb, gc].map((g, binding) => ({ binding, resource: { buffer: g } })) });
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(1);
    pass.end();
    encoder.copyBufferToBuffer(gc, 0, read, 0, bytes);
    device.queue.submit([encoder.finish()]);
    const [validation, internal] = await popScopes();
    const error = validation ?? internal;
    if (error) return { ok: false, error: error.message.split('\n').filter(Boolean).slice(0, 3).join(' ') };
    await read.mapAsync(1 /* GPUMapMode.READ */);
    const got = new Float32Array(read.getMappedRange().slice(0));
    read.unmap();
    const relative = maxRelativeDifference(got, want);
    // f32 accumulation of exact f16 products: rounding of the sums only
    return { ok: relative < 1e-4, relative, ...(relative < 1e-4 ? {} : { error: `wrong product (relative ${relative.toExponential(2)})` }) };
  } catch (e) {
    return { ok: false, error: (e as Error).message };
  } finally {
    await popScopes();
    buffers.forEach((g) => g.destroy());
  }
}

/**
 * The precision path after the self-test: subgroup matrices stay only where their product
 * compiles, runs and is right on this device; otherwise f16 tiles, with the failure in the reason.
 */
export async function verifiedPrecision(device: GPUDevice, precision: PrecisionPath): Promise<PrecisionPath> {
  if (precision.matMul !== 'subgroup-matrix') return precision;
  const test = await selfTestMatMul(device, precision.config!.M, precision.lanes!, true);
  if (test.ok) return { ...precision, reason: `${precision.reason}; self-test relative ${test.relative!.toExponential(1)}` };
  return { requested: precision.requested, matMul: 'f16-tiles', reason: `subgroup-matrix self-test failed (${test.error}): f16 tiles, f32 multiply-accumulate on the ALUs (no tensor cores)` };
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

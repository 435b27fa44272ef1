/**
 * Fused multi-head attention forward in the style of FlashAttention (Dao et al. 2022), fp32:
 * 'FlashAttention' (qkv [B*T, 3*D] in timm's row layout (3, heads, headDim) -> [B*T, D], heads
 * merged; attributes batch, heads). One invocation per query row keeps its output row in
 * registers and a running max and sum (online softmax); a workgroup of 64 rows of one
 * (image, head) streams the keys and values through workgroup memory 32 at a time. The T x T
 * scores and probabilities are never written: attention's memory no longer grows with T^2 and
 * the head split and merge transposes disappear. models/ops.ts pairs it with a backward that
 * recomputes the probabilities from q and k (tfjs ops), so nothing T x T is kept between the
 * passes either. Registered with WEBGPU_FLASH=1 (runtime/backend.ts): not yet measured on a GPU.
 */
import * as tf from '@tensorflow/tfjs';
import type { WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';
import { f32, i32, ProgramRunner } from './program';

export const FLASH_ATTENTION = 'FlashAttention';

/** Query rows per workgroup, keys per staged tile. */
const ROWS = 64;
const KEYS = 32;

class FlashAttentionProgram implements WebGPUProgram {
  readonly variableNames = ['qkv'];
  readonly uniforms = 'tokens : i32, heads : i32, scale : f32,';
  readonly workgroupSize: [number, number, number] = [ROWS, 1, 1];
  readonly dispatchLayout = { x: [0], y: [1] };
  readonly dispatch: [number, number, number];
  readonly shaderKey: string;

  constructor(
    readonly outputShape: number[],
    tokens: number,
    batchHeads: number,
    private readonly headDim: number,
  ) {
    this.dispatch = [Math.ceil(tokens / ROWS), batchHeads, 1];
    this.shaderKey = `FlashAttention_${headDim}`;
  }

  getUserCode(): string {
    const hd = this.headDim;
    return `
      var<workgroup> tileK : array<f32, ${KEYS * hd}>;
      var<workgroup> tileV : array<f32, ${KEYS * hd}>;
      fn main() {
        let tid = i32(localId.x);
        let bh = i32(workgroupId.y);
        let b = bh / uniforms.heads;
        let h = bh % uniforms.heads;
        let t = i32(workgroupId.x) * ${ROWS} + tid;
        let T = uniforms.tokens;
        let D = uniforms.heads * ${hd};
        let valid = t < T;
        // this row's q (scaled), its output row, the running max and sum of the softmax
        var q : array<f32, ${hd}>;
        var acc : array<f32, ${hd}>;
        let qBase = (b * T + min(t, T - 1)) * 3 * D + h * ${hd};
        for (var d = 0; d < ${hd}; d++) { q[d] = qkv[qBase + d] * uniforms.scale; acc[d] = 0.0; }
        var runMax = -3.4e38;
        var runSum = 0.0;
        for (var k0 = 0; k0 < T; k0 += ${KEYS}) {
          // stage keys and values k0..k0+${KEYS - 1} of this (image, head)
          for (var e = tid; e < ${KEYS * hd}; e += ${ROWS}) {
            let key = k0 + e / ${hd};
            let d = e % ${hd};
            let base = (b * T + min(key, T - 1)) * 3 * D + h * ${hd} + d;
            tileK[e] = qkv[base + D];
            tileV[e] = qkv[base + 2 * D];
          }
          workgroupBarrier();
          let count = min(${KEYS}, T - k0);
          for (var j = 0; j < count; j++) {
            var s = 0.0;
            for (var d = 0; d < ${hd}; d++) { s = fma(q[d], tileK[j * ${hd} + d], s); }
            let newMax = max(runMax, s);
            let correction = exp(runMax - newMax);
            let p = exp(s - newMax);
            runSum = runSum * correction + p;
            for (var d = 0; d < ${hd}; d++) { acc[d] = fma(p, tileV[j * ${hd} + d], acc[d] * correction); }
            runMax = newMax;
          }
          workgroupBarrier();
        }
        if (valid) {
          let outBase = (b * T + t) * D + h * ${hd};
          for (var d = 0; d < ${hd}; d++) { result[outBase + d] = acc[d] / runSum; }
        }
      }`;
  }
}

export function registerFlashAttentionKernel(): void {
  tf.registerKernel({
    kernelName: FLASH_ATTENTION,
    backendName: 'webgpu',
    kernelFunc: ({ inputs, attrs, backend }) => {
      const { qkv } = inputs as { qkv: tf.TensorInfo };
      const { batch, heads } = attrs as { batch: number; heads: number };
      const [rows, width] = qkv.shape;
      const tokens = rows / batch;
      const headDim = width / 3 / heads;
      const program = new FlashAttentionProgram([rows, width / 3], tokens, batch * heads, headDim);
      return (backend as unknown as ProgramRunner).runWebGPUProgram(program, [qkv], 'float32', [i32(tokens), i32(heads), f32(headDim ** -0.5)]);
    },
  });
}

/**
 * The cases of spec/webgpu-kernels.spec.ts: LayerNorm, GELU, attention (for its softmax and
 * batched matMuls), linear layers and matMuls in every transpose form, at small shapes and a
 * ViT's (197 tokens), the global gradient norm and loss scaling's unscaled norm, and AdamW from fixed host inputs, each op's value and its gradients w.r.t. every input under a
 * random linear loss, and two AdamW steps with clipping. Run here on the active backend (the
 * spec's wasm), or as a script on webgpu, where it prints one JSON line with the cases run with
 * the fused WGSL kernels and tiled matMul, without them, the kernels a fused pass dispatched and
 * the programs compiled:
 *   TFJS_BACKEND=webgpu WEBGPU_FUSED=1 WEBGPU_MATMUL=1 npx ts-node spec/webgpu-kernels-cases.ts
 */
import * as tf from '@tensorflow/tfjs';
import { Rng } from '../lib/rng';
import { AdamW } from '../models/adamw';
import { setFusedKernels } from '../models/kernels';
import { unscaledNorm } from '../models/loss-scale';
import { attention, gelu, layerNorm, linear } from '../models/ops';
import { initBackend } from '../runtime/backend';

export type Cases = Record<string, number[]>;

function normal(rng: Rng, shape: number[], mean = 0, std = 1): tf.Tensor {
  return tf.tensor(Float32Array.from({ length: tf.util.sizeFromShape(shape) }, () => mean + std * rng.normal()), shape);
}

/** `name`: the op's value, `name/d0`...: gradients of sum(op(...) * w) w.r.t. each input. */
async function valueAndGrads(out: Cases, name: string, f: (...xs: tf.Tensor[]) => tf.Tensor, inputs: tf.Tensor[], rng: Rng): Promise<void> {
  const value = tf.tidy(() => f(...inputs));
  const w = normal(rng, value.shape);
  const { grads } = tf.valueAndGrads((...xs: tf.Tensor[]) => tf.sum(tf.mul(f(...xs), w)) as tf.Scalar)(inputs);
  out[name] = Array.from(await value.data());
  for (const [i, g] of grads.entries()) out[`${name}/d${i}`] = Array.from(await g.data());
  tf.dispose([value, w, ...grads]);
}

/** Every case on the active backend (the fused kernels as registered and switched). */
export async function kernelCases(): Promise<Cases> {
  const rng = new Rng(17);
  const out: Cases = {};
  // vec4 rows over more than one 64-row chunk of the parameter gradients; odd widths (scalar path);
  // more rows than a dispatch dimension takes (65535: tfjs folds the workgroups into a grid)
  // and a ViT's: an image's 197 tokens at ViT-B's width
  for (const [rows, width] of [[130, 24], [7, 30], [3, 5], [66000, 8], [197, 768]]) {
    const x = normal(rng, [rows, width], 0.5, 2);
    const gamma = normal(rng, [width], 1, 0.3);
    const beta = normal(rng, [width], 0, 0.3);
    await valueAndGrads(out, `layerNorm ${rows}x${width}`, (a, g, b) => layerNorm(a as tf.Tensor2D, g as tf.Tensor1D, b as tf.Tensor1D, 1e-6), [x, gamma, beta], rng);
    tf.dispose([x, gamma, beta]);
  }
  for (const shape of [[50, 36], [7, 5], [197, 768]]) {
    const x = normal(rng, shape, 0, 2);
    await valueAndGrads(out, `gelu ${shape.join('x')}`, (a) => gelu(a, 'gelu'), [x], rng);
    x.dispose();
  }
  // [batch, tokens, heads, headDim]: rows of 70 (more than one element per invocation) and of 3;
  // a ViT's 197 tokens and 64-wide heads (batched matMuls the tiled kernel takes)
  for (const [batch, tokens, heads, headDim] of [[2, 70, 2, 8], [3, 3, 1, 4], [1, 197, 2, 64]]) {
    const qkv = normal(rng, [batch * tokens, 3 * heads * headDim], 0, 1.5);
    await valueAndGrads(out, `attention ${batch}x${tokens}x${heads}x${headDim}`, (x) => attention(x as tf.Tensor2D, batch, heads), [qkv], rng);
    qkv.dispose();
  }
  // linear layers (matMul with bias, and its gradients: both transposed forms, column sums):
  // rows not a multiple of the tile; the small one narrower than the tiled matMul takes
  // and a ViT-Ti block's qkv over an image's 197 tokens
  for (const [rows, inDim, outDim] of [[150, 70, 72], [33, 9, 10], [197, 192, 576]]) {
    const x = normal(rng, [rows, inDim]);
    const w = normal(rng, [inDim, outDim], 0, 0.3);
    const b = normal(rng, [outDim]);
    await valueAndGrads(out, `linear ${rows}x${inDim}x${outDim}`, (xs, ws, bs) => linear(xs as tf.Tensor2D, ws as tf.Tensor2D, bs as tf.Tensor1D), [x, w, b], rng);
    tf.dispose([x, w, b]);
  }
  // large enough for 128x128 tiles, in every transpose form, with and without vec4 rows
  for (const [m, n, transposeA, transposeB] of [[2049, 2052, false, false], [2050, 2049, true, true], [2048, 2051, false, true], [2051, 2048, true, false]] as const) {
    // more than one staged tile deep, and a remainder
    const k = 21;
    const a = normal(rng, transposeA ? [k, m] : [m, k]);
    const b = normal(rng, transposeB ? [n, k] : [k, n]);
    // its row and column sums (a wrong element shows in both): 4 M values would not travel well
    const c = tf.matMul(a, b, transposeA, transposeB);
    const sums = [tf.sum(c, 0), tf.sum(c, 1)];
    out[`matMul ${m}x${n}x${k} ${transposeA} ${transposeB} column sums`] = Array.from(await sums[0].data());
    out[`matMul ${m}x${n}x${k} ${transposeA} ${transposeB} row sums`] = Array.from(await sums[1].data());
    tf.dispose([a, b, c, ...sums]);
  }
  // the global norm over more tensors than one dispatch binds, some longer than the workgroup grid's stride (32768)
  const many = Array.from({ length: 40 }, (_, i) => ({ name: `n${i}`, variable: tf.variable(tf.zeros([1 + ((i * 7919) % 40001)])), lrScale: 1, weightDecay: 0, decay: false }));
  const normOpt = new AdamW(many, { beta1: 0.9, beta2: 0.95, eps: 1e-8 });
  const manyGrads = Object.fromEntries(many.map((p) => [p.variable.name, normal(rng, p.variable.shape, 0, 1e-3)]));
  const manyNorm = normOpt.gradNorm(manyGrads);
  out['global norm 40 tensors'] = Array.from(await manyNorm.data());
  // the unscaled norm of loss scaling: scaled gradients, and one with an overflow
  const scaled = Object.values(manyGrads).map((g) => tf.mul(g, 2 ** 12));
  const unscaled = unscaledNorm(scaled, 2 ** -12);
  out['unscaled norm 40 tensors'] = Array.from(await unscaled.data());
  const overflow = tf.tensor([1, Infinity, 2]);
  const overflowNorm = unscaledNorm([...scaled.slice(0, 20), overflow, ...scaled.slice(20)], 2 ** -12);
  out['unscaled norm with an overflow is not finite'] = [Number.isFinite((await overflowNorm.data())[0]) ? 0 : 1];
  normOpt.dispose();
  tf.dispose([manyNorm, unscaled, overflow, overflowNorm, ...scaled, ...Object.values(manyGrads), ...many.map((p) => p.variable)]);
  // two AdamW steps, the second clipped (the clip factor stays on the device off wasm); vec4 and odd sizes, with and without decay
  const params = [[12, 8], [7], [3, 5]].map((shape, i) => ({ name: `p${i}`, variable: tf.variable(normal(rng, shape)), lrScale: 1 - 0.2 * i, weightDecay: i === 1 ? 0 : 0.05, decay: i !== 1 }));
  const opt = new AdamW(params, { beta1: 0.9, beta2: 0.95, eps: 1e-8, clipGradNorm: 1 });
  for (const [step, scale] of [[1, 0.1], [2, 3]]) {
    const grads = Object.fromEntries(params.map((p) => [p.variable.name, normal(rng, p.variable.shape, 0, scale)]));
    const norm = opt.apply(grads, 1e-2);
    out[`adamw step ${step} norm`] = Array.from(await norm.data());
    tf.dispose([norm, ...Object.values(grads)]);
  }
  const state = await opt.exportState();
  for (const p of params) {
    out[`adamw ${p.name}`] = Array.from(await p.variable.data());
    out[`adamw m ${p.name}`] = Array.from(state[`adam.m.${p.name}`].data);
    out[`adamw v ${p.name}`] = Array.from(state[`adam.v.${p.name}`].data);
  }
  opt.dispose();
  tf.dispose(params.map((p) => p.variable));
  return out;
}

async function main() {
  const backend = await initBackend(() => undefined);
  // the fused pass under tf.profile, which names every kernel run
  const profile = await tf.profile(kernelCases);
  const fused = profile.result as unknown as Cases;
  const dispatched = [...new Set(profile.kernels.map((k) => k.name))].sort();
  setFusedKernels(false);
  const composed = await kernelCases();
  // the compiled programs (the tiled matMul's key names its transposes, bias and tile)
  const programs = Object.keys((tf.backend() as unknown as { pipelineCache: object }).pipelineCache);
  console.log(JSON.stringify({ backend: backend.tfBackend, fusedWgsl: backend.fusedWgsl ?? false, wgslMatMul: backend.wgslMatMul ?? false, dispatched, programs, fused, composed }));
}

if (require.main === module) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}

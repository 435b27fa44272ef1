/**
 * The cases of spec/webgpu-mixed.spec.ts, run on webgpu with WEBGPU_PRECISION=mixed (f16
 * operand tiles on lavapipe: it has shader-f16, no subgroup matrices) and a 1 MiB buffer pool:
 * a linear layer's value and gradients from fixed inputs, dynamic loss scaling through real
 * f16 overflows, the pool's statistics, and the mixed matMul's self-test (its own pipeline) with
 * plain f16 and with subgroup matrices. One JSON line.
 *   TFJS_BACKEND=webgpu WEBGPU_PRECISION=mixed WEBGPU_FUSED=1 WEBGPU_POOL_MIB=1 npx ts-node spec/webgpu-mixed-cases.ts
 */
import * as tf from '@tensorflow/tfjs';
import { Rng } from '../lib/rng';
import { AdamW } from '../models/adamw';
import { DynamicLossScale } from '../models/loss-scale';
import { linear } from '../models/ops';
import { selfTestMatMul } from '../models/kernels-webgpu/matmul-f16';
import { initBackend } from '../runtime/backend';
import { webGpuDevice } from '../runtime/webgpu';

export const LINEAR = { rows: 197, inDim: 192, outDim: 576 };

/** Fixed inputs of the linear case (the same on every backend). */
export function linearInputs(): tf.Tensor[] {
  const rng = new Rng(5);
  const normal = (shape: number[], std: number) => tf.tensor(Float32Array.from({ length: shape[0] * (shape[1] ?? 1) }, () => std * rng.normal()), shape);
  return [normal([LINEAR.rows, LINEAR.inDim], 1), normal([LINEAR.inDim, LINEAR.outDim], 0.1), normal([LINEAR.outDim], 0.1), normal([LINEAR.rows, LINEAR.outDim], 1)];
}

/** linear(x, w, b): value and the gradients of sum(value * r). */
export async function linearCase(): Promise<Record<string, number[]>> {
  const [x, w, b, r] = linearInputs();
  const f = (xs: tf.Tensor, ws: tf.Tensor, bs: tf.Tensor) => linear(xs as tf.Tensor2D, ws as tf.Tensor2D, bs as tf.Tensor1D);
  const value = f(x, w, b);
  const { grads } = tf.valueAndGrads((xs: tf.Tensor, ws: tf.Tensor, bs: tf.Tensor) => tf.sum(tf.mul(f(xs, ws, bs), r)) as tf.Scalar)([x, w, b]);
  const out: Record<string, number[]> = { value: Array.from(await value.data()) };
  for (const [i, g] of grads.entries()) out[`d${i}`] = Array.from(await g.data());
  tf.dispose([x, w, b, r, value, ...grads]);
  return out;
}

/**
 * A linear layer trained with loss scaling from a scale (2^36) at which its f16 gradient
 * operands overflow: each step's scale, whether it was finite, the loss, and whether the
 * weights changed.
 */
async function lossScaleRun(): Promise<{ scale: number; finite: boolean; loss: number; changed: boolean }[]> {
  const [x, w0, b0, target] = linearInputs();
  const w = tf.variable(w0, true, 'mixed.w');
  const b = tf.variable(b0, true, 'mixed.b');
  const opt = new AdamW([w, b].map((v) => ({ name: v.name, variable: v, lrScale: 1, weightDecay: 0, decay: false })), { beta1: 0.9, beta2: 0.95, eps: 1e-8, clipGradNorm: 1 });
  const scaler = new DynamicLossScale({ initScale: 2 ** 36, growthInterval: 3 });
  const steps = [];
  for (let i = 0; i < 16; i++) {
    const before = await w.data();
    const scale = scaler.scale;
    let loss!: tf.Scalar;
    const { grads } = tf.variableGrads(() => {
      loss = tf.keep(tf.mean(tf.square(tf.sub(linear(x as tf.Tensor2D, w as tf.Tensor2D, b as tf.Tensor1D), target))) as tf.Scalar);
      return scaler.scaleLoss(loss);
    });
    const outcome = await scaler.unscale(grads);
    if (outcome.finite) {
      tf.dispose(opt.apply(outcome.grads, 1e-2, outcome.norm));
      tf.dispose(Object.values(outcome.grads));
    }
    const after = await w.data();
    steps.push({ scale, finite: outcome.finite, loss: (await loss.data())[0], changed: after.some((v, j) => v !== before[j]) });
    tf.dispose([loss, ...Object.values(grads)]);
  }
  opt.dispose();
  tf.dispose([x, w0, b0, target, w, b]);
  return steps;
}

async function main() {
  const backend = await initBackend(() => undefined);
  // first, so that the cases after them show the device is still sound after a failed one
  const { device, capabilities } = webGpuDevice()!;
  const lanes = capabilities.subgroupMaxSize ?? 32;
  const selfTests = { plain: await selfTestMatMul(device, 16, lanes, false), matrices: await selfTestMatMul(device, 16, lanes, true) };
  const linearOut = await linearCase();
  const lossScale = await lossScaleRun();
  const programs = Object.keys((tf.backend() as unknown as { pipelineCache: object }).pipelineCache);
  console.log(JSON.stringify({ backend: backend.tfBackend, precision: backend.precision, pool: backend.pool?.(), programs, linear: linearOut, lossScale, selfTests }));
}

if (require.main === module) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}

/**
 * AdamW (Loshchilov & Hutter 2019): Adam with decoupled weight decay, per-parameter groups
 * carrying their own lr scale (layer-wise lr decay) and weight decay (none on biases, norms,
 * tokens and position embeddings), plus optional global-norm gradient clipping. On wasm each
 * parameter's update is one fused kernel (models/kernels/adamw.c), on webgpu with
 * WEBGPU_FUSED=1 three WGSL dispatches (models/kernels-webgpu/adamw.ts).
 */
import * as tf from '@tensorflow/tfjs';
import { HostTensor, ParamGroupEntry } from './params';
import { FUSED_ADAMW } from './kernels/adamw';
import { FUSED_GLOBAL_NORM } from './kernels-webgpu/global-norm';
import { fusedKernel, fusedKernelsActive, runKernel, sumSquares } from './kernels';

export type { ParamGroupEntry };

export interface AdamWOptions {
  beta1: number;
  beta2: number;
  eps: number;
  /** Clip the global gradient norm to this value (0 or undefined: no clipping). */
  clipGradNorm?: number;
}

export class AdamW {
  private readonly m = new Map<string, tf.Variable>();
  private readonly v = new Map<string, tf.Variable>();
  step = 0;

  constructor(readonly params: ParamGroupEntry[], readonly opts: AdamWOptions = { beta1: 0.9, beta2: 0.95, eps: 1e-8 }) {
    for (const p of params) {
      if (this.m.has(p.name)) throw new Error(`parameter ${p.name} given to the optimiser twice`);
      // tidy frees the zeros (variables outlive it)
      this.m.set(p.name, tf.tidy(() => tf.variable(tf.zerosLike(p.variable), false)));
      this.v.set(p.name, tf.tidy(() => tf.variable(tf.zerosLike(p.variable), false)));
    }
  }

  /** The global gradient norm of the parameters present in grads, as a device scalar. */
  gradNorm(grads: tf.NamedTensorMap): tf.Scalar {
    const present = this.params.filter((p) => grads[p.variable.name] !== undefined);
    if (fusedKernelsActive()) return tf.scalar(heapNorm(present, grads));
    // webgpu (WEBGPU_FUSED=1): a dozen dispatches instead of ~2 per tensor
    if (fusedKernel(FUSED_GLOBAL_NORM)) return runKernel(FUSED_GLOBAL_NORM, Object.fromEntries(present.map((p, i) => [`g${i}`, grads[p.variable.name]])))[0] as tf.Scalar;
    return tf.tidy(() => tf.sqrt(tf.addN(present.map((p) => tf.sum(tf.square(grads[p.variable.name]))))) as tf.Scalar);
  }

  /**
   * Applies one update from grads keyed by variable name (tf.Variable.name). Returns the
   * pre-clip global grad norm as a scalar the caller owns; clipping happens on the device, so
   * nothing is read back. `hostNorm`: the norm when the caller has already read it.
   */
  apply(grads: tf.NamedTensorMap, lr: number, hostNorm?: number): tf.Scalar {
    this.step++;
    const { beta1, beta2, eps, clipGradNorm } = this.opts;
    const present = this.params.filter((p) => grads[p.variable.name] !== undefined);
    const fused = fusedKernelsActive();
    // on wasm the fused kernel sums over the heap the tensors live in (no device to wait for),
    // and takes the clip factor as an attribute
    const normValue = hostNorm ?? (fused ? heapNorm(present, grads) : undefined);
    const norm = normValue !== undefined ? tf.scalar(normValue) : this.gradNorm(grads);
    const clip: number | tf.Scalar = !clipGradNorm
      ? 1
      : normValue !== undefined
        ? normValue > clipGradNorm ? clipGradNorm / (normValue + 1e-6) : 1
        : tf.tidy(() => tf.where(tf.greater(norm, clipGradNorm), tf.div(clipGradNorm, tf.add(norm, 1e-6)), tf.scalar(1)) as tf.Scalar);
    const bias1 = 1 - beta1 ** this.step;
    const bias2 = 1 - beta2 ** this.step;
    // the WGSL kernel takes the clip factor as a device scalar, one for all parameters
    const gpuScale = !fused && fusedKernel(FUSED_ADAMW) ? tf.tidy(() => tf.reshape(typeof clip === 'number' ? tf.scalar(clip) : clip, [1])) : undefined;
    for (const p of present) {
      tf.tidy(() => {
        const g = grads[p.variable.name];
        const m = this.m.get(p.name)!;
        const v = this.v.get(p.name)!;
        const stepLr = lr * p.lrScale;
        const decayFactor = 1 - stepLr * p.weightDecay;
        if (fused || gpuScale) {
          // on wasm the clip factor is a number, on webgpu the device scalar gpuScale
          const attrs = { lr: stepLr, decayFactor, beta1, beta2, invBias1: 1 / bias1, invBias2: 1 / bias2, eps, gradScale: gpuScale ? 1 : (clip as number) };
          const [pNew, mNew, vNew] = runKernel(FUSED_ADAMW, { p: p.variable, g, m, v, ...(gpuScale && { scale: gpuScale }) }, attrs);
          m.assign(mNew);
          v.assign(vNew);
          p.variable.assign(pNew);
          return;
        }
        const gs = clip === 1 ? g : tf.mul(g, clip);
        m.assign(tf.add(tf.mul(m, beta1), tf.mul(gs, 1 - beta1)));
        v.assign(tf.add(tf.mul(v, beta2), tf.mul(tf.square(gs), 1 - beta2)));
        const update = tf.div(tf.div(m, bias1), tf.add(tf.sqrt(tf.div(v, bias2)), eps));
        p.variable.assign(tf.sub(tf.mul(p.variable, decayFactor), tf.mul(update, stepLr)));
      });
    }
    if (typeof clip !== 'number') clip.dispose();
    gpuScale?.dispose();
    return norm;
  }

  /** Moments in the variables' own layout, for exact resume (read asynchronously). */
  async exportState(): Promise<Record<string, HostTensor>> {
    const moments = [...[...this.m].map(([name, t]) => [`adam.m.${name}`, t] as const), ...[...this.v].map(([name, t]) => [`adam.v.${name}`, t] as const)];
    const data = await Promise.all(moments.map(([, t]) => t.data() as Promise<Float32Array>));
    return Object.fromEntries(moments.map(([key, t], i) => [key, { shape: t.shape, data: data[i] }]));
  }

  importState(tensors: Map<string, HostTensor>, step: number, file: string): void {
    for (const [kind, map] of [['m', this.m], ['v', this.v]] as const) {
      for (const [name, variable] of map) {
        const t = tensors.get(`adam.${kind}.${name}`);
        if (!t || t.shape.join(',') !== variable.shape.join(',')) {
          throw new Error(`${file}: optimiser state adam.${kind}.${name} missing or of wrong shape`);
        }
      }
    }
    for (const [kind, map] of [['m', this.m], ['v', this.v]] as const) {
      for (const [name, variable] of map) {
        const t = tensors.get(`adam.${kind}.${name}`)!;
        tf.tidy(() => variable.assign(tf.tensor(t.data, t.shape)));
      }
    }
    this.step = step;
  }

  dispose(): void {
    for (const t of [...this.m.values(), ...this.v.values()]) t.dispose();
  }
}

/** Global norm over the wasm heap with the fused sum-of-squares kernel. */
function heapNorm(present: ParamGroupEntry[], grads: tf.NamedTensorMap): number {
  return Math.sqrt(present.reduce((sum, p) => sum + sumSquares(grads[p.variable.name]), 0));
}

/** Linear warm-up then cosine decay to `minLr`, per step (MAE / MIM-Refiner schedule). */
export function warmupCosine(step: number, total: number, warmup: number, peak: number, minLr: number): number {
  if (step < warmup) return (peak * (step + 1)) / warmup;
  const progress = Math.min(1, (step - warmup) / Math.max(1, total - warmup));
  return minLr + (peak - minLr) * 0.5 * (1 + Math.cos(Math.PI * progress));
}

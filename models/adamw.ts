/**
 * AdamW (Loshchilov & Hutter 2019): Adam with decoupled weight decay, per-parameter groups
 * carrying their own lr scale (layer-wise lr decay) and weight decay (none on biases, norms,
 * tokens and position embeddings), plus optional global-norm gradient clipping. On wasm each
 * parameter's update is one fused kernel (models/kernels/adamw.c).
 */
import * as tf from '@tensorflow/tfjs';
import { HostTensor } from './params';
import { FUSED_ADAMW } from './kernels/adamw';
import { fusedKernelsActive, runKernel, sumSquares } from './kernels';

export interface ParamGroupEntry {
  name: string;
  variable: tf.Variable;
  lrScale: number;
  weightDecay: number;
}

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

  /**
   * Applies one update from grads keyed by variable name (tf.Variable.name). Returns the
   * pre-clip grad norm as a device scalar (the caller disposes it): clipping runs on the
   * device, nothing is read back.
   */
  apply(grads: tf.NamedTensorMap, lr: number): tf.Scalar {
    this.step++;
    const { beta1, beta2, eps, clipGradNorm } = this.opts;
    const present = this.params.filter((p) => grads[p.variable.name] !== undefined);
    const fused = fusedKernelsActive();
    // the fused kernels run synchronously on the host's heap: there the norm is a host number
    const hostNorm = fused ? Math.sqrt(present.reduce((sum, p) => sum + sumSquares(grads[p.variable.name]), 0)) : 0;
    const norm: tf.Scalar = fused
      ? tf.scalar(hostNorm)
      : tf.tidy(() => tf.sqrt(tf.addN(present.map((p) => tf.sum(tf.square(grads[p.variable.name]))))) as tf.Scalar);
    const clip = clipGradNorm && hostNorm > clipGradNorm ? clipGradNorm / (hostNorm + 1e-6) : 1;
    const clipOnDevice = !fused && clipGradNorm ? tf.tidy(() => tf.minimum(1, tf.div(clipGradNorm, tf.add(norm, 1e-6)))) : undefined;
    const bias1 = 1 - beta1 ** this.step;
    const bias2 = 1 - beta2 ** this.step;
    for (const p of present) {
      tf.tidy(() => {
        const g = grads[p.variable.name];
        const m = this.m.get(p.name)!;
        const v = this.v.get(p.name)!;
        const stepLr = lr * p.lrScale;
        const decayFactor = 1 - stepLr * p.weightDecay;
        if (fused) {
          const attrs = { lr: stepLr, decayFactor, beta1, beta2, invBias1: 1 / bias1, invBias2: 1 / bias2, eps, gradScale: clip };
          const [pNew, mNew, vNew] = runKernel(FUSED_ADAMW, { p: p.variable, g, m, v }, attrs);
          m.assign(mNew);
          v.assign(vNew);
          p.variable.assign(pNew);
          return;
        }
        const gs = clipOnDevice ? tf.mul(g, clipOnDevice) : g;
        m.assign(tf.add(tf.mul(m, beta1), tf.mul(gs, 1 - beta1)));
        v.assign(tf.add(tf.mul(v, beta2), tf.mul(tf.square(gs), 1 - beta2)));
        const update = tf.div(tf.div(m, bias1), tf.add(tf.sqrt(tf.div(v, bias2)), eps));
        p.variable.assign(tf.sub(tf.mul(p.variable, decayFactor), tf.mul(update, stepLr)));
      });
    }
    clipOnDevice?.dispose();
    return norm;
  }

  /** Moments in the variables' own layout, for exact resume. */
  async exportState(): Promise<Record<string, HostTensor>> {
    const out: Record<string, HostTensor> = {};
    for (const [name, t] of this.m) out[`adam.m.${name}`] = { shape: t.shape, data: (await t.data()) as Float32Array };
    for (const [name, t] of this.v) out[`adam.v.${name}`] = { shape: t.shape, data: (await t.data()) as Float32Array };
    return out;
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

/** Linear warm-up then cosine decay to `minLr`, per step (MAE / MIM-Refiner schedule). */
export function warmupCosine(step: number, total: number, warmup: number, peak: number, minLr: number): number {
  if (step < warmup) return (peak * (step + 1)) / warmup;
  const progress = Math.min(1, (step - warmup) / Math.max(1, total - warmup));
  return minLr + (peak - minLr) * 0.5 * (1 + Math.cos(Math.PI * progress));
}

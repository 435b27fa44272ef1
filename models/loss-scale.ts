/**
 * Dynamic loss scaling for mixed-precision training (WEBGPU_PRECISION=mixed: f16 matMul
 * operands, where gradients below f16's 6e-8 would flush to zero): the loss is multiplied by a
 * scale before the backward pass, the gradients are divided by it before the update. A step
 * whose gradients overflowed (inf or NaN) is skipped, and the scale halved; after
 * `growthInterval` finite steps in a row it doubles (PyTorch's GradScaler defaults). A skipped
 * step is an event the caller records, not a failure: the loss itself is computed unscaled and
 * stays finite, so a NaN guard on it is not tripped by an overflow here.
 * The check and the norm come together: the global norm of the *unscaled* gradients, computed
 * from the scaled ones in one pass (on webgpu with WEBGPU_FUSED=1 the 'FusedGlobalNorm' kernel,
 * a dozen dispatches for a ViT-B; elsewhere composed), is finite exactly when every gradient
 * is. It is read once (asynchronously) per step, as operators/train-step.ts already reads the
 * norm with --on-nonfinite skip, and handed to AdamW.apply as its host norm, so the optimiser
 * computes no norm of its own. Only a finite step writes unscaled gradients (a multiply per
 * tensor by 1 / scale, exact: scales are powers of two).
 */
import * as tf from '@tensorflow/tfjs';
import { fusedKernel, runKernel } from './kernels';
import type { HostTensor } from './params';
import { FUSED_GLOBAL_NORM } from './kernels-webgpu/global-norm';

export interface LossScaleOptions {
  /** The first scale (2^16, as GradScaler). */
  initScale: number;
  /** The scale is multiplied by this after growthInterval finite steps in a row. */
  growthFactor: number;
  /** ... and by this after a non-finite step. */
  backoffFactor: number;
  growthInterval: number;
  /** The scale does not go below this. */
  minScale: number;
}

export const LOSS_SCALE_DEFAULTS: LossScaleOptions = { initScale: 2 ** 16, growthFactor: 2, backoffFactor: 0.5, growthInterval: 2000, minScale: 1 };

/** What a step's unscale found. The caller owns `grads` (a finite step's) and disposes them. */
export type LossScaleStep =
  | { finite: true; grads: tf.NamedTensorMap; norm: number; scale: number; grew: boolean }
  | { finite: false; norm: number; scale: number; previousScale: number };

/** The scaler's state, for checkpoints (resume continues with the same scale). */
export interface LossScaleState {
  scale: number;
  goodSteps: number;
  skippedSteps: number;
}

export class DynamicLossScale {
  private readonly opts: LossScaleOptions;
  private state: LossScaleState;

  constructor(opts: Partial<LossScaleOptions> = {}) {
    this.opts = { ...LOSS_SCALE_DEFAULTS, ...opts };
    const { initScale, growthFactor, backoffFactor, growthInterval, minScale } = this.opts;
    if (!(initScale > 0 && growthFactor > 1 && backoffFactor > 0 && backoffFactor < 1 && growthInterval >= 1 && minScale > 0)) {
      throw new Error(`loss scale: bad options ${JSON.stringify(this.opts)}`);
    }
    this.state = { scale: initScale, goodSteps: 0, skippedSteps: 0 };
  }

  get scale(): number {
    return this.state.scale;
  }

  /** Steps skipped so far (non-finite gradients). */
  get skippedSteps(): number {
    return this.state.skippedSteps;
  }

  /** loss x scale, the value the gradient tape differentiates. */
  scaleLoss(loss: tf.Scalar): tf.Scalar {
    return tf.mul(loss, tf.scalar(this.state.scale));
  }

  /**
   * The gradients of the scaled loss -> the unscaled gradients and their global norm, or a
   * skip with the scale lowered. Reads one number from the device. The input gradients are
   * the caller's (not disposed here).
   */
  async unscale(grads: tf.NamedTensorMap): Promise<LossScaleStep> {
    const inverse = 1 / this.state.scale;
    const normT = unscaledNorm(Object.values(grads), inverse);
    const norm = (await normT.data())[0];
    normT.dispose();
    const scale = this.state.scale;
    if (!Number.isFinite(norm)) {
      this.state.scale = Math.max(this.opts.minScale, scale * this.opts.backoffFactor);
      this.state.goodSteps = 0;
      this.state.skippedSteps++;
      return { finite: false, norm, scale: this.state.scale, previousScale: scale };
    }
    const unscaled = tf.tidy(() => Object.fromEntries(Object.entries(grads).map(([k, g]) => [k, tf.mul(g, tf.scalar(inverse))])));
    this.state.goodSteps++;
    const grew = this.state.goodSteps >= this.opts.growthInterval;
    if (grew) {
      this.state.scale = scale * this.opts.growthFactor;
      this.state.goodSteps = 0;
    }
    return { finite: true, grads: unscaled, norm, scale, grew };
  }

  exportState(): LossScaleState {
    return { ...this.state };
  }

  importState(state: LossScaleState): void {
    if (!(state.scale > 0) || !Number.isInteger(state.goodSteps) || !Number.isInteger(state.skippedSteps)) {
      throw new Error(`loss scale: bad state ${JSON.stringify(state)}`);
    }
    this.state = { ...state };
  }

  /** The state as a checkpoint tensor [scale, goodSteps, skippedSteps] (exact in f32: powers of two and counts below 2^24). */
  exportHost(): HostTensor {
    return { shape: [3], data: Float32Array.of(this.state.scale, this.state.goodSteps, this.state.skippedSteps) };
  }

  /** exportHost's tensor, from the checkpoint `file` (named in errors). */
  importHost(t: HostTensor, file: string): void {
    if (t.shape.length !== 1 || t.shape[0] !== 3) throw new Error(`${file}: ${LOSS_SCALE_KEY} has shape [${t.shape}], expected [3]`);
    const [scale, goodSteps, skippedSteps] = t.data;
    try {
      this.importState({ scale, goodSteps, skippedSteps });
    } catch (err) {
      throw new Error(`${file}: ${(err as Error).message}`);
    }
  }
}

/** The loss scaler's key in state.safetensors. */
export const LOSS_SCALE_KEY = 'loss_scale';

/** sqrt(sum of (scale g)^2) over the tensors, as a device scalar. */
export function unscaledNorm(tensors: tf.Tensor[], scale: number): tf.Scalar {
  if (fusedKernel(FUSED_GLOBAL_NORM)) {
    return runKernel(FUSED_GLOBAL_NORM, Object.fromEntries(tensors.map((t, i) => [`g${i}`, t])), { scale })[0] as tf.Scalar;
  }
  return tf.tidy(() => tf.sqrt(tf.addN(tensors.map((t) => tf.sum(tf.square(tf.mul(t, tf.scalar(scale)))))))) as tf.Scalar;
}

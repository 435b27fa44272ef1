/**
 * The contrastive head MIM-Refiner (Alkin et al. 2024, arXiv 2402.10093) attaches to the CLS
 * token of a block: a projector (Linear-BN-GELU, Linear-BN-GELU, Linear-BN) whose output is
 * queued and matched to nearest neighbours, and a predictor (Linear-BN-GELU, Linear-BN) whose
 * output enters the NNA loss. Weights xavier-uniform, biases zero. Parameter names follow
 * nn.Sequential indices (projector.0 Linear, projector.1 BatchNorm, ...).
 */
import * as tf from '@tensorflow/tfjs';
import { Rng } from '../lib/rng';
import type { Collective } from '../lib/collective';
import { Activation, batchNormTrain, gelu, linear } from './ops';
import { globalBatchNormTrain } from './global-batch-norm';
import { ParamSet } from './params';

export interface HeadSizes {
  /** Projector hidden width. */
  hidden: number;
  /** Projection (queue) width. */
  out: number;
  /** Predictor hidden width. */
  predictorHidden: number;
}

/** Reference sizes ("base", ViT-L refinement), "micro" and one that fits the CPU default. */
export const HEAD_PRESETS: Record<string, HeadSizes> = {
  base: { hidden: 2048, out: 256, predictorHidden: 4096 },
  micro: { hidden: 256, out: 128, predictorHidden: 512 },
  tiny: { hidden: 256, out: 64, predictorHidden: 256 },
};

const BN_EPS = 1e-5;
const BN_MOMENTUM = 0.1;

export class NnaHead {
  readonly params: ParamSet;
  private readonly layers: { prefix: string; dims: [number, number]; act: boolean }[];

  /** collective: in a data-parallel run, BatchNorm statistics over the global batch of all ranks. */
  constructor(readonly inputDim: number, readonly sizes: HeadSizes, readonly act: Activation, seed: number, private readonly collective?: Collective) {
    const { hidden, out, predictorHidden } = sizes;
    this.layers = [
      { prefix: 'projector.0', dims: [inputDim, hidden], act: true },
      { prefix: 'projector.3', dims: [hidden, hidden], act: true },
      { prefix: 'projector.6', dims: [hidden, out], act: false },
      { prefix: 'predictor.0', dims: [out, predictorHidden], act: true },
      { prefix: 'predictor.3', dims: [predictorHidden, out], act: false },
    ];
    const ps = (this.params = new ParamSet(new Rng(seed, 0x4ead)));
    for (const { prefix, dims } of this.layers) {
      ps.addLinear(prefix, dims[0], dims[1]);
      const bn = bnPrefix(prefix);
      ps.addNorm(bn, dims[1]);
      ps.add(`${bn}.running_mean`, tf.zeros([dims[1]]), { trainable: false });
      ps.add(`${bn}.running_var`, tf.ones([dims[1]]), { trainable: false });
    }
  }

  /** CLS features [N, D] -> projection z [N, out]. */
  project(x: tf.Tensor2D, training: boolean): tf.Tensor2D {
    return this.run(x, 0, 3, training);
  }

  /** Projection [N, out] -> prediction p [N, out]. */
  predict(z: tf.Tensor2D, training: boolean): tf.Tensor2D {
    return this.run(z, 3, 5, training);
  }

  private run(x: tf.Tensor2D, from: number, to: number, training: boolean): tf.Tensor2D {
    let h = x;
    for (const { prefix, act } of this.layers.slice(from, to)) {
      h = linear(h, this.params.get(`${prefix}.weight`) as tf.Tensor2D, this.params.get(`${prefix}.bias`) as tf.Tensor1D);
      h = this.batchNorm(bnPrefix(prefix), h, training);
      if (act) h = gelu(h, this.act) as tf.Tensor2D;
    }
    return h;
  }

  /**
   * BatchNorm1d: batch statistics in training (and the running averages updated with
   * PyTorch's momentum and unbiased variance), running statistics in evaluation.
   */
  private batchNorm(prefix: string, x: tf.Tensor2D, training: boolean): tf.Tensor2D {
    const runningMean = this.params.get(`${prefix}.running_mean`);
    const runningVar = this.params.get(`${prefix}.running_var`);
    const gamma = this.params.get(`${prefix}.weight`) as tf.Tensor1D;
    const beta = this.params.get(`${prefix}.bias`) as tf.Tensor1D;
    if (training) {
      const c = this.collective;
      const n = x.shape[0] * (c?.worldSize ?? 1);
      const norm = c ? globalBatchNormTrain.bind(undefined, c) : batchNormTrain;
      return norm(x, gamma, beta, BN_EPS, (mean, variance) => {
        runningMean.assign(tf.add(tf.mul(runningMean, 1 - BN_MOMENTUM), tf.mul(mean, BN_MOMENTUM)));
        runningVar.assign(tf.add(tf.mul(runningVar, 1 - BN_MOMENTUM), tf.mul(variance, (BN_MOMENTUM * n) / Math.max(1, n - 1))));
      });
    }
    const normalised = tf.mul(tf.sub(x, runningMean), tf.rsqrt(tf.add(runningVar, BN_EPS)));
    return tf.add(tf.mul(normalised, gamma), beta) as tf.Tensor2D;
  }
}

/** The BatchNorm after a Linear sits at the next nn.Sequential index. */
function bnPrefix(linearPrefix: string): string {
  const [part, index] = linearPrefix.split('.');
  return `${part}.${Number(index) + 1}`;
}

/** The last block plus the rest of the last third of the blocks (reference: 16..23 of 24). */
export function defaultHeadBlocks(depth: number): number[] {
  const first = Math.max(0, depth - Math.ceil(depth / 3));
  return Array.from({ length: depth - first }, (_, i) => first + i);
}

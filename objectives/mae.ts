/**
 * MAE's step (He et al. 2022, arXiv 2111.06377): a seeded random 75% of each image's patches
 * masked, the encoder sees the rest, the decoder reconstructs per-patch normalised pixels, MSE
 * on the masked patches (models/mae.ts).
 */
import * as tf from '@tensorflow/tfjs';
import { Rng } from '../lib/rng';
import { VisionTransformer } from '../models/vit';
import { MaeDecoder, maeLoss, MaskPlan, randomMasking } from '../models/mae';
import type { Collective } from '../lib/collective';
import type { Objective } from './objective';

export interface MaeObjectiveOptions {
  encoder: VisionTransformer;
  decoder: MaeDecoder;
  maskRatio: number;
  /** Seed of the masking; step s masks with (seed, s). */
  seed: number;
  /** Data-parallel: this rank's rows of the global batch's masks (the ranks' gradients are then averaged). */
  collective?: Collective;
}

export function maeObjective(o: MaeObjectiveOptions): Objective<{ images: tf.Tensor4D; plan: MaskPlan }, void> {
  const size = o.encoder.cfg.imgSize;
  return {
    prepare: (b, step) => ({
      images: tf.tensor4d(b.views[0], [b.indices.length, size, size, 3]),
      plan: randomMasking(b.indices.length, o.encoder.numPatches, o.maskRatio, new Rng(o.seed, 0x3a5c, step), o.collective),
    }),
    loss: ({ images, plan }) => ({ loss: maeLoss(o.encoder, o.decoder, images, plan), metrics: {}, updates: undefined }),
  };
}

/**
 * Masked Autoencoder (He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners"):
 * the encoder sees a random subset of patches per sample, a light decoder with mask tokens
 * and fixed sin-cos positions reconstructs every patch, and the loss is the MSE on the masked
 * patches of per-patch normalised pixels (norm_pix_loss). Decoder parameter names follow the
 * reference implementation (decoder_embed, mask_token, decoder_pos_embed, decoder_blocks.N,
 * decoder_norm, decoder_pred).
 */
import * as tf from '@tensorflow/tfjs';
import { Rng } from '../lib/rng';
import { gatherPerSample, linear, layerNorm } from './ops';
import { ParamSet } from './params';
import { VisionTransformer, addBlockParams, sincosPosEmbed, transformerBlock } from './vit';

export interface MaeDecoderConfig {
  dim: number;
  depth: number;
  numHeads: number;
}

export interface MaskPlan {
  /** Patch indices each sample keeps, [B, K] (in shuffled order, as MAE). */
  keep: tf.Tensor2D;
  /** For each position of the original order, where it sits in [kept..., masked...], [B, T]. */
  restore: tf.Tensor2D;
  /** 1 where a patch is masked, [B, T]. */
  mask: tf.Tensor2D;
}

/** Per-sample random masking: a random permutation of the patches, the first (1 - ratio) kept. */
/**
 * A random mask per sample (MAE's per-sample shuffle). `rows`: this rank's rows of a global
 * batch of batch * worldSize samples (row g of the global batch is rank g % worldSize's row
 * floor(g / worldSize), runtime/data-parallel.ts): the plan is drawn for the whole global batch
 * in row order, so the ranks together mask as one process would.
 */
export function randomMasking(batch: number, numPatches: number, ratio: number, rng: Rng, rows = { rank: 0, worldSize: 1 }): MaskPlan {
  const keepCount = Math.round(numPatches * (1 - ratio));
  if (keepCount < 1 || keepCount >= numPatches) throw new Error(`mask ratio ${ratio} keeps ${keepCount} of ${numPatches} patches`);
  const keep = new Int32Array(batch * keepCount);
  const restore = new Int32Array(batch * numPatches);
  const mask = new Float32Array(batch * numPatches);
  const perm = new Int32Array(numPatches);
  for (let g = 0; g < batch * rows.worldSize; g++) {
    for (let i = 0; i < numPatches; i++) perm[i] = i;
    rng.shuffle(perm);
    if (g % rows.worldSize !== rows.rank) continue;
    const b = Math.floor(g / rows.worldSize);
    for (let i = 0; i < numPatches; i++) {
      restore[b * numPatches + perm[i]] = i;
      if (i < keepCount) keep[b * keepCount + i] = perm[i];
      else mask[b * numPatches + perm[i]] = 1;
    }
  }
  return {
    keep: tf.tensor2d(keep, [batch, keepCount], 'int32'),
    restore: tf.tensor2d(restore, [batch, numPatches], 'int32'),
    mask: tf.tensor2d(mask, [batch, numPatches]),
  };
}

/** Images [B, H, W, 3] -> patches [B, T, p*p*3], each flattened (kh, kw, c) like the encoder. */
export function patchify(images: tf.Tensor4D, patch: number): tf.Tensor3D {
  const [b, h, , c] = images.shape;
  const g = h / patch;
  return tf.reshape(
    tf.transpose(tf.reshape(images, [b * g, patch, g, patch * c]), [0, 2, 1, 3]),
    [b, g * g, patch * patch * c],
  );
}

/** Per-patch normalised pixels (MAE's norm_pix_loss target; unbiased variance as torch.var). */
export function normalisePatches(patches: tf.Tensor3D): tf.Tensor3D {
  const n = patches.shape[2];
  const { mean, variance } = tf.moments(patches, -1, true);
  const unbiased = tf.mul(variance, n / (n - 1));
  return tf.div(tf.sub(patches, mean), tf.sqrt(tf.add(unbiased, 1e-6)));
}

/** Mean over masked patches of the per-patch mean squared error. */
export function maskedMse(pred: tf.Tensor3D, target: tf.Tensor3D, mask: tf.Tensor2D): tf.Scalar {
  const perPatch = tf.mean(tf.squaredDifference(pred, target), -1);
  return tf.div(tf.sum(tf.mul(perPatch, mask)), tf.sum(mask));
}

export class MaeDecoder {
  readonly params: ParamSet;

  constructor(readonly encoder: VisionTransformer, readonly cfg: MaeDecoderConfig, seed = 1) {
    const ps = (this.params = new ParamSet(new Rng(seed, 0xdec)));
    const { embedDim, patchSize, mlpRatio } = encoder.cfg;
    ps.addLinear('decoder_embed', embedDim, cfg.dim);
    ps.add('mask_token', tf.mul(tf.randomNormal([1, 1, cfg.dim], 0, 1, 'float32', ps.seed()), 0.02));
    ps.add('decoder_pos_embed', tf.tensor(sincosPosEmbed(cfg.dim, encoder.gridSize), [1, 1 + encoder.numPatches, cfg.dim]), {
      trainable: false,
    });
    for (let i = 0; i < cfg.depth; i++) addBlockParams(ps, `decoder_blocks.${i}`, cfg.dim, Math.round(cfg.dim * mlpRatio));
    ps.addNorm('decoder_norm', cfg.dim);
    ps.addLinear('decoder_pred', cfg.dim, patchSize * patchSize * 3);
  }

  /** Encoder output [B, 1+K, D] (CLS first) -> pixel predictions for every patch [B, T, p*p*3]. */
  forward(latent: tf.Tensor3D, plan: MaskPlan): tf.Tensor3D {
    const [b, seq, d] = latent.shape;
    const t = this.encoder.numPatches;
    const dd = this.cfg.dim;
    const ps = this.params;
    const x = tf.reshape(
      linear(tf.reshape(latent, [b * seq, d]), ps.get('decoder_embed.weight') as tf.Tensor2D, ps.get('decoder_embed.bias') as tf.Tensor1D),
      [b, seq, dd],
    );
    const cls = tf.slice(x, [0, 0, 0], [b, 1, dd]);
    const visible = tf.slice(x, [0, 1, 0], [b, seq - 1, dd]);
    // broadcast by an add: tile's gradient (and broadcastTo's, which runs as Tile) slices and adds every copy one by one
    const masks = tf.add(tf.zeros([b, t - (seq - 1), dd]), ps.get('mask_token'));
    // back to the original patch order, then positions
    const patches = gatherPerSample(tf.concat([visible, masks], 1) as tf.Tensor3D, plan.restore);
    let rows = tf.reshape(tf.add(tf.concat([cls, patches], 1), ps.get('decoder_pos_embed')), [b * (t + 1), dd]) as tf.Tensor2D;
    for (let i = 0; i < this.cfg.depth; i++) {
      rows = transformerBlock(ps, `decoder_blocks.${i}`, rows, b, this.cfg.numHeads, this.encoder.cfg.act);
    }
    rows = layerNorm(rows, ps.get('decoder_norm.weight') as tf.Tensor1D, ps.get('decoder_norm.bias') as tf.Tensor1D, 1e-6);
    const pred = linear(rows, ps.get('decoder_pred.weight') as tf.Tensor2D, ps.get('decoder_pred.bias') as tf.Tensor1D);
    const out = tf.reshape(pred, [b, t + 1, pred.shape[1]]);
    return tf.slice(out, [0, 1, 0], [b, t, pred.shape[1]]) as tf.Tensor3D;
  }
}

/** MAE loss for a batch: encode the visible patches, decode all, MSE on the masked ones. */
export function maeLoss(encoder: VisionTransformer, decoder: MaeDecoder, images: tf.Tensor4D, plan: MaskPlan): tf.Scalar {
  const latent = encoder.getIntermediateLayers(images, { blocks: [encoder.cfg.depth - 1], norm: true, keep: plan.keep })[0];
  const pred = decoder.forward(latent, plan);
  const target = normalisePatches(patchify(images, encoder.cfg.patchSize));
  return maskedMse(pred, target, plan.mask);
}

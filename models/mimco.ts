/**
 * MimCo's student side (MimCo, Zhou et al. 2022, arXiv 2209.03063): a ViT that sees every patch
 * position, masked ones as a learnable mask token plus their position embedding (SimMIM/BEiT
 * style: the student has to emit a feature at each masked position, so each must have a token),
 * and two projection heads (Linear-GELU-Linear) from its width to the teacher's, one for patch
 * tokens and one for the CLS token. The head's shape is our choice (the paper names only "a
 * projection"): two layers with a GELU is the smallest non-linear head, and a head at all spares
 * the encoder's own tokens from having to be the teacher's features (as SimCLR/MoCo heads do).
 * Parameter names: mask_token, patch_head.{0,2}, global_head.{0,2} (nn.Sequential
 * indices). The encoder stays a plain timm ViT; all of these live beside it.
 */
import * as tf from '@tensorflow/tfjs';
import { Rng } from '../lib/rng';
import { Activation, gelu, linear } from './ops';
import { ParamSet } from './params';
import { VisionTransformer } from './vit';

export type MimcoHead = 'patch_head' | 'global_head';

export class MimcoHeads {
  readonly params: ParamSet;

  constructor(readonly studentDim: number, readonly teacherDim: number, readonly hidden: number, readonly act: Activation, seed: number) {
    const ps = (this.params = new ParamSet(new Rng(seed, 0x313c0)));
    // std 0.02 as BEiT/SimMIM's mask token; no weight decay (ParamSet.add's default)
    ps.add('mask_token', tf.mul(tf.randomNormal([1, 1, studentDim], 0, 1, 'float32', ps.seed()), 0.02));
    for (const head of ['patch_head', 'global_head']) {
      ps.addLinear(`${head}.0`, studentDim, hidden);
      ps.addLinear(`${head}.2`, hidden, teacherDim);
    }
  }

  get maskToken(): tf.Variable {
    return this.params.get('mask_token');
  }

  /** Rows [N, studentDim] -> [N, teacherDim]. */
  project(head: MimcoHead, x: tf.Tensor2D): tf.Tensor2D {
    const P = <T extends tf.Tensor>(name: string) => this.params.get(`${head}.${name}`) as unknown as T;
    const h = gelu(linear(x, P('0.weight'), P('0.bias')), this.act) as tf.Tensor2D;
    return linear(h, P('2.weight'), P('2.bias'));
  }
}

/**
 * The student's tokens after its last block, final norm applied, [B, 1 + T, D] (CLS first).
 * Masked patches (mask [B, T], 1 = masked) enter as the mask token plus their position
 * embedding: x (1 - m) + m (token + pos), with embedPatches' x already holding pos. The
 * products broadcast the token over the batch (no tile, whose gradient is slow on wasm).
 */
export function maskedEncode(encoder: VisionTransformer, images: tf.Tensor4D, mask: tf.Tensor2D, maskToken: tf.Tensor): tf.Tensor3D {
  const { embedDim: d, depth } = encoder.cfg;
  const batch = images.shape[0];
  const t = encoder.numPatches;
  const m = tf.reshape(mask, [batch, t, 1]);
  const pos = tf.slice(encoder.params.get('pos_embed'), [0, 1, 0], [1, t, d]);
  const tokens = tf.add(tf.mul(encoder.embedPatches(images), tf.sub(1, m)), tf.mul(m, tf.add(maskToken, pos))) as tf.Tensor3D;
  let x = tf.reshape(encoder.prependCls(tokens), [batch * (t + 1), d]) as tf.Tensor2D;
  for (let i = 0; i < depth; i++) x = encoder.block(i, x, batch);
  return tf.reshape(encoder.finalNorm(x), [batch, t + 1, d]);
}

/** Tokens [B, 1 + T, D] -> CLS [B, D] and patch tokens [B, T, D]. */
export function splitCls(tokens: tf.Tensor3D): { cls: tf.Tensor2D; patches: tf.Tensor3D } {
  const [b, seq, d] = tokens.shape;
  return {
    cls: tf.reshape(tf.slice(tokens, [0, 0, 0], [b, 1, d]), [b, d]),
    patches: tf.slice(tokens, [0, 1, 0], [b, seq - 1, d]),
  };
}

/** The student's side of the loss: projected patch tokens [B, T, P] and projected CLS [B, P]. */
export function studentProjections(encoder: VisionTransformer, heads: MimcoHeads, images: tf.Tensor4D, mask: tf.Tensor2D): { patches: tf.Tensor3D; global: tf.Tensor2D } {
  const { cls, patches } = splitCls(maskedEncode(encoder, images, mask, heads.maskToken));
  const [b, t, d] = patches.shape;
  return {
    patches: tf.reshape(heads.project('patch_head', tf.reshape(patches, [b * t, d])), [b, t, heads.teacherDim]),
    global: heads.project('global_head', cls),
  };
}

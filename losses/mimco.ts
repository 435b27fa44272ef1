/**
 * MimCo's reconstruction loss, from
 *   MimCo: Masked Image Modeling Pre-training with Contrastive Teacher,
 *   Q. Zhou et al., 2022. https://arxiv.org/abs/2209.03063
 * (the method in the project's words: docs/method.md).
 *
 * A student that saw a masked image reconstructs a frozen contrastive teacher's representations
 * of the unmasked image, with two InfoNCE losses on L2-normalised vectors, temperature tau:
 *
 * - patch level, for every masked position i of sample b (s: student patch projections,
 *   t: teacher patch features, both [B, T, P]):
 *     logits[j] = s[b, i] . t[b, j] / tau  over the T positions j of the same image,
 *     loss_bi   = cross_entropy(logits, target i);   patch = mean over the masked (b, i).
 *   The negatives are the teacher's other patches of that image: the student has to place
 *   each feature at its position, not merely produce a plausible one.
 * - image level (g: student global projections, h: teacher global features, [B, P]):
 *     logits[b, c] = g[b] . h[c] / tau,  image = mean_b cross_entropy(logits[b, :], target b).
 *   The columns c may be a larger batch's teacher features than the rows b (`teacherGlobalBatch`:
 *   data-parallel, the global batch's, all-gathered), as MoCo v3 gathers its keys.
 * - total = patch + image.
 * Each needs a negative: at least 2 images among the keys (the global batch's where given) and
 * 2 tokens per image; with fewer its loss is 0 at every step, so that is refused.
 *
 * Teacher features are constants: they pass through a stop-gradient, so a caller may hand in
 * tensors computed from variables and still no gradient reaches the teacher.
 */
import * as tf from '@tensorflow/tfjs';
import { l2normalize, stopGradient } from '../models/ops';

export interface MimcoLossArgs {
  /** Student patch tokens after the projection head, [B, T, P]. */
  studentPatches: tf.Tensor3D;
  /** Teacher patch features at the same positions, [B, T, P] (constants). */
  teacherPatches: tf.Tensor3D;
  /** 1 where the student's patch was masked, 0 elsewhere, [B, T]. */
  mask: tf.Tensor2D;
  /** Student global feature (CLS) after the projection head, [B, P]. */
  studentGlobal: tf.Tensor2D;
  /** Teacher global feature (CLS), [B, P] (constants). */
  teacherGlobal: tf.Tensor2D;
  /**
   * The teacher global features the image loss contrasts each student row against, [N, P]
   * (constants; default teacherGlobal). Data-parallel: the global batch's, which hold this
   * rank's teacherGlobal rows among them.
   */
  teacherGlobalBatch?: tf.Tensor2D;
  /** Softmax temperature tau of both losses. */
  temperature: number;
}

export interface MimcoLossResult {
  total: tf.Scalar;
  patch: tf.Scalar;
  image: tf.Scalar;
}

function validate(args: MimcoLossArgs): void {
  const { studentPatches: s, teacherPatches: t, mask, studentGlobal: g, teacherGlobal: h, temperature } = args;
  if (!(temperature > 0 && Number.isFinite(temperature))) throw new Error(`mimcoLoss: temperature must be positive, got ${temperature}`);
  const [B, T, P] = s.shape;
  const expect = (x: tf.Tensor, shape: number[], what: string): void => {
    if (x.shape.join(',') !== shape.join(',')) throw new Error(`mimcoLoss: ${what} has shape [${x.shape}], expected [${shape}]`);
  };
  expect(t, [B, T, P], 'teacherPatches');
  expect(mask, [B, T], 'mask');
  expect(g, [B, P], 'studentGlobal');
  expect(h, [B, P], 'teacherGlobal');
  const all = args.teacherGlobalBatch;
  if (all && (all.rank !== 2 || all.shape[1] !== P || all.shape[0] < B)) throw new Error(`mimcoLoss: teacherGlobalBatch has shape [${all.shape}], expected [N >= ${B}, ${P}]`);
  // one key: the image logits hold only the positive and the image loss is 0 whatever the student does
  const keys = all ? all.shape[0] : B;
  if (keys < 2) throw new Error(`mimcoLoss: a batch of ${keys} image${keys === 1 ? '' : 's'} has no negatives: the image-level InfoNCE contrasts each image with the other images of the batch, so that loss would be 0 at every step; use a batch of at least 2`);
  if (T < 2) throw new Error(`mimcoLoss: ${T} token per image has no negatives: the patch-level InfoNCE contrasts each patch with the other patches of its image`);
}

/**
 * The MimCo loss of a batch (see the file comment). Differentiable w.r.t. the student inputs;
 * returns new scalars owned by the caller, intermediates freed (or held only by an enclosing
 * gradient computation).
 */
export function mimcoLoss(args: MimcoLossArgs): MimcoLossResult {
  validate(args);
  const invTau = 1 / args.temperature;
  return tf.tidy(() => {
    // patch level: per image, a [T, T] logits matrix of student positions against teacher positions
    const s = tf.mul(l2normalize(args.studentPatches), invTau);
    const t = l2normalize(stopGradient(args.teacherPatches));
    const logits = tf.matMul(s, t, false, true); // [B, T, T]
    const perPatch = tf.sub(tf.logSumExp(logits, -1), tf.sum(tf.mul(s, t), -1)); // [B, T]
    // no masked patch at all gives 0, not 0/0
    const patch = tf.div(tf.sum(tf.mul(perPatch, args.mask)), tf.maximum(tf.sum(args.mask), 1)) as tf.Scalar;

    // image level: each student image against every teacher image of the batch
    const g = tf.mul(l2normalize(args.studentGlobal), invTau);
    const h = l2normalize(stopGradient(args.teacherGlobal));
    const keys = args.teacherGlobalBatch ? l2normalize(stopGradient(args.teacherGlobalBatch)) : h;
    const image = tf.mean(tf.sub(tf.logSumExp(tf.matMul(g, keys, false, true), -1), tf.sum(tf.mul(g, h), -1))) as tf.Scalar;
    return { total: tf.add(patch, image) as tf.Scalar, patch, image };
  });
}

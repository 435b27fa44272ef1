/**
 * Cross-entropy with label smoothing, from
 *   Rethinking the Inception Architecture for Computer Vision, C. Szegedy, V. Vanhoucke,
 *   S. Ioffe, J. Shlens, Z. Wojna, CVPR 2016 (section 7). https://arxiv.org/abs/1512.00567
 *
 * The target puts 1 - eps on the true class and eps spread evenly over all C classes, so
 *   loss_b = (1 - eps) * -log p[b, y_b] + eps * mean_c -log p[b, c],   loss = mean_b loss_b,
 * which is PyTorch's cross_entropy(logits, y, label_smoothing=eps) (and timm's
 * LabelSmoothingCrossEntropy) exactly; eps 0.1 in the MAE / BEiT fine-tuning recipe.
 */
import * as tf from '@tensorflow/tfjs';

/** Mean label-smoothed cross-entropy of logits [B, C] against class indices [B] (int32). */
export function labelSmoothingCrossEntropy(logits: tf.Tensor2D, labels: tf.Tensor1D, smoothing: number): tf.Scalar {
  if (!(smoothing >= 0 && smoothing < 1)) throw new Error(`labelSmoothingCrossEntropy: smoothing must lie in [0, 1), got ${smoothing}`);
  return tf.tidy(() => {
    const logProbs = tf.logSoftmax(logits);
    const trueClass = tf.neg(tf.sum(tf.mul(logProbs, tf.oneHot(labels, logits.shape[1])), 1));
    const uniform = tf.neg(tf.mean(logProbs, 1));
    return tf.mean(tf.add(tf.mul(trueClass, 1 - smoothing), tf.mul(uniform, smoothing))) as tf.Scalar;
  });
}

/**
 * NNCLR's loss, from
 *   With a Little Help from My Friends: Nearest-Neighbor Contrastive Learning of Visual
 *   Representations, D. Dwibedi, Y. Aytar, J. Tompson, P. Sermanet, A. Zisserman, ICCV 2021.
 *   https://arxiv.org/abs/2104.14548
 *
 * InfoNCE in which the anchors are the nearest neighbours of one view's projections: for each
 * ordered pair of the two views (i, j), with every vector L2-normalised,
 *   logits[b, c] = nn_i[b] . p_j[c] / tau,   loss_ij = mean_b cross_entropy(logits[b, :], b),
 * total = the mean of loss_01 and loss_10. Unlike NNA (losses/nna.ts) the negatives are swapped
 * too. The neighbours are constants; gradients reach the predictions only.
 * A batch needs at least 2 samples: with one, the only logit is the positive's, every loss is 0
 * whatever the model does, and training would run on without learning.
 */
import * as tf from '@tensorflow/tfjs';
import { l2normalize, stopGradient } from '../models/ops';

export function nnclrLoss(neighbours: [tf.Tensor2D, tf.Tensor2D], predictions: [tf.Tensor2D, tf.Tensor2D], temperature: number): tf.Scalar {
  if (!(temperature > 0)) throw new Error(`nnclrLoss: temperature must be positive, got ${temperature}`);
  const batch = predictions[0].shape[0];
  if (batch < 2) throw new Error(`nnclrLoss: a batch of ${batch} sample${batch === 1 ? '' : 's'} has no negatives: InfoNCE contrasts each sample with the others of its batch, so the loss would be 0 at every step; use a batch of at least 2`);
  for (const t of [...neighbours, ...predictions]) {
    if (t.shape[0] !== batch) throw new Error(`nnclrLoss: neighbours and predictions must share the batch size, got [${[...neighbours, ...predictions].map((x) => x.shape[0])}]`);
  }
  return tf.tidy(() => {
    const pair = (nn: tf.Tensor2D, p: tf.Tensor2D) => {
      const logits = tf.div(tf.matMul(l2normalize(stopGradient(nn)), l2normalize(p), false, true), temperature);
      return tf.mean(tf.sub(tf.logSumExp(logits, 1), tf.sum(tf.mul(logits, tf.eye(logits.shape[0])), 1)));
    };
    return tf.div(tf.add(pair(neighbours[0], predictions[1]), pair(neighbours[1], predictions[0])), 2) as tf.Scalar;
  });
}

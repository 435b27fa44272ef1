/**
 * Supervised fine-tuning's step (the MAE / BEiT recipe, He et al. 2022 arXiv 2111.06377, Bao
 * et al. 2022 arXiv 2106.08254): the augmented view through the encoder with stochastic depth,
 * the classifier head (models/vit.ts ClassifierHead), label-smoothed cross-entropy
 * (losses/label-smoothing.ts); the batch's train accuracy as a metric.
 */
import * as tf from '@tensorflow/tfjs';
import { Rng } from '../lib/rng';
import { ClassifierHead } from '../models/vit';
import { labelSmoothingCrossEntropy } from '../losses/label-smoothing';
import type { Objective } from './objective';

export interface ClassifyObjectiveOptions {
  head: ClassifierHead;
  labelSmoothing: number;
  /** timm's drop_path_rate (0: none). */
  dropPath: number;
  /** Seed of the drop-path draws; step s draws from (seed, s). */
  seed: number;
}

export function classifyObjective(o: ClassifyObjectiveOptions): Objective<{ images: tf.Tensor4D; labels: tf.Tensor1D; rng: Rng }, void> {
  const size = o.head.encoder.cfg.imgSize;
  return {
    prepare: (b, step) => {
      // the sources skip labels outside the classes; this guards the head against any other path
      const bad = b.labels.findIndex((l) => !(l >= 0 && l < o.head.numClasses));
      if (bad >= 0) throw new Error(`training sample ${b.indices[bad]}: label ${b.labels[bad]} is outside the ${o.head.numClasses} classes (0..${o.head.numClasses - 1})`);
      return {
        images: tf.tensor4d(b.views[0], [b.indices.length, size, size, 3]),
        labels: tf.tensor1d(b.labels, 'int32'),
        rng: new Rng(o.seed, 0xd209, step),
      };
    },
    loss: ({ images, labels, rng }) => {
      const logits = o.head.forward(images, o.dropPath > 0 ? { rate: o.dropPath, rng } : undefined);
      const trainAcc = tf.mean(tf.cast(tf.equal(tf.argMax(logits, 1), labels), 'float32')) as tf.Scalar;
      return { loss: labelSmoothingCrossEntropy(logits, labels, o.labelSmoothing), metrics: { train_acc: trainAcc }, updates: undefined };
    },
  };
}

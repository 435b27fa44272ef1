/**
 * MimCo's step (Zhou et al. 2022, arXiv 2209.03063): the frozen teacher sees the whole view
 * (outside the tape: its features are constants), the student the view with a seeded random
 * share of its patches replaced by the mask token; patch + image InfoNCE (losses/mimco.ts).
 */
import * as tf from '@tensorflow/tfjs';
import { Rng } from '../lib/rng';
import { VisionTransformer } from '../models/vit';
import { MaskPlan, randomMasking } from '../models/mae';
import { MimcoHeads, splitCls, studentProjections } from '../models/mimco';
import { mimcoLoss } from '../losses/mimco';
import type { Objective } from './objective';

export interface MimcoObjectiveOptions {
  teacher: VisionTransformer;
  /** Teacher block whose tokens (final norm applied) are the targets. */
  teacherBlock: number;
  student: VisionTransformer;
  heads: MimcoHeads;
  maskRatio: number;
  temperature: number;
  /** Seed of the masking; step s masks with (seed, s). */
  seed: number;
}

interface Prepared {
  images: tf.Tensor4D;
  plan: MaskPlan;
  target: { cls: tf.Tensor2D; patches: tf.Tensor3D };
}

export function mimcoObjective(o: MimcoObjectiveOptions): Objective<Prepared, void> {
  const size = o.student.cfg.imgSize;
  return {
    prepare: (b, step) => {
      const images = tf.tensor4d(b.views[0], [b.indices.length, size, size, 3]);
      const plan = randomMasking(b.indices.length, o.student.numPatches, o.maskRatio, new Rng(o.seed, 0x313c, step));
      const target = splitCls(o.teacher.getIntermediateLayers(images, { blocks: [o.teacherBlock], norm: true })[0]);
      return { images, plan, target };
    },
    loss: ({ images, plan, target }) => {
      const s = studentProjections(o.student, o.heads, images, plan.mask);
      const l = mimcoLoss({ studentPatches: s.patches, teacherPatches: target.patches, mask: plan.mask, studentGlobal: s.global, teacherGlobal: target.cls, temperature: o.temperature });
      return { loss: l.total, metrics: { loss_patch: l.patch, loss_image: l.image }, updates: undefined };
    },
  };
}

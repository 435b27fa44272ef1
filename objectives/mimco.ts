/**
 * MimCo's step (Zhou et al. 2022, arXiv 2209.03063): the frozen teacher sees the whole view
 * (outside the tape: its features are constants), the student the view with a seeded random
 * share of its patches replaced by the mask token; patch + image InfoNCE (losses/mimco.ts).
 *
 * Data-parallel over W ranks of n rows (global batch N = W n), exact against one process:
 * - Masks: rank r masks its rows of the global batch's plan (as MAE), so every image gets the
 *   mask one process would give it.
 * - Image loss: image = (1/N) sum_b l_b, l_b = lse_c(g_b . h_c / tau) - g_b . h_b / tau over
 *   the N teacher CLS features h_c of the global batch. The h are constants (a frozen teacher
 *   behind a stop-gradient), so l_b depends on the parameters only through g_b, the student
 *   row of the rank holding image b. With the h all-gathered (before the tape: `exchange`),
 *   rank r's image loss L_r = (1/n) sum over its rows of l_b, and image = (1/W) sum_r L_r, so
 *   d image / d theta = (1/W) sum_r dL_r / d theta: the ranks' gradients average. No gradient
 *   crosses ranks (unlike NNA's predictions, runtime/data-parallel.ts), so nothing is gathered
 *   inside the tape: MoCo v3's concat_all_gather of its keys, done asynchronously.
 * - Patch loss: within each image; its mean runs over the masked patches, and every image
 *   masks the same number of them (randomMasking), so each rank's mean has the same weight and
 *   the global mean is the mean of the ranks' means.
 * So the driver averages loss, metrics and gradients over the ranks (dataParallel 'mean').
 */
import * as tf from '@tensorflow/tfjs';
import { Rng } from '../lib/rng';
import { Collective, SingleProcess } from '../lib/collective';
import { VisionTransformer } from '../models/vit';
import { MaskPlan, randomMasking } from '../models/mae';
import { MimcoHeads, splitCls, studentProjections } from '../models/mimco';
import { mimcoLoss } from '../losses/mimco';
import { allGatherRows, interleaveRows } from '../models/row-exchange';
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
  /** This rank's collective in a data-parallel run (default: a world of one); see the file comment. */
  collective?: Collective;
}

interface Prepared {
  images: tf.Tensor4D;
  plan: MaskPlan;
  target: { cls: tf.Tensor2D; patches: tf.Tensor3D };
  /** Data-parallel: the global batch's teacher CLS features, in one process's row order. */
  globalCls?: tf.Tensor2D;
}

export function mimcoObjective(o: MimcoObjectiveOptions): Objective<Prepared, void> {
  const size = o.student.cfg.imgSize;
  const dp = o.collective ?? new SingleProcess();
  return {
    prepare: (b, step) => {
      const images = tf.tensor4d(b.views[0], [b.indices.length, size, size, 3]);
      const plan = randomMasking(b.indices.length, o.student.numPatches, o.maskRatio, new Rng(o.seed, 0x313c, step), dp);
      const target = splitCls(o.teacher.getIntermediateLayers(images, { blocks: [o.teacherBlock], norm: true })[0]);
      return { images, plan, target };
    },
    exchange:
      dp.worldSize > 1
        ? async (p) => {
            const [n, width] = p.target.cls.shape;
            const [all] = await allGatherRows(dp, [p.target.cls]);
            return { ...p, globalCls: tf.tensor2d(interleaveRows(all, dp.worldSize, width), [n * dp.worldSize, width]) };
          }
        : undefined,
    loss: ({ images, plan, target, globalCls }) => {
      const s = studentProjections(o.student, o.heads, images, plan.mask);
      const l = mimcoLoss({
        studentPatches: s.patches, teacherPatches: target.patches, mask: plan.mask,
        studentGlobal: s.global, teacherGlobal: target.cls, teacherGlobalBatch: globalCls, temperature: o.temperature,
      });
      return { loss: l.total, metrics: { loss_patch: l.patch, loss_image: l.image }, updates: undefined };
    },
  };
}

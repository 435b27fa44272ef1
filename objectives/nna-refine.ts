/**
 * MIM-Refiner's step (Alkin et al. 2024, arXiv 2402.10093): two global views (+ local views)
 * of a batch -> one backbone pass returning the CLS token of every head's block -> per head:
 * projector z, predictor p, a nearest neighbour of z in the head's queue -> NNA loss
 * (losses/nna.ts) summed over heads. After the optimiser step z of view 0 is enqueued.
 * With `trainEncoder` false (stage 2) the backbone runs outside the tape: no encoder gradient.
 */
import * as tf from '@tensorflow/tfjs';
import { Rng } from '../runtime/rng';
import { VisionTransformer } from '../models/vit';
import { NnaHead } from '../models/nna-head';
import { NnQueue } from '../models/nn-queue';
import { stopGradient } from '../models/ops';
import { nnaLoss } from '../losses/nna';
import type { Batch } from '../sources/types';
import type { Objective } from './objective';

export interface NnaRefineOptions {
  encoder: VisionTransformer;
  /** Blocks (0-based) whose CLS token feeds heads[i] and queues[i]. */
  headBlocks: number[];
  heads: NnaHead[];
  queues: NnQueue[];
  globalSize: number;
  localSize: number;
  numLocal: number;
  topK: number;
  temperature: number;
  trainEncoder: boolean;
  /** Seed of the NN picks; step s draws from (seed, s). */
  seed: number;
}

interface Prepared {
  batch: Batch;
  globals: tf.Tensor4D;
  locals?: tf.Tensor4D;
  /** Backbone features when the encoder is frozen (computed outside the tape). */
  frozen?: Features;
  rng: Rng;
}

/** Per head block: CLS of the global views (stacked) and of the local views (stacked). */
interface Features {
  g: tf.Tensor2D[];
  l: tf.Tensor2D[];
}

export function nnaRefineObjective(o: NnaRefineOptions): Objective<Prepared, tf.Tensor2D[]> {
  const encode = (globals: tf.Tensor4D, locals?: tf.Tensor4D): Features => ({
    g: o.encoder.clsFeatures(globals, o.headBlocks),
    l: locals ? o.encoder.clsFeatures(locals, o.headBlocks) : [],
  });
  return {
    prepare: (batch, step) => {
      const n = batch.indices.length;
      // one backbone pass for all head blocks: globals together, locals together
      const globals = tf.concat([0, 1].map((v) => tf.tensor4d(batch.views[v], [n, o.globalSize, o.globalSize, 3]))) as tf.Tensor4D;
      const locals = o.numLocal > 0 ? (tf.concat(batch.views.slice(2).map((v) => tf.tensor4d(v, [n, o.localSize, o.localSize, 3]))) as tf.Tensor4D) : undefined;
      return { batch, globals, locals, frozen: o.trainEncoder ? undefined : encode(globals, locals), rng: new Rng(o.seed, 0x4e4e, step) };
    },
    loss: ({ batch, globals, locals, frozen, rng }) => {
      const cls = frozen ?? encode(globals, locals);
      const metrics: Record<string, tf.Scalar> = {};
      const global: tf.Scalar[] = [];
      const local: tf.Scalar[] = [];
      const enqueue: tf.Tensor2D[] = [];
      const perHead = o.heads.map((head, h) => {
        const zGlobal = head.project(cls.g[h], true);
        const pGlobal = tf.split(head.predict(zGlobal, true), 2);
        const z = tf.split(zGlobal, 2).map((zi) => stopGradient(zi)) as tf.Tensor2D[];
        const nn = z.map((zi) => o.queues[h].lookup(zi, batch.indices, batch.labels, o.topK, rng));
        const pLocal = o.numLocal > 0 ? splitViews(head.predict(head.project(cls.l[h], true), true), o.numLocal) : [];
        const l = nnaLoss({ projections: z, swapped: nn.map((x) => x.swapped), predictions: [...pGlobal, ...pLocal] as tf.Tensor2D[], numGlobal: 2, temperature: o.temperature });
        const block = o.headBlocks[h];
        metrics[`block${block}_loss`] = l.total;
        metrics[`block${block}_nn_sim`] = tf.div(tf.add(nn[0].similarity, nn[1].similarity), 2);
        metrics[`block${block}_nn_acc`] = tf.div(tf.add(nn[0].accuracy, nn[1].accuracy), 2);
        global.push(l.global);
        local.push(l.local);
        enqueue.push(z[0]);
        return l.total;
      });
      metrics.loss_global = tf.addN(global);
      metrics.loss_local = tf.addN(local);
      return { loss: tf.addN(perHead) as tf.Scalar, metrics, updates: enqueue };
    },
    afterStep: (enqueue, batch) => enqueue.forEach((z, h) => o.queues[h].push(z, batch.indices, batch.labels)),
  };
}

/** Rows of n stacked views -> one tensor per view (tfjs's split has no gradient for one piece). */
function splitViews(x: tf.Tensor2D, n: number): tf.Tensor2D[] {
  return n === 1 ? [x] : (tf.split(x, n) as tf.Tensor2D[]);
}

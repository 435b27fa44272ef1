/**
 * MIM-Refiner's step (Alkin et al. 2024, arXiv 2402.10093): two global views (+ local views)
 * of a batch -> one backbone pass returning the CLS token of every head's block -> per head:
 * projector z, predictor p, a nearest neighbour of z in the head's queue -> NNA loss
 * (losses/nna.ts) summed over heads. After the optimiser step z of view 0 is enqueued.
 * With `trainEncoder` false (stage 2) the backbone runs outside the tape: no encoder gradient.
 * Two choices follow the reference where asked (docs/deviations.md): the
 * head on the last block may take the CLS token after the encoder's final LayerNorm (the
 * reference's main head pools the encoder's output, which is normed), and a head's BatchNorms
 * may see the global and local views as one batch (the reference concatenates every view's
 * pooled token before its heads) instead of the two view groups apart.
 *
 * Data-parallel (`collective`, runtime/data-parallel.ts): every rank computes the loss of the
 * global batch, its own rows' predictions carrying the gradient and the other ranks' gathered
 * rows as constants; the NN lookups and the enqueue use the global batch's rows, indices and
 * labels, so every rank's queues stay the same; the ranks' gradients are summed (the driver's
 * dataParallel 'sum'). Where the rows meet is `exchange` (runtime/data-parallel.ts derives both):
 * 'in-tape' gathers the predictions and the BatchNorm moments inside the tape with blocking
 * collectives (synchronous device reads); 'before-tape' gathers the heads' inputs (the CLS
 * features) asynchronously before the tape, re-running the encoder forward there when it
 * trains, and every rank runs the heads on the whole global batch (heads built without a
 * collective; their gradients are whole on every rank, averaged rather than summed). A world of
 * one takes none of these paths.
 */
import * as tf from '@tensorflow/tfjs';
import { Rng } from '../lib/rng';
import { VisionTransformer } from '../models/vit';
import { NnaHead } from '../models/nna-head';
import { NnQueue } from '../models/nn-queue';
import { stopGradient } from '../models/ops';
import { nnaLoss } from '../losses/nna';
import { Collective, SingleProcess } from '../lib/collective';
import { allGatherRows, allGatherRowsInTape, gatherBatchMeta, withOwnRows } from '../models/row-exchange';
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
  /** This rank's collective in a data-parallel run (default: a world of one). */
  collective?: Collective;
  /** The head on the last block takes its CLS token through the encoder's final LayerNorm (reference: true). */
  lastHeadNorm?: boolean;
  /** 'joint': a head's BatchNorms normalise global and local views together (reference); 'separate': each view group apart. */
  bnViews?: BnViews;
  /**
   * 'local' (default): each global view's z pairs with every local view's prediction (the paper; docs/deviations.md).
   * 'reference-code': as the reference's nnclr_loss.py indexes its local loop, predicted[:, ii] for ii < numLocal:
   * the first numLocal views (the global views, each once with itself, then local views 0..numLocal-3).
   */
  localPairs?: LocalPairs;
  /** Where the ranks' rows meet (see the file comment; default 'in-tape'). */
  exchange?: 'in-tape' | 'before-tape';
}

export type LocalPairs = 'local' | 'reference-code';

export type BnViews = 'joint' | 'separate';

/** Sample indices and labels of the (global) batch. */
interface BatchMeta {
  indices: Int32Array;
  labels: Int32Array;
}

interface Prepared {
  meta: BatchMeta;
  globals: tf.Tensor4D;
  locals?: tf.Tensor4D;
  /** Backbone features when the encoder is frozen (computed outside the tape). */
  frozen?: Features;
  rng: Rng;
  /** 'before-tape': every rank's CLS features, per head and view (viewRows' order), in rank order. */
  gathered?: Float32Array[];
}

/** Per head block: CLS of the global views (stacked) and of the local views (stacked). */
interface Features {
  g: tf.Tensor2D[];
  l: tf.Tensor2D[];
}

export function nnaRefineObjective(o: NnaRefineOptions): Objective<Prepared, { z: tf.Tensor2D[]; meta: BatchMeta }> {
  const dp = o.collective ?? new SingleProcess();
  const lastBlock = o.encoder.cfg.depth - 1;
  // LayerNorm acts on each token alone: norming the CLS token is norming the output and taking its CLS token
  const cls = (images: tf.Tensor4D): tf.Tensor2D[] =>
    o.encoder.clsFeatures(images, o.headBlocks).map((c, h) => (o.lastHeadNorm && o.headBlocks[h] === lastBlock ? o.encoder.finalNorm(c) : c));
  const encode = (globals: tf.Tensor4D, locals?: tf.Tensor4D): Features => ({ g: cls(globals), l: locals ? cls(locals) : [] });
  const beforeTape = o.exchange === 'before-tape' && dp.worldSize > 1;
  /** Per head: the [n, D] rows of each global view, then of each local view. */
  const viewRows = (f: Features): tf.Tensor2D[] => f.g.flatMap((g, h) => [...splitViews(g, 2), ...(o.numLocal > 0 ? splitViews(f.l[h], o.numLocal) : [])]);
  /** This rank's features -> the global batch's, its own rows carrying the gradient. */
  const globalFeatures = (f: Features, gathered: Float32Array[]): Features => {
    const rows = viewRows(f).map((v, i) => withOwnRows(v, gathered[i], dp.rank, dp.worldSize));
    const perHead = 2 + o.numLocal;
    return {
      g: f.g.map((_, h) => tf.concat(rows.slice(h * perHead, h * perHead + 2)) as tf.Tensor2D),
      l: o.numLocal > 0 ? f.l.map((_, h) => tf.concat(rows.slice(h * perHead + 2, (h + 1) * perHead)) as tf.Tensor2D) : [],
    };
  };
  return {
    prepare: (batch, step) => {
      const n = batch.indices.length;
      // one backbone pass for all head blocks: globals together, locals together
      const globals = tf.concat([0, 1].map((v) => tf.tensor4d(batch.views[v], [n, o.globalSize, o.globalSize, 3]))) as tf.Tensor4D;
      const locals = o.numLocal > 0 ? (tf.concat(batch.views.slice(2).map((v) => tf.tensor4d(v, [n, o.localSize, o.localSize, 3]))) as tf.Tensor4D) : undefined;
      const meta = gatherBatchMeta(dp, batch.indices, batch.labels);
      return { meta, globals, locals, frozen: o.trainEncoder ? undefined : encode(globals, locals), rng: new Rng(o.seed, 0x4e4e, step) };
    },
    exchange: beforeTape
      ? async (p) => {
          // a training encoder runs forward here without the tape, and again under it in loss
          const rows = tf.tidy(() => viewRows(p.frozen ?? encode(p.globals, p.locals)));
          const prepared = new Set(p.frozen ? [...p.frozen.g, ...p.frozen.l] : []);
          try {
            return { ...p, gathered: await allGatherRows(dp, rows) };
          } finally {
            tf.dispose(rows.filter((t) => !prepared.has(t)));
          }
        }
      : undefined,
    loss: ({ meta, globals, locals, frozen, rng, gathered }) => {
      const own = frozen ?? encode(globals, locals);
      const features = gathered ? globalFeatures(own, gathered) : own;
      // 'before-tape': the heads ran on the global batch already
      const globalRows = (ts: tf.Tensor2D[]) => (gathered ? ts : allGatherRowsInTape(dp, ts));
      const metrics: Record<string, tf.Scalar> = {};
      const global: tf.Scalar[] = [];
      const local: tf.Scalar[] = [];
      const enqueue: tf.Tensor2D[] = [];
      const perHead = o.heads.map((head, h) => {
        const { zGlobal, p } = runHead(head, features.g[h], o.numLocal > 0 ? features.l[h] : undefined, o.bnViews ?? 'separate');
        const zRank = tf.split(zGlobal, 2).map((zi) => stopGradient(zi)) as tf.Tensor2D[];
        // the global batch's rows (this rank's alone in a world of one)
        const [z0, z1, ...viewPredictions] = globalRows([...zRank, ...splitViews(p, 2 + o.numLocal)]);
        // nnaLoss pairs global view i with predictions[2 + l] as its l-th local pair
        const predictions = o.localPairs === 'reference-code' ? [...viewPredictions.slice(0, 2), ...viewPredictions.slice(0, o.numLocal)] : viewPredictions;
        const z = [z0, z1];
        const nn = z.map((zi) => o.queues[h].lookup(zi, meta.indices, meta.labels, o.topK, rng));
        const l = nnaLoss({ projections: z, swapped: nn.map((x) => x.swapped), predictions, numGlobal: 2, temperature: o.temperature });
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
      return { loss: tf.addN(perHead) as tf.Scalar, metrics, updates: { z: enqueue, meta } };
    },
    afterStep: ({ z, meta }) => z.forEach((zh, h) => o.queues[h].push(zh, meta.indices, meta.labels)),
  };
}

/**
 * A head on the CLS tokens of the global views g [2n, D] and of the local views l [L n, D]:
 * the global views' projections and every view's prediction (globals first). 'joint' runs all
 * views through the head as one batch, so each BatchNorm normalises over them together (the
 * reference's contrastive_model.py concatenates every view before its heads); 'separate'
 * runs the two groups apart. With one group the two are the same computation.
 */
function runHead(head: NnaHead, g: tf.Tensor2D, l: tf.Tensor2D | undefined, bnViews: BnViews): { zGlobal: tf.Tensor2D; p: tf.Tensor2D } {
  if (l && bnViews === 'joint') {
    const z = head.project(tf.concat([g, l]), true);
    return { zGlobal: tf.slice(z, 0, g.shape[0]), p: head.predict(z, true) };
  }
  const zGlobal = head.project(g, true);
  const pGlobal = head.predict(zGlobal, true);
  return { zGlobal, p: l ? tf.concat([pGlobal, head.predict(head.project(l, true), true)]) : pGlobal };
}

/** Rows of n stacked views -> one tensor per view (tfjs's split has no gradient for one piece). */
function splitViews(x: tf.Tensor2D, n: number): tf.Tensor2D[] {
  return n === 1 ? [x] : (tf.split(x, n) as tf.Tensor2D[]);
}

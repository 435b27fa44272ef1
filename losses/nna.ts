/**
 * Nearest-Neighbour Alignment (NNA) loss, from
 *   MIM-Refiner: A Contrastive Learning Boost from Intermediate Pre-Trained Representations,
 *   B. Alkin, L. Miklautz, S. Hochreiter, J. Brandstetter, 2024. https://arxiv.org/abs/2402.10093
 * (the method in the project's words: docs/method.md).
 *
 * NNA is an NNCLR-style contrastive loss in which only the positive is swapped with its
 * nearest neighbour from the queue; the negatives stay the batch's own projections. For each
 * ordered pair (global view i, view j), j != i, with every vector L2-normalised:
 *
 *   logits[b, c] = (b == c ? s_i[b] . p_j[c] : z_i[b] . p_j[c]) / tau
 *   loss_ij      = mean_b cross_entropy(logits[b, :], target b)
 *
 * z_i: projections of global view i; s_i: the nearest-neighbour-swapped vectors for z_i;
 * p_j: predictor outputs of view j (global views first, then local ones; local views only
 * appear as p). total = sum of all pair losses / number of pairs; `global` is the mean over
 * the global-global pairs, `local` the mean over the global-local pairs (0 without local
 * views, and `global` is 0 with a single global view).
 *
 * The negatives are the other samples of the batch, so a batch needs at least 2 (with one the
 * logits hold only the positive and every loss is 0 whatever the model does).
 *
 * Gradients flow only through the predictions. Projections and swapped vectors are treated
 * as constants structurally (they enter only through a custom-gradient op that returns no
 * gradient for them), so passing tensors that were computed from variables is safe: nothing
 * reaches the projector through z or s. Callers should still pass detached values where they
 * have them (the swapped vectors come from the queue anyway).
 *
 * Cost per pair: one [B,P]x[P,B] matMul forward and one [P,B]x[B,B] backward. The diagonal
 * is replaced with a mask (logits = z p^T + eye * (rowdot(s, p) - rowdot(z, p))), and the backward pass is
 * written out (dL/dlogits = (softmax - I) / B) so that no transposed-operand matMul is ever
 * issued: on tfjs-wasm matMul(a, b, true/false, false/true) is ~10x slower than an explicit
 * tf.transpose followed by a plain matMul, and tfjs's own matMul gradient uses those forms.
 */
import * as tf from '@tensorflow/tfjs';
import { l2normalize } from '../models/ops';

export interface NnaLossArgs {
  /** z: projections of each global view, [B, P] each (constants, see above). */
  projections: tf.Tensor2D[];
  /** s: nearest-neighbour-swapped vectors for each global view, [B, P] each (constants). */
  swapped: tf.Tensor2D[];
  /** p: predictions of every view, [B, P] each: the numGlobal global views first, then locals. */
  predictions: tf.Tensor2D[];
  numGlobal: number;
  /** Softmax temperature tau (reference: 0.2). */
  temperature?: number;
}

export interface NnaLossResult {
  total: tf.Scalar;
  global: tf.Scalar;
  local: tf.Scalar;
}

function validate(args: NnaLossArgs): { B: number; P: number; tau: number } {
  const { projections, swapped, predictions, numGlobal } = args;
  const tau = args.temperature ?? 0.2;
  if (!Number.isInteger(numGlobal) || numGlobal < 1) throw new Error(`nnaLoss: numGlobal must be a positive integer, got ${numGlobal}`);
  if (!(tau > 0 && Number.isFinite(tau))) throw new Error(`nnaLoss: temperature must be positive, got ${tau}`);
  if (projections.length !== numGlobal || swapped.length !== numGlobal) {
    throw new Error(`nnaLoss: need ${numGlobal} projections and swapped tensors (one per global view), got ${projections.length} and ${swapped.length}`);
  }
  if (predictions.length < numGlobal) throw new Error(`nnaLoss: ${predictions.length} predictions for ${numGlobal} global views`);
  if (numGlobal * (predictions.length - 1) === 0) throw new Error('nnaLoss: no view pairs (need at least 2 views)');
  const [B, P] = projections[0].shape;
  const check = (t: tf.Tensor, what: string): void => {
    if (t.rank !== 2 || t.shape[0] !== B || t.shape[1] !== P) {
      throw new Error(`nnaLoss: ${what} has shape [${t.shape}], expected [${B}, ${P}] like projections[0]`);
    }
    if (t.dtype !== 'float32') throw new Error(`nnaLoss: ${what} is ${t.dtype}, expected float32`);
  };
  projections.forEach((t, i) => check(t, `projections[${i}]`));
  swapped.forEach((t, i) => check(t, `swapped[${i}]`));
  predictions.forEach((t, j) => check(t, `predictions[${j}]`));
  if (B < 1 || P < 1) throw new Error(`nnaLoss: empty batch or projection dimension [${B}, ${P}]`);
  // B == 1: logits [1, 1] hold only the positive, so every pair loss is log(1) = 0
  if (B < 2) throw new Error(`nnaLoss: a batch of 1 sample has no negatives: NNA contrasts each sample's positive with the other samples of its batch, so the loss would be 0 at every step; use a batch of at least 2`);
  return { B, P, tau };
}

/** Per global view i: constants shared by all pairs (i, j). */
interface GlobalView {
  /** normalised z_i, [B, P] */
  z: tf.Tensor2D;
  /** its transpose [P, B], for the backward matMul */
  zT: tf.Tensor2D;
  /** normalised s_i, [B, P] */
  s: tf.Tensor2D;
  /** s - z, [B, P]: how the positive differs from the entry it replaces */
  d: tf.Tensor2D;
}

/**
 * loss_ij as a custom-gradient op of (q, qT), q = normalised p_j / tau and qT its transpose.
 * The view constants are closed over, so no gradient can reach them.
 *
 * Forward, with pos_b = s_b.q_b and neg_b = z_b.q_b (row-wise dots):
 *   L = z q^T + eye * (pos - neg)      (the diagonal swapped through a mask: L[b,b] = pos_b)
 *   lse_b = m_b + log sum_c exp(L[b,c] - m_b),  m_b = max_c L[b,c];   loss = mean_b (lse_b - pos_b)
 * (The swap is done on the logits, not on the exponentials: subtracting exp(neg) from a row
 * sum that it dominates cancels catastrophically at small temperatures.)
 * Backward, with k = dy / B and softmax = exp(L - lse): dL/dL = G = k (softmax - I), and
 *   dqT = z^T G = z^T (k softmax) - k z^T          (off-diagonal path, one plain matMul)
 *   dq  = G[b,b] (s_b - z_b) = k (pPos_b - 1) d_b   (diagonal path), pPos_b = exp(pos_b - lse_b)
 * So per pair: one matMul and four B x B element-wise passes forward (mask mul, add, shift,
 * exp; plus two row reductions), one matMul and one pass backward.
 */
function pairLoss(view: GlobalView, eye: tf.Tensor2D, B: number, q: tf.Tensor2D, qT: tf.Tensor2D): tf.Scalar {
  const op = tf.customGrad(((qIn: tf.Tensor2D, qTIn: tf.Tensor2D, save: tf.GradSaveFunc) => {
    const pos = tf.sum(tf.mul(view.s, qIn), 1, true); // [B, 1]
    const neg = tf.sum(tf.mul(view.z, qIn), 1, true);
    const logits = tf.add(tf.matMul(view.z, qTIn), tf.mul(eye, tf.sub(pos, neg))); // [B, B]
    const m = tf.max(logits, 1, true);
    const e = tf.exp(tf.sub(logits, m));
    const lse = tf.add(tf.log(tf.sum(e, 1, true)), m);
    const value = tf.mean(tf.sub(lse, pos)) as tf.Scalar;
    // The gradient runs after nnaLoss's tidy has freed its intermediates: everything it
    // needs goes through save(), which keeps (cheap, data-sharing) clones for the tape.
    save([e, tf.exp(tf.sub(m, lse)), tf.exp(tf.sub(pos, lse)), view.zT, view.d]);
    return {
      value,
      gradFunc: (dy: tf.Scalar, saved: tf.Tensor[]) => {
        const [eS, invS, pPos, zT, d] = saved as tf.Tensor2D[]; // invS = exp(m - lse) = 1 / row sum
        const k = tf.div(dy, B);
        const softmaxK = tf.mul(eS, tf.mul(invS, k)); // k softmax, [B, B]
        const dqT = tf.sub(tf.matMul(zT, softmaxK), tf.mul(zT, k)); // [P, B]
        const dq = tf.mul(tf.mul(tf.sub(pPos, 1), k), d); // [B, P]
        return [dq, dqT];
      },
    };
  }) as unknown as Parameters<typeof tf.customGrad>[0]);
  return op(q, qT) as tf.Scalar;
}

/**
 * The NNA loss of one head (see the file comment). Differentiable w.r.t. `predictions` (use
 * tf.grads / tf.variableGrads around it); never w.r.t. projections or swapped. Returns new
 * scalars owned by the caller; all intermediates are freed (or kept only for an enclosing
 * gradient computation, which frees them).
 */
export function nnaLoss(args: NnaLossArgs): NnaLossResult {
  const { B, tau } = validate(args);
  const { numGlobal, predictions } = args;
  return tf.tidy(() => {
    const eye = tf.eye(B) as tf.Tensor2D;
    const views: GlobalView[] = args.projections.map((zRaw, i) => {
      const z = l2normalize(zRaw);
      const s = l2normalize(args.swapped[i]);
      return { z, zT: tf.transpose(z), s, d: tf.sub(s, z) };
    });
    const qs = predictions.map((p) => tf.mul(l2normalize(p), 1 / tau) as tf.Tensor2D);
    const qTs = qs.map((q) => tf.transpose(q));
    const globalPairs: tf.Scalar[] = [];
    const localPairs: tf.Scalar[] = [];
    for (let i = 0; i < numGlobal; i++) {
      for (let j = 0; j < predictions.length; j++) {
        if (j === i) continue;
        (j < numGlobal ? globalPairs : localPairs).push(pairLoss(views[i], eye, B, qs[j], qTs[j]));
      }
    }
    const mean = (xs: tf.Scalar[]): tf.Scalar => (xs.length === 0 ? tf.scalar(0) : tf.div(tf.addN(xs), xs.length));
    const all = [...globalPairs, ...localPairs];
    return { total: tf.div(tf.addN(all), all.length) as tf.Scalar, global: mean(globalPairs), local: mean(localPairs) };
  });
}

/**
 * The training step as an operator: for each batch, the objective's inputs (outside the
 * tape), then forward and loss under one gradient tape, backward, and the optimiser update.
 * One step at a time (concatMap); the step's tensors live in a StepScope opened in `open`:
 * freed here if the step throws, by readMetrics once read, and by open.disposeAll() (the end
 * of the chain's teardown) for steps still on their way when the stream errors.
 *
 * Nothing is read from the device, except with onNonFinite 'skip': the loss and gradient norm
 * are read before the update (one host sync per step) so that a non-finite step changes nothing.
 * With a loss scale (mixed precision, models/loss-scale.ts) the tape differentiates the scaled
 * loss and the step reads the unscaled gradients' norm and the loss (one host sync): a step
 * whose gradients overflowed is skipped and recorded (the scale drops), a non-finite loss is
 * as without it (stop or skip).
 */
import * as tf from '@tensorflow/tfjs';
import { concatMap, OperatorFunction } from 'rxjs';
import { AdamW } from '../models/adamw';
import { DynamicLossScale } from '../models/loss-scale';
import { Objective, StepLoss, tensorsIn } from '../objectives/objective';
import { BatchItem, OpenSteps, Step, StepScope } from '../objectives/step';

export interface TrainStepOptions {
  /** Where the steps' scopes are registered until read. */
  open: OpenSteps;
  /** Steps already done before the first batch (a resumed run or a later stage). */
  fromStep: number;
  /** lr of the step numbered `step` (0-based). */
  lr: (step: number) => number;
  /** Constant values logged with every step. */
  values?: Record<string, number>;
  onNonFinite?: 'stop' | 'skip';
  /** Called with a skipped step's number and why it was skipped. */
  onSkip?: (step: number, why: string) => void;
  /** Mixed precision: the loss scaler (its scale is logged as loss_scale with every step). */
  lossScale?: DynamicLossScale;
  /**
   * Combines the ranks' steps before the optimiser sees them (a data-parallel all-reduce,
   * runtime/collective.ts allreduceGradients): the gradients, and the loss and metrics where
   * each rank's are its own rows'. The tensors it returns belong to the step.
   */
  reduce?: (step: StepValues) => Promise<StepValues>;
}

/** What a data-parallel step combines over the ranks. */
export interface StepValues {
  grads: Record<string, tf.Tensor>;
  loss: tf.Scalar;
  metrics: Record<string, tf.Scalar>;
}

export function trainStep<P, U>(objective: Objective<P, U>, optimiser: AdamW, opts: TrainStepOptions): OperatorFunction<BatchItem, Step<U>> {
  const varList = optimiser.params.map((p) => p.variable);
  return (source) => {
    let step = opts.fromStep;
    return source.pipe(
      concatMap(async (item) => {
        const t0 = performance.now();
        const lr = opts.lr(step);
        const scope = opts.open.open();
        try {
          const scale = opts.lossScale?.scale;
          const out = await forwardBackward(objective, item, step, varList, scope, opts.lossScale);
          const { grads, loss: lossT, metrics } = opts.reduce ? await opts.reduce(out) : out;
          tensorsIn([grads, lossT, metrics]).forEach((t) => scope.own(t));
          let skipped = false;
          let gradNorm: tf.Scalar;
          const skipNonFinite = async (norm: tf.Scalar): Promise<boolean> => {
            if (opts.onNonFinite !== 'skip') return false;
            opts.onSkip?.(step + 1, `(--on-nonfinite skip): ${await nonFiniteTerms({ loss: lossT, grad_norm: norm, ...metrics })}`);
            return true;
          };
          if (opts.lossScale) {
            // the scaled gradients' check, their unscaling and norm in one read, with the loss's
            const [r, loss] = await Promise.all([opts.lossScale.unscale(grads), lossT.data()]);
            gradNorm = scope.own(tf.scalar(r.norm));
            if (!Number.isFinite(loss[0])) skipped = await skipNonFinite(gradNorm);
            else if (!r.finite) {
              skipped = true;
              opts.onSkip?.(step + 1, `(loss scale): the gradients overflowed at loss scale ${scale}; the scale is now ${r.scale}`);
            } else tf.dispose(optimiser.apply(r.grads, lr, r.norm));
            if (r.finite) tf.dispose(Object.values(r.grads));
          } else if (opts.onNonFinite === 'skip') {
            gradNorm = scope.own(optimiser.gradNorm(grads));
            const [loss, norm] = await Promise.all([lossT.data(), gradNorm.data()]);
            if (!Number.isFinite(loss[0]) || !Number.isFinite(norm[0])) skipped = await skipNonFinite(gradNorm);
            else tf.dispose(optimiser.apply(grads, lr, norm[0]));
          } else {
            gradNorm = scope.own(optimiser.apply(grads, lr));
          }
          tf.dispose([...Object.values(out.grads), ...Object.values(grads)]);
          step++;
          const values = scale === undefined ? (opts.values ?? {}) : { ...opts.values, loss_scale: scale };
          return {
            ...item, step, lr, loss: lossT, gradNorm, metrics, updates: out.updates,
            values, skipped, startedAt: t0, scope,
          } as Step<U>;
        } catch (err) {
          scope.dispose();
          throw err;
        }
      }),
    );
  };
}

/**
 * prepare (and the objective's exchange), then loss under the tape; everything the step keeps is
 * owned by `scope`. With `lossScale` the gradients are those of the scaled loss (the loss returned is unscaled).
 */
export async function forwardBackward<P, U>(objective: Objective<P, U>, item: BatchItem, step: number, varList: tf.Variable[], scope: StepScope, lossScale?: DynamicLossScale) {
  // tensors the loss function returns besides the loss survive the tape's own tidy via keep
  const kept: tf.Tensor[] = [];
  let result: StepLoss<U> | undefined;
  // prepare's tensors live until the tape is done, its intermediates not
  let prepared!: P;
  tf.tidy(() => {
    prepared = objective.prepare(item.batch, step);
    tensorsIn(prepared).forEach((t) => tf.keep(t));
  });
  const inputs = tensorsIn(prepared);
  try {
    if (objective.exchange) {
      prepared = await objective.exchange(prepared, step);
      inputs.push(...tensorsIn(prepared));
    }
    const { loss, grads } = tf.tidy(() => {
      let unscaled: tf.Scalar | undefined;
      const { value, grads } = tf.variableGrads(() => {
        result = objective.loss(prepared, step);
        for (const t of tensorsIn([result.metrics, result.updates])) if (t !== result.loss) kept.push(tf.keep(t));
        if (lossScale === undefined) return result.loss;
        unscaled = tf.keep(result.loss);
        return lossScale.scaleLoss(result.loss);
      }, varList);
      return { loss: unscaled ?? value, grads };
    });
    for (const t of [loss, ...kept, ...Object.values(grads)]) scope.own(t);
    return { loss, grads, metrics: result!.metrics, updates: result!.updates };
  } catch (err) {
    tf.dispose(kept);
    throw err;
  } finally {
    // the inputs, unless the loss handed one on
    const handedOn = new Set(kept);
    tf.dispose(inputs.filter((t) => !handedOn.has(t)));
  }
}

/** Which of the loss, its terms and the gradient norm are not finite (a skipped step; reads them once). */
async function nonFiniteTerms(named: Record<string, tf.Scalar>): Promise<string> {
  const entries = Object.entries(named);
  const values = await Promise.all(entries.map(([, t]) => t.data()));
  return entries.flatMap(([k], i) => (Number.isFinite(values[i][0]) ? [] : [`${k} = ${values[i][0]}`])).join(', ');
}

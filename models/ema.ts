/**
 * Exponential moving average of a model's parameters (the "EMA encoder" MIM-Refiner keeps and
 * evaluates): ema = momentum * ema + (1 - momentum) * online, after every optimiser step.
 */
import * as tf from '@tensorflow/tfjs';
import { ParamSet } from './params';

export class Ema {
  constructor(readonly target: ParamSet, readonly online: ParamSet, readonly momentum: number) {
    if (!(momentum >= 0 && momentum < 1)) throw new Error(`EMA momentum must be in [0, 1), got ${momentum}`);
    target.copyFrom(online);
  }

  update(): void {
    for (const name of this.online.names()) {
      const t = this.target.get(name);
      const o = this.online.get(name);
      tf.tidy(() => t.assign(tf.add(tf.mul(t, this.momentum), tf.mul(o, 1 - this.momentum))));
    }
  }
}
